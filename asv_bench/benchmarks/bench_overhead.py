"""Overhead of the array-API layer on torch: spectral_ops.polar(method="polar_express",
steps=S) against the same iteration written directly in torch here.

The direct version uses the same coefficients
(``polar_express_coefficients(S, polar_plan(...).lower)``), the same Frobenius
normalisation and the same Gram-based rescaling:

    X <- X / ||X||_F;  A = X X^T;  A2 = A @ A;  k = ||A2||_F^(1/4) (1 + eps)
    X <- X / k;  A <- A / k^2;  A2 <- A2 / k^4
    per step t:  (t > 0: A = X X^T, A2 = A @ A);  X <- a X + (b A + c A2) X

Target: spectral_ops within 10% of ``torch_direct``. ``torch_fused`` is the same
arithmetic with fused ``addmm`` calls (b A + c A@A and a X + P X in one call
each), for scale: what a hand-tuned torch implementation would save.
"""

from __future__ import annotations

import spectral_ops

from . import _common as c

SHAPES = ["128x512", "256x1024", "512x2048", "2048x512"]
IMPLS = ["spectral_ops", "torch_direct", "torch_fused"]
STEPS = 5


def coefficients(torch, B, steps=STEPS):
    """The coefficients spectral_ops uses for this input and step count."""
    plan = spectral_ops.polar_plan(B, method="polar_express", steps=steps)
    return spectral_ops.polar_express_coefficients(plan.steps, plan.lower)


def direct_polar_express(torch, B, coefs, eps=c.EPS32):
    """Polar Express with the tight start, in plain torch (float32/float64)."""
    transposed = B.shape[-2] > B.shape[-1]
    X = B.mT if transposed else B
    X = X / torch.linalg.matrix_norm(X, keepdim=True)
    A = X @ X.mT
    A2 = A @ A
    k = torch.linalg.matrix_norm(A2, keepdim=True) ** 0.25 * (1.0 + eps)
    X = X / k
    A = A / k**2
    A2 = A2 / k**4
    for t, (a, b, cc) in enumerate(coefs):
        if t > 0:
            A = X @ X.mT
            A2 = A @ A
        X = a * X + (b * A + cc * A2) @ X
    return X.mT if transposed else X


def fused_polar_express(torch, B, coefs, eps=c.EPS32):
    """The same iteration with addmm: one call for b A + c A@A, one for a X + P X (2-D)."""
    transposed = B.shape[-2] > B.shape[-1]
    X = B.mT if transposed else B
    X = X / torch.linalg.matrix_norm(X)
    A = X @ X.mT
    A2 = A @ A
    k = torch.linalg.matrix_norm(A2) ** 0.25 * (1.0 + eps)
    X = X / k
    A = A / k**2
    A2 = A2 / k**4
    for t, (a, b, cc) in enumerate(coefs):
        if t == 0:
            P = torch.add(A2, A, alpha=b / cc).mul_(cc)  # b A + c A2
        else:
            A = X @ X.mT
            P = torch.addmm(A, A, A, beta=b, alpha=cc)  # b A + c A @ A
        X = torch.addmm(X, P, X, beta=a)  # a X + P @ X
    return X.mT if transposed else X


def _fn(torch, impl, B, coefs):
    if impl == "spectral_ops":
        return lambda: spectral_ops.polar(B, method="polar_express", steps=STEPS)
    if impl == "torch_direct":
        return lambda: direct_polar_express(torch, B, coefs)
    return lambda: fused_polar_express(torch, B, coefs)


class TimeArrayApiOverheadTorch:
    """Seconds per call, float32, torch CPU, S = 5 Polar Express steps."""

    params = (SHAPES, IMPLS)
    param_names = ["shape", "impl"]
    number = 1
    rounds = 2
    repeat = (5, 20, 6.0)
    warmup_time = 0.0  # warm-up is done in setup, once per process
    timeout = 600.0

    def setup(self, shape, impl):
        torch = c.require_torch()
        B = c.gaussian_torch_cpu(shape)
        coefs = coefficients(torch, B)
        self.fn = _fn(torch, impl, B, coefs)
        c.warm_once((shape, impl), self.fn)

    def time_polar_express(self, shape, impl):
        self.fn()


class TrackArrayApiOverheadTorchAgreement:
    """The direct torch versions compute what spectral_ops computes (to round-off)."""

    params = (SHAPES, IMPLS[1:])
    param_names = ["shape", "impl"]
    unit = "max |Y - Y_spectral_ops|"

    def setup(self, shape, impl):
        self.torch = c.require_torch()

    def track_max_abs_difference(self, shape, impl):
        torch = self.torch
        B = c.gaussian_torch_cpu(shape)
        ref = spectral_ops.polar(B, method="polar_express", steps=STEPS)
        out = _fn(torch, impl, B, coefficients(torch, B))()
        return float((out - ref).abs().max())
