"""Draw the accuracy of :func:`spectral_ops.power` and the exponent schedules.

Writes two PNGs into ``docs/_static/``:

``power_accuracy.png``
    Left: relative Frobenius error of ``power(B, p, method="newton")`` against
    the condition number ``s_max / s_min`` of ``B``, for ``p`` in
    {1/4, 1/2, 3/4}, float32 and float64. ``B`` is 128 x 512, built by
    :func:`spectral_ops.testing.from_spectrum` with singular values log-spaced
    from 1 to ``1 / cond`` (Haar singular vectors), ``cond`` from 1e1 to 1e6.
    Right: relative error against ``p`` on the grid ``k / 16``,
    ``k = -16 .. 15`` without 0, at condition 1e2 (float32) and 1e4
    (float64). Negative ``p`` runs the ridge map (default ``eps = 1e-3``) and
    is compared with the exact ridge map
    ``s (s^2 + eps^2 ||B||_F^2)^((p - 1) / 2)``.

``power_schedules.png``
    The four schedules of :mod:`spectral_ops.schedules` over 10 000 steps.

The reference is the exact map computed from the float64 SVD (NumPy) of the
input as rounded to its dtype. Run it from the repository root after changing
the power iterations or the schedules, and commit the PNGs:

    python docs/plots/make_power_plots.py

It also prints the numbers quoted in docs/power.md. The Sphinx build does not
run this script.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spectral_ops import power, power_plan  # noqa: E402
from spectral_ops.schedules import (constant_schedule, cosine_schedule,  # noqa: E402
                                    dynmuon_schedule, linear_schedule)
from spectral_ops.testing import from_spectrum  # noqa: E402

STATIC = Path(__file__).resolve().parent.parent / "_static"
OUT_ACC = STATIC / "power_accuracy.png"
OUT_SCHED = STATIC / "power_schedules.png"
SHAPE = (128, 512)
CONDS = np.logspace(1, 6, 11)
P_COND = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))
P_GRID = [Fraction(k, 16) for k in range(-16, 16) if k != 0]
COND_VS_P = {"float32": 1e2, "float64": 1e4}
NEG_EPS = 1e-3  # the default ridge of power for p < 0
DPI = 110


def exact_map(b64: np.ndarray, p: Fraction):
    """The exact ``U f(s) V^T`` (float64 SVD), its singular triples and ``f(s)``."""
    u, s, vh = np.linalg.svd(b64, full_matrices=False)
    if p > 0:
        f = s ** float(p)
    else:
        fro = np.sqrt(np.sum(s * s))
        f = s * (s * s + (NEG_EPS * fro) ** 2) ** ((float(p) - 1.0) / 2.0)
    return (u * f) @ vh, u, s, vh, f


def measure(b: np.ndarray, p: Fraction, dtype) -> dict:
    """Relative error of ``power(b.astype(dtype), p)`` and its largest overshoot."""
    bd = b.astype(dtype)
    ref, u, s, vh, f = exact_map(bd.astype(np.float64), p)
    y = power(bd, p, method="newton").astype(np.float64)
    d = np.einsum("ji,jk,ik->i", u, y, vh)  # u_i^T Y v_i
    return {
        "rel": np.linalg.norm(y - ref) / np.linalg.norm(ref),
        "finite": bool(np.isfinite(y).all()),
        # largest amount by which an output singular value exceeds its exact value,
        # in units of the largest exact value
        "over": max(0.0, float(np.max(d - f)) / float(np.max(f))),
    }


def accuracy_figure() -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.7), constrained_layout=True)
    markers = {"float32": "o", "float64": "s"}
    colors = {Fraction(1, 4): "C0", Fraction(1, 2): "C1", Fraction(3, 4): "C2"}

    print("relative error against condition number (128 x 512, method='newton')")
    for dtype in ("float32", "float64"):
        for p in P_COND:
            rels = []
            for cond in CONDS:
                b = from_spectrum(np.geomspace(1.0, 1.0 / cond, SHAPE[0]), SHAPE, seed=0)
                r = measure(b, p, np.dtype(dtype))
                rels.append(r["rel"])
                print(f"  {dtype} p={str(p):4s} cond={cond:8.1e}  rel {r['rel']:.2e}  "
                      f"overshoot {r['over']:.1e} s_max^p  finite {r['finite']}")
            ax1.loglog(CONDS, rels, marker=markers[dtype], ms=3.5, mfc="none", lw=1.0,
                       color=colors[p], ls="-" if dtype == "float32" else "--",
                       label=f"p = {p}, {dtype}")
    # the default floors: singular values below floor * s_max are outside the guarantee
    for cond, dtype in ((1e3, "float32"), (1e5, "float64")):
        ax1.axvline(cond, color="0.5", lw=0.7, ls=":")
        ax1.text(cond * 1.15, 1e-9, f"{dtype} floor", fontsize=7, color="0.35", rotation=90,
                 va="bottom")
    ax1.set_xlabel(r"condition number $s_{max}/s_{min}$")
    ax1.set_ylabel("relative Frobenius error")
    ax1.set_title("error against condition (128 x 512)")
    ax1.legend(fontsize=7, frameon=False, ncol=2, loc="upper left")
    ax1.set_ylim(1e-16, 3.0)

    print("relative error against p (negative p: ridge map, eps = 1e-3)")
    for dtype, cond in COND_VS_P.items():
        b = from_spectrum(np.geomspace(1.0, 1.0 / cond, SHAPE[0]), SHAPE, seed=0)
        rels = []
        for p in P_GRID:
            r = measure(b, p, np.dtype(dtype))
            plan = power_plan(b.astype(dtype), p, method="newton")
            rels.append(r["rel"])
            print(f"  {dtype} cond={cond:.0e} p={str(p):6s} {plan.route:10s} "
                  f"matmuls {plan.matmuls:3d}  rel {r['rel']:.2e}  overshoot {r['over']:.1e}")
        ax2.semilogy([float(p) for p in P_GRID], rels, marker=markers[dtype], ms=3.5,
                     mfc="none", lw=1.0, color="C3" if dtype == "float32" else "C4",
                     label=f"{dtype}, condition {cond:.0e}")
    ax2.axvline(0.0, color="0.6", lw=0.6)
    ax2.set_xlabel(r"exponent $p$ (multiples of 1/16)")
    ax2.set_title("error against p (p < 0: ridge map)")
    ax2.legend(fontsize=7, frameon=False, loc="center left")
    ax2.set_ylim(1e-16, 3.0)
    fig.savefig(OUT_ACC, dpi=DPI)
    plt.close(fig)
    print(f"wrote {OUT_ACC} ({OUT_ACC.stat().st_size / 1024:.0f} KiB)")


def schedules_figure() -> None:
    total = 10_000
    steps = np.arange(total + 1)
    schedules = [
        ("dynmuon_schedule(10_000)", dynmuon_schedule(total)),
        ("linear_schedule(10_000, 1, -0.25)", linear_schedule(total, 1.0, -0.25)),
        ("cosine_schedule(10_000, 1, -0.25)", cosine_schedule(total, 1.0, -0.25)),
        ("constant_schedule(0.5)", constant_schedule(0.5)),
    ]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), constrained_layout=True)
    for i, (label, sched) in enumerate(schedules):
        values = np.array([float(sched(int(t))) for t in steps])
        print(f"  {label}: p(0) = {sched(0)}, p(400) = {sched(400)}, p(1000) = "
              f"{sched(1000)}, p(2000) = {sched(2000)}, p(10000) = {sched(total)}, "
              f"{len(set(values))} distinct values")
        ax.plot(steps, values, drawstyle="steps-post", lw=1.2, color=f"C{i}", label=label)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel(r"exponent $p$")
    ax.set_yticks([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0])
    ax.legend(fontsize=7, frameon=False)
    fig.savefig(OUT_SCHED, dpi=DPI)
    plt.close(fig)
    print(f"wrote {OUT_SCHED} ({OUT_SCHED.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    STATIC.mkdir(parents=True, exist_ok=True)
    accuracy_figure()
    schedules_figure()


if __name__ == "__main__":
    main()
