"""Plans: everything a spectral map runs, decided before it runs.

A plan is built on the host from the input's shape, dtype and device and the
caller's options (:mod:`spectral_ops.routing`), and is then the executor's single
input: the coefficients, QDWH weights, restart point, floors and ridges that the
kernels (:mod:`spectral_ops.kernels`) consume are all here, so a plan printed is
exactly what runs, and its ``matmuls`` count equals the matrix products made
(tested by counting them).

Plans are frozen dataclasses of plain Python numbers and tuples: hashable, cheap
to build, and free of arrays, so the same plan serves every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

__all__ = ["PolarPlan", "ClipPlan", "PowerPlan"]

Coefficients = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class PolarPlan:
    """What :func:`~spectral_ops.polar` runs for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved): ``"polar_express"``,
        ``"gram"``, ``"jordan"``, ``"qdwh"`` or ``"svd"``.
    steps : int
        Iterations (0 for ``"svd"``).
    matmuls : int
        Matrix products per matrix (QR, solves and SVDs not included; the SVD
        routes' one reconstruction product is).
    flops : float
        Flops of those products per matrix (``2 m n k`` each).
    error_bound : float or None
        Guaranteed worst-case ``|sigma_out - 1|`` for singular values at or
        above ``floor * s_max``, in exact arithmetic (None where no such bound
        is known, e.g. ``"jordan"``, which does not converge, and ``"qdwh"``,
        which converges to working precision).
    lower : float or None
        The design lower end of the normalised spectrum (``"polar_express"``,
        ``"gram"``); None for the other methods.
    floor : float
        The relative singular-value floor the plan was designed for.
    coefficients : tuple of tuples
        The odd polynomials, one per step, coefficients from :math:`x` up:
        ``(a, b, c)`` for a quintic, five for a degree-9 step (``"polar_express"``
        with ``tol >= 1e-3``; ``"gram"`` and ``"jordan"`` take quintics).
    qdwh_weights : tuple of (a, b, c)
        The dynamically weighted Halley weights, one per step (``"qdwh"``).
    restart_after : int or None
        Gram Newton-Schulz's restart point (``"gram"``).
    eps : float
        Machine epsilon of the compute dtype (the margin of the Gram-based
        rescaling, see :func:`~spectral_ops.polar`).
    """

    method: str
    steps: int
    matmuls: int
    flops: float
    error_bound: float | None
    lower: float | None
    floor: float = 1e-3
    coefficients: Coefficients = field(default=(), repr=False)
    qdwh_weights: Coefficients = field(default=(), repr=False)
    restart_after: int | None = None
    eps: float = 0.0


@dataclass(frozen=True)
class ClipPlan:
    """What :func:`~spectral_ops.clip` runs for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved): ``"polar"``, ``"newton"``
        or ``"svd"``.
    polar_steps : int
        Iterations of the polar factor (0 for ``"svd"``).
    sign_steps : int
        Iterations of the sign of ``H - tau I`` (0 for ``"svd"``).
    matmuls : int
        Matrix products per matrix (QR, solves and SVDs not included; the SVD
        routes' one reconstruction product is).
    flops : float
        Flops of those products per matrix.
    polar_iteration : str or None
        For ``"polar"``: the iteration of the polar factor, ``"polar_express"``
        (Gram Newton-Schulz's ``P`` costs clip accuracy on nearly low-rank
        inputs; see :mod:`spectral_ops.routing`).
    polar : PolarPlan or None
        The plan of the polar factor ``P`` (run in float32 or better).
    sign : PolarPlan or None
        The plan of the sign of the symmetric ``H - tau I`` (or of the stacked
        ``[H - tau I, eps tau I]`` with smoothing).
    eps : float or None
        Smoothing width as a fraction of ``tau`` (None: the hard clip).
    polish_dtype : str or None
        ``"float64"`` where the projector refinement and the last product (the
        ``"svd"`` route: the whole SVD) run in float64: float32 inputs with a
        large ``s_max / tau`` (see :func:`~spectral_ops.routing.plan_clip`);
        None: the wide compute dtype.
    sign_dtype : str or None
        ``"float64"`` where ``H = B P^T`` and the sign iteration run in float64
        too (float32 inputs with ``s_max / tau`` above about 840); None: the
        wide compute dtype.
    """

    method: str
    polar_steps: int
    sign_steps: int
    matmuls: int
    flops: float
    polar_iteration: str | None = None
    polar: PolarPlan | None = field(default=None, repr=False)
    sign: PolarPlan | None = field(default=None, repr=False)
    eps: float | None = None
    polish_dtype: str | None = None
    sign_dtype: str | None = None


@dataclass(frozen=True)
class PowerPlan:
    """What :func:`~spectral_ops.power` runs for a given input.

    Attributes
    ----------
    method : str
        The method that runs (``"auto"`` resolved), or ``"polar"`` /
        ``"identity"`` for ``p = 0`` / ``p = 1`` without a ridge.
    p : Fraction
        The exponent used.
    route : str
        ``"polar-root"`` (``H^p P``), ``"gram-ridge"`` (ridge form), ``"svd"``,
        ``"polar"`` or ``"identity"``.
    polar_steps : int
        Steps of the polar factor (``"polar-root"`` and ``"polar"``).
    root_steps : int
        Steps of the coupled inverse-root iteration.
    root : int
        ``r`` of the inverse ``r``-th root.
    polar_dtype : str or None
        The dtype the polar factor runs in where it is not the compute dtype:
        a 16-bit input's own (its early, contracting steps lose nothing
        there, as in :func:`~spectral_ops.polar`); ``H``, its root and the
        output run in float32. None: everything in the compute dtype.
    root_coefficients : tuple of (a, b, c)
        Its step polynomials :math:`Q = aI + bM + cM^2`: minimax steps
        (:func:`~spectral_ops.coefficients.root_schedule`) for ``"polar-root"``,
        Newton's for ``"gram-ridge"``.
    matmuls : int
        Matrix products per matrix.
    flops : float
        Their flops per matrix.
    polar_iteration : str or None
        For ``"polar-root"``: the iteration of the polar factor
        (``"polar_express"``); for ``p = 0``: the polar method that runs.
    polar : PolarPlan or None
        The nested plan of the polar factor (``"polar-root"``; for ``p = 0``
        the whole computation).
    eps : float or None
        The ridge relative to :math:`\\|B\\|_F` (``"gram-ridge"`` and ``"svd"``).
    floor : float or None
        The relative floor the plan was designed for.
    """

    method: str
    p: Fraction
    route: str
    polar_steps: int
    root_steps: int
    root: int
    matmuls: int
    flops: float
    polar_iteration: str | None = None
    root_coefficients: tuple = field(default=(), repr=False)
    polar_dtype: str | None = None
    polar: PolarPlan | None = field(default=None, repr=False)
    eps: float | None = None
    floor: float | None = None
