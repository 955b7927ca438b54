r"""Coefficients of odd polynomial iterations for the polar factor.

Every odd quintic step :math:`X \leftarrow aX + b(XX^T)X + c(XX^T)^2X` acts on
each singular value separately as :math:`x \leftarrow p(x) = ax + bx^3 + cx^5`.
This module derives, in the library, the *Polar Express* schedule (Amsel,
Persson, Musco, Gower, arXiv 2505.16932): at each step the odd quintic that is
minimax-optimal for :math:`|1 - p(x)|` on the interval :math:`[l, u]` that
currently holds the singular values. Greedy composition of these is optimal,
so the interval after each step is the image of the previous one.

The Remez exchange below, the exact tracking of the interval through the
safety factor, and the step-count rule are our own implementation of the
published idea; the cushion value and the safety factor are the published ones.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = [
    "JORDAN_COEFFICIENTS",
    "CUSHION",
    "SAFETY",
    "minimax_odd_quintic",
    "polar_express_coefficients",
    "polar_express_schedule",
    "quintic_image",
    "root_schedule",
    "mixed_schedule",
    "minimax_odd",
    "odd_image",
    "STEP_PRODUCTS",
    "ROOT_CUSHIONS",
    "schedule_error",
]

#: Muon's classic quintic (Keller Jordan), used with 5 steps.
JORDAN_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

#: Relative lower end below which a step is designed on ``[CUSHION * u, u]``
#: instead of ``[l, u]``: for tiny ``l`` the minimax quintic's interior minimum
#: drops near 0 and would map *large* singular values near 0 (published value).
CUSHION = 0.02407327424182761

#: Each step but the last evaluates ``p(x / SAFETY)``, a margin against
#: round-off pushing singular values past the design interval (published value).
SAFETY = 1.01


def _p(coef, x, r=2):
    a, b, c = coef
    return x * (a + b * x**r + c * x ** (2 * r))


def _critical_points(coef, lo: float, hi: float, r: int = 2) -> list[float]:
    """Positive roots of p'(x) = a + (1 + r) b x^r + (1 + 2r) c x^(2r) inside [lo, hi]."""
    a, b, c = coef
    out = []
    for y in np.roots([(1 + 2 * r) * c, (1 + r) * b, a]):
        if abs(y.imag) < 1e-14 * max(1.0, abs(y.real)) and y.real > 0:
            x = float(y.real) ** (1.0 / r)
            if lo < x < hi:
                out.append(x)
    return out


def quintic_image(coef, lo: float, hi: float, r: int = 2) -> tuple[float, float]:
    """Exact image ``[min p, max p]`` of ``[lo, hi]`` under an odd quintic
    (``r = 2``) or its root analogue ``x (a + b x^r + c x^(2r))``."""
    pts = [lo, hi, *_critical_points(coef, lo, hi, r)]
    vals = [_p(coef, x, r) for x in pts]
    return min(vals), max(vals)


def minimax_odd_quintic(lo: float, hi: float, *, tol: float = 1e-15, max_iter: int = 100,
                        root: int = 2):
    r"""The odd quintic that best approximates 1 on ``[lo, hi]`` (Remez exchange).

    Finds :math:`(a, b, c)` minimising :math:`\max_{x \in [lo, hi]} |1 - p(x)|`,
    :math:`p(x) = ax + bx^3 + cx^5`. The optimum equioscillates at four points
    :math:`lo < q < r < hi`: :math:`p - 1 = -E, +E, -E, +E` there, and
    :math:`q, r` are the positive roots of :math:`p'`. Each exchange solves the
    4 x 4 linear system for :math:`(a, b, c, E)` and moves :math:`q, r` to the
    new roots of :math:`p'`.

    ``root`` generalises the basis to :math:`x, x^{1+k}, x^{1+2k}` with
    :math:`k` = ``root`` (``2``: the odd quintic): the step polynomial of the
    inverse ``k``-th root (see :func:`root_schedule`). The same exchange
    applies: :math:`p'` is a quadratic in :math:`x^k`.

    Parameters
    ----------
    lo, hi : float
        The interval, ``0 < lo <= hi``.

    Returns
    -------
    (a, b, c) : tuple of float
    """
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < lo <= hi; got lo={lo}, hi={hi}")
    k = int(root)
    if lo / hi > 1 - 1e-6:
        return _flat_limit(hi, k)
    # start the exchange at the points where the limiting polynomial peaks
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    err_prev = math.inf
    for _ in range(max_iter):
        nodes = np.array([lo, q, r, hi])
        signs = np.array([1.0, -1.0, 1.0, -1.0])
        lhs = np.stack([nodes, nodes ** (1 + k), nodes ** (1 + 2 * k), signs], axis=1)
        a, b, c, err = np.linalg.solve(lhs, np.ones(4))
        roots = _critical_points((a, b, c), lo, hi, k)
        if len(roots) != 2:
            # only for intervals narrower than round-off can resolve, where the
            # limit polynomial is optimal to far below float64 precision
            return _flat_limit(hi, k)
        q, r = sorted(roots)
        if abs(err - err_prev) <= tol * max(1.0, abs(err)):
            break
        err_prev = err
    return float(a), float(b), float(c)


def _flat_limit(u: float, k: int):
    """The limit for an interval of (numerical) width 0 at ``u``: ``p(u) = 1``,
    ``p'(u) = p''(u) = 0``; for ``k = 2`` the quintic (15/8, -10/8, 3/8) rescaled to u."""
    c = (1 + k) / (2 * k * k)
    return (1 + 2 * k) * c / u, -2 * (1 + 2 * k) * c / (1 + k) / u ** (1 + k), \
        c / u ** (1 + 2 * k)


@lru_cache(maxsize=256)
def _schedule(lower: float, steps: int, cushion: float, safety: float):
    lo, hi = lower, 1.0
    coefs, errors = [], []
    for t in range(steps):
        coef, lo, hi = _greedy_step(lo, hi, 5, t == steps - 1, safety, cushion)
        coefs.append(coef)
        errors.append(max(1.0 - lo, hi - 1.0))
    return tuple(coefs), tuple(errors)


def polar_express_coefficients(steps: int, lower: float = 1e-3, *, cushion: float = CUSHION,
                               safety: float = SAFETY) -> list[tuple[float, float, float]]:
    r"""Polar Express coefficients for ``steps`` odd quintic steps.

    Step ``t`` uses the minimax quintic for the interval :math:`[l_t, u_t]`
    that holds the singular values after ``t`` steps (starting from
    :math:`[l_0, u_0] = [\text{lower}, 1]`), designed on
    :math:`[\max(l_t, \text{cushion}\, u_t), u_t]`, re-centred so the image of
    :math:`[l_t, u_t]` is symmetric about 1, and, on every step but the last,
    evaluated at :math:`x / \text{safety}`. The interval is then updated to the
    exact image of :math:`[l_t, u_t]`.

    Parameters
    ----------
    steps : int
        Number of steps, >= 1.
    lower : float
        Design lower bound :math:`l_0` for singular values of the normalised
        input (all of them are assumed <= 1), ``0 < lower <= 1``.
    cushion, safety : float
        See :data:`CUSHION` and :data:`SAFETY`; ``safety=1`` switches it off.

    Returns
    -------
    list of (a, b, c)

    Examples
    --------
    >>> a, b, c = polar_express_coefficients(1, 1e-3, safety=1.0)[0]
    >>> round(a, 4), round(b, 4), round(c, 4)
    (8.2872, -23.5959, 17.3004)
    """
    _check_schedule_args(steps, lower)
    return list(_schedule(float(lower), int(steps), float(cushion), float(safety))[0])


def polar_express_schedule(lower: float, tol: float, *, max_steps: int = 40,
                           cushion: float = CUSHION, safety: float = SAFETY):
    r"""The shortest Polar Express schedule whose worst-case error is <= ``tol``.

    The worst case is over all singular values in :math:`[\text{lower}, 1]`
    in exact arithmetic: :math:`\max |p_T \circ \dots \circ p_1(x) - 1|`.

    Returns
    -------
    coefficients : list of (a, b, c)
    error : float
        The guaranteed worst-case error of the composition.
    """
    _check_schedule_args(1, lower)
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    for steps in range(1, max_steps + 1):
        coefs, errors = _schedule(float(lower), steps, float(cushion), float(safety))
        if errors[-1] <= tol:
            return list(coefs), errors[-1]
    raise ValueError(
        f"no Polar Express schedule of at most {max_steps} steps reaches tol={tol} from "
        f"lower={lower}; raise tol or lower, or use method='qdwh'."
    )


def schedule_error(lower: float, steps: int, *, cushion: float = CUSHION,
                   safety: float = SAFETY) -> float:
    """The guaranteed worst-case error of :func:`polar_express_coefficients`
    ``(steps, lower)`` on :math:`[\text{lower}, 1]`, in exact arithmetic."""
    _check_schedule_args(steps, lower)
    return _schedule(float(lower), int(steps), float(cushion), float(safety))[1][-1]


def _check_schedule_args(steps, lower):
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not 0 < lower <= 1:
        raise ValueError(f"lower must lie in (0, 1]; got {lower!r}")


# --- inverse roots -----------------------------------------------------------------

#: Design lower ends tried for each inverse-root step, as fractions of the
#: interval's upper end (0: the interval itself); the one whose image is the
#: narrowest is kept (the analogue of :data:`CUSHION`, chosen per step).
ROOT_CUSHIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def root_schedule(lower: float, root: int, tol: float, *, max_steps: int = 40,
                  safety: float = SAFETY):
    r"""Step polynomials of the coupled iteration for :math:`M^{-1/r}`.

    Our own derivation, on the model of Polar Express. The coupled iteration
    :math:`Q_t = a_t I + b_t M_t + c_t M_t^2`, :math:`Y_{t+1} = Y_t Q_t`,
    :math:`M_{t+1} = Q_t^r M_t` (from :math:`Y_0 = I`, :math:`M_0 = M`) keeps
    :math:`M_t = M Y_t^r`. On an eigenvalue :math:`\mu` of :math:`M`, the
    quantity :math:`z_t = \mu^{1/r} y_t` (the relative error of :math:`y_t`
    as an approximation of :math:`\mu^{-1/r}` is :math:`z_t - 1`) follows the
    scalar map

    .. math:: z \leftarrow p_t(z) = z\,(a_t + b_t z^r + c_t z^{2r}),

    an odd-quintic-like polynomial that needs :math:`z` only through
    :math:`z^r = \mu y^r`, i.e. through :math:`M_t`. Newton's coupled iteration
    is the fixed choice :math:`(\tfrac{r+1}{r}, -\tfrac1r, 0)`; it multiplies a
    small :math:`\mu` by only :math:`((r+1)/r)^r \le e` per step. Here each
    step takes instead the :math:`p_t` of this form minimax-optimal for
    :math:`|1 - p|` on the interval :math:`[l_t, u_t]` that holds :math:`z`
    (Remez exchange, :func:`minimax_odd_quintic` with ``root=r``), designed on
    :math:`[\max(l_t, \kappa u_t), u_t]` with the cushion :math:`\kappa` of
    :data:`ROOT_CUSHIONS` whose exact image is narrowest. Every step but the
    last is scaled so that its image ends at 1 (so :math:`M_t` never exceeds
    the identity, where :math:`Q^r` would amplify round-off) and evaluated at
    :math:`z/\text{safety}`; the last is re-centred so its image is symmetric
    about 1. The images are exact (endpoints and the roots of :math:`p'`), so
    the returned error is a bound in exact arithmetic.

    Parameters
    ----------
    lower : float
        Lower end of the spectrum of :math:`M` (all of it in ``[lower, 1]``).
    root : int
        :math:`r \ge 1`.
    tol : float
        Bound on :math:`|z - 1|`, the relative error of :math:`M^{-1/r}` on
        ``[lower, 1]``.

    Returns
    -------
    coefficients : tuple of (a, b, c)
    error : float
        The guaranteed :math:`\max |z_T - 1|` over ``[lower, 1]``.

    Examples
    --------
    >>> coefs, err = root_schedule(1e-3, 2, 1e-6)
    >>> len(coefs), err < 1e-6
    (5, True)
    """
    _check_schedule_args(1, lower)
    if int(root) != root or root < 1:
        raise ValueError(f"root must be a positive integer; got {root!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    return _root_schedule(float(lower), int(root), float(tol), int(max_steps), float(safety))


@lru_cache(maxsize=256)
def _root_schedule(lower, r, tol, max_steps, safety):
    lo, hi = lower ** (1.0 / r), 1.0
    coefs = []
    for _ in range(max_steps):
        best = None
        for cushion in ROOT_CUSHIONS:
            coef = minimax_odd_quintic(max(lo, cushion * hi), hi, root=r)
            img_lo, img_hi = quintic_image(coef, lo, hi, r)
            if img_lo > 0 and (best is None or img_lo / img_hi > best[0]):
                best = (img_lo / img_hi, coef, img_lo, img_hi)
        _, coef, img_lo, img_hi = best
        last = (img_hi - img_lo) / (img_hi + img_lo) <= tol
        scale = 2.0 / (img_lo + img_hi) if last else 1.0 / img_hi
        coef = tuple(float(scale * k) for k in coef)
        if not last and safety != 1.0:
            coef = (coef[0] / safety, coef[1] / safety ** (1 + r), coef[2] / safety ** (1 + 2 * r))
        coefs.append(coef)
        lo, hi = quintic_image(coef, lo, hi, r)
        if last:
            return tuple(coefs), max(1.0 - lo, hi - 1.0)
    raise ValueError(f"no inverse-root schedule of at most {max_steps} steps reaches tol={tol} "
                     f"from lower={lower}; raise tol or lower.")


# --- mixed degrees: quintic and nonic steps ------------------------------------------

#: Matrix products of one Polar Express step by degree (with ``A = XX^T``): quintic
#: ``A``, ``bA + cA^2`` (fused), ``X q``; nonic ``A``, ``A^2``,
#: ``A^2 (c I + d A + e A^2)``, ``X q``. The tight start's ``A`` and ``A^2`` are the
#: first step's, so a first step costs the same.
STEP_PRODUCTS = {5: 3, 9: 4}


def _odd(coef, x):
    return sum(c * x ** (2 * j + 1) for j, c in enumerate(coef))


def _odd_critical_points(coef, lo, hi):
    """Positive roots inside (lo, hi) of p' = sum (2j + 1) c_j x^(2j), a polynomial in x^2."""
    out = []
    for y in np.roots([(2 * j + 1) * c for j, c in enumerate(coef)][::-1]):
        if abs(y.imag) < 1e-9 * max(1.0, abs(y.real)) and y.real > 0:
            x = math.sqrt(float(y.real))
            if lo < x < hi:
                out.append(x)
    return sorted(out)


def odd_image(coef, lo: float, hi: float) -> tuple[float, float]:
    """Exact image ``[min p, max p]`` of ``[lo, hi]`` under the odd polynomial
    :math:`p(x) = \\sum_j c_j x^{2j+1}` (endpoints and the roots of :math:`p'`;
    near-real roots are kept, which can only widen the image)."""
    vals = [_odd(coef, x) for x in (lo, hi, *_odd_critical_points(coef, lo, hi))]
    return float(min(vals)), float(max(vals))


@lru_cache(maxsize=4096)
def minimax_odd(lo: float, hi: float, degree: int, max_iter: int = 100):
    """The odd polynomial of ``degree`` (5 or 9, ...) that best approximates 1 on
    ``[lo, hi]``: the Remez exchange of :func:`minimax_odd_quintic` on the basis
    :math:`x, x^3, \\dots, x^{degree}` (``(degree + 3) / 2`` equioscillation
    points: the ends and the roots of :math:`p'`). Returns the coefficients
    from :math:`x` up."""
    if degree == 5:
        return minimax_odd_quintic(lo, hi)
    d = (degree - 1) // 2
    n = d + 2
    signs = np.array([(-1.0) ** i for i in range(n)])
    nodes = lo + (hi - lo) * (1 - np.cos(np.pi * np.arange(n) / (n - 1))) / 2
    coef, err_prev = None, math.inf
    for _ in range(max_iter):
        lhs = np.stack([nodes ** (2 * j + 1) for j in range(d + 1)] + [signs], axis=1)
        *new, err = np.linalg.solve(lhs, np.ones(n))
        roots = _odd_critical_points(new, lo, hi)
        if len(roots) != d:
            break  # only for intervals too narrow to resolve: keep the last good one
        coef = new
        nodes = np.array([lo, *roots, hi])
        if abs(abs(err) - err_prev) <= 1e-15 * max(1.0, abs(err)):
            break
        err_prev = abs(err)
    if coef is None:  # width-0 interval: the quintic limit is optimal to round-off
        return (*_flat_limit(hi, 2), *([0.0] * (d - 2)))
    return tuple(float(c) for c in coef)


@lru_cache(maxsize=None)
def cushion(degree: int) -> float:
    """The cushion of a step of ``degree``: the ``c`` where the minimax polynomial
    on ``[c, 1]`` has image ratio ``max/min = 10``. Our rule; for the quintic it is
    the published :data:`CUSHION` (to 1e-6, tested)."""
    lo, hi = 1e-6, 0.5
    for _ in range(80):  # bisection: the ratio falls as c grows
        c = math.sqrt(lo * hi)
        a, b = odd_image(minimax_odd(c, 1.0, degree), c, 1.0)
        lo, hi = (c, hi) if b / a > 10.0 else (lo, c)
    return math.sqrt(lo * hi)


def _greedy_step(lo, hi, degree, last, safety, kappa=None):
    """One step of a greedy Polar Express schedule on ``[lo, hi]``: the minimax odd
    polynomial of ``degree`` on ``[max(lo, kappa hi), hi]`` (``kappa``: the
    degree's cushion by default), re-centred so the exact image of ``[lo, hi]``
    is symmetric about 1, evaluated at ``x / safety`` unless ``last``; returns
    ``(coefficients, new lo, new hi)``, the new interval that exact image."""
    if kappa is None:
        kappa = CUSHION if degree == 5 else cushion(degree)
    coef = minimax_odd(max(lo, kappa * hi), hi, degree)
    img_lo, img_hi = odd_image(coef, lo, hi)
    scale = 2.0 / (img_lo + img_hi)
    coef = tuple(scale * c / (1.0 if last or safety == 1.0 else safety ** (2 * j + 1))
                 for j, c in enumerate(coef))
    return (coef, *odd_image(coef, lo, hi))


def mixed_schedule(lower: float, tol: float, *, safety: float = SAFETY):
    r"""The Polar Express schedule with quintic and nonic steps that reaches ``tol``
    with the fewest matrix products.

    Our own extension of Polar Express: each step is the minimax odd polynomial of
    its degree (5 or 9) on the interval that holds the singular values, with the
    same cushion (:func:`cushion`), re-centring, safety factor and exact interval
    tracking as :func:`polar_express_coefficients`. A nonic step costs 4
    products where a quintic costs 3 (:data:`STEP_PRODUCTS`) and grows small
    singular values faster per product, so mixing them shortens schedules: the
    search goes through degree sequences by total products and keeps the
    cheapest that meets ``tol`` (ties: fewest nonic steps, then the smaller
    error), so where nonic steps do not save a product the schedule is Polar
    Express's own.

    Returns
    -------
    coefficients : tuple of tuples
        Each step's coefficients from :math:`x` up (3 for a quintic, 5 for a nonic).
    error : float
        The guaranteed worst-case :math:`|p(x) - 1|` on ``[lower, 1]``.
    """
    _check_schedule_args(1, lower)
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    return _mixed_schedule(float(lower), float(tol), float(safety))


@lru_cache(maxsize=256)
def _mixed_schedule(lower, tol, safety):
    quintic, err = polar_express_schedule(lower, tol, safety=safety)
    best = (STEP_PRODUCTS[5] * len(quintic), 0, err, tuple(tuple(c) for c in quintic))
    # prefixes (all steps with the safety factor) in order of products
    stack = [((), 0, lower, 1.0)]
    while stack:
        prefix, cost, lo, hi = stack.pop()
        for degree in (5, 9):
            total = cost + STEP_PRODUCTS[degree]
            nonic = sum(len(c) == 5 for c in prefix) + (degree == 9)
            if (total, nonic) < best[:2]:
                coef, l_end, h_end = _greedy_step(lo, hi, degree, True, safety)
                e = max(1.0 - l_end, h_end - 1.0)
                if e <= tol and (total, nonic, e) < best[:3]:
                    best = (total, nonic, e, prefix + (coef,))
            # a longer prefix must leave room for a last step that beats the best
            if total + STEP_PRODUCTS[5] <= best[0]:
                coef, l_next, h_next = _greedy_step(lo, hi, degree, False, safety)
                stack.append((prefix + (coef,), total, l_next, h_next))
    return best[3], best[2]
