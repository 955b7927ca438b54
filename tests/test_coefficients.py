"""The Polar Express coefficients are derived in the library: check them."""

import numpy as np
import pytest

from spectral_ops import minimax_odd_quintic, polar_express_coefficients, polar_express_schedule
from spectral_ops.coefficients import CUSHION, SAFETY, quintic_image


def _p(coef, x):
    a, b, c = coef
    return a * x + b * x**3 + c * x**5


def test_first_step_matches_published_triple():
    a, b, c = polar_express_coefficients(1, 1e-3, safety=1.0)[0]
    assert (a, b, c) == pytest.approx((8.2872, -23.5959, 17.3004), abs=5e-5)


def test_whole_published_schedule_before_safety():
    # the eight published Polar Express triples for l = 1e-3 (before the 1.01 safety factor)
    published = [
        (8.28721201814563, -23.595886519098837, 17.300387312530933),
        (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
        (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
        (3.3184196573706015, -2.488488024314874, 0.51004894012372),
        (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
        (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
        (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    ]
    ours = polar_express_coefficients(8, 1e-3, safety=1.0)
    np.testing.assert_allclose(ours[:7], published, rtol=1e-9)
    np.testing.assert_allclose(ours[7], (1.875, -1.25, 0.375), rtol=1e-7)


@pytest.mark.parametrize("lo,hi", [(0.02407, 1.0), (0.1, 1.0), (0.5, 1.3), (0.9, 1.1)])
def test_minimax_quintic_equioscillates(lo, hi):
    coef = minimax_odd_quintic(lo, hi)
    x = np.linspace(lo, hi, 200001)
    err = _p(coef, x) - 1
    e = np.abs(err).max()
    # extremes at the ends with alternating signs and equal size
    assert err[0] == pytest.approx(-e, rel=1e-6)
    assert err[-1] == pytest.approx(e, rel=1e-6)
    assert err.min() == pytest.approx(-e, rel=1e-6)
    # optimality: perturbing the coefficients cannot reduce the max error
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = rng.standard_normal(3) * 1e-4 * np.abs(coef)
        assert np.abs(_p(np.add(coef, d), x) - 1).max() >= e * (1 - 1e-9)


def test_quintic_image_is_exact():
    coef = polar_express_coefficients(1, 1e-3)[0]
    x = np.linspace(1e-3, 1, 400001)
    lo, hi = quintic_image(coef, 1e-3, 1.0)
    assert lo == pytest.approx(_p(coef, x).min(), rel=1e-9)
    assert hi == pytest.approx(_p(coef, x).max(), rel=1e-8)


@pytest.mark.parametrize("lower,tol", [(1e-3, 1e-4), (3e-4, 1e-2), (1e-5, 1e-12), (1e-2, 1e-6)])
def test_schedule_bound_holds_on_dense_grid(lower, tol):
    coefs, bound = polar_express_schedule(lower, tol)
    assert bound <= tol
    x = np.concatenate([np.geomspace(lower, 1, 200001), np.linspace(0.9, 1, 1001)])
    for c in coefs:
        x = _p(c, x)
    assert np.abs(x - 1).max() <= bound * (1 + 1e-6) + 1e-14
    # one step fewer does not reach tol: the schedule is the shortest
    if len(coefs) > 1:
        y = np.geomspace(lower, 1, 200001)
        for c in polar_express_coefficients(len(coefs) - 1, lower):
            y = _p(c, y)
        assert np.abs(y - 1).max() > tol


def test_safety_factor_leaves_margin_above_one():
    # every step but the last is evaluated at x / SAFETY: inputs up to SAFETY stay bounded
    coefs = polar_express_coefficients(7, 1e-3)
    x = np.linspace(1e-3, SAFETY, 100001)
    for c in coefs:
        x = _p(c, x)
    assert np.isfinite(x).all() and x.max() < 1.2


def test_cushion_is_published_value():
    assert CUSHION == pytest.approx(0.02407327424182761)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=2.5), "steps must be a positive integer"),
    (dict(steps=3, lower=0.0), "lower must lie in"),
    (dict(steps=3, lower=1.5), "lower must lie in"),
])
def test_schedule_argument_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        polar_express_coefficients(**kwargs)


def test_schedule_unreachable_tol_names_fix():
    with pytest.raises(ValueError, match="method='qdwh'"):
        polar_express_schedule(1e-3, 1e-30, max_steps=5)


# --- inverse-root schedules ----------------------------------------------------------

def _root_poly(coef, z, r):
    a, b, c = coef
    return z * (a + b * z**r + c * z ** (2 * r))


@pytest.mark.parametrize("r", [2, 3, 4, 8])
@pytest.mark.parametrize("lower", [1e-2, 2.5e-4, 1e-7])
def test_root_schedule_bound_holds_on_the_whole_interval(r, lower):
    from spectral_ops.coefficients import root_schedule

    tol = 1e-6
    coefs, err = root_schedule(lower, r, tol)
    assert err <= tol
    mu = np.concatenate([np.geomspace(lower, 1.0, 200001), [lower, 1.0]])
    z = mu ** (1.0 / r)
    for t, coef in enumerate(coefs):
        z = _root_poly(coef, z, r)
        if t + 1 < len(coefs):
            # M = z^r stays in (0, 1]: no step amplifies round-off beyond the identity
            assert z.min() > 0 and z.max() ** r <= 1.0 + 1e-12
    assert np.abs(z - 1).max() <= err * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("r", [2, 3, 4])
def test_root_schedule_needs_far_fewer_steps_than_newton(r):
    from spectral_ops.coefficients import root_schedule
    from spectral_ops.routing import newton_steps

    for lower in (1e-3 / 256**0.125, 1e-5 / 256**0.125):
        coefs, _ = root_schedule(lower, r, 1e-5)
        # Newton's |1 - mu| <= 1e-5 is the same bound to first order (|z - 1| = |1 - mu| / r)
        assert 2 * len(coefs) <= newton_steps(lower, r, 1e-5), (r, lower, len(coefs))


@pytest.mark.parametrize("r", [2, 3, 4])
def test_root_minimax_equioscillates(r):
    lo, hi = 0.2, 1.0
    coef = minimax_odd_quintic(lo, hi, root=r)
    z = np.linspace(lo, hi, 200001)
    err = _root_poly(coef, z, r) - 1
    e = np.abs(err).max()
    assert err[0] == pytest.approx(-e, rel=1e-6) and err[-1] == pytest.approx(e, rel=1e-6)
    assert err.min() == pytest.approx(-e, rel=1e-6)
    lo_img, hi_img = quintic_image(coef, lo, hi, r)
    assert lo_img == pytest.approx(1 - e, rel=1e-9) and hi_img == pytest.approx(1 + e, rel=1e-9)


def test_inverse_root_kernel_follows_the_scalar_map():
    from spectral_ops.coefficients import root_schedule
    from spectral_ops.kernels import inverse_root

    mu = np.geomspace(1e-4, 1.0, 50)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    m0 = (q * mu) @ q.T
    for r in (2, 3):
        coefs, err = root_schedule(1e-4, r, 1e-10)
        y = inverse_root(np.asarray(m0).__array_namespace__(), m0, r, coefs, np.eye(50))
        yd = np.einsum("ij,ik,kj->j", q, y, q)
        np.testing.assert_allclose(yd * mu ** (1.0 / r), 1.0, atol=err + 1e-9)


# --- mixed quintic / nonic schedules ------------------------------------------------

def test_cushion_rule_reproduces_the_published_quintic_cushion():
    from spectral_ops.coefficients import cushion

    assert cushion(5) == pytest.approx(CUSHION, rel=1e-6)
    assert 0.005 < cushion(9) < CUSHION  # a nonic grows small values faster: a lower cushion


def test_minimax_nonic_equioscillates():
    from spectral_ops.coefficients import minimax_odd, odd_image

    lo, hi = 0.05, 1.0
    coef = minimax_odd(lo, hi, 9)
    x = np.linspace(lo, hi, 400001)
    err = sum(c * x ** (2 * j + 1) for j, c in enumerate(coef)) - 1
    e = np.abs(err).max()
    # six alternating extremes: the ends and four interior ones
    assert err[0] == pytest.approx(-e, rel=1e-6) and err[-1] == pytest.approx(e, rel=1e-6)
    peaks = np.flatnonzero(np.diff(np.sign(np.diff(err))) != 0)
    assert len(peaks) == 4 and np.allclose(np.abs(err[peaks + 1]), e, rtol=1e-5)
    lo_img, hi_img = odd_image(coef, lo, hi)
    assert lo_img == pytest.approx(1 - e, rel=1e-9) and hi_img == pytest.approx(1 + e, rel=1e-9)


@pytest.mark.parametrize("lower", [5e-4, 5e-3, 4.2e-4])
@pytest.mark.parametrize("tol", [1e-4, 1e-2, 0.3])
def test_mixed_schedule_bound_holds_and_never_costs_more(lower, tol):
    from spectral_ops.coefficients import STEP_PRODUCTS, mixed_schedule

    coefs, err = mixed_schedule(lower, tol)
    assert err <= tol
    x = np.concatenate([np.geomspace(lower, 1.0, 400001), [lower, 1.0]])
    for coef in coefs:
        x = sum(c * x ** (2 * j + 1) for j, c in enumerate(coef))
    assert np.abs(x - 1).max() <= err * (1 + 1e-9) + 1e-14
    products = sum(STEP_PRODUCTS[2 * len(c) - 1] for c in coefs)
    assert products <= 3 * len(polar_express_schedule(lower, tol)[0])


def test_mixed_schedule_saves_products_at_loose_tolerances():
    from spectral_ops.coefficients import STEP_PRODUCTS, mixed_schedule

    # floor 1e-3 at m = 256 (the tight start's design lower end): tol 0.3 takes 6 quintics
    lower = 1e-3 / 256**0.125
    coefs, _ = mixed_schedule(lower, 0.3)
    assert len(polar_express_schedule(lower, 0.3)[0]) == 6
    assert sum(STEP_PRODUCTS[2 * len(c) - 1] for c in coefs) == 15  # not 18
