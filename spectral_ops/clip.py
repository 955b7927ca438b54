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
    condition number and any distance of the spectrum from :math:`\tau`.
``"svd"``
    Exact reference through the thin SVD (16-bit inputs in float32).
``"auto"``
    See :func:`clip_plan`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from . import _backbone as bb
from .polar import (_check_method_steps_tol, _count, _cpu_prefers_svd, _design_lower, _is_real, _mT,
                    _numpy_backed, _polar_express, _polar_iteration, _qdwh, _qdwh_fixed,
                    _qdwh_schedule, _run_polar_iteration)
from .coefficients import polar_express_coefficients, polar_express_schedule

__all__ = ["clip", "clip_plan", "ClipPlan", "CLIP_METHODS"]

CLIP_METHODS = ("auto", "polar", "newton", "svd")

#: Default accuracy target per compute dtype: relative error of each singular
#: value above the polar floor.
_DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}

#: Design of the sign iteration of ``"polar"``: it resolves ``|s - tau|`` down to
#: ``lower * s_max`` and reaches ``tol`` above it (exact arithmetic). Chosen from
#: the measurements in docs/clip.md; 16-bit inputs use the float32 row.
_SIGN_DESIGN = {"float64": (1e-8, 1e-12), "float32": (1e-4, 1e-4)}


@dataclass(frozen=True)
class ClipPlan:
    """What :func:`clip` will do for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved).
    polar_steps : int
        Iterations of the polar factor (0 for ``"svd"``).
    sign_steps : int
        Iterations of the sign of ``H - tau I`` (0 for ``"svd"``).
    matmuls : int
        Matrix products per matrix (QR, solves and SVDs not included).
    flops : float
        Flops of those products per matrix.
    polar_iteration : str or None
        For ``"polar"``: the iteration of the polar factor, ``"polar_express"``
        or, where the aspect ratio pays (as in :func:`~spectral_ops.polar_plan`),
        ``"gram"``.
    """

    method: str
    polar_steps: int
    sign_steps: int
    matmuls: int
    flops: float
    polar_iteration: str | None = None


def clip_plan(B, tau=1.0, /, *, method: str = "auto", steps: int | None = None,
              floor: float = 1e-3, tol: float | None = None, eps: float | None = None,
              compute_dtype=None) -> ClipPlan:
    """What :func:`clip` would run on ``B``, without running it.

    ``method="auto"`` resolves as :func:`~spectral_ops.polar_plan` does, with
    ``"polar"`` in place of ``"polar_express"`` and ``"newton"`` in place of
    ``"qdwh"``: ``"svd"`` on CPUs where the SVD measured faster (see
    docs/polar.md, "auto") or where ``tol`` is below what matrix iterations
    reach (``tol < 10 eps``), ``"newton"`` for such ``tol`` on accelerators,
    else ``"polar"``.
    """
    xp = bb._validate_array(B, "B")
    dtype = bb.resolve_dtype(xp, compute_dtype, B.dtype)
    _check_tau(xp, tau, B)
    return _plan(xp, B, dtype, method, steps, floor, tol, eps)


def _plan(xp, B, dtype, method, steps, floor, tol, eps) -> ClipPlan:
    _check_method_steps_tol(CLIP_METHODS, method, steps, tol)
    if not (_is_real(floor) and 0 < floor < 1):
        raise ValueError(
            f"floor must be a number in (0, 1): singular values above tau and above "
            f"floor * s_max are cut to tau accurately; got {floor!r}.")
    if eps is not None and not (_is_real(eps) and 0 < eps < 1):
        raise ValueError(
            f"eps must be None (no smoothing) or a number in (0, 1), the smoothing width "
            f"as a fraction of tau; got {eps!r}.")
    m, n = sorted(B.shape[-2:])
    name = bb._dtype_name(xp, dtype)
    wide_name = "float32" if name in ("float16", "bfloat16") else name
    tol = _DEFAULT_TOL[name] if tol is None else float(tol)
    if method == "auto":
        if m == 0:
            method = "svd"
        elif tol < 10 * bb.dtype_eps(xp, bb.wide_dtype(xp, dtype)):  # 16-bit runs in float32
            method = "newton" if bb.on_accelerator(B) else "svd"
        elif not bb.on_accelerator(B) and _cpu_clip_prefers_svd(xp, dtype, B.shape):
            method = "svd"
        else:
            method = "polar"
    mmn, mmm = 2.0 * m * m * n, 2.0 * m**3
    if method == "polar":
        lower = _design_lower(floor, max(m, 1), bb.dtype_eps(xp, bb.wide_dtype(xp, dtype)))
        # P runs in the wide dtype, to that dtype's default accuracy at least
        ptol = min(tol, _DEFAULT_TOL[wide_name])
        ps = len(polar_express_schedule(lower, ptol)[0]) if steps is None else int(steps)
        ss = len(_sign_schedule(wide_name, m, eps)) if steps is None else int(steps)
        sign_cols = 2 * m if eps is not None else m
        sign_flops = ss * (2 * 2.0 * m * m * sign_cols + mmm)
        # H and the final product; then the projector refinement (2 m x m) or, with
        # eps, the second block's product with P (m x n)
        k_end, f_end = (4, 2 * mmn + 2 * mmm) if eps is None else (3, 3 * mmn)
        wide = bb.wide_dtype(xp, dtype)
        iteration = _polar_iteration(xp, wide, m, n, ps, bb.on_accelerator(B))
        kp, fp = _count(iteration, m, n, ps)
        return ClipPlan("polar", ps, ss, kp + 3 * ss + k_end, fp + sign_flops + f_end,
                        iteration)
    if method == "newton":
        weps = bb.dtype_eps(xp, bb.wide_dtype(xp, dtype))
        k = len(_qdwh_schedule(weps, weps)) if steps is None else int(steps)
        return ClipPlan("newton", k, k, 2 * k + 2, k * (mmn + mmm) + 2 * mmn)
    return ClipPlan("svd", 0, 0, 0, 0.0)


def _cpu_clip_prefers_svd(xp, dtype, shape) -> bool:
    """Measured on a 2-core x86-64 CPU (docs/clip.md): the matrix route wins only
    with NumPy float32 at aspect ratio 4 or more (1.1x-2.2x faster); square inputs
    and torch favour the SVD (0.3x-0.8x)."""
    m, n = sorted(shape[-2:])
    if _cpu_prefers_svd(xp, dtype, shape):
        return True
    return not (_numpy_backed(xp) and n >= 4 * m and m >= 128)


def _sign_schedule(wide_name: str, m: int, eps: float | None):
    """Polar Express coefficients of the sign iteration (see ``_SIGN_DESIGN``).

    With ``eps`` the stacked matrix has no singular value below ``eps * tau``, so
    the same design resolves it wherever ``eps * tau >= lower * s_max``.
    """
    lower, tol = _SIGN_DESIGN[wide_name]
    design = _design_lower(lower, max(m, 1), 0.0)
    coefs, _ = polar_express_schedule(design, tol)
    return coefs


def _check_tau(xp, tau, B, check_values=False):
    """Validate ``tau``: a positive real scalar, or an array broadcastable to the batch.

    The entries of an array ``tau`` are checked on the host; on an accelerator only
    with ``check_values`` (``check_finite=True``), which costs a synchronisation.
    """
    batch = tuple(B.shape[:-2])
    if isinstance(tau, bool):
        raise TypeError("tau must be a positive real number or array; got a bool.")
    if isinstance(tau, numbers.Real):
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(
                f"tau must be positive and finite (the spectral-norm radius); got {tau!r}.")
        return
    try:
        tshape = tuple(tau.shape)
    except AttributeError:
        raise TypeError(
            f"tau must be a positive real number or an array broadcastable to the batch "
            f"shape {batch}; got {type(tau).__name__}.") from None
    try:
        ok = xp.isdtype(tau.dtype, ("real floating", "integral"))
    except Exception:
        ok = False
    if not ok:
        raise TypeError(f"tau must have a real dtype; got {tau.dtype}.")
    if len(tshape) > len(batch) or any(
            t not in (1, b) for t, b in zip(tshape[::-1], batch[::-1])):
        raise ValueError(
            f"tau of shape {tshape} does not broadcast to the batch shape {batch} of B "
            f"{tuple(B.shape)}; give one value per matrix (shape {batch}) or a scalar.")
    if bb.on_accelerator(tau) and not check_values:
        return  # reading device values back would stall every call; see check_finite
    try:
        finite = xp.all(xp.isfinite(tau)) if xp.isdtype(tau.dtype, "real floating") else True
        positive = bool(xp.all(tau > 0) & finite)
    except Exception:  # a traced value (jax.jit): cannot be inspected on the host
        return
    if not positive:
        raise ValueError("tau must be positive and finite in every entry (the spectral-norm radius).")


def _tau_array(xp, tau, x, wide):
    """``tau`` as a (..., 1, 1) array in the wide dtype on ``x``'s device."""
    dev = bb.array_api_compat.device(x)
    if isinstance(tau, numbers.Real):
        return xp.asarray(float(tau), dtype=wide, device=dev)
    t = xp.astype(xp.asarray(tau, device=dev), wide)
    return xp.reshape(t, tuple(t.shape) + (1, 1))


def clip(B, tau, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
         tol: float | None = None, eps: float | None = None, compute_dtype=None,
         check_finite: bool = False):
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
    method : {"auto", "polar", "newton", "svd"}
        See the module docstring and :func:`clip_plan`.
    steps : int, optional
        Iterations of each inner iteration (polar factor and sign). Default: the
        fewest that meet ``tol`` (``"polar"``) or working precision (``"newton"``).
    floor : float
        Relative floor of the polar factor, in (0, 1): singular values above
        both ``tau`` and ``floor * s_max`` are cut to within ``tol`` of ``tau``;
        those between ``tau`` and ``floor * s_max`` (only when
        ``tau < floor * s_max``) come out in :math:`[0, \tau]`.
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
    plan = _plan(xp, B, prep.dtype, method, steps, floor, tol, eps)
    x = prep.x
    if prep.m == 0:
        return bb.finish(xp.zeros_like(x), prep)
    wide = bb.wide_dtype(xp, x.dtype)
    t = _tau_array(xp, tau, x, wide)
    if plan.method == "svd":
        y = _svd_clip(xp, x, t, eps)
    else:
        y = _identity_clip(xp, x, t, plan, eps, floor, tol)
    return bb.finish(y, prep)


def _svd_clip(xp, x, t, eps):
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    u, s, vh = xp.linalg.svd(xp.astype(x, wide), full_matrices=False)
    ts = t[..., 0] if t.ndim >= 2 else t
    fs = _smooth_min(xp, s, ts, eps)
    return xp.astype((u * fs[..., None, :]) @ vh, dtype)


def _smooth_min(xp, s, t, eps):
    if eps is None:
        return xp.minimum(s, t)
    return 0.5 * (s + t - xp.sqrt((s - t) ** 2 + (eps * t) ** 2))


def _identity_clip(xp, x, t, plan, eps, floor, tol):
    r"""``(B + tau P - Sigma (B - tau P)) / 2`` (see the module docstring)."""
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    m = x.shape[-2]
    name = bb._dtype_name(xp, dtype)
    weps = bb.dtype_eps(xp, wide)
    # the polar factor, in the compute dtype
    # Everything runs in the wide dtype: H = B P^T has errors of size
    # s_max * (error of P), so at s_max = 1e3 tau a bfloat16 P (errors ~1e-2)
    # would put errors of 10 tau into H (measured: output norms up to 15 tau)
    xw = x if wide == dtype else xp.astype(x, wide)
    if plan.method == "polar":
        lower = _design_lower(floor, m, weps)
        coefs = polar_express_coefficients(plan.polar_steps, lower)
        pw = _run_polar_iteration(xp, xw, plan.polar_iteration, coefs, weps)
    else:
        pw = _qdwh(xp, xw, _qdwh_fixed(weps, plan.polar_steps))
    h = xw @ _mT(xp, pw)
    eye = bb.eye_like(xp, h, m)
    shifted = 0.5 * (h + _mT(xp, h)) - t * eye
    wide_name = "float32" if name in ("float16", "bfloat16") else name
    if eps is None:
        sign, extra = _sign(xp, shifted, plan, wide_name, m), None
    else:
        # polar factor of the stack [H - tau I; eps tau I] (oriented wide):
        # [Q1, Q2] with Q1 = M (M^2 + e^2)^(-1/2) and Q2 = e (M^2 + e^2)^(-1/2)
        stacked = xp.concat([shifted, xp.broadcast_to(eps * t * eye, shifted.shape)], axis=-1)
        q = _sign(xp, stacked, plan, wide_name, m)
        sign, extra = q[..., :m], q[..., m:]
    if extra is None:
        # projector onto the directions below tau, Pi = (I - Sigma) / 2, refined by
        # one cubic step Pi <- Pi^2 (3 I - 2 Pi) (Newton-Schulz on the sign, written
        # in Pi): an error d of the sign becomes 3 d^2 / 4, and round-off is now
        # relative to Pi, which is ~0 on the directions far above tau, where the
        # output would otherwise carry s * d
        proj = 0.5 * (eye - sign)
        proj = 0.5 * (proj + _mT(xp, proj))
        proj2 = proj @ proj
        proj = 3.0 * proj2 - 2.0 * (proj2 @ proj)
        # clip = tau P + Pi (B - tau P)
        y = t * pw + proj @ (xw - t * pw)
    else:
        # 2 clip = B + tau P - sqrt(M^2 + e^2 tau^2) P with sqrt(...) = M Q1 + e tau Q2,
        # and M P = B - tau P on the row space
        y = 0.5 * (xw + t * pw - sign @ (xw - t * pw) - (eps * t) * (extra @ pw))
    return xp.astype(y, dtype)


def _sign(xp, mat, plan, wide_name, m):
    """The polar factor of ``mat`` (the sign of a symmetric one), in ``mat``'s dtype."""
    if plan.method == "newton":
        weps = bb.dtype_eps(xp, mat.dtype)
        return _qdwh(xp, mat, _qdwh_fixed(weps, plan.sign_steps))
    lower, _ = _SIGN_DESIGN[wide_name]
    design = _design_lower(lower, m, 0.0)
    coefs = polar_express_coefficients(plan.sign_steps, design)
    return _polar_express(xp, mat, coefs, bb.dtype_eps(xp, mat.dtype))
