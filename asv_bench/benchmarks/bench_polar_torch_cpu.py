"""polar() on torch CPU float32: the default (method="auto"), "polar_express",
"svd" and "eigh" against U @ Vh from torch.linalg.svd.

All implementations of one shape are parameters of one benchmark, so one
``asv run`` measures them side by side and their ratios come from one run.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

SHAPES = ["512x512", "256x1024", "1024x4096", "1024x1024", "8x128x512", "256x256",
          "4x128x128", "2048x2048"]
# "svd" and "eigh": the library's SVD route and the float64 Gram eigendecomposition,
# which auto weighs against the iteration ("polar_express" or "gram") by flops on
# CPUs (routing.eigh_pays)
IMPLS = ["auto", "polar_express", "torch_svd", "svd", "eigh", "gram"]


def _fn(torch, impl, B):
    if impl == "torch_svd":
        return lambda: c.torch_svd_polar(torch, B)
    return lambda: spectral_ops.polar(B, method=impl)


class TimePolarTorchCPU:
    """Seconds per call, float32, torch on the CPU (its default thread count)."""

    params = (SHAPES, IMPLS)
    param_names = ["shape", "impl"]
    number = 1
    rounds = 2
    repeat = (1, 10, 6.0)
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, shape, impl):
        torch = c.require_torch()
        B = c.gaussian_torch_cpu(shape)
        self.fn = _fn(torch, impl, B)
        if impl != "torch_svd":
            spectral_ops.polar_plan(B, method=impl)  # fills the coefficient cache
        if c.is_large(shape):
            small = c.gaussian_torch_cpu(c.small_like(shape))
            c.warm_once((shape, impl), _fn(torch, impl, small))
        else:
            c.warm_once((shape, impl), self.fn)

    def time_polar(self, shape, impl):
        self.fn()
