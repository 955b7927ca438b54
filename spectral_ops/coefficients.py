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


def _p(coef, x):
    a, b, c = coef
    return a * x + b * x**3 + c * x**5


def _critical_points(coef, lo: float, hi: float) -> list[float]:
    """Positive roots of p'(x) = a + 3b x^2 + 5c x^4 inside [lo, hi]."""
    a, b, c = coef
    out = []
    for y in np.roots([5 * c, 3 * b, a]):
        if abs(y.imag) < 1e-14 * max(1.0, abs(y.real)) and y.real > 0:
            x = math.sqrt(y.real)
            if lo < x < hi:
                out.append(x)
    return out


def quintic_image(coef, lo: float, hi: float) -> tuple[float, float]:
    """Exact image ``[min p, max p]`` of ``[lo, hi]`` under an odd quintic."""
    pts = [lo, hi, *_critical_points(coef, lo, hi)]
    vals = [_p(coef, x) for x in pts]
    return min(vals), max(vals)


def minimax_odd_quintic(lo: float, hi: float, *, tol: float = 1e-15, max_iter: int = 100):
    r"""The odd quintic that best approximates 1 on ``[lo, hi]`` (Remez exchange).

    Finds :math:`(a, b, c)` minimising :math:`\max_{x \in [lo, hi]} |1 - p(x)|`,
    :math:`p(x) = ax + bx^3 + cx^5`. The optimum equioscillates at four points
    :math:`lo < q < r < hi`: :math:`p - 1 = -E, +E, -E, +E` there, and
    :math:`q, r` are the positive roots of :math:`p'`. Each exchange solves the
    4 x 4 linear system for :math:`(a, b, c, E)` and moves :math:`q, r` to the
    new roots of :math:`p'`.

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
    if lo / hi > 1 - 1e-6:
        # interval of (numerical) width 0: the limit is the quintic with
        # p(u) = 1, p'(u) = p''(u) = 0, i.e. (15/8, -10/8, 3/8) rescaled to u
        return 15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5
    # start the exchange at the points where the limiting polynomial peaks
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    err_prev = math.inf
    for _ in range(max_iter):
        nodes = np.array([lo, q, r, hi])
        signs = np.array([1.0, -1.0, 1.0, -1.0])
        lhs = np.stack([nodes, nodes**3, nodes**5, signs], axis=1)
        a, b, c, err = np.linalg.solve(lhs, np.ones(4))
        roots = _critical_points((a, b, c), lo, hi)
        if len(roots) != 2:
            # only for intervals narrower than round-off can resolve, where the
            # limit polynomial is optimal to far below float64 precision
            return 15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5
        q, r = sorted(roots)
        if abs(err - err_prev) <= tol * max(1.0, abs(err)):
            break
        err_prev = err
    return float(a), float(b), float(c)


@lru_cache(maxsize=256)
def _schedule(lower: float, steps: int, cushion: float, safety: float):
    lo, hi = lower, 1.0
    coefs, errors = [], []
    for t in range(steps):
        design_lo = max(lo, cushion * hi)
        coef = minimax_odd_quintic(design_lo, hi)
        # re-centre: the true interval [lo, hi] maps to [p(lo), p(hi)] around 1
        img_lo, img_hi = quintic_image(coef, lo, hi)
        scale = 2.0 / (img_lo + img_hi)
        a, b, c = (scale * k for k in coef)
        if t < steps - 1 and safety != 1.0:
            a, b, c = a / safety, b / safety**3, c / safety**5
        coefs.append((a, b, c))
        lo, hi = quintic_image((a, b, c), lo, hi)
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
