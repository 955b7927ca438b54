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

def test_optax_default_scale_is_optax_contrib_muons_rule():
    # sqrt(max(1, fan_out / fan_in)): flax (in, out) = (64, 16) gets 1 (the spectral
    # rule would give 1/2), (16, 64) gets 2
    tx = so.scale_by_spectral(Direction("polar", "svd"), momentum=0.0, nesterov=False)
    rng = np.random.default_rng(1)
    w = {k: jnp.asarray(rng.standard_normal(shape), jnp.float32)
         for k, shape in (("wide", (64, 16)), ("tall", (16, 64)))}
    u, _ = tx.update(w, tx.init(w))
    np.testing.assert_allclose(np.linalg.svd(np.asarray(u["wide"]), compute_uv=False), 1.0,
                               rtol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(u["tall"]), compute_uv=False), 2.0,
                               rtol=1e-5)
    import inspect
    for preset in (so.muon, so.mucon, so.muon_p, so.dyn_muon):
        assert inspect.signature(preset).parameters["scale"].default == "jordan"


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



# -- non-finite gradients ----------------------------------------------------------------------

def _nan_run(tx, steps=8, bad_step=3):
    params, loss = _jax_problem()
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(p, s, bad):
        traces.append(1)
        g = jax.grad(loss)(p)
        g = {**g, "w2": jnp.where(bad, g["w2"].at[0, 0].set(jnp.nan), g["w2"]),
             "b": jnp.where(bad, g["b"].at[1].set(jnp.inf), g["b"])}
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    history = []
    for i in range(steps):
        history.append((params, state))
        params, state = step(params, state, i == bad_step)
    history.append((params, state))
    return history, len(traces), loss


@pytest.mark.parametrize("tx", [
    so.muon(0.02, weight_decay=0.01), so.mucon(0.02), so.muon_p(0.02, p=0.5),
], ids=["muon", "mucon", "muon_p"])
def test_optax_nan_gradient_is_skipped_per_leaf_and_training_continues(tx):
    history, traces, loss = _nan_run(tx)
    assert traces == 1
    final = history[-1][0]
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(final))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(history[-1][1]))
    (p3, s3), (p4, s4) = history[3], history[4]
    for key in ("w2", "b"):  # skipped: the parameter and its momentum / moments unchanged
        np.testing.assert_array_equal(np.asarray(p4[key]), np.asarray(p3[key]))
    for key in ("w1", "w3"):
        assert not np.array_equal(np.asarray(p4[key]), np.asarray(p3[key]))
    # every state leaf shaped like w2 or b is unchanged by the skipped step
    for a, b in zip(jax.tree.leaves(s3), jax.tree.leaves(s4)):
        if a.shape in ((128, 32), (32,)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(loss(final)) < float(loss(history[0][0]))


def test_optax_skip_without_nan_matches_ignore():
    # equal up to XLA's fusion choices (the selects change what fuses, hence rounding)
    a, _, _ = _run(so.mucon(0.02, weight_decay=0.1), steps=4)
    b, _, _ = _run(so.mucon(0.02, weight_decay=0.1, nonfinite="ignore"), steps=4)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-5, atol=1e-7)


def test_optax_scale_by_spectral_skips_its_own_momentum():
    tx = so.scale_by_spectral(Direction("polar", "svd"))
    w = {"a": jnp.ones((4, 6)), "b": jnp.ones((3, 5))}
    s = tx.init(w)
    u, s = tx.update(w, s)
    bad = {"a": w["a"].at[0, 0].set(jnp.nan), "b": 2 * w["b"]}
    u2, s2 = tx.update(bad, s)
    np.testing.assert_array_equal(np.asarray(u2["a"]), 0.0)
    np.testing.assert_array_equal(np.asarray(s2.mu["a"]), np.asarray(s.mu["a"]))
    assert not np.array_equal(np.asarray(s2.mu["b"]), np.asarray(s.mu["b"]))
    assert int(s2.count) == 2


def test_optax_nonfinite_raise_names_the_leaf():
    from jax.experimental import checkify
    tx = so.muon(0.02, nonfinite="raise")
    params, loss = _jax_problem()
    state = tx.init(params)

    @jax.jit
    @checkify.checkify
    def step(p, s):
        g = jax.grad(loss)(p)
        g = {**g, "w3": g["w3"].at[2, 2].set(jnp.nan)}
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s
    err, _ = step(params, state)
    assert "muon: the gradient of leaf ['w3'] (shape (64, 128)) holds NaN or inf" in err.get()
    with pytest.raises(Exception, match=r"the gradient of leaf \['w3'\]"):
        err.throw()
    with pytest.raises(ValueError, match=r"muon: nonfinite must be one of"):
        so.muon(0.02, nonfinite="warn")


# -- argument checks ---------------------------------------------------------------------------

def test_optax_arguments_are_checked_with_the_function_name():
    assert so.mucon(0.02, tau=np.float32(0.5)) is not None
    assert so.muon(optax.linear_schedule(0.02, 0.0, 100)) is not None
    bad = [
        (lambda: so.mucon(0.02, tau=float("inf")), ValueError, r"mucon needs tau > 0 and finite"),
        (lambda: so.mucon(0.02, tau=0), ValueError, r"mucon needs tau > 0 and finite"),
        (lambda: so.muon(float("inf")), ValueError, r"muon: learning_rate must be in \[0, inf\)"),
        (lambda: so.muon(0.02, adam_b1=1.0), ValueError, r"muon: adam_b1 must be in \[0, 1\)"),
        (lambda: so.muon(0.02, adam_eps=0), ValueError, r"muon: adam_eps must be in \(0, inf\)"),
        (lambda: so.muon(0.02, method="bogus"), ValueError, r"muon: method must be one of"),
        (lambda: so.mucon(0.02, method="qdwh"), ValueError, r"mucon: method must be one of"),
        (lambda: so.muon_p(0.02, p=2), ValueError, r"muon_p: p must lie in \[-1, 1\]"),
        (lambda: so.muon_p(0.02, steps=3), TypeError,
         r"muon_p\(\) got an unexpected keyword argument 'steps'"),
        (lambda: so.dyn_muon(0.02, p_schedule=dynmuon_schedule(10), steps=3), TypeError,
         r"dyn_muon\(\) got an unexpected keyword argument 'steps'"),
        (lambda: so.muon(0.02, momentum=1.0), ValueError, r"muon: momentum must be in \[0, 1\)"),
        (lambda: so.muon(0.02, weight_decay=-0.1), ValueError, r"muon: weight_decay must be"),
        (lambda: so.muon(0.02, batch_dims=-1), ValueError, r"muon: batch_dims must be"),
        (lambda: so.muon(0.02, scale="mup"), ValueError, r"muon: scale must be one of"),
        (lambda: so.mucon(0.02, normalize=None), TypeError, r"mucon: normalize must be True"),
        (lambda: so.scale_by_spectral(Direction("polar"), momentum=-0.5), ValueError,
         r"scale_by_spectral: momentum must be in"),
        (lambda: so.dyn_muon(0.02, p_schedule=lambda t: 0.5), ValueError,
         r"dyn_muon: under jax.jit the exponent schedule must list its values"),
    ]
    for make, exc, pattern in bad:
        with pytest.raises(exc, match=pattern):
            make()


# -- scale-invariant directions ----------------------------------------------------------------

def _mlp_loss(tx, steps=30):
    """The task of docs/plots/optimizer_scale_table.py (a tanh teacher-student
    regression, 32-64-64-8, 256 samples) in flax layout, one jitted step."""
    from spectral_ops.testing import teacher_student_task

    student, _, x, y = teacher_student_task(0)
    x, y = jnp.asarray(x), jnp.asarray(y)
    params = {f"l{i}": {"kernel": jnp.asarray(w.T), "bias": jnp.zeros(w.shape[0])}
              for i, w in enumerate(student)}

    def loss(p):
        z = x
        for i in range(3):
            z = z @ p[f"l{i}"]["kernel"] + p[f"l{i}"]["bias"]
            z = jnp.tanh(z) if i < 2 else z
        return jnp.mean((z - y) ** 2)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s
    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return float(loss(params))


def test_optax_one_learning_rate_serves_muon_mucon_and_muon_p():
    # at one scale rule: see the PyTorch test of the same name
    muon = _mlp_loss(so.muon(0.02, scale="spectral"))
    mucon = _mlp_loss(so.mucon(0.02, scale="spectral"))
    muon_p = _mlp_loss(so.muon_p(0.02, scale="spectral"))
    assert mucon <= 1.5 * muon and muon_p <= 1.5 * muon, (muon, mucon, muon_p)


def test_optax_direction_matches_numpy_and_literal_option():
    import spectral_ops
    rng = np.random.default_rng(3)
    m = rng.standard_normal((3, 16, 24)).astype(np.float32) * np.array([1e-3, 1.0, 1e3],
                                                                      np.float32)[:, None, None]
    for d in (Direction("clip", "svd"), Direction("power", "svd", p=0.5),
              Direction("power", "svd", p=-0.25)):
        np.testing.assert_allclose(np.asarray(d(jnp.asarray(m))), d(m), rtol=2e-4, atol=2e-6)
        np.testing.assert_allclose(d(m)[1], d(m[1:2] * 1e-3)[0], rtol=2e-4, atol=2e-6)
    lit = so.scale_by_spectral(Direction("clip", "svd", tau=0.5, normalize=False),
                               momentum=0.0, nesterov=False, scale="none")
    w = {"k": jnp.asarray(m[1])}
    u, _ = lit.update(w, lit.init(w))
    np.testing.assert_allclose(np.asarray(u["k"]), spectral_ops.clip(m[1], 0.5, method="svd"),
                               rtol=1e-5, atol=1e-6)


def test_optax_muon_defaults_are_the_documented_ones():
    import inspect

    sig = inspect.signature(so.muon)
    # floor and tol default to None (kept out of optax.inject_hyperparams' arrays) and
    # resolve to 1e-2 and 0.3: the same updates as those values given
    assert (sig.parameters["method"].default, sig.parameters["floor"].default,
            sig.parameters["tol"].default) == ("polar_express", None, None)
    g = jax.random.normal(jax.random.key(1), (16, 32))
    w = {"k": jnp.zeros_like(g)}

    def update(tx):
        return np.asarray(tx.update({"k": g}, tx.init(w), w)[0]["k"])

    np.testing.assert_array_equal(
        update(so.muon(1.0)), update(so.muon(1.0, method="polar_express", floor=1e-2, tol=0.3)))
    for f in (so.mucon,):
        assert f.__kwdefaults__["floor"] is None and f.__kwdefaults__["tol"] is None
    assert so.muon_p.__kwdefaults__["floor"] is None and "tol" not in so.muon_p.__kwdefaults__


def _first_update(tx, g):
    """-update of one step on a single (in, out) leaf: momentum 0, no scale, lr 1."""
    w = {"k": jnp.zeros_like(g)}
    u, _ = jax.jit(tx.update)({"k": g}, tx.init(w), w)
    return -np.asarray(u["k"])


@pytest.mark.parametrize("kw", [dict(floor=1e-3, tol=1e-4), dict(floor=3e-2, tol=0.3)])
def test_optax_muon_passes_tol_and_floor_to_polar(kw):
    import spectral_ops
    g = np.random.default_rng(4).standard_normal((96, 48)).astype(np.float32)
    common = dict(momentum=0.0, nesterov=False, scale="none")
    ours = _first_update(so.muon(1.0, **common, **kw), jnp.asarray(g))
    default = _first_update(so.muon(1.0, **common), jnp.asarray(g))
    ref = spectral_ops.polar(g, method="polar_express", **kw)
    ref_default = spectral_ops.polar(g, method="polar_express", floor=1e-2, tol=0.3)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(default, ref_default, atol=2e-5)
    assert np.abs(ref - ref_default).max() > 1e-3  # the options change the map
    with pytest.raises(ValueError, match=r"muon: tol must be in \(0, 1\)"):
        so.muon(0.02, tol=1.5)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'tol'"):
        so.muon_p(0.02, tol=0.1)


def test_optax_mucon_passes_tol_and_floor_to_clip():
    import spectral_ops
    g = np.random.default_rng(5).standard_normal((48, 96)).astype(np.float32)
    kw = dict(momentum=0.0, nesterov=False, scale="none", normalize=False, tau=2.0)
    ours = _first_update(so.mucon(1.0, method="polar", floor=0.2, tol=0.2, steps=2, **kw),
                         jnp.asarray(g))
    # on a JAX array, as under jit (clip's plan reads no ratio bound from JAX arrays)
    ref = np.asarray(spectral_ops.clip(jnp.asarray(g), 2.0, method="polar", floor=0.2, tol=0.2,
                                       steps=2))
    tight = np.asarray(spectral_ops.clip(jnp.asarray(g), 2.0, method="polar", steps=2))
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert np.abs(ref - tight).max() > 1e-3  # floor changes the design


@pytest.mark.parametrize("preset", ["muon", "mucon", "muon_p"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_updates_keep_the_gradients_16bit_dtype(preset, dtype):
    # the float32 bias corrections promoted mu_hat, and the spectral updates came back
    # float32 (optax.contrib.muon returns the gradients' dtype)
    dt = getattr(jnp, dtype)
    params = {"w": jnp.full((8, 16), 0.1, dt), "v": jnp.ones((16, 8), dt),
              "b": jnp.ones((8,), dt)}
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(0), p.shape).astype(p.dtype),
                         params)
    tx = getattr(so, preset)(0.02)
    state = tx.init(params)
    for update in (tx.update, jax.jit(tx.update)):
        u, state = update(grads, state, params)
        assert {k: v.dtype for k, v in u.items()} == {k: dt for k in params}
        assert all(bool(jnp.isfinite(v.astype(jnp.float32)).all()) for v in u.values())


@pytest.mark.parametrize("preset,static", [("muon", ()), ("mucon", ()), ("muon_p", ("p",))])
def test_inject_hyperparams(preset, static):
    # it failed at init (batch_dims became an array, **adam came in as adam={}) and under
    # jit (the traced momentum was read with .item())
    params = {"w": jnp.full((8, 16), 0.1), "b": jnp.ones((8,))}
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(0), p.shape), params)
    factory = getattr(so, preset)
    tx = optax.inject_hyperparams(factory, static_args=static)(learning_rate=0.02)
    state = tx.init(params)
    step = jax.jit(tx.update)
    plain = factory(0.02)
    pstate = plain.init(params)
    u, state = step(grads, state, params)
    r, pstate = plain.update(grads, pstate, params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(r)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)  # changed between steps
    u, state = step(grads, state, params)
    r, pstate = plain.update(grads, pstate, params)
    np.testing.assert_allclose(np.asarray(u["w"]), 0.5 * np.asarray(r["w"]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="momentum"):  # checked where concrete (init)
        optax.inject_hyperparams(factory, static_args=static)(
            learning_rate=0.02, momentum=1.5).init(params)
