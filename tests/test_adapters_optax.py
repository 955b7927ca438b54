"""The optax adapter: parity with optax.contrib.muon, state, jit, batching."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_ops.schedules import dynmuon_schedule

jax = pytest.importorskip("jax", reason="jax is not installed")
optax = pytest.importorskip("optax", reason="optax is not installed")
import jax.numpy as jnp  # noqa: E402
from spectral_ops.adapters import optax as so  # noqa: E402
from spectral_ops.adapters import Direction  # noqa: E402

def _jax_problem():
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    params = {"w1": 0.1 * jax.random.normal(k[0], (64, 128), jnp.float32),
              "w2": 0.1 * jax.random.normal(k[1], (128, 32), jnp.float32),
              "w3": 0.1 * jax.random.normal(k[2], (64, 128), jnp.float32),
              "b": jnp.zeros(32, jnp.float32)}
    x = jax.random.normal(k[3], (256, 64), jnp.float32)

    def loss(p):
        return (jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] + p["b"]) ** 2)
                + 1e-3 * jnp.sum(jnp.sin(x @ p["w3"])))
    return params, loss

def _run(tx, steps=10):
    params, loss = _jax_problem()
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s
    for _ in range(steps):
        params, state = step(params, state)
    return params, len(traces), loss

def test_optax_muon_reproduces_optax_contrib_muon_fp32():
    ref, _, _ = _run(optax.contrib.muon(0.02, weight_decay=0.1))
    ours, traces, _ = _run(so.muon(0.02, method="jordan", steps=5, scale="jordan",
                                   weight_decay=0.1))
    assert traces == 1  # compiled once, not again on later calls
    for key in ref:
        np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(ref[key]), atol=1e-5)

@pytest.mark.parametrize("tx", [
    so.muon(0.02), so.mucon(0.02, tau=0.5), so.muon_p(0.02, p=0.5),
    so.dyn_muon(0.02, p_schedule=dynmuon_schedule(12), method="newton"),
], ids=["muon", "mucon", "muon_p", "dyn_muon"])
def test_optax_presets_compile_once_and_reduce_the_loss(tx):
    params0, loss = _jax_problem()
    params, traces, _ = _run(tx, steps=12)
    assert traces == 1
    assert float(loss(params)) < float(loss(params0))

def test_optax_state_is_named_tuples_and_layout_is_flax():
    tx = so.scale_by_spectral(Direction("polar", "svd"), momentum=0.0, nesterov=False,
                              scale="spectral")
    w = {"k": jnp.asarray(np.random.default_rng(0).standard_normal((16, 64)), jnp.float32)}
    s = tx.init(w)
    assert isinstance(s, so.ScaleBySpectralState)
    u, _ = tx.update(w, s)
    # flax (in, out) = (16, 64): fan_out / fan_in = 4, spectral scale 2
    np.testing.assert_allclose(np.linalg.svd(np.asarray(u["k"]), compute_uv=False), 2.0, rtol=1e-5)

def test_optax_schedule_must_list_its_values():
    with pytest.raises(ValueError, match=r"must list its values"):
        so.dyn_muon(0.02, p_schedule=lambda t: 0.5)

def test_optax_mu_dtype_and_leaf_checks():
    params = {"w": jnp.ones((8, 16), jnp.bfloat16)}
    tx = so.muon(0.01, mu_dtype=jnp.float32)
    state = tx.init(params)
    leaves = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (8, 16)]
    assert leaves and all(x.dtype == jnp.float32 for x in leaves)
    bad = so.scale_by_spectral(Direction("polar"), batch_dims=1)
    with pytest.raises(ValueError, match=r"needs exactly 3 dimensions \(batch_dims=1\)"):
        bad.update({"w": jnp.ones((2, 3, 4, 5))}, bad.init({"w": jnp.ones((2, 3, 4, 5))}))

