"""The ``spectral-ops`` console script and its demo.

Speed is not tested here (no wall-clock asserts): the demo's timings are only
checked for their structure, e.g. that the SVD row's ratio is 1 by construction.
"""

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from spectral_ops import clip, polar, polar_plan, power, power_plan, spectral_report
from spectral_ops.cli import (BACKENDS, CLIP_DEMO_METHODS, DEMO_MATRICES, DEMO_PRESETS,
                              POLAR_DEMO_METHODS, POWER_DEMO_METHODS, _polar_values,
                              _power_values, _Reference, build_parser, main)
from spectral_ops.testing import make_matrix

DEMO_OPTIONS = ("--quick", "--full", "--shape", "--repeat", "--dtype", "--backend", "--json",
                "--floor", "--seed")


def _rows_per_key(rows):
    keys = [(r["map"], r["matrix"], r["param"], r["method"]) for r in rows]
    assert len(keys) == len(set(keys)), "one row per (map, matrix, parameter, method)"
    return {k: r for k, r in zip(keys, rows)}


def _check_rows(rows, powers):
    """One row per (matrix, method) of each map, the SVD row at 1x, sane accuracy."""
    by_key = _rows_per_key(rows)
    matrices = [name for name, _ in DEMO_MATRICES]
    for name in matrices:
        for m in POLAR_DEMO_METHODS:
            assert ("polar", name, None, m) in by_key
        clip_rows = [r for r in rows if r["map"] == "clip" and r["matrix"] == name]
        assert [r["method"] for r in clip_rows] == list(CLIP_DEMO_METHODS)
        for p in powers:
            for m in POWER_DEMO_METHODS:
                assert ("power", name, p, m) in by_key
    assert len(rows) == len(matrices) * (len(POLAR_DEMO_METHODS) + len(CLIP_DEMO_METHODS)
                                         + len(powers) * len(POWER_DEMO_METHODS))
    for r in rows:
        assert r["products"] >= 1 and r["time_ms"] > 0 and r["vs_svd"] > 0, r
        if r["method"] == "svd":
            # the ratio of the SVD row is its own time over itself: 1 by construction
            assert r["vs_svd"] == pytest.approx(1.0, abs=5e-3), r
            assert r["runs"] == "svd" and r["steps"] == "-", r
        if r["runs"] == "eigh":  # no iteration
            assert r["steps"] == "-" and r["products"] == 3, r
        if r["map"] == "polar" and r["method"] != "jordan":
            # float32 default tol 1e-4 above the floor (jordan does not converge)
            assert abs(r["band"][0] - 1) < 1e-3 and abs(r["band"][1] - 1) < 1e-3, r
        if r["map"] == "clip":
            assert r["norm_over_tau"] <= 1 + 1e-3 and r["error"] < 1e-3, r
        if r["map"] == "power":
            assert r["error"] < (1e-3 if Fraction(r["param"]) > 0 else 1e-2), r


@pytest.fixture(scope="module")
def quick_json(tmp_path_factory):
    """``spectral-ops demo --quick --json PATH``, run once for the tests below."""
    path = tmp_path_factory.mktemp("demo") / "rows.json"
    assert main(["demo", "--quick", "--json", str(path)]) == 0
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def test_quick_json_has_a_row_per_matrix_and_method(quick_json):
    q = DEMO_PRESETS["quick"]
    assert quick_json["preset"] == "quick" and quick_json["backend"] == "numpy"
    assert tuple(quick_json["shape"]) == q["shape"] and quick_json["repeat"] == q["repeat"]
    _check_rows(quick_json["rows"], q["powers"])
    assert any(Fraction(p) < 0 for p in q["powers"]), "a negative exponent is covered"


def test_quick_rows_report_what_the_plans_run(quick_json):
    by_key = _rows_per_key(quick_json["rows"])
    # 128 x 512 float32 NumPy: auto takes the matrix-product routes (aspect 4)
    pe = polar_plan(np.zeros((128, 512), np.float32), method="polar_express")
    assert by_key[("polar", "gaussian", None, "polar_express")]["products"] == pe.matmuls
    assert by_key[("polar", "gaussian", None, "auto")]["runs"] in ("gram", "polar_express")
    # clip and power: the float64 Gram eigendecomposition on CPUs (float32 inputs)
    assert by_key[("clip", "gaussian", 0.5, "auto")]["runs"] == "eigh"
    assert by_key[("power", "gaussian", "1/2", "auto")]["runs"] == "eigh"
    assert by_key[("clip", "gaussian", 0.5, "polar")]["runs"].startswith("polar")
    assert by_key[("power", "gaussian", "-1/4", "newton")]["runs"].startswith("gram-ridge")


def test_ci_command_prints_every_method_and_matrix(capsys):
    # the command CI runs in a regular install
    assert main(["demo", "--shape", "48", "96", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("gaussian", "ill", "gradient", "polar_express", "gram", "jordan", "qdwh",
                 "svd", "auto", "newton", "band min", "norm/tau", "vs SVD", "clip(B, tau)",
                 "power(B, p)", "1/4", "-1/4", "demo finished in"):
        assert word in out, word
    assert "1.00x" in out


def test_json_to_stdout_keeps_the_tables_on_stderr(capsys):
    assert main(["demo", "--shape", "24", "40", "--repeat", "2", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is nothing but the JSON document
    assert doc["shape"] == [24, 40] and doc["repeat"] == 2 and doc["floor"] == 1e-3
    assert {"spectral_ops", "numpy", "backend", "dtype", "seed", "wall_s", "cpus",
            "load_avg"} <= set(doc)
    _check_rows(doc["rows"], DEMO_PRESETS["default"]["powers"])
    assert "band min" in captured.err and "demo finished in" in captured.err


def test_error_column_is_spectral_reports_rel_error():
    B = make_matrix("ill", (32, 80), cond=1e3, seed=1).astype(np.float32)
    ref = _Reference(B, 1e-3)
    Y = polar(B, method="polar_express")
    err, band, _ = ref.accuracy(Y, _polar_values(ref.s), band=True)
    r = spectral_report(Y, B)
    assert err == pytest.approx(r.rel_error, rel=1e-6)
    assert band == pytest.approx(r.band, abs=1e-12)
    tau = 0.05 * float(ref.s[0])
    err, _, _ = ref.accuracy(clip(B, tau, method="polar"), np.minimum(ref.s, tau))
    r = spectral_report(clip(B, tau, method="polar"), B, fn=lambda s: np.minimum(s, tau))
    assert err == pytest.approx(r.rel_error, rel=1e-6)
    for p in (Fraction(1, 2), Fraction(-1, 4)):
        eps = power_plan(B, p, method="svd").eps
        Y = power(B, p, method="newton")
        err, _, _ = ref.accuracy(Y, _power_values(ref.s, p, eps))
        r = spectral_report(Y, B, fn=lambda s: _power_values(s[0], p, eps)[None])
        assert err == pytest.approx(r.rel_error, rel=1e-6), p


def test_backend_torch(capsys):
    pytest.importorskip("torch", reason="--backend torch needs PyTorch (pip install torch)")
    assert main(["demo", "--backend", "torch", "--shape", "24", "40", "--repeat", "1",
                 "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["backend"] == "torch" and "demo on torch" in captured.err
    _check_rows(doc["rows"], DEMO_PRESETS["default"]["powers"])


def test_backend_array_api_strict(capsys):
    pytest.importorskip("array_api_strict",
                        reason="--backend array_api_strict needs array-api-strict")
    assert main(["demo", "--backend", "array_api_strict", "--shape", "16", "24", "--repeat",
                 "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "array_api_strict"
    _check_rows(doc["rows"], DEMO_PRESETS["default"]["powers"])


def test_missing_backend_is_skipped_with_a_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now raises ImportError
    assert main(["demo", "--backend", "jax", "--shape", "8", "8", "--repeat", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "skipped" in captured.err and "jax" in captured.err and "not installed" in captured.err


@pytest.mark.parametrize("argv", [
    ["demo", "--shape", "0", "5"],
    ["demo", "--shape", "5"],
    ["demo", "--repeat", "0"],
    ["demo", "--floor", "2"],
    ["demo", "--dtype", "float16"],
    ["demo", "--backend", "cupyy"],
    ["demo", "--quick", "--full"],
    [],
])
def test_demo_rejects_bad_options(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_options_parse():
    parser = build_parser()
    a = parser.parse_args(["demo"])
    assert (a.quick, a.full, a.shape, a.repeat, a.json) == (False, False, None, None, None)
    assert (a.dtype, a.backend, a.floor, a.seed) == ("float32", "numpy", 1e-3, 0)
    a = parser.parse_args(["demo", "--full", "--shape", "64", "32", "--repeat", "2",
                           "--dtype", "float64", "--backend", "torch", "--floor", "1e-4",
                           "--seed", "3", "--json", "out.json"])
    assert (a.full, a.shape, a.repeat, a.dtype, a.backend, a.floor, a.seed, a.json) == (
        True, [64, 32], 2, "float64", "torch", 1e-4, 3, "out.json")
    assert parser.parse_args(["demo", "--json"]).json == "-"
    assert parser.parse_args(["demo", "--quick"]).quick
    assert set(BACKENDS) == {"numpy", "torch", "jax", "array_api_strict"}


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "--version" in out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in DEMO_OPTIONS:
        assert option in out, option
    for backend in BACKENDS:
        assert backend in out, backend


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "spectral_ops.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("spectral-ops ")


def test_core_imports_no_framework():
    code = ("import sys, spectral_ops, spectral_ops.adapters, spectral_ops.cli; "
            "bad = [m for m in ('torch', 'jax', 'cupy', 'optax') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_demo_leaves_out_eigh_where_it_refuses_the_input(dtype):
    import io

    from spectral_ops.cli import run_demo

    rows = run_demo(24, 48, dtype=dtype, repeat=1, powers=("1/2",), file=io.StringIO())
    methods = {r["method"] for r in rows}
    # float64 inputs: eigh refuses them (the SVD keeps what their Gram matrix loses)
    assert ("eigh" in methods) == (dtype == "float32"), methods
    assert {"auto", "svd", "polar_express", "polar", "newton"} <= methods
