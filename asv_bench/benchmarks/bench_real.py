"""Accuracy of polar, clip and power on real gradients and momenta (float32 NumPy).

Inputs: :func:`spectral_ops.datasets.real_matrices` of kinds ``grad``,
``exp_avg`` and ``momentum`` (a pretrained transformer's gradients, Adam first
moment and Muon momentum on real text; nearly low-rank, conditions 1e8 to
1e11), each against the float64 SVD of its float32 values, with the default
method (``auto``):

* ``polar``: ``polar(B)``; error on the part above the floor 1e-3 s_max
  (``spectral_report``'s ``rel_error``), top singular value (1 is exact);
* ``clip``: ``clip(B, tau)`` with ``tau`` the median of the singular values
  above 1e-6 s_max (s_max / tau from 7e2 to 5e3 on this set); relative
  Frobenius error of the whole matrix, top singular value over ``tau`` (at
  most 1 is exact);
* ``power``: ``power(B, 1/2)``; error above the floor 1e-3 s_max, top
  singular value over ``s_max^(1/2)``.

Everything is computed once in ``setup_cache``; the track_ methods look it up.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import spectral_ops
from spectral_ops.datasets import real_matrices

MAPS = ["polar", "clip", "power"]
KINDS = ("grad", "exp_avg", "momentum")
FLOOR = 1e-3        # polar and power: error measured above FLOOR * s_max
SIGNIFICANT = 1e-6  # clip: tau is the median singular value above SIGNIFICANT * s_max
P = Fraction(1, 2)


def _names():
    try:
        return sorted(real_matrices(KINDS))
    except FileNotFoundError:  # pragma: no cover - an installation without the data
        return []


NAMES = _names()


def _top(y) -> float:
    return float(np.linalg.svd(np.asarray(y, dtype=np.float64), compute_uv=False).max())


def _reports():
    out = {}
    for name, b in real_matrices(KINDS).items():
        s = np.linalg.svd(b.astype(np.float64), compute_uv=False)
        smax = float(s[0])
        # polar
        y = spectral_ops.polar(b)
        r = spectral_ops.spectral_report(y, b, floor=FLOOR)
        out[name, "polar"] = {"rel_error": r.rel_error,
                              "top": _top(y) if r.finite else float("inf")}
        # clip at the median significant singular value
        tau = float(np.median(s[s > SIGNIFICANT * smax]))
        y = spectral_ops.clip(b, tau)
        r = spectral_ops.spectral_report(y, b, lambda x, t=tau: np.minimum(x, t), floor=0.0)
        out[name, "clip"] = {"rel_error": r.rel_error,
                             "top": _top(y) / tau if r.finite else float("inf")}
        # power 1/2
        y = spectral_ops.power(b, P)
        r = spectral_ops.spectral_report(y, b, lambda x: x ** float(P), floor=FLOOR)
        out[name, "power"] = {"rel_error": r.rel_error,
                              "top": _top(y) / smax ** float(P) if r.finite else float("inf")}
    return out


class TrackRealAccuracyFloat32:
    """polar, clip (tau = median significant singular value) and power (p = 1/2) on
    the real gradients and momenta, float32 NumPy, method "auto"."""

    params = (NAMES, MAPS)
    param_names = ["matrix", "map"]
    timeout = 600.0

    def setup_cache(self):
        return _reports()

    def setup(self, reports, matrix, fn):
        if (matrix, fn) not in reports:
            raise NotImplementedError(f"no result for {matrix} / {fn}")
        self.r = reports[matrix, fn]

    def track_rel_error(self, reports, matrix, fn):
        return self.r["rel_error"]

    track_rel_error.unit = "relative Frobenius error"

    def track_top(self, reports, matrix, fn):
        return self.r["top"]

    track_top.unit = "top singular value / (1, tau or s_max^p)"
