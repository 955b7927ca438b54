"""The ``spectral-ops`` command line.

``spectral-ops demo`` runs every polar, clip and power method on NumPy test matrices and
prints, for each: matrix products, time, accuracy against the exact map (the
output singular-value band above the floor for polar; the relative error and
the output's spectral norm for clip), and speed relative to the SVD route.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__
from .accuracy import spectral_report
from .clip import clip, clip_plan
from .power import power, power_plan
from .polar import polar, polar_plan
from .testing import from_spectrum, make_matrix

__all__ = ["main"]

DEMO_MATRICES = (
    ("gaussian", {}),
    ("ill", {"cond": 1e4}),
    ("gradient", {}),
)
DEMO_METHODS = ("auto", "polar_express", "gram", "jordan", "qdwh", "svd")
CLIP_DEMO_METHODS = ("auto", "polar", "newton", "svd")
#: clip test cases: (name, matrix kind, scale, tau as a fraction of s_max)
CLIP_CASES = (
    ("gaussian", "gaussian", 1.0, 0.5),
    ("far_above", "gaussian", 1.0, 1e-3),
    ("gradient", "gradient", 1.0, 0.1),
)


def _best_time(fn, repeat: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_demo(m: int = 256, n: int = 1024, dtype: str = "float32", repeat: int = 3,
             floor: float = 1e-3, seed: int = 0, file=None) -> list[dict]:
    """Run the demo and print its table; returns the rows as dicts."""
    file = sys.stdout if file is None else file
    rows = []
    print(f"spectral-ops {__version__} demo: polar(B) = U V^T on NumPy {np.__version__}, "
          f"B of shape ({m}, {n}), {dtype}, best of {repeat} runs", file=file)
    print(f"band: min/max singular value of the output on the input's singular "
          f"subspace above {floor:g} s_max (ideal 1/1); error: relative Frobenius error "
          f"there vs float64 SVD", file=file)
    header = f"{'matrix':10s} {'method':14s} {'runs':>13s} {'products':>8s} {'time [ms]':>10s} " \
             f"{'band min':>9s} {'band max':>9s} {'error':>9s} {'vs SVD':>7s}"
    for kind, kw in DEMO_MATRICES:
        print("", file=file)
        print(header, file=file)
        print("-" * len(header), file=file)
        B = make_matrix(kind, (m, n), seed=seed, **kw).astype(dtype)
        polar(B, method="polar_express")  # derive and cache the coefficients outside the timing
        t_svd, _ = _best_time(lambda: polar(B, method="svd"), repeat)
        for method in DEMO_METHODS:
            plan = polar_plan(B, method=method, floor=floor)
            t, Y = _best_time(lambda: polar(B, method=method, floor=floor), repeat)
            r = spectral_report(Y, B, floor=floor)
            runs = plan.method if method == "auto" else f"{plan.steps} steps" if plan.steps else "LAPACK"
            row = dict(matrix=kind, method=method, runs=runs, products=plan.matmuls, time_ms=1e3 * t,
                       band=r.band, error=r.rel_error, speedup=t_svd / t)
            rows.append(row)
            print(f"{kind:10s} {method:14s} {runs:>13s} {plan.matmuls:8d} {1e3 * t:10.1f} "
                  f"{r.band[0]:9.6f} {r.band[1]:9.6f} {r.rel_error:9.2e} {t_svd / t:6.2f}x",
                  file=file)
    print("", file=file)
    print("vs SVD: time of polar(method='svd') divided by the method's time (> 1: faster).",
          file=file)
    print("jordan (Muon's quintic) does not converge by design: its band is about [0.68, 1.13].",
          file=file)
    rows += _clip_demo(m, n, dtype, repeat, seed, file)
    rows += _power_demo(m, n, dtype, repeat, seed, file)
    return rows


def _clip_demo(m, n, dtype, repeat, seed, file) -> list[dict]:
    print("", file=file)
    print(f"clip(B, tau) = U min(s, tau) V^T; tau as a fraction of s_max; error: relative "
          f"Frobenius error vs float64 SVD; norm/tau: output spectral norm over tau (ideal <= 1)",
          file=file)
    header = f"{'matrix':10s} {'tau/s_max':>9s} {'method':8s} {'runs':>13s} {'products':>8s} " \
             f"{'time [ms]':>10s} {'error':>9s} {'norm/tau':>9s} {'vs SVD':>7s}"
    rows = []
    for name, kind, scale, frac in CLIP_CASES:
        print("", file=file)
        print(header, file=file)
        print("-" * len(header), file=file)
        B = make_matrix(kind, (m, n), seed=seed, scale=scale).astype(dtype)
        b64 = B.astype(np.float64)
        u, s, vh = np.linalg.svd(b64, full_matrices=False)
        tau = float(frac * s[0])
        exact = (u * np.minimum(s, tau)) @ vh
        clip(B, tau, method="polar")  # derive and cache the coefficients outside the timing
        t_svd, _ = _best_time(lambda: clip(B, tau, method="svd"), repeat)
        for method in CLIP_DEMO_METHODS:
            plan = clip_plan(B, tau, method=method)
            t, Y = _best_time(lambda: clip(B, tau, method=method), repeat)
            y = np.asarray(Y, dtype=np.float64)
            err = float(np.linalg.norm(y - exact) / np.linalg.norm(exact))
            top = float(np.linalg.norm(y, 2) / tau)
            runs = (plan.method if method == "auto" else
                    f"{plan.polar_steps}+{plan.sign_steps} steps" if plan.polar_steps else "LAPACK")
            rows.append(dict(matrix=name, method=method, runs=runs, products=plan.matmuls,
                             time_ms=1e3 * t, error=err, norm=top, speedup=t_svd / t))
            print(f"{name:10s} {frac:9.0e} {method:8s} {runs:>13s} {plan.matmuls:8d} "
                  f"{1e3 * t:10.1f} {err:9.2e} {top:9.6f} {t_svd / t:6.2f}x", file=file)
    print("", file=file)
    print("clip steps: polar-factor steps + sign steps. vs SVD: time of clip(method='svd') "
          "divided by the method's time.", file=file)
    return rows


POWER_DEMO_METHODS = ("auto", "newton", "svd")
POWER_DEMO_P = ("1/4", "1/2", "3/4", "-1/4")


def _power_demo(m, n, dtype, repeat, seed, file) -> list[dict]:
    from fractions import Fraction

    print("", file=file)
    print("power(B, p) = U s^p V^T on an input with s_min/s_max = 1e-2 (p < 0: the ridge map "
          "s (s^2 + (1e-3 ||B||_F)^2)^((p-1)/2)); error: relative Frobenius error vs float64 SVD",
          file=file)
    header = f"{'p':>5s} {'method':8s} {'runs':>16s} {'products':>8s} {'time [ms]':>10s} " \
             f"{'error':>9s} {'vs SVD':>7s}"
    print("", file=file)
    print(header, file=file)
    print("-" * len(header), file=file)
    r = min(m, n)
    B = from_spectrum(np.geomspace(1.0, 1e-2, r), (m, n), seed=seed).astype(dtype)
    u, s, vh = np.linalg.svd(B.astype(np.float64), full_matrices=False)
    fro = float(np.sqrt((s * s).sum()))
    rows = []
    for ptext in POWER_DEMO_P:
        p = Fraction(ptext)
        f = s ** float(p) if p > 0 else s * (s * s + (1e-3 * fro) ** 2) ** ((float(p) - 1) / 2)
        exact = (u * f) @ vh
        power(B, p, method="newton")  # coefficient caches outside the timing
        t_svd, _ = _best_time(lambda: power(B, p, method="svd"), repeat)
        for method in POWER_DEMO_METHODS:
            plan = power_plan(B, p, method=method)
            t, Y = _best_time(lambda: power(B, p, method=method), repeat)
            err = float(np.linalg.norm(np.asarray(Y, np.float64) - exact) / np.linalg.norm(exact))
            runs = (plan.method if method == "auto" else "LAPACK" if plan.route == "svd" else
                    f"{plan.polar_steps}+{plan.newton_steps} steps, r={plan.root}")
            rows.append(dict(p=ptext, method=method, runs=runs, products=plan.matmuls,
                             time_ms=1e3 * t, error=err, speedup=t_svd / t))
            print(f"{ptext:>5s} {method:8s} {runs:>16s} {plan.matmuls:8d} {1e3 * t:10.1f} "
                  f"{err:9.2e} {t_svd / t:6.2f}x", file=file)
    print("", file=file)
    print("power steps: Polar Express steps + coupled Newton steps for the inverse r-th root.",
          file=file)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spectral-ops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"spectral-ops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every polar, clip and power method on NumPy test matrices")
    demo.add_argument("--shape", type=int, nargs=2, default=(256, 1024), metavar=("M", "N"),
                      help="matrix shape (default: 256 1024)")
    demo.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    demo.add_argument("--repeat", type=int, default=3, help="timed runs per method (best is kept)")
    demo.add_argument("--floor", type=float, default=1e-3,
                      help="relative singular value floor for the band (default: 1e-3)")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        if min(args.shape) < 1 or args.repeat < 1:
            parser.error("--shape values and --repeat must be positive")
        run_demo(args.shape[0], args.shape[1], args.dtype, args.repeat, args.floor, args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
