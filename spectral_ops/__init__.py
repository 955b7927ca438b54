r"""spectral_ops: spectral maps of matrices by matrix-product iterations.

For :math:`B = U\,\mathrm{diag}(s)\,V^T`:

* :func:`polar` -- :math:`UV^T`, the Muon update direction.
* :func:`clip` -- :math:`U\min(s, \tau)V^T`, MuCon's clipped direction.
* :func:`power` -- :math:`U s^p V^T`, Muon^p's fractional powers.

Every function accepts arrays of any array-API library (NumPy, CuPy, PyTorch,
JAX, ...), batched over leading dimensions, and returns an array of the
caller's library, device and dtype.
"""

from .accuracy import SpectralReport, spectral_report
from .clip import clip, clip_plan
from .coefficients import minimax_odd_quintic, polar_express_coefficients, polar_express_schedule
from .plans import ClipPlan, PolarPlan, PowerPlan
from .polar import polar, polar_plan
from .power import power, power_plan, rational_exponent
from .routing import CLIP_METHODS, POLAR_METHODS, POWER_METHODS

__version__ = "0.1.0"

__all__ = [
    "polar",
    "polar_plan",
    "PolarPlan",
    "POLAR_METHODS",
    "clip",
    "clip_plan",
    "ClipPlan",
    "CLIP_METHODS",
    "power",
    "power_plan",
    "PowerPlan",
    "POWER_METHODS",
    "rational_exponent",
    "spectral_report",
    "SpectralReport",
    "polar_express_coefficients",
    "polar_express_schedule",
    "minimax_odd_quintic",
    "__version__",
]
