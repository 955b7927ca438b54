"""polar with JAX (jitted): Polar Express (default tol, and designed for Muon's band)
vs optax.contrib.muon's Newton-Schulz vs the SVD route, on the default JAX device
(CPU here; GPU where jax has one).

Compilation runs in setup; timed calls end with ``block_until_ready``.
"""

from __future__ import annotations

import numpy as np

import spectral_ops

from . import _common as c

SHAPES = ["256x1024", "512x512", "1024x4096", "16x256x256"]
#: ``pe_tol0.3``: Polar Express designed for |sigma - 1| <= 0.3 above 1e-3 s_max (15
#: products, Muon's count); ``pe_tol0.3_floor1e-2``: the same band above 1e-2 s_max
IMPLS = ["polar_express", "pe_tol0.3", "pe_tol0.3_floor1e-2", "jordan", "optax_muon_ns", "svd"]
BAND_DESIGNS = {"pe_tol0.3": dict(tol=0.3), "pe_tol0.3_floor1e-2": dict(tol=0.3, floor=1e-2)}


def _require_jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        raise NotImplementedError(f"jax is not installed: {exc}") from exc
    jax.config.update("jax_default_matmul_precision", "highest")
    return jax, jnp


class TimeJaxPolar:
    """Seconds per call of the jitted function, float32."""

    params = (SHAPES, IMPLS)
    param_names = ["shape", "impl"]
    number = 1
    rounds = 1
    repeat = (1, 5, 4.0)
    warmup_time = 0.0
    timeout = 600.0

    def setup(self, shape, impl):
        jax, jnp = _require_jax()
        B = jnp.asarray(np.asarray(c.gaussian_numpy(shape)))
        if impl == "optax_muon_ns":
            try:
                from optax.contrib._muon import orthogonalize_via_newton_schulz
            except ImportError as exc:
                raise NotImplementedError(f"optax.contrib.muon is not available: {exc}") from exc
            if B.ndim != 2:
                raise NotImplementedError("optax's Newton-Schulz is timed on 2-D matrices here")
            coefs = jnp.asarray([3.4445, -4.7750, 2.0315])
            f = jax.jit(lambda x: orthogonalize_via_newton_schulz(x, coefs, 5))
        elif impl in BAND_DESIGNS:
            kw = BAND_DESIGNS[impl]
            f = jax.jit(lambda x: spectral_ops.polar(x, method="polar_express", **kw))
        else:
            f = jax.jit(lambda x: spectral_ops.polar(x, method=impl))
        f(B).block_until_ready()  # compile outside the timed region
        self.fn = lambda: f(B).block_until_ready()

    def time_polar(self, shape, impl):
        self.fn()
