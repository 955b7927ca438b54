"""polar() with torch on a CUDA device: time, peak memory and accuracy.

Methods "polar_express", "gram", "jordan", the default "auto", and the SVD route
("svd": spectral_ops' exact reference; "torch_svd": U @ Vh from torch.linalg.svd),
in float32, bfloat16 and float16 at 4096 x 4096 and 4096 x 16384.

* float32 means float32: TF32 GEMMs are switched off
  (``torch.backends.cuda.matmul.allow_tf32 = False``).
* Timed calls end with ``torch.cuda.synchronize()``; the warm-up call (CUDA
  context, cuBLAS/cuSOLVER handles, kernel selection, allocator pools) runs in
  ``setup``, once per process, outside the timed region.
* bfloat16 through the SVD route is decomposed in float32 (no library has a
  16-bit SVD), so "torch_svd" is timed in float32 only.

Skipped (NotImplementedError in setup) where torch or a CUDA device is missing.
"""

from __future__ import annotations

import numpy as np

import spectral_ops

from . import _common as c

SHAPES = ["4096x4096", "4096x16384"]
DTYPES = ["float32", "bfloat16", "float16"]
METHODS = ["polar_express", "gram", "jordan", "auto", "svd", "torch_svd"]

#: The device the tensors live on (a module variable so a smoke test can point
#: the code at another device).
DEVICE = "cuda"


def _sync(torch):
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _require():
    return c.require_torch_cuda()


_INPUTS: dict = {}


def _input(torch, shape, dtype):
    """A Gaussian matrix made on the device (no host-to-device copy), cached."""
    key = (shape, dtype)
    if key not in _INPUTS:
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        x = torch.randn(c.parse_shape(shape), generator=gen, device=DEVICE, dtype=torch.float32)
        _INPUTS[key] = x.to(getattr(torch, dtype))
        _sync(torch)
    return _INPUTS[key]


def _fn(torch, method, B):
    if method == "torch_svd":
        return lambda: c.torch_svd_polar(torch, B)
    return lambda: spectral_ops.polar(B, method=method)


def _check(method, dtype):
    if method == "torch_svd" and dtype != "float32":
        raise NotImplementedError("torch_svd decomposes in float32: timed for float32 only")


class TimeTorchCUDAPolar:
    """Seconds per call, synchronised."""

    params = (SHAPES, DTYPES, METHODS)
    param_names = ["shape", "dtype", "method"]
    number = 1
    rounds = 2
    repeat = (2, 20, 4.0)  # GPU calls take milliseconds; the SVD route seconds
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, shape, dtype, method):
        torch = _require()
        _check(method, dtype)
        B = _input(torch, shape, dtype)
        run = _fn(torch, method, B)

        def timed():
            run()
            _sync(torch)

        self.fn = timed
        c.warm_once((shape, dtype, method), timed)
        _sync(torch)

    def time_polar(self, shape, dtype, method):
        self.fn()


class TrackTorchCUDAPeakMemory:
    """Peak GPU memory of one call (torch.cuda.max_memory_allocated), MiB.

    Measured on the second call of the process (the first, in setup, creates
    the library handles and persistent workspaces). ``peak_memory`` includes
    everything allocated before the call (the input among it);
    ``peak_workspace`` is the peak above that (temporaries and the output).
    """

    params = (SHAPES, DTYPES, METHODS)
    param_names = ["shape", "dtype", "method"]
    unit = "MiB"
    timeout = 600.0

    def setup(self, shape, dtype, method):
        torch = _require()
        _check(method, dtype)
        self.torch = torch
        self.fn = _fn(torch, method, _input(torch, shape, dtype))
        # steady state: handles and persistent workspaces exist before the measured call
        c.warm_once((shape, dtype, method), self.fn)
        _sync(torch)

    def _measure(self):
        torch = self.torch
        _sync(torch)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        y = self.fn()
        _sync(torch)
        peak = torch.cuda.max_memory_allocated()
        del y
        return before, peak

    def track_peak_memory(self, shape, dtype, method):
        before, peak = self._measure()
        return peak / 2**20

    def track_peak_workspace(self, shape, dtype, method):
        before, peak = self._measure()
        return (peak - before) / 2**20


# --- accuracy on the device (bfloat16 is where it matters) -------------------------

ACC_SHAPE = (512, 2048)
ACC_KINDS = ["ill", "gradient"]
ACC_METHODS = ["polar_express", "gram", "jordan", "auto"]


def _accuracy_reports():
    try:
        torch = _require()
    except NotImplementedError:
        return {}
    from spectral_ops.testing import make_matrix

    out = {}
    for kind in ACC_KINDS:
        B = make_matrix(kind, ACC_SHAPE, dtype=np.float32, seed=0)
        for dtype in DTYPES:
            X = torch.from_numpy(B).to(DEVICE).to(getattr(torch, dtype))
            # the report compares with the matrix actually passed in (rounded to dtype)
            for method in ACC_METHODS:
                r = spectral_ops.spectral_report(spectral_ops.polar(X, method=method), X)
                out[kind, dtype, method] = {
                    "band_error": max(abs(r.band[0] - 1.0), abs(r.band[1] - 1.0)),
                    "rel_error": r.rel_error,
                }
    return out


class TrackTorchCUDAAccuracy:
    """Accuracy above the floor 1e-3 on 512 x 2048 inputs (spectral_report)."""

    params = (ACC_KINDS, DTYPES, ACC_METHODS)
    param_names = ["kind", "dtype", "method"]
    timeout = 600.0

    def setup_cache(self):
        return _accuracy_reports()

    def setup(self, reports, kind, dtype, method):
        if (kind, dtype, method) not in reports:
            raise NotImplementedError("torch with a CUDA device is not available")
        self.r = reports[kind, dtype, method]

    def track_band_error(self, reports, kind, dtype, method):
        return self.r["band_error"]

    track_band_error.unit = "max |sigma - 1|"

    def track_rel_error(self, reports, kind, dtype, method):
        return self.r["rel_error"]

    track_rel_error.unit = "relative Frobenius error"
