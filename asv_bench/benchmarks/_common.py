"""Helpers shared by the benchmark modules (no benchmarks here).

* ``require_*`` raise ``NotImplementedError`` (asv: "skipped") when a backend
  or a CUDA device is missing, so the suite runs on a CPU-only machine.
* Inputs are cached per process: asv re-runs ``setup`` before every sample,
  which must then cost nothing.
* ``warm_once`` runs a warm-up call once per process, outside the timed region
  (asv's own warm-up is switched off with ``warmup_time = 0`` where one call
  takes many seconds).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

#: Above this many elements a CPU warm-up runs on a small matrix (it initialises
#: the BLAS/LAPACK thread pools and code paths) instead of a full-size call,
#: which would cost as much as a sample (tens of seconds for an SVD).
FULL_WARMUP_MAX_ELEMENTS = 2**20

#: Machine epsilon of float32, as spectral_ops' backbone uses it.
EPS32 = 2.0**-23

_WARMED: set = set()


def parse_shape(text: str) -> tuple[int, ...]:
    """``"512x2048"`` -> ``(512, 2048)``; ``"16x256x256"`` -> a stack of 16
    (params are strings so tables read well)."""
    return tuple(int(v) for v in text.split("x"))


# --- backends -----------------------------------------------------------------

def require_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise NotImplementedError(f"torch is not installed: {exc}") from exc
    return torch


#: Device nodes of GPU drivers (NVIDIA, AMD ROCm, WSL). Where none exists no
#: GPU can be reached, and the GPU benchmarks skip without importing torch or
#: CuPy (about 2 s per benchmark process on a 2-core machine).
_GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _no_gpu_device_node() -> bool:
    return not any(os.path.exists(p) for p in _GPU_DEVICE_NODES)


def require_torch_cuda():
    if _no_gpu_device_node():
        raise NotImplementedError("no GPU device node here (" + ", ".join(_GPU_DEVICE_NODES) + ")")
    torch = require_torch()
    if not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA device here")
    pin_fp32_matmul(torch)
    return torch


def pin_fp32_matmul(torch) -> None:
    """Full float32 GEMMs on CUDA (no TF32), so float32 timings mean float32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def require_cupy():
    # CuPy uses TF32 for float32 GEMMs only when CUPY_TF32=1; pin it off.
    os.environ["CUPY_TF32"] = "0"
    if _no_gpu_device_node():
        raise NotImplementedError("no GPU device node here (" + ", ".join(_GPU_DEVICE_NODES) + ")")
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover
        raise NotImplementedError(f"cupy is not installed: {exc}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver / no device
        raise NotImplementedError(f"cupy finds no CUDA device: {exc}") from exc
    if count < 1:
        raise NotImplementedError("cupy finds no CUDA device")
    return cupy


def require_scipy():
    try:
        import scipy.linalg
    except ImportError as exc:  # pragma: no cover
        raise NotImplementedError(f"scipy is not installed: {exc}") from exc
    return scipy.linalg


# --- inputs -------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def gaussian_numpy(shape: str, seed: int = 0) -> np.ndarray:
    """A float32 Gaussian matrix (read-only, cached for the process).

    Timings do not depend on the spectrum (step counts are fixed by ``floor``
    and ``tol``; LAPACK's SVD time barely varies), so the cheap Gaussian is used.
    """
    from spectral_ops.testing import make_matrix

    out = make_matrix("gaussian", parse_shape(shape), dtype=np.float32, seed=seed)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=None)
def gaussian_torch_cpu(shape: str, seed: int = 0):
    torch = require_torch()
    return torch.from_numpy(np.array(gaussian_numpy(shape, seed)))  # own, writable copy


def small_like(shape: str) -> str:
    """A small matrix of the same orientation, for warm-up calls."""
    m, n = parse_shape(shape)[-2:]
    return "128x512" if m <= n else "512x128"


def is_large(shape: str) -> bool:
    return math.prod(parse_shape(shape)) > FULL_WARMUP_MAX_ELEMENTS


def synced(fn, sync):
    """``fn`` followed by ``sync()`` (a device synchronisation, or nothing on CPUs)."""
    def run():
        out = fn()
        sync()
        return out
    return run


def warm_once(key, fn) -> None:
    """Call ``fn()`` once per process for ``key`` (warm-up outside the timed region)."""
    if key in _WARMED:
        return
    fn()
    _WARMED.add(key)


# --- reference implementations ------------------------------------------------

def numpy_svd_polar(B):
    u, _, vh = np.linalg.svd(B, full_matrices=False)
    return u @ vh


def torch_svd_polar(torch, B):
    """U @ Vh from torch.linalg.svd (16-bit inputs decomposed in float32)."""
    x = B if B.dtype in (torch.float32, torch.float64) else B.float()
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return (u @ vh).to(B.dtype)


def cupy_svd_polar(cupy, B):
    x = B if B.dtype in (cupy.float32, cupy.float64) else B.astype(cupy.float32)
    u, _, vh = cupy.linalg.svd(x, full_matrices=False)
    return (u @ vh).astype(B.dtype)


def gemm_floor_fn(B, matmuls: int, flops: float, dtype=None):
    """The bare products of a plan on operands shaped like its iterates (torch or NumPy).

    A plan counts ``matmuls`` products and ``flops`` flops; with ``2 m^2 n`` flops
    for an ``m x m x n`` product and ``2 m^3`` for an ``m x m x m`` one (``m <= n``)
    that fixes how many of each it makes. ``dtype`` (torch) runs the products in
    another dtype, e.g. float32 for maps whose 16-bit inputs are computed in float32.
    """
    x = B if dtype is None else B.to(dtype)
    if x.shape[-2] > x.shape[-1]:
        x = x.swapaxes(-1, -2)
    m, n = x.shape[-2:]
    mmn, mmm = 2.0 * m * m * n, 2.0 * m**3
    if m == n:
        k_mmn, k_mmm = matmuls, 0
    else:
        k_mmn = round((flops - matmuls * mmm) / (mmn - mmm))
        k_mmm = matmuls - k_mmn
    a = x @ x.swapaxes(-1, -2)

    def run():
        out = None
        for _ in range(k_mmn):
            out = a @ x  # (m x m)(m x n)
        for _ in range(k_mmm):
            out = a @ a
        return out
    return run
