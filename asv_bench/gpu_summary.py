"""The headline GPU benchmarks of ``gpu_check.sh``: their list, checks and summary.

``HEADLINE`` below is the one list of what ``asv_bench/gpu_check.sh`` benchmarks
on a GPU machine (a named subset of the asv suite that runs in a few minutes);
the script, its dry run and ``tests/test_gpu_check.py`` all read it from here.
Each group is a list of (benchmark, parameter selection) pairs; a selection
names every parameter of the benchmark with the values to run.

Commands (standard library only; ``check`` imports the benchmark modules, not asv)::

    python asv_bench/gpu_summary.py groups              # the group names, in run order
    python asv_bench/gpu_summary.py regexes GROUP       # its `asv run -b` regexes, one a line
    python asv_bench/gpu_summary.py check [--benchmarks-json asv_bench/results/benchmarks.json]
    python asv_bench/gpu_summary.py junit pytest.xml    # a one-line test summary
    python asv_bench/gpu_summary.py summary RESULTS_DIR MACHINE [--commit SHA]
    python asv_bench/gpu_summary.py refile RESULTS_DIR MACHINE OLD_SHA NEW_SHA

``check`` verifies that every named benchmark exists with those parameter
values, and that the regexes select exactly the named combinations (matched as
asv matches them: ``name(param, ...)`` with each value's ``repr``).
``summary`` reads the asv results JSON of one machine (and commit) and prints
each headline number and ratio. ``refile`` files the results of a stand-in
commit (a checkout carried without ``.git``) under the real commit hash.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import itertools
import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_SQ = ["4096x4096"]
_HEADLINE_SHAPES = ["4096x4096", "4096x16384"]

#: group -> [(asv benchmark name, {param name: [values]})], in run order (most
#: important first: a group that does not fit the time left is skipped).
HEADLINE: dict[str, list[tuple[str, dict[str, list[str]]]]] = {
    # polar in bfloat16 against the bare GEMMs of its plan (target: <= 1.3x)
    # and against torch.optim.Muon's Newton-Schulz (target: faster)
    "gemm_floor_bf16": [
        ("bench_gemm_floor.TimeGemmFloorCUDA.time_polar",
         {"shape": _HEADLINE_SHAPES, "dtype": ["bfloat16"],
          "impl": ["gemm_floor", "polar_express", "auto", "jordan", "torch_muon_ns"]}),
    ],
    # polar, clip and power against the SVD route, float32 (target: >= 30x faster)
    "svd_route_fp32": [
        ("bench_gpu_torch.TimeTorchCUDAPolar.time_polar",
         {"shape": _SQ, "dtype": ["float32"], "method": ["auto", "polar_express", "torch_svd"]}),
        ("bench_clip.TimeClipCUDA.time_clip",
         {"shape": _SQ, "dtype": ["float32"], "impl": ["clip_auto", "svd_clip", "polar"]}),
        ("bench_power.TimePowerCUDA.time_power",
         {"shape": _SQ, "dtype": ["float32"], "p": ["1/2"],
          "impl": ["power_auto", "svd_power", "polar"]}),
    ],
    # accuracy on the device in bfloat16; "jordan" runs the arithmetic of
    # torch.optim.Muon's Newton-Schulz (same quintic, 5 steps)
    "muon_accuracy_bf16": [
        (f"bench_gpu_torch.TrackTorchCUDAAccuracy.{fn}",
         {"kind": ["ill", "gradient"], "dtype": ["bfloat16"],
          "method": ["polar_express", "jordan", "auto"]})
        for fn in ("track_band_error", "track_rel_error")
    ],
    # CuPy: the fused cuBLAS gemm and syrk (both on by default) against the generic path
    "cupy_fast_paths": [
        ("bench_gpu_cupy.TimeCuPyFastPaths.time_polar",
         {"shape": ["4096x4096"], "method": ["polar_express"],
          "fast_paths": ["generic", "fused_gemm", "fused_gemm+syrk"]}),
        ("bench_gpu_cupy.TimeCuPyFastPaths.time_polar",
         {"shape": ["4096x16384"], "method": ["gram"],
          "fast_paths": ["generic", "fused_gemm", "fused_gemm+syrk"]}),
    ],
    # jitted JAX polar against optax.contrib.muon's Newton-Schulz and the SVD route
    "jax_jit": [
        ("bench_jax.TimeJaxPolar.time_polar",
         {"shape": ["1024x4096"], "impl": ["polar_express", "jordan", "optax_muon_ns", "svd"]}),
    ],
    # one optimizer step against torch.optim.Muon's on the device: the default
    # float32 compute dtype against bfloat16 (which sets the default there)
    "muon_step": [
        ("bench_optimizer_step.TimeTorchMuonStep.time_step",
         {"model": ["d768"], "impl": ["torch.optim.Muon", "Muon", "Muon_bf16"],
          "device": ["cuda"]}),
    ],
}


# --- the selection -------------------------------------------------------------

def combos(selection: dict[str, list[str]]) -> list[tuple[str, ...]]:
    return list(itertools.product(*selection.values()))


def entries(group: str | None = None):
    groups = [group] if group else list(HEADLINE)
    for g in groups:
        for name, sel in HEADLINE[g]:
            yield g, name, sel


def asv_name(name: str, values) -> str:
    """How asv names one parameter combination when it matches ``--bench`` regexes."""
    return f"{name}({', '.join(repr(v) for v in values)})"


def regex(name: str, selection: dict[str, list[str]]) -> str:
    axes = ["(?:" + "|".join(re.escape(repr(v)) for v in vals) + ")" for vals in selection.values()]
    return "^" + re.escape(name) + r"\(" + ", ".join(axes) + r"\)$"


def regexes(group: str) -> list[str]:
    return [regex(name, sel) for _, name, sel in entries(group)]


def n_combos(group: str | None = None) -> int:
    return sum(len(combos(sel)) for _, name, sel in entries(group))


def _benchmarks_from_modules() -> dict[str, tuple[list[str], list[list]]]:
    """``{asv name: (param_names, params)}`` of the selected benchmarks, by importing
    their modules from ``asv_bench/benchmarks`` (no asv needed)."""
    for p in (str(HERE), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    out = {}
    for _, name, _sel in entries():
        mod_name, cls_name, fn_name = name.split(".")
        mod = importlib.import_module(f"benchmarks.{mod_name}")
        cls = getattr(mod, cls_name, None)
        if cls is None or not callable(getattr(cls, fn_name, None)):
            continue
        out[name] = (list(getattr(cls, "param_names", [])), [list(a) for a in getattr(cls, "params", [])])
    return out


def _benchmarks_from_json(path: Path) -> dict[str, tuple[list[str], list[list]]]:
    """The same from asv's discovery output (``results/benchmarks.json``)."""
    data = json.loads(Path(path).read_text())
    return {name: (b.get("param_names", []), [[ast.literal_eval(v) for v in axis] for axis in b.get("params", [])])
            for name, b in data.items() if isinstance(b, dict) and "params" in b}


def check(benchmarks: dict[str, tuple[list[str], list[list]]]) -> list[str]:
    """Problems with the selection against the discovered benchmarks (empty: all good)."""
    problems = []
    for group, name, sel in entries():
        if name not in benchmarks:
            problems.append(f"{group}: no benchmark {name}")
            continue
        names, params = benchmarks[name]
        if list(sel) != list(names):
            problems.append(f"{group}: {name} has parameters {names}, the selection names {list(sel)}")
            continue
        for pname, vals, axis in zip(names, sel.values(), params):
            for v in vals:
                if v not in axis:
                    problems.append(f"{group}: {name}: {pname}={v!r} is not one of {axis}")
        # the regex must select exactly the named combinations, as asv matches them
        rx = re.compile(regex(name, sel))
        matched = {c for c in itertools.product(*params) if rx.search(asv_name(name, c))}
        for other_group, other, other_sel in entries():  # other benchmarks must not match
            if other != name and rx.search(asv_name(other, combos(other_sel)[0])):
                problems.append(f"{group}: the regex of {name} also matches {other}")
        if matched != set(combos(sel)):
            problems.append(f"{group}: the regex of {name} selects {len(matched)} combinations, "
                            f"not the {len(combos(sel))} named")
    return problems


# --- test summary ----------------------------------------------------------------

def junit_line(path: Path) -> str:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = {k: 0 for k in ("tests", "failures", "errors", "skipped")}
    secs = 0.0
    for s in suites:
        for k in tot:
            tot[k] += int(s.get(k, 0) or 0)
        secs += float(s.get("time", 0) or 0)
    passed = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    return (f"{passed} passed, {tot['failures']} failed, {tot['errors']} errors, "
            f"{tot['skipped']} skipped of {tot['tests']} in {secs:.0f} s")


# --- results ---------------------------------------------------------------------

def load_results(results_dir: Path, machine: str, commit: str | None = None) -> dict:
    """``{benchmark: {param combo: value}}`` from ``RESULTS_DIR/MACHINE/*.json`` (the newest
    value of each combination; only files of ``commit`` when given). Skipped
    benchmarks (NaN) and failed ones (null) are left out."""
    newest: dict = {}
    for path in sorted((Path(results_dir) / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        data = json.loads(path.read_text())
        if commit and not data.get("commit_hash", "").startswith(commit):
            continue
        cols = data["result_columns"]
        for name, row in data["results"].items():
            rec = dict(zip(cols, row))
            values, params = rec.get("result"), rec.get("params") or []
            if values is None:
                continue
            if not params:
                values, keys = [values[0] if isinstance(values, list) else values], [()]
            else:
                keys = list(itertools.product(*[[ast.literal_eval(v) for v in axis] for axis in params]))
            for key, value in zip(keys, values):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                k = (name, key)
                if k not in newest or data.get("date", 0) >= newest[k][0]:
                    newest[k] = (data.get("date", 0), value)
    out: dict = {}
    for (name, key), (_, value) in newest.items():
        out.setdefault(name, {})[key] = value
    return out


def _t(v) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.3g} ms" if v < 1 else f"{v:.3g} s"


def _r(a, b, fmt="{:.2f}") -> str:
    return fmt.format(a / b) if a is not None and b is not None and b > 0 else "-"


def _verdict(ratio_ok) -> str:
    return "" if ratio_ok is None else (" [target met]" if ratio_ok else " [target MISSED]")


def summary(res: dict) -> list[str]:
    lines: list[str] = []

    g = res.get("bench_gemm_floor.TimeGemmFloorCUDA.time_polar", {})
    lines.append("== polar vs its GEMM floor and torch.optim.Muon's Newton-Schulz, torch CUDA, "
                 "bfloat16 (targets: polar_express <= 1.3x floor; faster than Muon NS)")
    for shape in _HEADLINE_SHAPES:
        t = {impl: g.get((shape, "bfloat16", impl)) for impl in
             ("gemm_floor", "polar_express", "auto", "jordan", "torch_muon_ns")}
        pe, fl, mu = t["polar_express"], t["gemm_floor"], t["torch_muon_ns"]
        lines.append(f"  {shape}: " + ", ".join(f"{k} {_t(v)}" for k, v in t.items()))
        lines.append(f"    polar_express / gemm_floor {_r(pe, fl)}"
                     + _verdict(None if pe is None or fl is None else pe / fl <= 1.3)
                     + f"; auto / gemm_floor {_r(t['auto'], fl)}"
                     + f"; polar_express / torch_muon_ns {_r(pe, mu)}"
                     + _verdict(None if pe is None or mu is None else pe < mu)
                     + f"; jordan / torch_muon_ns {_r(t['jordan'], mu)}")

    lines.append("== against the SVD route, torch CUDA, 4096x4096 float32 (target: >= 30x faster; "
                 "clip <= 2.5x polar, power <= 3x polar)")
    specs = [
        ("polar", "bench_gpu_torch.TimeTorchCUDAPolar.time_polar", ("4096x4096", "float32"),
         "auto", "torch_svd", "polar_express", None),
        ("clip", "bench_clip.TimeClipCUDA.time_clip", ("4096x4096", "float32"),
         "clip_auto", "svd_clip", "polar", 2.5),
        ("power p=1/2", "bench_power.TimePowerCUDA.time_power", ("4096x4096", "float32", "1/2"),
         "power_auto", "svd_power", "polar", 3.0),
    ]
    for label, bench, key, ours, ref, polar, limit in specs:
        d = res.get(bench, {})
        a, b, p = d.get(key + (ours,)), d.get(key + (ref,)), d.get(key + (polar,))
        line = (f"  {label}: {ours} {_t(a)}, {ref} {_t(b)}, speed-up {_r(b, a, '{:.1f}x')}"
                + _verdict(None if a is None or b is None else b / a >= 30))
        if limit is not None:
            line += (f"; {ours} / polar_express {_r(a, p)}"
                     + _verdict(None if a is None or p is None else a / p <= limit))
        else:
            line += f"; polar_express {_t(p)}"
        lines.append(line)

    lines.append("== accuracy on the device, bfloat16, 512x2048 (max |sigma - 1| above the floor / "
                 "relative error; jordan = torch.optim.Muon's arithmetic)")
    band = res.get("bench_gpu_torch.TrackTorchCUDAAccuracy.track_band_error", {})
    rel = res.get("bench_gpu_torch.TrackTorchCUDAAccuracy.track_rel_error", {})
    for kind in ("ill", "gradient"):
        parts = []
        for method in ("polar_express", "jordan", "auto"):
            b, r = band.get((kind, "bfloat16", method)), rel.get((kind, "bfloat16", method))
            parts.append(f"{method} {'-' if b is None else f'{b:.3g}'} / {'-' if r is None else f'{r:.3g}'}")
        lines.append(f"  {kind}: " + ", ".join(parts))

    lines.append("== CuPy fast paths, float32 (time relative to the generic path)")
    cp = res.get("bench_gpu_cupy.TimeCuPyFastPaths.time_polar", {})
    for shape, method in (("4096x4096", "polar_express"), ("4096x16384", "gram")):
        t = {fp: cp.get((shape, method, fp)) for fp in ("generic", "fused_gemm", "fused_gemm+syrk")}
        lines.append(f"  {shape} {method}: " + ", ".join(f"{k} {_t(v)}" for k, v in t.items())
                     + f"; fused_gemm / generic {_r(t['fused_gemm'], t['generic'])}"
                     + f"; +syrk / fused_gemm {_r(t['fused_gemm+syrk'], t['fused_gemm'])}")

    lines.append("== JAX, jitted, float32, default device")
    jx = res.get("bench_jax.TimeJaxPolar.time_polar", {})
    for shape in ("1024x4096",):
        t = {impl: jx.get((shape, impl)) for impl in ("polar_express", "jordan", "optax_muon_ns", "svd")}
        lines.append(f"  {shape}: " + ", ".join(f"{k} {_t(v)}" for k, v in t.items())
                     + f"; polar_express / optax_muon_ns {_r(t['polar_express'], t['optax_muon_ns'])}"
                     + f"; jordan / optax_muon_ns {_r(t['jordan'], t['optax_muon_ns'])}"
                     + f"; svd / polar_express {_r(t['svd'], t['polar_express'])}")

    lines.append("== One Muon step, d768 (torch, CUDA; time relative to torch.optim.Muon)")
    ms = res.get("bench_optimizer_step.TimeTorchMuonStep.time_step", {})
    t = {impl: ms.get(("d768", impl, "cuda")) for impl in ("torch.optim.Muon", "Muon", "Muon_bf16")}
    lines.append("  d768: " + ", ".join(f"{k} {_t(v)}" for k, v in t.items())
                 + f"; Muon / torch.optim.Muon {_r(t['Muon'], t['torch.optim.Muon'])}"
                 + f"; Muon_bf16 / torch.optim.Muon {_r(t['Muon_bf16'], t['torch.optim.Muon'])}")

    # what is missing (skipped, failed or not run), per benchmark
    wanted: dict[str, list[tuple]] = {}
    for _, name, sel in entries():
        wanted.setdefault(name, []).extend(combos(sel))
    n_missing = 0
    notes = []
    for name, keys in wanted.items():
        gone = [k for k in keys if k not in res.get(name, {})]
        n_missing += len(gone)
        if gone and len(gone) == len(keys):
            notes.append(f"  missing: all {len(keys)} of {name}")
        elif gone:
            notes.extend(f"  missing: {asv_name(name, k)}" for k in gone)
    n = n_combos()
    lines.append(f"== {n - n_missing} of {n} headline results present"
                 + (" (missing: skipped, failed or not run)" if n_missing else ""))
    lines.extend(notes)
    return lines


def refile(results_dir: Path, machine: str, old: str, new: str) -> list[Path]:
    """Rename the result files of commit ``old`` to commit ``new`` (and their commit_hash)."""
    moved = []
    for path in sorted((Path(results_dir) / machine).glob(f"{old[:8]}-*.json")):
        data = json.loads(path.read_text())
        if not data.get("commit_hash", "").startswith(old):
            continue
        data["commit_hash"] = new
        target = path.with_name(new[:8] + path.name[len(old[:8]):])
        target.write_text(json.dumps(data, separators=(",", ":")))
        if target != path:
            path.unlink()
        moved.append(target)
    return moved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("groups")
    p = sub.add_parser("regexes")
    p.add_argument("group", choices=list(HEADLINE))
    p = sub.add_parser("check")
    p.add_argument("--benchmarks-json", type=Path,
                   help="check against asv's discovery output instead of importing the modules")
    p = sub.add_parser("junit")
    p.add_argument("xml", type=Path)
    p = sub.add_parser("summary")
    p.add_argument("results_dir", type=Path)
    p.add_argument("machine")
    p.add_argument("--commit")
    p = sub.add_parser("refile")
    for a in ("results_dir", "machine", "old", "new"):
        p.add_argument(a)
    args = ap.parse_args(argv)

    if args.cmd == "groups":
        print("\n".join(HEADLINE))
    elif args.cmd == "regexes":
        print("\n".join(regexes(args.group)))
    elif args.cmd == "check":
        found = (_benchmarks_from_json(args.benchmarks_json) if args.benchmarks_json
                 else _benchmarks_from_modules())
        problems = check(found)
        for line in problems:
            print("PROBLEM:", line)
        src = args.benchmarks_json or "asv_bench/benchmarks (imported)"
        print(f"headline selection: {len(HEADLINE)} groups, {sum(1 for _ in entries())} benchmarks, "
              f"{n_combos()} parameter combinations; checked against {src}: "
              + ("all present" if not problems else f"{len(problems)} problems"))
        return 1 if problems else 0
    elif args.cmd == "junit":
        print(junit_line(args.xml))
    elif args.cmd == "summary":
        print("\n".join(summary(load_results(args.results_dir, args.machine, args.commit))))
    elif args.cmd == "refile":
        for path in refile(Path(args.results_dir), args.machine, args.old, args.new):
            print("refiled", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
