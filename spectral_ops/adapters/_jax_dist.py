r"""Owner compute of the spectral maps for sharded JAX parameters (optax adapter).

Under ``jax.jit`` with parameters sharded over a ``Mesh`` (``NamedSharding``),
letting the SPMD partitioner shard the iteration itself costs collectives at
every matrix product (a map needs the whole matrix). Instead, each bucket of
same-shaped matrices is stacked, padded with zero matrices to a multiple of
the number of devices ``D``, and its stack axis sharded over every device of
the mesh: :func:`spread_map` runs the map under ``jax.shard_map``, each device
on its ``ceil(k / D)`` whole matrices, with no collective inside. The only
collectives are the partitioner's redistribution of the stack (parameter
layout to stack layout and back: about ``k m n (D - 1) / D^2`` elements per
device each way for ``k`` matrices of ``m x n``), whose number does not depend
on the iteration's length.

The mesh is the ``mesh`` argument of
:func:`~spectral_ops.adapters.optax.scale_by_spectral`, else the context mesh
(``jax.set_mesh``), else the mesh the leaves are sharded over (under ``jit``,
``jax.typeof(leaf).sharding.mesh``). One device, or leaves on no mesh: the maps
run as before, one batched call per bucket.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

__all__ = ["find_mesh", "spread_map"]


def _size(mesh) -> int:
    try:
        return int(mesh.size) if mesh is not None and not mesh.empty else 0
    except AttributeError:  # pragma: no cover - old meshes
        return int(math.prod(mesh.shape.values()))


def find_mesh(leaves, mesh=None):
    """The mesh to spread the maps over, or ``None`` (one device, no mesh)."""
    if mesh is not None:
        return mesh if _size(mesh) > 1 else None
    ctx = jax.sharding.get_abstract_mesh()
    if _size(ctx) > 1:
        return ctx
    for x in leaves:
        try:
            m = jax.typeof(x).sharding.mesh
        except AttributeError:
            continue
        if _size(m) > 1:
            return m
    return None


def spread_map(fn, mats, mesh, *args):
    """``fn`` (a map of a stack ``(..., m, n)``) applied to every matrix of ``mats``
    (same-shaped arrays ``(..., m, n)``), each matrix on one device of ``mesh``:
    stacked and flattened to ``(k, m, n)``, padded to a multiple of the device
    count, the first axis sharded over every mesh axis, ``fn`` run per device
    under ``shard_map`` (``args`` replicated). Returns the list of results, each
    laid out as its input on a mesh with explicit axes (the partitioner's
    choice on an automatic one)."""
    shapes = [x.shape for x in mats]

    def spread(*xs):
        m, n = xs[0].shape[-2:]
        x = jnp.concatenate([y.reshape((-1, m, n)) for y in xs])
        k, d = x.shape[0], _size(mesh)
        kp = -(-k // d) * d
        if kp > k:
            x = jnp.pad(x, ((0, kp - k), (0, 0), (0, 0)))
        ctx = jax.sharding.get_abstract_mesh()
        on = ctx if _size(ctx) > 1 else mesh
        spec = P(tuple(on.axis_names))
        body = jax.shard_map(lambda y, *a: fn(y, *a), mesh=on,
                             in_specs=(spec,) + (P(),) * len(args), out_specs=spec)
        y = body(x, *args)[:k]
        sizes = [math.prod(s[:-2]) for s in shapes]
        offs = [sum(sizes[:j]) for j in range(len(sizes))]
        return [y[o:o + c].reshape(s) for o, c, s in zip(offs, sizes, shapes)]

    if _explicit(mesh):
        # run the redistribution under automatic axes, hand each result back as laid out
        return jax.sharding.auto_axes(spread, out_sharding=[jax.typeof(x).sharding
                                                            for x in mats])(*mats)
    return spread(*mats)


def _explicit(mesh) -> bool:
    types = getattr(mesh, "axis_types", ()) or ()
    return any(str(t).endswith("Explicit") for t in types)
