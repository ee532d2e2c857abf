"""Built-in model families, each in its own sub-package (`genvi.models.vae`, ...)."""
