"""polar, clip and power on real gradients and momenta, against the float64 SVD.

The inputs are the float32 matrices of :func:`spectral_ops.datasets.real_matrices`
(a pretrained transformer's gradients, Adam first moment and Muon momentum on
real text; nearly low-rank, conditions 1e8 to 1e11), plus the transpose of the
wide one (the tall case), a stack of the square ones (the batched case) and
synthetic nearly-low-rank spectra shaped like them.

Acceptance (float32 input, reference: the float64 SVD of the same float32 values):

* clip(B, tau) for tau at the quantiles 0.1, 0.5, 0.9, 0.99 of the singular
  values above 1e-6 s_max, with method "auto" and, where s_max / tau <= 1e4,
  "polar" and "newton": top singular value <= tau (1 + 1e-3), relative
  Frobenius error <= max(1e-4, 30 eps32 ||B||_F / ||clip(B)||_F); the same
  at the median with torch and JAX ("auto" and "polar"), and on a stack of the
  square matrices with one tau per matrix;
* polar(B): singular values on the input's directions above 1e-3 s_max within
  1e-3 of 1, and at most 1 + 1e-3 on the rest;
* power(B, p), p in 1/4, 1/2, 3/4: relative error <= 1e-3 on the part above
  1e-3 s_max, finite, top singular value <= s_max^p (1 + 1e-3);
* polar and power also in torch and JAX, with "auto" and the iterations that
  accelerators run (polar: "polar_express" and "gram"; power: "newton"), and
  both on the stack of the square matrices.

To stay within about a minute on 2 cores, the transposed (tall) matrix runs
"auto" only, and power and the framework checks run on the stored orientation.
These define what the library must meet on real inputs; a failure here is a
finding about the library, not about the test.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest

import spectral_ops
from spectral_ops import clip, clip_plan, polar, power
from spectral_ops.accuracy import to_numpy
from spectral_ops.datasets import real_matrices, real_matrices_info
from spectral_ops.testing import from_spectrum

EPS32 = float(np.finfo(np.float32).eps)
QUANTILES = (0.1, 0.5, 0.9, 0.99)
SIGNIFICANT = 1e-6    # tau quantiles are over singular values above this * s_max
MATRIX_ROUTE_MAX_RATIO = 1e4  # "polar" and "newton" are held to the bound up to s_max / tau
NORM_SLACK = 1e-3     # top singular value <= tau (1 + NORM_SLACK)
POLAR_FLOOR, POLAR_BAND = 1e-3, 1e-3
POWER_FLOOR, POWER_TOL = 1e-3, 1e-3
POWERS = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))

_MOMENTA = ("grad", "exp_avg", "momentum")


@functools.lru_cache(maxsize=1)
def _inputs() -> dict[str, np.ndarray]:
    """Every real gradient and momentum, plus ``.T`` of the rectangular ones (the
    other orientation)."""
    out = dict(real_matrices(_MOMENTA))
    for name, a in list(out.items()):
        if a.shape[0] != a.shape[1]:
            out[name + ".T"] = np.ascontiguousarray(a.T)
    for a in out.values():
        a.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def _svd(name: str):
    """float64 thin SVD of the float32 values (a transpose reuses its original's)."""
    if name.endswith(".T"):
        u, s, vh = _svd(name[:-2])
        return vh.T, s, u.T
    return np.linalg.svd(_inputs()[name].astype(np.float64), full_matrices=False)


def _taus(name: str) -> dict[float, float]:
    s = _svd(name)[1]
    sig = s[s > SIGNIFICANT * s[0]]
    return {q: float(np.quantile(sig, q)) for q in QUANTILES}


def _exact(u, s, vh, f):
    return (u * f(s)[..., None, :]) @ vh


def _svals(y) -> np.ndarray:
    """Singular values of ``y`` (ascending) from the eigenvalues of its short-side
    Gram matrix in float64: absolute error ~1e-16 s_max^2 on s^2, ample for bounds
    at 1e-3, and several times cheaper than an SVD. NaN or inf in ``y`` gives inf."""
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        return np.full(min(y.shape), np.inf)
    g = y @ y.T if y.shape[0] <= y.shape[1] else y.T @ y
    return np.sqrt(np.maximum(np.linalg.eigvalsh(g), 0.0))


def _top(y) -> float:
    """Largest singular value (inf for an output holding NaN or inf)."""
    return float(_svals(y)[-1])


def _clip_bound(b: np.ndarray, exact: np.ndarray) -> float:
    return max(1e-4, 30 * EPS32 * np.linalg.norm(b) / np.linalg.norm(exact))


def _clip_cases():
    """Every stored matrix at every quantile with "auto"; "polar" and "newton" where
    s_max / tau <= 1e4, on the stored orientation only (the transpose runs the
    same iteration on the transposed matrix)."""
    out = []
    for name in _inputs():
        smax = float(_svd(name)[1][0])
        for q, tau in _taus(name).items():
            ratio = smax / tau
            for method in ("auto", "polar", "newton"):
                if method != "auto" and (ratio > MATRIX_ROUTE_MAX_RATIO or name.endswith(".T")):
                    continue
                out.append(pytest.param(name, q, method, id=f"{name}-q{q}-{method}"))
    return out


def measure_clip(B, name: str, tau: float, method: str = "auto") -> dict:
    """Run ``clip(B, tau, method=method)`` on ``B`` (any library, holding the real
    matrix ``name``) and measure it against the float64 SVD clip."""
    b = _inputs()[name]
    u, s, vh = _svd(name)
    y = to_numpy(clip(B, tau, method=method))
    exact = _exact(u, s, vh, lambda x: np.minimum(x, tau))
    return {
        "route": clip_plan(B, tau, method=method).method,
        "ratio": float(s[0] / tau),
        "finite": bool(np.isfinite(y).all()),
        "rel": float(np.linalg.norm(y - exact) / np.linalg.norm(exact)),
        "bound": _clip_bound(b, exact),
        "top_over_tau": _top(y) / tau,
    }


def _check_clip(r: dict):
    msg = (f"route {r['route']}, s_max/tau {r['ratio']:.3g}: rel error {r['rel']:.3g} "
           f"(bound {r['bound']:.3g}), top sv / tau {r['top_over_tau']:.6g}")
    assert r["finite"], msg
    assert r["top_over_tau"] <= 1 + NORM_SLACK, msg
    assert r["rel"] <= r["bound"], msg


# --- the data set itself -----------------------------------------------------------

def test_dataset_is_real_float32_and_described():
    info = real_matrices_info()
    mats = real_matrices()
    assert sorted(mats) == sorted(info["stored"])
    assert {n.rsplit(".", 1)[-1] for n in mats} >= {"grad", "exp_avg", "momentum"}
    shapes = {a.shape for a in mats.values()}
    assert any(m < n for m, n in shapes), "a wide matrix"
    for name, a in mats.items():
        st = info["matrices"][name]
        assert a.dtype == np.float32 and a.ndim == 2 and list(a.shape) == st["shape"]
        s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
        assert s[0] == pytest.approx(st["s_max"], rel=1e-9)
        assert abs(int(np.sum(s > 1e-6 * s[0])) - st["rank_1e-6"]) <= 1  # LAPACK-independent
        assert st["condition"] >= 1e8, (name, st["condition"])  # what makes them hard
    with pytest.raises(ValueError, match="unknown kinds"):
        real_matrices("gradient")
    assert set(real_matrices("grad")) == {n for n in mats if n.endswith(".grad")}


# --- clip ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,q,method", _clip_cases())
def test_clip_real(name, q, method):
    _check_clip(measure_clip(_inputs()[name], name, _taus(name)[q], method))


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("method", ["auto", "polar"])
@pytest.mark.parametrize("name", sorted(n for n in _inputs() if not n.endswith(".T")))
def test_clip_real_frameworks(framework, method, name):
    B = _framework_array(framework, _inputs()[name])
    _check_clip(measure_clip(B, name, _taus(name)[0.5], method))


def _square_stack():
    names = sorted(n for n, a in _inputs().items() if a.shape[0] == a.shape[1])
    return names, np.stack([_inputs()[n] for n in names])


@pytest.mark.parametrize("method", ["auto", "polar", "newton"])
def test_clip_real_batched(method):
    names, b = _square_stack()
    assert len(names) >= 2
    tau = np.array([_taus(n)[0.5] for n in names])
    y = to_numpy(clip(b, tau, method=method))
    assert np.isfinite(y).all()
    for i, name in enumerate(names):
        u, s, vh = _svd(name)
        exact = _exact(u, s, vh, lambda x: np.minimum(x, tau[i]))
        rel = np.linalg.norm(y[i] - exact) / np.linalg.norm(exact)
        top = _top(y[i]) / tau[i]
        assert top <= 1 + NORM_SLACK, (name, top)
        assert rel <= _clip_bound(b[i], exact), (name, rel)


# --- polar ---------------------------------------------------------------------------

def _polar_band(y, u, s, vh, floor=POLAR_FLOOR):
    """As :func:`spectral_ops.spectral_report`: the extreme singular values of ``Y``
    on the input's right singular directions above ``floor * s_max``, and the
    largest on their complement (null space included)."""
    y = np.asarray(y, dtype=np.float64)
    va = vh[s >= floor * s[0]].T
    ya = y @ va
    band = _svals(ya)
    tail = _top(y - ya @ va.T)
    return (float(band[0]), float(band[-1])), tail


def measure_polar(name: str, method: str = "auto", B=None) -> dict:
    """``polar`` of the real matrix ``name`` (or of ``B``, the same values in
    another library) against the float64 SVD."""
    B = _inputs()[name] if B is None else B
    y = to_numpy(polar(B, method=method))
    band, tail = _polar_band(y, *_svd(name))
    return {"route": spectral_ops.polar_plan(B, method=method).method, "band": band,
            "tail": tail, "finite": bool(np.isfinite(y).all())}


def _check_polar(r: dict):
    msg = f"route {r['route']}: band {r['band']}, tail max {r['tail']:.6g}"
    assert r["finite"], msg
    assert 1 - POLAR_BAND <= r["band"][0] and r["band"][1] <= 1 + POLAR_BAND, msg
    assert r["tail"] <= 1 + POLAR_BAND, msg


# auto (on this CPU eigh or an iteration, by flops) and the two iterations that
# accelerators run, each on every real matrix
@pytest.mark.parametrize("method", ["auto", "polar_express", "gram"])
@pytest.mark.parametrize("name", sorted(_inputs()))
def test_polar_real(name, method):
    _check_polar(measure_polar(name, method))


def _framework_array(framework: str, b: np.ndarray):
    """The float32 values of ``b`` as a torch tensor or a JAX array (on the CPU)."""
    if framework == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed")
        B = torch.from_numpy(np.array(b))
    else:
        jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
        B = jnp.asarray(b)
    assert str(B.dtype).endswith("float32")
    return B


# the same acceptance in torch and JAX: auto and the two iterations accelerators run
# (each library's own products and reductions; in JAX without float64 "auto" differs)
@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("method", ["auto", "polar_express", "gram"])
@pytest.mark.parametrize("name", sorted(n for n in _inputs() if not n.endswith(".T")))
def test_polar_real_frameworks(framework, method, name):
    _check_polar(measure_polar(name, method, _framework_array(framework, _inputs()[name])))


def test_polar_real_batched():
    names, b = _square_stack()
    y = polar(b)
    assert np.isfinite(y).all()
    for i, name in enumerate(names):
        band, tail = _polar_band(y[i], *_svd(name))
        assert 1 - POLAR_BAND <= band[0] and band[1] <= 1 + POLAR_BAND, (name, band)
        assert tail <= 1 + POLAR_BAND, (name, tail)


# --- power ---------------------------------------------------------------------------

def measure_power(name: str, p: Fraction, method: str = "auto", B=None) -> dict:
    """``power`` of the real matrix ``name`` (or of ``B``, the same values in
    another library) against the float64 SVD."""
    B = _inputs()[name] if B is None else B
    y = to_numpy(power(B, p, method=method))
    return {"route": spectral_ops.power_plan(B, p, method=method).route,
            **_power_error(y, name, p)}


def _power_error(y, name: str, p: Fraction) -> dict:
    """The measures of ``y``, a computed ``power`` of the real matrix ``name``."""
    y = np.asarray(y, dtype=np.float64)
    u, s, vh = _svd(name)
    above = s >= POWER_FLOOR * s[0]
    # as spectral_report's rel_error: the error on the directions above the floor
    exact_above = u[:, above] * s[above] ** float(p)  # (U s^p V^T) V_above
    rel = np.linalg.norm(y @ vh[above].T - exact_above) / np.linalg.norm(exact_above)
    return {"rel": float(rel), "finite": bool(np.isfinite(y).all()),
            "top_over": _top(y) / s[0] ** float(p)}


@pytest.mark.parametrize("p", POWERS, ids=str)
@pytest.mark.parametrize("name", sorted(n for n in _inputs() if not n.endswith(".T")))
def test_power_real(name, p):
    _check_power(measure_power(name, p))


@pytest.mark.parametrize("method", ["auto", "newton"])
def test_power_real_batched(method):
    names, b = _square_stack()
    p = Fraction(1, 2)
    y = power(b, p, method=method)
    for i, name in enumerate(names):
        _check_power({"route": spectral_ops.power_plan(b, p, method=method).route,
                      **_power_error(y[i], name, p)})


# torch and JAX: auto, and the iteration accelerators run ("newton": P, then the
# inverse root of H = B P^T)
@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("method", ["auto", "newton"])
@pytest.mark.parametrize("p", POWERS, ids=str)
@pytest.mark.parametrize("name", sorted(n for n in _inputs() if not n.endswith(".T")))
def test_power_real_frameworks(name, p, method, framework):
    _check_power(measure_power(name, p, method, _framework_array(framework, _inputs()[name])))


def _check_power(r: dict):
    msg = f"route {r['route']}: rel error {r['rel']:.3g}, top sv / s_max^p {r['top_over']:.6g}"
    assert r["finite"], msg
    assert r["rel"] <= POWER_TOL, msg
    assert r["top_over"] <= 1 + NORM_SLACK, msg


# --- synthetic spectra shaped like the real ones -----------------------------------

def nearly_low_rank_spectrum(r: int, rank: int, cond: float) -> np.ndarray:
    """Descending singular values with ``s[0] = 1``, shaped like the real ones: a
    steep head of ``rank`` values log-spaced over ``[1e-3, 1]``, then ``r - rank``
    values log-spaced over ``[1/cond, 1e-4]`` (condition ``cond``, at least 1e5)."""
    if cond < 1e5:
        raise ValueError("cond must be at least 1e5")
    return np.concatenate([np.geomspace(1.0, 1e-3, rank), np.geomspace(1e-4, 1.0 / cond, r - rank)])


SYNTH_SHAPES = [(128, 512), (128, 128)]  # aspect 4 ("auto" iterates) and square
SYNTH_CONDS = [1e6, 1e9]
SYNTH_RATIOS = [1e1, 1e2, 1e3, 1e4]


@functools.lru_cache(maxsize=None)
def _synthetic(shape, cond):
    """float32 matrix, and the float64 SVD of its float32 values."""
    r = min(shape)
    b = from_spectrum(nearly_low_rank_spectrum(r, r // 4, cond), shape, seed=7).astype(np.float32)
    b.setflags(write=False)
    return b, np.linalg.svd(b.astype(np.float64), full_matrices=False)


@pytest.mark.parametrize("cond", SYNTH_CONDS, ids=lambda v: f"cond{v:g}")
def test_synthetic_generator_matches_request(cond):
    r, k = 128, 32
    s = nearly_low_rank_spectrum(r, k, cond)
    assert s.shape == (r,) and s[0] == 1.0 and np.all(np.diff(s) < 0)
    assert int(np.sum(s >= 1e-3 * (1 - 1e-12))) == k
    assert s[0] / s[-1] == pytest.approx(cond, rel=1e-9)
    t = np.linalg.svd(from_spectrum(s, (r, 4 * r), seed=7), compute_uv=False)
    np.testing.assert_allclose(t[:k], s[:k], rtol=1e-8)
    assert t[0] / t[-1] == pytest.approx(cond, rel=1e-3)
    # the float32 matrix keeps the head and is still nearly low-rank
    b, (_, t32, _) = _synthetic((128, 512), cond)
    np.testing.assert_allclose(t32[:k], s[:k], rtol=1e-4)
    assert t32[0] / t32[-1] >= 1e5


@pytest.mark.parametrize("method", ["auto", "polar", "newton"])
@pytest.mark.parametrize("ratio", SYNTH_RATIOS, ids=lambda v: f"ratio{v:g}")
@pytest.mark.parametrize("cond", SYNTH_CONDS, ids=lambda v: f"cond{v:g}")
@pytest.mark.parametrize("shape", SYNTH_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_clip_synthetic_nearly_low_rank(shape, cond, ratio, method):
    b, (u, s, vh) = _synthetic(shape, cond)
    tau = float(s[0] / ratio)
    y = clip(b, tau, method=method)
    exact = _exact(u, s, vh, lambda x: np.minimum(x, tau))
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    top = _top(y) / tau
    msg = (f"route {clip_plan(b, tau, method=method).method}: rel error {rel:.3g} "
           f"(bound {_clip_bound(b, exact):.3g}), top sv / tau {top:.6g}")
    assert np.isfinite(y).all(), msg
    assert top <= 1 + NORM_SLACK, msg
    assert rel <= _clip_bound(b, exact), msg


def test_measures_agree_with_spectral_report():
    """The Gram-eigenvalue shortcuts above measure what spectral_report measures."""
    name = "layer5.attn_q.grad" if "layer5.attn_q.grad" in _inputs() else sorted(_inputs())[0]
    b = _inputs()[name]
    y = polar(b)
    band, tail = _polar_band(y, *_svd(name))
    r = spectral_ops.spectral_report(y, b, floor=POLAR_FLOOR)
    np.testing.assert_allclose(band, r.band, rtol=1e-9)
    np.testing.assert_allclose(tail, r.tail_max, rtol=1e-6)
    p = Fraction(1, 2)
    rp = spectral_ops.spectral_report(power(b, p), b, lambda s: s ** float(p), floor=POWER_FLOOR)
    assert measure_power(name, p)["rel"] == pytest.approx(rp.rel_error, rel=1e-6)
