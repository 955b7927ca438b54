r"""Test matrices with known, hard spectra (NumPy, float64).

Used by the tests, the ``spectral-ops demo`` command and the benchmarks, and
public so users can reproduce them. Each matrix is :math:`U\,\mathrm{diag}(s)\,V^T`
with Haar-random orthogonal factors, except ``"gaussian"``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPECTRA", "spectrum", "make_matrix", "from_spectrum", "torch_muon_newton_schulz",
           "teacher_student_task"]

#: Spectrum kinds :func:`spectrum` knows.
SPECTRA = ("gaussian", "ill", "gradient", "rank_deficient", "flat")


def spectrum(kind: str, r: int, *, cond: float = 1e4, rng=None) -> np.ndarray:
    """Singular values (descending, ``s[0] = 1``) of length ``r``.

    ``"ill"``: log-spaced from 1 to ``1 / cond``. ``"gradient"``: what momentum
    matrices of real networks look like, a power law ``(i + 1)^(-1.5)`` over the
    first ``r // 8`` values and the rest near ``1e-8`` (nearly low rank).
    ``"rank_deficient"``: the top half log-spaced in ``[1e-2, 1]``, the rest
    exactly zero. ``"flat"``: all ones. ``"gaussian"`` has no prescribed
    spectrum (use :func:`make_matrix`).
    """
    rng = np.random.default_rng(rng)
    if kind == "ill":
        return np.logspace(0, -np.log10(cond), r)
    if kind == "gradient":
        k = max(1, r // 8)
        head = (np.arange(k) + 1.0) ** -1.5
        tail = 1e-8 * rng.uniform(0.5, 1.0, r - k)
        return np.sort(np.concatenate([head, tail]))[::-1]
    if kind == "rank_deficient":
        k = max(1, r // 2)
        return np.concatenate([np.logspace(0, -2, k), np.zeros(r - k)])
    if kind == "flat":
        return np.ones(r)
    raise ValueError(f"kind must be one of {SPECTRA[1:]}; got {kind!r}.")


def _haar(rng, batch, m, k):
    q, r = np.linalg.qr(rng.standard_normal(batch + (m, k)))
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def make_matrix(kind: str, shape, *, cond: float = 1e4, scale: float = 1.0, seed=0,
                dtype=np.float64) -> np.ndarray:
    """A matrix (or stack) of shape ``shape = (..., m, n)`` with the given spectrum.

    Parameters
    ----------
    kind : str
        One of :data:`SPECTRA`.
    shape : tuple of int
    cond : float
        Condition number for ``"ill"``.
    scale : float
        Overall scale (the largest singular value; for ``"gaussian"`` the
        entry standard deviation).
    seed : int or numpy Generator
    dtype : NumPy dtype
        Dtype of the result (the matrix is built in float64).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    *batch, m, n = shape
    batch = tuple(batch)
    if kind == "gaussian":
        return (scale * rng.standard_normal(shape)).astype(dtype)
    r = min(m, n)
    s = spectrum(kind, r, cond=cond, rng=rng)
    u, v = _haar(rng, batch, m, r), _haar(rng, batch, n, r)
    out = (u * (scale * s)) @ np.swapaxes(v, -1, -2)
    return out.astype(dtype)


def from_spectrum(s, shape, *, seed=0, dtype=np.float64) -> np.ndarray:
    """A matrix (or stack) of shape ``(..., m, n)`` with singular values ``s``.

    ``s`` has length ``min(m, n)`` (shared by every matrix of the stack) or
    shape ``(..., min(m, n))``; the singular vectors are Haar-random.
    """
    rng = np.random.default_rng(seed)
    *batch, m, n = tuple(shape)
    batch = tuple(batch)
    r = min(m, n)
    s = np.asarray(s, dtype=np.float64)
    if s.shape[-1] != r:
        raise ValueError(f"s must have min(m, n) = {r} values; got {s.shape[-1]}.")
    u, v = _haar(rng, batch, m, r), _haar(rng, batch, n, r)
    return ((u * s[..., None, :]) @ np.swapaxes(v, -1, -2)).astype(dtype)


def torch_muon_newton_schulz():
    """``torch.optim.Muon``'s Newton-Schulz as ``f(G) -> array``, or ``(None, reason)``.

    Returns ``(f, None)`` where ``f(G)`` runs torch's own 5-step quintic on a 2-D
    tensor ``G`` (the reference of the parity tests and benchmarks), or
    ``(None, reason)`` where torch has no ``torch.optim.Muon`` or its private
    kernel no longer takes the four arguments ``(grad, coefficients, steps,
    eps)`` that this reference was written for (a signature change skips, with
    the reason, instead of breaking).
    """
    import inspect

    try:
        from torch.optim._muon import _zeropower_via_newtonschulz as kernel
    except ImportError as exc:
        return None, f"torch.optim.Muon is not available ({exc}); it needs torch >= 2.9"
    params = list(inspect.signature(kernel).parameters.values())
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) < 4 or len(required) > 4:
        return None, (f"torch.optim._muon._zeropower_via_newtonschulz{inspect.signature(kernel)} "
                      f"no longer takes (grad, coefficients, steps, eps)")
    coefficients = (3.4445, -4.7750, 2.0315)
    return (lambda G: kernel(G, coefficients, 5, 1e-7)), None


def teacher_student_task(seed: int = 0, sizes=(32, 64, 64, 8), samples: int = 256):
    """A small regression task for optimizer tests: a tanh teacher MLP labels Gaussian inputs.

    Returns ``(weights, biases, x, y)`` as float32 NumPy arrays: the student's
    initial weights in torch's ``(out, in)`` layout (a teacher of gain 2, a
    student of gain 1, both scaled by ``1/sqrt(fan_in)``), zero biases, the
    inputs ``(samples, sizes[0])`` and the teacher's outputs ``(samples, sizes[-1])``.
    """
    rng = np.random.default_rng(seed)

    def layers(gain):
        return [(gain * rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
                for i, o in zip(sizes[:-1], sizes[1:])]
    teacher, student = layers(2.0), layers(1.0)
    x = rng.standard_normal((samples, sizes[0])).astype(np.float32)
    h = x
    for i, w in enumerate(teacher):
        h = h @ w.T
        if i < len(teacher) - 1:
            h = np.tanh(h)
    biases = [np.zeros(o, np.float32) for o in sizes[1:]]
    return student, biases, x, h.astype(np.float32)
