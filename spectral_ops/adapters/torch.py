r"""PyTorch optimizers built on spectral_ops: Muon, MuCon, Muon^p and DynMuon.

Every optimizer here is a :class:`SpectralOptimizer`, one ``torch.optim.Optimizer``
that applies, to each matrix parameter :math:`W` with gradient :math:`G`,

.. math::

    M &\leftarrow \mu M + (1 - \mu) G \qquad(\text{torch.optim.Muon's convention}) \\
    D &= \operatorname{map}(G + \mu (M - G)) \ \text{(Nesterov) or}\ \operatorname{map}(M) \\
    W &\leftarrow (1 - \eta\lambda)\,W - \eta\,\kappa(W)\,D

where ``map`` is :func:`spectral_ops.polar` (Muon), :func:`spectral_ops.clip`
(MuCon), or :func:`spectral_ops.power` with a fixed ``p`` (Muon^p) or a schedule
``p_t`` (DynMuon), and :math:`\kappa` is the ``scale`` rule
(:func:`scale_factor`). Parameters that are not matrices (biases, norms) and any
parameter group with ``spectral=False`` (e.g. embeddings, output heads) get
AdamW inside the same optimizer, with their own hyperparameters.

Shapes: torch's ``(out, in)`` layout gives fan-out ``shape[0]``. A parameter of
more than two dimensions is, by default, a convolution kernel
``(out, in, *kernel)`` and is treated as the ``out x (in * prod(kernel))``
matrix. A group with ``batch_dims=k`` instead treats the leading ``k``
dimensions as a stack of matrices (MoE experts, stacked heads): each
``(out, in)`` slice gets its own direction. Matrices of the same shape, dtype
and device are stacked into one batched call of the core.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Iterable

import torch

from .direction import SCALES, Direction, scale_factor

__all__ = ["SpectralOptimizer", "Muon", "MuCon", "MuonP", "DynMuon", "Direction", "scale_factor",
           "SCALES"]

_STATE_KEYS_FP32 = ("momentum_buffer", "exp_avg", "exp_avg_sq")


class SpectralOptimizer(torch.optim.Optimizer):
    """Momentum, a spectral direction, a shape scale and decoupled weight decay.

    Parameters
    ----------
    params : iterable of tensors or dicts
        Parameters or parameter groups. A group may set ``spectral`` (bool:
        whether its parameters get the spectral update; default: ``ndim >= 2``)
        and ``batch_dims`` (int, default 0: a parameter of more than two
        dimensions is a convolution kernel ``(out, in, *kernel)``, treated as
        the ``out x (in * prod(kernel))`` matrix; ``k > 0``: the leading ``k``
        dimensions are a stack of ``(out, in)`` matrices, and the parameter must
        have exactly ``k + 2`` dimensions), and any hyperparameter below.
    lr : float
        Learning rate of the spectral update.
    direction : Direction
        The spectral map (see :class:`~spectral_ops.adapters.direction.Direction`).
    momentum : float
        :math:`\\mu` in [0, 1).
    nesterov : bool
        Use the Nesterov form.
    weight_decay : float
        Decoupled weight decay :math:`\\lambda` (multiplied by ``lr``).
    scale : {"spectral", "rms", "jordan", "none"}
        Learning-rate scale by shape (:func:`scale_factor`).
    adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay
        AdamW hyperparameters for the non-spectral parameters. A
        ``torch.optim.lr_scheduler`` changes ``lr`` only; ``adamw_lr`` is a
        separate group entry (schedule it with a ``LambdaLR``-style callback of
        your own, or set ``group["adamw_lr"]`` each step).
    """

    def __init__(self, params, lr: float = 0.02, *, direction: Direction, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, scale: str = "spectral",
                 adamw_lr: float = 3e-4, adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0; got {lr!r}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}.")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; got {weight_decay!r}.")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}; got {scale!r}.")
        if not isinstance(direction, Direction):
            raise TypeError("direction must be a spectral_ops.adapters Direction.")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        scale=scale, adamw_lr=adamw_lr, adamw_betas=tuple(adamw_betas),
                        adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
                        spectral=None, batch_dims=0)
        super().__init__(params, defaults)
        self.direction = direction
        for group in self.param_groups:
            for p in group["params"]:
                if torch.is_complex(p):
                    raise ValueError("complex parameters are not supported.")
                if self._is_spectral(group, p) and p.ndim - group["batch_dims"] < 2:
                    raise ValueError(
                        f"a spectral parameter needs at least 2 dimensions after its "
                        f"batch_dims={group['batch_dims']}; got shape {tuple(p.shape)}. Put it in "
                        f"a group with spectral=False to give it AdamW.")
                if self._is_spectral(group, p) and group["batch_dims"] and \
                        p.ndim - group["batch_dims"] != 2:
                    raise ValueError(
                        f"with batch_dims={group['batch_dims']} a spectral parameter must have "
                        f"exactly {group['batch_dims'] + 2} dimensions (a stack of (out, in) "
                        f"matrices); got shape {tuple(p.shape)}. Reshape stacked convolution "
                        f"kernels to (..., out, in * prod(kernel)) yourself.")

    @staticmethod
    def _is_spectral(group, p) -> bool:
        return p.ndim >= 2 if group["spectral"] is None else bool(group["spectral"])

    @staticmethod
    def _matrix_shape(p, batch_dims: int) -> tuple[int, ...]:
        """The (..., out, in) view of a parameter (see the module docstring)."""
        if batch_dims:
            return tuple(p.shape)
        return (p.shape[0], math.prod(p.shape[1:]))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        """One optimisation step; ``closure`` re-evaluates the loss (with gradients)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            spectral, adam = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("sparse gradients are not supported.")
                (spectral if self._is_spectral(group, p) else adam).append(p)
            if spectral:
                self._spectral_step(group, spectral)
            if adam:
                self._adamw_step(group, adam)
        return loss

    def _state_dtype(self, p):
        # 16-bit parameters keep float32 optimizer state
        return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype

    def _spectral_step(self, group, params):
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        buckets: dict = {}
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["step"] = 0
            buf = state["momentum_buffer"]
            g = p.grad.to(buf.dtype)
            buf.lerp_(g, 1 - mu)
            upd = g.lerp(buf, mu) if group["nesterov"] else buf
            shape = self._matrix_shape(p, group["batch_dims"])
            key = (shape, upd.dtype, upd.device, state["step"])
            buckets.setdefault(key, []).append((p, upd.reshape(shape)))
            state["step"] += 1
        for (shape, _, _, step), items in buckets.items():
            # one batched call of the core for all matrices of this shape
            stack = torch.stack([u for _, u in items]) if len(items) > 1 else items[0][1]
            out = self.direction(stack, step)
            outs = out.unbind(0) if len(items) > 1 else [out]
            fan_out, fan_in = shape[-2], shape[-1]
            k = scale_factor(group["scale"], fan_out, fan_in)
            for (p, _), d in zip(items, outs):
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(d.reshape(p.shape).to(p.dtype), alpha=-lr * k)

    def _adamw_step(self, group, params):
        lr, (b1, b2) = group["adamw_lr"], group["adamw_betas"]
        eps, wd = group["adamw_eps"], group["adamw_weight_decay"]
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["step"] = 0
            state["step"] += 1
            t = state["step"]
            g = p.grad.to(state["exp_avg"].dtype)
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(eps)
            if wd:
                p.mul_(1 - lr * wd)
            p.add_((state["exp_avg"] / (1 - b1**t) / denom).to(p.dtype), alpha=-lr)

    def load_state_dict(self, state_dict):
        """As ``torch.optim.Optimizer.load_state_dict``, keeping float32 state of
        16-bit parameters in float32 (the base class would cast it to the
        parameter's dtype)."""
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for idx, saved in state_dict["state"].items():
            p = params[int(idx)]
            for key in _STATE_KEYS_FP32:
                if key in saved:
                    self.state[p][key] = saved[key].detach().clone().to(device=p.device)


class Muon(SpectralOptimizer):
    """Muon: the polar factor of the momentum (:func:`spectral_ops.polar`).

    ``Muon(params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
    method="auto", steps=None, scale="spectral", compute_dtype=None, **adamw)``.
    With ``method="jordan", steps=5, scale="jordan", compute_dtype=torch.bfloat16``
    it reproduces ``torch.optim.Muon``: after 10 steps the parameters differ by
    less than twice what ``torch.optim.Muon`` itself changes under one bfloat16
    rounding of its gradients (tested).
    """

    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, method: str = "auto",
                 steps: int | None = None, scale: str = "spectral", compute_dtype=None, **adamw):
        super().__init__(params, lr, direction=Direction("polar", method, steps,
                                                         compute_dtype=compute_dtype),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **adamw)


class MuCon(SpectralOptimizer):
    """MuCon: the momentum with its singular values clipped at ``tau``
    (:func:`spectral_ops.clip`). ``scale="spectral"`` then bounds the step's
    spectral norm by ``lr * tau * sqrt(fan_out / fan_in)``."""

    def __init__(self, params: Iterable, lr: float = 0.02, tau: float = 1.0,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", steps: int | None = None, scale: str = "spectral",
                 compute_dtype=None, **adamw):
        super().__init__(params, lr, direction=Direction("clip", method, steps, tau=tau,
                                                         compute_dtype=compute_dtype),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **adamw)


class MuonP(SpectralOptimizer):
    """Muon^p: the fractional power ``U S^p V^T`` of the momentum
    (:func:`spectral_ops.power`); ``p = 0`` is Muon."""

    def __init__(self, params: Iterable, lr: float = 0.02, p: float | Fraction = 0.5,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", scale: str = "spectral", compute_dtype=None, **adamw):
        super().__init__(params, lr, direction=Direction("power", method, p=p,
                                                         compute_dtype=compute_dtype),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **adamw)


class DynMuon(SpectralOptimizer):
    """DynMuon: Muon^p with the exponent ``p_schedule(step)`` (step counted from 0
    per parameter), e.g. :func:`spectral_ops.schedules.dynmuon_schedule`."""

    def __init__(self, params: Iterable, lr: float = 0.02, p_schedule: Callable | None = None,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", scale: str = "spectral", compute_dtype=None, **adamw):
        if p_schedule is None:
            raise ValueError("DynMuon needs p_schedule, e.g. "
                             "spectral_ops.schedules.dynmuon_schedule(total_steps).")
        super().__init__(params, lr, direction=Direction("power", method, p_schedule=p_schedule,
                                                         compute_dtype=compute_dtype),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **adamw)
