"""Backend fast paths behind the array-API core.

The core writes every product as ``a @ b`` and every multiply-accumulate as
``beta * c + alpha * (a @ b)``. Where a backend has a cheaper kernel for the
same arithmetic, the two helpers here use it; elsewhere they are the generic
expressions. Results differ from the generic path by round-off only (the fused
forms round once instead of twice); tests/test_fast_paths.py checks that for
every fast path against the generic one.

=====================  ===========================================  ==============
helper                 fast path                                     switch
=====================  ===========================================  ==============
:func:`matmul_acc`     torch ``addmm`` (2-D) / ``baddbmm`` (3-D);    ``FUSED_GEMM``
                       CuPy: cuBLAS gemm with ``beta`` (2-D,
                       float32/float64) through ``cupy.cublas.gemm``
:func:`gram`           CuPy: cuBLAS syrk (one triangle of ``X X^T``,  ``SYMMETRIC_GRAM``
                       half the flops) through ``cupy.cublas.syrk``
:func:`add_scaled`     torch ``add`` with ``alpha`` (one kernel,      ``FUSED_ADD``
                       no float32 copies of 16-bit tensors; not for
                       16-bit tensors on the CPU, see below)
=====================  ===========================================  ==============

Both are on by default, as measured on an H100 (float32, TF32 off;
asv_bench/benchmarks/bench_gpu_cupy.py, results in asv_bench/results/h100/):
Polar Express at 4096 x 4096 took 70.1 ms generic, 68.8 ms with the fused
gemm and 64.6 ms with syrk too; Gram Newton-Schulz at 4096 x 16384 134, 133
and 125 ms. syrk's Gram is symmetric to the last bit, which the ridge route
of ``power`` (p < 0) carries differently: its float32 error against the SVD
was 1.15x to 1.68x the generic path's (5.8e-5 to 7.9e-5, 8 cases on an H200).
No framework is imported
at module level: CuPy's cuBLAS wrappers are imported on first use, on CuPy
arrays only.
"""

from __future__ import annotations

import array_api_compat

__all__ = ["FUSED_GEMM", "SYMMETRIC_GRAM", "FUSED_ADD", "fused_gemm_available",
           "symmetric_gram_available", "matmul_acc", "gram", "add_scaled"]

#: Fused multiply-accumulate GEMMs (torch addmm/baddbmm, cuBLAS gemm with beta).
FUSED_GEMM = True
#: Symmetric Gram products X X^T through cuBLAS syrk (CuPy).
SYMMETRIC_GRAM = True
#: ``a + alpha * b`` in one kernel (torch ``add``; 16-bit only on accelerators).
#: In bfloat16 the generic combination (float32 copies of both terms, two
#: products, a sum, a cast back) takes six full-size passes; the H200 profile of a
#: bf16 Polar Express call at 4096 x 4096 showed five float32 casts of about 50 us
#: each, three of them here.
FUSED_ADD = True


def _is_cupy_blas(x, routine: str) -> bool:
    # cupy.cublas wraps the 2-D s/d/c/z routines only: no batches, no 16-bit
    return (array_api_compat.is_cupy_array(x) and x.ndim == 2
            and x.dtype.char in "fd" and hasattr(_cupy_cublas(), routine))


def _cupy_cublas():
    import cupy.cublas  # only ever reached with a CuPy array in hand

    return cupy.cublas


def fused_gemm_available(c) -> bool:
    """Whether :func:`matmul_acc` has a fused path for arrays like ``c``."""
    if not FUSED_GEMM:
        return False
    if array_api_compat.is_torch_array(c):
        return c.ndim in (2, 3)
    return _is_cupy_blas(c, "gemm")


def symmetric_gram_available(x) -> bool:
    """Whether :func:`gram` uses a symmetric (syrk) product for arrays like ``x``."""
    return SYMMETRIC_GRAM and _is_cupy_blas(x, "syrk")


def matmul_acc(xp, c, a, b, *, beta: float, alpha: float = 1.0, combine=None):
    """``beta * c + alpha * (a @ b)`` in one fused GEMM where the backend has one.

    The accumulation runs in the GEMM's epilogue, in its accumulator precision,
    rounded once, and no temporary holds ``a @ b``: torch ``addmm`` /
    ``baddbmm``; CuPy's cuBLAS gemm, which overwrites its ``C`` operand, so it
    gets a copy of ``c`` (``c`` is often also ``a`` or ``b``, and is never
    modified). Elsewhere ``combine([(beta, c), (alpha, a @ b)], dtype)`` (the
    caller's rounding policy) or a plain sum.
    """
    if fused_gemm_available(c) and a.ndim == c.ndim and b.ndim == c.ndim:
        if array_api_compat.is_torch_array(c):
            f = c.addmm if c.ndim == 2 else c.baddbmm
            return f(a, b, beta=beta, alpha=alpha)
        if a.dtype == c.dtype and b.dtype == c.dtype:
            return _cupy_cublas().gemm("N", "N", a, b, out=c.copy(), alpha=alpha, beta=beta)
    prod = a @ b
    if combine is not None:
        return combine([(beta, c), (alpha, prod)], c.dtype)
    return beta * c + alpha * prod


def add_scaled(xp, a, b, alpha: float, *, combine=None):
    """``a + alpha * b``, in one kernel where the backend has one: torch ``add``,
    which forms the sum in float32 for 16-bit tensors and rounds once, as the
    caller's ``combine`` would. Its CUDA kernel takes ``alpha`` in float32 too;
    its CPU kernel rounds ``alpha`` to the tensor's dtype first (bfloat16: a
    relative 2^-9 on a Polar Express coefficient ratio, 2.3e-3 at floor 0.1), so
    16-bit tensors on the CPU take the generic path. Elsewhere
    ``combine([(1.0, a), (alpha, b)], dtype)`` or a plain sum."""
    if FUSED_ADD and array_api_compat.is_torch_array(a) and (
            a.dtype.itemsize >= 4 or a.device.type != "cpu"):
        return a.add(b, alpha=alpha)
    if combine is not None:
        return combine([(1.0, a), (alpha, b)], a.dtype)
    return a + alpha * b


def gram(xp, x):
    """``x @ x^T`` (over the last two axes), symmetric to the last bit.

    With ``SYMMETRIC_GRAM`` on CuPy (2-D float32/float64): cuBLAS syrk computes
    one triangle (half the flops of a GEMM) and the other is mirrored from it.
    """
    if symmetric_gram_available(x):
        upper = _cupy_cublas().syrk("N", x, alpha=1.0, beta=0.0, lower=False)
        return mirror_triangle(xp, upper)
    return x @ xp.linalg.matrix_transpose(x)


def mirror_triangle(xp, t):
    """The symmetric matrix whose one triangle ``t`` holds (the other is zero).

    ``t + t^T`` doubles the diagonal; it is subtracted once. Works whichever
    triangle the BLAS filled, as long as the other one is zero.
    """
    full = t + xp.linalg.matrix_transpose(t)
    diag = xp.linalg.diagonal(t)
    n = t.shape[-1]
    eye = xp.eye(n, dtype=t.dtype, device=array_api_compat.device(t))
    return full - eye * diag[..., None, :]
