r"""Fractional spectral powers :math:`\operatorname{power}(B, p) = U\,\mathrm{diag}(s^p)\,V^T` (Muon^p).

``p = 0`` is the polar factor (Muon), ``p = 1`` is ``B`` itself (gradient
descent); ``p`` in (0, 1) interpolates. :math:`U S^p V^T` is the steepest-descent
direction under the Schatten-:math:`q` norm with :math:`q = 1 + 1/p`. DynMuon's
schedules reach mildly negative ``p``, where :math:`s^p` is unbounded as
:math:`s \to 0` and a regularised map is used (see :func:`power`).

Methods (``m x n`` with ``m <= n``):

``"newton"``
    Matrix products only, two coupled (bivariate) recurrences:

    * ``p`` in (0, 1), no ridge: with :math:`P = UV^T` from Polar Express and
      :math:`H = BP^T = U S U^T` (m x m, condition number :math:`\kappa`, not
      the :math:`\kappa^2` of the Gram matrix),
      :math:`U S^p V^T = H^p P` and, for :math:`p = a/b`,
      :math:`H^p = c^p\,(H/c)\,Y^{b-a}` with :math:`Y = (H/c)^{-1/b}` from the
      coupled Newton iteration for the inverse root (Guo & Higham 2006):
      :math:`W = ((r+1)I - M)/r`, :math:`Y \leftarrow YW`,
      :math:`M \leftarrow W^r M`, from :math:`Y = I`, :math:`M = H/c`, where
      :math:`c = \|H^2\|_F^{1/2} \ge s_{max}` scales the start into (0, 1].
    * with a ridge (always for ``p < 0``): the Gram form
      :math:`s\,(s^2 + \epsilon^2\|B\|_F^2)^{(p-1)/2}`, i.e.
      :math:`(A + \epsilon^2 I)^{(p-1)/2} B / \|B\|_F^{1-p}` with
      :math:`A = BB^T/\|B\|_F^2`, through the same coupled Newton iteration with
      :math:`r = 2b`.

    The step counts come from the scalar recurrence on the design interval
    (host-side, like Polar Express). 16-bit inputs run in float32.
``"svd"``
    Exact reference through the thin SVD.
``"auto"``
    On CPUs ``"svd"`` except for NumPy float32 inputs of aspect ratio 4 or more
    with short side at least 128 (the crossover measured for clip, which costs
    about as many products; see docs/power.md); ``"newton"`` on accelerators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from . import _backbone as bb
from . import _fastpaths as fp
from .coefficients import polar_express_coefficients, polar_express_schedule
from .clip import _cpu_clip_prefers_svd
from .polar import (default_tol, _count, _design_lower, _is_real, _mT, _polar_iteration,
                    _run_polar_iteration, polar)

__all__ = ["power", "power_plan", "PowerPlan", "POWER_METHODS", "rational_exponent"]

POWER_METHODS = ("auto", "newton", "svd")

#: Default relative floor per compute dtype: singular values at or above
#: ``floor * s_max`` get the accuracy target (float64 needs 1e-4 s_max).
_DEFAULT_FLOOR = {"float64": 1e-5, "float32": 1e-3, "float16": 1e-2, "bfloat16": 1e-2}
#: Target of the iterations (exact arithmetic) per wide dtype.
_TOL = {"float64": 1e-13, "float32": 1e-5}
#: Default ridge for p < 0 (relative to ||B||_F): below eps ||B||_F the map is tamed.
_DEFAULT_NEG_EPS = 1e-3


@dataclass(frozen=True)
class PowerPlan:
    """What :func:`power` will do for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved), or ``"polar"`` / ``"identity"``
        for ``p = 0`` / ``p = 1``.
    p : Fraction
        The exponent used.
    route : str
        ``"polar-root"`` (``H^p P``), ``"gram-ridge"`` (ridge form), ``"svd"``,
        ``"polar"`` or ``"identity"``.
    polar_steps : int
        Polar Express steps (``"polar-root"`` only).
    newton_steps : int
        Coupled Newton steps.
    root : int
        ``r`` of the inverse ``r``-th root.
    matmuls : int
        Matrix products per matrix.
    flops : float
        Their flops per matrix.
    polar_iteration : str or None
        For the ``"polar-root"`` route: the iteration of the polar factor,
        ``"polar_express"`` or, where the aspect ratio pays (as in
        :func:`~spectral_ops.polar_plan`), ``"gram"``.
    """

    method: str
    p: Fraction
    route: str
    polar_steps: int
    newton_steps: int
    root: int
    matmuls: int
    flops: float
    polar_iteration: str | None = None


def rational_exponent(p, max_denominator: int = 16) -> Fraction:
    """``p`` as a fraction: exact for ``Fraction`` and ``int``; a float becomes the
    nearest fraction with denominator at most ``max_denominator``.

    Raises ``ValueError`` unless ``-1 <= p <= 1``.
    """
    if isinstance(p, bool) or not isinstance(p, (Fraction, int, float)) and not _is_real(p):
        raise TypeError(f"p must be a real number or fractions.Fraction; got {type(p).__name__}.")
    if not isinstance(p, Fraction):
        if not math.isfinite(float(p)):
            raise ValueError(f"p must be finite, in [-1, 1]; got {p!r}.")
        p = Fraction(float(p)).limit_denominator(max_denominator)
    if not -1 <= p <= 1:
        raise ValueError(
            f"p must lie in [-1, 1] (0: polar, 1: identity, < 0: DynMuon's regularised "
            f"negative powers); got {p}.")
    return p


def _matpow(xp, w, k: int, eye):
    """``w ** k`` for an integer ``k >= 0`` by repeated squaring."""
    out, base = None, w
    while k:
        if k & 1:
            out = base if out is None else out @ base
        k >>= 1
        if k:
            base = base @ base
    return eye if out is None else out


def _matpow_count(k: int) -> int:
    """Products used by :func:`_matpow` for ``k``."""
    if k <= 1:
        return 0
    return (k.bit_length() - 1) + (bin(k).count("1") - 1)


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


def _inverse_root(xp, m0, r: int, steps: int, eye):
    """Coupled Newton for ``m0^(-1/r)`` (eigenvalues of ``m0`` in (0, 1])."""
    y, m = None, m0
    for _ in range(steps):
        w = ((r + 1.0) / r) * eye - (1.0 / r) * m
        y = w if y is None else y @ w
        m = _matpow(xp, w, r, eye) @ m
        m = 0.5 * (m + _mT(xp, m))  # symmetric in exact arithmetic
    return eye if y is None else y


def power_plan(B, p, /, *, method: str = "auto", eps: float | None = None,
               floor: float | None = None, max_denominator: int = 16,
               compute_dtype=None) -> PowerPlan:
    """What :func:`power` would run on ``B``, without running it."""
    xp = bb._validate_array(B, "B")
    dtype = bb.resolve_dtype(xp, compute_dtype, B.dtype)
    q = rational_exponent(p, max_denominator)
    return _plan(xp, B, dtype, q, method, eps, floor)


def _resolve_eps(q: Fraction, eps):
    if eps is None:
        return _DEFAULT_NEG_EPS if q < 0 else None
    if not (_is_real(eps) and 0 < eps < 1):
        raise ValueError(
            f"eps must be None or a number in (0, 1), the ridge relative to ||B||_F; got {eps!r}.")
    return float(eps)


def _plan(xp, B, dtype, q, method, eps, floor) -> PowerPlan:
    if method not in POWER_METHODS:
        raise ValueError(f"method must be one of {POWER_METHODS}; got {method!r}.")
    if floor is not None and not (_is_real(floor) and 0 < floor < 1):
        raise ValueError(f"floor must be None or a number in (0, 1); got {floor!r}.")
    eps = _resolve_eps(q, eps)
    m, n = sorted(B.shape[-2:])
    mmn, mmm = 2.0 * m * m * n, 2.0 * m**3
    if q == 1 and eps is None:
        return PowerPlan("identity", q, "identity", 0, 0, 0, 0, 0.0)
    if q == 0 and eps is None:
        return PowerPlan("polar", q, "polar", 0, 0, 0, 0, 0.0)
    if method == "auto":
        # CPU crossovers as measured for clip (docs/power.md): like clip, power costs
        # about 2-3 polar iterations, so the same rule holds
        if m == 0 or (not bb.on_accelerator(B) and _cpu_clip_prefers_svd(xp, dtype, B.shape)):
            method = "svd"
        else:
            method = "newton"
    if method == "svd":
        return PowerPlan("svd", q, "svd", 0, 0, 0, 0, 0.0)
    name = bb._dtype_name(xp, dtype)
    wide_name = "float32" if name in ("float16", "bfloat16") else name
    floor = _DEFAULT_FLOOR[name] if floor is None else float(floor)
    tol = _TOL[wide_name]
    a, b = q.numerator, q.denominator
    if eps is None:
        r = b
        weps = bb.dtype_eps(xp, bb.wide_dtype(xp, dtype))
        lower = _design_lower(floor, max(m, 1), weps)
        # H = B P^T inherits P's relative error: polar's own default tol suffices
        ps = len(polar_express_schedule(lower, default_tol(wide_name))[0])
        ns = newton_steps(floor / max(m, 1) ** 0.25, r, tol)
        # per Newton step: Y W (none in the first step), W^r, W^r M
        per = 1 + _matpow_count(r) + 1
        newton = max(per * ns - 1, 0)
        iteration = _polar_iteration(xp, bb.wide_dtype(xp, dtype), m, n, ps, bb.on_accelerator(B))
        kp, fp = _count(iteration, m, n, ps)
        k = kp + 1 + 1 + newton + _matpow_count(b - a) + 2
        f = fp + mmn + mmm + newton * mmm + (_matpow_count(b - a) + 1) * mmm + mmn
        return PowerPlan("newton", q, "polar-root", ps, ns, r, k, f, iteration)
    r = 2 * b
    ns = newton_steps(eps * eps / (1.0 + eps * eps), r, tol)
    per = 1 + _matpow_count(r) + 1
    newton = max(per * ns - 1, 0)
    k = 1 + newton + _matpow_count(b - a) + 1
    f = mmn + newton * mmm + _matpow_count(b - a) * mmm + mmn
    return PowerPlan("newton", q, "gram-ridge", 0, ns, r, k, f)


def power(B, p, /, *, method: str = "auto", eps: float | None = None, floor: float | None = None,
          max_denominator: int = 16, compute_dtype=None, check_finite: bool = False):
    r"""Fractional spectral power :math:`U\,\mathrm{diag}(s^p)\,V^T` of ``B``.

    Parameters
    ----------
    B : array, shape (..., m, n)
        Real floating array of any array-API library. Never modified.
    p : float, int or fractions.Fraction
        Exponent in [-1, 1]. ``0`` returns :func:`~spectral_ops.polar` (the
        partial polar factor), ``1`` returns a copy of ``B``. A ``Fraction`` is
        used exactly; a float is replaced by the nearest fraction with
        denominator at most ``max_denominator`` (``0.3 -> 3/10``, ``0.123 -> 1/8`` with the default
        16; ``1/3``, ``0.25``, ``0.75`` are exact). The cost grows with the
        denominator ``b`` (an inverse ``b``-th root).
    method : {"auto", "newton", "svd"}
        See the module docstring.
    eps : float, optional
        Ridge, relative to :math:`\|B\|_F`. The map becomes
        :math:`f(s) = s\,(s^2 + \epsilon^2\|B\|_F^2)^{(p-1)/2}`, which equals
        :math:`s^p (1 + \epsilon^2\|B\|_F^2/s^2)^{(p-1)/2}`: relative change
        at most :math:`\tfrac{1-p}{2}\,\epsilon^2\|B\|_F^2/s^2`, so singular
        values well above :math:`\epsilon\|B\|_F` are unaffected while small
        ones are bounded (:math:`f(s) \le s\,(\epsilon\|B\|_F)^{p-1}`; for
        ``p < 0`` the maximum of ``f`` is
        :math:`f(s^*)` at :math:`s^* = \epsilon\|B\|_F/\sqrt{-p}`). Default: none
        for ``p >= 0`` (the exact map); ``1e-3`` for ``p < 0``, where it is
        mandatory.
    floor : float, optional
        Relative floor: singular values at or above ``floor * s_max`` reach the
        accuracy target; smaller ones come out between 0 and their exact value.
        Default by dtype: 1e-5 (float64), 1e-3 (float32), 1e-2 (16-bit).
    max_denominator : int
        Largest denominator for converting a float ``p``.
    compute_dtype : dtype or str, optional
        Dtype to iterate in. Default: ``B``'s dtype (16-bit inputs run in float32).
    check_finite : bool
        Raise ``ValueError`` if ``B`` holds NaN or inf (one host sync).

    Returns
    -------
    array, shape (..., m, n)
        Same library, device and dtype as ``B``.

    Examples
    --------
    >>> import numpy as np
    >>> from fractions import Fraction
    >>> from spectral_ops import power
    >>> B = np.random.default_rng(0).standard_normal((32, 64))
    >>> Y = power(B, Fraction(1, 2))
    >>> s, t = np.linalg.svd(B, compute_uv=False), np.linalg.svd(Y, compute_uv=False)
    >>> bool(np.allclose(t, np.sqrt(s), rtol=1e-8))
    True
    """
    if not isinstance(max_denominator, int) or isinstance(max_denominator, bool) \
            or max_denominator < 1:
        raise ValueError(f"max_denominator must be a positive integer; got {max_denominator!r}.")
    q = rational_exponent(p, max_denominator)
    prep = bb.prepare(B, compute_dtype=compute_dtype, check_finite=check_finite)
    xp = prep.xp
    plan = _plan(xp, B, prep.dtype, q, method, eps, floor)
    x = prep.x
    if plan.route == "identity":
        return bb.finish(x + xp.zeros_like(x), prep)  # a new array, never the input
    if plan.route == "polar":
        return polar(B, method="auto" if method == "auto" else
                     ("svd" if method == "svd" else "polar_express"),
                     compute_dtype=compute_dtype)
    if prep.m == 0:
        return bb.finish(xp.zeros_like(x), prep)
    eps = _resolve_eps(q, eps)
    if plan.route == "svd":
        y = _svd_power(xp, x, q, eps)
    elif plan.route == "polar-root":
        y = _polar_root(xp, x, q, plan, floor)
    else:
        y = _gram_ridge(xp, x, q, plan, eps)
    return bb.finish(y, prep)


def _svd_power(xp, x, q, eps):
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    xw = x if wide == dtype else xp.astype(x, wide)
    u, s, vh = xp.linalg.svd(xw, full_matrices=False)
    pf = float(q)
    if eps is None:
        # exact zeros stay zero (s^p for p > 0; the partial convention)
        safe = xp.where(s > 0, s, xp.ones_like(s))
        fs = xp.where(s > 0, safe ** pf, xp.zeros_like(s))
    else:
        fro = xp.sqrt(xp.sum(s * s, axis=-1, keepdims=True))
        fro = xp.where(fro > 0, fro, xp.ones_like(fro))  # a zero matrix stays zero
        fs = s * (s * s + (eps * fro) ** 2) ** ((pf - 1.0) / 2.0)
    y = (u * fs[..., None, :]) @ vh
    return y if wide == dtype else xp.astype(y, dtype)


def _polar_root(xp, x, q, plan, floor):
    """``H^p P`` with ``H = B P^T`` (see the module docstring), in the wide dtype."""
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    xw = x if wide == dtype else xp.astype(x, wide)
    m = x.shape[-2]
    name = bb._dtype_name(xp, dtype)
    floor = _DEFAULT_FLOOR[name] if floor is None else float(floor)
    weps = bb.dtype_eps(xp, wide)
    lower = _design_lower(floor, m, weps)
    coefs = polar_express_coefficients(plan.polar_steps, lower)
    p = _run_polar_iteration(xp, xw, plan.polar_iteration, coefs, weps)
    h = xw @ _mT(xp, p)
    h = 0.5 * (h + _mT(xp, h))
    eye = bb.eye_like(xp, h, m)
    # c = ||H^2||_F^(1/2) >= s_max: the start H / c has its spectrum in (0, 1]
    h2 = h @ h
    c = xp.sqrt(xp.sqrt(xp.sum(h2 * h2, axis=(-2, -1), keepdims=True))) * (1.0 + 4 * weps)
    c = xp.where(c > 0, c, xp.ones_like(c))
    a, b = q.numerator, q.denominator
    y = _inverse_root(xp, h / c, plan.root, plan.newton_steps, eye)
    hp = (h / c) @ _matpow(xp, y, b - a, eye)
    out = (c ** float(q)) * (hp @ p)
    return out if wide == dtype else xp.astype(out, dtype)


def _gram_ridge(xp, x, q, plan, eps):
    """``(A + eps^2 I)^((p-1)/2) B / ||B||_F^(1-p)`` with ``A = BB^T / ||B||_F^2``."""
    dtype, wide = x.dtype, bb.wide_dtype(xp, x.dtype)
    xw = x if wide == dtype else xp.astype(x, wide)
    m = x.shape[-2]
    xs, fro = bb.frobenius_scale(xp, xw)
    eye = bb.eye_like(xp, xs, m)
    a_mat = fp.gram(xp, xs) + (eps * eps) * eye
    a_mat = a_mat / (1.0 + eps * eps)  # spectrum in [eps^2 / (1 + eps^2), 1]
    a, b = q.numerator, q.denominator
    y = _inverse_root(xp, a_mat, plan.root, plan.newton_steps, eye)  # A'^(-1/(2b))
    # (A + eps^2 I)^((p-1)/2) = (1 + eps^2)^((p-1)/2) y^(b-a)
    scale = (1.0 + eps * eps) ** ((float(q) - 1.0) / 2.0)
    out = (scale * _matpow(xp, y, b - a, eye)) @ xs
    fro_p = xp.where(fro > 0, fro, xp.ones_like(fro)) ** float(q)
    out = out * fro_p
    return out if wide == dtype else xp.astype(out, dtype)
