"""Device meshes for `fit`: which axis carries the minibatch, which the particles.

Sharding is JAX's: the minibatch (and, if the mesh has a `"particles"` axis, every
`genvi.vmap(fn, axis_size=K)` particle axis) gets a `NamedSharding` constraint, parameters and
optimiser state are replicated, and XLA's SPMD partitioner inserts the gradient all-reduce. A
particle constraint is trace-time information, set while `fit` traces its step (like plate
subsampling), so it cannot leak across `jit`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._errors import ConfigError

DATA, PARTICLES = "data", "particles"
_ACTIVE: list[Mesh] = []


def resolve(mesh: Mesh | str | None) -> Mesh | None:
    """`None`, a `Mesh`, or `"auto"` (every device on one `"data"` axis)."""
    if mesh is None or isinstance(mesh, Mesh):
        if isinstance(mesh, Mesh) and data_axis(mesh) is None:
            raise ConfigError(f"fit(mesh=...): the mesh's axes {mesh.axis_names} need one named {DATA!r}")
        return mesh
    if mesh == "auto":
        return Mesh(np.array(jax.devices()), (DATA,))
    raise ConfigError(f"fit(mesh={mesh!r}): use None, a jax.sharding.Mesh or 'auto'")


def data_axis(mesh: Mesh) -> str | None:
    return DATA if DATA in mesh.axis_names else None


def axis_size(mesh: Mesh, name: str) -> int:
    return int(mesh.shape[name]) if name in mesh.axis_names else 1


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def along(mesh: Mesh, name: str) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(name))


def constrain_rows(tree: Any, mesh: Mesh) -> Any:
    """Shard every leaf of `tree` along its leading axis over the mesh's data axis."""
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, along(mesh, DATA)), tree)


@contextlib.contextmanager
def active(mesh: Mesh | None) -> Iterator[None]:
    """While tracing a step, let particle axes find the mesh."""
    if mesh is None:
        yield
        return
    _ACTIVE.append(mesh)
    try:
        yield
    finally:
        _ACTIVE.pop()


def constrain_particles(tree: Any, size: int) -> Any:
    """Shard a particle axis over the active mesh's `"particles"` axis, when there is one."""
    if not _ACTIVE or PARTICLES not in _ACTIVE[-1].axis_names:
        return tree
    mesh = _ACTIVE[-1]
    if size % axis_size(mesh, PARTICLES):
        raise ConfigError(f"{size} particles cannot be split evenly over the mesh's {PARTICLES!r} axis "
                          f"of size {axis_size(mesh, PARTICLES)}")
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, along(mesh, PARTICLES)), tree)


def host(x: Any) -> np.ndarray:
    """A NumPy copy of a (possibly multi-process, replicated) array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)
