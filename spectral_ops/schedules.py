r"""Exponent schedules for DynMuon-style training: ``p`` as a function of the step.

DynMuon moves the spectral power from ``p_max`` (gradient-descent-like, 1) to
``p_min`` (mildly negative) over training with a logistic curve:

.. math::

    p_t = p_{min} + \frac{p_{max} - p_{min}}{1 + \exp\bigl((t/T - c)/w\bigr)},

defaults ``p_max = 1``, ``p_min = -0.25``, ``c = w = 0.04``.

Every schedule returns :class:`fractions.Fraction` values on the grid
:math:`1/\text{denominator}` (default 16), the form :func:`~spectral_ops.power`
uses exactly. A finite grid also bounds how many distinct exponents a training
run sees, which matters where each exponent is a separate compilation
(``jax.jit`` with a static ``p``): at most ``2 * denominator + 1`` values in [-1, 1].
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable

__all__ = ["GridSchedule", "dynmuon_schedule", "linear_schedule", "cosine_schedule", "constant_schedule"]

Schedule = Callable[[int], Fraction]


class GridSchedule:
    """A schedule ``step -> Fraction`` that also lists every value it can take.

    ``values`` (ascending) lets a compiled training step select among
    precompiled exponents (e.g. ``jax.lax.switch``) instead of recompiling.
    """

    def __init__(self, fn: Callable[[int], Fraction], lo: Fraction, hi: Fraction,
                 denominator: int):
        self._fn = fn
        lo_k = math.floor(min(lo, hi) * denominator)
        hi_k = math.ceil(max(lo, hi) * denominator)
        self.values = tuple(Fraction(k, denominator) for k in range(lo_k, hi_k + 1))

    def __call__(self, step: int) -> Fraction:
        return self._fn(step)

    def index(self, step: int) -> int:
        """Position of ``schedule(step)`` in ``values``."""
        return self.values.index(self._fn(step))


def _check(total_steps, p_start, p_end, denominator):
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer; got {total_steps!r}.")
    for name, v in (("p_start", p_start), ("p_end", p_end)):
        if not (isinstance(v, (int, float, Fraction)) and -1 <= v <= 1):
            raise ValueError(f"{name} must be a number in [-1, 1]; got {v!r}.")
    if isinstance(denominator, bool) or not isinstance(denominator, int) or denominator < 1:
        raise ValueError(f"denominator must be a positive integer; got {denominator!r}.")


def _on_grid(p: float, denominator: int) -> Fraction:
    return Fraction(round(p * denominator), denominator)


# Module-level callables (not closures), so that schedules, and optimizers that
# hold them, pickle and torch.save.
class _Logistic:
    def __init__(self, total_steps, p_max, p_min, center, width, denominator):
        self.args = (total_steps, p_max, p_min, center, width, denominator)

    def __call__(self, step: int) -> Fraction:
        total_steps, p_max, p_min, center, width, denominator = self.args
        z = (step / total_steps - center) / width
        # logistic, written to stay finite for large |z|
        frac = math.exp(-z) / (1.0 + math.exp(-z)) if z > 0 else 1.0 / (1.0 + math.exp(z))
        return _on_grid(p_min + (p_max - p_min) * frac, denominator)


class _Linear:
    def __init__(self, total_steps, p_start, p_end, denominator):
        self.args = (total_steps, p_start, p_end, denominator)

    def __call__(self, step: int) -> Fraction:
        total_steps, p_start, p_end, denominator = self.args
        f = min(max(step / total_steps, 0.0), 1.0)
        return _on_grid(p_start + (p_end - p_start) * f, denominator)


class _Cosine(_Linear):
    def __call__(self, step: int) -> Fraction:
        total_steps, p_start, p_end, denominator = self.args
        f = min(max(step / total_steps, 0.0), 1.0)
        return _on_grid(p_end + (p_start - p_end) * 0.5 * (1 + math.cos(math.pi * f)),
                        denominator)


class _Constant:
    def __init__(self, value):
        self.value = value

    def __call__(self, step: int) -> Fraction:
        return self.value


def dynmuon_schedule(total_steps: int, *, p_max: float = 1.0, p_min: float = -0.25,
                     center: float = 0.04, width: float = 0.04,
                     denominator: int = 16) -> Schedule:
    r"""DynMuon's logistic schedule from ``p_max`` down to ``p_min``.

    Parameters
    ----------
    total_steps : int
        :math:`T`, the length of training.
    p_max, p_min : float
        Start and end exponents, in [-1, 1].
    center, width : float
        :math:`c` and :math:`w` as fractions of training: the drop is centred
        at step :math:`cT` and takes about :math:`8wT` steps.
    denominator : int
        Exponents are rounded to multiples of ``1/denominator``.

    Returns
    -------
    callable
        ``schedule(step) -> Fraction``.

    Examples
    --------
    >>> from spectral_ops.schedules import dynmuon_schedule
    >>> s = dynmuon_schedule(10_000)
    >>> s(0), s(400), s(1_000), s(10_000)
    (Fraction(11, 16), Fraction(3, 8), Fraction(0, 1), Fraction(-1, 4))

    With the defaults the curve starts at :math:`p_0 \approx 0.66`, not at
    ``p_max``: :math:`t = 0` is one width before the centre.
    """
    _check(total_steps, p_max, p_min, denominator)
    if not width > 0:
        raise ValueError(f"width must be positive; got {width!r}.")
    schedule = _Logistic(total_steps, p_max, p_min, center, width, denominator)
    return GridSchedule(schedule, schedule(0), _on_grid(p_min, denominator), denominator)


def linear_schedule(total_steps: int, p_start: float, p_end: float, *,
                    denominator: int = 16) -> Schedule:
    """Straight line from ``p_start`` (step 0) to ``p_end`` (``total_steps`` and after)."""
    _check(total_steps, p_start, p_end, denominator)
    schedule = _Linear(total_steps, p_start, p_end, denominator)
    return GridSchedule(schedule, schedule(0), schedule(total_steps), denominator)


def cosine_schedule(total_steps: int, p_start: float, p_end: float, *,
                    denominator: int = 16) -> Schedule:
    """Half cosine from ``p_start`` (step 0) to ``p_end`` (``total_steps`` and after)."""
    _check(total_steps, p_start, p_end, denominator)
    schedule = _Cosine(total_steps, p_start, p_end, denominator)
    return GridSchedule(schedule, schedule(0), schedule(total_steps), denominator)


def constant_schedule(p: float, *, denominator: int = 16) -> Schedule:
    """The same exponent at every step (Muon^p with a fixed ``p``).

    A float is rounded to the grid ``1/denominator`` (``0.3 -> 5/16``); pass a
    ``Fraction`` to keep it exactly.
    """
    _check(1, p, p, denominator)
    value = _on_grid(float(p), denominator) if not isinstance(p, Fraction) else p
    out = GridSchedule(_Constant(value), value, value, denominator)
    out.values = (value,)
    return out
