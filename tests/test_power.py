"""power(B, p) against the float64 SVD, on every backend, dtype, method and orientation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import array_api_compat

import spectral_ops
from spectral_ops import POWER_METHODS, polar, power, power_plan, rational_exponent
from spectral_ops.accuracy import to_numpy
from spectral_ops.testing import from_spectrum, make_matrix

from conftest import backend_only, backend_params, count_products, eigh_refuses

SHAPES = [(96, 40), (40, 96), (64, 64), (3, 32, 48)]
PS = [Fraction(1, 4), Fraction(1, 3), Fraction(1, 2), Fraction(2, 3), Fraction(3, 4)]
# relative Frobenius error vs the exact map (issue acceptance: 1e-3 fp32 for
# s_min/s_max >= 1e-2, 1e-10 fp64 for s_min/s_max >= 1e-4)
CASES = {"float32": (1e2, 1e-3), "float64": (1e4, 1e-10)}


def _exact(b, p, eps=None):
    u, s, vh = np.linalg.svd(np.asarray(b, dtype=np.float64), full_matrices=False)
    pf = float(p)
    if eps is None:
        f = np.where(s > 0, np.where(s > 0, s, 1.0) ** pf, 0.0)
    else:
        fro = np.sqrt((s * s).sum(-1, keepdims=True))
        f = s * (s * s + (eps * fro) ** 2) ** ((pf - 1) / 2)
    return (u * f[..., None, :]) @ vh, u, s, vh


def _rel(y, e):
    return np.linalg.norm(y - e) / np.linalg.norm(e)


def _conditioned(shape, cond, seed=1):
    return from_spectrum(np.geomspace(1.0, 1.0 / cond, min(shape[-2:])), shape, seed=seed)


@pytest.mark.parametrize("backend,dtype", backend_params(("float32", "float64")))
@pytest.mark.parametrize("method", POWER_METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("p", PS, ids=str)
def test_error_vs_svd(backend, dtype, method, shape, p):
    cond, tol = CASES[dtype]
    B = backend(_conditioned(shape, cond), dtype)
    if eigh_refuses(method, dtype, lambda: power(B, p, method=method)):
        return
    y = to_numpy(power(B, p, method=method))
    assert np.isfinite(y).all()
    assert _rel(y, _exact(to_numpy(B), p)[0]) <= tol


@pytest.mark.parametrize("backend,dtype", backend_params(("float32",)))
@pytest.mark.parametrize("kind", ["ill", "gradient", "rank_deficient"])
@pytest.mark.parametrize("p", [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)], ids=str)
def test_float32_below_the_guarantee_is_bounded(backend, dtype, kind, p):
    # s_min/s_max far below 1e-2: no NaN, and no output singular value above its exact
    # value by more than 1e-2 s_max^p (they converge from below)
    B = backend(make_matrix(kind, (64, 160), cond=1e6, seed=2), dtype)
    y = to_numpy(power(B, p, method="newton"))
    assert np.isfinite(y).all()
    _, u, s, vh = _exact(to_numpy(B), p)
    d = np.einsum("ij,ik,kj->j", u, y, vh.T)
    assert (d - s ** float(p)).max() <= 1e-2 * s[0] ** float(p)


@pytest.mark.parametrize("backend,dtype", backend_params(("bfloat16",)))
@pytest.mark.parametrize("p", [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(-1, 4)],
                         ids=str)
def test_bf16(backend, dtype, p):
    B = backend(_conditioned((2, 64, 160), 10.0, seed=3), dtype)
    Y = power(B, p)
    assert Y.dtype == B.dtype
    y = to_numpy(Y)
    eps = None if p > 0 else 1e-3
    assert _rel(y, _exact(to_numpy(B), p, eps)[0]) <= 5e-2
    # gradient-like: nearly low rank, no NaN or blow-up
    G = backend(make_matrix("gradient", (64, 160), seed=3), dtype)
    g = to_numpy(power(G, p))
    assert np.isfinite(g).all()
    assert np.linalg.svd(g, compute_uv=False).max() <= 1.1 * np.linalg.svd(
        _exact(to_numpy(G), p, eps)[0], compute_uv=False).max()


@pytest.mark.parametrize("backend,dtype", backend_params(("float32", "float64")))
@pytest.mark.parametrize("p", [Fraction(-1, 4), Fraction(-1, 2), Fraction(-1, 1)], ids=str)
def test_negative_p_is_the_documented_ridge_map(backend, dtype, p):
    B = backend(_conditioned((48, 80), 1e3, seed=4), dtype)
    for method in ("newton", "svd"):
        y = to_numpy(power(B, p, method=method))
        tol = 1e-10 if dtype == "float64" else 5e-3
        assert _rel(y, _exact(to_numpy(B), p, 1e-3)[0]) <= tol, method
    # an explicit eps changes the map accordingly
    y = to_numpy(power(B, p, eps=0.05, method="newton"))
    assert _rel(y, _exact(to_numpy(B), p, 0.05)[0]) <= (1e-10 if dtype == "float64" else 1e-3)


@pytest.mark.parametrize("backend", backend_only("float64"))
def test_limits_and_composition(backend):
    b = make_matrix("ill", (3, 24, 40), cond=1e2, seed=5)
    B = backend(b)
    np.testing.assert_allclose(to_numpy(power(B, 0)), to_numpy(polar(B)), atol=1e-12)
    np.testing.assert_array_equal(to_numpy(power(B, 1)), b)
    # p -> 0 and p -> 1 approach polar and the identity continuously
    near0 = to_numpy(power(B, Fraction(1, 64), max_denominator=64))
    assert _rel(near0, to_numpy(polar(B))) < 0.1
    near1 = to_numpy(power(B, Fraction(15, 16)))
    assert _rel(near1, b) < 0.2
    half = power(B, Fraction(1, 2), method="newton")
    np.testing.assert_allclose(to_numpy(power(half, Fraction(1, 2), method="newton")),
                               to_numpy(power(B, Fraction(1, 4), method="newton")), atol=1e-10)


def test_identity_is_a_new_array():
    b = make_matrix("gaussian", (8, 12), seed=6)
    y = power(b, 1)
    assert y is not b and not np.shares_memory(y, b)


def test_float_p_conversion():
    assert rational_exponent(0.25) == Fraction(1, 4)
    assert rational_exponent(1 / 3) == Fraction(1, 3)
    assert rational_exponent(0.3) == Fraction(3, 10)
    assert rational_exponent(0.123) == Fraction(1, 8)
    assert rational_exponent(0.123, max_denominator=1000) == Fraction(123, 1000)
    assert rational_exponent(Fraction(7, 19)) == Fraction(7, 19)
    assert rational_exponent(np.float32(0.5)) == Fraction(1, 2)


@pytest.mark.parametrize("backend,dtype", backend_params())
@pytest.mark.parametrize("method", POWER_METHODS)
def test_namespace_device_dtype_preserved(backend, dtype, method):
    B = backend(make_matrix("gaussian", (2, 8, 12), seed=0), dtype)
    if eigh_refuses(method, dtype, lambda: power(B, Fraction(1, 2), method=method)):
        return
    Y = power(B, Fraction(1, 2), method=method)
    assert type(Y) is type(B)
    assert array_api_compat.array_namespace(Y) == array_api_compat.array_namespace(B)
    assert Y.dtype == B.dtype and Y.shape == B.shape
    assert str(array_api_compat.device(Y)) == str(array_api_compat.device(B))


@pytest.mark.parametrize("backend,dtype", backend_params(("float32", "float64")))
@pytest.mark.parametrize("p", [Fraction(1, 2), Fraction(-1, 4)], ids=str)
def test_zero_matrix_gives_zeros(backend, dtype, p):
    for method in POWER_METHODS:
        Z = backend(np.zeros((2, 6, 9)), dtype)
        if eigh_refuses(method, dtype, lambda: power(Z, p, method=method)):
            continue
        y = to_numpy(power(Z, p, method=method))
        assert np.all(y == 0), method


def test_input_never_mutated_read_only():
    for dtype in (np.float64, np.float32):
        B = make_matrix("gaussian", (3, 20, 30), seed=8).astype(dtype)
        B.flags.writeable = False
        before = B.copy()
        for method in POWER_METHODS:
            if method == "eigh" and dtype == np.float64:
                continue  # eigh: float32 and 16-bit inputs
            for p in (Fraction(1, 3), 0, 1, Fraction(-1, 2)):
                power(B, p, method=method)
        np.testing.assert_array_equal(B, before)


def test_jit_compatible_jax():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    b = _conditioned((16, 24), 1e2, seed=10)
    f = jax.jit(lambda x: power(x, Fraction(1, 3), method="newton"))
    np.testing.assert_allclose(np.asarray(f(jax.numpy.asarray(b))), _exact(b, Fraction(1, 3))[0],
                               atol=1e-10)


def test_plan():
    B = np.zeros((256, 1024), np.float32)
    p = power_plan(B, 0.5, method="newton")
    assert p.route == "polar-root" and p.root == 2 and p.polar_steps == 7
    ridge = power_plan(B, -0.25, method="newton")
    assert ridge.route == "gram-ridge" and ridge.root == 8
    assert power_plan(B, 0).route == "polar" and power_plan(B, 1).route == "identity"
    assert power_plan(B.astype(np.float64), 0.5).method == "svd"  # measured on CPUs
    # float32 on a CPU: the float64 Gram eigendecomposition (measured faster than the
    # SVD and the iteration), for every p but 0 and 1, any denominator
    for q in (0.5, -0.25, Fraction(1, 1000)):
        assert power_plan(B, q).route == "eigh" and power_plan(B, q).matmuls == 3
    # P by polar's choice of iteration: Gram Newton-Schulz where it pays (aspect 4), else
    # Polar Express (polar's own auto weighs eigh against it, and takes eigh here)
    assert p.polar_iteration == "gram" and spectral_ops.polar_plan(B).method == "eigh"
    assert power_plan(np.zeros((64, 64)), 0.5, method="newton").polar_iteration == "polar_express"
    # below Gram's floor, Polar Express
    assert power_plan(B, 0.5, method="newton", floor=1e-4).polar_iteration == "polar_express"
    # the root: minimax steps, a third of Newton's
    assert p.root_steps == len(p.root_coefficients) <= 5


@pytest.mark.parametrize("p", [Fraction(1, 4), Fraction(1, 2)])
def test_small_float32_floor_keeps_its_accuracy(p):
    # below floor 1e-3 in float32 the root takes Newton's steps (MINIMAX_ROOT_MIN_FLOOR):
    # the remedy of docs/power.md's known limits keeps its accuracy
    B = make_matrix("ill", (128, 512), cond=1e4, seed=0, dtype=np.float32)
    plan = power_plan(B, p, method="newton", floor=1e-4)
    assert all(c == ((plan.root + 1) / plan.root, -1 / plan.root, 0.0)
               for c in plan.root_coefficients)
    assert len({c for c in power_plan(B, p, method="newton").root_coefficients}) > 1
    exact = _exact(B.astype(np.float64), p)[0]
    assert _rel(to_numpy(power(B, p, method="newton", floor=1e-4)), exact) <= 3e-4


@pytest.mark.parametrize("p", [Fraction(1, 16), Fraction(1, 8), Fraction(1, 4)])
def test_float64_small_exponents_meet_the_target(p):
    # float64 takes the minimax root only for denominators up to 4
    # (MINIMAX_ROOT_MAX_DENOMINATOR): at 1/16 its round-off would pass 1e-10
    B = _conditioned((128, 512), 1e4, seed=2)
    plan = power_plan(B, p, method="newton")
    assert (len(set(plan.root_coefficients)) > 1) == (p.denominator <= 4)
    assert _rel(to_numpy(power(B, p, method="newton")), _exact(B, p)[0]) <= 1e-10


@pytest.mark.parametrize("p", [Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(-1, 2)])
@pytest.mark.parametrize("shape", [(24, 24), (24, 96), (96, 24), (2, 24, 72)], ids=str)
def test_plan_product_count_is_what_runs(p, shape):
    B = make_matrix("gaussian", shape, seed=0)
    ran = count_products(lambda X: power(X, p, method="newton"), B)
    assert power_plan(B, p, method="newton").matmuls == ran


@pytest.mark.parametrize("p,kwargs,exc,msg", [
    (1.5, {}, ValueError, r"p must lie in \[-1, 1\]"),
    (-2, {}, ValueError, r"p must lie in \[-1, 1\]"),
    (float("nan"), {}, ValueError, r"p must be finite"),
    ("0.5", {}, TypeError, r"p must be a real number or fractions.Fraction; got str"),
    (True, {}, TypeError, r"p must be a real number"),
    (0.5, {"method": "polar"}, ValueError, r"method must be one of .*'polar'"),
    (0.5, {"eps": 0.0}, ValueError, r"eps must be None or a number in \(0, 1\)"),
    (0.5, {"floor": 2.0}, ValueError, r"floor must be None or a number in \(0, 1\)"),
    (0.5, {"max_denominator": 0}, ValueError, r"max_denominator must be a positive integer"),
])
def test_errors_name_argument_and_fix(p, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        power(np.ones((3, 4, 5)), p, **kwargs)


def test_bad_matrix_errors():
    with pytest.raises(ValueError, match=r"B must have at least 2 dimensions"):
        power(np.ones(5), 0.5)
    with pytest.raises(TypeError, match=r"complex dtype"):
        power(np.ones((3, 3), dtype=np.complex128), 0.5)


hyp = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 10), n=st.integers(1, 10), seed=st.integers(0, 2**32 - 1),
       c=st.floats(1e-8, 1e8), p=st.sampled_from(PS + [Fraction(-1, 4)]),
       method=st.sampled_from(POWER_METHODS))
def test_homogeneity_and_transpose(m, n, seed, c, p, method):
    b = make_matrix("ill", (m, n), cond=1e2, seed=seed)
    atol = 1e-8
    if method == "eigh":  # float32 and 16-bit inputs: homogeneity to float32 round-off
        b, atol = b.astype(np.float32), 1e-5
    y = power(b, p, method=method)
    np.testing.assert_allclose(power(c * b, p, method=method), c ** float(p) * y,
                               atol=atol * max(1.0, c ** float(p)) * max(1.0, np.abs(y).max()))
    np.testing.assert_allclose(power(b.T, p, method=method), y.T, atol=atol * max(1.0, np.abs(y).max()))


# --- schedules ------------------------------------------------------------------------

def test_dynmuon_schedule_follows_the_formula():
    from spectral_ops.schedules import dynmuon_schedule

    s = dynmuon_schedule(1000)
    for t in (0, 10, 40, 80, 200, 1000, 5000):
        exact = -0.25 + 1.25 / (1 + np.exp((t / 1000 - 0.04) / 0.04))
        assert abs(float(s(t)) - exact) <= 1 / 32 + 1e-12
        assert s(t).denominator in (1, 2, 4, 8, 16)
    assert s(10**7) == Fraction(-1, 4)  # no overflow far past the end
    values = [s(t) for t in range(0, 1000)]
    assert values == sorted(values, reverse=True)  # non-increasing


def test_linear_cosine_constant_schedules():
    from spectral_ops.schedules import constant_schedule, cosine_schedule, linear_schedule

    lin = linear_schedule(100, 1.0, 0.0)
    assert lin(0) == 1 and lin(50) == Fraction(1, 2) and lin(100) == 0 and lin(500) == 0
    cos = cosine_schedule(100, 1.0, -0.25)
    assert cos(0) == 1 and cos(100) == Fraction(-1, 4) and cos(50) == Fraction(3, 8)
    assert constant_schedule(0.5)(123) == Fraction(1, 2)
    with pytest.raises(ValueError, match=r"total_steps must be a positive integer"):
        linear_schedule(0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"p_end must be a number in \[-1, 1\]"):
        linear_schedule(10, 1.0, -2.0)
    with pytest.raises(ValueError, match=r"denominator must be a positive integer"):
        constant_schedule(0.5, denominator=0)


# --- the float64 Gram eigendecomposition ("eigh") ---------------------------------------

def test_eigh_refuses_float64_and_small_floors(monkeypatch):
    b = _conditioned((20, 30), 1e2).astype(np.float32)
    with pytest.raises(ValueError, match=r"method='eigh'.*float64.*method='svd'"):
        power(b.astype(np.float64), Fraction(1, 2), method="eigh")
    with pytest.raises(ValueError, match=r"from 0.0001 s_max up.*floor=1e-05"):
        power(b, Fraction(1, 2), method="eigh", floor=1e-5)
    assert power_plan(b, Fraction(1, 2), floor=1e-5).method != "eigh"
    assert power_plan(b, Fraction(1, 2), floor=1e-4).method == "eigh"
    import spectral_ops._backbone as bb

    monkeypatch.setattr(bb, "has_float64", lambda xp, x: False)  # JAX without x64, MPS
    with pytest.raises(ValueError, match=r"needs float64"):
        power(b, Fraction(1, 2), method="eigh")
    assert power_plan(b, Fraction(1, 2)).method != "eigh"


@pytest.mark.parametrize("p", [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(-1, 4),
                               Fraction(0), Fraction(1, 1000)], ids=str)
@pytest.mark.parametrize("shape", [(96, 40), (40, 96), (3, 32, 48)], ids=str)
def test_eigh_float32_above_the_floor(p, shape):
    # condition 1e8: singular values far below the floor come out between 0 and s^p,
    # those above it to about float32 rounding (the float64 Gram matrix's error is
    # at most eigh_ridge / floor^2 = 1e-9 of s^2 there)
    s = np.geomspace(1.0, 1e-8, min(shape[-2:]))
    B = from_spectrum(s, shape, seed=5).astype(np.float32)
    y = power(B, p, method="eigh").astype(np.float64)
    _, u, sb, vh = _exact(B.astype(np.float64), p)
    d = np.einsum("...ij,...ik,...kj->...j", u, y, np.swapaxes(vh, -1, -2))  # u_i^T Y v_i
    if p < 0:  # the ridge form: f(s) = s (s^2 + eps^2 ||B||_F^2)^((p-1)/2), eps = 1e-3
        fro = np.sqrt((sb**2).sum(-1, keepdims=True))
        target = sb * (sb**2 + (1e-3 * fro) ** 2) ** ((float(p) - 1) / 2)
    else:
        target = sb ** float(p) if p else np.ones_like(sb)
    above = sb >= 1e-3 * sb[..., :1]
    assert np.abs(d - target)[above].max() <= 1e-6 * target.max(), p
    assert np.all(d[~above] <= target[~above] * (1 + 1e-6) + 1e-6 * target.max())
    assert np.all(d >= -1e-6 * target.max())


def test_eigh_plan_count_is_what_runs():
    B = make_matrix("gaussian", (24, 96), seed=2).astype(np.float32)
    for p in (Fraction(1, 2), Fraction(-1, 4), Fraction(0)):
        ran = count_products(lambda X: power(X, p, method="eigh"), B)
        assert power_plan(B, p, method="eigh").matmuls == ran == 3


@pytest.mark.parametrize("shape", [(256, 1024), (1024, 1024)], ids=str)
def test_eigh_ridge_covers_the_eigensolver_error(shape):
    # the ridge of power's "eigh" (and the error bound the docs quote) against the
    # eigenvalues of the float64 Gram matrix of a float32 input of condition 1e8
    from spectral_ops.kernels import eigh_ridge

    B = from_spectrum(np.geomspace(1.0, 1e-8, shape[0]), shape, seed=1).astype(np.float32)
    x = B.astype(np.float64)
    s = np.linalg.svd(x, compute_uv=False)
    lam = np.linalg.eigvalsh(x @ x.T)[::-1]
    err = np.abs(lam - s**2).max() / s[0] ** 2
    assert err <= eigh_ridge(shape[1]) / 2, (err / 2.0**-52, eigh_ridge(shape[1]) / 2.0**-52)


def test_eigh_rounds_once_to_the_input_dtype():
    # the float64 result, scale c^p included, is rounded once: it equals the exact map
    # rounded to float32 up to the float64 error (not a second float32 rounding)
    B = from_spectrum(np.geomspace(1.0, 1e-2, 40), (40, 96), seed=6).astype(np.float32) * 37.0
    for p in (Fraction(1, 3), Fraction(1, 2), Fraction(-1, 4)):
        y = power(B, p, method="eigh")
        eps = 1e-3 if p < 0 else None
        exact = _exact(B.astype(np.float64), p, eps)[0]
        assert np.mean(y != exact.astype(np.float32)) < 0.05, p
