"""The speed targets of polar, clip and power, side by side in one run.

One benchmark, NumPy float32 on the CPU, every map a parameter, so that the
ratios power / polar and clip / polar come from one run at each shape:

* ``polar``: ``spectral_ops.polar(B)`` (``auto``), the yardstick;
* ``power_1/4`` ... ``power_3/4``: ``spectral_ops.power(B, p)`` (``auto``);
* ``clip``: ``spectral_ops.clip(B, tau)`` (``auto``) with ``tau`` the median
  singular value of each matrix;
* ``polar_iter``, ``power_iter_1/2``, ``clip_iter``: the matrix-product routes
  (``"polar_express"``, ``"newton"``, ``"polar"``), what an accelerator runs;
* ``clip_svd``, ``power_svd_1/2``: the SVD routes, against which ``auto``'s CPU
  route for clip and power (``"eigh"``, the float64 Gram eigendecomposition)
  is measured.

Shapes: 256 x 1024, 1024 x 4096, 512 x 512, 2048 x 2048 and a stack of
16 x 256 x 256, Gaussian inputs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import spectral_ops

from . import _common as c

SHAPES = ["256x1024", "1024x4096", "512x512", "2048x2048", "16x256x256"]
POWERS = ["1/4", "1/3", "1/2", "2/3", "3/4"]
IMPLS = (["polar"] + [f"power_{p}" for p in POWERS] + ["clip", "polar_iter", "power_iter_1/2",
                                                        "clip_iter", "clip_svd", "power_svd_1/2"])

_TAU: dict = {}


def _tau(shape):
    """The median singular value of each matrix: a float, or one per matrix of a stack."""
    if shape not in _TAU:
        s = np.linalg.svd(c.gaussian_numpy(shape).astype(np.float64), compute_uv=False)
        t = np.median(s, axis=-1)
        _TAU[shape] = float(t) if t.ndim == 0 else t.astype(np.float32)
    return _TAU[shape]


def _fn(impl, B, tau):
    if impl == "polar":
        return lambda: spectral_ops.polar(B)
    if impl == "polar_iter":
        return lambda: spectral_ops.polar(B, method="polar_express")
    if impl == "clip":
        return lambda: spectral_ops.clip(B, tau)
    if impl == "clip_iter":
        return lambda: spectral_ops.clip(B, tau, method="polar")
    if impl == "clip_svd":
        return lambda: spectral_ops.clip(B, tau, method="svd")
    p = Fraction(impl.rsplit("_", 1)[1])
    method = {"power_iter": "newton", "power_svd": "svd"}.get(impl.rsplit("_", 1)[0], "auto")
    return lambda: spectral_ops.power(B, p, method=method)


class TimeTargets:
    """Seconds per call, NumPy float32."""

    params = (SHAPES, IMPLS)
    param_names = ["shape", "impl"]
    number = 1
    rounds = 1
    repeat = (1, 3, 4.0)
    warmup_time = 0.0
    timeout = 900.0

    def setup(self, shape, impl):
        B = c.gaussian_numpy(shape)
        self.fn = _fn(impl, B, _tau(shape))
        small = c.small_like(shape)
        c.warm_once((shape, impl), _fn(impl, c.gaussian_numpy(small), 1.0))
        if not c.is_large(shape):
            c.warm_once((shape, impl, "full"), self.fn)

    def time_map(self, shape, impl):
        self.fn()
