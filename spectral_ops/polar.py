r"""The polar factor :math:`\operatorname{polar}(B) = UV^T` of :math:`B = U\,\mathrm{diag}(s)\,V^T`.

Methods (cost for an ``m x n`` input oriented so that ``m <= n``; one "product"
is one matrix multiplication; flops count ``2 m n k`` per ``(m x k)(k x n)``):

``"polar_express"``
    Per-step minimax-optimal odd quintics (Polar Express). 3 products a step:
    ``A = XX^T`` (m x m), ``A @ A``, ``(bA + cA^2) X``. The step count comes from
    ``floor`` and ``tol`` (worst-case error guaranteed in exact arithmetic).
``"jordan"``
    Muon's classic quintic (3.4445, -4.7750, 2.0315), 5 steps by default; the
    same arithmetic as ``torch.optim.Muon`` and ``optax.contrib.muon``. It does
    not converge: singular values end in roughly [0.68, 1.13].
``"gram"``
    Gram Newton-Schulz: the Polar Express polynomials ``p(x) = x h(x^2)`` run on
    ``R = XX^T`` (m x m) and an accumulated ``Q`` with ``X_t = Q X``; about
    4 m x m products a step and six ``m x n`` ones in all, fewer flops than
    ``"polar_express"`` when ``n > 1.5 m``. Restarted after step 2 (``X <- QX``,
    ``R <- XX^T``, ``Q <- I``) so round-off in ``R`` cannot grow; the last step
    runs on ``X = QX`` itself, which gives Polar Express's band.
``"qdwh"``
    QR-based dynamically weighted Halley iteration (Nakatsukasa-Bai-Gygi),
    switching to a linear-solve (Cholesky-form) step once the weight ``c`` is
    small. Accurate to the working precision for any condition number, at
    most 6 iterations in float64; uses ``linalg.qr`` and ``linalg.solve``.
    Being accurate down to ``eps * s_max``, it cannot tell round-off-level
    "zero" singular values of a rank-deficient input from tiny true ones: it
    maps them into [0, 1], often near 1. Use ``"svd"`` for a rank-revealing
    cut-off.
``"svd"``
    Exact reference through the thin SVD; singular values at or below
    ``max(m, n) * eps * s_max`` count as zero. 16-bit inputs are decomposed in
    float32 (as QDWH and Gram's recurrence run): no library has a 16-bit SVD.
``"auto"``
    The fastest method that meets the accuracy asked for: see :func:`polar_plan`.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

from . import _backbone as bb
from . import _fastpaths as fp
from .coefficients import JORDAN_COEFFICIENTS, polar_express_schedule

__all__ = ["polar", "polar_plan", "PolarPlan", "POLAR_METHODS", "default_tol"]

POLAR_METHODS = ("auto", "polar_express", "jordan", "gram", "qdwh", "svd")

#: Default worst-case accuracy target per compute dtype, ``|sigma_out - 1|`` for
#: singular values above the floor. Tighter than round-off would be wasted steps.
_DEFAULT_TOL = {"float64": 1e-12, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}

@dataclass(frozen=True)
class PolarPlan:
    """What :func:`polar` will do for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved).
    steps : int
        Iterations (0 for ``"svd"``).
    matmuls : int
        Matrix products per matrix (QR, solves and SVDs not included).
    flops : float
        Flops of those products per matrix (``2 m n k`` each).
    error_bound : float or None
        Guaranteed worst-case ``|sigma_out - 1|`` for singular values at or
        above ``floor * s_max``, in exact arithmetic (None where no such bound
        is known, e.g. ``"jordan"``, which does not converge).
    lower : float or None
        The design lower end of the normalised spectrum (Polar Express, Gram).
    """

    method: str
    steps: int
    matmuls: int
    flops: float
    error_bound: float | None
    lower: float | None


def default_tol(dtype_name: str) -> float:
    return _DEFAULT_TOL[dtype_name]


def _dtype_name(xp, dtype) -> str:
    return bb._dtype_name(xp, dtype)


def _design_lower(floor: float, m: int, dtype_eps: float) -> float:
    # After the Gram-based rescaling the largest singular value is at least
    # s_max / (m^(1/8) (1 + eps)) of the scale (see _tight_start), so a singular
    # value floor * s_max lands at or above this:
    return floor / (m ** 0.125 * (1.0 + dtype_eps))


def _qdwh_schedule(lower: float, eps: float):
    """Host-side weights (a, b, c) of QDWH, iterated until the lower bound is ~1."""
    weights, l = [], lower
    while 1.0 - l > eps and len(weights) < 20:
        l2 = l * l
        dd = (4.0 * (1.0 - l2) / (l2 * l2)) ** (1.0 / 3.0)
        sqd = math.sqrt(1.0 + dd)
        a = sqd + 0.5 * math.sqrt(8.0 - 4.0 * dd + 8.0 * (2.0 - l2) / (l2 * sqd))
        b = (a - 1.0) ** 2 / 4.0
        c = a + b - 1.0
        weights.append((a, b, c))
        l = min(1.0, l * (a + b * l2) / (1.0 + c * l2))
    return weights


def _count(method: str, m: int, n: int, steps: int) -> tuple[int, float]:
    """Matrix products and their flops per matrix for an m x n (m <= n) input."""
    mmn, mmm = 2.0 * m * m * n, 2.0 * m * m * m
    if method in ("polar_express", "jordan"):
        return 3 * steps, steps * (2 * mmn + mmm)
    if method == "gram":
        if steps == 1:  # a single step runs as Polar Express
            return _count("polar_express", m, n, 1)
        return _gram_count(steps, restart_after=2, mmn=mmn, mmm=mmm)
    if method == "qdwh":
        # the Gram product of a Cholesky-form step and the solve's right-hand side
        # are the only products counted; QR and solves are listed separately
        return steps, steps * mmn
    return 0, 0.0


def _gram_count(steps, restart_after, mmn, mmm):
    """Products and flops of :func:`_gram_newton_schulz` (``steps >= 2``)."""
    kinds = ["mmn", "mmm"]  # R_0 = X X^T and R_0^2 in the tight start
    gram_steps = steps - 1
    for t in range(gram_steps):
        if t == restart_after:
            kinds += ["mmn", "mmn"]  # X_0 <- Q X_0, R <- X_0 X_0^T
        if t > 0:
            kinds += ["mmm"]  # R^2
        if t > 0 and t != restart_after:
            kinds += ["mmm"]  # H Q
        if t + 1 < gram_steps and t + 1 != restart_after:
            kinds += ["mmm", "mmm"]  # H R H
    kinds += ["mmn", "mmn", "mmm", "mmn"]  # X = Q X_0, then the direct step
    return len(kinds), sum(mmn if k == "mmn" else mmm for k in kinds)


def _cpu_prefers_svd(xp, dtype, shape) -> bool:
    """Whether LAPACK's SVD beats Polar Express on a CPU, from measured crossovers.

    Measured on a 2-core x86-64 CPU (ratios of SVD time to Polar Express time, see
    docs/polar.md, "auto on CPUs"): float64 SVD is within 0.5x-1.4x of the 8-step
    iteration everywhere and exact, so it wins; NumPy's float32 SVD is 1.8x-4x slower
    than the 7-step iteration once the short side reaches 64; torch's and JAX's
    float32 SVD win on single matrices up to 2048 x 2048 (0.5x-0.9x) except wide
    ones from 1024 x 4096 up, and lose on stacks of 16 or more (1.5x-2.2x),
    where the SVD runs matrix by matrix.
    """
    m = min(shape[-2:])
    batch = math.prod(shape[:-2])
    if dtype == xp.float64:
        return True
    if _numpy_backed(xp):
        return m < 64 and batch < 16
    # torch (MKL) and JAX: the SVD wins single matrices, except wide ones from
    # 1024 x 4096 up (Polar Express 1.3x-1.5x faster there, two runs)
    n = max(shape[-2:])
    return batch < 16 and not (m >= 1024 and n >= 4 * m)


#: ``auto`` takes Gram Newton-Schulz where its products cost at most this
#: fraction of Polar Express's flops (aspect ratio about 2.6 and up at 7 steps).
GRAM_FLOP_RATIO = 0.8
#: On accelerators, only from this short side up: below it, kernel launches
#: rather than flops set the time, and Gram Newton-Schulz launches more kernels.
GRAM_MIN_SIDE_ACCELERATOR = 1024


def _gram_pays(xp, dtype, m, n, steps, accelerator) -> bool:
    """Whether Gram Newton-Schulz beats Polar Express for an m x n (m <= n) input.

    Same polynomials, same band error (its last step runs on X); fewer flops
    when n >> m. Measured on a 2-core CPU (float32, NumPy and torch), its time
    relative to Polar Express follows the flop ratio plus 0.03-0.08: 0.93-0.96
    at aspect 2 (flop ratio 0.89), 0.73-0.77 at aspect 3 (0.76), 0.65-0.75 at
    aspect 4 (0.68). 16-bit inputs are excluded: its recurrence runs in float32.
    """
    if bb.is_16bit(xp, dtype) or steps < 2:
        return False
    if accelerator and m < GRAM_MIN_SIDE_ACCELERATOR:
        return False
    gram = _count("gram", m, n, steps)[1]
    return gram <= GRAM_FLOP_RATIO * _count("polar_express", m, n, steps)[1]


def _polar_iteration(xp, dtype, m, n, steps, accelerator) -> str:
    """The matrix-product iteration for a polar factor inside clip and power."""
    return "gram" if _gram_pays(xp, dtype, m, n, steps, accelerator) else "polar_express"


def _run_polar_iteration(xp, x, iteration, coefs, eps):
    """Polar Express or Gram Newton-Schulz on the wide-oriented ``x``."""
    if iteration == "gram":
        return _gram_newton_schulz(xp, x, coefs, eps)
    return _polar_express(xp, x, coefs, eps)


def _numpy_backed(xp) -> bool:
    """NumPy itself or array-api-strict (a wrapper around NumPy)."""
    import array_api_compat as aac

    if aac.is_numpy_namespace(xp):
        return True
    return "array_api_strict" in getattr(xp, "__name__", "")


def polar_plan(B, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
               tol: float | None = None, compute_dtype=None) -> PolarPlan:
    """What :func:`polar` would run on ``B``, without running it.

    Takes the same arguments as :func:`polar` and returns a :class:`PolarPlan`.
    ``method="auto"`` resolves as follows:

    * when ``tol`` is below what the matmul iterations reach in the compute dtype
      (``tol < 10 eps``; in 16-bit dtypes, below the dtype's default ``tol``),
      ``"qdwh"`` on accelerators and ``"svd"`` on CPUs;
    * on CPUs, ``"svd"`` where LAPACK's SVD measured faster than the Polar
      Express iteration: float64; NumPy float32 with short side below 64;
      torch and JAX single matrices (stacks of fewer than 16) except those of
      short side 1024 or more and aspect ratio 4 or more. Otherwise
      ``"polar_express"``;
    * on accelerators, ``"polar_express"``;
    * and ``"gram"`` in place of ``"polar_express"`` where its products cost
      at most ``GRAM_FLOP_RATIO`` (0.8) of the flops (aspect ratio about 2.6
      and up), for 32/64-bit compute dtypes and, on accelerators, short sides
      of at least ``GRAM_MIN_SIDE_ACCELERATOR`` (1024).
    """
    xp = bb._validate_array(B, "B")
    dtype = bb.resolve_dtype(xp, compute_dtype, B.dtype)
    return _plan(xp, B, B.shape, dtype, method, steps, floor, tol)


def _check_method_steps_tol(methods, method, steps, tol):
    """The option checks that polar and clip share."""
    if method not in methods:
        raise ValueError(f"method must be one of {methods}; got {method!r}.")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be a positive integer or None; got {steps!r}.")
    if steps is not None and method == "svd":
        raise ValueError("steps does not apply to method='svd'; leave it as None.")
    if tol is not None and not (_is_real(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) or None; got {tol!r}.")


def _check_options(method, steps, floor, tol):
    _check_method_steps_tol(POLAR_METHODS, method, steps, tol)
    if not (_is_real(floor) and 0 < floor < 1):
        raise ValueError(
            f"floor must be a number in (0, 1), the relative singular value above which "
            f"the accuracy target holds; got {floor!r}."
        )


def _exact_route_below(xp, dtype, name, eps) -> float:
    """``tol`` under which ``auto`` leaves the matrix-product iterations.

    32/64-bit: ``10 eps`` (round-off). 16-bit: the dtype's default ``tol`` (2e-2
    bfloat16, 1e-2 float16), which is what a 16-bit Polar Express reaches;
    ``10 eps`` (7.8e-2 in bfloat16) would send every default call to QDWH.
    """
    return _DEFAULT_TOL[name] if bb.is_16bit(xp, dtype) else 10 * eps


def _is_real(value) -> bool:
    """A real Python or NumPy scalar (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plan(xp, B, shape, dtype, method, steps, floor, tol) -> PolarPlan:
    _check_options(method, steps, floor, tol)
    m, n = sorted(shape[-2:])
    name = _dtype_name(xp, dtype)
    eps = bb.dtype_eps(xp, dtype)
    tol = _DEFAULT_TOL[name] if tol is None else float(tol)
    auto = method == "auto"
    if auto:
        if min(m, n) == 0:
            method = "svd"
        elif tol < _exact_route_below(xp, dtype, name, eps):
            method = "qdwh" if bb.on_accelerator(B) else "svd"
        elif not bb.on_accelerator(B) and _cpu_prefers_svd(xp, dtype, shape):
            method = "svd"
        else:
            method = "polar_express"  # or "gram", decided once the step count is known
    if method in ("polar_express", "gram"):
        lower = _design_lower(floor, max(m, 1), eps)
        if steps is None:
            coefs, bound = polar_express_schedule(lower, tol)
            nsteps = len(coefs)
        else:
            from .coefficients import _schedule, CUSHION, SAFETY
            nsteps = int(steps)
            bound = _schedule(lower, nsteps, CUSHION, SAFETY)[1][-1]
        if auto and _gram_pays(xp, dtype, m, n, nsteps, bb.on_accelerator(B)):
            method = "gram"
        k, f = _count(method, m, n, nsteps)
        return PolarPlan(method, nsteps, k, f, bound, lower)
    if method == "jordan":
        nsteps = 5 if steps is None else int(steps)
        k, f = _count(method, m, n, nsteps)
        return PolarPlan(method, nsteps, k, f, None, None)
    if method == "qdwh":
        weps = bb.dtype_eps(xp, bb.wide_dtype(xp, dtype))  # 16-bit QDWH runs in float32
        nsteps = len(_qdwh_schedule(weps, weps)) if steps is None else int(steps)
        k, f = _count(method, m, n, nsteps)
        return PolarPlan(method, nsteps, k, f, None, weps)
    return PolarPlan("svd", 0, 0, 0.0, None, None)


def polar(B, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
          tol: float | None = None, compute_dtype=None, check_finite: bool = False):
    r"""Polar factor :math:`UV^T` of ``B`` (the Muon update direction).

    For :math:`B = U\,\mathrm{diag}(s)\,V^T` returns :math:`U\,\mathrm{diag}(f(s))\,V^T`
    with :math:`f(s) = 1` for :math:`s > 0` and :math:`f(0) = 0` (partial polar
    factor: zero singular values stay zero; tiny ones end in :math:`[0, 1]`).

    Parameters
    ----------
    B : array, shape (..., m, n)
        Real floating array of any array-API library (NumPy, CuPy, PyTorch, JAX,
        ...). Leading dimensions are a batch. Never modified.
    method : {"auto", "polar_express", "jordan", "gram", "qdwh", "svd"}
        See the method list in the module docstring and :func:`polar_plan`.
    steps : int, optional
        Number of iterations. Default: the fewest that meet ``tol``
        (``"polar_express"``, ``"gram"``, ``"qdwh"``), 5 for ``"jordan"``.
    floor : float
        Relative singular value floor, in (0, 1): every singular value
        :math:`s \ge \text{floor}\cdot s_{max}` is mapped to within ``tol`` of 1.
        Smaller ones are mapped into :math:`[0, 1 + \text{tol}]`.
    tol : float, optional
        Worst-case :math:`|f(s) - 1|` above the floor, in exact arithmetic.
        Default by compute dtype: 1e-12 (float64), 1e-4 (float32), 1e-2
        (float16), 2e-2 (bfloat16); round-off adds to it.
    compute_dtype : dtype or str, optional
        Dtype to iterate in (e.g. ``"bfloat16"`` for speed on GPUs). The result
        is returned in ``B``'s dtype. Default: ``B``'s dtype.
    check_finite : bool
        Raise ``ValueError`` if ``B`` holds NaN or inf (one host sync).

    Returns
    -------
    array, shape (..., m, n)
        Same library, device and dtype as ``B``.

    Notes
    -----
    All matmul iterations first scale ``B`` to unit Frobenius norm (after an
    exact power-of-two prescale, so scales from 1e-30 to 1e30 are safe in
    float32). ``"polar_express"`` and ``"gram"`` then tighten the scale for
    free with the first step's ``A^2 = (XX^T)^2``: since
    :math:`\|A^2\|_F^{1/4} = (\sum s^8)^{1/8} \in [s_{max}, m^{1/8} s_{max}]`,
    dividing by it loses at most a factor :math:`m^{1/8}` (2.8 at m = 4096)
    at the bottom of the spectrum instead of the :math:`\sqrt{m}` of the
    Frobenius norm (this rescaling is our own).

    Examples
    --------
    >>> import numpy as np
    >>> from spectral_ops import polar
    >>> B = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    >>> Q = polar(B)
    >>> s = np.linalg.svd(Q, compute_uv=False)
    >>> bool(abs(s - 1).max() < 1e-3)
    True
    """
    prep = bb.prepare(B, compute_dtype=compute_dtype, check_finite=check_finite)
    xp = prep.xp
    plan = _plan(xp, B, B.shape, prep.dtype, method, steps, floor, tol)
    if prep.m == 0:
        return bb.finish(xp.zeros_like(prep.x), prep)
    eps = bb.dtype_eps(xp, prep.dtype)
    x = prep.x
    if plan.method == "polar_express":
        coefs = _coefs(plan)
        y = _polar_express(xp, x, coefs, eps)
    elif plan.method == "gram":
        y = _gram_newton_schulz(xp, x, _coefs(plan), eps, restart_after=2)
    elif plan.method == "jordan":
        y = _jordan(xp, x, plan.steps)
    elif plan.method == "qdwh":
        y = _qdwh(xp, x, _qdwh_fixed(plan.lower, plan.steps))
    else:
        y = _svd_polar(xp, x)
    return bb.finish(y, prep)


def _coefs(plan: PolarPlan):
    from .coefficients import polar_express_coefficients
    return polar_express_coefficients(plan.steps, plan.lower)


def _qdwh_fixed(eps, steps):
    w = _qdwh_schedule(eps, eps)
    # past convergence the weights are Halley's (3, 1, 3)
    return (w + [(3.0, 1.0, 3.0)] * steps)[:steps]


# --- building blocks --------------------------------------------------------------

def _mT(xp, x):
    return xp.linalg.matrix_transpose(x)


def _lincomb(xp, terms, dtype):
    """sum(coef * array), formed in float32 or better and rounded once to ``dtype``.

    In 16-bit dtypes a Python coefficient such as 8.2872 would otherwise be
    rounded to 8.25 before use (as a bf16 scalar), a systematic error.
    """
    wide = bb.wide_dtype(xp, dtype)
    if wide == dtype:
        out = None
        for c, a in terms:
            out = c * a if out is None else out + c * a
        return out
    out = None
    for c, a in terms:
        t = c * xp.astype(a, wide)
        out = t if out is None else out + t
    return xp.astype(out, dtype)


def _tight_start(xp, x, eps):
    """Unit-Frobenius scaling, then the free Gram tightening (see :func:`polar`).

    Returns ``(x, A, A2)`` with ``A = x x^T`` and ``A2 = A @ A`` for the scaled ``x``.
    """
    x, _ = bb.frobenius_scale(xp, x)
    a = fp.gram(xp, x)
    a2 = a @ a
    wide = bb.wide_dtype(xp, x.dtype)
    s8 = xp.sqrt(xp.sum(xp.astype(a2, wide) ** 2, axis=(-2, -1), keepdims=True))
    k = s8 ** 0.25 * (1.0 + eps)  # >= s_max, with a margin for round-off in A2
    k = xp.where(k > 0, k, xp.ones_like(k))
    kc = xp.astype(k, x.dtype)
    k2 = xp.astype(k * k, x.dtype)
    return x / kc, a / k2, a2 / (k2 * k2)


def _polar_express(xp, x, coefs, eps):
    x, a, a2 = _tight_start(xp, x, eps)
    comb = functools.partial(_lincomb, xp)
    for t, (ca, cb, cc) in enumerate(coefs):
        if t == 0:
            poly = _lincomb(xp, [(cb, a), (cc, a2)], x.dtype)  # A^2 is already formed
            x = fp.matmul_acc(xp, x, poly, x, beta=ca, combine=comb)
        else:
            x = _quintic_step(xp, x, (ca, cb, cc))
    return x


def _quintic_step(xp, x, coefs):
    """One odd-quintic step ``aX + (bA + cA^2) X`` with ``A = X X^T``, fused where possible."""
    ca, cb, cc = coefs
    comb = functools.partial(_lincomb, xp)
    a = fp.gram(xp, x)
    poly = fp.matmul_acc(xp, a, a, a, beta=cb, alpha=cc, combine=comb)  # bA + cA^2
    return fp.matmul_acc(xp, x, poly, x, beta=ca, combine=comb)  # aX + (bA + cA^2) X


def _jordan(xp, x, steps):
    # Same arithmetic as torch.optim.Muon / optax.contrib.muon: Frobenius
    # normalisation, then the fixed quintic.
    x, _ = bb.frobenius_scale(xp, x)
    for _ in range(steps):
        # torch.optim.Muon's own arithmetic: addmm for both combinations
        x = _quintic_step(xp, x, JORDAN_COEFFICIENTS)
    return x


def _gram_newton_schulz(xp, x0, coefs, eps, restart_after=2):
    r"""Polar Express steps run on R = X X^T, the last one on X itself.

    With p(x) = x h(x^2), h = a + b y + c y^2, all but the last step iterate
    R_{t+1} = H R H and Q_{t+1} = H Q with H = h(R), so that X_t = Q_t X_0
    (all are polynomials in R_0 and commute in exact arithmetic); R is
    re-symmetrised after each update. Then X = Q X_0 takes the last step
    directly, as in :func:`_polar_express`.

    Round-off makes tiny eigenvalues of R slightly negative, and the iteration
    multiplies a negative eigenvalue y by h(y)^2 (about 68 in the first step)
    every step until it explodes. Restarting after step 2 (X_0 <- Q X_0,
    R <- X_0 X_0^T, Q <- I) resets that error. The direct last step (our own
    arrangement) is the near-identity, third-order polish of the schedule: it
    removes the band error that R's round-off leaves in Q (float32, cond 1e4:
    max |sigma - 1| 6.2e-5 -> 1.2e-5, Polar Express's own value) for two
    m x n products instead of one m x m. In 16-bit dtypes R's error is still
    too large (measured in bfloat16: output singular values up to 2.3 on a
    512 x 512 Gaussian), so 16-bit inputs run in float32.
    """
    dtype, wide = x0.dtype, bb.wide_dtype(xp, x0.dtype)
    if wide != dtype:
        y = _gram_newton_schulz(xp, xp.astype(x0, wide), coefs, eps, restart_after)
        return xp.astype(y, dtype)
    if len(coefs) == 1:
        return _polar_express(xp, x0, coefs, eps)
    x0, r, r2 = _tight_start(xp, x0, eps)
    eye = bb.eye_like(xp, x0, x0.shape[-2])
    q = None
    gram_steps = len(coefs) - 1
    for t, (ca, cb, cc) in enumerate(coefs[:gram_steps]):
        if t == restart_after:
            x0 = q @ x0
            r = fp.gram(xp, x0)
            q = None
        if t > 0:
            r2 = r @ r
        h = _lincomb(xp, [(ca, eye), (cb, r), (cc, r2)], x0.dtype)
        q = h if q is None else h @ q
        if t + 1 < gram_steps and t + 1 != restart_after:  # R is needed next step
            r = h @ (r @ h)
            r = 0.5 * (r + _mT(xp, r))
    return _quintic_step(xp, q @ x0, coefs[-1])


def _qdwh(xp, x, weights):
    """QDWH on the tall orientation ``Y = x^T`` (n x m, n >= m).

    16-bit inputs run in float32: no library has a 16-bit QR or solve.
    """
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    y, _ = bb.frobenius_scale(xp, _mT(xp, x if wide == dtype else xp.astype(x, wide)))
    m = y.shape[-1]
    eye = bb.eye_like(xp, y, m)
    for a, b, c in weights:
        if c > 100.0:
            # QR form: [sqrt(c) Y; I] = [Q1; Q2] R, Y <- (b/c) Y + (a - b/c)/sqrt(c) Q1 Q2^T
            stacked = xp.concat(
                [math.sqrt(c) * y, xp.broadcast_to(eye, y.shape[:-2] + (m, m))], axis=-2)
            qf, _ = xp.linalg.qr(stacked)
            q1, q2 = qf[..., : y.shape[-2], :], qf[..., y.shape[-2]:, :]
            y = (b / c) * y + ((a - b / c) / math.sqrt(c)) * (q1 @ _mT(xp, q2))
        else:
            # Cholesky form, via a symmetric positive definite solve:
            # Y <- (b/c) Y + (a - b/c) Y (I + c Y^T Y)^{-1}
            z = eye + c * (_mT(xp, y) @ y)
            yz = _mT(xp, xp.linalg.solve(z, _mT(xp, y)))
            y = (b / c) * y + (a - b / c) * yz
    y = _mT(xp, y)
    return y if wide == dtype else xp.astype(y, dtype)


def _svd_polar(xp, x):
    dtype = x.dtype
    wide = bb.wide_dtype(xp, dtype)
    xw = x if wide == dtype else xp.astype(x, wide)
    u, s, vh = xp.linalg.svd(xw, full_matrices=False)
    # partial polar convention: numerically zero singular values stay zero
    rtol = max(x.shape[-2:]) * bb.dtype_eps(xp, wide)
    keep = s > rtol * s[..., :1]
    y = (u * xp.astype(keep, wide)[..., None, :]) @ vh
    return y if wide == dtype else xp.astype(y, dtype)
