"""Checkpoints: `.npz` files (no pickle, nothing executable), written atomically.

A checkpoint holds the training carry (parameters, optimiser state, estimator states, key,
minibatch order, step) and the losses so far, plus a fingerprint of every tree's structure and
leaf shapes, so that resuming a different model fails with an error that says what differs.
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import FitError

FORMAT = "genvi-checkpoint-1"


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def fingerprint(tree: Any) -> list[str]:
    """One line per leaf: its path, shape and dtype."""
    return [f"{jax.tree_util.keystr(path)}: {tuple(np.shape(leaf))} {np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf).dtype}"
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save(path: str | os.PathLike, carry: Any, losses: np.ndarray, meta: dict) -> None:
    """Write `carry` and `losses` to `path` atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    leaves = jax.tree.leaves(carry)
    arrays = {f"leaf_{i:05d}": np.asarray(jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}
    header = {"format": FORMAT, "fingerprint": fingerprint(carry), **meta}
    arrays["losses"] = np.asarray(losses, dtype=np.float32)
    arrays["header"] = np.array(json.dumps(header))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike, like: Any) -> tuple[Any, np.ndarray, dict]:
    """Read a checkpoint into the structure of `like`; errors name what is wrong."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as err:
        raise FitError(f"cannot read checkpoint {str(path)!r} ({err}); it is corrupted or not a genvi "
                       "checkpoint. It was left untouched; move it away to start afresh") from err
    if header.get("format") != FORMAT:
        raise FitError(f"checkpoint {str(path)!r} has format {header.get('format')!r}, expected {FORMAT!r}")
    expected = fingerprint(like)
    found = header["fingerprint"]
    if found != expected:
        diff = next((f"checkpoint has {a!r}, this run has {b!r}" for a, b in zip(found, expected) if a != b),
                    f"checkpoint has {len(found)} leaves, this run has {len(expected)}")
        raise FitError(f"checkpoint {str(path)!r} was written for a different model or optimiser: {diff}. "
                       "It was left untouched")
    like_leaves, treedef = jax.tree.flatten(like)
    leaves = []
    for i, ref in enumerate(like_leaves):
        value = jnp.asarray(arrays[f"leaf_{i:05d}"])
        leaves.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref)) if _is_key(ref) else value)
    return jax.tree.unflatten(treedef, leaves), arrays["losses"], header
