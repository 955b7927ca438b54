r"""The polar factor :math:`\operatorname{polar}(B) = UV^T` of :math:`B = U\,\mathrm{diag}(s)\,V^T`.

Methods (cost for an ``m x n`` input oriented so that ``m <= n``; one "product"
is one matrix multiplication; flops count ``2 m n k`` per ``(m x k)(k x n)``):

``"polar_express"``
    Per-step minimax-optimal odd quintics (Polar Express). 3 products a step:
    ``A = XX^T`` (m x m), ``A @ A``, ``(bA + cA^2) X``. The step count comes from
    ``floor`` and ``tol`` (worst-case error guaranteed in exact arithmetic). For
    ``tol >= 1e-3`` (32/64-bit) the schedule may mix in minimax degree-9 steps
    (4 products: ``A``, ``A @ A``, ``A^2 (cI + dA + eA^2)``, ``(...) X``) where
    they reach ``tol`` with fewer products (our own extension; docs/polar.md).
``"jordan"``
    Muon's classic quintic (3.4445, -4.7750, 2.0315), 5 steps by default; the
    same arithmetic as ``torch.optim.Muon`` and ``optax.contrib.muon``. It does
    not converge: singular values end in roughly [0.68, 1.13].
``"gram"``
    Gram Newton-Schulz: the Polar Express polynomials ``p(x) = x h(x^2)`` run on
    ``R = XX^T`` (m x m) and an accumulated ``Q`` with ``X_t = Q X``; about
    4 m x m products a step and six ``m x n`` ones in all, fewer flops than
    ``"polar_express"`` when ``n > 1.5 m``. Restarted after step 2 (``X <- QX``,
    ``R <- XX^T``, ``Q <- I``) so round-off in ``R`` cannot grow; the last step
    runs on ``X = QX`` itself, which gives Polar Express's band.
``"qdwh"``
    QR-based dynamically weighted Halley iteration (Nakatsukasa-Bai-Gygi),
    switching to a linear-solve (Cholesky-form) step once the weight ``c`` is
    small. Accurate to the working precision for any condition number, at
    most 6 iterations in float64; uses ``linalg.qr`` and ``linalg.solve``.
    Being accurate down to ``eps * s_max``, it cannot tell round-off-level
    "zero" singular values of a rank-deficient input from tiny true ones: it
    maps them into [0, 1], often near 1. Use ``"svd"`` for a rank-revealing
    cut-off.
``"svd"``
    Exact reference through the thin SVD; singular values at or below
    ``max(m, n) * eps * s_max`` count as zero. 16-bit inputs are decomposed in
    float32 (as QDWH and Gram's recurrence run): no library has a 16-bit SVD.
``"eigh"``
    The Gram matrix :math:`BB^T = W\,\mathrm{diag}(s^2)\,W^T` formed in float64
    and LAPACK's symmetric eigensolver, then
    :math:`W\,\mathrm{diag}((s^2 + \delta^2)^{-1/2})\,W^T B` in float64, rounded
    once (``power``'s ``"eigh"`` at ``p = 0``; :math:`\delta` a ridge at the
    eigensolver's round-off). As with ``"svd"``, singular values at or below
    ``max(m, n) * eps * s_max`` (``eps`` of float32, at most ``floor / 10``)
    count as zero: the
    round-off of a rank-deficient float32 input sits at the ridge's scale and
    would otherwise come out between 0.03 and 0.3. float32 and 16-bit inputs,
    ``floor`` from ``1e-4`` up.
``"auto"``
    The fastest method that meets the accuracy asked for: see :func:`polar_plan`.
"""

from __future__ import annotations

from . import _backbone as bb
from .kernels import polar_factor
from .plans import PolarPlan
from .routing import POLAR_METHODS, plan_polar

__all__ = ["polar", "polar_plan", "PolarPlan", "POLAR_METHODS"]


def polar_plan(B, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
               tol: float | None = None, compute_dtype=None) -> PolarPlan:
    """What :func:`polar` would run on ``B``, without running it.

    Takes the same arguments as :func:`polar` and returns a :class:`PolarPlan`.
    ``method="auto"`` resolves as follows:

    * when ``tol`` is below what the matmul iterations reach in the compute dtype
      (``tol < 10 eps``; in 16-bit dtypes, below the dtype's default ``tol``),
      ``"qdwh"`` on accelerators and ``"svd"`` on CPUs;
    * on CPUs, for float32 NumPy and torch inputs where the library computes
      in float64, ``floor >= 1e-4`` and ``steps`` is not given: ``"eigh"``
      where its flops undercut the iteration's
      (:func:`~spectral_ops.routing.eigh_pays`: wide inputs from a short side
      of about 256, large squares, single matrices with a short side below
      64), else the iteration below;
    * otherwise on CPUs, unless ``steps`` is given, ``"svd"`` where LAPACK's SVD
      measured faster than the Polar Express iteration: float64; NumPy float32
      with short side below 64;
      torch and JAX single matrices (stacks of fewer than 16) except those of
      short side 1024 or more and aspect ratio 4 or more. Otherwise
      ``"polar_express"``. Where that rule says ``"svd"`` for a float32 or
      16-bit input, ``"eigh"`` instead wherever the library computes in float64
      and ``floor >= 1e-4`` (faster than the SVD; docs/polar.md);
    * on accelerators, ``"polar_express"``;
    * and, unless ``steps`` is given, ``"gram"`` in place of ``"polar_express"``
      where its products cost at most ``routing.GRAM_FLOP_RATIO`` (0.8) of the
      flops (aspect ratio about 2.6 and up), for 32/64-bit compute dtypes and,
      on accelerators, inputs of at
      least ``routing.GRAM_MIN_WORK_ACCELERATOR`` (1.5e9) multiply-adds per
      product (``batch * m * m * n``; 768 x 3072 and up for one matrix).
    """
    xp = bb.validate_array(B, "B")
    return plan_polar(xp, B, bb.resolve_dtype(xp, compute_dtype, B.dtype), method, steps,
                      floor, tol)


def polar(B, /, *, method: str = "auto", steps: int | None = None, floor: float = 1e-3,
          tol: float | None = None, compute_dtype=None, check_finite: bool = False):
    r"""Polar factor :math:`UV^T` of ``B`` (the Muon update direction).

    For :math:`B = U\,\mathrm{diag}(s)\,V^T` returns :math:`U\,\mathrm{diag}(f(s))\,V^T`
    with :math:`f(s) = 1` for :math:`s > 0` and :math:`f(0) = 0` (partial polar
    factor: zero singular values stay zero; tiny ones end in :math:`[0, 1]`).

    Parameters
    ----------
    B : array, shape (..., m, n)
        Real floating array of any array-API library (NumPy, CuPy, PyTorch, JAX,
        ...). Leading dimensions are a batch. Never modified.
    method : {"auto", "polar_express", "jordan", "gram", "qdwh", "svd", "eigh"}
        See the method list in the module docstring and :func:`polar_plan`.
    steps : int, optional
        Number of iterations. Default: the fewest that meet ``tol``
        (``"polar_express"``, ``"gram"``, ``"qdwh"``), 5 for ``"jordan"``.
    floor : float
        Relative singular value floor, in (0, 1): every singular value
        :math:`s \ge \text{floor}\cdot s_{max}` is mapped to within ``tol`` of 1.
        Smaller ones are mapped into :math:`[0, 1 + \text{tol}]`.
    tol : float, optional
        Worst-case :math:`|f(s) - 1|` above the floor, in exact arithmetic.
        Default by compute dtype: 1e-12 (float64), 1e-4 (float32), 1e-2
        (float16), 2e-2 (bfloat16); round-off adds to it.
    compute_dtype : dtype or str, optional
        Dtype to iterate in (e.g. ``"bfloat16"`` for speed on GPUs). The result
        is returned in ``B``'s dtype. Default: ``B``'s dtype.
    check_finite : bool
        Raise ``ValueError`` if ``B`` holds NaN or inf (one host sync).

    Returns
    -------
    array, shape (..., m, n)
        Same library, device and dtype as ``B``.

    Notes
    -----
    All matmul iterations first scale ``B`` to unit Frobenius norm (after an
    exact power-of-two prescale, so scales from 1e-30 to 1e30 are safe in
    float32). ``"polar_express"`` and ``"gram"`` then tighten the scale for
    free with the first step's ``A^2 = (XX^T)^2``: since
    :math:`\|A^2\|_F^{1/4} = (\sum s^8)^{1/8} \in [s_{max}, m^{1/8} s_{max}]`,
    dividing by it loses at most a factor :math:`m^{1/8}` (2.8 at m = 4096)
    at the bottom of the spectrum instead of the :math:`\sqrt{m}` of the
    Frobenius norm (this rescaling is our own).

    Examples
    --------
    >>> import numpy as np
    >>> from spectral_ops import polar
    >>> B = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    >>> Q = polar(B)
    >>> s = np.linalg.svd(Q, compute_uv=False)
    >>> bool(abs(s - 1).max() < 1e-3)
    True
    """
    prep = bb.prepare(B, compute_dtype=compute_dtype, check_finite=check_finite)
    plan = plan_polar(prep.xp, B, prep.dtype, method, steps, floor, tol)
    if prep.m == 0:
        return bb.finish(prep.xp.zeros_like(prep.x), prep)
    # the Frobenius scaling starts from prepare's max|B| (no second read of B)
    return bb.finish(polar_factor(prep.xp, prep.x, plan, amax=prep.amax), prep)
