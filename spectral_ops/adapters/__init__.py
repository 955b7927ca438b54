"""Framework glue for spectral_ops, imported as ``spectral_ops.adapters``.

The framework-specific modules (``spectral_ops.adapters.torch``,
``spectral_ops.adapters.optax``) live here, outside the framework-free core,
so that ``import spectral_ops`` never imports a framework.
"""

from .direction import NONFINITE, SCALES, Direction, scale_factor  # framework-free

__all__ = ["Direction", "SCALES", "NONFINITE", "scale_factor"]
