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

import functools
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
    "in_wide_dtype",
    "frobenius_scale",
    "unit_frobenius",
    "power_of_two_scale",
    "require",
    "invalidate",
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
    valid : array of bool, shape (..., 1, 1)
        Per matrix: whether the input is finite (and any per-matrix argument,
        such as clip's ``tau``, valid; see :func:`invalidate`). :func:`finish`
        turns the result of an invalid matrix into NaN.
    amax : array, shape (..., 1, 1), or None
        ``max|x|`` per matrix in ``x``'s dtype, where :func:`prepare` read it
        on the way (torch, CuPy, NumPy): the prescale
        (:func:`power_of_two_scale`) takes it instead of reading ``x`` again.
    """

    xp: Any
    x: Any
    transposed: bool
    out_dtype: Any
    valid: Any = None
    amax: Any = None

    @property
    def m(self) -> int:
        return self.x.shape[-2]

    @property
    def n(self) -> int:
        return self.x.shape[-1]

    @property
    def dtype(self):
        return self.x.dtype


def dtype_name(xp, dtype) -> str:
    for name in _REAL_FLOAT_NAMES + ("complex64", "complex128"):
        if hasattr(xp, name) and dtype == getattr(xp, name):
            return name
    return str(dtype)


def validate_array(B, name: str):
    if type(B).__name__ == "MaskedArray" and hasattr(B, "filled"):
        raise TypeError(
            f"{name} is a masked array; spectral maps need every entry. Fill it first "
            f"(e.g. {name}.filled(0)) or pass {name}.data.")
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
            f"{name} has complex dtype {dtype_name(xp, B.dtype)}; spectral_ops handles "
            f"real matrices only. Pass the real and imaginary parts separately or a real "
            f"embedding of {name}."
        )
    if not xp.isdtype(B.dtype, "real floating"):
        raise TypeError(
            f"{name} must have a real floating dtype (float16, bfloat16, float32 or "
            f"float64); got {dtype_name(xp, B.dtype)}. Cast it first, e.g. "
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

    The non-finite policy, the same on every backend and route: a matrix of
    ``B`` that holds NaN or infinity (in the compute dtype: a finite entry that
    overflows the cast to it counts) is replaced by zeros for the computation
    (so no iteration or LAPACK call ever sees it: LAPACK's SVD can loop forever
    on an infinity) and its result becomes all NaN in :func:`finish`. This costs
    two elementwise passes and no host synchronisation.

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
        costs one device-to-host synchronisation; under ``jax.jit`` it is a
        ``jax.experimental.checkify`` check (functionalise the caller with
        ``checkify.checkify`` to receive the error).
    """
    xp = validate_array(B, name)
    dtype = resolve_dtype(xp, compute_dtype, B.dtype)
    x = B if dtype == B.dtype else xp.astype(B, dtype)
    # tested in the compute dtype: a finite entry that overflows the cast is infinite
    # there, and an SVD would loop on it
    finite, amax = all_finite(xp, x)
    if check_finite:
        where_ = "" if x is B else f" (after the cast to {dtype_name(xp, dtype)})"
        require(xp, finite, f"{name} contains NaN or infinite values{where_}; clean the input "
                            f"(e.g. zero the non-finite entries) or pass check_finite=False: "
                            f"then the result of such a matrix is NaN.")
    zero = xp.zeros_like(finite, dtype=x.dtype)  # (..., 1, 1): no full fill
    x = xp.where(finite, x, zero)
    if amax is not None:  # max|x| of the zeroed x
        amax = xp.where(finite, amax, zero)
    transposed = B.shape[-2] > B.shape[-1]
    if transposed:
        x = xp.linalg.matrix_transpose(x)
    return Prepared(xp=xp, x=x, transposed=transposed, out_dtype=B.dtype, valid=finite,
                    amax=amax)


def all_finite(xp, B):
    """Whether each matrix of ``B`` is free of NaN and infinity, shape (..., 1, 1),
    and ``max|B|`` per matrix where it was read on the way (else None).

    torch, CuPy and NumPy: ``isfinite(max|B|)`` (:func:`max_abs`), two passes
    (``isfinite`` then ``all`` takes five and, in array-api-compat's torch, a
    copy), since their ``max`` propagates NaN. Elsewhere ``all(isfinite(B))``: JAX's ``max`` on the
    CPU skips a NaN among 4096 or more elements (XLA; a fused pass under ``jit``
    anyway), and other libraries are not relied on. Empty matrices are finite.
    """
    if 0 in B.shape[-2:] or not (array_api_compat.is_torch_array(B)
                                 or array_api_compat.is_cupy_array(B)
                                 or array_api_compat.is_numpy_array(B)):
        return xp.all(xp.isfinite(B), axis=(-2, -1), keepdims=True), None
    amax = max_abs(xp, B)
    if array_api_compat.is_torch_array(amax):
        # a scale, piecewise constant in B: no gradient through it (through the max
        # of a matrix with a NaN, torch's backward would make that matrix's gradient NaN)
        amax = amax.detach()
    return xp.isfinite(amax), amax


def max_abs(xp, x):
    """``max |x|`` per matrix, shape (..., 1, 1), in ``x``'s dtype (exact in any
    dtype; NaN where a matrix holds one, on torch, CuPy and NumPy). Not the
    infinity norm, which would save the ``|x|`` temporary: torch's CPU kernel for
    it took 1.18 ms at 256 x 1024 float32 against 0.136 ms for ``abs`` and
    ``amax`` (one thread)."""
    return xp.max(xp.abs(x), axis=(-2, -1), keepdims=True)


def is_traced(x) -> bool:
    """Whether ``x`` is an abstract value being traced (``jax.jit`` and friends)."""
    if not array_api_compat.is_jax_array(x):
        return False
    import jax  # already imported: x is one of its arrays

    return isinstance(x, jax.core.Tracer)


def is_vmapped(x) -> bool:
    """Whether ``x`` is a torch tensor batched by ``torch.func.vmap``, whose values
    cannot be read on the host (``.item()`` is refused there)."""
    if not array_api_compat.is_torch_array(x):
        return False
    import torch  # already imported: x is one of its tensors

    test = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return bool(test is not None and test(x))


def has_float64(xp, x) -> bool:
    """Whether ``x``'s library computes in float64 where ``x`` lives (not JAX
    without ``jax_enable_x64``, not Apple's MPS)."""
    if array_api_compat.is_jax_array(x):
        import jax  # already imported: x is one of its arrays

        return bool(jax.config.jax_enable_x64)
    try:
        return "mps" not in str(array_api_compat.device(x)).lower()
    except Exception:
        return True


def is_differentiated(x) -> bool:
    """Whether autodiff is recording through ``x`` (torch ``requires_grad``, JAX's
    forward/linearize tracers). ``auto`` then avoids the SVD routes, whose
    backward is NaN at repeated singular values."""
    if array_api_compat.is_torch_array(x):
        import torch  # already imported: x is one of its tensors

        return bool(x.requires_grad) and torch.is_grad_enabled()
    if array_api_compat.is_jax_array(x):
        return type(x).__name__ in ("JVPTracer", "LinearizeTracer")
    return False


def require(xp, ok, message: str):
    """Raise ``ValueError(message)`` unless every entry of ``ok`` is true.

    Concrete arrays are read back (one host synchronisation). Under ``jax.jit``
    the condition is a ``jax.experimental.checkify`` check: a caller wrapped in
    ``checkify.checkify`` receives the error, and an unwrapped one gets JAX's
    own message saying to wrap it.
    """
    if is_traced(ok):
        from jax.experimental import checkify

        checkify.check(xp.all(ok), message)
    elif not bool(xp.all(ok)):
        raise ValueError(message)


def invalidate(prep: Prepared, ok) -> Prepared:
    """``prep`` whose matrices are also invalid where ``ok`` (shape (..., 1, 1)) is false."""
    return Prepared(xp=prep.xp, x=prep.x, transposed=prep.transposed, out_dtype=prep.out_dtype,
                    valid=prep.valid & ok, amax=prep.amax)


def finish(y, prep: Prepared):
    """Undo the orientation, make invalid matrices NaN, return in the caller's dtype."""
    xp = prep.xp
    if prep.transposed:
        y = xp.linalg.matrix_transpose(y)
    if prep.valid is not None:
        # a fill on y's device (a scalar copied from the host would make torch wait
        # for the device, and array-api-strict refuses mixed devices)
        y = xp.where(prep.valid, y, xp.full_like(prep.valid, float("nan"), dtype=y.dtype))
    if y.dtype != prep.out_dtype:
        y = xp.astype(y, prep.out_dtype)
    return y


def is_16bit(xp, dtype) -> bool:
    return any(hasattr(xp, n) and dtype == getattr(xp, n) for n in ("float16", "bfloat16"))


_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def dtype_eps(xp, dtype) -> float:
    """Machine epsilon of a real floating dtype (works where ``finfo`` lacks bfloat16)."""
    return _EPS[dtype_name(xp, dtype)]


_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38,
        "float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}


#: The exponent of each dtype's largest finite power of two (the prescale's cap).
_MAX_EXP = {"float16": 15.0, "bfloat16": 127.0, "float32": 127.0, "float64": 1023.0}


_TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}


def dtype_tiny(xp, dtype) -> float:
    """The smallest normal value of a real floating dtype."""
    return _TINY[dtype_name(xp, dtype)]


def dtype_max(xp, dtype) -> float:
    """The largest finite value of a real floating dtype."""
    return _MAX[dtype_name(xp, dtype)]


def wide_dtype(xp, dtype):
    """The dtype for norms and scalars: float32 for 16-bit inputs, else the input's."""
    return xp.float32 if is_16bit(xp, dtype) else dtype


def in_wide_dtype(kernel):
    """Run ``kernel(xp, x, ...)`` in the wide dtype and return in ``x``'s dtype.

    For 16-bit ``x`` the kernel sees ``x`` in float32 and its result is rounded
    back once; for 32/64-bit ``x`` it runs unchanged. The one place the
    library widens a 16-bit input (the SVD, QR, solves and the Gram-based
    recurrences have no 16-bit form, or lose too much there).
    """
    @functools.wraps(kernel)
    def wrapper(xp, x, *args, **kwargs):
        wide = wide_dtype(xp, x.dtype)
        if wide == x.dtype:
            return kernel(xp, x, *args, **kwargs)
        return xp.astype(kernel(xp, xp.astype(x, wide), *args, **kwargs), x.dtype)
    return wrapper


def power_of_two_scale(xp, x, amax=None):
    """``(x / 2^e, 2^e)`` per matrix, with ``2^e <= max|x| < 2^(e+1)`` (see below), exact.

    Dividing by a power of two introduces no rounding. The factor is applied as
    two halves so that neither overflows (``2^149`` for the smallest float32
    subnormals, ``2^127`` near float32's largest values). 16-bit inputs are
    scaled in their own dtype, without a float32 copy: each half is at most
    ``2^12`` in float16 (``2^-e`` itself may be ``2^24``, infinite there) and
    within float32's range in bfloat16, so it is exact there too, and a product
    by it is exact unless it falls below the dtype's normal range (entries
    under ``2^-24 max|x|`` in float16), where it is rounded as a cast of the
    float32 product would round it, to within one subnormal step. Zero and NaN
    matrices get ``2^0``, matrices with an infinity the largest finite power of
    two of ``x``'s dtype. Just below a power of two ``log2`` may round up to it (measured in
    float32: within 5.3e-6 relative, at exponents from -131 to 127); there
    ``max|x / 2^e|`` is in [1 - 2^-17, 1) instead of [1, 2), which is as safe;
    XLA's ``log2`` on CPUs rounds down at and just above some exact powers of
    two (2^13 in float32), where it reaches 2 (2.0000002 measured), as safe too.
    Returns ``x`` scaled in its dtype and ``2^e`` in the wide dtype, shape
    ``(..., 1, 1)``. ``amax``: ``max|x|`` per matrix where the caller has it
    (:attr:`Prepared.amax`), which saves reading ``x`` twice.

    Eighteen elementary operations and up to three casts (each a launch on a
    GPU, a fixed cost per call there), two fewer with ``amax``: ``max|x|``, a
    zero and NaN test, ``log2``, a cap, the halves' exponents ``floor(-e/2)``
    and ``ceil(-e/2)``, their powers, the two products and ``2^e``.
    """
    wide = wide_dtype(xp, x.dtype)
    # abs and max are exact in any dtype: no widened copy of x
    amax = xp.astype(max_abs(xp, x) if amax is None else amax, wide, copy=False)
    amax = xp.where(amax > 0, amax, xp.ones_like(amax))  # zero and NaN (compares false): 1
    # capped so that 2^e stays finite: an infinite max (log2 gives inf), and log2
    # rounding up to 2^(maxexp) just below the dtype's largest power of two
    # (x's dtype's cap: the halves are applied in it, float16's up to 2^15)
    cap = xp.full_like(amax, _MAX_EXP[dtype_name(xp, x.dtype)])
    exponent = xp.minimum(xp.floor(xp.log2(amax)), cap)
    # made on x's device by a fill: a scalar copied from the host would make
    # torch wait for the device (a synchronisation per call)
    two = xp.full_like(amax, 2.0)
    t = exponent * -0.5  # the halves' exponents floor(t) + ceil(t) = -e, exactly
    up, down = xp.pow(two, xp.floor(t)), xp.pow(two, xp.ceil(t))
    xs = (x * xp.astype(up, x.dtype, copy=False)) * xp.astype(down, x.dtype, copy=False)
    return xs, xp.pow(two, exponent)  # 2^e, finite: the exponent is capped



def frobenius_scale(xp, x, amax=None):
    """Scale each matrix of ``x`` to unit Frobenius norm, safely.

    Returns ``(x / ||x||_F, ||x / 2^e||_F, 2^e)``: the unit matrix, and the norm
    as a factor near 1 (in [1 - 2^-17, 2 sqrt(mn)]) times the exact power of two of
    :func:`power_of_two_scale`, both in the wide dtype and of shape
    ``(..., 1, 1)``, so a caller can form ``||x||_F^p`` without overflow. The
    prescale brings the largest entry into [1 - 2^-17, 2), so the sum of squares
    neither overflows nor underflows from the smallest subnormal to the
    largest finite value of the dtype. Zero matrices come back as zeros with
    norm 0 (never NaN). ``amax`` as in :func:`power_of_two_scale`.
    """
    xs, two_e = power_of_two_scale(xp, x, amax)
    norm_s = frobenius_norm(xp, xs)
    safe = xp.where(norm_s > 0, norm_s, xp.ones_like(norm_s))
    return xs / xp.astype(safe, x.dtype), norm_s, two_e


def frobenius_norm(xp, x):
    """``||x||_F`` per matrix, shape (..., 1, 1), in the wide dtype (no copy where
    ``x`` is already wide, nor for 16-bit torch tensors on CUDA), for inputs whose
    squares cannot overflow.

    Its derivative at a zero matrix is 0, not NaN: torch's norm takes that
    subgradient; JAX differentiates ``sqrt(sum(x^2))`` there as ``0 * inf``, so
    for JAX the root is taken of a safe value (under ``jit`` it is one fusion).
    """
    wide = wide_dtype(xp, x.dtype)
    if array_api_compat.is_torch_array(x) and x.dtype != wide and x.device.type == "cuda":
        # torch reduces a 16-bit tensor into float32 in one CUDA (and ROCm) kernel, with
        # no widened copy of x; elsewhere it widens first, so astype stays there
        return xp.linalg.vector_norm(x, axis=(-2, -1), keepdims=True, dtype=wide)
    xw = xp.astype(x, wide, copy=False)
    if not array_api_compat.is_jax_array(x):  # one call, a single fused kernel in torch
        return xp.linalg.vector_norm(xw, axis=(-2, -1), keepdims=True)
    s2 = xp.sum(xw * xw, axis=(-2, -1), keepdims=True)
    positive = s2 > 0
    return xp.where(positive, xp.sqrt(xp.where(positive, s2, xp.ones_like(s2))),
                    xp.zeros_like(s2))


def unit_frobenius(xp, x, amax=None):
    """``x / ||x||_F`` per matrix (see :func:`frobenius_scale`); zeros stay zeros."""
    return frobenius_scale(xp, x, amax)[0]


_ACCELERATOR_WORDS = ("cuda", "gpu", "tpu", "rocm", "mps", "xpu", "hpu", "neuron")


def _is_accelerator_text(dev) -> bool:
    text = f"{getattr(dev, 'type', '')} {getattr(dev, 'platform', '')} {dev}".lower()
    return any(key in text for key in _ACCELERATOR_WORDS)


def default_device_is_accelerator(x) -> bool:
    """Whether ``x``'s library computes on an accelerator by default.

    Used where ``x`` has no readable device: a traced array under ``jax.jit``
    (which runs on JAX's default backend) or a tensor whose device cannot be
    read. The library of ``x`` is already imported, so nothing new is loaded.
    """
    if array_api_compat.is_jax_array(x):
        import jax  # already imported: x is one of its arrays

        return jax.default_backend() != "cpu"
    if array_api_compat.is_torch_array(x):
        import torch  # already imported: x is one of its tensors

        return _is_accelerator_text(torch.get_default_device())
    return False


def on_accelerator(x) -> bool:
    """Whether the computation on ``x`` runs on a GPU/TPU (used by ``method="auto"``).

    The device of ``x`` where it can be read; otherwise (``jax.jit`` tracers,
    anything without a concrete device) where its library computes by default,
    never silently the CPU.
    """
    if array_api_compat.is_cupy_array(x):
        return True
    try:
        dev = array_api_compat.device(x)
    except Exception:  # a device that cannot be read
        dev = None
    if dev is None:
        return default_device_is_accelerator(x)
    return _is_accelerator_text(dev)


def eye_like(xp, x, n: int):
    """An n x n identity in the dtype and on the device of ``x``."""
    return xp.eye(n, dtype=x.dtype, device=array_api_compat.device(x))
