"""The torch adapter: parity with torch.optim.Muon, state, compile, batching."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest

from spectral_ops.schedules import dynmuon_schedule


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
    first = float(loss_fn(params))
    for _ in range(30):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    assert float(loss_fn(params)) < first


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
