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

Directions are scale-invariant by default (``normalize=True``: MuCon's ``tau``
relative to the momentum's RMS singular value, Muon^p's output divided by
:math:`s_{max}^p`; see :mod:`spectral_ops.adapters.direction`); ``normalize=False``
gives the literal maps.

Non-finite gradients (``nonfinite``): ``"skip"`` (default) skips, per leaf, the
update and the state of every leaf whose gradient holds NaN or inf (a
``jnp.where`` on each leaf: no host synchronisation, one compilation); the
counts (steps, schedules) still advance. ``"raise"`` adds a
:func:`jax.experimental.checkify.check` per leaf, naming the leaf: eagerly it
raises, and under ``jax.jit`` the step must be wrapped in
:func:`jax.experimental.checkify.checkify` (a plain ``jax.jit`` refuses to trace
it). ``"ignore"``: no check.

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
from jax.experimental import checkify

from ._jax_dist import find_mesh, spread_map
from .direction import (DEFAULT_POLAR_METHOD,
                        DEFAULT_SCALE, NONFINITE,
                        SCALES, Direction, check_bool, check_choice, check_int, check_real,
                        scale_factor, smax_log)

__all__ = ["scale_by_spectral", "ScaleBySpectralState", "muon", "mucon", "muon_p", "dyn_muon",
           "Direction", "scale_factor", "SCALES", "NONFINITE"]


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
                      scale: str = DEFAULT_SCALE, batch_dims: int = 0, mu_dtype=None,
                      nonfinite: str = "skip", mesh=None) -> optax.GradientTransformation:
    """Momentum, a spectral direction and a shape scale, for a tree of matrices.

    Parameters
    ----------
    direction : Direction
        The spectral map (``Direction("polar" | "clip" | "power", ...)``).
    momentum : float
        EMA decay :math:`\\beta` in [0, 1).
    nesterov : bool
        Nesterov form, as ``optax.contrib.muon``.
    scale : {"jordan", "spectral", "rms", "none"}
        Learning-rate scale by shape (see ``scale_factor``). Default
        ``"jordan"``, ``optax.contrib.muon``'s rule (``DEFAULT_SCALE``).
    batch_dims : int
        Leading axes of every leaf that are a stack of matrices.
    mu_dtype : dtype, optional
        Dtype of the momentum (default: the parameters').
    nonfinite : {"skip", "raise", "ignore"}
        Gradients holding NaN or inf: see the module docstring.
    mesh : jax.sharding.Mesh, optional
        Sharded parameters (docs/distributed.md): each bucket's stack is sharded
        over this mesh's devices and every map runs whole on one device. Default:
        the context mesh (``jax.set_mesh``), else the mesh the parameters are
        sharded over; ``False``: let the partitioner shard the iterations.
    """
    name = "scale_by_spectral"
    if not isinstance(direction, Direction):
        raise TypeError(f"{name}: direction must be a spectral_ops.adapters Direction; got "
                        f"{type(direction).__name__}.")
    _check_common(name, momentum=momentum, nesterov=nesterov, scale=scale,
                  batch_dims=batch_dims, nonfinite=nonfinite)
    return _with_nonfinite(_scale_by_spectral(direction, momentum, nesterov, scale, batch_dims,
                                              mu_dtype, name, mesh), nonfinite, name)


def _check_common(name, *, momentum, nesterov, scale, batch_dims, nonfinite):
    check_real(name, "momentum", momentum, lo=0, hi=1, hi_open=True)
    check_bool(name, "nesterov", nesterov)
    check_choice(name, "scale", scale, SCALES)
    check_int(name, "batch_dims", batch_dims, 0)
    check_choice(name, "nonfinite", nonfinite, NONFINITE)


def _scale_by_spectral(direction, momentum, nesterov, scale, batch_dims, mu_dtype, name,
                       mesh=None):
    if direction.p_schedule is not None:
        sched = direction.p_schedule
        if not (hasattr(sched, "values") and hasattr(sched, "index")):
            raise ValueError(
                f"{name}: under jax.jit the exponent schedule must list its values: use a "
                f"schedule from spectral_ops.schedules (a GridSchedule) or wrap yours in one.")
        if sched(0) not in tuple(sched.values):
            raise ValueError(f"{name}: the schedule's value at step 0, {sched(0)}, is not in its "
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
        out = _apply_batched(direction, leaves, idx, scale, batch_dims, mesh)
        # in the gradients' dtypes (the float32 bias corrections promote a bfloat16 mu_hat)
        out = [o.astype(g.dtype) for o, g in zip(out, jax.tree.leaves(updates))]
        return jax.tree.unflatten(treedef, out), ScaleBySpectralState(count=t, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def _apply_batched(direction, leaves, idx, scale, batch_dims, mesh=None):
    # idx: the schedule's branch index for this step (None without a schedule)
    """The direction of every leaf; same-shaped matrices share one batched core call
    (on a mesh: each matrix whole on one device, see ``_jax_dist``)."""
    mesh = None if mesh is False else find_mesh(leaves, mesh)
    buckets: dict = {}
    for i, x in enumerate(leaves):
        shape, fan_in, fan_out = _matrix_view(x.shape, batch_dims)
        buckets.setdefault((shape, x.dtype), []).append(i)
    out = [None] * len(leaves)
    for (shape, _), members in buckets.items():
        mats = [leaves[i].reshape(shape) for i in members]
        if mesh is None:
            d = _direction(direction, jnp.stack(mats), idx)
        elif idx is None:
            d = spread_map(lambda x: _direction(direction, x, None), mats, mesh)
        else:
            d = spread_map(lambda x, i: _direction(direction, x, i), mats, mesh, idx)
        _, fan_in, fan_out = _matrix_view(shape, batch_dims)
        k = scale_factor(scale, fan_out, fan_in)
        for j, i in enumerate(members):
            out[i] = (k * d[j]).reshape(leaves[i].shape).astype(leaves[i].dtype)
    return out


def _direction(direction: Direction, x, idx):
    if direction.p_schedule is None:
        return direction(x)
    # one branch per listed exponent; the s_max estimate of the normaliser does not
    # depend on p, so it is computed once, outside the branches (half the compile time)
    smax = smax_log(x) if direction.normalize else None
    branches = [(lambda v: (lambda y, s: direction.power_direction(y, v, s)))(v)
                for v in direction.p_schedule.values]
    return jax.lax.switch(idx, branches, x, smax)


def _with_nonfinite(tx, policy, name):
    """``tx`` with the non-finite policy, per leaf of the gradient tree.

    ``"skip"``: a leaf whose gradient holds NaN or inf enters ``tx`` as zeros,
    leaves it as a zero update, and keeps its old state in every part of the
    state that is shaped like the gradient tree (momenta, Adam moments); the
    other parts (counts) advance. ``"raise"``: a checkify check per leaf.
    """
    if policy == "ignore":
        return tx
    inner = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, **extra_args):
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        oks = [jnp.all(jnp.isfinite(g)) for _, g in flat]
        if policy == "raise":
            for (path, g), ok in zip(flat, oks):
                checkify.check(ok, f"{name}: the gradient of leaf {jax.tree_util.keystr(path)} "
                                   f"(shape {tuple(g.shape)}) holds NaN or inf.")
            return inner.update(updates, state, params, **extra_args)
        safe = jax.tree.unflatten(treedef, [jnp.where(ok, g, jnp.zeros_like(g))
                                            for (_, g), ok in zip(flat, oks)])
        new_updates, new_state = inner.update(safe, state, params, **extra_args)
        new_updates = jax.tree.unflatten(treedef, [
            jnp.where(ok, u, jnp.zeros_like(u))
            for u, ok in zip(treedef.flatten_up_to(new_updates), oks)])
        shapes = [jnp.shape(g) for _, g in flat]

        def like_updates(x):
            return (jax.tree.structure(x) == treedef
                    and [jnp.shape(v) for v in jax.tree.leaves(x)] == shapes)

        def select(new, old):
            if like_updates(new):
                return jax.tree.unflatten(treedef, [
                    jnp.where(ok, n, o) for n, o, ok in
                    zip(treedef.flatten_up_to(new), treedef.flatten_up_to(old), oks)])
            return new
        new_state = jax.tree.map(select, new_state, state, is_leaf=like_updates)
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


_ADAM_OPTIONS = ("adam_learning_rate", "adam_b1", "adam_b2", "adam_eps", "adam_weight_decay",
                 "adam_nesterov")


def _check_learning_rate(name, what, lr):
    if not callable(lr):
        check_real(name, what, lr, lo=0)


def _partition(name, spectral_tx, learning_rate, weight_decay, spectral_mask, adam,
               nonfinite="skip", hints=None):
    for key in adam:
        if key not in _ADAM_OPTIONS:
            hint = (hints or {}).get(key, "")
            raise TypeError(f"{name}() got an unexpected keyword argument {key!r}{hint}.")
    _check_learning_rate(name, "learning_rate", learning_rate)
    check_real(name, "weight_decay", weight_decay, lo=0)
    adam_lr = adam.pop("adam_learning_rate", None)
    if adam_lr is not None:
        _check_learning_rate(name, "adam_learning_rate", adam_lr)
    b1, b2 = adam.pop("adam_b1", 0.9), adam.pop("adam_b2", 0.999)
    check_real(name, "adam_b1", b1, lo=0, hi=1, hi_open=True)
    check_real(name, "adam_b2", b2, lo=0, hi=1, hi_open=True)
    eps = adam.pop("adam_eps", 1e-8)
    check_real(name, "adam_eps", eps, lo=0, lo_open=True,
               what=" (a zero eps divides 0 by 0 where a gradient entry stays 0)")
    adam_wd = adam.pop("adam_weight_decay", 0.0)
    check_real(name, "adam_weight_decay", adam_wd, lo=0)
    adam_nesterov = adam.pop("adam_nesterov", True)
    check_bool(name, "adam_nesterov", adam_nesterov)
    adam_tx = optax.adamw(
        learning_rate=learning_rate if adam_lr is None else adam_lr,
        b1=b1, b2=b2, eps=eps, weight_decay=adam_wd, nesterov=adam_nesterov)

    def labels(params):
        mask = spectral_mask(params) if callable(spectral_mask) else spectral_mask
        if mask is None:
            return jax.tree.map(lambda p: "spectral" if p.ndim >= 2 else "adam", params)
        return jax.tree.map(lambda p, m: "spectral" if m else "adam", params, mask)

    chain = optax.chain(spectral_tx, optax.add_decayed_weights(weight_decay),
                        optax.scale_by_learning_rate(learning_rate))
    # the non-finite policy wraps each whole branch, so that a skipped leaf's
    # weight decay is skipped too
    return optax.partition({"spectral": _with_nonfinite(chain, nonfinite, name),
                            "adam": _with_nonfinite(adam_tx, nonfinite, name)}, labels)


def _preset(name, direction_kw, learning_rate, weight_decay, spectral_mask, adam, *, momentum,
            nesterov, scale, batch_dims, mu_dtype, nonfinite, hints=None):
    """A preset: checks every argument (naming ``name``), then builds the partition."""
    adam = dict(adam)
    if isinstance(adam.get("adam"), dict):  # optax.inject_hyperparams passes **adam as adam=
        adam = {**adam.pop("adam"), **adam}
    # None (the default): no stacked matrices; a None default is also what keeps
    # optax.inject_hyperparams from turning it into an array
    batch_dims = 0 if batch_dims is None else batch_dims
    _check_common(name, momentum=momentum, nesterov=nesterov, scale=scale,
                  batch_dims=batch_dims, nonfinite=nonfinite)
    direction = Direction(**direction_kw, owner=name)
    tx = _scale_by_spectral(direction, momentum, nesterov, scale, batch_dims, mu_dtype, name)
    return _partition(name, tx, learning_rate, weight_decay, spectral_mask, dict(adam),
                      nonfinite, hints)


_POWER_HINTS = {"steps": " (power's step counts follow from p and the dtype)",
                "tol": " (power's accuracy targets follow from p and the dtype)",
                "tau": " (tau is mucon's)"}


def muon(learning_rate, *, momentum: float = 0.95, nesterov: bool = True,
         weight_decay: float = 0.0, method: str = DEFAULT_POLAR_METHOD, steps: int | None = None,
         scale: str = DEFAULT_SCALE, compute_dtype=None, floor: float | None = None,
         tol: float | None = None, batch_dims: int | None = None, spectral_mask=None, mu_dtype=None,
         nonfinite: str = "skip", **adam) -> optax.GradientTransformation:
    """Muon: the polar factor of the momentum.

    ``method``, ``steps``, ``floor``, ``tol`` and ``compute_dtype`` pass
    through to :func:`spectral_ops.polar`, with the optimizer's defaults (as
    the PyTorch ``Muon``'s): Polar Express with the fewest steps that map every
    singular value above ``floor * s_max`` (1e-2) to within ``tol`` (0.3) of 1;
    ``tol=1e-4, floor=1e-3`` gives ``polar``'s own float32 accuracy.

    With ``method="jordan", steps=5, scale="jordan"`` it reproduces
    ``optax.contrib.muon`` (tested to 1e-5 in float32). ``spectral_mask``: a
    tree of bools (or a callable params -> tree) choosing the leaves that get the
    spectral update (default: ``ndim >= 2``); the rest get AdamW
    (``adam_learning_rate``, ``adam_b1``, ``adam_b2``, ``adam_eps``,
    ``adam_weight_decay``, ``adam_nesterov``: ``optax.contrib.muon``'s defaults).
    ``mu_dtype``: dtype of the momentum (e.g. ``jnp.float32`` for bfloat16
    parameters). ``nonfinite``: ``"skip"``, ``"raise"`` or ``"ignore"`` (module
    docstring), for both the spectral and the AdamW leaves. ``floor`` and ``tol``
    default (None) to those values, ``batch_dims`` to 0.

    ``optax.inject_hyperparams(muon)(learning_rate=...)`` makes
    ``learning_rate``, ``momentum`` and ``weight_decay`` (and the ``adam_*``
    numbers given) hyperparameters in the state, changeable between steps;
    options the plans are made from (``steps``, ``floor``, ``tol``,
    ``batch_dims``; mucon's ``tau``, muon_p's ``p``, dyn_muon's ``p_schedule``)
    must then be left at None or named in ``static_args``.
    """
    return _preset("muon", dict(kind="polar", method=method, steps=steps,
                                compute_dtype=compute_dtype, floor=floor, tol=tol),
                   learning_rate, weight_decay, spectral_mask, adam, momentum=momentum,
                   nesterov=nesterov, scale=scale, batch_dims=batch_dims, mu_dtype=mu_dtype,
                   nonfinite=nonfinite, hints={"tau": " (tau is mucon's)",
                                               "p": " (p is muon_p's)"})


def mucon(learning_rate, *, tau: float | None = None, momentum: float = 0.95,
          nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
          steps: int | None = None, scale: str = DEFAULT_SCALE, compute_dtype=None,
          floor: float | None = None, tol: float | None = None, batch_dims: int | None = None,
          spectral_mask=None, mu_dtype=None, normalize: bool = True,
          nonfinite: str = "skip", **adam) -> optax.GradientTransformation:
    """MuCon: the momentum with its singular values clipped.

    ``normalize=True`` (default): the radius is ``tau`` (default 0.5) times the
    momentum's RMS singular value ``||M||_F / sqrt(min(m, n))`` per matrix, and
    the direction is ``clip(M, radius) / radius`` (spectral norm at most 1, as
    Muon's). ``normalize=False``: the literal ``clip(M, tau)`` with an absolute
    ``tau`` (default 1.0). ``method``, ``steps``, ``floor``, ``tol`` and
    ``compute_dtype`` pass through to :func:`spectral_ops.clip`, with its
    defaults.
    """
    return _preset("mucon", dict(kind="clip", method=method, steps=steps, tau=tau,
                                 compute_dtype=compute_dtype, normalize=normalize,
                                 floor=floor, tol=tol),
                   learning_rate, weight_decay, spectral_mask, adam, momentum=momentum,
                   nesterov=nesterov, scale=scale, batch_dims=batch_dims, mu_dtype=mu_dtype,
                   nonfinite=nonfinite, hints={"p": " (p is muon_p's)"})


def muon_p(learning_rate, *, p: float | Fraction = 0.5, momentum: float = 0.95,
           nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
           scale: str = DEFAULT_SCALE, compute_dtype=None, floor: float | None = None,
           batch_dims: int | None = None, spectral_mask=None, mu_dtype=None,
           normalize: bool = True, nonfinite: str = "skip",
           **adam) -> optax.GradientTransformation:
    """Muon^p: the fractional power ``U S^p V^T`` of the momentum, ``p`` in [-1, 1].

    ``normalize=True`` (default): divided by ``s_max^p`` per matrix (top singular
    value 1, as Muon's; spectral norm 1 for ``p >= 0``). ``normalize=False``: the
    literal ``U S^p V^T``.
    """
    return _preset("muon_p", dict(kind="power", method=method, p=p,
                                  compute_dtype=compute_dtype, normalize=normalize,
                                  floor=floor),
                   learning_rate, weight_decay, spectral_mask, adam, momentum=momentum,
                   nesterov=nesterov, scale=scale, batch_dims=batch_dims, mu_dtype=mu_dtype,
                   nonfinite=nonfinite, hints=_POWER_HINTS)


def dyn_muon(learning_rate, *, p_schedule: Callable, momentum: float = 0.95,
             nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
             scale: str = DEFAULT_SCALE, compute_dtype=None, floor: float | None = None,
             batch_dims: int | None = None, spectral_mask=None, mu_dtype=None,
             normalize: bool = True, nonfinite: str = "skip",
             **adam) -> optax.GradientTransformation:
    """DynMuon: Muon^p with ``p = p_schedule(step)``, a
    :class:`~spectral_ops.schedules.GridSchedule` such as
    ``spectral_ops.schedules.dynmuon_schedule(total_steps)``; ``normalize`` as
    for :func:`muon_p`."""
    return _preset("dyn_muon", dict(kind="power", method=method, p_schedule=p_schedule,
                                    compute_dtype=compute_dtype, normalize=normalize,
                                    floor=floor),
                   learning_rate, weight_decay, spectral_mask, adam, momentum=momentum,
                   nesterov=nesterov, scale=scale, batch_dims=batch_dims, mu_dtype=mu_dtype,
                   nonfinite=nonfinite, hints=_POWER_HINTS)
