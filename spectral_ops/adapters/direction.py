"""Framework-free pieces shared by the torch and optax adapters.

The spectral-update rule of every optimizer here is

1. momentum on the gradient (each ecosystem's own convention),
2. a direction from the core: ``polar``, ``clip`` (``tau``) or ``power`` (``p``),
3. a shape-dependent scale of the learning rate (``SCALES``),
4. decoupled weight decay.

Fan-in and fan-out: torch stores a linear weight as ``(out, in)``, flax as
``(in, out)``. A weight of more than two dimensions is reshaped to a matrix by
the rule of its adapter (documented there) before the direction is computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import spectral_ops

#: Learning-rate scale rules, by name. ``fan_out x fan_in`` is the matrix shape.
SCALES = ("spectral", "rms", "jordan", "none")


def scale_factor(rule: str, fan_out: int, fan_in: int) -> float:
    r"""Multiplier of the learning rate for a ``fan_out x fan_in`` weight.

    ``"spectral"``: :math:`\sqrt{\text{fan\_out}/\text{fan\_in}}`, the spectral
    condition of muP (Yang, Simon and Bernstein, arXiv 2310.17813): a polar
    update has spectral norm 1, so the step has spectral norm
    ``lr * sqrt(fan_out / fan_in)``. ``"rms"``: Moonlight's
    :math:`0.2\sqrt{\max(m, n)}`, matching AdamW's update RMS (arXiv 2502.16982).
    ``"jordan"``: Keller Jordan's :math:`\sqrt{\max(1, \text{fan\_out}/\text{fan\_in})}`
    (``torch.optim.Muon``'s and ``optax.contrib.muon``'s default). ``"none"``: 1.
    """
    if rule == "spectral":
        return math.sqrt(fan_out / fan_in)
    if rule == "rms":
        return 0.2 * math.sqrt(max(fan_out, fan_in))
    if rule == "jordan":
        return math.sqrt(max(1.0, fan_out / fan_in))
    if rule == "none":
        return 1.0
    raise ValueError(f"scale must be one of {SCALES}; got {rule!r}.")


@dataclass(frozen=True)
class Direction:
    """Which spectral map turns the momentum into an update direction.

    ``kind`` is ``"polar"``, ``"clip"`` or ``"power"``; ``tau`` is clip's radius;
    ``p`` a fixed exponent or ``p_schedule`` a callable step -> exponent;
    ``method``, ``steps`` and ``compute_dtype`` pass through to the core.
    """

    kind: str = "polar"
    method: str = "auto"
    steps: int | None = None
    tau: float | None = None
    p: float | Fraction | None = None
    p_schedule: Callable[[int], float] | None = None
    compute_dtype: object = None

    def __post_init__(self):
        if self.kind not in ("polar", "clip", "power"):
            raise ValueError(f"direction must be 'polar', 'clip' or 'power'; got {self.kind!r}.")
        if self.kind == "clip" and not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"MuCon needs tau > 0 (the spectral-norm radius); got {self.tau!r}.")
        if self.kind == "power" and (self.p is None) == (self.p_schedule is None):
            raise ValueError("power needs exactly one of p (a number) or p_schedule (a callable).")
        if self.kind == "power" and self.steps is not None:
            raise ValueError("steps does not apply to power (its step counts follow from p and "
                             "the dtype); leave it as None.")
        if self.p_schedule is not None and not callable(self.p_schedule):
            raise ValueError(f"p_schedule must be callable (step -> p); got {self.p_schedule!r}.")

    def exponent(self, step: int):
        """The exponent at ``step`` (0-based) for ``power``."""
        return self.p if self.p_schedule is None else self.p_schedule(step)

    def __call__(self, x, step: int = 0):
        """Apply the map to a matrix or a stack of matrices ``x``."""
        if self.kind == "polar":
            return spectral_ops.polar(x, method=self.method, steps=self.steps,
                                      compute_dtype=self.compute_dtype)
        if self.kind == "clip":
            return spectral_ops.clip(x, self.tau, method=self.method, steps=self.steps,
                                     compute_dtype=self.compute_dtype)
        return spectral_ops.power(x, self.exponent(step), method=self.method,
                                  compute_dtype=self.compute_dtype)
