"""The shape of the core: maps as siblings, plans that say what runs, routing under jit."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import spectral_ops
from spectral_ops import clip, clip_plan, polar, polar_plan, power, power_plan
from spectral_ops.testing import make_matrix

from conftest import count_products

PACKAGE = pathlib.Path(spectral_ops.__file__).parent
MAPS = ("polar", "clip", "power")


def _imports(module: str) -> list[tuple[str, str]]:
    """(module imported from, name) for every ``from . import`` / ``from .x import`` in a module."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out += [(node.module or "", alias.name) for alias in node.names]
    return out


@pytest.mark.parametrize("module", MAPS)
def test_maps_are_siblings_over_kernels_and_routing(module):
    imported = _imports(module)
    others = [(mod, name) for mod, name in imported if mod in MAPS]
    assert others == [], f"{module}.py imports from another map: {others}"
    assert {mod for mod, _ in imported} <= {"", "kernels", "routing", "plans", "_fastpaths"}
    # and nothing private of any module but the backbone's namespace object
    assert [n for _, n in imported if n.startswith("_") and n not in ("_backbone", "_fastpaths")] == []


def test_kernels_and_routing_import_no_map():
    for module in ("kernels", "routing", "plans"):
        assert not [m for m, _ in _imports(module) if m in MAPS], module


# --- plans carry what runs --------------------------------------------------------

def test_plans_carry_their_numbers():
    B = make_matrix("gaussian", (24, 96), seed=0)
    pe = polar_plan(B, method="polar_express", steps=4)
    assert len(pe.coefficients) == pe.steps == 4 and pe.lower is not None
    qd = polar_plan(B, method="qdwh")
    assert len(qd.qdwh_weights) == qd.steps and qd.lower is None  # no design lower end
    gr = polar_plan(B, method="gram", steps=5)
    assert gr.restart_after == 2
    cp = clip_plan(B, 0.5, method="polar")
    assert cp.polar.steps == cp.polar_steps and cp.sign.steps == cp.sign_steps
    pp = power_plan(B, Fraction(1, 3), method="newton")
    assert pp.polar.steps == pp.polar_steps and pp.root == 3


@pytest.mark.parametrize("method", ["polar", "newton"])
@pytest.mark.parametrize("eps", [None, 0.1])
@pytest.mark.parametrize("shape", [(24, 96), (96, 24), (2, 20, 20)])
def test_clip_plan_product_count_is_what_runs(method, eps, shape):
    B = make_matrix("gaussian", shape, seed=1)
    tau = 0.5 * np.linalg.norm(B.reshape(-1, B.shape[-1]), 2)
    ran = count_products(lambda X: clip(X, tau, method=method, eps=eps), B)
    assert clip_plan(B, tau, method=method, eps=eps).matmuls == ran


@pytest.mark.parametrize("p", [Fraction(0), Fraction(1), Fraction(1, 2), Fraction(1, 3),
                               Fraction(3, 4), Fraction(-1, 4), Fraction(2, 5)])
@pytest.mark.parametrize("method", ["auto", "newton", "svd"])
@pytest.mark.parametrize("shape", [(24, 96), (40, 40)])
def test_power_plan_product_count_is_what_runs(p, method, shape):
    B = make_matrix("gaussian", shape, seed=2).astype(np.float32)
    ran = count_products(lambda X: power(X, p, method=method), B)
    assert power_plan(B, p, method=method).matmuls == ran


def test_power_zero_honours_floor_and_counts():
    # the polar factor with power's floor: a singular value at 1e-5 s_max is resolved
    s = np.concatenate([np.ones(8), [1e-5]])
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.standard_normal((9, 9)))
    v, _ = np.linalg.qr(rng.standard_normal((24, 9)))
    B = ((u * s) @ v.T).astype(np.float32)
    out = power(B, 0, method="newton", floor=1e-6)
    assert np.linalg.svd(out.astype(np.float64), compute_uv=False).min() > 1 - 1e-3
    plan = power_plan(B, 0, method="newton", floor=1e-6)
    assert plan.matmuls > 0 and plan.polar.floor == 1e-6
    assert count_products(lambda X: power(X, 0, method="newton", floor=1e-6), B) == plan.matmuls


# --- auto routes by where the computation runs ------------------------------------



def _jit_plans(B, **kw):
    """(polar/clip/power plans outside jit, the same inside jit)."""
    import jax as _jax

    def plans(x):
        return (polar_plan(x, **kw), clip_plan(x, 1.0, **kw), power_plan(x, 0.5, **kw))

    outside = plans(B)
    inside = []
    _jax.jit(lambda x: inside.append(plans(x)) or x)(B)
    return outside, inside[0]


def test_plan_inside_jit_equals_plan_outside():
    pytest.importorskip("jax", reason="jax is not installed")
    import jax.numpy as jnp

    for shape in [(1, 256, 1024), (64, 64), (16, 128, 128)]:
        outside, inside = _jit_plans(jnp.zeros(shape, jnp.float32))
        assert inside == outside, shape


def test_plan_inside_jit_follows_the_default_accelerator(monkeypatch):
    pytest.importorskip("jax", reason="jax is not installed")
    import jax
    import jax.numpy as jnp

    import spectral_ops._backbone as bb

    # the default backend is an accelerator, and so is the array's own device
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(bb, "_ACCELERATOR_WORDS", bb._ACCELERATOR_WORDS + ("cpu",))
    B = jnp.zeros((1, 256, 1024), jnp.float32)
    outside, inside = _jit_plans(B)
    assert inside == outside
    assert inside[0].method == "polar_express"  # the CPU table would say "svd"
    assert inside[1].method == "polar" and inside[2].method == "newton"


def test_unreadable_device_routes_by_the_library_default(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    import array_api_compat

    import spectral_ops._backbone as bb

    def no_device(x):
        raise RuntimeError("no device")

    monkeypatch.setattr(array_api_compat, "device", no_device)
    assert bb.on_accelerator(torch.zeros(2, 2)) is False  # torch's default device: the CPU
    monkeypatch.setattr(torch, "get_default_device", lambda: torch.device("cuda"))
    assert bb.on_accelerator(torch.zeros(2, 2)) is True


# --- packaging -------------------------------------------------------------------

def test_regular_install_imports_no_framework(tmp_path):
    """A non-editable install: spectral_ops and its adapters package import without a framework."""
    root = PACKAGE.parent
    if not (root / "pyproject.toml").exists():
        pytest.skip("not a source checkout (pyproject.toml absent)")
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(root)],
        capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert build.returncode == 0, build.stderr[-2000:]
    code = ("import sys, spectral_ops, spectral_ops.adapters; "
            "print(spectral_ops.__file__); "
            "print(sorted(m for m in ('torch', 'jax', 'cupy', 'optax') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-2000:]
    path, loaded = run.stdout.splitlines()
    assert path.startswith(str(target)), path  # the installed copy, not the checkout
    assert loaded == "[]"
