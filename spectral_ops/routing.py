"""Routing: which iteration runs, with which numbers, at what cost.

Everything here is host-side arithmetic on shapes, dtypes and options: the
default tolerances, the product and flop counts, the measured CPU crossovers,
the ``auto`` rules, and the builders of the plans (:mod:`spectral_ops.plans`)
that the maps execute. No array is touched except to ask where it lives.

``auto`` routes by where the computation runs: the array's device, or, where
that cannot be read (under ``jax.jit``, ``torch.compile`` fake tensors without
a device, ...), its library's default device (:func:`~spectral_ops._backbone.on_accelerator`).
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

from . import _backbone as bb
from .coefficients import (CUSHION, JORDAN_COEFFICIENTS, SAFETY, polar_express_coefficients,
                           mixed_schedule, polar_express_schedule, root_schedule,
                           schedule_error)
from .kernels import inverse_root_count, matpow_count
from .plans import ClipPlan, PolarPlan, PowerPlan

__all__ = ["POLAR_METHODS", "CLIP_METHODS", "POWER_METHODS", "GRAM_FLOP_RATIO",
           "GRAM_MIN_WORK_ACCELERATOR", "default_polar_tol", "plan_polar", "plan_clip",
           "plan_power", "clip_method", "check_clip_ratio", "clip_ratio_limit",
           "quarter_octave", "count_polar", "newton_steps",
           "design_lower", "qdwh_schedule", "resolve_power_eps", "EIGH_MIN_FLOOR",
           "EIGH_MAX_RATIO", "eigh_available", "eigh_pays", "EIGH_GEMMS", "EIGH_GEMMS_M",
           "EIGH_OVERHEAD_SIDE"]

POLAR_METHODS = ("auto", "polar_express", "jordan", "gram", "qdwh", "svd", "eigh")
CLIP_METHODS = ("auto", "polar", "newton", "svd", "eigh")
POWER_METHODS = ("auto", "newton", "svd", "eigh")

#: polar: default worst-case ``|sigma_out - 1|`` above the floor, per compute dtype.
#: Tighter than round-off would be wasted steps.
POLAR_TOL = {"float64": 1e-12, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}
#: clip: default relative error of each singular value above the polar floor.
CLIP_TOL = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}
#: clip's sign iteration resolves ``|s - tau|`` down to ``lower * s_max`` and
#: reaches ``tol`` above it (exact arithmetic), per wide dtype (docs/clip.md).
SIGN_DESIGN = {"float64": (1e-8, 1e-12), "float32": (1e-4, 1e-4)}
#: clip: the relative gap ``|s - tau| / tau`` from which the sign iteration resolves
#: every singular value (the output's spectral norm then stays within
#: ``tau (1 + SIGN_GAP)``); its design lower end is ``SIGN_GAP / ratio``.
SIGN_GAP = 1e-3
#: clip: the largest ``s_max / tau`` the matrix-product routes resolve, per wide
#: dtype: round-off in ``H = B P^T`` is about ``eps s_max``, i.e. a relative
#: ``eps * ratio`` at ``tau`` (1.2e-3 in float32 at 1e4).
MAX_MATRIX_RATIO = {"float32": 1e4, "float64": 1e12}
#: clip: where ``eps * ratio`` exceeds this, the projector refinement and the last
#: product of a float32 clip run in float64 (3 of its products; where the
#: library has float64).
POLISH_ABOVE = 1e-5
#: clip: where ``eps * ratio`` exceeds this (float32: ratio above about 840), ``H``
#: and the sign iteration run in float64 as well (measured: output norm 1.0013 tau
#: at ratio 1e4 with a float32 sign).
SIGN64_ABOVE = 1e-4
#: power: default relative floor per compute dtype (float64 needs 1e-5 s_max).
POWER_FLOOR = {"float64": 1e-5, "float32": 1e-3, "float16": 1e-2, "bfloat16": 1e-2}
#: polar: the smallest ``tol`` at which Polar Express mixes in nonic steps. Their
#: coefficients (up to about 550) carry float32 round-off of about 3e-5, a third of
#: the default tol 1e-4, and save only one product there (20 instead of 21 at
#: 256 x 1024); from 1e-3 up the round-off is a few percent of tol and the saving
#: grows (15 instead of 18 products at tol 0.3). Never in 16-bit dtypes: measured in
#: bfloat16 (256 x 1024 Gaussian, tol 2e-2), the first nonic step diverges.
NONIC_MIN_TOL = 1e-3
#: power, ``H^p P`` route: the smallest floor for which the root takes the minimax steps;
#: below it, Newton's. Their coefficients (up to about 50) carry round-off into the
#: directions of the small singular values, which ``H Y^(b-a)`` amplifies: float32,
#: 128 x 512, condition 1e4, floor 1e-4, p = 1/4: relative error 2.1e-3 through the
#: minimax steps, 1.3e-4 through Newton's (at the default floor 1e-3 both meet 1e-3).
MINIMAX_ROOT_MIN_FLOOR = {"float32": 1e-3, "float64": 0.0}
#: power, ridge form: target ``|1 - mu|`` of the coupled Newton iteration (exact
#: arithmetic), per wide dtype.
POWER_TOL = {"float64": 1e-13, "float32": 1e-5}
#: power, ``H^p P`` route: bound on the relative error of ``H^(-1/b)`` from its minimax
#: steps (exact arithmetic), per wide dtype; float32: ``(b - a)`` times it stays under the
#: round-off of ``P`` and ``H`` (measured 1e-5 to 2e-5 on real matrices).
ROOT_TOL = {"float64": 1e-13, "float32": 1e-4}
#: power: the largest denominator ``b`` of ``p = a/b`` the matrix-product route
#: takes (an inverse ``b``-th or ``2b``-th root): its error grows with ``b``
#: (float32, cond 1e3: 1.7e-4 at 1/16, 7e-3 at 1/1000), so ``auto`` takes the
#: SVD beyond it and ``method="newton"`` refuses it.
MAX_NEWTON_DENOMINATOR = 16
#: power, ``H^p P`` route: the largest denominator ``b`` of ``p = a/b`` whose root takes
#: the minimax steps (see MINIMAX_ROOT_MIN_FLOOR): float64 at
#: condition 1e4 (128 x 512), the minimax steps' error grows with ``b`` (4e-13 at 1/2,
#: 6.7e-12 at 1/4, 6.1e-11 at 1/8, 1.5e-10 at 1/16, against the target 1e-10), where
#: Newton's stay at 3e-12 or less; float32 stays within 6.4e-5 up to b = 16.
MINIMAX_ROOT_MAX_DENOMINATOR = {"float32": MAX_NEWTON_DENOMINATOR, "float64": 4}
#: power: default ridge for ``p < 0``, relative to ``||B||_F``.
NEGATIVE_POWER_EPS = 1e-3

#: ``"eigh"`` (clip and power): the eigendecomposition of the float64 Gram matrix
#: ``B B^T``, whose eigenvalues carry absolute errors of a few tens of
#: ``eps64 s_max^2`` (at most :func:`~spectral_ops.kernels.eigh_ridge`,
#: ``4 sqrt(n) eps64``, relative to ``s_max^2``). power: from this floor up (relative
#: to ``s_max``) that error and power's ridge of the same size move a singular value
#: by a relative 6e-6 at most (n = 4096): ``auto`` takes it for floors at least this,
#: ``method="eigh"`` refuses smaller ones.
EIGH_MIN_FLOOR = 1e-4
#: clip: the largest ``s_max / tau`` for ``"eigh"``: the threshold then moves by a
#: relative ``eigh_ridge(n) ratio^2 / 2`` at most (2.8e-6 at n = 4096), the float32
#: matrix routes' own limit (``MAX_MATRIX_RATIO``).
EIGH_MAX_RATIO = 1e4
#: polar's ``auto`` on CPUs weighs ``"eigh"`` against the iteration by flops, with
#: the float64 ``m x m`` eigendecomposition counted as ``EIGH_GEMMS + EIGH_GEMMS_M / m``
#: float32 ``m x m x m`` products (fitted to LAPACK ``syevd`` against the iterations
#: on a 2-core x86-64 CPU, NumPy and torch, 32 <= m <= 2048; see :func:`eigh_pays`).
EIGH_GEMMS = 11.0
EIGH_GEMMS_M = 3072.0
#: Single matrices with a short side below this take ``"eigh"`` whatever the flops:
#: there the iteration's ~20 products cost more in per-call overhead than one small
#: eigendecomposition (measured: 0.58x-0.65x of Polar Express's time at 32 x 32
#: and 32 x 128).
EIGH_OVERHEAD_SIDE = 64

#: ``auto`` takes Gram Newton-Schulz where its products cost at most this
#: fraction of Polar Express's flops (aspect ratio about 2.6 and up at 7 steps).
GRAM_FLOP_RATIO = 0.8
#: On accelerators, only from this much work per product up: ``batch * m * m * n``
#: multiply-adds, the Gram product's. Below it kernel launches rather than flops
#: set the time, and Gram Newton-Schulz launches more kernels. Measured on an
#: H200, float32 (docs/performance.md): Polar Express faster at 512 x 2048
#: (5.4e8) and 16 x 256 x 1024 (1.1e9), Gram Newton-Schulz at 768 x 3072
#: (1.8e9), 64 x 256 x 1024 and 1024 x 4096 (4.3e9). A rule on the short side
#: alone (1024 before) missed the last two kinds.
GRAM_MIN_WORK_ACCELERATOR = 1.5e9
#: Gram Newton-Schulz resolves singular values down to about ``sqrt(eps) s_max``:
#: ``auto`` takes it only for floors at least this, per compute dtype.
GRAM_MIN_FLOOR = {"float32": 1e-3, "float64": 1e-7}
#: Gram Newton-Schulz restarts its recurrence after this step.
GRAM_RESTART_AFTER = 2


def default_polar_tol(dtype_name: str) -> float:
    """polar's default ``tol`` for a compute dtype name."""
    return POLAR_TOL[dtype_name]


# --- option checks ---------------------------------------------------------------

def is_real(value) -> bool:
    """A real Python or NumPy scalar (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_method_steps_tol(methods, method, steps, tol):
    """The option checks that polar and clip share."""
    if method not in methods:
        raise ValueError(f"method must be one of {methods}; got {method!r}.")
    if steps is not None and (isinstance(steps, bool) or not is_real(steps)
                              or not math.isfinite(steps) or int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be a positive integer or None; got {steps!r}.")
    if steps is not None and method in ("svd", "eigh"):
        raise ValueError(f"steps does not apply to method={method!r}; leave it as None.")
    if tol is not None and not (is_real(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1) or None; got {tol!r}.")


def check_floor(floor, what: str):
    if not (is_real(floor) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1), {what}; got {floor!r}.")


# --- counts ----------------------------------------------------------------------

def count_polar(method: str, m: int, n: int, steps: int, nonic: int = 0) -> tuple[int, float]:
    """Matrix products and their flops per matrix for an m x n (m <= n) input;
    ``nonic`` of the ``steps`` Polar Express steps are of degree 9 (one more
    m x m product each)."""
    mmn, mmm = 2.0 * m * m * n, 2.0 * m * m * m
    if method in ("polar_express", "jordan"):
        return 3 * steps + nonic, steps * (2 * mmn + mmm) + nonic * mmm
    if method == "gram":
        if steps == 1:  # a single step runs as Polar Express
            return count_polar("polar_express", m, n, 1)
        return _gram_count(steps, GRAM_RESTART_AFTER, mmn, mmm)
    if method == "qdwh":
        # one product a step: Q1 Q2^T (QR form) or Y^T Y (solve form); QR and
        # solves are not counted
        return steps, steps * mmn
    return svd_count(m, n)


def eigh_count(m: int, n: int) -> tuple[int, float]:
    """The ``"eigh"`` routes' three float64 products: ``B B^T``, ``W g W^T`` and its
    product with ``B``; the eigendecomposition itself is not counted."""
    return (3, 4.0 * m * m * n + 2.0 * m**3) if m else (0, 0.0)


def eigh_pays(m: int, n: int, batch: int, iteration_flops: float) -> bool:
    """Whether ``"eigh"`` beats a matrix-product iteration of ``iteration_flops``
    (per matrix) for ``batch`` m x n (m <= n) float32 inputs on a CPU.

    Its cost, in float32 flops: the three products of :func:`eigh_count` at half
    rate (float64), plus the eigendecomposition as ``EIGH_GEMMS + EIGH_GEMMS_M / m``
    products of ``m x m x m`` (LAPACK's per-matrix overhead grows as m shrinks, and a
    stack runs it matrix by matrix). Fitted on a 2-core x86-64 CPU (float32,
    default ``tol`` and ``floor``; asv_bench/eigh_grid.py over 31 shapes with
    NumPy and with torch, one run each, and asv_bench/README.md, table p):
    eigh's time over the faster iteration's was 0.64-0.97 at aspect ratios 2
    and 4 from m = 256 (one exception, 1.10 at torch 256 x 512), 0.64-1.01 at
    1024 x 1024 and 2048 x 2048, 0.92-3.4 on squares and stacks of squares
    with m <= 256 (1.28 and 1.53 at 256 x 256, 2.0 and 2.5 at 16 x 64 x 64;
    0.81 at NumPy 256 x 256 in table p), and 0.82-1.43 on wide stacks and
    small wide matrices below m = 256. This cost puts 1024 x 1024 (20 against
    21 products) and wider shapes from m = 256 on eigh's side, squares up to
    512 x 512 (23 against 21 at 512) and stacks of small matrices on the
    iteration's; the margins are thin (about 5% of the flops at 256 x 1024),
    as are the measured differences. Single matrices with a short side below
    ``EIGH_OVERHEAD_SIDE`` take eigh (see there).
    """
    if batch == 1 and m < EIGH_OVERHEAD_SIDE:
        return True
    eigendecomposition = (EIGH_GEMMS + EIGH_GEMMS_M / m) * 2.0 * m**3
    return 2.0 * eigh_count(m, n)[1] + eigendecomposition < iteration_flops


def svd_count(m: int, n: int) -> tuple[int, float]:
    """The SVD routes' one product, ``(U f(s)) V^T``; the SVD itself is not counted."""
    return (1, 2.0 * m * m * n) if m else (0, 0.0)


def _gram_count(steps, restart_after, mmn, mmm):
    """Products and flops of :func:`~spectral_ops.kernels.gram_newton_schulz` (``steps >= 2``)."""
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


def newton_steps(mu_min: float, r: int, tol: float, max_steps: int = 60) -> int:
    """Coupled Newton steps for the inverse ``r``-th root that bring every
    eigenvalue of ``M`` in ``[mu_min, 1]`` to within ``tol`` of 1.

    The scalar map :math:`\\mu \\mapsto \\mu((r + 1 - \\mu)/r)^r` is increasing on
    (0, 1] with fixed point 1, so the smallest start converges last.
    """
    mu, k = mu_min, 0
    while 1.0 - mu > tol and k < max_steps:
        mu = mu * ((r + 1.0 - mu) / r) ** r
        k += 1
    return k


# --- design numbers --------------------------------------------------------------

def design_lower(floor: float, m: int, dtype_eps: float) -> float:
    """The design lower end of the normalised spectrum for a relative ``floor``.

    After the Gram-based rescaling the largest singular value is at least
    ``s_max / (m^(1/8) (1 + eps))`` of the scale (see ``tight_start``), so a
    singular value ``floor * s_max`` lands at or above this.
    """
    return floor / (max(m, 1) ** 0.125 * (1.0 + dtype_eps))


def qdwh_schedule(lower: float, eps: float):
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


def _qdwh_weights(eps: float, steps: int | None):
    """QDWH weights from the lower bound ``eps``; past convergence Halley's (3, 1, 3)."""
    w = qdwh_schedule(eps, eps)
    steps = len(w) if steps is None else steps
    return tuple((w + [(3.0, 1.0, 3.0)] * steps)[:steps])


# --- crossovers ------------------------------------------------------------------

def numpy_backed(xp) -> bool:
    """NumPy itself or array-api-strict (a wrapper around NumPy)."""
    import array_api_compat as aac

    if aac.is_numpy_namespace(xp):
        return True
    return "array_api_strict" in getattr(xp, "__name__", "")


def eigh_pays_fitted(xp) -> bool:
    """The libraries :func:`eigh_pays` was fitted on: NumPy (and array-api-strict)
    and torch. In JAX the order flips between eager and jitted calls (64 x 64, float32
    with x64: eigh 2.84 ms and Polar Express 4.81 ms eager, 0.74 and 0.20 ms jitted)."""
    import array_api_compat as aac

    return numpy_backed(xp) or aac.is_torch_namespace(xp)


def cpu_prefers_svd(xp, dtype, shape) -> bool:
    """Whether LAPACK's SVD beats Polar Express on a CPU, from measured crossovers.

    Measured on a 2-core x86-64 CPU (ratios of SVD time to Polar Express time, see
    docs/polar.md, "auto on CPUs"): float64 SVD is within 0.5x-1.4x of the 8-step
    iteration everywhere and exact, so it wins; NumPy's float32 SVD is 1.8x-4x slower
    than the 7-step iteration once the short side reaches 64; torch's and JAX's
    float32 SVD win on single matrices up to 2048 x 2048 (0.5x-0.9x) except wide
    ones from 1024 x 4096 up, and lose on stacks of 16 or more (1.5x-2.2x),
    where the SVD runs matrix by matrix.
    """
    m, n = sorted(shape[-2:])
    batch = math.prod(shape[:-2])
    if dtype == xp.float64:
        return True
    if numpy_backed(xp):
        return m < 64 and batch < 16
    return batch < 16 and not (m >= 1024 and n >= 4 * m)


def cpu_clip_prefers_svd(xp, dtype, shape) -> bool:
    """Measured on a 2-core x86-64 CPU (docs/clip.md): the matrix route wins only
    with NumPy float32 at aspect ratio 4 or more (1.1x-2.2x faster); square inputs
    and torch favour the SVD (0.3x-0.8x). power costs about as many products and
    follows the same rule (docs/power.md)."""
    m, n = sorted(shape[-2:])
    if cpu_prefers_svd(xp, dtype, shape):
        return True
    return not (numpy_backed(xp) and n >= 4 * m and m >= 128)


def eigh_available(xp, B, dtype) -> bool:
    """Whether ``"eigh"`` serves ``B`` computed in ``dtype``: a float32 or 16-bit
    compute dtype (in float64 the Gram matrix would lose what the SVD keeps),
    and float64 arithmetic in ``B``'s library where ``B`` lives (not JAX without
    ``jax_enable_x64``, not Apple's MPS)."""
    return bb.dtype_name(xp, dtype) != "float64" and bb.has_float64(xp, B)


def cpu_takes_eigh(xp, B, dtype) -> bool:
    """``auto``'s CPU route for clip and power of float32 and 16-bit inputs.

    Measured on a 2-core x86-64 CPU (NumPy float32, asv_bench/README.md, table
    m): 1.61x to 4.83x faster than the SVD routes and 1.55x to 2.78x faster
    than clip's and power's matrix-product iterations, at 256 x 1024, 1024 x 4096,
    512 x 512, 2048 x 2048 and 16 x 256 x 256, with errors near float32
    rounding (1e-8) where the iterations reach 1e-5. Not under autodiff
    (``eigh``'s derivative is NaN at repeated eigenvalues, as the SVD's).
    """
    return (not bb.on_accelerator(B) and not bb.is_differentiated(B)
            and eigh_available(xp, B, dtype))


def _check_eigh(xp, B, dtype, floor=None):
    """``method="eigh"``'s requirements, as a clear error."""
    if bb.dtype_name(xp, dtype) == "float64":
        raise ValueError(
            "method='eigh' forms the Gram matrix B B^T in float64, which squares the condition "
            "number: it serves float32 and 16-bit inputs. Use method='svd' (or 'auto') for "
            "float64.")
    if not bb.has_float64(xp, B):
        raise ValueError(
            "method='eigh' needs float64 arithmetic where B lives (JAX: enable "
            "jax_enable_x64; Apple MPS has none). Use method='svd' or 'auto'.")
    if floor is not None and floor < EIGH_MIN_FLOOR:
        raise ValueError(
            f"method='eigh' resolves singular values from {EIGH_MIN_FLOOR:g} s_max up (the "
            f"float64 Gram matrix squares the condition number); got floor={floor!r}. Use "
            f"method='svd' for smaller floors.")


def gram_pays(xp, dtype, m, n, steps, accelerator, floor=1e-3, pe_flops=None,
              batch=1) -> bool:
    """Whether Gram Newton-Schulz beats Polar Express for ``batch`` m x n (m <= n) inputs.

    Same polynomials, same band error (its last step runs on X); fewer flops
    when n >> m. Measured on a 2-core CPU (float32, NumPy and torch), its time
    relative to Polar Express follows the flop ratio plus 0.03-0.08: 0.93-0.96
    at aspect 2 (flop ratio 0.89), 0.73-0.77 at aspect 3 (0.76), 0.65-0.75 at
    aspect 4 (0.68). 16-bit inputs are excluded: its recurrence runs in float32.
    Floors below ``GRAM_MIN_FLOOR`` are excluded too: ``R = X X^T`` holds a
    singular value ``s`` as ``s^2``, so round-off ``eps`` in ``R`` loses those
    below ``sqrt(eps) s_max`` (measured on a real 384 x 1536 gradient, clip at
    ``s_max / tau = 2.7e3``: relative error 1.5e-2 through Gram, 8e-4 through
    Polar Express).
    """
    if bb.is_16bit(xp, dtype) or steps < 2 or floor < _gram_min_floor(xp, dtype):
        return False
    if accelerator and batch * m * m * n < GRAM_MIN_WORK_ACCELERATOR:
        return False
    gram = count_polar("gram", m, n, steps)[1]
    if pe_flops is None:  # the same number of quintic steps
        pe_flops = count_polar("polar_express", m, n, steps)[1]
    return gram <= GRAM_FLOP_RATIO * pe_flops


def _gram_if_it_pays(xp, dtype, m, n, pe_plan, tol, floor, accelerator, batch) -> PolarPlan:
    """Gram Newton-Schulz's plan (its own quintic schedule) where :func:`gram_pays`
    against the Polar Express plan ``pe_plan``, else ``pe_plan``."""
    if bb.is_16bit(xp, dtype) or floor < _gram_min_floor(xp, dtype):
        return pe_plan
    gram = _quintic_plan("gram", m, n, None, tol, floor, pe_plan.eps)
    if gram_pays(xp, dtype, m, n, gram.steps, accelerator, floor, pe_flops=pe_plan.flops,
                 batch=batch):
        return gram
    return pe_plan


def _gram_min_floor(xp, dtype) -> float:
    """``GRAM_MIN_FLOOR`` of the dtype Gram Newton-Schulz runs in (float32 for 16-bit)."""
    return GRAM_MIN_FLOOR[bb.dtype_name(xp, bb.wide_dtype(xp, dtype))]


def exact_route_below(xp, dtype, eps) -> float:
    """``tol`` under which ``auto`` leaves the matrix-product iterations.

    32/64-bit: ``10 eps`` (round-off). 16-bit: the dtype's default ``tol`` (2e-2
    bfloat16, 1e-2 float16), which is what a 16-bit Polar Express reaches;
    ``10 eps`` (7.8e-2 in bfloat16) would send every default call to QDWH.
    """
    return POLAR_TOL[bb.dtype_name(xp, dtype)] if bb.is_16bit(xp, dtype) else 10 * eps


# --- plans -----------------------------------------------------------------------

def nonic_allowed(xp, dtype, tol: float) -> bool:
    """Whether Polar Express may take nonic steps: 32/64-bit compute dtypes and
    ``tol >= NONIC_MIN_TOL``."""
    return not bb.is_16bit(xp, dtype) and tol >= NONIC_MIN_TOL


def _quintic_plan(method, m, n, steps, tol, floor, eps, lower=None, nonic=False) -> PolarPlan:
    """Polar Express or Gram Newton-Schulz: ``steps`` (None: the fewest that reach
    ``tol``) quintics designed for the relative ``floor`` (or the normalised
    ``lower`` end, where given); with ``nonic``, Polar Express's cheapest mix of
    quintic and nonic steps instead (see :func:`nonic_allowed`)."""
    lower = design_lower(floor, m, eps) if lower is None else lower
    if steps is None and method == "polar_express" and nonic:
        coefs, bound = mixed_schedule(lower, tol)  # quintic and nonic steps
    elif steps is None:
        coefs, bound = polar_express_schedule(lower, tol)
    else:
        coefs = polar_express_coefficients(steps, lower)
        bound = schedule_error(lower, steps)
    k, f = count_polar(method, m, n, len(coefs), sum(len(c) == 5 for c in coefs))
    return PolarPlan(method, len(coefs), k, f, bound, lower, floor=floor,
                     coefficients=tuple(coefs),
                     restart_after=GRAM_RESTART_AFTER if method == "gram" else None, eps=eps)


def _qdwh_plan(m, n, steps, floor, eps) -> PolarPlan:
    weights = _qdwh_weights(eps, steps)
    k, f = count_polar("qdwh", m, n, len(weights))
    return PolarPlan("qdwh", len(weights), k, f, None, None, floor=floor, qdwh_weights=weights,
                     eps=eps)


def plan_polar(xp, B, dtype, method="auto", steps=None, floor=1e-3, tol=None) -> PolarPlan:
    """The :class:`~spectral_ops.PolarPlan` of ``polar(B)`` computed in ``dtype``."""
    check_method_steps_tol(POLAR_METHODS, method, steps, tol)
    check_floor(floor, "the relative singular value above which the accuracy target holds")
    steps = None if steps is None else int(steps)
    m, n = sorted(B.shape[-2:])
    eps = bb.dtype_eps(xp, dtype)
    tol = POLAR_TOL[bb.dtype_name(xp, dtype)] if tol is None else float(tol)
    floor = float(floor)
    auto = method == "auto"
    if auto:
        accelerator = bb.on_accelerator(B)
        on_cpu = not accelerator and not bb.is_differentiated(B)
        eigh_ok = on_cpu and floor >= EIGH_MIN_FLOOR and eigh_available(xp, B, dtype)
        # float32 NumPy and torch weigh eigh against the iteration by flops (eigh_pays,
        # fitted there); 16-bit inputs (whose iteration runs in the 16-bit dtype) and
        # other libraries keep the SVD's crossovers; given steps ask for the iteration
        weigh_eigh = (eigh_ok and steps is None and not bb.is_16bit(xp, dtype)
                      and eigh_pays_fitted(xp))
        batch = math.prod(B.shape[:-2])
        if m == 0:
            method = "svd"
        elif tol < exact_route_below(xp, dtype, eps):
            method = "qdwh" if accelerator or bb.is_differentiated(B) else "svd"
        elif weigh_eigh and batch == 1 and m < EIGH_OVERHEAD_SIDE:
            method = "eigh"  # eigh_pays' small-matrix rule, before designing anything
        elif on_cpu and steps is None and not weigh_eigh \
                and cpu_prefers_svd(xp, dtype, B.shape):
            # the float64 Gram eigendecomposition is faster than the SVD where it serves
            method = "eigh" if eigh_ok else "svd"
        else:
            method = "polar_express"  # or "gram", or "eigh", once the step count is known
    if method == "gram" and floor < _gram_min_floor(xp, dtype):
        raise ValueError(
            f"method='gram' resolves singular values down to about sqrt(eps) s_max: floor >= "
            f"{_gram_min_floor(xp, dtype):g} in its compute dtype; got floor={floor!r}. Use "
            f"method='polar_express' (or 'auto') for smaller floors.")
    if method in ("polar_express", "gram"):
        plan = _quintic_plan(method, m, n, steps, tol, floor, eps,
                             nonic=nonic_allowed(xp, dtype, tol))
        if auto and steps is None:  # given steps: the Polar Express plan of that length
            plan = _gram_if_it_pays(xp, dtype, m, n, plan, tol, floor, bb.on_accelerator(B),
                                    batch)
            if weigh_eigh and eigh_pays(m, n, batch, plan.flops):
                method = "eigh"  # built below, as when asked for
        if method != "eigh":
            return plan
    if method == "jordan":
        nsteps = 5 if steps is None else steps
        k, f = count_polar(method, m, n, nsteps)
        return PolarPlan(method, nsteps, k, f, None, None, floor=floor,
                         coefficients=(JORDAN_COEFFICIENTS,) * nsteps, eps=eps)
    if method == "qdwh":
        # 16-bit QDWH runs in float32
        return _qdwh_plan(m, n, steps, floor, bb.dtype_eps(xp, bb.wide_dtype(xp, dtype)))
    if method == "eigh":
        _check_eigh(xp, B, dtype, floor)
        return PolarPlan("eigh", 0, *eigh_count(m, n), None, None, floor=floor, eps=eps)
    return PolarPlan("svd", 0, *svd_count(m, n), None, None, floor=floor, eps=eps)


def _wide_polar_plan(xp, dtype, m, n, steps, floor, tol, lower=None) -> PolarPlan:
    """The polar factor inside clip and power: Polar Express in the wide dtype.

    Not Gram Newton-Schulz: its ``P`` is as accurate on the band, but clip and
    power multiply ``P``'s error outside it back in (measured on a real
    384 x 1536 gradient, clip at ``tau`` = the 0.9 quantile: relative error
    4.4e-4 through Gram, 3.7e-5 through Polar Express, target 1e-4).
    """
    eps = bb.dtype_eps(xp, bb.wide_dtype(xp, dtype))
    return _quintic_plan("polar_express", m, n, steps, tol, floor, eps, lower=lower)


def plan_clip(xp, B, dtype, method="auto", steps=None, floor=1e-3, tol=None,
              eps=None, ratio=None, tight=None) -> ClipPlan:
    """The :class:`~spectral_ops.ClipPlan` of ``clip(B, tau)`` computed in ``dtype``.

    ``ratio`` is a bound on ``s_max / tau`` known on the host (``||B||_F / tau``
    where ``B`` can be read without a device synchronisation; None: ``1 / floor``,
    the ratio ``floor`` was chosen for). The designs follow it: the polar factor
    resolves every singular value above ``tau`` (floor ``1 / (2 ratio)``), and
    the sign iteration every ``|s - tau| >= 1e-3 tau``, so that no singular value
    above ``tau`` comes out above ``tau (1 + 1e-3)`` from an unresolved sign;
    the step counts grow with ``log(ratio)``. Beyond ``MAX_MATRIX_RATIO`` of the
    wide dtype the matrix-product routes cannot resolve ``tau`` against
    ``s_max`` in that precision, and ``auto`` takes the SVD (CPU) or QDWH.

    ``tight``: a second, tighter bound on ``s_max / tau``, ``max b / tau`` over
    the batch with ``b`` the scale of the polar factor's own tight start
    (:func:`~spectral_ops.kernels.tight_start`, which the caller then passes to
    the iteration). The two designs follow it: a singular value ``tau / 2``
    lands at ``1 / (2 tight)`` or above on that scale, so ``P`` is designed for
    that lower end itself, with no allowance for the start's looseness. The
    float64 thresholds (``POLISH_ABOVE``, ``SIGN64_ABOVE``) stay on ``ratio``,
    the bound they were measured with.
    """
    check_method_steps_tol(CLIP_METHODS, method, steps, tol)
    check_floor(floor, "singular values above tau and above floor * s_max are cut to tau "
                       "accurately")
    if eps is not None and not (is_real(eps) and 0 < eps < 1):
        raise ValueError(
            f"eps must be None (no smoothing) or a number in (0, 1), the smoothing width "
            f"as a fraction of tau; got {eps!r}.")
    steps = None if steps is None else int(steps)
    eps = None if eps is None else float(eps)
    if method == "eigh":
        _check_eigh(xp, B, dtype)
        if eps is not None:
            raise ValueError("method='eigh' computes the hard clip: leave eps as None, or use "
                             "method='svd' or 'polar' for the smooth clip.")
        if ratio is not None and math.isfinite(ratio) and ratio > EIGH_MAX_RATIO:
            raise ValueError(
                f"method='eigh' resolves tau against s_max up to s_max / tau = "
                f"{EIGH_MAX_RATIO:g} (its float64 Gram matrix squares the ratio); the bound on "
                f"s_max / tau here (||B||_F / tau, or the ratio given) is {ratio:.3g}. Use "
                f"method='svd' (or 'auto').")
    m, n = sorted(B.shape[-2:])
    wide = bb.wide_dtype(xp, dtype)  # clip runs in float32 or better
    wide_name = bb.dtype_name(xp, wide)
    weps = bb.dtype_eps(xp, wide)
    tol = CLIP_TOL[bb.dtype_name(xp, dtype)] if tol is None else float(tol)
    floor = float(floor)
    method = clip_method(xp, B, dtype, method, tol, ratio, floor, eps)  # ratio as known
    ratio = 1.0 / floor if ratio is None or not math.isfinite(ratio) else max(float(ratio), 1.0)
    # float32 round-off near tau is eps s_max, i.e. eps * ratio relative to tau
    # (float32, ratio 5.4e3: output norm 1.0023 tau): the parts that carry it run
    # in float64 where the ratio calls for it, the SVD route entirely
    polish = "float64" if wide_name == "float32" and weps * ratio > POLISH_ABOVE else None
    # beyond SIGN64_ABOVE, |s - tau| = 1e-3 tau is at round-off level of a float32
    # H - tau I: H and the sign run in float64 too
    sign64 = "float64" if wide_name == "float32" and weps * ratio > SIGN64_ABOVE else None
    mmn, mmm = 2.0 * m * m * n, 2.0 * m**3
    # H = B P^T and the last product; then the projector refinement (2 m x m) or,
    # with eps, the second block's product with P (m x n)
    k_end, f_end = (4, 2 * mmn + 2 * mmm) if eps is None else (3, 3 * mmn)
    sign_cols = 2 * m if eps is not None else m
    if method == "polar":
        # P runs in the wide dtype, to that dtype's default accuracy at least
        ptol = min(tol, POLAR_TOL[wide_name])
        # the designs follow the bound rounded up (see quarter_octave)
        design = quarter_octave(ratio if tight is None else min(float(tight), ratio))
        if tight is not None:  # P matters only above tau / 2: below, the identity cancels it
            polar = _wide_polar_plan(xp, dtype, m, n, steps, 0.5 / design, ptol,
                                     lower=0.5 / design)
        else:  # the same, with the start's allowance; eps keeps the floor (see clip)
            pfloor = 0.5 / design if eps is None else min(floor, 0.5 / design)
            polar = _wide_polar_plan(xp, dtype, m, n, steps, pfloor, ptol)
        sign_lower, sign_tol = SIGN_DESIGN[wide_name]
        sign_lower = min(sign_lower, SIGN_GAP / design)
        # with eps the stacked [H - tau I, eps tau I] has no singular value below
        # eps tau, so the same design resolves it wherever eps tau >= lower s_max
        sign = _quintic_plan("polar_express", m, sign_cols, steps, sign_tol, sign_lower, weps,
                             lower=design_lower(sign_lower, m, 0.0))
    elif method == "newton":
        polar = _qdwh_plan(m, n, steps, floor, weps)
        sign = _qdwh_plan(m, sign_cols, steps, floor, weps)
    elif method == "eigh":
        return ClipPlan("eigh", 0, 0, *eigh_count(m, n))
    else:
        return ClipPlan("svd", 0, 0, *svd_count(m, n), eps=eps, polish_dtype=polish)
    return ClipPlan(method, polar.steps, sign.steps, polar.matmuls + sign.matmuls + k_end,
                    polar.flops + sign.flops + f_end,
                    polar.method if method == "polar" else None, polar=polar, sign=sign, eps=eps,
                    polish_dtype=polish, sign_dtype=sign64)


def clip_ratio_limit(xp, dtype) -> float:
    """The largest bound on ``s_max / tau`` (``||B||_F / tau`` where read) the
    matrix-product clips accept: ``1 / eps`` of the wide dtype (8.4e6 in
    float32). Beyond it ``tau`` is below ``eps ||B||_F``, the round-off of ``B``
    itself, which those routes carry (measured, float32 ``"newton"`` on a nearly
    low-rank input: output norm ``1.29 tau`` at ``s_max / tau = 1e7``)."""
    return 1.0 / bb.dtype_eps(xp, bb.wide_dtype(xp, dtype))


def check_clip_ratio(xp, dtype, method: str, ratio):
    """Refuse ``"polar"`` and ``"newton"`` beyond :func:`clip_ratio_limit`
    (``"auto"`` takes the SVD there)."""
    limit = clip_ratio_limit(xp, dtype)
    if method in ("polar", "newton") and ratio is not None and ratio > limit:
        raise ValueError(
            f"method={method!r} cannot resolve tau below the round-off of B: the bound on "
            f"s_max / tau here (||B||_F / tau, or the ratio given) is {ratio:.3g}, beyond "
            f"1 / eps = {limit:.3g} of {bb.dtype_name(xp, bb.wide_dtype(xp, dtype))}. Use "
            f"method='svd' (or 'auto'), or compute_dtype='float64'.")


def quarter_octave(ratio: float) -> float:
    """``ratio`` (at least 1) rounded up to a power of ``2^(1/4)``: the designs are
    cached by their lower ends, so a ratio that drifts from call to call (a
    training run) reuses a few of them instead of designing anew each time.
    A ratio within a relative 2e-6 above a power (such as a bound with a margin
    for rounding) takes that power: far inside the designs' own margins."""
    return 2.0 ** (math.ceil(4.0 * math.log2(max(float(ratio), 1.0)) - 1e-5) / 4.0)


def clip_method(xp, B, dtype, method, tol, ratio, floor, eps=None) -> str:
    """The method ``clip`` runs: ``method``, with ``"auto"`` resolved (see
    :func:`plan_clip`), without designing anything."""
    if method != "auto":
        return method
    tol = CLIP_TOL[bb.dtype_name(xp, dtype)] if tol is None else float(tol)
    # "eigh" only where a bound was read or given: its error grows with ratio^2
    known = ratio is not None and math.isfinite(ratio)
    ratio = 1.0 / floor if not known else max(float(ratio), 1.0)
    wide = bb.wide_dtype(xp, dtype)
    accelerator = bb.on_accelerator(B)
    if min(B.shape[-2:]) == 0:
        return "svd"
    if ratio > MAX_MATRIX_RATIO[bb.dtype_name(xp, wide)] or tol < 10 * bb.dtype_eps(xp, wide):
        # beyond 1 / eps no matrix route resolves tau (see check_clip_ratio): the SVD,
        # except under autodiff (its backward is NaN at repeated singular values)
        beyond = ratio > clip_ratio_limit(xp, dtype)
        return "newton" if (accelerator and not beyond) or bb.is_differentiated(B) else "svd"
    if eps is None and known and ratio <= EIGH_MAX_RATIO and cpu_takes_eigh(xp, B, dtype):
        return "eigh"
    if not accelerator and cpu_clip_prefers_svd(xp, dtype, B.shape) \
            and not bb.is_differentiated(B):
        return "svd"
    return "polar"


def resolve_power_eps(q: Fraction, eps):
    """The ridge of ``power``: ``eps``, or the default for ``p < 0`` (mandatory there)."""
    if eps is None:
        return NEGATIVE_POWER_EPS if q < 0 else None
    if not (is_real(eps) and 0 < eps < 1):
        raise ValueError(
            f"eps must be None or a number in (0, 1), the ridge relative to ||B||_F; got {eps!r}.")
    return float(eps)


def plan_power(xp, B, dtype, q: Fraction, method="auto", eps=None, floor=None) -> PowerPlan:
    """The :class:`~spectral_ops.PowerPlan` of ``power(B, q)`` computed in ``dtype``."""
    if method not in POWER_METHODS:
        raise ValueError(f"method must be one of {POWER_METHODS}; got {method!r}.")
    if floor is not None and not (is_real(floor) and 0 < floor < 1):
        raise ValueError(f"floor must be None or a number in (0, 1), the relative singular "
                         f"value from which the accuracy target holds; got {floor!r}.")
    eps = resolve_power_eps(q, eps)
    m, n = sorted(B.shape[-2:])
    if q == 1 and eps is None:
        if method == "eigh":  # the same refusals as for any other p
            _check_eigh(xp, B, dtype, POWER_FLOOR[bb.dtype_name(xp, dtype)]
                        if floor is None else float(floor))
        return PowerPlan("identity", q, "identity", 0, 0, 0, 0, 0.0, floor=floor)
    if q == 0 and eps is None and method != "eigh":
        # the partial polar factor, with polar's own routing and floor
        polar_method = {"auto": "auto", "svd": "svd"}.get(method, "polar_express")
        polar = plan_polar(xp, B, dtype, polar_method, None, 1e-3 if floor is None else floor)
        return PowerPlan("polar", q, "polar", polar.steps, 0, 0, polar.matmuls, polar.flops,
                         polar.method, polar=polar, floor=polar.floor)
    floor_default = POWER_FLOOR[bb.dtype_name(xp, dtype)] if floor is None else float(floor)
    if method == "auto" and m and floor_default >= EIGH_MIN_FLOOR \
            and cpu_takes_eigh(xp, B, dtype):
        method = "eigh"
    if method == "eigh":
        _check_eigh(xp, B, dtype, floor_default)
        return PowerPlan("eigh", q, "eigh", 0, 0, 0, *eigh_count(m, n), eps=eps,
                         floor=floor_default)
    if method == "auto":
        # like clip, power costs about 2-3 polar iterations: the same crossovers
        if m == 0 or q.denominator > MAX_NEWTON_DENOMINATOR or (
                not bb.on_accelerator(B) and cpu_clip_prefers_svd(xp, dtype, B.shape)
                and not bb.is_differentiated(B)):
            method = "svd"
        else:
            method = "newton"
    if method == "newton" and q.denominator > MAX_NEWTON_DENOMINATOR:
        raise ValueError(
            f"method='newton' takes exponents p = a/b with b <= {MAX_NEWTON_DENOMINATOR}; got "
            f"p = {q}. Round p (e.g. power(B, p, max_denominator={MAX_NEWTON_DENOMINATOR}) for a "
            f"float, or Fraction(p).limit_denominator({MAX_NEWTON_DENOMINATOR})) or use "
            f"method='svd'.")
    if method == "svd":
        return PowerPlan("svd", q, "svd", 0, 0, 0, *svd_count(m, n), eps=eps, floor=floor)
    wide = bb.wide_dtype(xp, dtype)  # power runs in float32 or better
    wide_name = bb.dtype_name(xp, wide)
    floor = floor_default
    tol = POWER_TOL[wide_name]
    a, b = q.numerator, q.denominator
    mmn, mmm = 2.0 * m * m * n, 2.0 * m**3
    if eps is None:
        r = b
        # H = B P^T inherits P's relative error: polar's own default tol suffices; Gram
        # Newton-Schulz where it pays, as for polar (measured on the real 384 x 1536 gradient,
        # its transpose and two nearly low-rank 128 x 512 spectra, p = 1/4, 1/2, 3/4: errors
        # 0.9x to 2x those through Polar Express's P, at most 3.3e-4)
        polar_dtype = None
        if bb.is_16bit(xp, dtype):
            # 16-bit inputs: P in the input's dtype, to its default tol, as polar runs it
            polar_dtype = bb.dtype_name(xp, dtype)
            polar = _quintic_plan("polar_express", m, n, None, POLAR_TOL[polar_dtype], floor,
                                  bb.dtype_eps(xp, dtype))
        else:
            polar = _wide_polar_plan(xp, dtype, m, n, None, floor, POLAR_TOL[wide_name])
            polar = _gram_if_it_pays(xp, wide, m, n, polar, POLAR_TOL[wide_name], floor,
                                     bb.on_accelerator(B), math.prod(B.shape[:-2]))
        # H = B P^T after the tight start: s_max in [m^(-1/8) / (1 + eps), 1], so a singular
        # value floor * s_max lands at or above this (design_lower)
        # ... and P's error (at most its bound) moves it by (1 - bound) / (1 + bound) at most,
        # H being divided by (1 + bound) to keep its spectrum in (0, 1]
        shrink = (1.0 - polar.error_bound) / (1.0 + polar.error_bound)
        lower = design_lower(floor, m, polar.eps) * shrink
        if (floor >= MINIMAX_ROOT_MIN_FLOOR[wide_name]
                and b <= MINIMAX_ROOT_MAX_DENOMINATOR[wide_name]):
            coefs, _ = root_schedule(lower, r, ROOT_TOL[wide_name])
        else:  # Newton's steps: coefficients of size 1 (see MINIMAX_ROOT_MIN_FLOOR)
            coefs = (((r + 1.0) / r, -1.0 / r, 0.0),) * newton_steps(lower, r,
                                                                     POWER_TOL[wide_name])
        root = inverse_root_count(r, coefs)
        # H, the root, Y^(b - a), H Y^(b-a), and the product with P
        k = polar.matmuls + 1 + root + matpow_count(b - a) + 2
        f = polar.flops + mmn + (root + matpow_count(b - a) + 1) * mmm + mmn
        return PowerPlan("newton", q, "polar-root", polar.steps, len(coefs), r, k, f,
                         polar.method, polar=polar, floor=floor, root_coefficients=coefs,
                         polar_dtype=polar_dtype)
    r = 2 * b
    ns = newton_steps(eps * eps / (1.0 + eps * eps), r, tol)
    coefs = (((r + 1.0) / r, -1.0 / r, 0.0),) * ns
    root = inverse_root_count(r, coefs)
    k = 1 + root + matpow_count(b - a) + 1
    f = mmn + (root + matpow_count(b - a)) * mmm + mmn
    return PowerPlan("newton", q, "gram-ridge", 0, ns, r, k, f, eps=eps, floor=floor,
                     root_coefficients=coefs)
