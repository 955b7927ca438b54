"""Accuracy of polar() in float32, tracked with spectral_ops.spectral_report.

Inputs: ``make_matrix("ill", ...)`` (singular values log-spaced over 1..1e-4)
and ``make_matrix("gradient", ...)`` (power-law head, tail near 1e-8), 256 x 1024
float32, on NumPy and torch CPU. Reported above the default floor 1e-3:

* ``band_low``: smallest output singular value on the part of the input above
  the floor (1 is exact);
* ``band_error``: ``max |sigma - 1|`` over that band (both ends in one number);
* ``rel_error``: relative Frobenius error there against the exact polar factor;
* ``tail_max``: largest output singular value below the floor (<= 1 wanted).

Everything is computed once in ``setup_cache``; the track_ methods look it up.
"""

from __future__ import annotations

import numpy as np

import spectral_ops
from spectral_ops.testing import make_matrix

from . import _common as c

KINDS = ["ill", "gradient"]
METHODS = ["polar_express", "gram", "jordan", "auto"]
BACKENDS = ["numpy", "torch"]
SHAPE = (256, 1024)


def _reports():
    out = {}
    for kind in KINDS:
        B = make_matrix(kind, SHAPE, dtype=np.float32, seed=0)
        for backend in BACKENDS:
            if backend == "torch":
                try:
                    torch = c.require_torch()
                except NotImplementedError:
                    continue
                X = torch.from_numpy(B.copy())
            else:
                X = B
            for method in METHODS:
                Y = spectral_ops.polar(X, method=method)
                r = spectral_ops.spectral_report(Y, B)
                out[kind, method, backend] = {
                    "band_low": r.band[0],
                    "band_error": max(abs(r.band[0] - 1.0), abs(r.band[1] - 1.0)),
                    "rel_error": r.rel_error,
                    "tail_max": r.tail_max,
                }
    return out


class TrackPolarAccuracyFloat32:
    """Accuracy above the floor 1e-3 (256 x 1024 float32)."""

    params = (KINDS, METHODS, BACKENDS)
    param_names = ["kind", "method", "backend"]
    timeout = 600.0

    def setup_cache(self):
        return _reports()

    def setup(self, reports, kind, method, backend):
        if (kind, method, backend) not in reports:
            raise NotImplementedError(f"backend {backend} is not available")
        self.r = reports[kind, method, backend]

    def track_band_low(self, reports, kind, method, backend):
        return self.r["band_low"]

    track_band_low.unit = "singular value"

    def track_band_error(self, reports, kind, method, backend):
        return self.r["band_error"]

    track_band_error.unit = "max |sigma - 1|"

    def track_rel_error(self, reports, kind, method, backend):
        return self.r["rel_error"]

    track_rel_error.unit = "relative Frobenius error"

    def track_tail_max(self, reports, kind, method, backend):
        return self.r["tail_max"]

    track_tail_max.unit = "singular value"
