"""power(B, p) against the SVD route and against polar(B) on the same input.

Implementations are parameters of one benchmark, so power / SVD-power and
power / polar come from one run (the issue's target: power costs at most 3x
polar). ``svd_power``: ``U s^p V^T`` written directly with the backend's SVD;
``polar``: ``spectral_ops.polar(B, method="polar_express")``.
Inputs: Gaussian float32 matrices. The CUDA benchmark skips without a GPU.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import spectral_ops

from . import _common as c

CPU_SHAPES = ["256x1024", "512x512", "1024x4096"]
GPU_SHAPES = ["4096x4096", "4096x16384"]
PS = ["1/2", "1/4", "-1/4"]
CPU_PS = ["1/2", "-1/4"]  # the CPU run is long; 1/4 costs like 1/2 (one more squaring)
IMPLS = ["gemm_floor", "power_auto", "power_newton", "svd_power", "polar"]
#: on CPUs also the float64 Gram eigendecomposition (auto's CPU route for float32)
CPU_IMPLS = IMPLS + ["power_eigh"]



def _wide(B):
    """float32 for 16-bit torch inputs (clip and power compute in float32), else None."""
    if isinstance(B, np.ndarray):
        return None
    import torch

    return torch.float32 if B.dtype in (torch.bfloat16, torch.float16) else None

def _fn(impl, B, p, sync=lambda: None):
    if impl == "svd_power":
        def run():
            if isinstance(B, np.ndarray):
                u, s, vh = np.linalg.svd(B, full_matrices=False)
                fro = np.sqrt((s * s).sum(-1, keepdims=True))
            else:
                import torch
                u, s, vh = torch.linalg.svd(B.float(), full_matrices=False)
                fro = (s * s).sum(-1, keepdim=True).sqrt()
            f = s ** float(p) if p > 0 else s * (s * s + (1e-3 * fro) ** 2) ** ((float(p) - 1) / 2)
            return (u * f[..., None, :]) @ vh
        return c.synced(run, sync)
    if impl == "polar":
        return c.synced(lambda: spectral_ops.polar(B, method="polar_express"), sync)
    if impl == "gemm_floor":  # the products of the "newton" route, in its compute dtype
        plan = spectral_ops.power_plan(B, p, method="newton")
        return c.synced(c.gemm_floor_fn(B, plan.matmuls, plan.flops, _wide(B)), sync)
    method = impl.removeprefix("power_")
    return c.synced(lambda: spectral_ops.power(B, p, method=method), sync)


class TimePowerCPU:
    """Seconds per call, float32, NumPy and torch on the CPU."""

    params = (["numpy", "torch"], CPU_SHAPES, CPU_PS, CPU_IMPLS)
    param_names = ["backend", "shape", "p", "impl"]
    number = 1
    rounds = 1
    repeat = (1, 5, 4.0)
    warmup_time = 0.0
    timeout = 900.0

    def setup(self, backend, shape, p, impl):
        if impl == "polar" and p != PS[0]:
            raise NotImplementedError("polar does not depend on p: timed once, with p = 1/2")
        get = c.gaussian_numpy if backend == "numpy" else c.gaussian_torch_cpu
        q = Fraction(p)
        self.fn = _fn(impl, get(shape), q)
        c.warm_once((backend, shape, p, impl), _fn(impl, get(c.small_like(shape)), q))
        if not c.is_large(shape):
            c.warm_once((backend, shape, p, impl, "full"), self.fn)

    def time_power(self, backend, shape, p, impl):
        self.fn()


class TimePowerCUDA:
    """Seconds per call on a CUDA device (torch), float32 (TF32 off) and bfloat16."""

    params = (GPU_SHAPES, ["float32", "bfloat16"], PS, IMPLS)
    param_names = ["shape", "dtype", "p", "impl"]
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0
    timeout = 900.0

    def setup(self, shape, dtype, p, impl):
        torch = c.require_torch_cuda()
        if impl == "polar" and p != PS[0]:
            raise NotImplementedError("polar does not depend on p: timed once, with p = 1/2")
        gen = torch.Generator(device="cuda").manual_seed(0)
        B = torch.randn(c.parse_shape(shape), generator=gen, device="cuda").to(getattr(torch, dtype))
        self.fn = _fn(impl, B, Fraction(p), torch.cuda.synchronize)
        self.fn()
        torch.cuda.synchronize()

    def time_power(self, shape, dtype, p, impl):
        self.fn()


class TrackPowerError:
    """Relative Frobenius error vs float64 SVD, 256 x 1024 float32 NumPy, s_min/s_max = 1e-2."""

    params = (["newton", "svd", "eigh"], PS)
    param_names = ["method", "p"]
    unit = "relative error"
    timeout = 300.0

    def setup(self, method, p):
        from spectral_ops.testing import from_spectrum

        b = from_spectrum(np.geomspace(1, 1e-2, 256), (256, 1024), seed=0)
        self.B = b.astype(np.float32)
        u, s, vh = np.linalg.svd(self.B.astype(np.float64), full_matrices=False)
        q = float(Fraction(p))
        fro = np.sqrt((s * s).sum())
        f = s ** q if q > 0 else s * (s * s + (1e-3 * fro) ** 2) ** ((q - 1) / 2)
        self.exact = (u * f) @ vh

    def track_rel_error(self, method, p):
        y = np.asarray(spectral_ops.power(self.B, Fraction(p), method=method), dtype=np.float64)
        return float(np.linalg.norm(y - self.exact) / np.linalg.norm(self.exact))
