r"""Iteration kernels: the matrix arithmetic of every spectral map.

Each kernel takes the array namespace ``xp``, an input already validated and
oriented *wide* (``m <= n``, so ``X X^T`` is the small Gram matrix) and the
numbers of a plan (:mod:`spectral_ops.plans`); none chooses anything. The maps
(:mod:`spectral_ops.polar`, :mod:`spectral_ops.clip`, :mod:`spectral_ops.power`)
stand side by side on top of this module and :mod:`spectral_ops.routing`.

================================  ==================================================
kernel                            what it computes
================================  ==================================================
:func:`polar_factor`              :math:`UV^T` as a :class:`~spectral_ops.PolarPlan` says
:func:`polar_express`             Polar Express's odd quintics and nonics (also the
                                  sign of a symmetric matrix)
:func:`jordan`                    Muon's fixed quintic
:func:`gram_newton_schulz`        the same quintics on :math:`R = XX^T`
:func:`qdwh`                      dynamically weighted Halley (QR / solve)
:func:`svd_map`                   :math:`U f(s) V^T` through the thin SVD
:func:`gram_eigh_map`             :math:`W g(\lambda) W^T X` through the eigendecomposition
                                  of the float64 Gram matrix :math:`XX^T`
:func:`gram_eigh_power`           :math:`U s^p V^T` (and the ridge map) through it
:func:`inverse_root`              coupled iteration for :math:`M^{-1/r}`
:func:`matpow`                    integer matrix powers by squaring
================================  ==================================================

Every product is written ``a @ b`` or through :mod:`spectral_ops._fastpaths`
(fused multiply-accumulate GEMMs, symmetric Gram products) where a backend has
a cheaper kernel for the same arithmetic.
"""

from __future__ import annotations

import functools
import math

from . import _backbone as bb
from . import _fastpaths as fp

__all__ = ["polar_factor", "polar_express", "quintic_step", "nonic_step", "jordan",
           "gram_newton_schulz", "qdwh", "svd_map", "gram_eigh_map", "gram_eigh_power", "eigh_ridge",
           "inverse_root", "inverse_root_count", "polar_cutoff",
           "matpow", "lincomb", "tight_start", "mT"]


def mT(xp, x):
    """The matrix transpose over the last two axes."""
    return xp.linalg.matrix_transpose(x)


def lincomb(xp, terms, dtype):
    """sum(coef * array), formed in float32 or better and rounded once to ``dtype``.

    In 16-bit dtypes a Python coefficient such as 8.2872 would otherwise be
    rounded to 8.25 before use (as a bf16 scalar), a systematic error.
    """
    wide = bb.wide_dtype(xp, dtype)
    out = None
    for c, a in terms:
        t = c * (a if wide == dtype else xp.astype(a, wide))
        out = t if out is None else out + t
    return out if wide == dtype else xp.astype(out, dtype)


def polar_factor(xp, x, plan, start=None, amax=None):
    """The polar factor of the wide-oriented ``x`` by the method of ``plan``.

    ``plan`` is a :class:`~spectral_ops.PolarPlan`; this is the executor of
    :func:`~spectral_ops.polar` and of the polar factors and signs inside
    :func:`~spectral_ops.clip` and :func:`~spectral_ops.power`. ``start``: the
    :func:`tight_start` of ``x`` where the caller has it (Polar Express and Gram
    Newton-Schulz only). ``amax``: ``max|x|`` per matrix where the caller has it
    (:attr:`~spectral_ops._backbone.Prepared.amax`), for the methods that start
    with the Frobenius scaling (one read of ``x`` fewer).
    """
    if plan.method == "polar_express":
        return polar_express(xp, x, plan.coefficients, plan.eps, start, amax)
    if plan.method == "gram":
        return gram_newton_schulz(xp, x, plan.coefficients, plan.eps, plan.restart_after,
                                  start, amax)
    if start is not None:
        raise ValueError(f"a tight start applies to polar_express and gram, not {plan.method}")
    if plan.method == "jordan":
        return jordan(xp, x, plan.coefficients, amax)
    if plan.method == "qdwh":
        return qdwh(xp, x, plan.qdwh_weights)
    if plan.method == "eigh":  # p = 0 of the power map: W (s^2 + ridge)^(-1/2) W^T x
        cutoff = polar_cutoff(xp, x, plan.floor)
        return xp.astype(gram_eigh_power(xp, x, 0.0, cutoff=cutoff), x.dtype)
    return svd_map(xp, x, functools.partial(_partial_polar_values, n=x.shape[-1]))


def polar_cutoff(xp, x, floor: float) -> float:
    """The relative cut-off of the eigh polar factor: the SVD route's partial polar
    convention, ``n eps s_max`` (``eps`` of the wide dtype), but at most a tenth of
    ``floor``, so that no singular value the floor promises is cut (``n eps``
    passes 1e-4 at n = 840 in float32). The round-off of a rank-deficient float32
    input sits near ``1e-8 s_max`` in the float64 Gram matrix (up to 64 x 16384),
    far below either."""
    return min(x.shape[-1] * bb.dtype_eps(xp, bb.wide_dtype(xp, x.dtype)), 0.1 * float(floor))


def tight_start(xp, x, eps, bound=False, amax=None):
    """Unit-Frobenius scaling, then the free Gram tightening (see :func:`~spectral_ops.polar`).

    Returns ``(x, A, A2)`` with ``A = x x^T`` and ``A2 = A @ A`` for the scaled ``x``;
    with ``bound``, also the scale itself, shape (..., 1, 1) in the wide dtype:
    ``||x||_F ||(x x^T)^2||_F^(1/4) (1 + eps)``, an upper bound on ``s_max(x)``
    within a factor ``m^(1/8)`` of it. ``amax``: ``max|x|`` where the caller has it
    (see :func:`~spectral_ops._backbone.power_of_two_scale`).
    """
    x, norm_s, two_e = bb.frobenius_scale(xp, x, amax)
    a = fp.gram(xp, x)
    a2 = a @ a
    s8 = bb.frobenius_norm(xp, a2)
    # >= s_max, with a margin for round-off in A2; a zero matrix gets 1 + eps (the power
    # of a safe value: s8^0.25 at 0 would send an infinite derivative into autodiff)
    k = xp.where(s8 > 0, s8, xp.ones_like(s8)) ** 0.25 * (1.0 + eps)
    kc = xp.astype(k, x.dtype)
    k2 = xp.astype(k * k, x.dtype)
    start = (x / kc, a / k2, a2 / (k2 * k2))
    return start + ((k * norm_s) * two_e,) if bound else start


def polar_express(xp, x, coefs, eps, start=None, amax=None):
    """Polar Express: the odd quintics and nonics ``coefs`` after the tight start.

    ``start``: the ``(x, A, A2)`` of :func:`tight_start`, where the caller has it;
    ``amax`` as in :func:`tight_start`.
    """
    x, a, a2 = tight_start(xp, x, eps, amax=amax) if start is None else start
    comb = functools.partial(lincomb, xp)
    for t, coef in enumerate(coefs):
        if len(coef) == 5:
            x = nonic_step(xp, x, coef, (a, a2) if t == 0 else None)
        elif t == 0 and coef[1] != 0:
            # A^2 is already formed: aX + b (A + (c/b) A^2) X, the b in the GEMM's alpha
            ca, cb, cc = coef
            poly = fp.add_scaled(xp, a, a2, cc / cb, combine=comb)
            x = fp.matmul_acc(xp, x, poly, x, beta=ca, alpha=cb, combine=comb)
        elif t == 0:
            ca, _, cc = coef
            x = fp.matmul_acc(xp, x, a2, x, beta=ca, alpha=cc, combine=comb)
        else:
            x = quintic_step(xp, x, coef)
    return x


def nonic_step(xp, x, coefs, gram=None):
    """One odd degree-9 step ``c0 X + (c1 A + A^2 (c2 I + c3 A + c4 A^2)) X``, ``A = X X^T``.

    Four products (``A``, ``A^2``, ``A^2 (...)``, ``(...) X``); two where ``gram``
    holds ``(A, A^2)`` already (the tight start's).
    """
    c0, c1, c2, c3, c4 = coefs
    comb = functools.partial(lincomb, xp)
    if gram is None:
        a = fp.gram(xp, x)
        a2 = a @ a
    else:
        a, a2 = gram
    inner = lincomb(xp, [(c2, bb.eye_like(xp, a, a.shape[-1])), (c3, a), (c4, a2)], x.dtype)
    poly = fp.matmul_acc(xp, a, a2, inner, beta=c1, combine=comb)  # c1 A + A^2 (...)
    return fp.matmul_acc(xp, x, poly, x, beta=c0, combine=comb)


def quintic_step(xp, x, coefs):
    """One odd-quintic step ``aX + (bA + cA^2) X`` with ``A = X X^T``, fused where possible."""
    ca, cb, cc = coefs
    comb = functools.partial(lincomb, xp)
    a = fp.gram(xp, x)
    poly = fp.matmul_acc(xp, a, a, a, beta=cb, alpha=cc, combine=comb)  # bA + cA^2
    return fp.matmul_acc(xp, x, poly, x, beta=ca, combine=comb)  # aX + (bA + cA^2) X


def jordan(xp, x, coefs, amax=None):
    """Muon's quintic with torch.optim.Muon's arithmetic: Frobenius scaling, fixed steps
    (``amax`` as in :func:`tight_start`)."""
    x = bb.unit_frobenius(xp, x, amax)
    for step in coefs:
        x = quintic_step(xp, x, step)
    return x


@bb.in_wide_dtype
def gram_newton_schulz(xp, x0, coefs, eps, restart_after=2, start=None, amax=None):
    r"""Polar Express steps run on R = X X^T, the last one on X itself.

    With p(x) = x h(x^2), h = a + b y + c y^2, all but the last step iterate
    R_{t+1} = H R H and Q_{t+1} = H Q with H = h(R), so that X_t = Q_t X_0
    (all are polynomials in R_0 and commute in exact arithmetic); R is
    re-symmetrised after each update. Then X = Q X_0 takes the last step
    directly, as in :func:`polar_express`.

    Round-off makes tiny eigenvalues of R slightly negative, and the iteration
    multiplies a negative eigenvalue y by h(y)^2 (about 68 in the first step)
    every step until it explodes. Restarting after step 2 (X_0 <- Q X_0,
    R <- X_0 X_0^T, Q <- I) resets that error. The direct last step (our own
    arrangement) is the near-identity, third-order polish of the schedule: it
    removes the band error that R's round-off leaves in Q (float32, cond 1e4:
    max |sigma - 1| 6.2e-5 -> 1.2e-5, Polar Express's own value) for two
    m x n products instead of one m x m. In 16-bit dtypes R's error is still
    too large (measured in bfloat16: output singular values up to 2.3 on a
    512 x 512 Gaussian), so 16-bit inputs run in float32. ``start`` as in
    :func:`polar_express`.
    """
    if len(coefs) == 1:
        return polar_express(xp, x0, coefs, eps, start, amax)
    x0, r, r2 = tight_start(xp, x0, eps, amax=amax) if start is None else start
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
        h = lincomb(xp, [(ca, eye), (cb, r), (cc, r2)], x0.dtype)
        q = h if q is None else h @ q
        if t + 1 < gram_steps and t + 1 != restart_after:  # R is needed next step
            r = h @ (r @ h)
            r = 0.5 * (r + mT(xp, r))
    return quintic_step(xp, q @ x0, coefs[-1])


@bb.in_wide_dtype
def qdwh(xp, x, weights):
    """QDWH on the tall orientation ``Y = x^T`` (n x m, n >= m).

    16-bit inputs run in float32: no library has a 16-bit QR or solve.
    """
    y = bb.unit_frobenius(xp, mT(xp, x))
    m = y.shape[-1]
    eye = bb.eye_like(xp, y, m)
    for a, b, c in weights:
        if c > 100.0:
            # QR form: [sqrt(c) Y; I] = [Q1; Q2] R, Y <- (b/c) Y + (a - b/c)/sqrt(c) Q1 Q2^T
            stacked = xp.concat(
                [math.sqrt(c) * y, xp.broadcast_to(eye, y.shape[:-2] + (m, m))], axis=-2)
            qf, _ = xp.linalg.qr(stacked)
            q1, q2 = qf[..., : y.shape[-2], :], qf[..., y.shape[-2]:, :]
            y = (b / c) * y + ((a - b / c) / math.sqrt(c)) * (q1 @ mT(xp, q2))
        else:
            # Cholesky form, via a symmetric positive definite solve:
            # Y <- (b/c) Y + (a - b/c) Y (I + c Y^T Y)^{-1}
            z = eye + c * (mT(xp, y) @ y)
            yz = mT(xp, xp.linalg.solve(z, mT(xp, y)))
            y = (b / c) * y + (a - b / c) * yz
    return mT(xp, y)


@bb.in_wide_dtype
def svd_map(xp, x, values):
    """``U f(s) V^T`` through the thin SVD, with ``f(c s) = values(xp, s, c)``.

    The SVD runs on ``x / c`` with ``c`` the exact power of two of
    :func:`~spectral_ops._backbone.power_of_two_scale` (shape ``(..., 1, 1)``),
    so it holds from the smallest to the largest magnitude of the dtype;
    ``values`` receives the singular values of ``x / c`` (``(..., k)``) and
    ``c[..., 0]`` and returns ``f`` of the true ones. 16-bit inputs are
    decomposed in float32: no library has a 16-bit SVD.
    """
    xs, c = bb.power_of_two_scale(xp, x)
    u, s, vh = xp.linalg.svd(xs, full_matrices=False)
    return (u * values(xp, s, c[..., 0])[..., None, :]) @ vh


def gram_eigh_map(xp, x, values):
    r"""``W diag(g) W^T x`` with ``x x^T = W diag(lam) W^T``, in float64.

    ``x``: float64, wide-oriented, prescaled (e.g. by
    :func:`~spectral_ops._backbone.power_of_two_scale`, so that ``x x^T``
    neither overflows nor underflows). ``values(xp, lam)`` maps the
    eigenvalues (``(..., m)``, ascending, round-off negatives clamped to 0) to
    ``g``: a map :math:`f(s)` of the singular values is ``g = f(s) / s`` with
    :math:`s = \sqrt{\lambda}`. The Gram matrix squares the condition number:
    an eigenvalue carries an absolute error of a few tens of ``eps64 lam_max``
    (:func:`eigh_ridge` bounds it), i.e. ``s`` a relative error of that times
    ``(s_max / s)^2 / 2``, which is why this serves float32 and 16-bit inputs
    only, from ``EIGH_MIN_FLOOR`` up (see :mod:`spectral_ops.routing`). Three
    products: the Gram matrix, ``W diag(g) W^T`` and its product with ``x``.
    """
    lam, w = xp.linalg.eigh(fp.gram(xp, x))
    lam = xp.where(lam > 0, lam, xp.zeros_like(lam))
    g = values(xp, lam)
    return ((w * g[..., None, :]) @ mT(xp, w)) @ x


def gram_eigh_power(xp, x, p: float, eps: float | None = None, cutoff: float | None = None):
    r"""``U f(s) V^T`` of the wide-oriented ``x`` through :func:`gram_eigh_map`, in
    float64: ``f(s) = s^p`` or, with ``eps``, the ridge map
    :math:`s\,(s^2 + \epsilon^2\|x\|_F^2)^{(p-1)/2}`. With ``cutoff``,
    singular values at or below ``cutoff * s_max`` map to zero (the partial
    polar factor's convention, see :func:`polar_cutoff`: the round-off of a
    rank-deficient float32 input sits at the ridge's scale and would otherwise
    come out between 0.03 and 0.3).

    Without ``eps`` a ridge at the bound on the eigensolver's round-off,
    :math:`\delta^2 =` ``eigh_ridge(n)`` :math:`\lambda_{max}`, keeps
    :math:`s^{p-1}` finite on the (numerically) zero singular values: the
    computed eigenvalue plus :math:`\delta^2` is at least the true :math:`s^2`,
    so each comes out at or below :math:`s^p`, and from ``floor * s_max`` up
    the ridge moves it by a relative
    :math:`(1 - p)\,\delta^2 / (2\,\text{floor}^2 \lambda_{max})` at most
    (:math:`2.8 \times 10^{-8}` at ``n = 4096`` and floor 1e-3). A zero matrix
    gives zeros. ``p = 0`` is the polar factor. With ``eps`` the ridge is
    :math:`\epsilon^2\|x\|_F^2`, but never below that bound.
    """
    x64 = xp.astype(x, xp.float64)
    tiny = bb.dtype_tiny(xp, xp.float64)  # a zero matrix: finite g, zero output
    ridge_scale = eigh_ridge(x.shape[-1])

    def values(xp_, lam):
        if eps is None:
            ridge = ridge_scale * lam[..., -1:] + tiny
        else:
            fro2 = xp_.sum(lam, axis=-1, keepdims=True)
            # never below the eigensolver's round-off (an eps whose square underflows
            # would leave 0^(p-1) on the clamped eigenvalues: NaN or overflow)
            ridge = xp_.maximum(eps**2 * xp_.where(fro2 > 0, fro2, xp_.ones_like(fro2)),
                                ridge_scale * lam[..., -1:]) + tiny
        g = (lam + ridge) ** ((p - 1.0) / 2.0)
        if cutoff is None:
            return g
        return xp_.where(lam > cutoff**2 * lam[..., -1:], g, xp_.zeros_like(g))

    return gram_eigh_map(xp, x64, values)


def eigh_ridge(n: int) -> float:
    """A bound on the absolute error of the eigenvalues of :func:`gram_eigh_map`'s
    float64 Gram matrix, relative to the largest: ``4 sqrt(n) eps64`` for ``n``
    columns. Measured on float32 inputs of condition 1e8 (tests/test_power.py,
    ``test_eigh_ridge_covers_the_eigensolver_error``): a fifth to a twelfth of
    this at 256 x 1024, 1024 x 1024 and 1024 x 4096 (tested at the first two)."""
    return 4.0 * math.sqrt(max(n, 1)) * 2.0**-52


def _partial_polar_values(xp, s, c, n):
    # partial polar convention: numerically zero singular values stay zero
    rtol = n * bb.dtype_eps(xp, s.dtype)
    return xp.astype(s > rtol * s[..., :1], s.dtype)


def matpow(xp, w, k: int, eye):
    """``w ** k`` for an integer ``k >= 0`` by repeated squaring."""
    out, base = None, w
    while k:
        if k & 1:
            out = base if out is None else out @ base
        k >>= 1
        if k:
            base = base @ base
    return eye if out is None else out


def matpow_count(k: int) -> int:
    """Products used by :func:`matpow` for ``k``."""
    if k <= 1:
        return 0
    return (k.bit_length() - 1) + (bin(k).count("1") - 1)


def inverse_root(xp, m0, r: int, coefs, eye):
    """The coupled iteration for ``m0^(-1/r)`` (eigenvalues of ``m0`` in (0, 1]).

    ``Q = aI + bM + cM^2``, ``Y <- Y Q``, ``M <- Q^r M`` for each ``(a, b, c)``
    of ``coefs`` (Guo and Higham's coupled form, stable where the uncoupled one
    is not): Newton's ``((r + 1) / r, -1 / r, 0)`` or the minimax steps of
    :func:`~spectral_ops.coefficients.root_schedule`. ``M`` is not updated
    after the last step.
    """
    y, m = None, m0
    # once M ~ I its off-diagonal entries shrink quadratically towards subnormals, and
    # products of small entries of Q land there (CPUs compute subnormals 10-80x slower:
    # the ridge route at 256 x 1024 ran 9x slower); entries below eps^2 of M's
    # and Q's norm (about 1) are far below round-off: zero them
    small = bb.dtype_eps(xp, m0.dtype) ** 2
    for t, (ca, cb, cc) in enumerate(coefs):
        terms = [(ca, eye), (cb, m)] + ([(cc, m @ m)] if cc else [])
        w = _flush(xp, lincomb(xp, terms, m.dtype), small)
        y = w if y is None else y @ w
        if t + 1 == len(coefs):
            break
        m = matpow(xp, w, r, eye) @ m
        m = _flush(xp, 0.5 * (m + mT(xp, m)), small)  # symmetric in exact arithmetic
    return eye if y is None else y


def _flush(xp, x, small):
    return xp.where(xp.abs(x) < small, xp.zeros_like(x), x)


def inverse_root_count(r: int, coefs) -> int:
    """Products used by :func:`inverse_root`."""
    k = 0
    for t, (_, _, cc) in enumerate(coefs):
        k += (1 if cc else 0) + (1 if t else 0)  # M^2, Y Q
        if t + 1 < len(coefs):
            k += matpow_count(r) + 1  # Q^r, Q^r M
    return k
