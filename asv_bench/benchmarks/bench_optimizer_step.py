"""One Muon step on a transformer's hidden matrices: ours against the references,
side by side in one run, at the optimizers' defaults.

* PyTorch (``TimeTorchMuonStep``): ``torch.optim.Muon`` (5 quintic steps in
  bfloat16, one matrix at a time) against our ``Muon`` (Polar Express at
  ``floor=1e-2, tol=0.3`` in float32, batched stacks) and our ``Muon`` in
  bfloat16; the whole ``step()`` with gradients in place, on the CPU and, where
  torch sees one, on a CUDA device (float32 products without TF32).
* JAX (``TimeJaxMuonStep``): ``optax.contrib.muon`` against our optax ``muon``,
  the jitted update and its application, on the default JAX device.

Models: ``d128``, the hidden matrices of the two-block character model of
docs/training.md (eight 128 x 128, two 512 x 128, two 128 x 512); ``d768``, one
block of a GPT-2-small-sized transformer (four 768 x 768, 3072 x 768,
768 x 3072). Momentum 0.95, no weight decay, learning rate 0.02.
"""

from __future__ import annotations

import numpy as np

from . import _common as c

#: (fan_out, fan_in) of each hidden matrix, in PyTorch's (out, in) layout
MODELS = {
    "d128": [(128, 128)] * 8 + [(512, 128)] * 2 + [(128, 512)] * 2,
    "d768": [(768, 768)] * 4 + [(3072, 768), (768, 3072)],
}
LR, MOMENTUM = 0.02, 0.95


def _arrays(model: str, seed: int):
    """Weights (scale 0.02) and four gradient sets (scale 1e-3), float32."""
    rng = np.random.default_rng(seed)
    shapes = MODELS[model]
    weights = [0.02 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [[1e-3 * rng.standard_normal(s, dtype=np.float32) for s in shapes]
             for _ in range(4)]
    return weights, grads


class TimeTorchMuonStep:
    """Seconds per ``optimizer.step()``."""

    params = (["d128", "d768"], ["torch.optim.Muon", "Muon", "Muon_bf16"], ["cpu", "cuda"])
    param_names = ["model", "impl", "device"]
    number = 1
    repeat = (3, 20, 10.0)
    warmup_time = 0.0

    def setup(self, model, impl, device):
        torch = c.require_torch_cuda() if device == "cuda" else c.require_torch()
        from spectral_ops.adapters.torch import Muon

        weights, grads = _arrays(model, 0)
        ps = [torch.nn.Parameter(torch.from_numpy(w).to(device)) for w in weights]
        self.grads = [[torch.from_numpy(g).to(device) for g in gs] for gs in grads]
        if impl == "torch.optim.Muon":
            if not hasattr(torch.optim, "Muon"):
                raise NotImplementedError(f"torch {torch.__version__} has no torch.optim.Muon")
            opt = torch.optim.Muon(ps, lr=LR, momentum=MOMENTUM, weight_decay=0.0)
        else:
            dtype = torch.bfloat16 if impl == "Muon_bf16" else None
            opt = Muon(ps, lr=LR, momentum=MOMENTUM, compute_dtype=dtype)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.calls = 0

        def step():
            for p, g in zip(ps, self.grads[self.calls % 4]):
                p.grad = g
            self.calls += 1
            opt.step()
            sync()
        for _ in range(3):  # state, plans and coefficient schedules outside the timing
            step()
        self.step = step

    def time_step(self, model, impl, device):
        self.step()


class TimeJaxMuonStep:
    """Seconds per jitted update and ``optax.apply_updates``, float32."""

    params = (["d128", "d768"], ["optax.contrib.muon", "muon"])
    param_names = ["model", "impl"]
    number = 1
    repeat = (3, 20, 10.0)
    warmup_time = 0.0

    def setup(self, model, impl):
        try:
            import jax
            import optax
        except ImportError as exc:
            raise NotImplementedError(f"jax or optax is not installed: {exc}") from exc
        jax.config.update("jax_default_matmul_precision", "highest")
        from spectral_ops.adapters import optax as so

        weights, grads = _arrays(model, 0)
        # flax's (in, out) layout: the transpose of PyTorch's (out, in)
        params = {f"w{i}": jax.numpy.asarray(w.T) for i, w in enumerate(weights)}
        self.grads = [{f"w{i}": jax.numpy.asarray(g.T) for i, g in enumerate(gs)}
                      for gs in grads]
        if impl == "optax.contrib.muon":
            tx = optax.contrib.muon(LR, beta=MOMENTUM)
        else:
            tx = so.muon(LR, momentum=MOMENTUM)

        @jax.jit
        def update(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        self.state = (params, tx.init(params))
        self.calls = 0

        def step():
            p, s = update(*self.state, self.grads[self.calls % 4])
            self.calls += 1
            jax.block_until_ready(p)
            self.state = (p, s)
        for _ in range(3):  # compiles outside the timing
            step()
        self.step = step

    def time_step(self, model, impl):
        self.step()
