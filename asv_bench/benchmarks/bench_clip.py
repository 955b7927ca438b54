"""clip(B, tau) against the SVD route and against polar(B) on the same input.

One benchmark per backend; every implementation is a parameter, so the ratios
clip / SVD-clip and clip / polar come from one run:

* ``clip_auto``, ``clip_polar``, ``clip_newton``: spectral_ops.clip's methods;
* ``svd_clip``: ``U min(s, tau) V^T`` written directly with the backend's SVD;
* ``polar``: ``spectral_ops.polar(B, method="polar_express")`` (the matrix route
  of polar), the yardstick of the issue's target "clip costs at most 2.5x polar".

Inputs: Gaussian float32 matrices, ``tau = sqrt(max(m, n))`` (inside the
spectrum ``[sqrt(n) - sqrt(m), sqrt(n) + sqrt(m)]``, so both branches of the
clip are exercised). The CUDA benchmark skips without a GPU.
"""

from __future__ import annotations

import math

import numpy as np

import spectral_ops

from . import _common as c

CPU_SHAPES = ["256x1024", "512x512", "1024x4096"]
GPU_SHAPES = ["4096x4096", "4096x16384"]
IMPLS = ["gemm_floor", "clip_auto", "clip_polar", "clip_newton", "svd_clip", "polar"]
#: on CPUs also the float64 Gram eigendecomposition (auto's CPU route for float32)
CPU_IMPLS = IMPLS + ["clip_eigh"]


def _tau(shape):
    return math.sqrt(max(c.parse_shape(shape)))



def _wide(B):
    """float32 for 16-bit torch inputs (clip and power compute in float32), else None."""
    if isinstance(B, np.ndarray):
        return None
    import torch

    return torch.float32 if B.dtype in (torch.bfloat16, torch.float16) else None

def _fn(xp_name, impl, B, tau, sync=lambda: None):
    if impl == "svd_clip":
        if xp_name == "numpy":
            def run():
                u, s, vh = np.linalg.svd(B, full_matrices=False)
                return (u * np.minimum(s, tau)) @ vh
        else:
            import torch

            def run():
                u, s, vh = torch.linalg.svd(B, full_matrices=False)
                return (u * s.clamp(max=tau)) @ vh
        return c.synced(run, sync)
    if impl == "polar":
        return c.synced(lambda: spectral_ops.polar(B, method="polar_express"), sync)
    if impl == "gemm_floor":  # the products of the "polar" route, in its compute dtype
        plan = spectral_ops.clip_plan(B, tau, method="polar")
        return c.synced(c.gemm_floor_fn(B, plan.matmuls, plan.flops, _wide(B)), sync)
    method = impl.removeprefix("clip_")
    return c.synced(lambda: spectral_ops.clip(B, tau, method=method), sync)


class TimeClipCPU:
    """Seconds per call, float32, NumPy and torch on the CPU."""

    params = (["numpy", "torch"], CPU_SHAPES, CPU_IMPLS)
    param_names = ["backend", "shape", "impl"]
    number = 1
    rounds = 1
    repeat = (1, 5, 4.0)
    warmup_time = 0.0
    timeout = 900.0

    def setup(self, backend, shape, impl):
        B = c.gaussian_numpy(shape) if backend == "numpy" else c.gaussian_torch_cpu(shape)
        tau = _tau(shape)
        self.fn = _fn(backend, impl, B, tau)
        small = c.gaussian_numpy(c.small_like(shape))
        if backend == "torch":
            small = c.gaussian_torch_cpu(c.small_like(shape))
        # fills the coefficient caches and starts the thread pools, outside the timing
        c.warm_once((backend, shape, impl), _fn(backend, impl, small, _tau(c.small_like(shape))))
        if not c.is_large(shape):
            c.warm_once((backend, shape, impl, "full"), self.fn)

    def time_clip(self, backend, shape, impl):
        self.fn()


class TimeClipCUDA:
    """Seconds per call on a CUDA device (torch), float32 (TF32 off) and bfloat16."""

    params = (GPU_SHAPES, ["float32", "bfloat16"], IMPLS)
    param_names = ["shape", "dtype", "impl"]
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0
    timeout = 900.0

    def setup(self, shape, dtype, impl):
        torch = c.require_torch_cuda()
        if impl == "svd_clip" and dtype != "float32":
            raise NotImplementedError("no 16-bit SVD: the SVD route is timed in float32")
        gen = torch.Generator(device="cuda").manual_seed(0)
        B = torch.randn(c.parse_shape(shape), generator=gen, device="cuda").to(getattr(torch, dtype))
        self.fn = _fn("torch", impl, B, _tau(shape), torch.cuda.synchronize)
        self.fn()  # warm-up: CUDA context, handles, kernel selection, coefficient caches
        torch.cuda.synchronize()

    def time_clip(self, shape, dtype, impl):
        self.fn()


class TrackClipError:
    """Relative Frobenius error vs float64 SVD (256 x 1024 float32, NumPy), per method."""

    params = (["polar", "newton", "svd", "eigh"], ["gaussian", "far_above", "gradient"])
    param_names = ["method", "input"]
    unit = "relative error"
    timeout = 300.0

    def setup(self, method, kind):
        from spectral_ops.testing import make_matrix

        B = make_matrix("gaussian" if kind != "gradient" else "gradient", (256, 1024), seed=0)
        s = np.linalg.svd(B, compute_uv=False)
        self.tau = {"gaussian": float(np.median(s)), "far_above": float(s[0] / 1e3),
                    "gradient": float(s[0] / 10)}[kind]
        self.B = B.astype(np.float32)
        u, s, vh = np.linalg.svd(self.B.astype(np.float64), full_matrices=False)
        self.exact = (u * np.minimum(s, self.tau)) @ vh

    def track_rel_error(self, method, kind):
        y = np.asarray(spectral_ops.clip(self.B, self.tau, method=method), dtype=np.float64)
        return float(np.linalg.norm(y - self.exact) / np.linalg.norm(self.exact))
