"""The internal layer every public function stands on.

It does the work that is the same for every spectral map:

* finds the caller's array namespace (through ``array_api_compat``),
* validates the input with errors that name the argument and the fix,
* resolves the dtype policy (compute in the input dtype unless the caller
  passes ``compute_dtype``; scalars and norms in float32 or better),
* orients the matrix so that Gram products are formed on the short side,
* scales it safely (an exact power-of-two prescale, then the Frobenius norm),
* and hands the result back in the caller's namespace, device and dtype.

No framework is imported here: everything goes through the array API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

__all__ = [
    "Prepared",
    "prepare",
    "finish",
    "is_16bit",
    "dtype_eps",
    "wide_dtype",
    "frobenius_scale",
    "on_accelerator",
]

_REAL_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class Prepared:
    """An input made ready for an iteration.

    Attributes
    ----------
    xp : namespace
        The caller's array namespace (array-API compatible wrapper).
    x : array
        The input in the compute dtype, oriented *wide* (``m <= n``), so that
        ``x @ x^T`` is the small Gram matrix.
    transposed : bool
        Whether ``x`` is the transpose of the caller's matrix.
    out_dtype : dtype
        The caller's dtype; results are returned in it.
    """

    xp: Any
    x: Any
    transposed: bool
    out_dtype: Any

    @property
    def m(self) -> int:
        return self.x.shape[-2]

    @property
    def n(self) -> int:
        return self.x.shape[-1]

    @property
    def dtype(self):
        return self.x.dtype


def _dtype_name(xp, dtype) -> str:
    for name in _REAL_FLOAT_NAMES + ("complex64", "complex128"):
        if hasattr(xp, name) and dtype == getattr(xp, name):
            return name
    return str(dtype)


def _validate_array(B, name: str):
    if not array_api_compat.is_array_api_obj(B):
        raise TypeError(
            f"{name} must be an array (NumPy, CuPy, PyTorch, JAX or any array-API "
            f"array); got {type(B).__name__}. Wrap it first, e.g. numpy.asarray({name})."
        )
    xp = array_api_compat.array_namespace(B)
    if B.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions, shape (..., m, n); got shape "
            f"{tuple(B.shape)}. Reshape a vector into a matrix first, e.g. {name}[None, :]."
        )
    if xp.isdtype(B.dtype, "complex floating"):
        raise TypeError(
            f"{name} has complex dtype {_dtype_name(xp, B.dtype)}; spectral_ops handles "
            f"real matrices only. Pass the real and imaginary parts separately or a real "
            f"embedding of {name}."
        )
    if not xp.isdtype(B.dtype, "real floating"):
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32 or "
            f"float64); got {_dtype_name(xp, B.dtype)}. Cast it first, e.g. "
            f"{name}.astype(float32) or {name}.float()."
        )
    return xp


def resolve_dtype(xp, compute_dtype, default):
    """Map ``compute_dtype`` (None, a name, or a dtype of ``xp``) to a dtype of ``xp``."""
    if compute_dtype is None:
        return default
    if isinstance(compute_dtype, str):
        if compute_dtype not in _REAL_FLOAT_NAMES:
            raise ValueError(
                f"compute_dtype must be one of {_REAL_FLOAT_NAMES} or a floating dtype of "
                f"the input's library; got {compute_dtype!r}."
            )
        if not hasattr(xp, compute_dtype):
            raise ValueError(
                f"compute_dtype={compute_dtype!r} is not available in "
                f"{xp.__name__}; use float32 or float64 with this library."
            )
        return getattr(xp, compute_dtype)
    try:
        ok = xp.isdtype(compute_dtype, "real floating")
    except Exception:  # a dtype of another library, or not a dtype at all
        ok = False
    if not ok:
        raise ValueError(
            f"compute_dtype must be a real floating dtype of {xp.__name__} or one of "
            f"{_REAL_FLOAT_NAMES}; got {compute_dtype!r}."
        )
    return compute_dtype


def prepare(B, *, name: str = "B", compute_dtype=None, check_finite: bool = False) -> Prepared:
    """Validate ``B`` and return it in the compute dtype, oriented wide.

    Parameters
    ----------
    B : array, shape (..., m, n)
        Real floating input of any array-API library.
    name : str
        The argument's name, used in error messages.
    compute_dtype : dtype or str, optional
        Dtype to iterate in. Default: the input's dtype.
    check_finite : bool
        If True, raise ``ValueError`` when ``B`` holds NaN or infinity. This
        costs one device-to-host synchronisation (and cannot run under
        ``jax.jit``), so it is off by default.
    """
    xp = _validate_array(B, name)
    dtype = resolve_dtype(xp, compute_dtype, B.dtype)
    if check_finite and not bool(xp.all(xp.isfinite(B))):
        raise ValueError(
            f"{name} contains NaN or infinite values; clean the input (e.g. zero the "
            f"non-finite entries) or pass check_finite=False to skip this check."
        )
    x = B if dtype == B.dtype else xp.astype(B, dtype)
    transposed = B.shape[-2] > B.shape[-1]
    if transposed:
        x = xp.linalg.matrix_transpose(x)
    return Prepared(xp=xp, x=x, transposed=transposed, out_dtype=B.dtype)


def finish(y, prep: Prepared):
    """Undo the orientation and return ``y`` in the caller's dtype."""
    xp = prep.xp
    if prep.transposed:
        y = xp.linalg.matrix_transpose(y)
    if y.dtype != prep.out_dtype:
        y = xp.astype(y, prep.out_dtype)
    return y


def is_16bit(xp, dtype) -> bool:
    return any(hasattr(xp, n) and dtype == getattr(xp, n) for n in ("float16", "bfloat16"))


_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def dtype_eps(xp, dtype) -> float:
    """Machine epsilon of a real floating dtype (works where ``finfo`` lacks bfloat16)."""
    return _EPS[_dtype_name(xp, dtype)]


def wide_dtype(xp, dtype):
    """The dtype for norms and scalars: float32 for 16-bit inputs, else the input's."""
    return xp.float32 if is_16bit(xp, dtype) else dtype


def frobenius_scale(xp, x):
    """Scale each matrix of ``x`` to unit Frobenius norm, safely.

    Returns ``(x / ||x||_F, ||x||_F)`` with the norm in the wide dtype and
    shape ``(..., 1, 1)``. A power-of-two prescale (exact in binary floating
    point) first brings the largest entry near 1, so the sum of squares neither
    overflows (entries near 1e30 in float32) nor underflows (near 1e-30). Zero
    matrices come back as zeros with norm 0 (never NaN).
    """
    wide = wide_dtype(xp, x.dtype)
    amax = xp.max(xp.abs(x), axis=(-2, -1), keepdims=True)
    amax = xp.astype(amax, wide)
    positive = amax > 0
    # exact power of two near amax: dividing by it introduces no rounding
    exponent = xp.round(xp.log2(xp.where(positive, amax, xp.ones_like(amax))))
    two_e = xp.pow(xp.asarray(2.0, dtype=wide, device=array_api_compat.device(x)), exponent)
    xs = x / xp.astype(two_e, x.dtype)
    sumsq = xp.sum(xp.astype(xs, wide) ** 2, axis=(-2, -1), keepdims=True)
    norm_s = xp.sqrt(sumsq)
    safe = xp.where(norm_s > 0, norm_s, xp.ones_like(norm_s))
    return xs / xp.astype(safe, x.dtype), norm_s * two_e


def on_accelerator(x) -> bool:
    """Best-effort guess whether ``x`` lives on a GPU/TPU (used by ``method="auto"``)."""
    if array_api_compat.is_cupy_array(x):
        return True
    try:
        dev = array_api_compat.device(x)
    except Exception:  # e.g. a tracer without a concrete device
        return False
    text = str(getattr(dev, "type", "")) + " " + str(getattr(dev, "platform", "")) + " " + str(dev)
    text = text.lower()
    return any(key in text for key in ("cuda", "gpu", "tpu", "rocm", "mps", "xpu"))


def eye_like(xp, x, n: int):
    """An n x n identity in the dtype and on the device of ``x``."""
    return xp.eye(n, dtype=x.dtype, device=array_api_compat.device(x))
