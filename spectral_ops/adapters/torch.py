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

import dataclasses
import inspect
import math
from fractions import Fraction
from typing import Callable, Iterable

import torch

from ._torch_dist import OwnerCompute
from .direction import (DEFAULT_POLAR_FLOOR, DEFAULT_POLAR_METHOD, DEFAULT_POLAR_TOL,
                        DEFAULT_SCALE, NONFINITE,
                        SCALES, Direction, check_bool, check_choice, check_int, check_real,
                        scale_factor)

__all__ = ["SpectralOptimizer", "Muon", "MuCon", "MuonP", "DynMuon", "Direction", "scale_factor",
           "SCALES", "NONFINITE"]

_STATE_KEYS_FP32 = ("momentum_buffer", "exp_avg", "exp_avg_sq")
#: every per-parameter state entry this optimizer writes (and reads back)
_STATE_KEYS = ("momentum_buffer", "step", "exp_avg", "exp_avg_sq")
#: the direction's options: one per optimizer, refused in a parameter group
_DIRECTION_OPTIONS = frozenset(f.name for f in dataclasses.fields(Direction))
#: other optimizers' group options, refused with the name of ours
_OTHER_NAMES = {"betas": "adamw_betas", "eps": "adamw_eps"}
#: the parameter-group entries of every state dict this optimizer has written
_GROUP_KEYS = ("lr", "momentum", "nesterov", "weight_decay", "scale", "adamw_lr", "adamw_betas",
               "adamw_eps", "adamw_weight_decay", "spectral", "batch_dims")


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
    scale : {"jordan", "spectral", "rms", "none"}
        Learning-rate scale by shape (:func:`scale_factor`). Default
        ``"jordan"``, ``torch.optim.Muon``'s rule (``DEFAULT_SCALE``).
    adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay
        AdamW hyperparameters for the non-spectral parameters. A
        ``torch.optim.lr_scheduler`` changes ``lr`` only; ``adamw_lr`` is a
        separate group entry (schedule it with a ``LambdaLR``-style callback of
        your own, or set ``group["adamw_lr"]`` each step).
    process_group : "auto", None, ProcessGroup or 1-D DeviceMesh
        Sharded and data-parallel training (docs/distributed.md): each matrix's
        map is computed by one rank. DTensor parameters (FSDP2) use their own
        mesh. Plain parameters use this group: ``"auto"``, the default group
        when ``torch.distributed`` is initialised with several processes (DDP);
        ``None``, no communication (every rank computes every map; for
        parameters that differ between ranks, e.g. pipeline stages).
    nonfinite : {"skip", "raise", "ignore"}
        What a step does with a gradient holding NaN or inf, checked for every
        parameter at the start of each step (one fused check per device).
        ``"skip"`` (default): that parameter's step is skipped, its update and
        its state (momentum, Adam moments; the step count still advances, so a
        DynMuon schedule stays on the training loop's clock); the other
        parameters step. On accelerators this runs without a host
        synchronisation (a masked update); :meth:`nonfinite_skips` counts the
        skipped parameter-steps. ``"raise"``: a ``FloatingPointError`` naming the
        parameter's index and shape, before any parameter or state changes (one
        synchronisation per step). ``"ignore"``: no check (NaN propagates, or the
        core's SVD raises).

    Copies: ``copy.deepcopy``, ``pickle`` and ``torch.save(optimizer)`` keep the
    direction and the options, and a copy continues bit-identically (a
    ``p_schedule`` must itself be picklable for ``pickle``/``torch.save``).
    """

    def __init__(self, params, lr: float = 0.02, *, direction: Direction, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, scale: str = DEFAULT_SCALE,
                 adamw_lr: float = 3e-4, adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0, process_group="auto",
                 nonfinite: str = "skip"):
        name = type(self).__name__
        if not isinstance(direction, Direction):
            raise TypeError(f"{name}: direction must be a spectral_ops.adapters Direction; got "
                            f"{type(direction).__name__}.")
        check_choice(name, "nonfinite", nonfinite, NONFINITE)
        if isinstance(adamw_betas, (tuple, list)):
            adamw_betas = tuple(adamw_betas)
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        scale=scale, adamw_lr=adamw_lr, adamw_betas=adamw_betas,
                        adamw_eps=adamw_eps, adamw_weight_decay=adamw_weight_decay,
                        spectral=None, batch_dims=0)
        self._check_group(defaults, name)  # every argument, before any parameter is touched
        self.direction = direction
        self.nonfinite = nonfinite
        #: skipped parameter-steps (nonfinite="skip"), one counter per device
        self._skips: dict = {}
        super().__init__(params, defaults)
        # sharded/data-parallel training: each map computed once, by its owner rank
        self._owner_compute = OwnerCompute(process_group)

    # -- construction checks ------------------------------------------------------------------
    @staticmethod
    def _check_group(group, name):
        """Every hyperparameter of a group (or of the defaults), named in the error."""
        check_real(name, "lr", group["lr"], lo=0)
        check_real(name, "momentum", group["momentum"], lo=0, hi=1, hi_open=True)
        check_bool(name, "nesterov", group["nesterov"])
        check_real(name, "weight_decay", group["weight_decay"], lo=0)
        check_choice(name, "scale", group["scale"], SCALES)
        check_real(name, "adamw_lr", group["adamw_lr"], lo=0)
        betas = group["adamw_betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"{name}: adamw_betas must be a pair (beta1, beta2); got {betas!r}.")
        for i, b in enumerate(betas):
            check_real(name, f"adamw_betas[{i}]", b, lo=0, hi=1, hi_open=True)
        check_real(name, "adamw_eps", group["adamw_eps"], lo=0, lo_open=True,
                   what=" (a zero eps divides 0 by 0 where a gradient entry stays 0)")
        check_real(name, "adamw_weight_decay", group["adamw_weight_decay"], lo=0)
        if group["spectral"] is not None:
            check_bool(name, "spectral", group["spectral"])
        check_int(name, "batch_dims", group["batch_dims"], 0)

    def add_param_group(self, param_group):
        """As ``torch.optim.Optimizer.add_param_group``, checking the group's
        hyperparameters and its parameters' shapes (nothing is added on error)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_params(group)
        except Exception:
            self.param_groups.pop()
            raise

    def _check_params(self, group):
        name = type(self).__name__
        self._check_group(group, name)
        # options of the whole optimizer (its direction) or of another optimizer, which a
        # group would otherwise carry without effect
        misplaced = sorted(set(group) & (_DIRECTION_OPTIONS | set(_OTHER_NAMES)))
        if misplaced:
            key = misplaced[0]
            hint = (f"use {_OTHER_NAMES[key]!r}" if key in _OTHER_NAMES else
                    "it is one per optimizer: build a second optimizer for these parameters")
            raise ValueError(f"{name}: {key!r} is not a parameter-group option ({hint}).")
        for p in group["params"]:
            if torch.is_complex(p):
                raise ValueError(f"{name}: complex parameters are not supported.")
            if self._is_spectral(group, p) and p.ndim - group["batch_dims"] < 2:
                raise ValueError(
                    f"{name}: a spectral parameter needs at least 2 dimensions after its "
                    f"batch_dims={group['batch_dims']}; got shape {tuple(p.shape)}. Put it in "
                    f"a group with spectral=False to give it AdamW.")
            if self._is_spectral(group, p) and group["batch_dims"] and \
                    p.ndim - group["batch_dims"] != 2:
                raise ValueError(
                    f"{name}: with batch_dims={group['batch_dims']} a spectral parameter must have "
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
        work = []
        for group in self.param_groups:
            spectral, adam = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("sparse gradients are not supported.")
                (spectral if self._is_spectral(group, p) else adam).append(p)
            work.append((group, spectral, adam))
        # the non-finite policy, for every parameter before any state changes
        ok = self._finite_flags([p for _, s, a in work for p in s + a])
        for group, spectral, adam in work:
            if spectral:
                self._spectral_step(group, spectral, ok)
            if adam:
                self._adamw_step(group, adam, ok)
        return loss

    # -- non-finite gradients -----------------------------------------------------------------
    def _finite_flags(self, params):
        """``None`` (nothing to mask) or ``{param: 0-d bool tensor}`` on each param's device.

        Where the flags are read back (on the CPU, where that is free, and for
        ``"raise"``): one sum per gradient, since a finite sum means every entry
        is finite (NaN and inf propagate through a sum); a gradient whose sum is
        not finite is checked entry by entry (a sum of huge finite values may
        overflow), so only the bad parameters take the masked path. Elsewhere
        (``"skip"`` on accelerators, no host synchronisation): one fused max-abs
        reduction per device and dtype (``torch._foreach_norm`` with
        ``ord=inf``: NaN and inf propagate, and no finite value overflows).
        """
        if self.nonfinite == "ignore" or not params:
            return None
        by_device: dict = {}
        for p in params:  # by device and dtype: one fused reduction each, in the grads' dtype
            by_device.setdefault((p.grad.device, p.grad.dtype), []).append(p)
        flags = {}
        for (device, _), ps in by_device.items():
            grads = [p.grad for p in ps]
            plain = all(type(g) is torch.Tensor for g in grads)
            if plain and (self.nonfinite == "raise" or device.type == "cpu"):
                # a finite sum: every entry finite (the usual case, one cheap pass)
                sums = torch.stack([g.sum() for g in grads]).isfinite().tolist()
                bad = [p for p, f in zip(ps, sums) if not f and not bool(p.grad.isfinite().all())]
            else:
                if plain:
                    fs = torch.stack(torch._foreach_norm(grads, math.inf)).isfinite()
                else:  # tensor subclasses (e.g. DTensor): one reduction each
                    fs = [torch.isfinite(g).all() for g in grads]
                    fs = torch.stack([f.full_tensor() if hasattr(f, "full_tensor") else f
                                      for f in fs])
                if not (self.nonfinite == "raise" or device.type == "cpu"):
                    flags.update(zip(ps, fs.unbind(0)))
                    counter = self._skips.get(device)
                    self._skips[device] = (~fs).sum() if counter is None else \
                        counter + (~fs).sum()
                    continue
                bad = [p for p, f in zip(ps, fs.tolist()) if not f]
            if bad and self.nonfinite == "raise":
                self._raise_nonfinite(bad[0])
            if bad:  # mask only those
                flags.update((p, torch.zeros((), dtype=torch.bool)) for p in bad)
                self._skips[device] = self._skips.get(device, 0) + len(bad)
        return flags or None

    def _raise_nonfinite(self, p):
        index, gi = 0, 0
        for gi, group in enumerate(self.param_groups):
            if any(q is p for q in group["params"]):
                index += next(i for i, q in enumerate(group["params"]) if q is p)
                break
            index += len(group["params"])
        raise FloatingPointError(
            f"{type(self).__name__}: the gradient of parameter {index} (group {gi}, shape "
            f"{tuple(p.shape)}) holds NaN or inf; nothing was updated. nonfinite='skip' "
            f"skips that parameter's step instead.")

    def nonfinite_skips(self) -> int:
        """Parameter-steps skipped for a non-finite gradient (``nonfinite="skip"``)
        since this optimizer was made (reading it synchronises with the device)."""
        return int(sum(int(c) for c in self._skips.values()))

    def _apply_update(self, p, d, lr, wd, k, ok=None):
        """``p <- (1 - lr wd) p - lr k d``; where ``ok[p]`` is false, ``p`` is unchanged."""
        d = d.reshape(p.shape).to(p.dtype)
        f = None if ok is None else ok.get(p)
        if f is None:
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(d, alpha=-lr * k)
            return
        # the same arithmetic out of place, then one select (no host synchronisation)
        new = p.mul(1 - lr * wd) if wd else p.clone()
        new.add_(d, alpha=-lr * k)
        p.copy_(torch.where(f, new, p))

    def _apply_updates(self, ps, ds, lr, wd, k, ok=None):
        """:meth:`_apply_update` for lists, the unmasked plain tensors in two fused
        ``torch._foreach`` calls (on the CPU the same per-tensor kernels, the same bits)."""
        plain, plain_d = [], []
        for p, d in zip(ps, ds):
            if type(p) is torch.Tensor or type(p) is torch.nn.Parameter:
                if ok is None or p not in ok:
                    plain.append(p)
                    plain_d.append(d.reshape(p.shape).to(p.dtype))
                    continue
            self._apply_update(p, d, lr, wd, k, ok)
        if plain:
            if wd:
                torch._foreach_mul_(plain, 1 - lr * wd)
            torch._foreach_add_(plain, plain_d, alpha=-lr * k)

    def _state_dtype(self, p):
        # 16-bit parameters keep float32 optimizer state
        return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype

    def _spectral_step(self, group, params, ok=None):
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        nesterov = group["nesterov"]
        buckets: dict = {}
        lerp_bufs, lerp_grads = [], []  # momentum updates, in one fused call
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["step"] = 0
            if p.numel() == 0:  # nothing to update (its fan-in or fan-out is 0)
                state["step"] += 1
                continue
            buf = state["momentum_buffer"]
            g = p.grad if p.grad.dtype == buf.dtype else p.grad.to(buf.dtype)
            if ok is not None and p in ok:
                # a skipped parameter: lerp towards the buffer itself leaves it exact,
                # and its (finite) direction is discarded by _apply_update
                g = torch.where(ok[p], g, buf)
            if type(buf) is torch.Tensor and type(g) is torch.Tensor:
                lerp_bufs.append(buf)
                lerp_grads.append(g)
            else:
                buf.lerp_(g, 1 - mu)
            shape = self._matrix_shape(p, group["batch_dims"])
            key = (shape, buf.dtype, buf.device, state["step"])
            buckets.setdefault(key, []).append((p, g, buf))
            state["step"] += 1
        if lerp_bufs:
            torch._foreach_lerp_(lerp_bufs, lerp_grads, 1 - mu)
        shared = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # under DDP/FSDP2/DTensor: every bucket's directions, each map on its owner rank
            shared = self._owner_compute.directions(self.direction, {
                key: [(p, (g.lerp(b, mu) if nesterov else b).reshape(key[0]))
                      for p, g, b in items] for key, items in buckets.items()})
        if shared is None:
            self._local_directions(group, buckets, ok)
            return
        for key, items in buckets.items():
            shape = key[0]
            k = scale_factor(group["scale"], shape[-2], shape[-1])
            self._apply_updates([p for p, _, _ in items], shared[key], lr, wd, k, ok)

    def _local_directions(self, group, buckets, ok):
        """Every bucket's directions on this process, one batched core call per stack.

        The Nesterov momentum is written straight into the stack. For Muon (a
        polar direction: the polar factor of a transpose is the transpose of the
        polar factor), matrices of transposed shapes share a stack
        in the wide orientation (a transformer's MLP-in and MLP-out matrices):
        one core call fewer, each of which costs a fixed ~0.5 ms of small
        operations on the CPU.
        """
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        nesterov = group["nesterov"]
        merge = self.direction.kind == "polar"
        stacks: dict = {}
        for (shape, dtype, device, step), items in buckets.items():
            wide = shape[:-2] + tuple(sorted(shape[-2:])) if merge else shape
            stacks.setdefault((wide, dtype, device, step), []).extend(
                (p, g, b, shape) for p, g, b in items)
        for (wide, dtype, device, step), items in stacks.items():
            if len(items) > 1:
                stack = torch.empty((len(items), *wide), dtype=dtype, device=device)
                for (_, g, b, shape), row in zip(items, stack.unbind(0)):
                    g, b = g.reshape(shape), b.reshape(shape)
                    if shape != wide:  # tall: its transpose
                        g, b = g.mT, b.mT
                    if nesterov:
                        torch.lerp(g, b, mu, out=row)
                    else:
                        row.copy_(b)
                outs = self.direction(stack, step).unbind(0)
                outs = [d if shape == wide else d.mT for (_, _, _, shape), d in zip(items, outs)]
            else:
                _, g, b, shape = items[0]
                outs = [self.direction((g.lerp(b, mu) if nesterov else b).reshape(shape), step)]
            by_scale: dict = {}
            for (p, _, _, shape), d in zip(items, outs):
                k = scale_factor(group["scale"], shape[-2], shape[-1])
                ps, ds = by_scale.setdefault(k, ([], []))
                ps.append(p)
                ds.append(d)
            for k, (ps, ds) in by_scale.items():
                self._apply_updates(ps, ds, lr, wd, k, ok)

    def _adamw_step(self, group, params, ok=None):
        lr, (b1, b2) = group["adamw_lr"], group["adamw_betas"]
        eps, wd = group["adamw_eps"], group["adamw_weight_decay"]
        fused: dict = {}  # unmasked plain tensors by step count: fused torch._foreach calls
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=self._state_dtype(p))
                state["step"] = 0
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            g = p.grad if p.grad.dtype == m.dtype else p.grad.to(m.dtype)
            f = None if ok is None else ok.get(p)
            if f is None and all(type(x) is torch.Tensor for x in (m, v, g)):
                fused.setdefault(t, []).append((p, m, v, g))
                continue
            if f is None:
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            else:  # the same arithmetic out of place; a skipped parameter keeps its moments
                m.copy_(torch.where(f, m.lerp(g, 1 - b1), m))
                v.copy_(torch.where(f, v.mul(b2).addcmul_(g, g, value=1 - b2), v))
            denom = (v / (1 - b2**t)).sqrt_().add_(eps)
            self._apply_update(p, m / (1 - b1**t) / denom, lr, wd, 1, ok)
        for t, items in fused.items():  # the same arithmetic, list by list
            ps, ms, vs, gs = (list(x) for x in zip(*items))
            torch._foreach_lerp_(ms, gs, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
            denom = torch._foreach_div(vs, 1 - b2**t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            upd = torch._foreach_div(ms, 1 - b1**t)
            torch._foreach_div_(upd, denom)
            self._apply_updates(ps, upd, lr, wd, 1)

    def load_state_dict(self, state_dict):
        """As ``torch.optim.Optimizer.load_state_dict``, keeping float32 state of
        16-bit parameters in float32 (the base class would cast it to the
        parameter's dtype).

        A state dict of another optimizer (e.g. ``torch.optim.Adam`` or ``SGD``)
        is refused with a ``ValueError`` before anything changes: its groups
        lack this optimizer's hyperparameters; so is a group value the
        constructor would refuse (``momentum=2.0``, ``scale="bogus"``). State
        dicts written by earlier versions of these optimizers load; a group entry
        added since takes this optimizer's current value.
        """
        self._check_state_dict(state_dict)
        groups = [{**{k: v for k, v in ours.items() if k != "params"}, **saved}
                  for saved, ours in zip(state_dict["param_groups"], self.param_groups)]
        for group in groups:  # the saved hyperparameters, as the constructor checks them
            self._check_group(group, f"{type(self).__name__}.load_state_dict")
        state_dict = {**state_dict, "param_groups": groups}
        super().load_state_dict(state_dict)
        # saved keys as the base class maps them: through the groups' "params" lists
        # (positions from state_dict(), parameter names from torch.distributed.checkpoint)
        by_key = {k: p for saved, ours in zip(groups, self.param_groups)
                  for k, p in zip(saved["params"], ours["params"])}
        for idx, saved in state_dict["state"].items():
            p = by_key.get(idx)
            if p is None:
                continue
            for key in _STATE_KEYS_FP32:
                if key in saved:
                    self.state[p][key] = saved[key].detach().clone().to(device=p.device)

    def _check_state_dict(self, state_dict):
        where = f"{type(self).__name__}.load_state_dict"
        if not (isinstance(state_dict, dict) and "state" in state_dict
                and "param_groups" in state_dict):
            raise ValueError(f"{where}: expected a dict with 'state' and 'param_groups' (from "
                             f"optimizer.state_dict()); got {type(state_dict).__name__}.")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{where}: the state dict has {len(saved_groups)} parameter "
                             f"groups, this optimizer {len(self.param_groups)}.")
        for i, (saved, ours) in enumerate(zip(saved_groups, self.param_groups)):
            missing = [k for k in _GROUP_KEYS if k not in saved]
            if missing:
                raise ValueError(
                    f"{where}: not a state dict of a spectral_ops optimizer: parameter group "
                    f"{i} lacks {missing} (it has {sorted(k for k in saved if k != 'params')}, "
                    f"e.g. from torch.optim.Adam or SGD). Load it into the optimizer class "
                    f"that wrote it, or start this one fresh.")
            if len(saved["params"]) != len(ours["params"]):
                raise ValueError(f"{where}: parameter group {i} has {len(saved['params'])} "
                                 f"parameters in the state dict, {len(ours['params'])} here.")
            for pid, p in zip(saved["params"], ours["params"]):
                st = state_dict["state"].get(pid)
                if not st:
                    continue
                unknown = sorted(set(st) - set(_STATE_KEYS))
                if unknown:
                    raise ValueError(f"{where}: parameter {pid} has state entries {unknown} that "
                                     f"this optimizer does not write (another optimizer's?).")
                for key in _STATE_KEYS_FP32:
                    if key in st and tuple(st[key].shape) != tuple(p.shape):
                        raise ValueError(
                            f"{where}: {key} of parameter {pid} has shape "
                            f"{tuple(st[key].shape)}, the parameter {tuple(p.shape)}.")

    # -- copies: deepcopy, pickle, torch.save(optimizer) ---------------------------------------
    #: attributes beyond torch's defaults/state/param_groups that a copy keeps
    _PICKLED_ATTRS = ("direction", "nonfinite", "_skips", "_owner_compute")

    def __getstate__(self):
        state = super().__getstate__()
        state.update((k, self.__dict__[k]) for k in self._PICKLED_ATTRS if k in self.__dict__)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "skip")
        self.__dict__.setdefault("_skips", {})


def _check_options(name, kwargs, hints=None):
    """Refuse keyword arguments that ``SpectralOptimizer`` does not take, naming the preset."""
    allowed = set(inspect.signature(SpectralOptimizer.__init__).parameters) - {
        "self", "params", "lr", "direction"}
    for key in kwargs:
        if key not in allowed:
            hint = (hints or {}).get(key, "")
            raise TypeError(f"{name}() got an unexpected keyword argument {key!r}{hint}.")


_POWER_HINTS = {"steps": " (power's step counts follow from p and the dtype)",
                "tol": " (power's accuracy targets follow from p and the dtype)",
                "tau": " (tau is MuCon's)"}


class Muon(SpectralOptimizer):
    """Muon: the polar factor of the momentum (:func:`spectral_ops.polar`).

    ``Muon(params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
    method="polar_express", steps=None, scale="jordan", compute_dtype=None,
    floor=1e-2, tol=0.3, **options)``, ``options`` those of
    :class:`SpectralOptimizer` (``adamw_*``, ``nonfinite``, ...).

    ``method``, ``steps``, ``floor``, ``tol`` and ``compute_dtype`` pass through
    to :func:`spectral_ops.polar`. The defaults are the optimizer's, not
    ``polar``'s (``DEFAULT_POLAR_METHOD``, ``DEFAULT_POLAR_FLOOR`` and
    ``DEFAULT_POLAR_TOL`` of :mod:`spectral_ops.adapters.direction`): Polar
    Express with the fewest matrix products that map every singular value of
    the momentum at or above ``floor * s_max`` to within ``tol`` of 1, which
    trained as well as the exact polar factor on the character model of
    docs/training.md ("Optimizer defaults") at about half the products of
    ``polar``'s own defaults. ``floor=1e-3, tol=1e-4`` (or ``method="svd"``)
    gives the polar factor to float32 accuracy.

    With ``method="jordan", steps=5, scale="jordan", compute_dtype=torch.bfloat16``
    it reproduces ``torch.optim.Muon``: after 10 steps the parameters differ by
    less than twice what ``torch.optim.Muon`` itself changes under one bfloat16
    rounding of its gradients (tested).
    """

    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = DEFAULT_POLAR_METHOD, steps: int | None = None,
                 scale: str = DEFAULT_SCALE, compute_dtype=None,
                 floor: float = DEFAULT_POLAR_FLOOR, tol: float = DEFAULT_POLAR_TOL, **options):
        name = type(self).__name__
        _check_options(name, options, {"tau": " (tau is MuCon's)",
                                       "p": " (p is MuonP's)", "normalize": " (Muon's direction "
                                       "is scale-invariant already)"})
        super().__init__(params, lr, direction=Direction("polar", method, steps,
                                                         compute_dtype=compute_dtype,
                                                         floor=floor, tol=tol, owner=name),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **options)


class MuCon(SpectralOptimizer):
    r"""MuCon: the momentum with its singular values clipped (:func:`spectral_ops.clip`).

    ``normalize=True`` (default): the radius is relative, ``tau`` times the
    momentum's RMS singular value :math:`\|M\|_F/\sqrt{\min(m, n)}` per matrix
    (default ``tau=0.5``), and the direction is ``clip(M, radius) / radius``: its
    singular values are :math:`\min(s/\text{radius}, 1)`, so the step's spectral
    norm is at most ``lr * kappa`` (``kappa`` the ``scale`` factor,
    ``sqrt(max(1, fan_out / fan_in))`` by default), as Muon's, whatever the
    gradient's scale; ``tau -> 0`` approaches Muon. ``normalize=False``:
    MuCon's literal ``clip(M, tau)`` with an absolute ``tau`` (default 1.0);
    the step's spectral norm is then at most ``lr * tau * kappa``.

    ``method``, ``steps``, ``floor``, ``tol`` and ``compute_dtype`` pass through
    to :func:`spectral_ops.clip`, with its defaults (``floor=None``: 1e-3;
    ``tol=None``: by compute dtype, 1e-4 in float32).
    """

    def __init__(self, params: Iterable, lr: float = 0.02, tau: float | None = None,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", steps: int | None = None, scale: str = DEFAULT_SCALE,
                 compute_dtype=None, normalize: bool = True, floor: float | None = None,
                 tol: float | None = None, **options):
        name = type(self).__name__
        _check_options(name, options, {"p": " (p is MuonP's)"})
        super().__init__(params, lr, direction=Direction("clip", method, steps, tau=tau,
                                                         compute_dtype=compute_dtype,
                                                         normalize=normalize, floor=floor,
                                                         tol=tol, owner=name),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **options)


class MuonP(SpectralOptimizer):
    """Muon^p: the fractional power ``U S^p V^T`` of the momentum
    (:func:`spectral_ops.power`), ``p`` in [-1, 1]; ``p = 0`` is Muon.

    ``normalize=True`` (default): the direction is divided by :math:`s_{max}^p`
    (estimated per matrix by power iteration), so its top singular value is 1
    as in Muon and, for ``p >= 0``, its spectral norm is 1 whatever the
    gradient's scale. ``normalize=False``: the literal ``U S^p V^T``.
    ``method``, ``floor`` and ``compute_dtype`` pass through to
    :func:`spectral_ops.power`, with its defaults (no ``tol``: power's accuracy
    targets follow from ``p`` and the dtype). At ``p = 0`` with
    ``method="auto"`` the direction is :class:`Muon`'s default one.
    """

    def __init__(self, params: Iterable, lr: float = 0.02, p: float | Fraction = 0.5,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", scale: str = DEFAULT_SCALE, compute_dtype=None,
                 normalize: bool = True, floor: float | None = None, **options):
        name = type(self).__name__
        _check_options(name, options, _POWER_HINTS)
        super().__init__(params, lr, direction=Direction("power", method, p=p,
                                                         compute_dtype=compute_dtype,
                                                         normalize=normalize, floor=floor,
                                                         owner=name),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **options)


class DynMuon(SpectralOptimizer):
    """DynMuon: Muon^p with the exponent ``p_schedule(step)`` (step counted from 0
    per parameter), e.g. :func:`spectral_ops.schedules.dynmuon_schedule`;
    ``normalize``, ``method``, ``floor`` and ``compute_dtype`` as for
    :class:`MuonP`."""

    def __init__(self, params: Iterable, lr: float = 0.02, p_schedule: Callable | None = None,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 method: str = "auto", scale: str = DEFAULT_SCALE, compute_dtype=None,
                 normalize: bool = True, floor: float | None = None, **options):
        name = type(self).__name__
        if p_schedule is None:
            raise ValueError(f"{name} needs p_schedule, e.g. "
                             "spectral_ops.schedules.dynmuon_schedule(total_steps).")
        _check_options(name, options, _POWER_HINTS)
        super().__init__(params, lr, direction=Direction("power", method, p_schedule=p_schedule,
                                                         compute_dtype=compute_dtype,
                                                         normalize=normalize, floor=floor,
                                                         owner=name),
                         momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                         scale=scale, **options)
