r"""Fractional spectral powers :math:`\operatorname{power}(B, p) = U\,\mathrm{diag}(s^p)\,V^T` (Muon^p).

``p = 0`` is the polar factor (Muon), ``p = 1`` is ``B`` itself (gradient
descent); ``p`` in (0, 1) interpolates. :math:`U S^p V^T` is the steepest-descent
direction under the Schatten-:math:`q` norm with :math:`q = 1 + 1/p`. DynMuon's
schedules reach mildly negative ``p``, where :math:`s^p` is unbounded as
:math:`s \to 0` and a regularised map is used (see :func:`power`).

Methods (``m x n`` with ``m <= n``):

``"newton"``
    Matrix products only, two coupled (bivariate) recurrences:

    * ``p`` in (0, 1), no ridge: with :math:`P = UV^T` (Polar Express or Gram
      Newton-Schulz, as for :func:`~spectral_ops.polar`) and
      :math:`H = BP^T = U S U^T` (m x m, condition number :math:`\kappa`, not
      the :math:`\kappa^2` of the Gram matrix), :math:`U S^p V^T = H^p P` and,
      for :math:`p = a/b`, :math:`H^p = H\,Y^{b-a}` with :math:`Y = H^{-1/b}`
      from the coupled iteration for the inverse root (Guo & Higham 2006)
      :math:`Q = aI + bM + cM^2`, :math:`Y \leftarrow YQ`,
      :math:`M \leftarrow Q^r M`, from :math:`Y = I`, :math:`M = H`, with
      per-step minimax coefficients (our own derivation, on the model of Polar
      Express: :func:`~spectral_ops.coefficients.root_schedule`). ``B`` is
      scaled first as Polar Express's tight start does, so that the spectrum
      of ``H`` lies in (0, 1].
    * with a ridge (always for ``p < 0``): the Gram form
      :math:`s\,(s^2 + \epsilon^2\|B\|_F^2)^{(p-1)/2}`, i.e.
      :math:`(A + \epsilon^2 I)^{(p-1)/2} B / \|B\|_F^{1-p}` with
      :math:`A = BB^T/\|B\|_F^2`, through the coupled Newton iteration with
      :math:`r = 2b`.

    The step counts come from the scalar recurrences on the design interval
    (host-side, like Polar Express). 16-bit inputs run in float32.
``"svd"``
    Exact reference through the thin SVD.
``"eigh"``
    The eigendecomposition :math:`BB^T = W\,\mathrm{diag}(s^2)\,W^T` of the
    Gram matrix formed in float64 (LAPACK's symmetric eigensolver), then
    :math:`W\,\mathrm{diag}(s^{p-1})\,W^T B` in float64, rounded once: float32
    and 16-bit inputs, where float64 squares nothing that matters (see
    :func:`~spectral_ops.kernels.gram_eigh_map`); any ``p``. Not for float64
    inputs.
``"auto"``
    On CPUs ``"eigh"`` for float32 and 16-bit inputs where the library computes
    in float64 and ``floor >= 1e-4`` (faster than the SVD and than the
    iteration there, measured; see docs/power.md), else ``"svd"``
    except for NumPy float32 inputs of aspect ratio 4 or more with short side at
    least 128; ``"newton"`` on accelerators and under autodiff.
"""

from __future__ import annotations

import math
from fractions import Fraction

from . import _backbone as bb
from . import _fastpaths as fp
from .kernels import (gram_eigh_power, inverse_root, matpow, mT, polar_cutoff, polar_factor,
                      svd_map, tight_start)
from .plans import PowerPlan
from .routing import POWER_METHODS, is_real, plan_power

__all__ = ["power", "power_plan", "PowerPlan", "POWER_METHODS", "rational_exponent"]


def rational_exponent(p, max_denominator: int = 16) -> Fraction:
    """``p`` as a fraction: exact for ``Fraction`` and ``int``; a float becomes the
    nearest fraction with denominator at most ``max_denominator``.

    Raises ``ValueError`` unless ``-1 <= p <= 1``.
    """
    if isinstance(p, bool) or not isinstance(p, (Fraction, int, float)) and not is_real(p):
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


def power_plan(B, p, /, *, method: str = "auto", eps: float | None = None,
               floor: float | None = None, max_denominator: int = 16,
               compute_dtype=None) -> PowerPlan:
    """What :func:`power` would run on ``B``, without running it."""
    xp = bb.validate_array(B, "B")
    q = rational_exponent(p, _check_max_denominator(max_denominator))
    return plan_power(xp, B, bb.resolve_dtype(xp, compute_dtype, B.dtype), q, method, eps, floor)


def _check_max_denominator(max_denominator):
    if not isinstance(max_denominator, int) or isinstance(max_denominator, bool) \
            or max_denominator < 1:
        raise ValueError(f"max_denominator must be a positive integer; got {max_denominator!r}.")
    return max_denominator


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
    method : {"auto", "newton", "svd", "eigh"}
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
    q = rational_exponent(p, _check_max_denominator(max_denominator))
    prep = bb.prepare(B, compute_dtype=compute_dtype, check_finite=check_finite)
    xp, x = prep.xp, prep.x
    plan = plan_power(xp, B, prep.dtype, q, method, eps, floor)
    if plan.route == "identity":
        return bb.finish(x + xp.zeros_like(x), prep)  # a new array, never the input
    if prep.m == 0:
        return bb.finish(xp.zeros_like(x), prep)
    if plan.route == "polar":
        return bb.finish(polar_factor(xp, x, plan.polar, amax=prep.amax), prep)
    # power(c B, p) = c^p power(B, p), with c the exact power of two that brings
    # max|B| into [1, 2) (or just below 1): no Gram product can overflow or underflow
    # at any scale
    x, c = bb.power_of_two_scale(xp, x, prep.amax)
    if plan.route == "eigh":  # c^p in float64 too: one rounding to the input's dtype
        # p = 0 is the partial polar factor: polar's cut-off (see polar_cutoff)
        cutoff = polar_cutoff(xp, x, plan.floor) if plan.p == 0 and plan.eps is None else None
        y = gram_eigh_power(xp, x, float(plan.p), plan.eps, cutoff=cutoff)
        return bb.finish(xp.astype(y * xp.astype(c, xp.float64) ** float(plan.p), x.dtype),
                         prep)
    if plan.route == "svd":
        y = svd_map(xp, x, lambda xp_, s, c_: _power_values(xp_, s, c_, plan.p, plan.eps))
    elif plan.route == "polar-root":
        y = _polar_root(xp, x, plan)
    else:
        y = _gram_ridge(xp, x, plan)
    return bb.finish(y * xp.astype(c ** float(plan.p), y.dtype), prep)


def _power_values(xp, s, c, q, eps):
    """``f(c s)`` of the SVD route: ``s^p`` (exact zeros stay zero) or the ridge
    form; both are homogeneous, ``f(c s) = c^p f(s)``."""
    pf = float(q)
    if eps is None:
        safe = xp.where(s > 0, s, xp.ones_like(s))
        f = xp.where(s > 0, safe ** pf, xp.zeros_like(s))
    else:
        fro = xp.sqrt(xp.sum(s * s, axis=-1, keepdims=True))
        fro = xp.where(fro > 0, fro, xp.ones_like(fro))  # a zero matrix stays zero
        # + tiny: an eps whose square underflows leaves 0 * 0^(p-1) = NaN at exact zeros
        tiny = bb.dtype_tiny(xp, s.dtype)
        f = s * (s * s + (eps * fro) ** 2 + tiny) ** ((pf - 1.0) / 2.0)
    return f * c ** pf


def _polar_root(xp, x, plan):
    """``H^p P`` with ``H = B P^T`` (see the module docstring).

    The tight start and ``P`` run in ``plan.polar_dtype`` (a 16-bit input's own
    dtype, as :func:`~spectral_ops.polar` runs) or the wide dtype; ``H``, its
    root and the output in float32 or better.
    """
    wide = bb.wide_dtype(xp, x.dtype)
    xw = x if plan.polar_dtype is not None else xp.astype(x, wide)
    m = x.shape[-2]
    # the tight start scales B to s_max in [m^(-1/8) / (1 + eps), 1]; P's iteration starts
    # from it, and H = B P^T then has its spectrum in (0, 1] as the root iteration needs
    start = tight_start(xp, xw, plan.polar.eps)
    p = polar_factor(xp, start[0], plan.polar, start)
    xs, p = xp.astype(start[0], wide), xp.astype(p, wide)
    # P's singular values are within its bound of 1: H / (1 + bound) stays in (0, 1]
    grow = 1.0 + plan.polar.error_bound
    h = xs @ mT(xp, p)
    h = (0.5 / grow) * (h + mT(xp, h))
    eye = bb.eye_like(xp, h, m)
    a, b = plan.p.numerator, plan.p.denominator
    y = inverse_root(xp, h, plan.root, plan.root_coefficients, eye)
    hp = h @ matpow(xp, y, b - a, eye)
    # power(B) = power(xs) (||B||_F / ||xs||_F)^p: the scale the tight start divided by
    fro, fro_s = _fro(xp, xp.astype(x, wide)), _fro(xp, xs)
    scale = grow * fro / xp.where(fro_s > 0, fro_s, xp.ones_like(fro_s))  # zero stays zero
    return xp.astype((scale ** float(plan.p)) * (hp @ p), x.dtype)


def _fro(xp, x):
    return xp.sqrt(xp.sum(x * x, axis=(-2, -1), keepdims=True))


@bb.in_wide_dtype
def _gram_ridge(xp, x, plan):
    """``(A + eps^2 I)^((p-1)/2) B / ||B||_F^(1-p)`` with ``A = BB^T / ||B||_F^2``."""
    m = x.shape[-2]
    eps = plan.eps
    xs, fro, two_e = bb.frobenius_scale(xp, x)
    eye = bb.eye_like(xp, xs, m)
    a_mat = fp.gram(xp, xs) + (eps * eps) * eye
    a_mat = a_mat / (1.0 + eps * eps)  # spectrum in [eps^2 / (1 + eps^2), 1]
    a, b = plan.p.numerator, plan.p.denominator
    y = inverse_root(xp, a_mat, plan.root, plan.root_coefficients, eye)  # A'^(-1/(2b))
    # (A + eps^2 I)^((p-1)/2) = (1 + eps^2)^((p-1)/2) y^(b-a)
    scale = (1.0 + eps * eps) ** ((float(plan.p) - 1.0) / 2.0)
    out = (scale * matpow(xp, y, b - a, eye)) @ xs
    fro_p = xp.where(fro > 0, fro, xp.ones_like(fro)) ** float(plan.p) * two_e ** float(plan.p)
    return out * fro_p
