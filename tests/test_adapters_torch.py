"""The torch adapter: parity with torch.optim.Muon, state, compile, batching."""

from __future__ import annotations

import inspect
import io
from fractions import Fraction

import numpy as np
import pytest

from spectral_ops.schedules import GridSchedule, dynmuon_schedule


torch = pytest.importorskip("torch", reason="torch is not installed")
from spectral_ops.adapters import torch as st  # noqa: E402


def _torch_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(0.1 * torch.randn(64, 128, generator=g)),
              torch.nn.Parameter(0.1 * torch.randn(96, 64, generator=g)),
              torch.nn.Parameter(0.1 * torch.randn(64, 128, generator=g))]
    x = torch.randn(256, 128, generator=g)

    def loss_fn(ps):
        return ((x @ ps[0].T) @ ps[1].T).pow(2).mean() + (x @ ps[2].T).sin().sum() * 1e-2
    return params, loss_fn


def _train(opt_factory, steps=10, perturb=False, seed=0):
    params, loss_fn = _torch_problem(seed)
    start = [p.detach().clone() for p in params]
    opt = opt_factory(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        if perturb:  # one bf16 rounding of the gradient (+-2^-9 relative)
            for p in params:
                flip = torch.from_numpy(rng.choice([-1.0, 1.0], size=tuple(p.shape))).float()
                p.grad.mul_(1 + 2.0**-9 * flip)
        opt.step()
    return [p.detach() for p in params], start


def test_torch_muon_reproduces_torch_optim_muon_to_bf16_round_off():
    pytest.importorskip("torch.optim._muon", reason="torch.optim.Muon needs torch >= 2.9")
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    ref, start = _train(lambda ps: torch.optim.Muon(ps, **kw))
    spread, _ = _train(lambda ps: torch.optim.Muon(ps, **kw), perturb=True)
    ours, _ = _train(lambda ps: st.Muon(ps, method="jordan", steps=5, scale="jordan",
                                        compute_dtype=torch.bfloat16, **kw))
    for r, s, o, w0 in zip(ref, spread, ours, start):
        moved = (r - w0).norm()
        # within twice how far the reference moves under one bf16 rounding of its input
        assert (o - r).norm() / moved <= 2 * (s - r).norm() / moved


@pytest.mark.parametrize("cls,kw", [
    (st.Muon, {}), (st.MuCon, {"tau": 0.5}), (st.MuonP, {"p": Fraction(1, 2)}),
    (st.DynMuon, {"p_schedule": dynmuon_schedule(30)}),
])
def test_torch_presets_reduce_the_loss(cls, kw):
    params, loss_fn = _torch_problem(1)
    opt = cls(params, lr=0.02, **kw)
    first = float(loss_fn(params).detach())
    for _ in range(30):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    assert float(loss_fn(params).detach()) < first


def test_torch_state_dict_round_trip_is_bit_identical():
    def make(ps):
        return st.DynMuon(ps, lr=0.02, p_schedule=dynmuon_schedule(20), weight_decay=0.01)
    params, loss_fn = _torch_problem(2)
    opt = make(params)
    for _ in range(5):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save({"p": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    for _ in range(5):  # continue the original
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    buf.seek(0)
    saved = torch.load(buf)
    params2, loss_fn2 = _torch_problem(2)
    with torch.no_grad():
        for p, v in zip(params2, saved["p"]):
            p.copy_(v)
    opt2 = make(params2)
    opt2.load_state_dict(saved["opt"])
    for _ in range(5):
        opt2.zero_grad()
        loss_fn2(params2).backward()
        opt2.step()
    for a, b in zip(params, params2):
        assert torch.equal(a, b)


def test_torch_bf16_params_keep_fp32_state_through_load():
    p = torch.nn.Parameter(torch.randn(16, 32).bfloat16())
    b = torch.nn.Parameter(torch.zeros(32).bfloat16())
    opt = st.Muon([p, b], lr=0.01)
    (p.float().sum() ** 2 + b.float().sum()).backward()
    opt.step()
    assert opt.state[p]["momentum_buffer"].dtype == torch.float32
    assert opt.state[b]["exp_avg"].dtype == torch.float32
    sd = opt.state_dict()
    opt2 = st.Muon([p, b], lr=0.01)
    opt2.load_state_dict(sd)
    assert opt2.state[p]["momentum_buffer"].dtype == torch.float32
    assert torch.equal(opt2.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])


def test_torch_closure_no_grad_and_buffer_not_aliased():
    params, loss_fn = _torch_problem(3)
    opt = st.Muon(params, lr=0.02, nesterov=False)

    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert loss is not None and torch.isfinite(loss)
    buf = opt.state[params[0]]["momentum_buffer"]
    # the buffer holds (1 - mu) g after one step, not a normalised direction
    assert torch.allclose(buf, 0.05 * params[0].grad, atol=1e-7)
    assert buf.data_ptr() != params[0].data_ptr()


def test_torch_non_matrices_and_masked_groups_get_adamw():
    w = torch.nn.Parameter(torch.randn(8, 16))
    emb = torch.nn.Parameter(torch.randn(50, 8))
    bias = torch.nn.Parameter(torch.zeros(8))
    opt = st.Muon([{"params": [w, bias]}, {"params": [emb], "spectral": False}], lr=0.02,
                  adamw_lr=1e-3)
    (w.sum() + emb.sum() + bias.sum()).backward()
    before = emb.detach().clone()
    opt.step()
    assert "exp_avg" in opt.state[bias] and "exp_avg" in opt.state[emb]
    assert "momentum_buffer" in opt.state[w]
    # AdamW's first step moves every entry by lr (sign of the gradient)
    assert torch.allclose(before - emb.detach(), torch.full_like(emb, 1e-3), atol=1e-6)


def test_torch_conv_and_stacked_weights():
    conv = torch.nn.Parameter(torch.randn(16, 8, 3, 3))
    experts = torch.nn.Parameter(torch.randn(4, 16, 32))
    opt = st.Muon([{"params": [conv]}, {"params": [experts], "batch_dims": 1}], lr=0.1,
                  method="svd", scale="none", momentum=0.0, nesterov=False)
    conv.grad = torch.randn_like(conv)
    experts.grad = torch.randn_like(experts)
    c0, e0 = conv.detach().clone(), experts.detach().clone()
    opt.step()
    dc = (c0 - conv.detach()).reshape(16, 72) / 0.1
    assert torch.allclose(torch.linalg.svdvals(dc), torch.ones(16), atol=1e-5)
    de = (e0 - experts.detach()) / 0.1
    for i in range(4):  # each expert gets its own polar factor
        assert torch.allclose(torch.linalg.svdvals(de[i]), torch.ones(16), atol=1e-5)


def test_torch_same_shapes_are_one_batched_call(monkeypatch):
    calls = []
    params = [torch.nn.Parameter(torch.randn(8, 16)) for _ in range(5)]
    opt = st.Muon(params, lr=0.01)
    inner = opt.direction.__class__.__call__

    def spy(self, x, step=0):
        calls.append(tuple(x.shape))
        return inner(self, x, step)
    monkeypatch.setattr(opt.direction.__class__, "__call__", spy)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    assert calls == [(5, 8, 16)]


def test_torch_default_scale_is_torch_optim_muons_rule():
    # the presets' default lr scale is torch.optim.Muon's, so its learning rates
    # carry over: the same factor for tall, wide and square weights
    _adjust_lr = pytest.importorskip(
        "torch.optim._muon", reason="torch.optim.Muon arrived in torch 2.9")._adjust_lr
    for cls in (st.Muon, st.MuCon, st.MuonP):
        assert inspect.signature(cls).parameters["scale"].default == "jordan"
    assert inspect.signature(st.DynMuon).parameters["scale"].default == "jordan"
    for fan_out, fan_in in ((512, 128), (128, 512), (96, 96), (10, 784)):
        assert st.scale_factor("jordan", fan_out, fan_in) == pytest.approx(
            _adjust_lr(1.0, None, torch.Size((fan_out, fan_in))), rel=1e-15)
    w = torch.nn.Parameter(torch.randn(128, 512))
    assert st.Muon([w]).param_groups[0]["scale"] == "jordan"


def test_torch_scale_rules_and_errors():
    assert st.scale_factor("spectral", 64, 16) == 2.0
    assert st.scale_factor("jordan", 16, 64) == 1.0
    assert st.scale_factor("rms", 64, 16) == pytest.approx(1.6)
    assert st.scale_factor("none", 3, 5) == 1.0
    w = [torch.nn.Parameter(torch.randn(4, 4))]
    with pytest.raises(ValueError, match=r"scale must be one of"):
        st.Muon(w, scale="mup")
    with pytest.raises(ValueError, match=r"MuCon needs tau > 0"):
        st.MuCon(w, tau=0.0)
    with pytest.raises(ValueError, match=r"DynMuon needs p_schedule"):
        st.DynMuon(w)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        st.Muon(w, momentum=1.0)
    with pytest.raises(ValueError, match=r"needs at least 2 dimensions after its batch_dims"):
        st.Muon([{"params": [torch.nn.Parameter(torch.randn(4))], "spectral": True}])
    with pytest.raises(ValueError, match=r"with batch_dims=1 a spectral parameter must have exactly 3"):
        st.Muon([{"params": [torch.nn.Parameter(torch.randn(2, 4, 4, 3, 3))], "batch_dims": 1}])


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo notes on graph breaks
def test_torch_compiled_step_matches_eager():
    params, loss_fn = _torch_problem(4)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, opt2 = st.Muon(params, lr=0.02), st.Muon(params2, lr=0.02)
    compiled = torch.compile(opt2.step, backend="eager")  # graph breaks allowed
    for _ in range(3):
        for o, ps in ((opt, params), (None, params2)):
            (o or opt2).zero_grad()
            loss_fn(ps).backward()
        opt.step()
        compiled()
    for a, b in zip(params, params2):
        assert torch.allclose(a, b, atol=1e-6)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch on this machine")
def test_torch_optimizers_on_cuda_match_cpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    for cls, kw in [(st.Muon, {"method": "polar_express"}), (st.MuCon, {"tau": 0.5, "method": "polar"}),
                    (st.MuonP, {"p": 0.5, "method": "newton"})]:
        results = []
        for device in ("cpu", "cuda"):
            params, loss_fn = _torch_problem(5)
            params = [torch.nn.Parameter(p.detach().to(device)) for p in params]
            opt = cls(params, lr=0.02, **kw)
            for _ in range(3):
                opt.zero_grad()
                g = torch.Generator().manual_seed(0)
                x = torch.randn(256, 128, generator=g).to(device)
                (((x @ params[0].T) @ params[1].T).pow(2).mean() + (x @ params[2].T).sin().sum()
                 * 1e-2).backward()
                opt.step()
            results.append([p.detach().cpu() for p in params])
        for a, b in zip(*results):
            assert torch.allclose(a, b, atol=1e-4), cls


# -- non-finite gradients ----------------------------------------------------------------------

_PRESETS = [(st.Muon, {}), (st.MuCon, {"tau": 0.5}), (st.MuonP, {"p": Fraction(1, 2)}),
            (st.DynMuon, {"p_schedule": dynmuon_schedule(20)})]
_PRESET_IDS = ["Muon", "MuCon", "MuonP", "DynMuon"]


def _problem_with_bias(seed=0):
    params, loss_fn = _torch_problem(seed)
    bias = torch.nn.Parameter(torch.zeros(96))

    def loss(ps):
        return loss_fn(ps[:3]) + (ps[3] - 0.1).pow(2).sum()
    return params + [bias], loss


def _snapshot(opt, params):
    return ([p.detach().clone() for p in params],
            [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
             for p in params])


@pytest.mark.parametrize("cls,kw", _PRESETS, ids=_PRESET_IDS)
def test_torch_nan_gradient_is_skipped_and_training_continues(cls, kw):
    params, loss_fn = _problem_with_bias(6)
    opt = cls(params, lr=0.02, weight_decay=0.01, **kw)  # default nonfinite="skip"
    for step in range(8):
        opt.zero_grad()
        loss_fn(params).backward()
        if step == 3:  # NaN in a spectral gradient, inf in the AdamW one
            params[1].grad[0, 0] = float("nan")
            params[3].grad[5] = float("inf")
            before = _snapshot(opt, params)
        opt.step()
        if step == 3:
            after = _snapshot(opt, params)
            for i in (1, 3):  # skipped: parameter and state bit for bit as before
                assert torch.equal(after[0][i], before[0][i])
                for key, v in before[1][i].items():
                    if key != "step":
                        assert torch.equal(after[1][i][key], v), key
            for i in (0, 2):  # the others stepped
                assert not torch.equal(after[0][i], before[0][i])
    for p in params:
        assert torch.isfinite(p).all()
        for v in opt.state[p].values():
            assert not torch.is_tensor(v) or torch.isfinite(v).all()
    assert opt.nonfinite_skips() == 2
    fresh, fresh_loss = _problem_with_bias(6)
    assert float(loss_fn(params).detach()) < float(fresh_loss(fresh).detach())


def test_torch_masked_skip_path_matches_the_plain_path_bitwise():
    # on accelerators every parameter goes through the masked (synchronisation-free)
    # update; with all-true flags it must equal the plain update bit for bit
    results = []
    for masked in (False, True):
        params, loss_fn = _problem_with_bias(7)
        opt = st.MuCon(params, lr=0.02, weight_decay=0.1)
        if masked:
            opt._finite_flags = lambda ps: {p: torch.ones((), dtype=torch.bool) for p in ps}
        for _ in range(3):
            opt.zero_grad()
            loss_fn(params).backward()
            opt.step()
        results.append(_snapshot(opt, params))
    for a, b in zip(results[0][0], results[1][0]):
        assert torch.equal(a, b)
    for sa, sb in zip(results[0][1], results[1][1]):
        assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
                   for k in sa)


def test_torch_nonfinite_raise_changes_nothing_and_names_the_parameter():
    params, loss_fn = _problem_with_bias(8)
    opt = st.Muon([{"params": params[:2]}, {"params": params[2:]}], lr=0.02, nonfinite="raise")
    opt.zero_grad()
    loss_fn(params).backward()
    opt.step()
    opt.zero_grad()
    loss_fn(params).backward()
    params[2].grad[1, 1] = float("inf")
    before = _snapshot(opt, params)
    with pytest.raises(FloatingPointError, match=r"Muon: the gradient of parameter 2 \(group 1, "
                                                 r"shape \(64, 128\)\) holds NaN or inf"):
        opt.step()
    after = _snapshot(opt, params)
    for a, b in zip(before[0], after[0]):
        assert torch.equal(a, b)
    for sa, sb in zip(before[1], after[1]):
        assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
                   for k in sa)
    with pytest.raises(ValueError, match=r"Muon: nonfinite must be one of \('skip', 'raise', "
                                         r"'ignore'\)"):
        st.Muon(params, nonfinite="warn")


def test_torch_nonfinite_ignore_is_the_unchecked_step():
    params, loss_fn = _torch_problem(9)
    opt = st.Muon(params, lr=0.02, method="polar_express", nonfinite="ignore")
    opt.zero_grad()
    loss_fn(params).backward()
    params[0].grad[0, 0] = float("nan")
    opt.step()
    assert not torch.isfinite(params[0]).all()


# -- copies ------------------------------------------------------------------------------------

def _picklable_schedule(step):
    return Fraction(1, 2) if step < 4 else Fraction(1, 4)


def _grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def _continue(opt, params, steps):
    for s in steps:
        for p, g in zip(params, _grads(params, s)):
            p.grad = g
        opt.step()


def _opt_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def _assert_same(opt_a, opt_b):
    pa, pb = _opt_params(opt_a), _opt_params(opt_b)
    for a, b in zip(pa, pb):
        assert torch.equal(a, b)
        sa, sb = opt_a.state[a], opt_b.state[b]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("cls,kw", _PRESETS[:3] + [
    (st.DynMuon, {"p_schedule": GridSchedule(_picklable_schedule, Fraction(1, 4),
                                             Fraction(1, 2), 4)}),
    (st.Muon, {"floor": 3e-2, "tol": 0.1}), (st.MuCon, {"floor": 1e-2, "tol": 1e-3})],
    ids=_PRESET_IDS + ["Muon-floor-tol", "MuCon-floor-tol"])
def test_torch_copies_continue_bit_identically(cls, kw, how):
    import copy
    import pickle
    params, _ = _problem_with_bias(10)
    opt = cls(params, lr=0.02, weight_decay=0.01, **kw)
    _continue(opt, params, range(3))
    if how == "deepcopy":
        twin = copy.deepcopy(opt)
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(opt))
    else:
        buf = io.BytesIO()
        torch.save(opt, buf)
        buf.seek(0)
        twin = torch.load(buf, weights_only=False)
    fields = lambda d: {k: v for k, v in vars(d).items() if k != "p_schedule"}  # noqa: E731
    assert fields(twin.direction) == fields(opt.direction) and twin.nonfinite == opt.nonfinite
    for key, value in kw.items():  # floor and tol among them
        if key in ("floor", "tol"):
            assert getattr(twin.direction, key) == value
    _continue(opt, params, range(3, 6))
    _continue(twin, _opt_params(twin), range(3, 6))
    _assert_same(opt, twin)


def test_torch_dynmuon_with_the_library_schedule_deep_copies():
    # the schedules of spectral_ops.schedules are closures: deepcopy shares them,
    # pickle needs them to be module-level (see docs/optimizers.md)
    import copy
    params, _ = _problem_with_bias(11)
    opt = st.DynMuon(params, lr=0.02, p_schedule=dynmuon_schedule(10))
    _continue(opt, params, range(3))
    twin = copy.deepcopy(opt)
    _continue(opt, params, range(3, 6))
    _continue(twin, _opt_params(twin), range(3, 6))
    _assert_same(opt, twin)


# -- foreign and earlier state dicts ------------------------------------------------------------

@pytest.mark.parametrize("foreign", [
    lambda ps: torch.optim.Adam(ps, lr=1e-3), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
], ids=["Adam", "SGD"])
def test_torch_foreign_state_dict_is_refused_before_anything_changes(foreign):
    params, loss_fn = _problem_with_bias(12)
    other = foreign(params)
    loss_fn(params).backward()
    other.step()
    opt = st.Muon(params, lr=0.02)
    opt.step()
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=r"Muon.load_state_dict: not a state dict of a "
                                         r"spectral_ops optimizer: parameter group 0 lacks"):
        opt.load_state_dict(other.state_dict())
    assert opt.param_groups[0]["scale"] == "jordan"
    after = _snapshot(opt, params)
    for sa, sb in zip(before[1], after[1]):
        assert all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
                   for k in sa)
    opt.step()  # still usable


def test_torch_state_dict_of_the_earlier_form_loads():
    # the form written before the non-finite and normalize options: the same group
    # entries, state momentum_buffer/step (spectral) and exp_avg/exp_avg_sq/step (AdamW)
    params, _ = _problem_with_bias(13)
    group = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, scale="spectral",
                 adamw_lr=3e-4, adamw_betas=(0.9, 0.95), adamw_eps=1e-8,
                 adamw_weight_decay=0.0, spectral=None, batch_dims=0, params=[0, 1, 2, 3])
    state = {i: {"momentum_buffer": 0.01 * torch.ones_like(params[i]), "step": 4}
             for i in range(3)}
    state[3] = {"exp_avg": torch.zeros(96), "exp_avg_sq": torch.ones(96), "step": 4}
    opt = st.MuCon(params, lr=0.02, normalize=False, tau=0.5)
    opt.load_state_dict({"state": state, "param_groups": [group]})
    assert opt.param_groups[0]["scale"] == "spectral"  # the saved rule, not today's default
    assert opt.state[params[0]]["step"] == 4
    assert torch.equal(opt.state[params[3]]["exp_avg_sq"], torch.ones(96))
    _continue(opt, params, range(2))
    assert all(torch.isfinite(p).all() for p in params)
    bad = {"state": {0: {"momentum_buffer": torch.zeros(3, 3), "step": 1}},
           "param_groups": [group]}
    with pytest.raises(ValueError, match=r"momentum_buffer of parameter 0 has shape \(3, 3\), "
                                         r"the parameter \(64, 128\)"):
        opt.load_state_dict(bad)


# -- argument checks ---------------------------------------------------------------------------

def test_torch_arguments_are_checked_at_construction_with_the_preset_name():
    w = [torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.zeros(8))]
    assert st.MuCon(w, tau=np.float32(0.5)).direction.tau == 0.5
    assert st.MuCon(w, tau=3).direction.tau == 3.0
    assert st.MuCon(w).direction.tau == 0.5 and st.MuCon(w, normalize=False).direction.tau == 1.0
    assert st.Muon(w, lr=torch.tensor(0.01)) is not None  # a 0-d tensor lr is a number
    bad = [
        (lambda: st.MuCon(w, tau=float("inf")), ValueError, r"MuCon needs tau > 0 and finite"),
        (lambda: st.MuCon(w, tau=0), ValueError, r"MuCon needs tau > 0 and finite"),
        (lambda: st.MuCon(w, tau=-1.0, normalize=False), ValueError,
         r"MuCon needs tau > 0 and finite \(the spectral-norm radius\)"),
        (lambda: st.Muon(w, adamw_betas=(0.9,)), ValueError,
         r"Muon: adamw_betas must be a pair"),
        (lambda: st.MuonP(w, adamw_betas=(0.9, 1.0)), ValueError,
         r"MuonP: adamw_betas\[1\] must be in \[0, 1\)"),
        (lambda: st.Muon(w, lr=float("inf")), ValueError, r"Muon: lr must be in \[0, inf\) and "
                                                           r"finite"),
        (lambda: st.MuCon(w, lr=-1.0), ValueError, r"MuCon: lr must be"),
        (lambda: st.Muon(w, adamw_eps=0), ValueError, r"Muon: adamw_eps must be in \(0, inf\)"),
        (lambda: st.Muon(w, method="bogus"), ValueError,
         r"Muon: method must be one of \('auto', "),
        (lambda: st.MuCon(w, method="jordan"), ValueError, r"MuCon: method must be one of"),
        (lambda: st.MuonP(w, method="polar"), ValueError, r"MuonP: method must be one of"),
        (lambda: st.MuonP(w, p=2), ValueError, r"MuonP: p must lie in \[-1, 1\]"),
        (lambda: st.MuonP(w, p="1/2"), TypeError, r"MuonP: p must be a real number"),
        (lambda: st.MuonP(w, steps=3), TypeError,
         r"MuonP\(\) got an unexpected keyword argument 'steps'"),
        (lambda: st.DynMuon(w, p_schedule=dynmuon_schedule(10), steps=3), TypeError,
         r"DynMuon\(\) got an unexpected keyword argument 'steps'"),
        (lambda: st.DynMuon(w, p_schedule=lambda t: 3), ValueError,
         r"DynMuon: a value of p_schedule: p must lie in \[-1, 1\]"),
        (lambda: st.Muon(w, tau=0.5), TypeError, r"Muon\(\) got an unexpected keyword "
                                                  r"argument 'tau' \(tau is MuCon's\)"),
        (lambda: st.Muon(w, steps=0), ValueError, r"Muon: steps must be an integer >= 1"),
        (lambda: st.Muon(w, nesterov=1), TypeError, r"Muon: nesterov must be True or False"),
        (lambda: st.MuCon(w, normalize="yes"), TypeError, r"MuCon: normalize must be True or"),
        (lambda: st.Muon(w, momentum=float("nan")), ValueError, r"Muon: momentum must be in"),
        (lambda: st.Muon([{"params": w[:1], "lr": float("nan")}]), ValueError, r"Muon: lr must"),
        (lambda: st.Muon([{"params": w[:1], "batch_dims": -1}]), ValueError,
         r"Muon: batch_dims must be an integer >= 0"),
    ]
    for make, exc, pattern in bad:
        with pytest.raises(exc, match=pattern):
            make()


def test_torch_bad_adamw_betas_fail_before_any_parameter_moves():
    w = torch.nn.Parameter(torch.randn(8, 8))
    opt = st.Muon([w], lr=0.02)
    w.grad = torch.randn(8, 8)
    before = w.detach().clone()
    with pytest.raises(ValueError, match=r"Muon: adamw_betas must be a pair"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(8))],
                             "adamw_betas": (0.9,)})
    assert len(opt.param_groups) == 1
    opt.step()
    assert not torch.equal(before, w)


# -- scale-invariant directions ----------------------------------------------------------------

def _mlp_task(seed=0):
    """The task of docs/plots/optimizer_scale_table.py: a tanh teacher-student
    regression (32-64-64-8, 256 samples), in torch's (out, in) layout."""
    from spectral_ops.testing import teacher_student_task

    student, biases, x, y = teacher_student_task(seed)
    ws = [torch.nn.Parameter(torch.from_numpy(w)) for w in student]
    bs = [torch.nn.Parameter(torch.from_numpy(b)) for b in biases]
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def loss():
        z = x
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = z @ w.T + b
            z = torch.tanh(z) if i < 2 else z
        return ((z - y) ** 2).mean()
    return ws + bs, loss


def _mlp_loss(factory, steps=30):
    params, loss = _mlp_task(0)
    opt = factory(params)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    return float(loss().detach())


def test_torch_one_learning_rate_serves_muon_mucon_and_muon_p():
    # at one scale rule, the one under which the normalised steps have the spectral
    # norms of docs/optimizers.md ("Scaling rules"); the default rule ("jordan") also
    # speeds Muon up here (its 8 x 64 output layer steps 2.8x larger), see the table
    kw = dict(lr=0.02, scale="spectral")
    muon = _mlp_loss(lambda ps: st.Muon(ps, **kw))
    mucon = _mlp_loss(lambda ps: st.MuCon(ps, **kw))
    muon_p = _mlp_loss(lambda ps: st.MuonP(ps, **kw))
    assert mucon <= 1.5 * muon and muon_p <= 1.5 * muon, (muon, mucon, muon_p)
    # the literal maps barely move at Muon's learning rate (the reason for the default)
    literal = _mlp_loss(lambda ps: st.MuCon(ps, **kw, tau=0.5, normalize=False))
    assert literal > 2 * muon


@pytest.mark.parametrize("kind,kw", [
    ("clip", {"tau": 0.5}), ("clip", {"tau": 2.0}), ("power", {"p": Fraction(1, 2)}),
    ("power", {"p": 1}), ("power", {"p": Fraction(-1, 4)}), ("power", {"p": Fraction(3, 4)}),
])
def test_torch_normalised_directions_are_scale_invariant_and_bounded(kind, kw):
    g = torch.Generator().manual_seed(14)
    u = torch.linalg.qr(torch.randn(3, 24, 24, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(3, 40, 24, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -4, 24, dtype=torch.float64) * torch.tensor([[1.0], [3e-3], [50.0]],
                                                                      dtype=torch.float64)
    m = (u * s[:, None, :]) @ v.mT
    d = st.Direction(kind, method="svd", **kw)
    base = d(m)
    for c in (1e-6, 1e-2, 1e3):
        torch.testing.assert_close(d(c * m), base, rtol=1e-7, atol=1e-9)
    top = torch.linalg.matrix_norm(base, 2)
    if kind == "clip":
        assert (top <= 1 + 1e-9).all() and (top >= 0.9).all(), top
    elif kw["p"] >= 0:  # 1 up to the power-iteration estimate of s_max (a lower bound)
        assert (top >= 1 - 1e-9).all() and (top <= 1 + 1e-3).all(), top
    else:  # the top direction gets 1, the small ones more, bounded by the ridge
        assert (top >= 1 - 1e-9).all() and (top <= 5).all(), top
    # the same matrices one by one: the batched call is per matrix
    for i in range(3):
        torch.testing.assert_close(d(m[i]), base[i], rtol=1e-9, atol=1e-12)
    zero = d(torch.zeros(2, 5, 7))
    assert torch.equal(zero, torch.zeros(2, 5, 7))


def test_torch_normalised_power_at_p0_is_muon_bit_for_bit():
    m = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(15))
    assert torch.equal(st.Direction("power", p=0)(m), st.Direction("polar")(m))
    sched = GridSchedule(lambda t: Fraction(0), Fraction(0), Fraction(0), 4)
    assert torch.equal(st.Direction("power", p_schedule=sched)(m, 3), st.Direction("polar")(m))


def test_torch_normalize_false_is_the_literal_map():
    import spectral_ops
    m = torch.randn(16, 32, generator=torch.Generator().manual_seed(16))
    assert torch.equal(st.Direction("clip", tau=0.3, normalize=False)(m),
                       spectral_ops.clip(m, 0.3))
    assert torch.equal(st.Direction("power", p=0.5, normalize=False)(m),
                       spectral_ops.power(m, 0.5))


def test_dynmuon_with_library_schedule_pickles_and_continues_bit_identically():
    import pickle

    from spectral_ops.schedules import cosine_schedule, dynmuon_schedule, linear_schedule

    for schedule in (dynmuon_schedule(50), linear_schedule(20, 1, 0), cosine_schedule(20, 1, -0.25)):
        p = [torch.nn.Parameter(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))]
        opt = st.DynMuon(p, p_schedule=schedule)
        p[0].grad = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
        opt.step()
        buf = io.BytesIO()
        torch.save(opt, buf)
        buf.seek(0)
        copies = [opt, torch.load(buf, weights_only=False), pickle.loads(pickle.dumps(opt))]
        for o in copies:
            o.param_groups[0]["params"][0].grad = torch.ones(8, 16)
            o.step()
        ref = copies[0].param_groups[0]["params"][0]
        assert all(torch.equal(ref, c.param_groups[0]["params"][0]) for c in copies[1:])


# -- the optimizer defaults, tol and floor -------------------------------------------------------

def test_torch_muon_defaults_are_the_documented_ones():
    import inspect

    from spectral_ops.adapters import direction as dm
    # the values docs/optimizers.md, docs/training.md and the docstrings state
    assert (dm.DEFAULT_POLAR_METHOD, dm.DEFAULT_POLAR_FLOOR, dm.DEFAULT_POLAR_TOL) == \
        ("polar_express", 1e-2, 0.3)
    w = [torch.nn.Parameter(torch.randn(128, 128))]
    d = st.Muon(w).direction
    assert (d.method, d.floor, d.tol, d.steps, d.compute_dtype) == \
        ("polar_express", 1e-2, 0.3, None, None)
    assert st.Direction("polar") == d
    sig = inspect.signature(st.Muon)
    assert (sig.parameters["method"].default, sig.parameters["floor"].default,
            sig.parameters["tol"].default) == ("polar_express", 1e-2, 0.3)
    # at the character model's shapes: Polar Express, guaranteed to tol above the floor,
    # with fewer products than polar's own default (floor 1e-3, tol 1e-4)
    import spectral_ops
    for shape in [(8, 128, 128), (2, 512, 128), (2, 128, 512)]:
        x = torch.zeros(shape)
        plan = spectral_ops.polar_plan(x, method=d.method, floor=d.floor, tol=d.tol)
        tight = spectral_ops.polar_plan(x, method=d.method)
        assert plan.method == "polar_express" and plan.error_bound <= d.tol
        assert plan.floor == d.floor and plan.matmuls < tight.matmuls
    # MuCon, MuonP and DynMuon keep the core functions' accuracy defaults
    for opt in (st.MuCon(w), st.MuonP(w), st.DynMuon(w, p_schedule=dynmuon_schedule(5))):
        assert (opt.direction.method, opt.direction.floor, opt.direction.tol) == \
            ("auto", None, None)


def _one_update(opt_factory, g):
    """The update of one step from a zero momentum (momentum 0, lr 1, no scale)."""
    w = torch.nn.Parameter(torch.zeros_like(g))
    opt = opt_factory([w])
    w.grad = g.clone()
    opt.step()
    return -w.detach()


@pytest.mark.parametrize("kw", [dict(floor=1e-3, tol=1e-4), dict(floor=3e-2, tol=0.3),
                                dict(method="gram", floor=1e-2, tol=0.1)])
def test_torch_muon_passes_tol_and_floor_to_polar(kw):
    import spectral_ops
    g = torch.randn(48, 96, generator=torch.Generator().manual_seed(20))
    common = dict(lr=1.0, momentum=0.0, nesterov=False, scale="none")
    ours = _one_update(lambda ps: st.Muon(ps, **common, **kw), g)
    method = kw.pop("method", "polar_express")
    assert torch.equal(ours, spectral_ops.polar(g, method=method, **kw))
    default = _one_update(lambda ps: st.Muon(ps, **common), g)
    assert not torch.equal(ours, default)  # the options change the map
    assert torch.equal(default, spectral_ops.polar(g, method="polar_express", floor=1e-2,
                                                   tol=0.3))


def test_torch_mucon_passes_tol_and_floor_to_clip(monkeypatch):
    import spectral_ops
    seen = []
    inner = spectral_ops.clip

    def spy(*args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("floor", "tol", "method")})
        return inner(*args, **kwargs)
    monkeypatch.setattr(spectral_ops, "clip", spy)
    g = torch.randn(32, 64, generator=torch.Generator().manual_seed(21))
    for normalize in (True, False):
        seen.clear()
        _one_update(lambda ps: st.MuCon(ps, method="polar", floor=2e-2, tol=1e-2,
                                        normalize=normalize), g)
        assert seen == [{"floor": 2e-2, "tol": 1e-2, "method": "polar"}]
        seen.clear()
        _one_update(lambda ps: st.MuCon(ps, normalize=normalize), g)
        assert seen == [{"floor": None, "tol": None, "method": "auto"}]  # clip's own defaults


def test_torch_tol_and_floor_are_checked_with_the_preset_name():
    w = [torch.nn.Parameter(torch.randn(4, 4))]
    with pytest.raises(ValueError, match=r"Muon: tol must be in \(0, 1\)"):
        st.Muon(w, tol=0.0)
    with pytest.raises(ValueError, match=r"MuCon: floor must be in \(0, 1\)"):
        st.MuCon(w, floor=1.0)
    with pytest.raises(TypeError, match=r"Muon: floor must be a real number"):
        st.Muon(w, floor="tight")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'tol' \(power's accuracy"):
        st.MuonP(w, tol=0.1)
    with pytest.raises(ValueError, match=r"Muon\^p: tol does not apply to power"):
        st.Direction("power", p=0.5, tol=0.1)
    assert st.MuonP(w, floor=1e-2).direction.floor == 1e-2


def test_torch_direction_of_an_earlier_pickle_keeps_the_core_defaults():
    # a Direction pickled before floor and tol existed has neither attribute: its
    # polar call then takes polar's own defaults, as it did
    import spectral_ops
    d = st.Direction("polar", method="auto")
    del d.__dict__["floor"], d.__dict__["tol"]
    assert d.floor is None and d.tol is None and d.accuracy() == {}
    x = torch.randn(3, 16, 32, generator=torch.Generator().manual_seed(22))
    assert torch.equal(d(x), spectral_ops.polar(x))


@pytest.mark.parametrize("method", ["polar_express", "jordan", "gram"])
def test_torch_polar_direction_is_polar_bit_for_bit_and_nan_per_matrix(method):
    import spectral_ops
    g = torch.Generator().manual_seed(23)
    for shape in [(4, 24, 40), (4, 40, 24), (24, 40)]:
        x = torch.randn(shape, generator=g)
        d = st.Direction("polar", method=method)
        ref = spectral_ops.polar(x, method=method, floor=d.floor, tol=d.tol)
        assert torch.equal(d(x), ref)
        bf = st.Direction("polar", method=method, compute_dtype=torch.bfloat16)
        assert torch.equal(bf(x), spectral_ops.polar(x, method=method, floor=d.floor, tol=d.tol,
                                                      compute_dtype=torch.bfloat16))
    # a matrix holding NaN or inf comes out all NaN, the others as without it
    x = torch.randn(4, 24, 40, generator=g)
    x[1, 2, 3], x[2, 0, 0], x[3, 5, 5] = float("nan"), float("inf"), -float("inf")
    y = st.Direction("polar", method=method)(x)
    assert torch.isnan(y[1:]).all()
    assert torch.equal(y[0], st.Direction("polar", method=method)(x[0]))


def test_torch_muon_stacks_transposed_shapes_in_one_call(monkeypatch):
    # polar(X^T) = polar(X)^T: a (16, 8) and an (8, 16) matrix share one wide stack
    import spectral_ops
    calls = []
    g = torch.Generator().manual_seed(24)
    params = [torch.nn.Parameter(torch.randn(16, 8, generator=g)),
              torch.nn.Parameter(torch.randn(8, 16, generator=g))]
    grads = [torch.randn(16, 8, generator=g), torch.randn(8, 16, generator=g)]
    start = [p.detach().clone() for p in params]
    opt = st.Muon(params, lr=1.0, momentum=0.0, nesterov=False, scale="none")
    inner = opt.direction.__class__.__call__

    def spy(self, x, step=0):
        calls.append(tuple(x.shape))
        return inner(self, x, step)
    monkeypatch.setattr(opt.direction.__class__, "__call__", spy)
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    opt.step()
    assert calls == [(2, 8, 16)]
    for p, w0, gr in zip(params, start, grads):
        ref = spectral_ops.polar(gr, method="polar_express", floor=1e-2, tol=0.3)
        torch.testing.assert_close(w0 - p.detach(), ref, rtol=0, atol=1e-5)
    # MuCon and the power maps keep one stack per shape
    calls.clear()
    opt = st.MuCon(params, lr=0.01)
    monkeypatch.setattr(opt.direction.__class__, "__call__", spy)
    opt.step()
    assert sorted(calls) == [(8, 16), (16, 8)]


@pytest.mark.parametrize("name", ["Muon", "MuCon", "MuonP"])
@pytest.mark.parametrize("shape", [(4, 0), (0, 4), (2, 0, 3)], ids=str)
def test_zero_size_parameters_are_left_alone(name, shape):
    # Muon/MuCon at (4, 0) divided by a zero fan-in; MuonP reduced over an empty matrix
    import spectral_ops.adapters.torch as sat
    cls = getattr(sat, name)
    torch.manual_seed(0)
    q0 = torch.randn(4, 6)
    runs = []
    for with_empty in (True, False):
        q = torch.nn.Parameter(q0.clone())
        e = torch.nn.Parameter(torch.zeros(*shape))
        opt = cls([e, q] if with_empty else [q])
        for _ in range(2):
            q.grad = torch.ones_like(q)
            e.grad = torch.zeros_like(e)
            opt.step()
        runs.append(q.detach().clone())
        assert e.shape == shape
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("key,value,match", [("method", "svd", "one per optimizer"),
                                             ("tau", 0.1, "one per optimizer"),
                                             ("p", 0.25, "one per optimizer"),
                                             ("betas", (0.1, 0.2), "adamw_betas")])
def test_direction_options_in_a_group_are_refused(key, value, match):
    # they were accepted and had no effect
    a = torch.nn.Parameter(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=match):
        st.Muon([{"params": [a], key: value}])
    opt = st.Muon([torch.nn.Parameter(torch.zeros(3, 4))])
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [a], key: value})
    assert len(opt.param_groups) == 1
    st.Muon([{"params": [a], "initial_lr": 0.1}])  # what LR schedulers keep in a group


@pytest.mark.parametrize("key,value", [("momentum", 2.0), ("lr", -5.0), ("scale", "bogus")])
def test_load_state_dict_checks_the_group_values(key, value):
    # they loaded, and a bad scale raised only at the next step
    a = torch.nn.Parameter(torch.randn(3, 4))
    opt = st.Muon([a])
    a.grad = torch.randn_like(a)
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0][key] = value
    before = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    with pytest.raises(ValueError, match=f"load_state_dict.*{key}"):
        opt.load_state_dict(sd)
    assert {k: v for k, v in opt.param_groups[0].items() if k != "params"} == before
