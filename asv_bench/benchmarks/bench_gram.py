"""method="gram" (Gram Newton-Schulz) against method="polar_express" at aspect
ratio 4, where Gram's m x m products should pay off; float32, NumPy and torch CPU.

Both methods of one (backend, shape) are parameters of one benchmark, so one
``asv run`` measures them side by side and their ratio comes from one run.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

BACKENDS = ["numpy", "torch"]
SHAPES = ["512x2048", "1024x4096"]
METHODS = ["polar_express", "gram"]


def _input(backend, shape):
    if backend == "torch":
        c.require_torch()
        return c.gaussian_torch_cpu(shape)
    return c.gaussian_numpy(shape)


class TimeGramVsPolarExpress:
    """Seconds per call; both methods run the same (default) number of steps."""

    params = (BACKENDS, SHAPES, METHODS)
    param_names = ["backend", "shape", "method"]
    number = 1
    rounds = 2
    repeat = (1, 10, 6.0)
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, backend, shape, method):
        B = _input(backend, shape)
        spectral_ops.polar_plan(B, method=method)  # fills the coefficient cache
        self.fn = lambda: spectral_ops.polar(B, method=method)
        if c.is_large(shape):
            small = _input(backend, c.small_like(shape))
            c.warm_once((backend, shape, method), lambda: spectral_ops.polar(small, method=method))
        else:
            c.warm_once((backend, shape, method), self.fn)

    def time_polar(self, backend, shape, method):
        self.fn()


class TrackGramVsPolarExpressPlan:
    """What each method runs, from polar_plan (no matrix products are timed here)."""

    params = (BACKENDS, SHAPES, METHODS)
    param_names = ["backend", "shape", "method"]

    def setup(self, backend, shape, method):
        self.plan = spectral_ops.polar_plan(_input(backend, shape), method=method)

    def track_steps(self, backend, shape, method):
        """Iterations (both methods follow the same Polar Express schedule)."""
        return self.plan.steps

    track_steps.unit = "steps"

    def track_gflop(self, backend, shape, method):
        """Matrix-product flops per call (2 m n k per product)."""
        return self.plan.flops / 1e9

    track_gflop.unit = "GFLOP"
