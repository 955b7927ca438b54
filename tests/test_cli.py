"""The ``spectral-ops`` console script."""

import subprocess
import sys

import pytest

from spectral_ops.cli import main


def test_demo_prints_every_method_and_matrix(capsys):
    assert main(["demo", "--shape", "24", "40", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("gaussian", "ill", "gradient", "polar_express", "gram", "jordan", "qdwh",
                 "svd", "auto", "band min", "vs SVD"):
        assert word in out
    # every convergent method reaches the band in float32 (jordan by design does not)
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["gaussian"], ["ill"], ["gradient"])]
    polar_rows = [r for r in rows if r[1] in ("auto", "polar_express", "gram", "jordan", "qdwh", "svd")]
    assert len(polar_rows) == 18
    for row in polar_rows:
        method, band_min, band_max = row[1], float(row[-4]), float(row[-3])
        if method != "jordan":
            assert abs(band_min - 1) < 1e-3 and abs(band_max - 1) < 1e-3, row


def test_demo_prints_clip_rows(capsys):
    assert main(["demo", "--shape", "24", "40", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "clip(B, tau)" in out and "norm/tau" in out
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["gaussian"], ["far_above"], ["gradient"])
            and line.split()[2:3] in (["auto"], ["polar"], ["newton"], ["svd"])
            and line.split()[1].endswith(("e-01", "e-03"))]  # the tau/s_max column
    assert len(rows) == 12
    for row in rows:
        err, top = float(row[-3]), float(row[-2])
        assert err <= 1e-4 and top <= 1 + 1e-3, row


def test_demo_rejects_bad_shape():
    with pytest.raises(SystemExit):
        main(["demo", "--shape", "0", "5"])


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "spectral_ops.cli", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("spectral-ops ")


def test_core_imports_no_framework():
    code = ("import sys, spectral_ops, spectral_ops.adapters; "
            "bad = [m for m in ('torch', 'jax', 'cupy', 'optax') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_prints_power_rows(capsys):
    assert main(["demo", "--shape", "24", "40", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "power(B, p)" in out
    rows = [line.split() for line in out.splitlines()
            if line.split()[:1] in (["1/4"], ["1/2"], ["3/4"], ["-1/4"])]
    assert len(rows) == 12
    for row in rows:
        assert float(row[-2]) <= 1e-3, row  # float32 target for s_min/s_max >= 1e-2
