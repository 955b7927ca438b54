r"""Framework-free pieces shared by the torch and optax adapters.

The spectral-update rule of every optimizer here is

1. momentum on the gradient (each ecosystem's own convention),
2. a direction from the core: ``polar``, ``clip`` (``tau``) or ``power`` (``p``),
   by default normalised so that it does not depend on the momentum's scale
   (``normalize``, below),
3. a shape-dependent scale of the learning rate (``SCALES``),
4. decoupled weight decay.

Scale-invariant directions (``normalize=True``, the default). For
:math:`M = U\,\mathrm{diag}(s)\,V^T` (``m x n``, :math:`k = \min(m, n)`):

* polar: :math:`UV^T` (unchanged; its spectral norm is 1 whatever :math:`\|M\|`).
* clip: :math:`\operatorname{clip}(M, \tau)/\tau` with the radius relative to the
  momentum's RMS singular value, :math:`\tau = t\,\|M\|_F/\sqrt{k}` (``t`` is the
  user's ``tau``): singular values :math:`\min(s/\tau, 1)`, spectral norm at most 1
  (exactly 1 for ``t <= 1``); ``t -> 0`` gives Muon.
* power: :math:`U s^p V^T / s_{max}^p`: the top singular direction gets 1, as in
  Muon; for ``p >= 0`` every other one :math:`(s/s_{max})^p \le 1`, so the
  spectral norm is 1. ``p = 0`` is Muon's direction exactly (no division),
  ``p = 1`` is :math:`M/\|M\|_2`. For ``p < 0`` (DynMuon's end, with the core's
  ridge) the small directions get :math:`(s/s_{max})^p > 1`, bounded by the ridge.
  :math:`s_{max}` is estimated by power iteration on :math:`M` (``SMAX_ITERATIONS``
  steps from a fixed start vector, at least the largest row and column norm): two
  matrix-vector products a step, against the map's dozens of matrix-matrix products.

``normalize=False`` gives the papers' literal forms: ``clip(M, tau)`` with an
absolute ``tau`` and the raw ``power(M, p)``.

Fan-in and fan-out: torch stores a linear weight as ``(out, in)``, flax as
``(in, out)``. A weight of more than two dimensions is reshaped to a matrix by
the rule of its adapter (documented there) before the direction is computed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import InitVar, dataclass
from fractions import Fraction
from typing import Callable

import array_api_compat

import spectral_ops
from spectral_ops import _backbone as _bb
from spectral_ops import kernels as _kernels

#: Learning-rate scale rules, by name. ``fan_out x fan_in`` is the matrix shape.
SCALES = ("spectral", "rms", "jordan", "none")

#: What an optimizer does with a gradient that holds NaN or inf (``nonfinite``):
#: ``"skip"`` that parameter's step (update and state), ``"raise"`` before any
#: state changes, ``"ignore"`` (no check: the non-finite values propagate).
NONFINITE = ("skip", "raise", "ignore")

#: Default ``tau`` of MuCon: relative (``normalize=True``: a multiple of the
#: momentum's RMS singular value) and absolute (``normalize=False``).
DEFAULT_TAU_RELATIVE = 0.5
DEFAULT_TAU_ABSOLUTE = 1.0

#: Power-iteration steps of the s_max estimate of normalised Muon^p / DynMuon.
SMAX_ITERATIONS = 8

#: The optimizers' polar direction (Muon; Muon^p and DynMuon at ``p = 0`` with
#: ``method="auto"``) by default: Polar Express with the accuracy that trains as
#: well as the exact polar factor. Singular values above ``DEFAULT_POLAR_FLOOR``
#: times ``s_max`` are mapped to within ``DEFAULT_POLAR_TOL`` of 1 (exact
#: arithmetic), smaller ones into ``[0, 1 + tol]``. Chosen on the character-model
#: task of docs/training.md ("Optimizer defaults"): over three seeds it trained as
#: well as the exact polar factor (the SVD) and as ``floor=1e-3, tol=0.1``, and
#: ``floor=3e-2`` trained worse. The core functions keep their own, tighter
#: defaults (``polar``'s ``floor=1e-3``, ``tol=1e-4`` in float32).
DEFAULT_POLAR_METHOD = "polar_express"
DEFAULT_POLAR_FLOOR = 1e-2
DEFAULT_POLAR_TOL = 0.3

#: The optimizers' learning-rate scale rule by default: Keller Jordan's
#: ``sqrt(max(1, fan_out / fan_in))``, the rule of ``torch.optim.Muon`` and
#: ``optax.contrib.muon``, so that their learning rates carry over unchanged. On the
#: character-model task of docs/training.md ("Optimizer defaults", five seeds) it
#: trained as well as the spectral condition's ``sqrt(fan_out / fan_in)`` (which
#: halves the step of its 128 x 512 MLP-out matrices): mean loss +0.57% against
#: +0.80% over ``torch.optim.Muon``, a difference within the seeds' spread.
DEFAULT_SCALE = "jordan"

_KINDS = ("polar", "clip", "power")
_DEFAULT_OWNER = {"polar": "Muon", "clip": "MuCon", "power": "Muon^p"}


def scale_factor(rule: str, fan_out: int, fan_in: int) -> float:
    r"""Multiplier of the learning rate for a ``fan_out x fan_in`` weight.

    ``"spectral"``: :math:`\sqrt{\text{fan\_out}/\text{fan\_in}}`, the spectral
    condition of muP (Yang, Simon and Bernstein, arXiv 2310.17813): a polar
    update has spectral norm 1, so the step has spectral norm
    ``lr * sqrt(fan_out / fan_in)``. ``"rms"``: Moonlight's
    :math:`0.2\sqrt{\max(m, n)}`, matching AdamW's update RMS (arXiv 2502.16982).
    ``"jordan"``: Keller Jordan's :math:`\sqrt{\max(1, \text{fan\_out}/\text{fan\_in})}`
    (``torch.optim.Muon``'s and ``optax.contrib.muon``'s default). ``"none"``: 1.
    """
    if rule == "spectral":
        return math.sqrt(fan_out / fan_in)
    if rule == "rms":
        return 0.2 * math.sqrt(max(fan_out, fan_in))
    if rule == "jordan":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if rule == "none":
        return 1.0
    raise ValueError(f"scale must be one of {SCALES}; got {rule!r}.")


# -- argument checks shared by the adapters ---------------------------------------------------

def check_real(owner: str, name: str, value, *, lo=None, hi=None, lo_open=False,
               hi_open=False, what: str = "") -> float:
    """``value`` as a float, or a ``TypeError``/``ValueError`` naming ``owner``.

    Accepts Python and NumPy real scalars (not bools); must be finite and in the
    interval given by ``lo``/``hi`` (open ends with ``lo_open``/``hi_open``). A
    traced JAX value comes back unchecked: ``optax.inject_hyperparams`` rebuilds
    the transformation with traced hyperparameters inside ``jit``, after building
    it once with the same values concrete, where they were checked.
    """
    if _bb.is_traced(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        item = getattr(value, "item", None)  # a one-element array (e.g. a 0-d tensor)
        if item is None or getattr(value, "ndim", None) != 0:
            raise TypeError(f"{owner}: {name} must be a real number; got {value!r}.")
        value = item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{owner}: {name} must be a real number; got {value!r}.")
    v = float(value)
    bad = not math.isfinite(v)
    if lo is not None:
        bad |= v <= lo if lo_open else v < lo
    if hi is not None:
        bad |= v >= hi if hi_open else v > hi
    if bad:
        lb = "" if lo is None else ("(" if lo_open else "[") + f"{lo}, "
        ub = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
        rng = f"in {lb or '(-inf, '}{ub or 'inf)'}"
        raise ValueError(f"{owner}: {name} must be {rng} and finite{what}; got {value!r}.")
    return v


def check_choice(owner: str, name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {tuple(choices)}; got {value!r}.")


def check_bool(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False; got {value!r}.")


def check_int(owner: str, name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{owner}: {name} must be an integer >= {lo}; got {value!r}.")
    return int(value)


def _methods(kind):
    return {"polar": spectral_ops.POLAR_METHODS, "clip": spectral_ops.CLIP_METHODS,
            "power": spectral_ops.POWER_METHODS}[kind]


def _check_exponent(owner: str, what: str, p):
    try:
        return spectral_ops.rational_exponent(p)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{owner}: {what}{e}") from None


# -- the direction ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Direction:
    r"""Which spectral map turns the momentum into an update direction.

    Parameters
    ----------
    kind : {"polar", "clip", "power"}
        The map: :func:`spectral_ops.polar` (Muon), :func:`spectral_ops.clip`
        (MuCon) or :func:`spectral_ops.power` (Muon^p, DynMuon).
    method : str, optional
        Passed to the core function (one of its methods). Default (``None``):
        ``DEFAULT_POLAR_METHOD`` (``"polar_express"``) for ``"polar"``,
        ``"auto"`` for ``"clip"`` and ``"power"``.
    steps : int, optional
        Iterations, passed to ``polar`` or ``clip`` (refused for ``"power"``).
        Given, it replaces the count that ``tol`` would choose.
    tau : float, optional
        clip's radius: relative to the momentum's RMS singular value
        (``normalize=True``, default ``DEFAULT_TAU_RELATIVE``) or absolute
        (default ``DEFAULT_TAU_ABSOLUTE``). ``"clip"`` only.
    p, p_schedule : number or callable, optional
        ``"power"`` only, exactly one: a fixed exponent in [-1, 1] or a
        callable step -> exponent.
    compute_dtype : dtype or str, optional
        Passed to the core function.
    normalize : bool
        ``True`` (default): clip's ``tau`` is relative to the momentum's RMS
        singular value and clip's output is divided by its radius, power's by
        :math:`s_{max}^p` (see the module docstring); ``False``: the literal maps.
    floor : float, optional
        Relative singular-value floor in (0, 1), passed to the core function:
        singular values of the momentum at or above ``floor * s_max`` get the
        accuracy ``tol``; smaller ones come out in ``[0, 1 + tol]`` (polar) or
        in ``[0, tau]`` (clip). The matrix-product iterations need more steps
        for a smaller floor. Default (``None``): ``DEFAULT_POLAR_FLOOR`` for
        ``"polar"``; the core function's default for ``"clip"`` (1e-3) and
        ``"power"`` (by dtype).
    tol : float, optional
        Worst-case error in exact arithmetic, in (0, 1), passed to the core
        function: for ``"polar"`` the largest :math:`|f(s) - 1|` above the
        floor (Polar Express and Gram Newton-Schulz take the fewest steps that
        guarantee it; ``"auto"`` reads it; the SVD, QDWH and ``"jordan"``
        ignore it), for ``"clip"`` the relative error of each clipped singular
        value. Default (``None``): ``DEFAULT_POLAR_TOL`` for ``"polar"``; the
        core function's default, by compute dtype, for ``"clip"``. Refused
        for ``"power"`` (its targets follow from ``p`` and the dtype).
    owner : str, optional
        Names the optimizer in error messages (not stored).

    The defaults of ``"polar"`` are an optimizer's, not the core's: ``polar``
    called directly defaults to ``method="auto"``, ``floor=1e-3`` and a
    ``tol`` near round-off (1e-4 in float32), which training does not need
    (docs/training.md, "Optimizer defaults"). ``Direction("power", p=0)`` with
    ``method="auto"`` is the default polar direction, bit for bit.
    """

    kind: str = "polar"
    method: str | None = None
    steps: int | None = None
    tau: float | None = None
    p: float | Fraction | None = None
    p_schedule: Callable[[int], float] | None = None
    compute_dtype: object = None
    normalize: bool = True
    owner: InitVar[str | None] = None
    floor: float | None = None
    tol: float | None = None

    def __post_init__(self, owner):
        if self.kind not in _KINDS:
            raise ValueError(f"{owner or 'Direction'}: direction must be 'polar', 'clip' or "
                             f"'power'; got {self.kind!r}.")
        owner = owner or _DEFAULT_OWNER[self.kind]
        check_bool(owner, "normalize", self.normalize)
        methods = _methods(self.kind)
        if self.method is None:
            object.__setattr__(self, "method",
                               DEFAULT_POLAR_METHOD if self.kind == "polar" else "auto")
        check_choice(owner, "method", self.method, methods)
        if self.steps is not None:
            if self.kind == "power":
                raise ValueError(f"{owner}: steps does not apply to power (its step counts "
                                 f"follow from p and the dtype); leave it as None.")
            check_int(owner, "steps", self.steps, 1)
        if self.kind == "power" and self.tol is not None:
            raise ValueError(f"{owner}: tol does not apply to power (its accuracy targets "
                             f"follow from p and the dtype); leave it as None.")
        if self.kind == "polar":
            if self.floor is None:
                object.__setattr__(self, "floor", DEFAULT_POLAR_FLOOR)
            if self.tol is None:
                object.__setattr__(self, "tol", DEFAULT_POLAR_TOL)
        for name in ("floor", "tol"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_real(owner, name, value, lo=0, hi=1,
                                                          lo_open=True, hi_open=True))
        if self.kind != "clip" and self.tau is not None:
            raise ValueError(f"{owner}: tau applies to clip (MuCon) only; got tau={self.tau!r}.")
        if self.kind != "power" and (self.p is not None or self.p_schedule is not None):
            raise ValueError(f"{owner}: p and p_schedule apply to power (Muon^p, DynMuon) only.")
        if self.kind == "clip":
            tau = self.tau
            if tau is None:
                tau = DEFAULT_TAU_RELATIVE if self.normalize else DEFAULT_TAU_ABSOLUTE
            meaning = ("a multiple of the momentum's RMS singular value" if self.normalize
                       else "the spectral-norm radius")
            if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or \
                    not (math.isfinite(tau) and tau > 0):
                raise ValueError(f"{owner} needs tau > 0 and finite ({meaning}); got {tau!r}.")
            object.__setattr__(self, "tau", float(tau))
        if self.kind == "power":
            if (self.p is None) == (self.p_schedule is None):
                raise ValueError(f"{owner}: power needs exactly one of p (a number) or "
                                 f"p_schedule (a callable).")
            if self.p is not None:
                _check_exponent(owner, "", self.p)
            else:
                if not callable(self.p_schedule):
                    raise ValueError(f"{owner}: p_schedule must be callable (step -> p); got "
                                     f"{self.p_schedule!r}.")
                values = getattr(self.p_schedule, "values", None)
                for v in (values if values is not None else (self.p_schedule(0),)):
                    _check_exponent(owner, "a value of p_schedule: ", v)

    def exponent(self, step: int):
        """The exponent at ``step`` (0-based) for ``power``."""
        return self.p if self.p_schedule is None else self.p_schedule(step)

    def accuracy(self) -> dict:
        """The ``floor`` and ``tol`` keyword arguments of the core call (those set)."""
        return {k: v for k, v in (("floor", self.floor), ("tol", self.tol)) if v is not None}

    def __call__(self, x, step: int = 0):
        """Apply the map to a matrix or a stack of matrices ``x`` (one core call)."""
        if self.kind == "polar":
            return _polar(x, self.method, self.steps, self.compute_dtype, self.accuracy())
        if self.kind == "clip":
            if not self.normalize:
                return spectral_ops.clip(x, self.tau, method=self.method, steps=self.steps,
                                         compute_dtype=self.compute_dtype, **self.accuracy())
            return _relative_clip(x, self.tau, self.method, self.steps, self.compute_dtype,
                                  self.accuracy())
        return self.power_direction(x, self.exponent(step))

    def power_direction(self, x, p, smax=None):
        """The ``power`` direction of ``x`` at exponent ``p`` (normalised unless
        ``normalize=False``). ``smax``: :func:`smax_log` of ``x`` when already
        computed (it does not depend on ``p``: e.g. shared by the branches of a
        ``jax.lax.switch`` over a schedule's exponents)."""
        q = spectral_ops.rational_exponent(p)  # as the core reads it
        if q == 0 and self.normalize and self.method == "auto":
            # p = 0: the default polar direction (Muon's), bit for bit, no division
            return _polar(x, DEFAULT_POLAR_METHOD, None, self.compute_dtype, {
                "floor": DEFAULT_POLAR_FLOOR if self.floor is None else self.floor,
                "tol": DEFAULT_POLAR_TOL})
        y = spectral_ops.power(x, q, method=self.method, compute_dtype=self.compute_dtype,
                               **self.accuracy())
        if not self.normalize or q == 0:
            return y  # p = 0: the polar factor, no division
        xp = array_api_compat.array_namespace(y)
        log_s, pos = smax_log(x) if smax is None else smax
        factor = xp.where(pos, xp.exp(-float(q) * log_s), xp.zeros_like(log_s))
        return _times(y, factor)


# -- the polar direction ----------------------------------------------------------------------

#: polar's matrix-product iterations: :func:`_polar` runs their kernel directly
_ITERATIONS = ("polar_express", "jordan", "gram")


def _polar(x, method, steps, compute_dtype, accuracy):
    """``spectral_ops.polar(x, ...)``, the same bits, with less work per call for the
    matrix-product iterations.

    ``polar`` replaces each matrix holding NaN or inf by zeros before the kernel
    and its result by NaN after it: two ``where`` passes and an ``isfinite``
    pass over the whole stack, which cost about as much as one step of the
    iteration on the optimizers' small CPU matrices. Those passes protect the
    SVD and QDWH routes (LAPACK can loop forever on an infinity); the
    iterations need none of them: every map is per matrix (batched products,
    per-matrix norms), and a NaN or inf entry reaches every entry of its own
    matrix's result through the Frobenius scaling and the first ``A @ A``, so
    that matrix comes out all NaN, as from ``polar``, and the others are
    untouched (tested). Every other route (``auto`` resolving to the SVD,
    ``"svd"``, ``"qdwh"``, empty matrices) is ``polar`` itself.
    """
    plan = spectral_ops.polar_plan(x, method=method, steps=steps, compute_dtype=compute_dtype,
                                   **accuracy)
    if plan.method not in _ITERATIONS or min(x.shape[-2:]) == 0:
        return spectral_ops.polar(x, method=method, steps=steps, compute_dtype=compute_dtype,
                                  **accuracy)
    xp = array_api_compat.array_namespace(x)
    dtype = _bb.resolve_dtype(xp, compute_dtype, x.dtype)
    y = x if dtype == x.dtype else xp.astype(x, dtype)
    tall = x.shape[-2] > x.shape[-1]  # the kernels take the wide orientation
    if tall:
        y = xp.linalg.matrix_transpose(y)
    y = _kernels.polar_factor(xp, y, plan)
    if tall:
        y = xp.linalg.matrix_transpose(y)
    return y if y.dtype == x.dtype else xp.astype(y, x.dtype)


# -- normalisers (array API: NumPy, torch, JAX alike) -----------------------------------------

def _wide(xp, x):
    return x if x.dtype in (xp.float32, xp.float64) else xp.astype(x, xp.float32)


def _prescaled(xp, x):
    """``(x / amax, amax)`` per matrix, in float32 or wider: norms of the scaled
    matrix neither overflow nor underflow (inputs from 1e-30 to 1e30 in float32)."""
    xw = _wide(xp, x)
    amax = _bb.max_abs(xp, xw)[..., 0, 0]
    amax = xp.where(amax > 0, amax, xp.ones_like(amax))  # a zero matrix stays zero
    return xw / amax[..., None, None], amax


def _times(y, factor):
    """``y * factor`` per matrix, rounded once to ``y``'s dtype."""
    xp = array_api_compat.array_namespace(y)
    yw = _wide(xp, y)
    out = yw * factor[..., None, None]
    return out if out.dtype == y.dtype else xp.astype(out, y.dtype)


def _relative_clip(x, t, method, steps, compute_dtype, accuracy=None):
    r""":math:`\operatorname{clip}(x, \tau)/\tau` with :math:`\tau = t\|x\|_F/\sqrt{\min(m, n)}`
    per matrix, as one batched core call (``tau`` one radius per matrix); ``accuracy``:
    ``floor`` and ``tol`` for the core."""
    xp = array_api_compat.array_namespace(x)
    k = min(x.shape[-2:])
    accuracy = accuracy or {}
    if k == 0:
        return spectral_ops.clip(x, 1.0, method=method, steps=steps, compute_dtype=compute_dtype,
                                 **accuracy)
    xs, amax = _prescaled(xp, x)
    fro = amax * xp.sqrt(xp.sum(xs * xs, axis=(-2, -1)))
    tau = (t / math.sqrt(k)) * fro
    # zero momentum (tau = 0) or a radius out of range: any radius gives the same
    # direction for a zero matrix, and non-finite input propagates as NaN
    tau = xp.where((tau > 0) & xp.isfinite(tau), tau, xp.ones_like(tau))
    # s_max / tau <= ||x||_F / tau = sqrt(k) / t for every matrix: the core designs
    # for it without reading x (no synchronisation, and the same plan whatever
    # the batch holds, so results do not depend on how matrices are batched);
    # the margin covers the rounding of ||x||_F and tau
    y = spectral_ops.clip(x, tau, method=method, steps=steps, compute_dtype=compute_dtype,
                          ratio=math.sqrt(k) / t * (1 + 1e-6), **accuracy)
    return _times(y, 1.0 / tau)


def _smax_power(x, e):
    r""":math:`s_{max}(x)^e` per matrix (0 where :math:`s_{max} = 0`)."""
    xp = array_api_compat.array_namespace(x)
    log_s, pos = smax_log(x)
    return xp.where(pos, xp.exp(e * log_s), xp.zeros_like(log_s))


def smax_log(x):
    r"""``(log s_max, s_max > 0)`` per matrix, :math:`s_{max}` estimated by power
    iteration (a lower bound; at least the largest row and column norm), in
    float32 or wider; ``log s_max`` is 0 where :math:`s_{max} = 0`. Logs, because
    :math:`s_{max}^p` itself may leave float32's range."""
    xp = array_api_compat.array_namespace(x)
    xs, amax = _prescaled(xp, x)
    n = x.shape[-1]
    if n == 0 or x.shape[-2] == 0:
        zero = xp.zeros_like(amax)
        return zero, zero > 0
    # a fixed quasi-random start (golden-angle phases): deterministic, and not
    # orthogonal to structured singular vectors (constant, alternating, zero-sum)
    j = xp.arange(n, dtype=xs.dtype, device=array_api_compat.device(xs))
    v = xp.sin(2.399963229728653 * j + 1.0)[:, None]
    xt = xp.matrix_transpose(xs)
    for _ in range(SMAX_ITERATIONS):
        v = xt @ (xs @ v)
        nv = xp.sqrt(xp.sum(v * v, axis=(-2, -1), keepdims=True))
        v = v / xp.where(nv > 0, nv, xp.ones_like(nv))
    xv = xs @ v
    est = xp.sqrt(xp.sum(xv * xv, axis=(-2, -1)))  # a Rayleigh quotient: <= s_max
    sq = xs * xs
    rows = xp.sqrt(xp.max(xp.sum(sq, axis=-1), axis=-1))  # also lower bounds of s_max
    cols = xp.sqrt(xp.max(xp.sum(sq, axis=-2), axis=-1))
    est = xp.maximum(est, xp.maximum(rows, cols))
    pos = est > 0
    safe = xp.where(pos, est, xp.ones_like(est))
    return xp.where(pos, xp.log(amax) + xp.log(safe), xp.zeros_like(est)), pos
