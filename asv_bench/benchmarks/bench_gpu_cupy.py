"""polar() with CuPy arrays on a CUDA device: time and memory-pool high water.

Methods "polar_express", "gram", "jordan", the default "auto", and the SVD route
("svd": spectral_ops' exact reference; "cupy_svd": U @ Vh from cupy.linalg.svd),
in float32 and bfloat16 at 4096 x 4096 and 4096 x 16384.

* float32 means float32: CuPy uses TF32 only with ``CUPY_TF32=1``, which
  ``_common.require_cupy`` pins to ``0`` before importing CuPy.
* Timed calls end with a device synchronisation; the warm-up call runs in
  ``setup``, once per process, outside the timed region.
* bfloat16 runs only where CuPy and array-api-compat's CuPy namespace have a
  ``bfloat16`` dtype (skipped otherwise);
  the SVD route decomposes in float32, so "cupy_svd" is timed in float32 only.

``TimeCuPyFastPaths`` times Polar Express and Gram Newton-Schulz in float32
with the CuPy fast paths of ``spectral_ops._fastpaths`` off, with the fused
cuBLAS gemm, and with the gemm plus cuBLAS syrk for X X^T (the default).

Skipped (NotImplementedError in setup) where CuPy or a CUDA device is missing.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

SHAPES = ["4096x4096", "4096x16384"]
DTYPES = ["float32", "bfloat16"]
METHODS = ["polar_express", "gram", "jordan", "auto", "svd", "cupy_svd"]

_INPUTS: dict = {}


def _sync(cupy):
    cupy.cuda.Device().synchronize()


def _require(dtype, method):
    cupy = c.require_cupy()
    import array_api_compat.cupy as cxp  # the namespace spectral_ops sees for CuPy arrays

    if not (hasattr(cupy, dtype) and hasattr(cxp, dtype)):
        raise NotImplementedError(f"CuPy (through array-api-compat) has no {dtype} dtype here")
    if method == "cupy_svd" and dtype != "float32":
        raise NotImplementedError("cupy_svd decomposes in float32: timed for float32 only")
    return cupy


def _input(cupy, shape, dtype):
    key = (shape, dtype)
    if key not in _INPUTS:
        rng = cupy.random.default_rng(0)
        x = rng.standard_normal(c.parse_shape(shape), dtype=cupy.float32)
        _INPUTS[key] = x.astype(getattr(cupy, dtype))
        _sync(cupy)
    return _INPUTS[key]


def _fn(cupy, method, B):
    if method == "cupy_svd":
        return lambda: c.cupy_svd_polar(cupy, B)
    return lambda: spectral_ops.polar(B, method=method)


class TimeCuPyPolar:
    """Seconds per call, synchronised."""

    params = (SHAPES, DTYPES, METHODS)
    param_names = ["shape", "dtype", "method"]
    number = 1
    rounds = 2
    repeat = (2, 20, 4.0)  # GPU calls take milliseconds; the SVD route seconds
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, shape, dtype, method):
        cupy = _require(dtype, method)
        run = _fn(cupy, method, _input(cupy, shape, dtype))

        def timed():
            run()
            _sync(cupy)

        self.fn = timed
        c.warm_once((shape, dtype, method), timed)
        _sync(cupy)

    def time_polar(self, shape, dtype, method):
        self.fn()


class TrackCuPyMemoryPool:
    """High water of CuPy's default memory pool over one call, MiB.

    The pool keeps freed blocks and reuses them, so after ``free_all_blocks()``
    the bytes it holds once the call returns are the call's peak (rounded up to
    the pool's block sizes), including the input.
    """

    params = (SHAPES, DTYPES, METHODS)
    param_names = ["shape", "dtype", "method"]
    unit = "MiB"
    timeout = 600.0

    def setup(self, shape, dtype, method):
        cupy = _require(dtype, method)
        self.cupy = cupy
        self.fn = _fn(cupy, method, _input(cupy, shape, dtype))
        c.warm_once((shape, dtype, method), self.fn)  # handles, plans, kernels
        _sync(cupy)

    def track_pool_high_water(self, shape, dtype, method):
        cupy = self.cupy
        pool = cupy.get_default_memory_pool()
        _sync(cupy)
        pool.free_all_blocks()
        y = self.fn()
        _sync(cupy)
        held = pool.total_bytes()
        del y
        return held / 2**20


# --- the CuPy fast paths, on and off ------------------------------------------------

FAST_PATHS = {
    "generic": (False, False),  # every product through cupy.matmul, sums elementwise
    "fused_gemm": (True, False),  # cuBLAS gemm with beta for aX + (...)X
    "fused_gemm+syrk": (True, True),  # plus X X^T through cuBLAS syrk: the default
}


class TimeCuPyFastPaths:
    """Seconds per call of the matrix iterations with each CuPy fast path, float32.

    ``spectral_ops._fastpaths.SYMMETRIC_GRAM`` is on by default since this
    benchmark measured syrk at 0.94x of the fused-gemm path's time on an H100
    (both headline shapes; asv_bench/results/h100/).
    """

    params = (["1024x4096", "4096x4096", "4096x16384"], ["polar_express", "gram"],
              list(FAST_PATHS))
    param_names = ["shape", "method", "fast_paths"]
    number = 1
    rounds = 2
    repeat = (2, 20, 4.0)
    warmup_time = 0.0
    timeout = 600.0

    def setup(self, shape, method, fast_paths):
        import spectral_ops._fastpaths as fp

        cupy = _require("float32", method)
        fp.FUSED_GEMM, fp.SYMMETRIC_GRAM = FAST_PATHS[fast_paths]
        B = _input(cupy, shape, "float32")

        def timed():
            spectral_ops.polar(B, method=method)
            _sync(cupy)

        self.fn = timed
        c.warm_once((shape, method, fast_paths), timed)

    def time_polar(self, shape, method, fast_paths):
        self.fn()
