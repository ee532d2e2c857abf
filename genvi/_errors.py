"""The exceptions genvi raises: one base class, one subclass per kind of mistake.

Every message names the site (address), option or shape at fault, what was expected, what was
received, and where possible the fix.
"""


class GenviError(Exception):
    """Base class of every error genvi raises on purpose."""


class AddressError(GenviError, KeyError):
    """An address is unknown, missing, extra or used twice."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class EstimatorError(GenviError):
    """A gradient estimator cannot serve a site, or a program shape it cannot transform."""


class ShapeError(GenviError, ValueError):
    """An array has the wrong shape or dtype for the site or option it was given to."""


class DomainError(GenviError, ValueError):
    """A value lies outside its distribution's support."""


class ConfigError(GenviError, ValueError):
    """An option is out of range (particles < 1, an unknown policy name, ...)."""


class FitError(GenviError):
    """Training stopped: non-finite values, a bad checkpoint, or data that does not fit."""
