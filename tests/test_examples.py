"""The examples under docs/examples: the character-model benchmark runs, and the table on
docs/training.md is the one its committed results file gives."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "examples" / "char_model.py"
RESULTS = ROOT / "docs" / "examples" / "char_model_results.json"
#: the measurement behind Muon's accuracy defaults (docs/training.md, "Optimizer defaults")
DEFAULTS = ROOT / "docs" / "examples" / "char_model_defaults.json"
PAGE = ROOT / "docs" / "training.md"


def _needs_torch():
    pytest.importorskip("torch", reason="the character-model example needs PyTorch (the torch extra)")


def _load_script():
    spec = importlib.util.spec_from_file_location("char_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_model_quick_trains(tmp_path):
    _needs_torch()
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--optimizers", "AdamW,Muon", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert [row["optimizer"] for row in results["table"]] == ["AdamW", "Muon"]
    assert len(results["runs"]) == 2
    steps = results["config"]["steps"]
    for run in results["runs"]:
        assert run["steps_done"] == steps and run["diverged_at_step"] is None
        val = run["val_loss"]
        assert all(v is not None and math.isfinite(v) for v in val), val
        assert all(v is not None and math.isfinite(v) for v in run["train_loss"])
        assert run["val_steps"][0] == 0 and run["val_steps"][-1] == steps
        # from about ln(vocabulary) at the start, clearly down after the quick run
        assert val[0] > math.log(results["config"]["vocab"]) - 0.5
        assert val[-1] < val[0] - 0.5, val
        assert run["tokens_per_s"] > 0 and run["opt_step_ms_median"] > 0
    # the printed table is the one --from renders from the file
    table = subprocess.run([sys.executable, str(SCRIPT), "--from", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-4000:]
    assert table.stdout.strip() in proc.stdout


def test_training_page_shows_the_committed_table():
    _needs_torch()
    table = _load_script().markdown_table(json.loads(RESULTS.read_text()))
    assert table in PAGE.read_text(), (
        "docs/training.md does not show the table of docs/examples/char_model_results.json; "
        "paste the output of `python docs/examples/char_model.py --from "
        "docs/examples/char_model_results.json`")


def test_training_page_shows_the_committed_defaults_table():
    _needs_torch()
    results = json.loads(DEFAULTS.read_text())
    table = _load_script().markdown_table(results)
    assert table in PAGE.read_text(), (
        "docs/training.md does not show the table of docs/examples/char_model_defaults.json; "
        "paste the output of `python docs/examples/char_model.py --from "
        "docs/examples/char_model_defaults.json`")
    # the run used the optimizer defaults the library has now
    from spectral_ops.adapters.direction import DEFAULT_SCALE, Direction
    ours = results["optimizer_settings"]["Muon"][0]
    assert ours["direction"] == repr(Direction("polar"))
    assert ours["defaults"]["scale"] == repr(DEFAULT_SCALE)


@pytest.mark.parametrize("folder", ["char_model_scale_seeds", "char_model_dtype_seeds",
                                    "char_model_exact_seeds"])
def test_training_page_shows_the_committed_seeds_tables(folder):
    _needs_torch()
    files = sorted(DEFAULTS.parent.glob(f"{folder}/seed*.json"))
    assert len(files) == 5
    table = _load_script().seeds_table([json.loads(f.read_text()) for f in files])
    assert table in PAGE.read_text(), (
        f"docs/training.md does not show the table of docs/examples/{folder}/; paste the "
        f"output of `python docs/examples/char_model.py --from docs/examples/{folder}/seed*.json`")


def test_char_model_optimizer_variants_parse():
    _needs_torch()
    import torch

    m = _load_script()
    assert m.split_name("Muon") == ("Muon", {})
    assert m.split_name("Muon[method=jordan;steps=5;tol=0.1;compute_dtype=bfloat16]") == (
        "Muon", {"method": "jordan", "steps": 5, "tol": 0.1, "compute_dtype": torch.bfloat16})
    names = m.split_names("torch.optim.Muon, Muon,Muon[floor=0.01;tol=0.3],MuCon")
    assert names == ["torch.optim.Muon", "Muon", "Muon[floor=0.01;tol=0.3]", "MuCon"]
    lrs = m.parse_lrs(["0.02", "Muon=0.01,0.03", "Muon[floor=0.01;tol=0.3]=0.05"], names)
    assert lrs == {"torch.optim.Muon": (0.02,), "Muon": (0.01, 0.03),
                   "Muon[floor=0.01;tol=0.3]": (0.05,), "MuCon": (0.02,)}
    with pytest.raises(ValueError, match="options in brackets are for our optimizers"):
        m.split_name("AdamW[lr=1]")
