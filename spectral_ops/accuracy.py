r"""Measure what a spectral map delivers: output spectrum and error against the exact map.

Everything here runs in float64 NumPy on the CPU (the input is copied there),
so it is a diagnostic for tests, benchmarks and users, not for a hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import array_api_compat
import numpy as np

from . import _backbone as bb

__all__ = ["SpectralReport", "spectral_report", "to_numpy"]


@dataclass(frozen=True)
class SpectralReport:
    r"""Accuracy of an output ``Y`` of a spectral map ``f`` applied to ``B``.

    With :math:`B = U\,\mathrm{diag}(s)\,V^T` (float64 SVD) and "above the floor"
    meaning :math:`s_i \ge \text{floor}\cdot s_{max}`. Batched inputs report the
    worst matrix of the batch.

    Attributes
    ----------
    band : (float, float)
        Smallest and largest singular value of :math:`Y V_{above}`, where
        :math:`V_{above}` holds the right singular vectors above the floor.
        For the polar map both should be 1.
    tail_max : float
        Largest singular value of :math:`Y V_{below}` (0 if all are above the
        floor). For the polar map it should be at most 1.
    rel_error : float
        :math:`\|(Y - U f(s) V^T) V_{above}\|_F / \|U f(s) V^T V_{above}\|_F`:
        the relative Frobenius error on the part of the input above the floor.
        Pass ``floor=0`` for the error of the whole matrix (ill-posed for the
        polar map where singular values are at round-off level).
    sv_error : float
        Per-singular-value error above the floor,
        :math:`\max_i |u_i^T Y v_i - f(s_i)| / \max_i f(s_i)`.
    finite : bool
        Whether ``Y`` is free of NaN and infinity. Where ``Y`` or ``B`` is not,
        every other field is NaN.
    """

    band: tuple[float, float]
    tail_max: float
    rel_error: float
    sv_error: float
    finite: bool


def to_numpy(x) -> np.ndarray:
    """Copy any array-API array to a float64 NumPy array on the CPU."""
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float64)
    xp = array_api_compat.array_namespace(x)
    if bb.is_16bit(xp, x.dtype):
        x = xp.astype(x, xp.float32)  # NumPy has no bfloat16
    if array_api_compat.is_cupy_array(x):
        return np.asarray(x.get(), dtype=np.float64)
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy().astype(np.float64)
    try:
        return np.asarray(np.from_dlpack(x), dtype=np.float64)
    except Exception:  # libraries without DLPack export
        return np.asarray(x, dtype=np.float64)


def _polar_map(s: np.ndarray) -> np.ndarray:
    rtol = 64 * np.finfo(np.float64).eps
    return (s > rtol * s[..., :1]).astype(np.float64)


def spectral_report(Y, B, /, fn: str | Callable[[np.ndarray], np.ndarray] = "polar", *,
                    floor: float = 1e-3) -> SpectralReport:
    r"""Report the accuracy of ``Y`` as the spectral map ``fn`` of ``B``.

    Parameters
    ----------
    Y : array, shape (..., m, n)
        The output to assess (any array-API library).
    B : array, shape (..., m, n)
        The input it was computed from.
    fn : "polar" or callable
        The exact map of singular values. ``"polar"`` is :math:`f(s) = 1` for
        :math:`s > 64\,\varepsilon_{64} s_{max}` and 0 below; a callable gets
        the float64 singular values (descending, shape (..., k)) and returns
        :math:`f(s)` of the same shape.
    floor : float
        Relative floor: singular values :math:`s \ge \text{floor}\cdot s_{max}`
        are "above the floor".

    Returns
    -------
    SpectralReport

    Examples
    --------
    >>> import numpy as np
    >>> from spectral_ops import polar, spectral_report
    >>> B = np.random.default_rng(0).standard_normal((32, 48))
    >>> r = spectral_report(polar(B, method="svd"), B)
    >>> bool(r.rel_error < 1e-12 and abs(r.band[0] - 1) < 1e-12)
    True
    """
    y, b = to_numpy(Y), to_numpy(B)
    if y.shape != b.shape:
        raise ValueError(f"Y and B must have the same shape; got {y.shape} and {b.shape}.")
    f = _polar_map if fn == "polar" else fn
    if not callable(f):
        raise ValueError(f"fn must be 'polar' or a callable on singular values; got {fn!r}.")
    finite = bool(np.isfinite(y).all())
    if not finite or not np.isfinite(b).all():
        # no SVD of a non-finite matrix (LAPACK may loop or raise): the report says so
        nan = float("nan")
        return SpectralReport((nan, nan), nan, nan, nan, finite)
    m, n = b.shape[-2:]
    y2 = y.reshape((-1, m, n))
    b2 = b.reshape((-1, m, n))
    u, s, vh = np.linalg.svd(b2, full_matrices=False)
    fs = np.asarray(f(s), dtype=np.float64)
    exact = (u * fs[:, None, :]) @ vh
    lo, hi, tail, rel, sv = np.inf, -np.inf, 0.0, 0.0, 0.0
    for i in range(y2.shape[0]):
        above = (s[i] >= floor * s[i, 0]) & (s[i] > 0)
        v = vh[i].T
        if above.any():
            sa = np.linalg.svd(y2[i] @ v[:, above], compute_uv=False)
            lo, hi = min(lo, sa.min()), max(hi, sa.max())
            d = np.einsum("ij,ik,kj->j", u[i][:, above], y2[i], v[:, above])
            scale = max(fs[i].max(), np.finfo(np.float64).tiny)
            sv = max(sv, np.abs(d - fs[i][above]).max() / scale)
        if (~above).any():
            # the complement of the kept right singular vectors (incl. the null space)
            proj = y2[i] - (y2[i] @ v[:, above]) @ v[:, above].T
            tail = max(tail, np.linalg.svd(proj, compute_uv=False).max())
        va = v[:, above] if floor > 0 else v
        ne = np.linalg.norm(exact[i] @ va)
        diff = np.linalg.norm((y2[i] - exact[i]) @ va)
        rel = max(rel, diff / ne if ne > 0 else diff)
    if lo == np.inf:
        lo = hi = float("nan")
    return SpectralReport((float(lo), float(hi)), float(tail), float(rel), float(sv), finite)
