"""Hostile inputs: non-finite values, extreme scales, 16-bit ranges, autograd, odd arguments.

The non-finite policy (docs/accuracy.md): a matrix holding NaN or infinity is
never handed to an iteration or to LAPACK; its result is all NaN (other
matrices of the batch are unaffected); ``check_finite=True`` raises instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest

from spectral_ops import (CLIP_METHODS, POLAR_METHODS, POWER_METHODS, clip, polar, power,
                          power_plan, spectral_report)
from spectral_ops.accuracy import to_numpy
from spectral_ops.testing import make_matrix

from conftest import backend_params

EPS32 = 2.0**-23
MAPS = ([("polar", m) for m in POLAR_METHODS] + [("clip", m) for m in CLIP_METHODS]
        + [("power", m) for m in POWER_METHODS])


def _apply(kind, method, B, **kw):
    if kind == "polar":
        return polar(B, method=method, **kw)
    if kind == "clip":
        return clip(B, kw.pop("tau", 0.5), method=method, **kw)
    return power(B, kw.pop("p", Fraction(1, 2)), method=method, **kw)


# --- non-finite input -----------------------------------------------------------------

@pytest.mark.parametrize("backend,dtype", backend_params(("float32",)))
@pytest.mark.parametrize("kind,method", MAPS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_matrix_gives_nan_and_spares_the_batch(backend, dtype, kind, method, bad):
    b = make_matrix("gaussian", (3, 12, 20), seed=0)
    b[1, 0, 7] = bad
    Y = to_numpy(_apply(kind, method, backend(b, dtype)))
    assert np.isnan(Y[1]).all(), "the non-finite matrix must come out all NaN"
    assert np.isfinite(Y[[0, 2]]).all(), "the clean matrices must be unaffected"
    ref = to_numpy(_apply(kind, method, backend(b[[0, 2]], dtype)))
    np.testing.assert_allclose(Y[[0, 2]], ref, atol=1e-5)


@pytest.mark.parametrize("backend,dtype", backend_params(("float32",)))
def test_one_nan_among_many_entries_is_seen(backend, dtype):
    # a NaN among 4096 or more elements: JAX's max on the CPU skips it (XLA), so
    # finiteness there is not read off max|B|; 2 x 64 x 96 holds 12288 entries
    b = make_matrix("gaussian", (2, 64, 96), seed=2)
    b[0, 40, 70] = np.nan
    B = backend(b, dtype)
    with pytest.raises(ValueError, match="B contains NaN"):
        polar(B, check_finite=True)
    for kind in ("polar", "clip", "power"):
        Y = to_numpy(_apply(kind, "auto", B))
        assert np.isnan(Y[0]).all() and np.isfinite(Y[1]).all(), kind


@pytest.mark.parametrize("backend,dtype", backend_params(("float32",)))
@pytest.mark.parametrize("kind,method", [("polar", "polar_express"), ("clip", "newton"),
                                         ("clip", "polar"), ("power", "newton")])
def test_float32_at_its_largest_value(backend, dtype, kind, method):
    # max|B| within 2.6e-6 of 2^128: float32's log2 rounds up to 128, and 2^128 is
    # infinite; the prescale must still give 2^127 (before: an infinite result)
    b = make_matrix("ill", (24, 40), cond=10.0, seed=12)
    b = b / np.abs(b).max() * float(np.finfo(np.float32).max)
    B = backend(b.astype(np.float32), dtype)
    kw = {"tau": 0.3 * float(np.abs(b).max())} if kind == "clip" else {}
    Y = to_numpy(_apply(kind, method, B, **kw)).astype(np.float64)
    ref = to_numpy(_apply(kind, "svd", b.astype(np.float32).astype(np.float64), **kw))
    assert np.isfinite(Y).all()
    assert np.linalg.norm(Y - ref) <= 1e-3 * np.linalg.norm(ref)


def test_the_svd_route_no_longer_hangs_on_an_infinity():
    # before: LAPACK looped forever (over 45 s, SIGINT ignored); a child process
    # with a time limit keeps a regression from hanging the test run
    code = textwrap.dedent("""
        import numpy as np, spectral_ops
        B = np.random.default_rng(0).standard_normal((12, 20)).astype(np.float32)
        B[0, 7] = np.inf
        for method in ("auto", "svd"):
            assert np.isnan(spectral_ops.polar(B, method=method)).all()
            assert np.isnan(spectral_ops.power(B, 0.5, method=method)).all()
            assert np.isnan(spectral_ops.clip(B, 1.0, method=method)).all()
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("backend,dtype", backend_params(("float32",)))
@pytest.mark.parametrize("fn", [lambda B, **k: polar(B, **k), lambda B, **k: clip(B, 1.0, **k),
                                lambda B, **k: power(B, 0.5, **k)], ids=["polar", "clip", "power"])
def test_check_finite_raises_a_clear_error(backend, dtype, fn):
    b = make_matrix("gaussian", (6, 9), seed=1)
    b[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"B contains NaN or infinite values.*check_finite=False"):
        fn(backend(b, dtype), check_finite=True)


def test_check_finite_under_jit_is_a_checkify_check():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    import jax.numpy as jnp
    from jax.experimental import checkify

    b = jnp.asarray(make_matrix("gaussian", (6, 9), seed=1), jnp.float32).at[2, 3].set(jnp.nan)
    checked = checkify.checkify(jax.jit(lambda x: polar(x, check_finite=True)))
    err, _ = checked(b)
    with pytest.raises(Exception, match=r"B contains NaN or infinite values"):
        err.throw()
    err, out = checked(jnp.ones((6, 9), jnp.float32))
    err.throw()  # clean input: no error
    # without checkify, JAX says to functionalise the check (no raw TracerBoolConversionError)
    with pytest.raises(Exception, match=r"checkify"):
        jax.jit(lambda x: polar(x, check_finite=True))(b)


def test_traced_invalid_tau_gives_nan_not_garbage():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    import jax.numpy as jnp

    b = jnp.asarray(make_matrix("gaussian", (3, 8, 12), seed=2), jnp.float32)
    f = jax.jit(lambda x, t: clip(x, t, method="polar"))
    out = np.asarray(f(b, jnp.asarray([1.0, -1.0, jnp.nan], jnp.float32)))
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()


def test_spectral_report_of_a_nan_output_says_so():
    B = make_matrix("gaussian", (8, 12), seed=3)
    Y = np.full_like(B, np.nan)
    r = spectral_report(Y, B)
    assert r.finite is False and np.isnan(r.rel_error)


# --- messages ----------------------------------------------------------------------

def test_tau_from_another_library_is_named():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    B = torch.ones(4, 6)
    with pytest.raises(TypeError, match=r"tau is a numpy array but B is a torch array"):
        clip(B, np.asarray(1.0))


def test_masked_arrays_and_infinite_steps_are_refused_clearly():
    B = np.ma.masked_array(np.ones((4, 6)), mask=np.zeros((4, 6), bool))
    with pytest.raises(TypeError, match=r"masked array.*filled"):
        polar(B)
    with pytest.raises(ValueError, match=r"steps must be a positive integer"):
        polar(np.ones((4, 6)), method="polar_express", steps=float("inf"))


# --- scale -------------------------------------------------------------------------

def _exact(b, kind, tau=None, p=None):
    u, s, vh = np.linalg.svd(b, full_matrices=False)
    if kind == "polar":
        f = np.ones_like(s)
    elif kind == "clip":
        f = np.minimum(s, tau)
    else:
        fro = np.sqrt((s * s).sum(-1, keepdims=True))
        f = s ** p if p > 0 else s * (s * s + (1e-3 * fro) ** 2) ** ((p - 1) / 2)
    return (u * f[..., None, :]) @ vh


@pytest.mark.parametrize("backend,dtype", [p for p in backend_params()
                                           if p.id.split("-")[-1] in ("float32", "float64",
                                                                      "bfloat16")])
def test_power_of_two_scale_is_exact_and_in_range(backend, dtype):
    # the prescale every route starts with: x = xs * scale exactly, scale a finite power
    # of two, max|xs| in [1, 2) or (where log2 rounds up just below a power of two)
    # within 2^-17 below 1, from the smallest subnormal to the largest finite value;
    # zero and NaN matrices get 1, a matrix with an infinity a finite scale
    import array_api_compat

    from spectral_ops import _backbone as bb

    np_dtype = {"float32": np.float32, "float64": np.float64, "bfloat16": np.float32}[dtype]
    fi = np.finfo(np_dtype)
    lo = -149 if np_dtype == np.float32 else -1074
    # powers of two, the values 1 to 40 units in the last place below them, and the extremes
    vals = []
    for k in range(lo, fi.maxexp, 7 if np_dtype == np.float64 else 1):
        v = np_dtype(2.0) ** np_dtype(k) if k >= fi.minexp else np_dtype(fi.smallest_subnormal) * 2.0 ** (k - lo)
        vals.append(v)
        for d in (1, 3, 40):
            w = v
            for _ in range(d):
                w = np.nextafter(w, np_dtype(0))
            if w > 0:
                vals.append(w)
    vals += [fi.max, fi.smallest_subnormal, fi.tiny]
    col = np.asarray(vals, dtype=np_dtype)
    if dtype == "bfloat16":  # values bfloat16 holds exactly: the top 8 bits
        col = (col.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        col = col[col > 0]
    xp = array_api_compat.array_namespace(backend(np.zeros((1, 1)), dtype))
    if array_api_compat.is_jax_namespace(xp):  # XLA on CPUs flushes subnormals to zero
        col = col[col / 3 >= fi.tiny]
    # one matrix per value: (value, -value / 3) in a row
    b = np.stack([col, -col / 3], axis=-1)[:, None, :]
    x = backend(b, dtype)
    xs, scale = bb.power_of_two_scale(xp, x)
    xs64 = to_numpy(xs).astype(np.float64)
    s64 = to_numpy(scale).astype(np.float64)
    m = np.abs(xs64).max(axis=(-2, -1))
    assert np.isfinite(s64).all() and (s64 > 0).all()
    assert (np.log2(s64) == np.round(np.log2(s64))).all()  # powers of two
    # 2 itself where log2 rounds down at an exact power of two (XLA's on CPUs, at 2^13
    # in float32 among others)
    top = 2.0 if array_api_compat.is_jax_namespace(xp) else np.nextafter(2.0, 0)
    assert ((m >= 1 - 2.0**-17) & (m <= top)).all(), col[(m < 1 - 2.0**-17) | (m > top)]
    np.testing.assert_array_equal(xs64 * s64, to_numpy(x).astype(np.float64))  # exact
    # zero, NaN and infinite matrices
    special = backend(np.array([[[0.0, 0.0]], [[np.nan, 1.0]], [[np.inf, 1.0]]]), dtype)
    xs, scale = bb.power_of_two_scale(xp, special)
    s = to_numpy(scale).astype(np.float64).ravel()
    assert s[0] == 1 and s[1] == 1 and np.isfinite(s[2])
    assert (to_numpy(xs).astype(np.float64)[0] == 0).all()


def test_float16_prescale_keeps_an_infinity_infinite():
    # the exponent is capped at float16's largest power of two (2^15): halves of a
    # float32 cap (2^-64) would round to 0 there and turn inf into NaN
    from spectral_ops import _backbone as bb
    import array_api_compat.numpy as xnp

    x = np.array([[[np.inf, 1.0]], [[60000.0, 1.0]]], dtype=np.float16)
    with np.errstate(all="raise"):
        xs, scale = bb.power_of_two_scale(xnp, x)
    assert np.isposinf(xs[0, 0, 0]) and scale[0, 0, 0] == 2.0**15
    assert scale[1, 0, 0] == 2.0**15 and xs[1, 0, 0] * 2.0**15 == 60000.0


_OVERFLOW_CAST = r"""
import sys, numpy as np
from spectral_ops import polar, power
lib, route = sys.argv[1:]
b = np.array([[np.finfo(np.float32).max, 1.0, 0.5], [0.25, 2.0, 1.0]], np.float32)
if lib == "torch":
    import torch
    b = torch.tensor(b)
y = (polar(b, method=route, compute_dtype="float16") if route in ("svd", "auto")
     else power(b, 0.5, method=route, compute_dtype="float16"))
y = y.float().numpy() if lib == "torch" else np.asarray(y)
print("all nan" if np.isnan(y).all() else f"not nan: {y}")
"""


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("route", ["svd", "auto", "newton"])
def test_compute_dtype_overflow_gives_nan_not_a_hang(lib, route):
    # a finite float32 input whose cast to float16 overflows: infinite in the compute
    # dtype, so NaN; the SVD route looped inside LAPACK on it (in a subprocess: a hang
    # there cannot be interrupted in this one)
    if lib == "torch":
        pytest.importorskip("torch", reason="torch is not installed")
    proc = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", _OVERFLOW_CAST,
                           lib, route], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "all nan", proc.stdout


def test_nan_matrix_leaves_the_other_gradients_finite():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    W = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    bad = torch.zeros(2, 4, 6)
    bad[1, 0, 0] = float("nan")
    for f in (lambda b: polar(b), lambda b: polar(b, method="polar_express"),
              lambda b: polar(b, method="jordan", steps=5), lambda b: power(b, 0.5, method="newton")):
        W.grad = None
        f(W + bad)[0].sum().backward()  # reads only the finite matrix
        assert torch.isfinite(W.grad).all()


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e10, 1e30])
@pytest.mark.parametrize("kind,method", [m for m in MAPS if m[1] != "jordan"])
def test_every_route_holds_across_float32_scales(scale, kind, method):
    b = make_matrix("ill", (48, 96), cond=1e2, seed=4)
    B = (b * scale).astype(np.float32)
    bn = B.astype(np.float64)
    tau, p = 0.3 * np.linalg.norm(bn, 2), float(Fraction(1, 2) if kind != "power" else 0.5)
    kw = {"tau": tau} if kind == "clip" else {"p": p} if kind == "power" else {}
    Y = _apply(kind, method, B, **kw).astype(np.float64)
    E = _exact(bn, kind, tau=tau, p=p)
    rel = np.linalg.norm(Y - E) / np.linalg.norm(E)
    assert np.isfinite(Y).all()
    assert rel <= 1e-3, (kind, method, scale, rel)  # the fp32 accuracy targets


@pytest.mark.parametrize("p", [Fraction(-1, 2), Fraction(-1, 4), Fraction(1, 3)])
@pytest.mark.parametrize("scale", [1e-24, 1e20])
def test_power_svd_route_with_negative_p_at_extreme_scales(p, scale):
    b = make_matrix("ill", (16, 24), cond=1e2, seed=5)
    B = (b * scale).astype(np.float32)
    Y = power(B, p, method="svd").astype(np.float64)
    E = _exact(B.astype(np.float64), "power", p=float(p))
    assert np.linalg.norm(Y - E) / np.linalg.norm(E) <= 1e-5


def test_clip_of_a_small_input_is_the_input():
    B = (1e-8 * np.random.default_rng(6).standard_normal((128, 512))).astype(np.float32)
    for method in CLIP_METHODS:
        Y = clip(B, 1.0, method=method)
        assert np.linalg.norm(Y - B) / np.linalg.norm(B) <= 1e-6, method
    for tau in (1e300, np.float64(1e300)):  # beyond float32: still B, not NaN
        assert np.allclose(clip(B, tau, method="polar"), B, rtol=0, atol=0)


def test_clip_of_a_huge_input_by_auto_stays_in_the_ball():
    B = (1e16 * make_matrix("gaussian", (128, 512), seed=7)).astype(np.float32)
    Y = clip(B, 1.0).astype(np.float64)
    assert np.linalg.norm(Y, 2) <= 1 + 1e-3


def test_tiny_exponents_route_exactly_or_are_refused():
    B = make_matrix("ill", (40, 160), cond=1e3, seed=8).astype(np.float32)
    assert power_plan(B, Fraction(1, 1000)).method == "eigh"  # float32 on a CPU
    assert power_plan(B.astype(np.float64), Fraction(1, 1000)).method == "svd"
    with pytest.raises(ValueError, match=r"b <= 16.*method='svd'"):
        power(B, Fraction(1, 1000), method="newton")


# --- 16-bit ranges ------------------------------------------------------------------

@pytest.mark.parametrize("amax", [6e4, 5e4, 1.0, 1e-3, 1e-5])
@pytest.mark.parametrize("method", ["polar_express", "jordan", "gram", "qdwh", "svd"])
def test_float16_polar_across_its_range(amax, method):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    b = make_matrix("ill", (32, 64), cond=10.0, seed=9)
    B = torch.from_numpy(b / np.abs(b).max() * amax).to(torch.float16)
    s = np.linalg.svd(to_numpy(polar(B, method=method)), compute_uv=False)
    lo, hi = (0.6, 1.2) if method == "jordan" else (0.95, 1.05)
    assert lo <= s.min() and s.max() <= hi, (amax, method, s.min(), s.max())


@pytest.mark.parametrize("amax", [1e-5, 1e-3, 6e4])
def test_jax_float16_polar_small_and_large(amax):
    pytest.importorskip("jax", reason="jax is not installed")
    import jax.numpy as jnp

    b = make_matrix("ill", (32, 64), cond=10.0, seed=10)
    B = jnp.asarray(b / np.abs(b).max() * amax, jnp.float16)
    s = np.linalg.svd(to_numpy(polar(B, method="polar_express")), compute_uv=False)
    assert 0.95 <= s.min() and s.max() <= 1.05


@pytest.mark.parametrize("amax", [3e38, 1e-30])
@pytest.mark.parametrize("kind,method", [("polar", "polar_express"), ("polar", "jordan"),
                                         ("clip", "polar"), ("power", "newton")])
def test_bfloat16_and_float32_near_the_dtype_limits(amax, kind, method):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    b = make_matrix("ill", (32, 64), cond=10.0, seed=11)
    for dt in (torch.bfloat16, torch.float32):
        B = torch.from_numpy(b / np.abs(b).max() * amax).to(dt)
        ref = torch.from_numpy(b / np.abs(b).max()).to(dt)
        kw = {"tau": 0.3 * amax} if kind == "clip" else {}
        Y = to_numpy(_apply(kind, method, B, **kw))
        assert np.isfinite(Y).all() and np.abs(Y).max() > 0, (dt, amax)
        if kind == "polar":
            Yref = to_numpy(_apply(kind, method, ref))
            np.testing.assert_allclose(Y, Yref, atol=0.05 if dt == torch.bfloat16 else 1e-5)


# --- autograd -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["polar", "clip", "power"])
def test_autograd_through_auto_is_finite_at_repeated_singular_values(kind):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    Q, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0)))
    Q.requires_grad_(True)
    Y = _apply(kind, "auto", Q, **({"tau": 0.5} if kind == "clip" else {}))
    (Y * torch.arange(24.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(Q.grad).all()


def test_jax_grad_through_auto_is_finite_at_repeated_singular_values():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    import jax.numpy as jnp

    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((24, 24)))
    w = jnp.arange(24.0)
    for f in (lambda x: polar(x), lambda x: clip(x, 0.5), lambda x: power(x, 0.5)):
        g = jax.grad(lambda x: (f(x) * w).sum())(jnp.asarray(q, jnp.float32))
        assert bool(jnp.isfinite(g).all())


# --- found by an adversarial review: 37 of these 40 cases failed before the fixes ------

def _rank_deficient32(shape, rank, seed=0):
    rng = np.random.default_rng(seed)
    m, n = shape
    return (rng.standard_normal((m, rank)).astype(np.float32)
            @ rng.standard_normal((rank, n)).astype(np.float32))


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("shape,rank", [((8, 16), 1), ((256, 1024), 4), ((300, 1024), 1)],
                         ids=str)
def test_eigh_polar_of_a_rank_deficient_float32_input_follows_the_svd(framework, shape, rank):
    # the float32 round-off directions (~1e-7 s_max) sit at the eigh ridge's scale: they
    # came out between 0.03 and 0.3 (auto vs svd: 15% to 28% apart); now both count
    # them as zero, as polar's partial convention says
    b = _rank_deficient32(shape, rank)
    B = b if framework == "numpy" else pytest.importorskip(
        "torch", reason="torch is not installed").from_numpy(b)
    ref = to_numpy(polar(B, method="svd")).astype(np.float64)
    for Y in (polar(B), polar(B, method="eigh"), power(B, 0), power(B, 0, method="eigh")):
        y = to_numpy(Y).astype(np.float64)
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= 1e-5
    from spectral_ops import polar_plan
    assert polar_plan(B).method == "eigh"  # what the first line above exercised


@pytest.mark.parametrize("shape,floor", [((64, 4096), 1e-4), ((32, 16384), 1e-3)], ids=str)
def test_eigh_polar_cut_off_stays_below_the_floor(shape, floor):
    # n eps32 passes 1e-4 at n = 840 and 1e-3 at n = 8390: uncapped, the cut-off zeroed
    # singular values the floor promises (11 of 64 here at floor 1e-4, max |s - 1| = 1)
    from spectral_ops.testing import from_spectrum
    m = shape[0]
    b = from_spectrum(np.geomspace(1.0, floor, m), shape, seed=0).astype(np.float32)
    y = polar(b, method="eigh", floor=floor).astype(np.float64)
    _, _, vh = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    band = np.linalg.svd(y @ vh.T, compute_uv=False)
    assert np.abs(band - 1).max() <= 1e-5, np.abs(band - 1).max()


@pytest.mark.parametrize("kind,method", MAPS)
def test_array_api_strict_on_another_device(kind, method):
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    dev = xs.Device("device1")
    b = make_matrix("gaussian", (6, 10), seed=1)
    B = xs.asarray(b, dtype=xs.float32, device=dev)
    Y = _apply(kind, method, B, **({"steps": 5} if method == "jordan" else {}))
    assert Y.device == dev and Y.dtype == xs.float32
    assert np.isfinite(to_numpy(Y)).all()


TINY32 = 2.0**-126 * (1 + 1e-5)  # float32's smallest normal value, with round-off


@pytest.mark.parametrize("framework", ["numpy", "jax"])
@pytest.mark.parametrize("method", ["auto", "svd"])
def test_clip_tau_below_the_dtype_is_zero_not_nan(framework, method, recwarn):
    # a positive tau that is 0 in float32 made the result NaN; it now counts as float32's
    # smallest normal value (not a subnormal: XLA on CPUs flushes those to zero)
    b = make_matrix("gaussian", (6, 10), seed=2).astype(np.float32)
    if framework == "jax":
        jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
        conv = jnp.asarray
    else:
        conv = np.asarray
    for tau in (1e-300, 1e-46, 1e-40):  # positive, but 0 or subnormal in float32
        y = to_numpy(clip(conv(b), tau, method=method))
        assert np.isfinite(y).all() and np.linalg.norm(y.astype(np.float64), 2) <= TINY32
    y = to_numpy(clip(conv(np.stack([b, b, b])), conv(np.array([1.0, 1e-300, 1.0])),
                      method=method))
    assert np.isfinite(y).all() and np.linalg.norm(y[1].astype(np.float64), 2) <= TINY32
    assert np.linalg.norm(y[0] - clip(b, 1.0, method="svd")) <= 1e-6
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("method", ["polar", "newton"])
def test_matrix_clip_refuses_tau_below_the_round_off(method):
    # measured before: float32 "newton" gave ||Y||_2 = 1.29 tau at s_max / tau = 1e7 on a
    # nearly low-rank input, and 1.8e20 tau at tau = 1e-38; "polar" a schedule error
    b = make_matrix("gradient", (64, 128), seed=1).astype(np.float32)
    tau = float(np.linalg.norm(b.astype(np.float64), 2)) / 1e8
    with pytest.raises(ValueError, match=r"cannot resolve tau.*method='svd'"):
        clip(b, tau, method=method)
    with pytest.raises(ValueError, match=r"cannot resolve tau"):
        clip(b, 1.0, method=method, ratio=1e8)
    y = clip(b, tau).astype(np.float64)  # auto: the SVD
    assert np.linalg.norm(y, 2) <= tau * (1 + 1e-3)
    assert np.linalg.norm(clip(b.astype(np.float64), tau, method=method), 2) <= tau * (1 + 1e-6)


def test_clip_of_a_zero_matrix_bounds_nothing():
    zero = np.zeros((8, 16), np.float32)
    assert np.all(clip(zero, 1e-6, method="eigh") == 0)  # refused: "bound 1e6" before
    b = make_matrix("gaussian", (8, 16), seed=3).astype(np.float32)
    from spectral_ops import clip_plan
    assert clip_plan(np.stack([zero, b]), 0.5) == clip_plan(b[None], 0.5)


@pytest.mark.parametrize("scale,tau", [(1e-42, 1.0), (1e-30, 3e38), (1e38, 1e37)])
@pytest.mark.parametrize("eps", [None, 0.1])
def test_clip_svd_route_at_extreme_scales_without_overflow(scale, tau, eps, recwarn):
    b = (scale * make_matrix("gaussian", (4, 6), seed=4)).astype(np.float32)
    y = clip(b, tau, method="svd", eps=eps).astype(np.float64)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    u, s, vh = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    if eps is None:
        exact = (u * np.minimum(s, tau)) @ vh
    else:
        exact = (u * (0.5 * (s + tau - np.hypot(s - tau, eps * tau)))) @ vh
    # subnormal inputs carry their own rounding (about 1e-3 relative at 1e-42); the smooth
    # clip cancels s + tau against hypot(s - tau, eps tau): float32 round-off of tau's size
    bound = (2e-3 if scale < 1e-38 else 1e-6) * np.linalg.norm(exact)
    if eps is not None:
        bound += 10 * EPS32 * tau * np.sqrt(min(b.shape))
    assert np.linalg.norm(y - exact) <= bound


@pytest.mark.parametrize("p,eps,method", [(-0.5, 1e-170, "auto"), (-0.5, 1e-170, "eigh"),
                                          (0.5, 1e-100, "svd"), (-1.0, 1e-100, "svd"),
                                          (0.5, 1e-170, "eigh"), (0.5, 1e-170, "newton")])
def test_power_with_an_eps_whose_square_underflows(p, eps, method, recwarn):
    rng = np.random.default_rng(5)
    b = np.zeros((6, 10), np.float32)
    b[:2] = rng.standard_normal((2, 10))  # rank 2: exact zero singular values
    y = power(b, p, eps=eps, method=method)
    assert np.isfinite(y).all(), "NaN before the fix"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    if p > 0:  # the ridge is negligible: s^p on the two directions
        u, s, vh = np.linalg.svd(b.astype(np.float64), full_matrices=False)
        exact = (u[:, :2] * s[:2] ** p) @ vh[:2]
        assert np.linalg.norm(y - exact) <= 1e-5 * np.linalg.norm(exact)


def test_power_eigh_refuses_float64_at_every_p():
    b = make_matrix("gaussian", (4, 6), seed=6)
    for p in (Fraction(1), Fraction(1, 2), Fraction(0)):
        with pytest.raises(ValueError, match="float64"):
            power(b, p, method="eigh")


def test_requires_grad_under_no_grad_routes_as_plain_data():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from spectral_ops import polar_plan
    x = torch.from_numpy(make_matrix("gaussian", (256, 1024), seed=7).astype(np.float32))
    w = x.clone().requires_grad_(True)
    assert polar_plan(w).method != polar_plan(x).method  # autodiff avoids eigh
    with torch.no_grad():
        assert polar_plan(w) == polar_plan(x)
        assert not polar(w).requires_grad


@pytest.mark.parametrize("method", ["auto", "polar", "newton"])
def test_clip_gradient_at_a_zero_matrix_is_the_identity(method):
    # clip(B) = B near B = 0; the tight start's s8^(1/4) at s8 = 0 made it NaN ("newton"
    # was already right). "svd" and "eigh" stay NaN there: their backward divides by gaps
    # between repeated singular values, as docs/reliability.md says
    torch = pytest.importorskip("torch", reason="torch is not installed")
    b = make_matrix("gaussian", (8, 16), seed=8).astype(np.float32)
    B = torch.from_numpy(np.stack([np.zeros_like(b), b])).requires_grad_(True)
    clip(B, 1e3, method=method).sum().backward()  # tau far above: clip is B itself
    np.testing.assert_allclose(B.grad.numpy(), 1.0, atol=1e-5)
    Z = torch.zeros(8, 16, requires_grad=True)
    clip(Z, 1.0, method=method).sum().backward()
    np.testing.assert_allclose(Z.grad.numpy(), 1.0, atol=1e-6)


def test_clip_gradient_at_a_zero_matrix_in_jax():
    jax = pytest.importorskip("jax", reason="jax is not installed")
    g = jax.grad(lambda b: clip(b, 1.0, method="polar").sum())(jax.numpy.zeros((8, 16)))
    np.testing.assert_allclose(np.asarray(g), 1.0, atol=1e-6)


@pytest.mark.parametrize("method", ["auto", "polar", "newton"])
def test_clip_under_torch_vmap(method):
    # the host read of ||B||_F / tau called .item(), which vmap refuses; a batched tensor
    # is now not read (the designs assume 1 / floor, as under jax.jit)
    torch = pytest.importorskip("torch", reason="torch is not installed")
    b = make_matrix("ill", (3, 24, 40), cond=1e2, seed=9).astype(np.float32)
    y = torch.func.vmap(lambda m: clip(m, 0.5, method=method))(torch.from_numpy(b)).numpy()
    ref = clip(b.astype(np.float64), 0.5, method="svd")
    assert np.linalg.norm(y - ref) <= 1e-5 * np.linalg.norm(ref)
