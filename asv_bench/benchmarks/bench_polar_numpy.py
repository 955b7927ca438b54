"""polar() on NumPy float32: the default (method="auto") and "polar_express"
against the SVD route (scipy.linalg.polar and spectral_ops' own method="svd").

All implementations of one shape are parameters of one benchmark, so one
``asv run`` measures them side by side and their ratios come from one run.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

SHAPES = ["512x512", "256x1024", "1024x4096", "32x32", "8x48x48", "256x256", "16x64x64",
          "16x256x1024"]
# "eigh": the float64 Gram eigendecomposition, which auto weighs against the
# iteration ("polar_express" or "gram") by flops on CPUs (routing.eigh_pays)
IMPLS = ["auto", "polar_express", "svd", "scipy_polar", "eigh", "gram"]


def _fn(impl, B):
    if impl == "scipy_polar":
        linalg = c.require_scipy()
        # scipy's default side="right" also forms P = V S V^T (n x n); that is
        # what a caller of scipy.linalg.polar gets, so it is timed as such.
        return lambda: linalg.polar(B)[0]
    return lambda: spectral_ops.polar(B, method=impl)


class TimePolarNumpy:
    """Seconds per call, float32, NumPy (OpenBLAS/LAPACK as NumPy and SciPy ship them)."""

    params = (SHAPES, IMPLS)
    param_names = ["shape", "impl"]
    number = 1
    rounds = 2
    repeat = (1, 10, 6.0)  # min samples, max samples, seconds per round
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, shape, impl):
        B = c.gaussian_numpy(shape)
        if impl == "scipy_polar" and B.ndim > 2:
            raise NotImplementedError("scipy.linalg.polar takes one matrix, not a stack")
        self.fn = _fn(impl, B)
        if impl in ("auto", "polar_express", "svd", "gram"):
            spectral_ops.polar_plan(B, method=impl)  # fills the coefficient cache
        if c.is_large(shape):
            small = c.gaussian_numpy(c.small_like(shape))
            c.warm_once((shape, impl), _fn(impl, small))
        else:
            c.warm_once((shape, impl), self.fn)

    def time_polar(self, shape, impl):
        self.fn()
