"""Backend fast paths give the generic path's results to round-off."""

from __future__ import annotations

import numpy as np
import pytest

import spectral_ops._backbone as bb
from spectral_ops import clip, polar, power
from spectral_ops.accuracy import to_numpy
from spectral_ops.testing import make_matrix

from conftest import backend_params

# float32/64: worst elementwise difference relative to the largest entry (a few
# roundings: the fused GEMM rounds once where the generic path rounds the product
# first). bfloat16: every step rounds X to 2^-9, so both paths carry ~1e-2 errors
# of their own in different directions (they differ by ~2e-2); the test asks that
# the fused path be no further from the float32 result than the generic one.
TOL = {"float64": 1e-12, "float32": 2e-5}


def _both(fn, monkeypatch):
    fast = to_numpy(fn())
    monkeypatch.setattr(bb, "FUSED_GEMM", False)
    slow = to_numpy(fn())
    monkeypatch.setattr(bb, "FUSED_GEMM", True)
    return fast, slow


@pytest.mark.parametrize("backend,dtype", [p for p in backend_params()
                                           if p.id.startswith("torch")])
@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (3, 32, 40)], ids=str)
@pytest.mark.parametrize("call", ["polar_express", "jordan", "clip", "power"])
def test_fused_gemm_matches_generic_torch(backend, dtype, shape, call, monkeypatch):
    B = backend(make_matrix("ill", shape, cond=1e2, seed=0), dtype)
    fn = {"polar_express": lambda: polar(B, method="polar_express"),
          "jordan": lambda: polar(B, method="jordan"),
          "clip": lambda: clip(B, 0.5, method="polar"),
          "power": lambda: power(B, 0.5, method="newton")}[call]
    assert bb.fused_gemm_available(B if B.ndim <= 3 else B[0])
    fast, slow = _both(fn, monkeypatch)
    if dtype == "bfloat16":
        B32 = B.float()
        ref = to_numpy({"polar_express": lambda: polar(B32, method="polar_express", tol=2e-2),
                        "jordan": lambda: polar(B32, method="jordan"),
                        "clip": lambda: clip(B32, 0.5, method="polar"),
                        "power": lambda: power(B32, 0.5, method="newton")}[call]())
        err_fast, err_slow = np.linalg.norm(fast - ref), np.linalg.norm(slow - ref)
        assert err_fast <= 1.25 * err_slow + 1e-3 * np.linalg.norm(ref), (err_fast, err_slow)
    else:
        assert np.abs(fast - slow).max() <= TOL[dtype] * max(np.abs(slow).max(), 1e-30)


def test_fused_path_is_used_for_torch_only():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    assert bb.fused_gemm_available(torch.zeros(3, 4))
    assert bb.fused_gemm_available(torch.zeros(2, 3, 4))
    assert not bb.fused_gemm_available(torch.zeros(2, 2, 3, 4))  # 4-D: generic path
    assert not bb.fused_gemm_available(np.zeros((3, 4)))
