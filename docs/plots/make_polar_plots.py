"""Draw the singular-value maps of the polar iterations for the documentation.

Writes ``docs/_static/polar_maps.png``: the composed map
x -> p_T(...p_1(x)) on [1e-4, 1.2] for

* ``"polar_express"`` with the schedule :func:`spectral_ops.polar` uses by
  default for a 256 x 1024 float32 input (floor 1e-3, tol 1e-4), and
* ``"jordan"`` (Muon's quintic, 5 steps),

where x is a singular value of the normalised input. Run it from the
repository root after changing the coefficients, and commit the PNG:

    python docs/plots/make_polar_plots.py

The Sphinx build does not run this script.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spectral_ops import polar_express_coefficients, polar_plan  # noqa: E402
from spectral_ops.coefficients import JORDAN_COEFFICIENTS  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "_static" / "polar_maps.png"


def compose(coefs, x):
    """Apply the odd quintics in order to every entry of ``x`` (float64)."""
    y = np.array(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for a, b, c in coefs:
            y = a * y + b * y**3 + c * y**5
            # past the design interval the map leaves every plot range; stop
            # the values there instead of overflowing
            y = np.clip(np.nan_to_num(y, nan=1e6, posinf=1e6, neginf=-1e6), -1e6, 1e6)
    return y


def main() -> None:
    plan = polar_plan(np.zeros((256, 1024), np.float32), method="polar_express")
    pe = polar_express_coefficients(plan.steps, plan.lower)
    jordan = [JORDAN_COEFFICIENTS] * 5

    x = np.geomspace(1e-4, 1.2, 4000)
    curves = [
        (f"polar_express ({plan.steps} steps, design interval "
         f"[{plan.lower:.1e}, 1])", compose(pe, x), "C0"),
        ("jordan (5 steps)", compose(jordan, x), "C1"),
    ]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), constrained_layout=True)
    for label, y, color in curves:
        ax1.plot(x, y, color=color, lw=1.4, label=label)
        ax2.plot(x, np.maximum(np.abs(y - 1.0), 1e-16), color=color, lw=1.2, label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1.2)
        ax.axvline(plan.lower, color="0.5", lw=0.8, ls="--")
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("singular value x of the normalised input")
    ax1.axhline(1.0, color="k", lw=0.6)
    ax1.set_ylim(-0.05, 1.45)
    ax1.set_ylabel(r"$p_T(\cdots p_1(x))$")
    ax1.set_title("composed map")
    ax1.legend(loc="upper left", fontsize=7.5, frameon=False)
    ax2.set_yscale("log")
    ax2.set_ylim(1e-8, 2.0)
    ax2.set_ylabel(r"$|p_T(\cdots p_1(x)) - 1|$")
    ax2.set_title("distance from 1")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
