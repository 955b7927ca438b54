r"""Singular-value clipping :math:`\operatorname{clip}(B, \tau) = U\,\min(s, \tau)\,V^T` (MuCon).

The Frobenius projection of :math:`B` onto the spectral-norm ball of radius
:math:`\tau`: singular values at or below :math:`\tau` are kept, larger ones
are cut to :math:`\tau`.

All matrix methods use the same exact identity. With :math:`P = UV^T` the polar
factor, :math:`H = BP^T = U\,\mathrm{diag}(s)\,U^T` (m x m, symmetric) and
:math:`\Sigma = \operatorname{sign}(H - \tau I) = U\,\mathrm{diag}(\operatorname{sign}(s - \tau))\,U^T`,

.. math::

    2\,\operatorname{clip}(B, \tau) = B + \tau P - \Sigma\,(B - \tau P),

the scalar :math:`\min(s, \tau) = (s + \tau - \operatorname{sign}(s - \tau)(s - \tau))/2`
lifted to matrices (our own arrangement of the absolute-value identity). It has
two properties that the nested and de-nested forms lack:

* below the threshold (:math:`\Sigma = -1` there) ``P`` cancels exactly, so
  singular values under :math:`\tau` come out as :math:`s` whatever the
  accuracy of ``P``;
* an error :math:`\delta` in the sign of a direction costs
  :math:`|s - \tau|\,\delta / 2`: near the threshold the output is insensitive to
  the ill-conditioned sign decision (``min`` is 1-Lipschitz), and far above it
  the sign has converged to round-off. The sign is taken of the m x m matrix
  :math:`H - \tau I`, never of the Gram matrix :math:`BB^T`, whose squared
  condition number loses the singular values near :math:`\tau` in float32.

Methods (for ``m x n``, ``m <= n``):

``"polar"``
    Matrix products only: ``P`` by Polar Express, ``H`` (one ``m x n`` product),
    :math:`\Sigma` by Polar Express on the symmetric ``H - tau I`` (3 ``m x m``
    products a step, designed to resolve :math:`|s - \tau| \ge 10^{-4} s_{max}`),
    a cubic refinement of the projector :math:`\Pi = (I - \Sigma)/2` (2 ``m x m``
    products) and one more ``m x n`` product. 16-bit inputs run entirely in
    float32 (``P`` to float32's default ``tol``) and are returned in their
    dtype: ``H = BP^T`` carries ``s_max`` times the error of ``P``, and a
    bfloat16 ``P`` (errors ~1e-2) at ``s_max = 1e3 tau`` gave output norms up
    to 15 ``tau``.
``"newton"``
    The same identity with ``P`` and :math:`\Sigma` from QDWH (QR- and
    Cholesky-based Halley iterations), accurate to working precision for any
    condition number and any distance of the spectrum from :math:`\tau`, as
    long as :math:`\tau` is above the round-off of ``B``: both matrix methods
    refuse a known bound on ``s_max / tau`` beyond ``1 / eps`` of the dtype
    (8.4e6 in float32), where ``"auto"`` takes the SVD.
``"svd"``
    Exact reference through the thin SVD (16-bit inputs in float32).
``"eigh"``
    The eigendecomposition :math:`BB^T = W\,\mathrm{diag}(s^2)\,W^T` of the
    Gram matrix formed in float64 (LAPACK's symmetric eigensolver), then
    :math:`W\,\mathrm{diag}(\min(1, \tau/s))\,W^T B` in float64, rounded
    once: float32 and 16-bit inputs, hard clip, ``s_max / tau`` up to
    ``EIGH_MAX_RATIO`` (see :func:`~spectral_ops.kernels.gram_eigh_map`). Not for
    float64 inputs.
``"auto"``
    See :func:`clip_plan`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import array_api_compat

from . import _backbone as bb
from .kernels import gram_eigh_map, mT, polar_factor, svd_map, tight_start
from .plans import ClipPlan
from .routing import CLIP_METHODS, check_clip_ratio, clip_method, plan_clip

__all__ = ["clip", "clip_plan", "ClipPlan", "CLIP_METHODS"]


def clip_plan(B, tau=1.0, /, *, method: str = "auto", steps: int | None = None,
              floor: float = 1e-3, tol: float | None = None, eps: float | None = None,
              ratio: float | None = None, compute_dtype=None) -> ClipPlan:
    """What :func:`clip` would run on ``B``, without running it.

    ``method="auto"`` resolves as :func:`~spectral_ops.polar_plan` does, with
    ``"polar"`` in place of ``"polar_express"`` and ``"newton"`` in place of
    ``"qdwh"``: ``"svd"`` on CPUs where the SVD measured faster (see
    docs/polar.md, "auto") or where ``tol`` is below what matrix iterations
    reach (``tol < 10 eps``), ``"newton"`` for such ``tol`` on accelerators,
    else ``"polar"``; except that on CPUs the hard clip of a float32 or 16-bit
    input takes ``"eigh"`` wherever the library computes in float64 and the
    ratio bound is at most ``EIGH_MAX_RATIO`` (faster than the SVD and than
    ``"polar"`` there, measured; docs/clip.md). Where the designs follow a bound read from ``B`` (see
    :func:`clip`, ``ratio``), this computes the two products it is read from.
    """
    xp = bb.validate_array(B, "B")
    _check_tau(xp, tau, B)
    dtype = bb.resolve_dtype(xp, compute_dtype, B.dtype)
    # the input as clip prepares it, only where the plan reads it
    return _plan(xp, B, dtype, lambda: bb.prepare(B, compute_dtype=compute_dtype).x, tau,
                 method, steps, floor, tol, eps, ratio)[0]


def _plan(xp, B, dtype, prepared, tau, method, steps, floor, tol, eps, given=None):
    """``(plan, scaled)``: the plan of ``clip`` in the compute ``dtype``, and the
    scaled input it was designed for (see :func:`_scale`) where that was
    computed, else None. ``prepared()``: ``B`` as :func:`~spectral_ops._backbone.prepare`
    returns it (compute dtype, wide).

    Where ``B`` can be read on the host (see :func:`_ratio_bound`) and the hard
    clip takes ``"polar"``, the designs follow the polar factor's tight start
    rather than ``||B||_F``: a bound on ``s_max / tau`` within ``m^(1/8)``
    instead of ``sqrt(rank)``, read off the two products ``P``'s first step
    needs anyway (they are handed to it, so nothing runs twice). ``given``: the
    caller's bound (``ratio``), which replaces both reads.
    """
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, numbers.Real) or not (
                math.isfinite(given) and given > 0):
            raise ValueError(
                f"ratio must be None (read from B where that is free) or a positive finite "
                f"bound on s_max / tau over the batch, such as ||B||_F / tau; got {given!r}.")
        check_clip_ratio(xp, dtype, method, float(given))
        return plan_clip(xp, B, dtype, method, steps, floor, tol, eps, float(given)), None
    ratio = _ratio_bound(xp, B, tau)
    check_clip_ratio(xp, dtype, method, ratio)  # before the tight bound's logarithms
    if ratio is None or eps is not None or min(B.shape[-2:]) == 0 or clip_method(
            xp, B, dtype, method, tol, ratio, floor) != "polar":
        return plan_clip(xp, B, dtype, method, steps, floor, tol, eps, ratio), None
    x = prepared()
    scaled = _scale(xp, x, _tau_array(xp, tau, x), eps=bb.dtype_eps(xp, bb.wide_dtype(xp, dtype)))
    # per matrix b / tau >= s_max / tau, in log2 (no overflow for a tiny tau); an
    # untouched matrix (zero, non-finite, or tau >= ||B||_F) counts as 1
    ones = xp.ones_like(scaled.t)
    log_b = xp.log2(xp.where(scaled.untouched, ones, scaled.bound)) - xp.log2(scaled.t)
    log_b = xp.max(log_b)
    log_b = float(log_b.detach() if array_api_compat.is_torch_array(log_b) else log_b)
    tight = 2.0 ** min(log_b, 1000.0) if math.isfinite(log_b) else ratio
    # the start is handed to P whatever its design, so nothing runs twice
    return plan_clip(xp, B, dtype, "polar", steps, floor, tol, eps, ratio, tight=tight), scaled


def _ratio_bound(xp, B, tau):
    """``max ||B||_F / tau`` over the batch where it is free to read (NumPy-backed
    and torch CPU arrays), else None. A bound on ``s_max / tau``: the designs follow
    it. JAX arrays are not read even where concrete, so that a plan made under
    ``jax.jit`` equals the plan made outside it (both assume ``1 / floor``)."""
    if array_api_compat.is_jax_array(B) or bb.is_traced(B) or bb.is_vmapped(B) or \
            bb.on_accelerator(B) or (not isinstance(tau, numbers.Real) and (
                bb.is_traced(tau) or bb.is_vmapped(tau) or bb.on_accelerator(tau))) or \
            math.prod(B.shape) == 0:
        return None
    if array_api_compat.is_torch_array(B):
        B = B.detach()  # a host read for the plan, outside autograd
    finite = xp.all(xp.isfinite(B), axis=(-2, -1), keepdims=True)
    _, norm_s, two_e = bb.frobenius_scale(xp, xp.where(finite, B, xp.zeros_like(B)))
    # in float64 (host arrays): a tau below the input dtype's range stays positive
    log_fro = xp.astype(xp.log2(xp.where(norm_s > 0, norm_s, xp.ones_like(norm_s)))
                        + xp.log2(two_e), xp.float64)
    # a zero (or non-finite, zeroed) matrix has nothing to clip: it bounds nothing
    log_fro = xp.where(norm_s > 0, log_fro, xp.full_like(log_fro, -math.inf))
    if isinstance(tau, numbers.Real):
        log_ratio = float(xp.max(log_fro)) - math.log2(float(tau))
    else:
        t = xp.reshape(xp.astype(tau, xp.float64), tuple(tau.shape) + (1, 1))
        log_ratio = float(xp.max(log_fro - xp.log2(t)))
    if log_ratio == -math.inf:  # every matrix is zero
        return 1.0
    return 2.0 ** min(log_ratio, 1000.0) if math.isfinite(log_ratio) else None


def _check_tau(xp, tau, B, check_values=False):
    """Validate ``tau``: a positive real scalar, or an array broadcastable to the batch.

    The entries of an array ``tau`` are checked where that is free (host
    arrays); on an accelerator or under ``jax.jit`` only with ``check_values``
    (``check_finite=True``: one synchronisation, or a checkify check under
    jit). Unchecked invalid entries make their matrix's result NaN.
    """
    batch = tuple(B.shape[:-2])
    if isinstance(tau, bool):
        raise TypeError("tau must be a positive real number or array; got a bool.")
    if isinstance(tau, numbers.Real):
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(
                f"tau must be positive and finite (the spectral-norm radius); got {tau!r}.")
        return
    if not array_api_compat.is_array_api_obj(tau):
        raise TypeError(
            f"tau must be a positive real number or an array broadcastable to the batch "
            f"shape {batch}; got {type(tau).__name__}.")
    if array_api_compat.array_namespace(tau) is not xp:
        raise TypeError(
            f"tau is a {type(tau).__module__.split('.')[0]} array but B is a "
            f"{type(B).__module__.split('.')[0]} array; pass tau as a Python float or as an "
            f"array of B's library (on B's device).")
    if not xp.isdtype(tau.dtype, ("real floating", "integral")):
        raise TypeError(f"tau must have a real dtype; got {bb.dtype_name(xp, tau.dtype)}.")
    tshape = tuple(tau.shape)
    if len(tshape) > len(batch) or any(
            t not in (1, b) for t, b in zip(tshape[::-1], batch[::-1])):
        raise ValueError(
            f"tau of shape {tshape} does not broadcast to the batch shape {batch} of B "
            f"{tuple(B.shape)}; give one value per matrix (shape {batch}) or a scalar.")
    if (bb.is_traced(tau) or bb.on_accelerator(tau)) and not check_values:
        return  # reading device values back would stall every call; see check_finite
    bb.require(xp, (tau > 0) & xp.isfinite(tau),
               "tau must be positive and finite in every entry (the spectral-norm radius).")


def clip(B, tau, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
         tol: float | None = None, eps: float | None = None, ratio: float | None = None,
         compute_dtype=None, check_finite: bool = False):
    r"""Clip the singular values of ``B`` at ``tau``: :math:`U\,\min(s, \tau)\,V^T`.

    The Frobenius projection of ``B`` onto :math:`\{X : \|X\|_2 \le \tau\}`
    (MuCon's clipped-Muon direction).

    Parameters
    ----------
    B : array, shape (..., m, n)
        Real floating array of any array-API library. Never modified.
    tau : float or array
        Positive radius: a scalar, or an array of shape broadcastable to the
        batch shape ``B.shape[:-2]`` (one radius per matrix). Entries of an
        array on an accelerator are checked for positivity only with
        ``check_finite=True`` (that check synchronises with the device).
    method : {"auto", "polar", "newton", "svd", "eigh"}
        See the module docstring and :func:`clip_plan`.
    steps : int, optional
        Iterations of each inner iteration (polar factor and sign). Default: the
        fewest that meet ``tol`` (``"polar"``) or working precision (``"newton"``).
    floor : float
        Relative floor, in (0, 1), for the designs where no bound on
        ``s_max / tau`` is known (see ``ratio``): they assume
        ``s_max / tau <= 1 / floor``. Singular values above both ``tau`` and
        ``floor * s_max`` are cut to within ``tol`` of ``tau``; those between
        ``tau`` and ``floor * s_max`` (only when ``tau < floor * s_max``) come
        out in :math:`[0, \tau]`. Where a bound is known (read or given), the
        hard clip's designs follow it and ``floor`` has no effect.
    tol : float, optional
        Target relative error per singular value in exact arithmetic. Default
        by compute dtype: 1e-10 (float64), 1e-4 (float32), 1e-2 (float16),
        2e-2 (bfloat16).
    eps : float, optional
        Smoothing width as a fraction of ``tau``. ``None`` (default): the hard
        clip. Otherwise the smooth clip
        :math:`f(s) = (s + \tau - \sqrt{(s - \tau)^2 + (\epsilon\tau)^2})/2`,
        which satisfies :math:`\min(s, \tau) - \epsilon\tau/2 \le f(s) \le \min(s, \tau)`
        (equality at :math:`|s - \tau| \to \infty`, largest gap :math:`\epsilon\tau/2`
        at :math:`s = \tau`), so the output's spectral norm stays at most
        ``tau``. It is applied on the row space of ``B``: exactly zero singular
        values stay zero, while :math:`f(0^+) = -(\sqrt{1 + \epsilon^2} - 1)\tau/2
        \approx -\epsilon^2\tau/4`. With ``"polar"`` it turns the sign at the
        threshold into the well-conditioned polar factor of
        :math:`[H - \tau I,\ \epsilon\tau I]`, and singular values below
        ``floor * s_max`` may be off by up to :math:`\epsilon^2\tau/4` more. Off by
        default: the hard clip's error near ``tau`` is already bounded by
        :math:`|s - \tau|/2` (see Notes), so smoothing buys no accuracy.
    ratio : float, optional
        An upper bound on ``s_max / tau`` (the largest over the batch) that the
        caller guarantees, for example ``||B||_F / tau`` where ``tau`` is set
        relative to ``||B||_F``. The iterations of ``"polar"`` are designed for
        it (fewer steps for smaller ratios) and nothing is read from ``B``, so
        the plan is the same for every batch and needs no synchronisation. A
        bound below the true ratio costs accuracy. Default: read from ``B``
        where that is free (host arrays, outside tracing: the polar factor's
        tight start, see docs/clip.md), else ``1 / floor``.
    compute_dtype : dtype or str, optional
        Dtype to iterate in. Default: ``B``'s dtype.
    check_finite : bool
        Raise ``ValueError`` if ``B`` holds NaN or inf, or an accelerator-resident
        ``tau`` holds a non-positive or non-finite entry (one host sync).

    Returns
    -------
    array, shape (..., m, n)
        Same library, device and dtype as ``B``.

    Notes
    -----
    Error of ``"polar"``: with :math:`\pi` the computed projector on a singular
    direction (:math:`\pi^* = 1` below :math:`\tau`, 0 above) and
    :math:`\delta_P` the relative error of the polar factor there, the output
    singular value is
    :math:`\min(s, \tau) + (\pi - \pi^*)(s - \tau) + (1 - \pi)\,\tau\,\delta_P`.
    :math:`|\delta_P| \le` ``tol`` above ``floor * s_max``; the sign is designed
    to :math:`|\pi - \pi^*| \le 10^{-4}` (before the cubic refinement, which
    squares it) wherever :math:`|s - \tau| \ge 10^{-4} s_{max}`, and
    :math:`|\pi - \pi^*| \le 1` closer to :math:`\tau`, where the factor
    :math:`|s - \tau|` keeps the error small. Since the sign is taken of
    :math:`s\,p(s) - \tau`, values within :math:`\tau|\delta_P|` of
    :math:`\tau` may land on either side (an error of at most
    :math:`\tau|\delta_P|`). Far below :math:`\tau` (:math:`\pi = 1`),
    ``P`` cancels exactly. In float32, round-off adds about
    :math:`\epsilon_{32}\|B\|_F` (docs/clip.md).

    Examples
    --------
    >>> import numpy as np
    >>> from spectral_ops import clip
    >>> B = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    >>> Y = clip(B, 10.0)
    >>> bool(np.linalg.norm(Y, 2) <= 10.0 * (1 + 1e-3))
    True
    """
    prep = bb.prepare(B, compute_dtype=compute_dtype, check_finite=check_finite)
    xp = prep.xp
    _check_tau(xp, tau, B, check_values=check_finite)
    plan, scaled = _plan(xp, B, prep.dtype, lambda: prep.x, tau, method, steps, floor, tol, eps,
                         ratio)
    if prep.m == 0:
        return bb.finish(xp.zeros_like(prep.x), prep)
    t = _tau_array(xp, tau, prep.x)
    prep = bb.invalidate(prep, (t > 0) & xp.isfinite(t))  # a traced or device tau
    if plan.method == "svd":
        x = prep.x
        if plan.polish_dtype is not None and bb.has_float64(xp, x):
            x, t = xp.astype(x, xp.float64), xp.astype(t, xp.float64)
        y = svd_map(xp, x, lambda xp_, s, c: _scaled_min(xp_, s, c, t[..., 0], plan.eps))
        y = xp.astype(y, prep.x.dtype)
    elif plan.method == "eigh":
        y = _eigh_clip(xp, prep.x, t)
    else:
        y = _identity_clip(xp, prep.x, t, plan, scaled)
    return bb.finish(y, prep)


def _eigh_clip(xp, x, t):
    """``W min(1, tau / s) W^T B`` from the float64 Gram matrix ``W diag(s^2) W^T``.

    Every factor is at most 1, so nothing is amplified; the threshold itself
    moves by a relative ``eigh_ridge(n) (s_max / tau)^2 / 2`` at most (see
    ``EIGH_MAX_RATIO``). ``clip(B, tau) = c clip(B / c, tau / c)`` with ``c``
    the exact power of two that keeps ``B B^T`` in range.
    """
    xs, c = bb.power_of_two_scale(xp, xp.astype(x, xp.float64))
    ts = (xp.astype(t, xp.float64) / c)[..., 0]

    def values(xp_, lam):
        # the root of a safe value: sqrt at 0 would send an infinite derivative into autodiff
        ones = xp_.ones_like(lam)
        s = xp_.sqrt(xp_.where(lam > 0, lam, ones))
        return xp_.where((lam > 0) & (s > ts), ts / s, ones)

    return xp.astype(c * gram_eigh_map(xp, xs, values), x.dtype)


def _tau_array(xp, tau, x):
    """``tau`` as a (..., 1, 1) array in the wide dtype of ``x``, on its device.

    A radius beyond the dtype's largest value is that value: any radius at or
    above ``||B||_F`` gives ``B`` itself.
    """
    wide = bb.wide_dtype(xp, x.dtype)
    top = bb.dtype_max(xp, wide)
    # a positive radius below the dtype's range is its smallest normal value (the
    # result is zero to within it), not a zero that would make the result NaN; not
    # a subnormal, which XLA on CPUs (and torch with flush_denormal) flush to zero
    least = bb.dtype_tiny(xp, wide)
    dev = array_api_compat.device(x)
    if isinstance(tau, numbers.Real):
        return xp.asarray(min(max(float(tau), least), top), dtype=wide, device=dev)[None, None]
    t = xp.asarray(tau, device=dev)
    if xp.isdtype(t.dtype, "real floating"):
        t = xp.minimum(t, xp.asarray(top, dtype=t.dtype, device=dev)) if \
            bb.dtype_max(xp, t.dtype) > top else t
    tw = xp.astype(t, wide)
    tw = xp.where((tw == 0) & (t > 0), xp.full_like(tw, least), tw)
    return xp.reshape(tw, tuple(tw.shape) + (1, 1))


def _scaled_min(xp, s, c, t, eps):
    """``f(c s)`` for the SVD of the prescaled input (``s``; ``c`` its power of
    two): ``c f(s, t / c)`` where ``c >= 1``, ``f(c s, t)`` below, so that neither
    ``t / c`` nor ``c s`` can overflow (``f`` is homogeneous of degree 1)."""
    big = c >= 1
    one = xp.ones_like(c)
    scaled_down = c * _smooth_min(xp, s, t / xp.where(big, c, one), eps)
    scaled_up = _smooth_min(xp, xp.where(big, one, c) * s, t, eps)
    return xp.where(big, scaled_down, scaled_up)


def _smooth_min(xp, s, t, eps):
    if eps is None:
        return xp.minimum(s, t)
    return 0.5 * (s + t - xp.hypot(s - t, eps * t))  # hypot: no overflow in the squares


class _Scaled(NamedTuple):
    """The input of the identity route, scaled (see :func:`_scale`)."""

    x: Any  # x / c, in the wide dtype
    t: Any  # tau / c (1 where untouched)
    c: Any  # the power of two, (..., 1, 1)
    untouched: Any  # tau >= ||B||_F: the result is B itself
    start: Any = None  # the tight start of x, where computed
    bound: Any = None  # its scale, >= s_max(x)


def _scale(xp, x, t, eps=None):
    """``x`` in the wide dtype over ``c``, the exact power of two that brings max|x|
    into [1, 2) (or just below 1), and ``tau`` over ``c`` alike:
    ``clip(B, tau) = c clip(B / c, tau / c)``,
    with no overflow or underflow at any scale. With ``eps`` (the wide dtype's),
    also the tight start of ``x / c`` and its scale."""
    wide = bb.wide_dtype(xp, x.dtype)
    x, c = bb.power_of_two_scale(xp, x if wide == x.dtype else xp.astype(x, wide))
    cap = xp.where(c < 1, c, xp.ones_like(c)) * bb.dtype_max(xp, t.dtype)
    t = xp.minimum(t, cap) / c  # no overflow: a capped tau is above ||B||_F anyway
    # where tau >= ||B||_F >= s_max nothing is clipped: B itself, exactly (the
    # identity below would carry an absolute error of eps * tau)
    untouched = t >= xp.sqrt(xp.sum(x * x, axis=(-2, -1), keepdims=True))
    t = xp.where(untouched, xp.ones_like(t), t)  # keeps a huge tau out of the arithmetic
    if eps is None:
        return _Scaled(x, t, c, untouched)
    *first, bound = tight_start(xp, x, eps, bound=True)
    return _Scaled(x, t, c, untouched, tuple(first), bound)


def _identity_clip(xp, x, t, plan, scaled=None):
    r"""``tau P + Pi (B - tau P)`` (see the module docstring), in float32 or better.

    Everything runs in the wide dtype: ``H = B P^T`` has errors of size
    ``s_max * (error of P)``, so at ``s_max = 1e3 tau`` a bfloat16 ``P`` (errors
    ~1e-2) would put errors of ``10 tau`` into ``H`` (measured: output norms up to
    ``15 tau``). ``scaled``: :func:`_scale` of ``x`` and ``t``, where the plan
    was made from it.
    """
    s = _scale(xp, x, t) if scaled is None else scaled
    y = s.c * xp.where(s.untouched, s.x, _clip_identity(xp, s.x, s.t, plan, s.start))
    return y if y.dtype == x.dtype else xp.astype(y, x.dtype)


def _clip_identity(xp, x, t, plan, start=None):
    m = x.shape[-2]
    pw = polar_factor(xp, x, plan.polar, start)
    out_dtype = x.dtype
    if plan.sign_dtype is not None and bb.has_float64(xp, x):
        # near tau, float32 round-off in H - tau I is eps * s_max: see ClipPlan.sign_dtype
        x, pw, t = (xp.astype(a, xp.float64) for a in (x, pw, t))
    h = x @ mT(xp, pw)
    eye = bb.eye_like(xp, h, m)
    shifted = 0.5 * (h + mT(xp, h)) - t * eye
    if plan.eps is not None:  # the smooth clip's sign: of [H - tau I, eps tau I]
        shifted = xp.concat([shifted, xp.broadcast_to(plan.eps * t * eye, shifted.shape)],
                            axis=-1)
    sign = polar_factor(xp, shifted, plan.sign)
    if plan.polish_dtype is not None and bb.has_float64(xp, x):
        # the rest carries round-off eps * s_max: in float64 (see ClipPlan.polish_dtype)
        x, pw, t, sign, eye = (xp.astype(a, xp.float64) for a in (x, pw, t, sign, eye))
    return xp.astype(_assemble(xp, x, pw, t, sign, eye, plan.eps), out_dtype)


def _assemble(xp, x, pw, t, sign, eye, eps):
    """The clip from ``P``, ``tau`` and the sign (of ``[H - tau I, eps tau I]`` with ``eps``)."""
    m = x.shape[-2]
    if eps is None:
        # projector onto the directions below tau, Pi = (I - Sigma) / 2, refined by
        # one cubic step Pi <- Pi^2 (3 I - 2 Pi) (Newton-Schulz on the sign, written
        # in Pi): an error d of the sign becomes 3 d^2 / 4, and round-off is now
        # relative to Pi, which is ~0 on the directions far above tau, where the
        # output would otherwise carry s * d
        proj = 0.5 * (eye - sign)
        proj = 0.5 * (proj + mT(xp, proj))
        proj2 = proj @ proj
        proj = 3.0 * proj2 - 2.0 * (proj2 @ proj)
        return t * pw + proj @ (x - t * pw)
    # the sign is the polar factor of the stack [H - tau I, eps tau I] (wide):
    # [Q1, Q2] with Q1 = M (M^2 + e^2)^(-1/2) and Q2 = e (M^2 + e^2)^(-1/2); then
    # 2 clip = B + tau P - sqrt(M^2 + e^2 tau^2) P with sqrt(...) = M Q1 + e tau Q2,
    # and M P = B - tau P on the row space
    q1, q2 = sign[..., :m], sign[..., m:]
    return 0.5 * (x + t * pw - q1 @ (x - t * pw) - (eps * t) * (q2 @ pw))
