r"""optax gradient transformations built on spectral_ops: muon, mucon, muon_p, dyn_muon.

The building block is :func:`scale_by_spectral`: momentum with
``optax.contrib.muon``'s convention (bias-corrected EMA, Nesterov form
:math:`\beta\,\hat m_{t+1} + (1 - \beta)\,\hat g_t`), then a spectral direction
from the core (:func:`spectral_ops.polar`, :func:`spectral_ops.clip` or
:func:`spectral_ops.power`), then the shape ``scale`` rule. The presets chain it
with decoupled weight decay and the learning rate, and send the leaves that are
not matrices (and any leaf masked out by ``spectral_mask``) to AdamW with
``optax.contrib.muon``'s Adam defaults.

Shapes: flax stores a dense kernel as ``(in, out)``: fan-in ``shape[0]``,
fan-out ``shape[1]``; a convolution kernel ``(*window, in, out)`` is treated as
the ``(prod(window) * in) x out`` matrix. With ``batch_dims=k`` the leading
``k`` axes are a stack of ``(in, out)`` matrices (scanned layers, MoE experts).
Leaves of the same matrix shape and dtype go through the core as one batched call.

DynMuon's exponent depends on the step count, a traced value under ``jax.jit``;
the schedule's finite set of values (a :class:`~spectral_ops.schedules.GridSchedule`)
is compiled once as the branches of a ``jax.lax.switch``, and the branch index is
computed on the host by ``jax.pure_callback``: one compilation for the whole run.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .direction import SCALES, Direction, scale_factor

__all__ = ["scale_by_spectral", "ScaleBySpectralState", "muon", "mucon", "muon_p", "dyn_muon",
           "Direction", "scale_factor", "SCALES"]


class ScaleBySpectralState(NamedTuple):
    """State of :func:`scale_by_spectral`.

    Attributes
    ----------
    count : jax.Array
        int32 scalar, the number of updates taken.
    mu : pytree
        The momentum (EMA of the gradients), same tree as the parameters.
    """

    count: jax.Array
    mu: Any


def _matrix_view(shape, batch_dims):
    """(matrix shape (..., in, out), fan_in, fan_out) of a flax-layout leaf."""
    if len(shape) - batch_dims < 2 or (batch_dims and len(shape) - batch_dims != 2):
        raise ValueError(
            f"a spectral leaf needs {'exactly' if batch_dims else 'at least'} "
            f"{batch_dims + 2} dimensions (batch_dims={batch_dims}); got shape {tuple(shape)}. "
            f"Leave it to AdamW (spectral_mask) or reshape it.")
    if batch_dims:
        return tuple(shape), shape[-2], shape[-1]
    fan_in, fan_out = math.prod(shape[:-1]), shape[-1]
    return (fan_in, fan_out), fan_in, fan_out


def scale_by_spectral(direction: Direction, *, momentum: float = 0.95, nesterov: bool = True,
                      scale: str = "spectral", batch_dims: int = 0,
                      mu_dtype=None) -> optax.GradientTransformation:
    """Momentum, a spectral direction and a shape scale, for a tree of matrices.

    Parameters
    ----------
    direction : Direction
        The spectral map (``Direction("polar" | "clip" | "power", ...)``).
    momentum : float
        EMA decay :math:`\\beta` in [0, 1).
    nesterov : bool
        Nesterov form, as ``optax.contrib.muon``.
    scale : {"spectral", "rms", "jordan", "none"}
        Learning-rate scale by shape (see ``scale_factor``).
    batch_dims : int
        Leading axes of every leaf that are a stack of matrices.
    mu_dtype : dtype, optional
        Dtype of the momentum (default: the parameters').
    """
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); got {momentum!r}.")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got {scale!r}.")
    if direction.p_schedule is not None:
        sched = direction.p_schedule
        if not (hasattr(sched, "values") and hasattr(sched, "index")):
            raise ValueError(
                "under jax.jit the exponent schedule must list its values: use a schedule from "
                "spectral_ops.schedules (a GridSchedule) or wrap yours in one.")
        if sched(0) not in tuple(sched.values):
            raise ValueError(f"the schedule's value at step 0, {sched(0)}, is not in its "
                             f"values {tuple(sched.values)}.")

    def init_fn(params):
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params)
        return ScaleBySpectralState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates, state, params=None):
        del params
        b = momentum
        mu = jax.tree.map(lambda m, g: b * m + (1 - b) * g.astype(m.dtype), state.mu, updates)
        t = state.count + 1
        # bias corrections, with optax.contrib.muon's counts
        bc = lambda k: 1 - b ** k.astype(jnp.float32)  # noqa: E731
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: b * m / bc(t + 1) + (1 - b) * g.astype(m.dtype) / bc(t), mu, updates)
        else:
            mu_hat = jax.tree.map(lambda m: m / bc(t), mu)
        leaves, treedef = jax.tree.flatten(mu_hat)
        idx = None
        if direction.p_schedule is not None and leaves:
            # one host callback per step for the schedule's position
            sched = direction.p_schedule
            idx = jax.pure_callback(lambda c: np.int32(sched.index(int(c))),
                                    jax.ShapeDtypeStruct((), jnp.int32), state.count)
        out = _apply_batched(direction, leaves, idx, scale, batch_dims)
        return jax.tree.unflatten(treedef, out), ScaleBySpectralState(count=t, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _apply_batched(direction, leaves, idx, scale, batch_dims):
    # idx: the schedule's branch index for this step (None without a schedule)
    """The direction of every leaf; same-shaped matrices share one batched core call."""
    buckets: dict = {}
    for i, x in enumerate(leaves):
        shape, fan_in, fan_out = _matrix_view(x.shape, batch_dims)
        buckets.setdefault((shape, x.dtype), []).append(i)
    out = [None] * len(leaves)
    for (shape, _), members in buckets.items():
        stack = jnp.stack([leaves[i].reshape(shape) for i in members])
        d = _direction(direction, stack, idx)
        _, fan_in, fan_out = _matrix_view(shape, batch_dims)
        k = scale_factor(scale, fan_out, fan_in)
        for j, i in enumerate(members):
            out[i] = (k * d[j]).reshape(leaves[i].shape).astype(leaves[i].dtype)
    return out


def _direction(direction: Direction, x, idx):
    if direction.p_schedule is None:
        return direction(x)
    branches = [(lambda v: (lambda y: Direction("power", direction.method, p=v,
                                                compute_dtype=direction.compute_dtype)(y)))(v)
                for v in direction.p_schedule.values]
    return jax.lax.switch(idx, branches, x)


def _partition(spectral_tx, learning_rate, weight_decay, spectral_mask, adam):
    adam_lr = adam.pop("adam_learning_rate", None)
    adam_tx = optax.adamw(
        learning_rate=learning_rate if adam_lr is None else adam_lr,
        b1=adam.pop("adam_b1", 0.9), b2=adam.pop("adam_b2", 0.999),
        eps=adam.pop("adam_eps", 1e-8), weight_decay=adam.pop("adam_weight_decay", 0.0),
        nesterov=adam.pop("adam_nesterov", True))
    if adam:
        raise TypeError(f"unexpected keyword arguments: {sorted(adam)}")

    def labels(params):
        mask = spectral_mask(params) if callable(spectral_mask) else spectral_mask
        if mask is None:
            return jax.tree.map(lambda p: "spectral" if p.ndim >= 2 else "adam", params)
        return jax.tree.map(lambda p, m: "spectral" if m else "adam", params, mask)

    chain = optax.chain(spectral_tx, optax.add_decayed_weights(weight_decay),
                        optax.scale_by_learning_rate(learning_rate))
    return optax.partition({"spectral": chain, "adam": adam_tx}, labels)


def muon(learning_rate, *, momentum: float = 0.95, nesterov: bool = True,
         weight_decay: float = 0.0, method: str = "auto", steps: int | None = None,
         scale: str = "spectral", compute_dtype=None, batch_dims: int = 0,
         spectral_mask=None, mu_dtype=None, **adam) -> optax.GradientTransformation:
    """Muon: the polar factor of the momentum.

    With ``method="jordan", steps=5, scale="jordan"`` it reproduces
    ``optax.contrib.muon`` (tested to 1e-5 in float32). ``spectral_mask``: a
    tree of bools (or a callable params -> tree) choosing the leaves that get the
    spectral update (default: ``ndim >= 2``); the rest get AdamW
    (``adam_learning_rate``, ``adam_b1``, ``adam_b2``, ``adam_eps``,
    ``adam_weight_decay``, ``adam_nesterov``: ``optax.contrib.muon``'s defaults).
    ``mu_dtype``: dtype of the momentum (e.g. ``jnp.float32`` for bfloat16
    parameters).
    """
    tx = scale_by_spectral(Direction("polar", method, steps, compute_dtype=compute_dtype),
                           momentum=momentum, nesterov=nesterov, scale=scale,
                           batch_dims=batch_dims, mu_dtype=mu_dtype)
    return _partition(tx, learning_rate, weight_decay, spectral_mask, adam)


def mucon(learning_rate, *, tau: float = 1.0, momentum: float = 0.95, nesterov: bool = True,
          weight_decay: float = 0.0, method: str = "auto", steps: int | None = None,
          scale: str = "spectral", compute_dtype=None, batch_dims: int = 0,
          spectral_mask=None, mu_dtype=None, **adam) -> optax.GradientTransformation:
    """MuCon: the momentum with singular values clipped at ``tau``."""
    tx = scale_by_spectral(Direction("clip", method, steps, tau=tau, compute_dtype=compute_dtype),
                           momentum=momentum, nesterov=nesterov, scale=scale,
                           batch_dims=batch_dims, mu_dtype=mu_dtype)
    return _partition(tx, learning_rate, weight_decay, spectral_mask, adam)


def muon_p(learning_rate, *, p: float | Fraction = 0.5, momentum: float = 0.95,
           nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
           scale: str = "spectral", compute_dtype=None, batch_dims: int = 0,
           spectral_mask=None, mu_dtype=None, **adam) -> optax.GradientTransformation:
    """Muon^p: the fractional power ``U S^p V^T`` of the momentum."""
    tx = scale_by_spectral(Direction("power", method, p=p, compute_dtype=compute_dtype),
                           momentum=momentum, nesterov=nesterov, scale=scale,
                           batch_dims=batch_dims, mu_dtype=mu_dtype)
    return _partition(tx, learning_rate, weight_decay, spectral_mask, adam)


def dyn_muon(learning_rate, *, p_schedule: Callable, momentum: float = 0.95,
             nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
             scale: str = "spectral", compute_dtype=None, batch_dims: int = 0,
             spectral_mask=None, mu_dtype=None, **adam) -> optax.GradientTransformation:
    """DynMuon: Muon^p with ``p = p_schedule(step)``, a
    :class:`~spectral_ops.schedules.GridSchedule` such as
    ``spectral_ops.schedules.dynmuon_schedule(total_steps)``."""
    tx = scale_by_spectral(Direction("power", method, p_schedule=p_schedule,
                                     compute_dtype=compute_dtype),
                           momentum=momentum, nesterov=nesterov, scale=scale,
                           batch_dims=batch_dims, mu_dtype=mu_dtype)
    return _partition(tx, learning_rate, weight_decay, spectral_mask, adam)
