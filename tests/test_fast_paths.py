"""Backend fast paths give the generic path's results to round-off."""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

import spectral_ops._fastpaths as fp
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

CALLS = {"polar_express": lambda B, **kw: polar(B, method="polar_express", **kw),
         # tol 0.1: a schedule with nonic steps (their fused products too)
         "polar_express_nonic": lambda B, **kw: polar(B, method="polar_express",
                                                      **{"tol": 0.1, **kw}),
         "gram": lambda B, **kw: polar(B, method="gram", **kw),
         "jordan": lambda B, **kw: polar(B, method="jordan", **kw),
         "clip": lambda B, **kw: clip(B, 0.5, method="polar", **kw),
         "power": lambda B, **kw: power(B, 0.5, method="newton", **kw),
         "power_ridge": lambda B, **kw: power(B, -0.5, method="newton", **kw)}


def _both(fn, monkeypatch, switch="FUSED_GEMM"):
    """The result with the fast path on, and with it off (the generic path)."""
    monkeypatch.setattr(fp, switch, True)
    fast = to_numpy(fn())
    monkeypatch.setattr(fp, switch, False)
    slow = to_numpy(fn())
    return fast, slow


@pytest.mark.parametrize("backend,dtype", [p for p in backend_params()
                                           if p.id.startswith(("torch", "cupy"))])
@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (3, 32, 40)], ids=str)
@pytest.mark.parametrize("call", ["polar_express", "polar_express_nonic", "gram", "jordan",
                                  "clip", "power"])
def test_fused_gemm_matches_generic(backend, dtype, shape, call, monkeypatch):
    B = backend(make_matrix("ill", shape, cond=1e2, seed=0), dtype)
    # torch: 2-D and 3-D; CuPy's cuBLAS wrapper: 2-D float32/float64 only
    expected = B.ndim == 2 or array_api_compat.is_torch_array(B)
    assert fp.fused_gemm_available(B) == expected
    fast, slow = _both(lambda: CALLS[call](B), monkeypatch)
    _assert_fast_matches_generic(fast, slow, B, call, dtype)


def _assert_fast_matches_generic(fast, slow, B, call, dtype):
    """The fast path's result against the generic path's, by what their difference is:

    * bfloat16: both round to bfloat16 once, independently (2^-9 each), so each is held
      to the float32 result;
    * ``power`` in float64: its root steps amplify the paths' last-bit differences (an
      H100 had the fused add's 1.1e-12 of max|output| off the generic path's,
      pytest-gpu-dae265ae.xml), so both are held to the exact map;
    * otherwise the two agree to the dtype's round-off.
    """
    if dtype == "bfloat16":
        kw = {"tol": 2e-2} if call == "polar_express" else {}
        ref = to_numpy(CALLS[call](B.float(), **kw))
        err_fast, err_slow = np.linalg.norm(fast - ref), np.linalg.norm(slow - ref)
        assert err_fast <= 1.25 * err_slow + 1e-3 * np.linalg.norm(ref), (err_fast, err_slow)
    elif call == "power" and dtype == "float64":
        _assert_as_exact_as_generic(fast, slow, B, call, tol=1e-10)  # power's float64 target
    else:
        assert np.abs(fast - slow).max() <= TOL[dtype] * max(np.abs(slow).max(), 1e-30)


#: How much further from the exact map a fast path may be than the generic path,
#: where the map amplifies round-off (power's root steps, the ridge route's
#: inverse root): the two paths' errors are then independent draws of the same
#: size: fused / generic was 0.65 to 1.58 (power, float64; 24 cases on an H200;
#: 0.58 to 1.80 with torch's CPU), syrk / gemm 1.15 to 1.68 (ridge, float32, CuPy,
#: the 8 2-D cases; asv_bench/results/h200/probe-d11d2a3d.txt). A wrong fast
#: path (a lost beta, a wrong triangle) is orders of magnitude off.
AMPLIFIED_RATIO = 4.0


def _assert_as_exact_as_generic(fast, slow, B, call, tol):
    """Both paths within ``tol`` of the exact map (float64 SVD), the fast one within
    ``AMPLIFIED_RATIO`` of the generic path's error."""
    p = {"power": 0.5, "power_ridge": -0.5}[call]  # the exponents of CALLS
    ref = power(to_numpy(B).astype(np.float64), p, method="svd")
    norm = np.linalg.norm(ref)
    err_fast, err_slow = np.linalg.norm(fast - ref) / norm, np.linalg.norm(slow - ref) / norm
    assert err_slow <= tol and err_fast <= tol, (err_fast, err_slow)
    assert err_fast <= AMPLIFIED_RATIO * err_slow, (err_fast, err_slow)


def test_fast_paths_are_used_for_torch_and_cupy_only():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    assert fp.fused_gemm_available(torch.zeros(3, 4))
    assert fp.fused_gemm_available(torch.zeros(2, 3, 4))
    assert not fp.fused_gemm_available(torch.zeros(2, 2, 3, 4))  # 4-D: generic path
    assert not fp.fused_gemm_available(np.zeros((3, 4)))
    assert not fp.symmetric_gram_available(np.zeros((3, 4)))
    assert not fp.symmetric_gram_available(torch.zeros(3, 4))  # torch has no syrk


@pytest.mark.parametrize("backend,dtype", [p for p in backend_params()
                                           if p.id.startswith("cupy")])
@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (3, 32, 40)], ids=str)
@pytest.mark.parametrize("call", list(CALLS))
def test_symmetric_gram_matches_generic_cupy(backend, dtype, shape, call, monkeypatch):
    B = backend(make_matrix("ill", shape, cond=1e2, seed=0), dtype)
    monkeypatch.setattr(fp, "SYMMETRIC_GRAM", True)
    assert fp.symmetric_gram_available(B) == (B.ndim == 2)
    x = B if B.ndim == 2 else B[0]
    gx = to_numpy(fp.gram(array_api_compat.array_namespace(x), x))
    np.testing.assert_array_equal(gx, gx.T)  # symmetric to the last bit
    ref = to_numpy(x) @ to_numpy(x).T
    assert np.abs(gx - ref).max() <= TOL[dtype] * np.abs(ref).max()
    fast, slow = _both(lambda: CALLS[call](B), monkeypatch, "SYMMETRIC_GRAM")
    if call == "power_ridge" and dtype == "float32":
        # the ridge route's inverse root amplifies the last-bit differences of the
        # Gram (syrk's is symmetric, gemm's not quite) to ~5e-5 of the output
        _assert_as_exact_as_generic(fast, slow, B, call, tol=5e-3)  # the ridge map's tol
    else:
        assert np.abs(fast - slow).max() <= TOL[dtype] * max(np.abs(slow).max(), 1e-30)


@pytest.mark.parametrize("shape", [(5, 5), (3, 4, 4)], ids=str)
@pytest.mark.parametrize("lower", [False, True])
def test_mirror_triangle_rebuilds_the_symmetric_matrix(shape, lower):
    # what the syrk path does with the one triangle cuBLAS fills (the other is zero)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape[:-1] + (7,))
    full = x @ np.swapaxes(x, -1, -2)
    full = 0.5 * (full + np.swapaxes(full, -1, -2))  # exactly symmetric
    tri = np.tril(full) if lower else np.triu(full)
    np.testing.assert_array_equal(fp.mirror_triangle(np, tri), full)


def test_gram_generic_path_is_the_plain_product():
    x = np.random.default_rng(1).standard_normal((2, 5, 9))
    np.testing.assert_array_equal(fp.gram(np, x), x @ np.swapaxes(x, -1, -2))


@pytest.mark.parametrize("backend,dtype", [p for p in backend_params()
                                           if p.id.startswith("torch")])
@pytest.mark.parametrize("shape", [(48, 80), (3, 32, 40)], ids=str)
@pytest.mark.parametrize("call", ["polar_express", "clip", "power"])
def test_fused_add_matches_generic(backend, dtype, shape, call, monkeypatch):
    # Polar Express's first step A + (c/b) A^2 (also inside clip's P and power's P)
    B = backend(make_matrix("ill", shape, cond=1e2, seed=0), dtype)
    fast, slow = _both(lambda: CALLS[call](B), monkeypatch, switch="FUSED_ADD")
    _assert_fast_matches_generic(fast, slow, B, call, dtype)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_bfloat16_polar_express_float32_copies(device):
    # the profile on an H200 (bf16, 4096 x 4096) showed five float32 casts of about 50 us
    # per call, three of them the first step's sum and two the norms' (the m x n input,
    # the m x m A^2). On CUDA the fused add takes the first three, and the norms reduce
    # the bfloat16 tensors into float32 directly (torch's mixed-precision norm kernel):
    # none is left. On the CPU torch widens before the norm, and its add rounds alpha to
    # bfloat16, so there the exact generic sum stays (five)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch on this machine")
    from torch.profiler import ProfilerActivity, profile
    m, n = 64, 96
    B = torch.from_numpy(make_matrix("gaussian", (m, n), seed=1)).to(torch.bfloat16).to(device)
    polar(B, method="polar_express")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        polar(B, method="polar_express")
    shapes = [list(e.input_shapes[0])[-2:] for e in prof.events()
              if e.name == "aten::_to_copy" and e.input_shapes and len(e.input_shapes[0]) >= 2]
    square = shapes.count([m, m])
    assert shapes.count([m, n]) == (0 if device == "cuda" else 1), shapes
    assert square == (0 if device == "cuda" else 4), shapes


def test_fused_add_keeps_the_exact_coefficient_on_the_cpu():
    # bfloat16 on the CPU: the generic sum, bit for bit (torch's CPU add would round
    # alpha to bfloat16); float32: the fused add, within round-off of the generic sum
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from spectral_ops.kernels import lincomb
    import array_api_compat.torch as xpt
    a = torch.from_numpy(make_matrix("gaussian", (16, 16), seed=2))
    b = torch.from_numpy(make_matrix("gaussian", (16, 16), seed=3))
    alpha = -17.300387312530933 / 23.595886519098837
    comb = lambda terms, dt: lincomb(xpt, terms, dt)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    assert torch.equal(fp.add_scaled(xpt, a16, b16, alpha, combine=comb),
                       comb([(1.0, a16), (alpha, b16)], torch.bfloat16))
    a32, b32 = a.float(), b.float()
    fused = fp.add_scaled(xpt, a32, b32, alpha, combine=comb)
    assert torch.allclose(fused, comb([(1.0, a32), (alpha, b32)], torch.float32),
                          rtol=0, atol=4e-7 * float(fused.abs().max()))
