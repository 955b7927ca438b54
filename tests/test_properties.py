"""Property-based invariants of polar, clip and power over shapes, scales, dtypes, batches, backends.

Profiles (tests/conftest.py): ``ci`` (default; bounded so the README's test
command stays short) and ``long`` (``HYPOTHESIS_PROFILE=long python -m pytest
tests/test_properties.py``: 25x the examples, for a release or a change to a kernel).

Invariants, for finite input of any scale the dtype can hold:

* the output is finite and the input is not modified;
* polar: every output singular value is at most ``1 + tol``, and those on the
  input's directions above the floor are within ``tol`` of 1;
* clip: the output's spectral norm is at most ``tau (1 + 1e-3)``, and it matches
  the exact clip;
* power: the output's singular values are ``s^p`` (monotone in ``s``) above the floor.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import assume, given, strategies as st  # noqa: E402

from spectral_ops import clip, polar, power  # noqa: E402
from spectral_ops.accuracy import to_numpy  # noqa: E402
from spectral_ops.testing import from_spectrum  # noqa: E402

from conftest import BACKENDS  # noqa: E402

# installed CPU backends (GPU backends are covered by the parametrised tests)
CPU_BACKENDS = [b for b in BACKENDS if b.skip is None and b.name in
                ("numpy", "array_api_strict", "torch", "jax")]
TOL = {"float32": 1e-3, "float64": 1e-8}
LIMITS = {"float32": (-36, 36), "float64": (-300, 300)}  # log10 scales the dtype holds


@st.composite
def inputs(draw, max_cond=1e3):
    """(backend, dtype, float64 NumPy matrix with a known spectrum, its singular values)."""
    backend = draw(st.sampled_from(CPU_BACKENDS))
    dtype = draw(st.sampled_from([d for d in ("float32", "float64") if d in backend.dtypes]))
    batch = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    m, n = draw(st.integers(1, 14)), draw(st.integers(1, 14))
    r = min(m, n)
    cond = 10.0 ** draw(st.floats(0, np.log10(max_cond)))
    lo, hi = LIMITS[dtype]
    scale = 10.0 ** draw(st.integers(lo, hi))
    seed = draw(st.integers(0, 2**31 - 1))
    s = np.logspace(0, -np.log10(cond), r) * scale
    return backend, dtype, from_spectrum(s, batch + (m, n), seed=seed), s


def _run(fn, backend, dtype, b):
    B = backend(b, dtype)
    before = to_numpy(B).copy()
    Y = to_numpy(fn(B))
    np.testing.assert_array_equal(to_numpy(B), before)  # never mutated
    assert Y.shape == b.shape
    assert np.isfinite(Y).all()
    return Y, to_numpy(B)


@given(inputs(), st.sampled_from(["auto", "polar_express", "gram", "qdwh", "svd"]))
def test_polar_band(case, method):
    backend, dtype, b, s = case
    Y, B = _run(lambda X: polar(X, method=method), backend, dtype, b)
    tol = TOL[dtype]
    for y, bb in zip(Y.reshape((-1,) + b.shape[-2:]), B.reshape((-1,) + b.shape[-2:]) / s[0]):
        _, s, vh = np.linalg.svd(bb, full_matrices=False)
        above = s >= 1e-3 * s[0]
        band = np.linalg.svd(y @ vh[above].T, compute_uv=False)
        assert np.abs(band - 1).max() <= tol, (method, band.min(), band.max())
        assert np.linalg.svd(y, compute_uv=False).max() <= 1 + tol


@given(inputs(), st.floats(-3, 0.3), st.sampled_from(["auto", "polar", "newton", "svd", "eigh"]))
def test_clip_stays_in_the_ball_and_is_exact(case, log_q, method):
    backend, dtype, b, s = case
    assume(method != "eigh" or dtype != "float64")  # eigh: float32 and 16-bit inputs
    tau = float(10.0 ** log_q * s[0])
    Y, B = _run(lambda X: clip(X, tau, method=method), backend, dtype, b)
    c = s[0]  # the reference arithmetic in units of s_max (no overflow at 1e300)
    for y, bb in zip(Y.reshape((-1,) + b.shape[-2:]) / c, B.reshape((-1,) + b.shape[-2:]) / c):
        assert np.linalg.norm(y, 2) <= tau / c * (1 + 1e-3)
        u, sb, vh = np.linalg.svd(bb, full_matrices=False)
        exact = (u * np.minimum(sb, tau / c)) @ vh
        err = np.linalg.norm(y - exact) / max(np.linalg.norm(exact), np.finfo(float).tiny)
        floor = 30 * 2.0**-23 * np.linalg.norm(bb) / max(np.linalg.norm(exact), 1e-300)
        assert err <= max(TOL[dtype], floor if dtype == "float32" else 0), (method, err)


@given(inputs(max_cond=1e2), st.sampled_from([Fraction(1, 4), Fraction(1, 3), Fraction(1, 2),
                                              Fraction(2, 3), Fraction(3, 4)]),
       st.sampled_from(["auto", "newton", "svd", "eigh"]))
def test_power_is_s_to_the_p(case, p, method):
    backend, dtype, b, s = case
    assume(method != "eigh" or dtype != "float64")  # eigh: float32 and 16-bit inputs
    Y, B = _run(lambda X: power(X, p, method=method), backend, dtype, b)
    c = s[0]  # in units of s_max: power(B / c) = power(B) / c^p
    for y, bb in zip(Y.reshape((-1,) + b.shape[-2:]) / c ** float(p),
                     B.reshape((-1,) + b.shape[-2:]) / c):
        u, sb, vh = np.linalg.svd(bb, full_matrices=False)
        d = np.einsum("ij,ik,kj->j", u, y, vh.T)  # u_i^T Y v_i
        target = sb ** float(p)
        assert np.abs(d - target).max() <= TOL[dtype] * target.max() * 3, (method, p)
        out = np.linalg.svd(y, compute_uv=False)
        assert np.all(np.diff(out) <= TOL[dtype] * out.max())  # descending: monotone in s


def test_profiles_are_registered():
    settings = hypothesis.settings
    assert settings.get_profile("ci").max_examples < settings.get_profile("long").max_examples
    assert importlib.util.find_spec("hypothesis") is not None
