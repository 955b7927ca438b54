"""The ``spectral-ops`` command line.

``spectral-ops demo`` runs every polar, clip and power method on test matrices
(Gaussian, ill-conditioned, gradient-like) and prints, for each: what runs (from
the plan), its matrix products, its time, its accuracy against the exact map
computed from a float64 SVD, and its speed relative to the SVD route.

Timings are interleaved: in each of ``--repeat`` rounds every method of a row
group (the SVD route included) runs once, in turn, and each method keeps its
best time. All the ratios of a group therefore come from the same rounds, and
the SVD row's ratio is 1 by construction.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from fractions import Fraction

import array_api_compat
import numpy as np

from . import __version__
from .accuracy import to_numpy
from .clip import clip, clip_plan
from .polar import polar, polar_plan
from .power import power, power_plan
from .routing import (CLIP_METHODS, EIGH_MIN_FLOOR, NEGATIVE_POWER_EPS, POLAR_METHODS,
                      POWER_METHODS, eigh_available)
from .testing import make_matrix

__all__ = ["main", "run_demo", "DEMO_PRESETS", "DEMO_MATRICES", "BACKENDS"]

#: The test matrices: (name, keyword arguments of :func:`~spectral_ops.testing.make_matrix`).
DEMO_MATRICES = (
    ("gaussian", {}),
    ("ill", {"cond": 1e4}),
    ("gradient", {}),
)
#: clip's threshold per test matrix, as a fraction of its largest singular value.
CLIP_TAU = {"gaussian": 0.5, "ill": 1e-2, "gradient": 0.1}
#: Method order in the tables: ``auto`` first, the SVD reference last.
POLAR_DEMO_METHODS = ("auto",) + tuple(m for m in POLAR_METHODS if m not in ("auto", "svd")) \
    + ("svd",)
CLIP_DEMO_METHODS = ("auto",) + tuple(m for m in CLIP_METHODS if m not in ("auto", "svd")) \
    + ("svd",)
POWER_DEMO_METHODS = ("auto",) + tuple(m for m in POWER_METHODS if m not in ("auto", "svd")) \
    + ("svd",)
#: The presets: ``--quick``, the default and ``--full``; ``--shape`` and
#: ``--repeat`` override theirs.
DEMO_PRESETS = {
    "quick": {"shape": (128, 512), "repeat": 1, "powers": ("1/2", "-1/4")},
    "default": {"shape": (256, 1024), "repeat": 2, "powers": ("1/4", "1/2", "-1/4")},
    "full": {"shape": (512, 2048), "repeat": 3,
             "powers": ("1/4", "1/3", "1/2", "3/4", "-1/4", "-1")},
}
#: Array libraries the demo converts its NumPy test matrices to.
BACKENDS = ("numpy", "torch", "jax", "array_api_strict")


# --- backends ----------------------------------------------------------------------


class _Backend:
    """Conversion of the NumPy test matrices and the wait for a result."""

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.module = importlib.import_module(name)  # ImportError: not installed
        self.version = getattr(self.module, "__version__", "")
        if name == "jax" and dtype == "float64":
            self.module.config.update("jax_enable_x64", True)

    def asarray(self, a: np.ndarray):
        if self.name == "numpy":
            return a
        if self.name == "torch":
            return self.module.from_numpy(np.ascontiguousarray(a))
        if self.name == "jax":
            return self.module.numpy.asarray(a)
        return self.module.asarray(a)

    def wait(self, y):
        """Block until ``y`` is computed (JAX dispatches asynchronously)."""
        if self.name == "jax":
            y.block_until_ready()
        return y


# --- timing and accuracy -------------------------------------------------------------


def _machine() -> dict:
    """CPU count and 1-minute load average (None where the platform has none)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"cpus": os.cpu_count(), "load_avg": load}


def _time_group(calls: dict, repeat: int, backend: _Backend) -> tuple[dict, dict]:
    """Best time and last output of each call, from ``repeat`` interleaved rounds.

    Round-robin: each round runs every call once, in turn, so that slow
    phases of a busy machine hit all of them alike. JAX and PyTorch get one
    untimed round first (JAX compiles every operation on its first call).
    """
    best = dict.fromkeys(calls, math.inf)
    out = {}
    if backend.name in ("jax", "torch"):
        for fn in calls.values():
            backend.wait(fn())
    for _ in range(repeat):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            y = backend.wait(fn())
            best[key] = min(best[key], max(time.perf_counter() - t0, 1e-9))
            out[key] = y
    return best, out


class _Reference:
    """The float64 SVD of one input, reused for the accuracy of every output.

    The error is :func:`~spectral_ops.spectral_report`'s ``rel_error``: the
    relative Frobenius error of ``Y`` on the right-singular subspace above the
    floor, against ``U f(s) V^T``; the band is its ``band``. One SVD per input
    instead of one per report.
    """

    def __init__(self, B: np.ndarray, floor: float):
        self.u, self.s, vh = np.linalg.svd(np.asarray(B, np.float64), full_matrices=False)
        self.above = (self.s >= floor * self.s[0]) & (self.s > 0)
        self.v_above = vh[self.above].T

    def accuracy(self, Y, fs: np.ndarray, band: bool = False):
        """(error, band or None, Y as float64 NumPy) of ``Y`` against the map with values ``fs``."""
        y = to_numpy(Y)
        yv = y @ self.v_above
        exact = self.u[:, self.above] * fs[self.above]
        den = float(np.linalg.norm(exact))
        err = float(np.linalg.norm(yv - exact)) / (den if den > 0 else 1.0)
        return err, (_singular_range(yv) if band else None), y


def _singular_range(a: np.ndarray) -> tuple[float, float]:
    """Smallest and largest singular value of ``a`` (float64), from the eigenvalues of
    its smaller Gram matrix: cheaper than an SVD, and exact to about 1e-16 relative
    for the values near 1 that the demo reads."""
    g = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    w = np.linalg.eigvalsh(g)
    return float(np.sqrt(max(w[0], 0.0))), float(np.sqrt(max(w[-1], 0.0)))


def _polar_values(s: np.ndarray) -> np.ndarray:
    return (s > 64 * np.finfo(np.float64).eps * s[0]).astype(np.float64)


def _power_values(s: np.ndarray, p: Fraction, eps) -> np.ndarray:
    """``s^p``, or the ridge map ``s (s^2 + eps^2 ||B||_F^2)^((p-1)/2)`` where ``eps`` is set."""
    if eps is None:
        return np.where(s > 0, s, 1.0) ** float(p) * (s > 0)
    fro = float(np.sqrt(np.sum(s * s)))
    return s * (s * s + (eps * fro) ** 2) ** ((float(p) - 1) / 2)


# --- the three tables ----------------------------------------------------------------


def _steps(plan) -> str:
    if plan.method in ("svd", "eigh", "identity"):
        return "-"
    if hasattr(plan, "sign_steps"):
        return f"{plan.polar_steps}+{plan.sign_steps}"
    if hasattr(plan, "root_steps"):
        return f"{plan.polar_steps}+{plan.root_steps}"
    return str(plan.steps)


def _runs(plan) -> str:
    """What a plan runs, in a few characters."""
    if hasattr(plan, "route"):  # PowerPlan
        if plan.route in ("polar-root", "gram-ridge"):
            it = f"/{plan.polar_iteration}" if plan.polar_iteration else ""
            return f"{plan.route}{it} r={plan.root}"
        return plan.route
    if getattr(plan, "polar_iteration", None):  # ClipPlan
        return f"{plan.method}/{plan.polar_iteration}"
    return plan.method


def _row(map_name, matrix, param, method, plan, t, t_svd, err, **extra) -> dict:
    return dict(map=map_name, matrix=matrix, param=param, method=method, runs=_runs(plan),
                steps=_steps(plan), products=int(plan.matmuls), gflop=plan.flops / 1e9,
                time_ms=1e3 * t, vs_svd=t_svd / t, error=err, **extra)


def _header(file, columns):
    line = " ".join(f"{name:{fmt}}" for name, fmt in columns)
    print("", file=file)
    print(line, file=file)
    print("-" * len(line), file=file)


def _served(methods, x, floor):
    """``methods`` without ``"eigh"`` where it refuses ``x`` (float64 inputs, JAX
    without ``jax_enable_x64``) or ``floor``."""
    xp = array_api_compat.array_namespace(x)
    if eigh_available(xp, x, x.dtype) and floor >= EIGH_MIN_FLOOR:
        return methods
    return tuple(m for m in methods if m != "eigh")


def _polar_rows(name, x, ref, cfg, backend, file) -> list[dict]:
    floor = cfg["floor"]
    methods = _served(POLAR_DEMO_METHODS, x, floor)
    plans = {m: polar_plan(x, method=m, floor=floor) for m in methods}  # derives coefficients
    calls = {m: (lambda m=m: polar(x, method=m, floor=floor)) for m in methods}
    best, out = _time_group(calls, cfg["repeat"], backend)
    rows = []
    for m in methods:
        err, band, _ = ref.accuracy(out[m], _polar_values(ref.s), band=True)
        row = _row("polar", name, None, m, plans[m], best[m], best["svd"], err,
                   band=list(band))
        rows.append(row)
        print(f"{name:9s} {m:14s} {row['runs']:14s} {row['steps']:>5s} {row['products']:8d} "
              f"{row['time_ms']:10.1f} {band[0]:9.6f} {band[1]:9.6f} {err:9.2e} "
              f"{row['vs_svd']:6.2f}x", file=file)
    return rows


def _clip_rows(name, x, ref, cfg, backend, file) -> list[dict]:
    frac = CLIP_TAU[name]
    tau = float(frac * ref.s[0])
    floor = cfg["floor"]
    methods = _served(CLIP_DEMO_METHODS, x, floor)
    plans = {m: clip_plan(x, tau, method=m, floor=floor) for m in methods}
    calls = {m: (lambda m=m: clip(x, tau, method=m, floor=floor)) for m in methods}
    best, out = _time_group(calls, cfg["repeat"], backend)
    rows = []
    for m in methods:
        err, _, y = ref.accuracy(out[m], np.minimum(ref.s, tau))
        top = _singular_range(y)[1] / tau
        row = _row("clip", name, frac, m, plans[m], best[m], best["svd"], err, tau=tau,
                   norm_over_tau=top)
        rows.append(row)
        print(f"{name:9s} {frac:9.0e} {m:7s} {row['runs']:18s} {row['steps']:>5s} "
              f"{row['products']:8d} {row['time_ms']:10.1f} {err:9.2e} {top:9.6f} "
              f"{row['vs_svd']:6.2f}x", file=file)
    return rows


def _power_rows(name, x, ref, cfg, backend, file) -> list[dict]:
    floor = cfg["floor"]
    methods = _served(POWER_DEMO_METHODS, x, floor)
    rows = []
    for ptext in cfg["powers"]:
        p = Fraction(ptext)
        plans = {m: power_plan(x, p, method=m, floor=floor) for m in methods}
        calls = {m: (lambda m=m: power(x, p, method=m, floor=floor)) for m in methods}
        best, out = _time_group(calls, cfg["repeat"], backend)
        fs = _power_values(ref.s, p, plans["svd"].eps)
        for m in methods:
            err, _, _ = ref.accuracy(out[m], fs)
            row = _row("power", name, ptext, m, plans[m], best[m], best["svd"], err)
            rows.append(row)
            print(f"{name:9s} {ptext:>5s} {m:7s} {row['runs']:30s} {row['steps']:>6s} "
                  f"{row['products']:8d} {row['time_ms']:10.1f} {err:9.2e} "
                  f"{row['vs_svd']:6.2f}x", file=file)
    return rows


_POLAR_COLUMNS = (("matrix", "9s"), ("method", "14s"), ("runs", "14s"), ("steps", ">5s"),
                  ("products", ">8s"), ("time [ms]", ">10s"), ("band min", ">9s"),
                  ("band max", ">9s"), ("error", ">9s"), ("vs SVD", ">7s"))
_CLIP_COLUMNS = (("matrix", "9s"), ("tau/s_max", ">9s"), ("method", "7s"), ("runs", "18s"),
                 ("steps", ">5s"), ("products", ">8s"), ("time [ms]", ">10s"),
                 ("error", ">9s"), ("norm/tau", ">9s"), ("vs SVD", ">7s"))
_POWER_COLUMNS = (("matrix", "9s"), ("p", ">5s"), ("method", "7s"), ("runs", "30s"),
                  ("steps", ">6s"), ("products", ">8s"), ("time [ms]", ">10s"),
                  ("error", ">9s"), ("vs SVD", ">7s"))


def run_demo(m: int = 256, n: int = 1024, dtype: str = "float32", repeat: int = 3,
             floor: float = 1e-3, seed: int = 0, backend: str = "numpy",
             powers=DEMO_PRESETS["default"]["powers"], file=None) -> list[dict]:
    """Run the demo, print its tables to ``file`` (default: stdout) and return its rows.

    Each row is a dict: ``map`` (polar, clip, power), ``matrix``, ``param`` (clip:
    tau as a fraction of s_max; power: p), ``method`` (as requested), ``runs`` and
    ``steps`` (what the plan runs), ``products`` and ``gflop`` (per matrix, from the
    plan), ``time_ms`` (best of ``repeat`` interleaved rounds), ``vs_svd`` (the
    SVD route's time over this one's, from the same rounds), ``error`` (relative
    Frobenius error above ``floor`` against the exact map of a float64 SVD), and
    ``band`` (polar) or ``tau`` and ``norm_over_tau`` (clip).

    Raises ImportError if ``backend`` is not installed.
    """
    file = sys.stdout if file is None else file
    be = _Backend(backend, dtype)
    cfg = {"floor": floor, "repeat": repeat, "powers": tuple(powers)}
    lib = "NumPy" if backend == "numpy" else f"{backend} {be.version}".strip()
    print(f"spectral-ops {__version__} demo on {lib} (NumPy {np.__version__}): B of shape "
          f"({m}, {n}), {dtype}, seed {seed}; time: best of {repeat} interleaved "
          f"round{'s' if repeat > 1 else ''}", file=file)
    print(f"error: relative Frobenius error against the exact map of a float64 SVD, on the "
          f"input's right-singular subspace above {floor:g} s_max", file=file)
    print("vs SVD: time of the method='svd' row over the method's time, from the same "
          "rounds (> 1: faster than the SVD)", file=file)
    machine = _machine()
    if machine["load_avg"] is not None and machine["cpus"] \
            and machine["load_avg"] >= machine["cpus"]:
        print(f"note: this machine is busy (load average {machine['load_avg']:g} on "
              f"{machine['cpus']} CPUs). Multithreaded BLAS and LAPACK slow down many times "
              f"over when their threads compete for cores, so absolute times are not "
              f"representative; OPENBLAS_NUM_THREADS=1 (or OMP_NUM_THREADS=1) gives steadier "
              f"numbers there.", file=file)
    inputs = []
    for name, kw in DEMO_MATRICES:
        B = make_matrix(name, (m, n), seed=seed, **kw).astype(dtype)
        inputs.append((name, be.asarray(B), _Reference(B, floor)))
    rows = []

    print("", file=file)
    print("polar(B) = U V^T. band: smallest and largest singular value of the output on "
          "that subspace (ideal 1 and 1)", file=file)
    _header(file, _POLAR_COLUMNS)
    for args in inputs:
        rows += _polar_rows(*args, cfg, be, file)
    print("jordan (Muon's quintic) does not converge by design: its band is about "
          "[0.68, 1.13] on Gaussian inputs.", file=file)

    print("", file=file)
    print("clip(B, tau) = U min(s, tau) V^T. steps: polar factor + sign; norm/tau: the "
          "output's spectral norm over tau (ideal <= 1)", file=file)
    _header(file, _CLIP_COLUMNS)
    for args in inputs:
        rows += _clip_rows(*args, cfg, be, file)

    print("", file=file)
    print(f"power(B, p) = U s^p V^T; p < 0: the ridge map s (s^2 + ({NEGATIVE_POWER_EPS:g} "
          f"||B||_F)^2)^((p-1)/2). steps: polar factor + Newton; r: the inverse root", file=file)
    _header(file, _POWER_COLUMNS)
    for args in inputs:
        rows += _power_rows(*args, cfg, be, file)
    return rows


# --- command line ----------------------------------------------------------------------


def _json_safe(x):
    """Non-finite floats as null: JSON has no NaN or infinity."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1); got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectral-ops",
        description="Spectral maps of matrices (polar, clip, power) by matrix-product "
                    "iterations.",
        epilog="Run 'spectral-ops demo --help' for the demo's options.")
    parser.add_argument("--version", action="version", version=f"spectral-ops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = DEMO_PRESETS["default"]
    demo = sub.add_parser(
        "demo", help="run every polar, clip and power method on test matrices and compare "
                     "products, time and accuracy with the SVD route",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  spectral-ops demo --quick\n"
               "  spectral-ops demo --backend torch --json rows.json\n"
               "  spectral-ops demo --shape 48 96 --repeat 1")
    size = demo.add_mutually_exclusive_group()
    q, f = DEMO_PRESETS["quick"], DEMO_PRESETS["full"]
    size.add_argument("--quick", action="store_true",
                      help=f"small run: shape {q['shape'][0]} {q['shape'][1]}, "
                           f"{q['repeat']} round, p in {', '.join(q['powers'])} (seconds)")
    size.add_argument("--full", action="store_true",
                      help=f"large run: shape {f['shape'][0]} {f['shape'][1]}, "
                           f"{f['repeat']} rounds, p in {', '.join(f['powers'])} (minutes)")
    demo.add_argument("--shape", type=_positive_int, nargs=2, metavar=("M", "N"),
                      help=f"matrix shape (default: {d['shape'][0]} {d['shape'][1]}; "
                           f"overrides --quick/--full)")
    demo.add_argument("--repeat", type=_positive_int, metavar="R",
                      help=f"interleaved timing rounds; each method keeps its best "
                           f"(default: {d['repeat']}; overrides --quick/--full)")
    demo.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="dtype of the test matrices (default: float32)")
    demo.add_argument("--backend", choices=BACKENDS, default="numpy",
                      help="array library the NumPy test matrices are converted to "
                           "(default: numpy); a library that is not installed is skipped "
                           "with a message")
    demo.add_argument("--floor", type=_unit_interval, default=1e-3,
                      help="relative singular-value floor passed to every map and used for "
                           "the error and band columns (default: 1e-3)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the test matrices (default: 0)")
    demo.add_argument("--json", nargs="?", const="-", metavar="PATH",
                      help="also write the rows as JSON to PATH; without PATH, write the JSON "
                           "to stdout and the tables to stderr")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "demo":  # pragma: no cover - argparse requires a command
        return 2
    preset = "quick" if args.quick else "full" if args.full else "default"
    cfg = DEMO_PRESETS[preset]
    shape = tuple(args.shape) if args.shape else cfg["shape"]
    repeat = args.repeat if args.repeat else cfg["repeat"]
    to_stdout = args.json == "-"
    file = sys.stderr if to_stdout else sys.stdout
    try:
        importlib.import_module(args.backend)
    except ImportError as exc:
        print(f"spectral-ops demo: skipped: --backend {args.backend} needs the "
              f"{args.backend} package, which is not installed here ({exc}). Install it "
              f"(pip install {args.backend.replace('_', '-')}) or choose another backend.",
              file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    rows = run_demo(shape[0], shape[1], args.dtype, repeat, args.floor, args.seed,
                    args.backend, cfg["powers"], file=file)
    wall = time.perf_counter() - t0
    print("", file=file)
    print(f"demo finished in {wall:.1f} s", file=file)
    if args.json is not None:
        doc = _json_safe({
            "spectral_ops": __version__, "numpy": np.__version__, "backend": args.backend,
            "preset": preset, "shape": list(shape), "dtype": args.dtype, "repeat": repeat,
            "floor": args.floor, "seed": args.seed, "wall_s": wall, **_machine(),
            "rows": rows})
        text = json.dumps(doc, indent=1)
        if to_stdout:
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
