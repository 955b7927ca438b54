"""Measure the accuracy table of docs/polar.md and print it as Markdown.

Runs every polar method on :func:`spectral_ops.testing.make_matrix` inputs
("gaussian", "ill" with condition 1e4, "gradient"; seed 0) of shape
(256, 1024) in float32 and float64 NumPy, and reports the band and the
relative error of :func:`spectral_ops.spectral_report` (default floor 1e-3).
If PyTorch is installed it also prints the bfloat16 bands of "polar_express"
and "gram" at shapes (256, 1024) and (128, 2048). Run it from the repository
root:

    python docs/plots/polar_accuracy_table.py

The Sphinx build does not run this script; paste its output into the page.
"""

from __future__ import annotations

import numpy as np

import spectral_ops as so
from spectral_ops.testing import make_matrix

METHODS = ("polar_express", "gram", "jordan", "qdwh", "svd")
KINDS = ("gaussian", "ill", "gradient")
DTYPES = (np.float32, np.float64)
SHAPE = (256, 1024)


def fmt_value(v: float) -> str:
    """A band end: 6 decimals, or 1 +- the deviation when that rounds to 1."""
    d = v - 1.0
    if d == 0.0:
        return "1"
    if abs(d) < 5e-7:
        return f"1 {'+' if d > 0 else '−'} {abs(d):.1e}"
    return f"{v:.6f}"


def main() -> None:
    rows = {}
    steps = {}
    for dt in DTYPES:
        for kind in KINDS:
            B = make_matrix(kind, SHAPE, cond=1e4, seed=0, dtype=dt)
            for method in METHODS:
                plan = so.polar_plan(B, method=method)
                r = so.spectral_report(so.polar(B, method=method), B)
                rows[method, kind, dt] = r
                steps[method, dt] = plan.steps
    head = ("| method | input | float32 steps | float32 band | float32 rel_error "
            "| float64 steps | float64 band | float64 rel_error |")
    print(head)
    print("| --- | --- | ---: | --- | ---: | ---: | --- | ---: |")
    for method in METHODS:
        for kind in KINDS:
            cells = [f"`{method}`", kind]
            for dt in DTYPES:
                r = rows[method, kind, dt]
                lo, hi = r.band
                cells += [str(steps[method, dt]), f"[{fmt_value(lo)}, {fmt_value(hi)}]",
                          f"{r.rel_error:.1e}"]
            print("| " + " | ".join(cells) + " |")
    print()
    for dt in DTYPES:
        B = make_matrix("gaussian", SHAPE, seed=0, dtype=dt)
        print(f"auto ({np.dtype(dt).name}) resolves to {so.polar_plan(B).method!r} here")
    bfloat16_bands()


def bfloat16_bands() -> None:
    """Bands of the 16-bit runs (PyTorch on the CPU), if PyTorch is installed."""
    try:
        import torch
    except ImportError:
        return
    print()
    for shape in (SHAPE, (128, 2048)):
        for kind in KINDS:
            B = torch.from_numpy(make_matrix(kind, shape, cond=1e4, seed=0, dtype=np.float32))
            B = B.to(torch.bfloat16)
            for method in ("polar_express", "gram"):
                steps = so.polar_plan(B, method=method).steps
                r = so.spectral_report(so.polar(B, method=method), B)
                print(f"bfloat16 {shape} {kind:8s} {method:13s} steps={steps} "
                      f"band=[{r.band[0]:.4f}, {r.band[1]:.4f}] rel_error={r.rel_error:.1e}")


if __name__ == "__main__":
    main()
