"""polar against the GEMM floor and against torch.optim.Muon's Newton-Schulz (torch).

For each shape and dtype, one benchmark with these implementations as a
parameter, so their ratios come from one run:

* ``polar_express`` / ``gram`` / ``jordan`` / ``auto``: ``spectral_ops.polar``
  (5 steps for jordan; ``auto`` is what a caller gets by default);
* ``gemm_floor`` / ``gram_gemm_floor``: the bare matrix products of the
  ``polar_express`` / ``gram`` plan (as many ``m x m x n`` and ``m x m x m``
  products as the plan counts, on preallocated operands of the same shapes and
  dtype), nothing else: the time the iteration cannot beat;
* ``torch_muon_ns``: ``torch.optim.Muon``'s own Newton-Schulz (bf16, 5 steps).

The issue's targets read off these: polar at most 1.3x ``gemm_floor`` in
bf16, and faster than ``torch_muon_ns`` at equal or better accuracy (accuracy:
``bench_gpu_torch.TrackTorchCUDAAccuracy``). CUDA shapes go from 256 to 8192
and include stacks (``64x256x256``); the CPU variant keeps two shapes.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

CUDA_SHAPES = ["256x256", "1024x1024", "4096x4096", "4096x16384", "16384x4096", "8192x8192",
               "64x256x256"]
CPU_SHAPES = ["256x1024", "1024x4096"]
IMPLS = ["polar_express", "gemm_floor", "gram", "gram_gemm_floor", "auto", "jordan",
         "torch_muon_ns"]


def _shape(text):
    return tuple(int(v) for v in text.split("x"))


def _fn(torch, impl, B):
    gram = impl in ("gram", "gram_gemm_floor")
    if gram and B.dtype != torch.float32:
        raise NotImplementedError("gram runs its recurrence in float32 for 16-bit inputs")
    if impl in ("polar_express", "gram", "auto"):
        return lambda: spectral_ops.polar(B, method=impl)
    if impl == "jordan":
        return lambda: spectral_ops.polar(B, method="jordan", steps=5)
    if impl in ("gemm_floor", "gram_gemm_floor"):
        plan = spectral_ops.polar_plan(B, method="gram" if gram else "polar_express")
        return c.gemm_floor_fn(B, plan.matmuls, plan.flops)
    from spectral_ops.testing import torch_muon_newton_schulz

    reference, reason = torch_muon_newton_schulz()
    if reference is None:
        raise NotImplementedError(reason)
    if B.ndim != 2:
        raise NotImplementedError("torch.optim.Muon's Newton-Schulz takes 2-D matrices only")
    return lambda: reference(B)


class TimeGemmFloorCUDA:
    """Seconds per call on a CUDA device, synchronised (TF32 off)."""

    params = (CUDA_SHAPES, ["float32", "bfloat16", "float16"], IMPLS)
    param_names = ["shape", "dtype", "impl"]
    number = 1
    repeat = (3, 20, 10.0)
    warmup_time = 0.0
    timeout = 600.0

    def setup(self, shape, dtype, impl):
        torch = c.require_torch_cuda()
        gen = torch.Generator(device="cuda").manual_seed(0)
        B = torch.randn(_shape(shape), generator=gen, device="cuda").to(getattr(torch, dtype))
        run = _fn(torch, impl, B)

        def timed():
            run()
            torch.cuda.synchronize()
        self.fn = timed
        timed()  # warm-up: handles, kernel selection, coefficient caches

    def time_polar(self, shape, dtype, impl):
        self.fn()


class TimeGemmFloorCPU:
    """The same on the CPU (torch, float32)."""

    # torch.optim.Muon's Newton-Schulz runs in bfloat16, which CPUs multiply slowly
    # (4.6 min at 1024 x 4096 here): it is timed on CUDA only
    params = (CPU_SHAPES, ["polar_express", "gemm_floor", "gram", "gram_gemm_floor", "auto",
                           "jordan"])
    param_names = ["shape", "impl"]
    number = 1
    rounds = 1
    repeat = (1, 5, 4.0)
    warmup_time = 0.0
    timeout = 600.0

    def setup(self, shape, impl):
        torch = c.require_torch()
        B = c.gaussian_torch_cpu(shape)
        self.fn = _fn(torch, impl, B)
        c.warm_once((shape, impl), _fn(torch, impl, c.gaussian_torch_cpu(c.small_like(shape))))

    def time_polar(self, shape, impl):
        self.fn()
