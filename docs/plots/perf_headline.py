"""Headline performance tables and figure from committed asv results.

Reads ``asv_bench/results/MACHINE/*.json`` (the newest sample of every
benchmark and parameter set across the files) and prints, as Markdown:

* the GEMM floor: each polar method as a multiple of the bare matrix products
  of its plan (``bench_gemm_floor``), and Polar Express against
  ``torch.optim.Muon``'s Newton-Schulz where that was timed;
* the SVD route: the default ``polar``, ``clip`` and ``power`` against the SVD
  route of the same backend (speed-up, above 1 the iteration is faster).

With ``--figure`` it also draws the GEMM-floor multiples as bars into
``docs/_static/perf_MACHINE.png``. Run from the repository root:

    python docs/plots/perf_headline.py --machine h100 --figure
    python docs/plots/perf_headline.py --machine epyc-2core

The Sphinx build does not run this script; paste its output into
docs/performance.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(machine: str) -> dict:
    """``{benchmark: {params: seconds}}``, the newest result of each, over all result files."""
    newest: dict = {}
    for path in sorted((ROOT / "asv_bench" / "results" / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        data = json.loads(path.read_text())
        cols = data["result_columns"]
        for name, row in data["results"].items():
            rec = dict(zip(cols, row))
            values, params = rec.get("result"), rec.get("params") or [[]]
            if values is None:
                continue
            combos = _product([[ast.literal_eval(v) for v in axis] for axis in params])
            for combo, value in zip(combos, values):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                key = (name, combo)
                if key not in newest or data["date"] >= newest[key][0]:
                    newest[key] = (data["date"], value)
    out: dict = {}
    for (name, combo), (_, value) in newest.items():
        out.setdefault(name, {})[combo] = value
    return out


def _product(axes):
    combos = [()]
    for axis in axes:
        combos = [c + (v,) for c in combos for v in axis]
    return combos


def _ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b is not None else "–"


def _ms(v):
    if v is None:
        return "–"
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def gemm_floor_table(res: dict) -> list[tuple]:
    rows, lines = [], []
    for cls in ("TimeGemmFloorCUDA", "TimeGemmFloorCPU"):
        data = res.get(f"bench_gemm_floor.{cls}.time_polar", {})
        cuda = cls.endswith("CUDA")
        keys = sorted({k[:-1] for k in data}, key=str)
        for key in keys:
            t = {impl: data.get(key + (impl,)) for impl in
                 ("polar_express", "gemm_floor", "gram", "gram_gemm_floor", "auto", "jordan",
                  "torch_muon_ns")}
            if t["gemm_floor"] is None:
                continue
            shape, dtype = (key[0], key[1]) if cuda else (key[0], "float32")
            rows.append((("cuda " if cuda else "cpu ") + shape, dtype,
                         t["polar_express"] and t["polar_express"] / t["gemm_floor"],
                         t["gram"] and t["gram_gemm_floor"] and t["gram"] / t["gram_gemm_floor"]))
            lines.append(
                f"| {'CUDA' if cuda else 'CPU'} | {shape} | {dtype} | {_ms(t['gemm_floor'])} | "
                f"{_ratio(t['polar_express'], t['gemm_floor'])} | "
                f"{_ratio(t['gram'], t['gram_gemm_floor'])} | {_ratio(t['auto'], t['gemm_floor'])} | "
                f"{_ratio(t['jordan'], t['gemm_floor'])} | "
                f"{_ratio(t['polar_express'], t['torch_muon_ns'])} |")
    if lines:
        print("| device | shape | dtype | PE GEMM floor | polar_express / floor | gram / its floor "
              "| auto / PE floor | jordan / PE floor | polar_express / torch Muon NS |")
        print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        print("\n".join(lines))
    return rows


def svd_table(res: dict) -> None:
    specs = [  # (label, benchmark, params before impl, ours, SVD route)
        ("polar, torch CUDA", "bench_gpu_torch.TimeTorchCUDAPolar.time_polar", "auto", "torch_svd"),
        ("polar, CuPy", "bench_gpu_cupy.TimeCuPyPolar.time_polar", "auto", "cupy_svd"),
        ("clip, torch CUDA", "bench_clip.TimeClipCUDA.time_clip", "clip_auto", "svd_clip"),
        ("power, torch CUDA", "bench_power.TimePowerCUDA.time_power", "power_auto", "svd_power"),
        ("polar, NumPy", "bench_polar_numpy.TimePolarNumpy.time_polar", "auto", "scipy_polar"),
        ("clip, CPU", "bench_clip.TimeClipCPU.time_clip", "clip_auto", "svd_clip"),
        ("power, CPU", "bench_power.TimePowerCPU.time_power", "power_auto", "svd_power"),
    ]
    lines = []
    for label, bench, ours, ref in specs:
        data = res.get(bench, {})
        for key in sorted({k[:-1] for k in data}, key=str):
            a, b = data.get(key + (ours,)), data.get(key + (ref,))
            if a is None or b is None:
                continue
            lines.append(f"| {label} | {', '.join(map(str, key))} | {_ms(a)} | {_ms(b)} | "
                         f"{b / a:.1f}x |")
    if lines:
        print("\n| map | parameters | default | SVD route | speed-up |")
        print("| --- | --- | ---: | ---: | ---: |")
        print("\n".join(lines))


def figure(rows, machine: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s}\n{d}" for s, d, _, _ in rows]
    pe = [r[2] or 0.0 for r in rows]
    gram = [r[3] or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], pe, width=0.4, label="polar_express / its GEMM floor")
    ax.bar([x + 0.2 for x in xs], gram, width=0.4, label="gram / its GEMM floor")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.3, color="r", lw=0.8, ls="--", label="1.3x (target, bf16 on GPU)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("time / time of the plan's bare GEMMs")
    ax.set_title(f"polar vs its GEMM floor ({machine})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "_static" / f"perf_{machine}.png"
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machine", default="h100", help="asv machine name (results subfolder)")
    ap.add_argument("--figure", action="store_true", help="also draw docs/_static/perf_MACHINE.png")
    args = ap.parse_args()
    res = load(args.machine)
    if not res:
        raise SystemExit(f"no asv results under asv_bench/results/{args.machine}/")
    rows = gemm_floor_table(res)
    svd_table(res)
    if args.figure and rows:
        print("\nwrote", figure(rows, args.machine))


if __name__ == "__main__":
    main()
