"""The prepared GPU check (asv_bench/gpu_check.sh): its dry run, its benchmark list, its summary.

The dry run is what runs here (no GPU, maybe no .whl/ and no asv): it must pass,
leave OUTDIR in the layout the GPU run leaves, and find every headline benchmark
of asv_bench/gpu_summary.py (the one list the script runs) with the parameter
values it names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "asv_bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not available")


def _summary_module():
    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "asv_bench" / "gpu_summary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gs = _summary_module()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    env = dict(os.environ, PYTHON=sys.executable, MACHINE="dry-run")
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run"], cwd=tmp_path_factory.getbasetemp(),
                          env=env, capture_output=True, text=True, timeout=900)
    return proc, out


def test_dry_run_passes_and_leaves_the_outdir_layout(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir())
    assert files == sorted(["summary.txt", "gpu_check.log", "gpu-info.txt", "pytest-gpu.xml",
                            "asv-results-dry-run.tar.gz"])
    # the rules: at most 8 plain files, each under 16 MiB, at most two folders deep
    assert len(files) <= 8
    for name in files:
        p = out / name
        assert p.is_file() and not p.is_symlink()
        assert p.stat().st_size < 16 * 2**20
        assert len(Path(name).parts) <= 3

    summary = (out / "summary.txt").read_text()
    assert "dry run" in summary
    assert "outdir: ok" in summary
    assert "failed steps: none" in summary
    for step in ("setup", "install", "info", "tests", "asv", "pack"):
        assert f"  {step} " in summary  # each step with its wall time
    # the GPU selection of the tests was collected
    assert "tests collected" in summary
    # without .whl/ (a fresh checkout) the install step says so and is not a failure
    if not list((ROOT / ".whl").glob("*.whl")):
        assert "no .whl/ here (dry run" in summary
    # the headline benchmarks exist (by import, and by `asv check` where asv imports)
    assert f"{gs.n_combos()} parameter combinations" in summary
    assert "all present" in summary
    assert ("asv check passed" in summary) or ("asv is not installed" in summary)

    with tarfile.open(out / "asv-results-dry-run.tar.gz") as tar:
        names = tar.getnames()
    assert "results/dry-run/gpu-info.txt" in names
    assert all(n.startswith("results") for n in names)
    assert "step tests" in (out / "gpu_check.log").read_text()


def test_dry_run_collects_only_gpu_parametrisations(dry_run):
    proc, out = dry_run
    log = (out / "gpu_check.log").read_text()
    ids = [line.split()[1] for line in log.splitlines()
           if line.strip() and line.split()[0].isdigit() and len(line.split()) == 2
           and line.split()[1].startswith("tests/")]
    assert ids, "the dry run lists the selected test functions"
    assert not any("test_gpu_check" in i for i in ids)
    assert any("test_torch_optimizers_on_cuda" in i for i in ids)


def test_every_headline_benchmark_exists_with_its_parameters():
    found = gs._benchmarks_from_modules()
    assert gs.check(found) == []
    assert list(gs.HEADLINE) == ["gemm_floor_bf16", "svd_route_fp32", "muon_accuracy_bf16",
                                 "cupy_fast_paths", "jax_jit", "muon_step"]
    for group in gs.HEADLINE:
        assert gs.n_combos(group) > 0
        assert gs.regexes(group)


def test_check_reports_a_missing_benchmark_or_value():
    found = gs._benchmarks_from_modules()
    name = "bench_gemm_floor.TimeGemmFloorCUDA.time_polar"
    names, params = found[name]
    assert any("no benchmark" in p for p in gs.check({k: v for k, v in found.items() if k != name}))
    shrunk = dict(found)
    shrunk[name] = (names, [params[0], params[1], [v for v in params[2] if v != "torch_muon_ns"]])
    assert any("torch_muon_ns" in p for p in gs.check(shrunk))


def _fake_results(tmp_path, commit="abcdef1234567890"):
    """An asv results file with the GEMM-floor and SVD-route headline numbers."""
    g_name = "bench_gemm_floor.TimeGemmFloorCUDA.time_polar"
    g_params = [["'4096x4096'", "'4096x16384'"], ["'bfloat16'"],
                ["'gemm_floor'", "'polar_express'", "'auto'", "'jordan'", "'torch_muon_ns'"]]
    g_vals = [0.010, 0.012, 0.012, 0.009, 0.015,   # 4096x4096
              0.040, 0.060, 0.050, None, float("nan")]  # 4096x16384: jordan failed, Muon NS skipped
    s_name = "bench_gpu_torch.TimeTorchCUDAPolar.time_polar"
    s_params = [["'4096x4096'"], ["'float32'"], ["'auto'", "'polar_express'", "'torch_svd'"]]
    s_vals = [0.02, 0.02, 1.0]
    m_name = "bench_optimizer_step.TimeTorchMuonStep.time_step"
    m_params = [["'d768'"], ["'torch.optim.Muon'", "'Muon'", "'Muon_bf16'"], ["'cuda'"]]
    m_vals = [0.004, 0.010, 0.003]
    cols = ["result", "params", "version", "started_at", "duration"]
    data = {"commit_hash": commit, "env_name": "existing-py", "date": 1, "params": {},
            "python": "3.12", "requirements": {}, "env_vars": {}, "result_columns": cols,
            "results": {g_name: [g_vals, g_params, "v", {}, {}], s_name: [s_vals, s_params, "v", {}, {}],
                        m_name: [m_vals, m_params, "v", {}, {}]},
            "durations": {}, "version": 2}
    d = tmp_path / "results" / "h100"
    d.mkdir(parents=True)
    (d / "machine.json").write_text(json.dumps({"machine": "h100", "version": 1}))
    path = d / f"{commit[:8]}-existing-py.json"
    path.write_text(json.dumps(data))
    return tmp_path / "results", path


def test_summary_reads_the_results_json(tmp_path):
    results, _ = _fake_results(tmp_path)
    res = gs.load_results(results, "h100", "abcdef12")
    assert res["bench_gemm_floor.TimeGemmFloorCUDA.time_polar"][("4096x4096", "bfloat16", "gemm_floor")] == 0.010
    assert ("4096x16384", "bfloat16", "jordan") not in res["bench_gemm_floor.TimeGemmFloorCUDA.time_polar"]
    assert gs.load_results(results, "h100", "0000") == {}
    text = "\n".join(gs.summary(res))
    assert "polar_express / gemm_floor 1.20 [target met]" in text       # 12 / 10 ms
    assert "polar_express / gemm_floor 1.50 [target MISSED]" in text    # 60 / 40 ms
    assert "polar_express / torch_muon_ns 0.80 [target met]" in text    # 12 / 15 ms
    assert "speed-up 50.0x [target met]" in text                        # 1 s / 20 ms
    assert "Muon / torch.optim.Muon 2.50; Muon_bf16 / torch.optim.Muon 0.75" in text  # 10, 3 / 4 ms
    assert f"== 14 of {gs.n_combos()} headline results present" in text
    assert "missing: bench_gemm_floor.TimeGemmFloorCUDA.time_polar('4096x16384', 'bfloat16', 'jordan')" in text
    assert "missing: all 6 of bench_gpu_cupy.TimeCuPyFastPaths.time_polar" in text


def test_refile_moves_results_to_the_real_commit(tmp_path):
    results, path = _fake_results(tmp_path)
    moved = gs.refile(results, "h100", "abcdef1234567890", "1234567890abcdef")
    assert [p.name for p in moved] == ["12345678-existing-py.json"]
    assert not path.exists()
    assert json.loads(moved[0].read_text())["commit_hash"] == "1234567890abcdef"


def test_junit_line(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="1" failures="2" '
                   'skipped="3" tests="10" time="12.5"/></testsuites>')
    assert gs.junit_line(xml) == "4 passed, 2 failed, 1 errors, 3 skipped of 10 in 12 s"


def test_bad_usage_and_non_empty_outdir(tmp_path):
    assert subprocess.run(["bash", str(SCRIPT)], capture_output=True).returncode == 64
    (tmp_path / "x").write_text("x")
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 64 and "not empty" in proc.stderr


def test_groups_selection(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, MACHINE="dry-run")
    # a name that is no group: refused before anything runs, naming the variable
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "bad"), "--dry-run"],
                          env=dict(env, GPU_CHECK_GROUPS="muon_step,no_such_group"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 64
    assert "GPU_CHECK_GROUPS names no headline group 'no_such_group'" in proc.stderr
    assert "muon_step" in proc.stderr  # the valid names are listed
    # set but naming nothing: refused too (not a silent run of nothing)
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "empty"), "--dry-run"],
                          env=dict(env, GPU_CHECK_GROUPS=" , "),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 64 and "names no group" in proc.stderr
    # a valid selection, with spaces and an empty item: the other groups are named as
    # not selected
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run"],
                          env=dict(env, GPU_CHECK_GROUPS=" muon_step, ,jax_jit "),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    log = (out / "gpu_check.log").read_text()
    for g in gs.HEADLINE:
        if g in ("muon_step", "jax_jit"):
            assert f"-- group {g}:\n" in log
        else:
            assert f"-- group {g}: not selected (GPU_CHECK_GROUPS=muon_step,jax_jit)" in log


def test_performance_page_counts_the_headline_selection():
    # docs/performance.md states the size of HEADLINE; it must follow the list
    from pathlib import Path
    page = " ".join((Path(__file__).resolve().parents[1] / "docs" / "performance.md")
                    .read_text().split())
    words = {5: "five", 6: "six", 7: "seven", 8: "eight"}
    assert (f"({gs.n_combos()} parameter combinations in {words[len(gs.HEADLINE)]} groups"
            in page)


_GPU_RUNS = {"H100, dae265a": ("h100", "dae265ae"), "H100, d11d2a3": ("h100", "d11d2a3d"), "H200, d11d2a3": ("h200", "d11d2a3d"),
             "H200, 695cb51": ("h200", "695cb517")}


def test_performance_page_gpu_numbers_come_from_the_committed_results():
    # each line of the page's headline block is a line of gpu_summary's summary of
    # the committed results of that machine and commit
    page = (ROOT / "docs" / "performance.md").read_text()
    block = page.split("**The headline numbers**", 1)[1].split("```text\n", 1)[1]
    block = block.split("```", 1)[0]
    checked, run = 0, None
    for line in block.splitlines():
        if line in _GPU_RUNS:
            machine, commit = _GPU_RUNS[line]
            run = gs.summary(gs.load_results(ROOT / "asv_bench" / "results", machine, commit))
            continue
        assert run is not None, line
        assert line in run, f"{line!r} is not in the summary of the committed results"
        checked += 1
    assert checked >= 15


def test_performance_page_gpu_test_counts_come_from_the_committed_junit():
    page = " ".join((ROOT / "docs" / "performance.md").read_text().split())
    results = ROOT / "asv_bench" / "results"
    h100 = gs.junit_line(results / "h100" / "pytest-gpu-d11d2a3d.xml")
    h200 = gs.junit_line(results / "h200" / "pytest-gpu-695cb517.xml")
    latest = gs.junit_line(results / "h100" / "pytest-gpu-dae265ae.xml")
    assert latest.startswith("1578 passed, 1 failed, 0 errors, 1 skipped of 1580 in 59 s")
    assert "1578 passed, 1 xfailed and 1 failed in 59 s on 8 workers, of 1580" in page
    assert h100.startswith("1288 passed, 4 failed, 0 errors, 1 skipped of 1293")
    assert h200.startswith("1292 passed, 0 failed, 0 errors, 1 skipped of 1293 in 31 s")
    assert "1288 passed and 4 failed" in page and "1292 passed, 1 xfailed, none failed" in page
