"""polar's "eigh" against the iterations on this CPU: the data behind ``routing.eigh_pays``.

Times ``polar(B, method=...)`` for "polar_express", "gram" and "eigh" (float32,
Gaussian, default ``tol`` and ``floor``; best of 3 to 15 calls within about a
second) over single matrices, stacks of 4 and 16, square and aspect ratio 4,
and a few aspect-2 shapes, and prints eigh's time over the faster iteration's
with the route ``auto`` takes. Run with the library installed::

    python asv_bench/eigh_grid.py numpy    # or torch

The fitted constants (``EIGH_GEMMS``, ``EIGH_GEMMS_M``, ``EIGH_OVERHEAD_SIDE``)
belong to the machine they were fitted on; outputs are kept under
``results/<machine>/eigh-grid-*.txt``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import spectral_ops as so


def best_of(fn, budget=1.0, least=3, most=15):
    times, start = [], time.perf_counter()
    while len(times) < least or (len(times) < most and time.perf_counter() - start < budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def shapes():
    out = []
    for batch in (1, 4, 16):
        for m in (32, 64, 128, 256, 512, 1024):
            for aspect in (1, 4):
                if batch * m**3 * aspect > 1.1 * 1024**3 or (batch > 1 and m > 256):
                    continue
                out.append(((batch,) if batch > 1 else ()) + (m, aspect * m))
    return out + [(2048, 2048), (256, 512), (512, 1024), (1024, 2048)]


def main(backend):
    rng = np.random.default_rng(0)
    if backend == "torch":
        import torch

        torch.set_num_threads(2)
    for shape in shapes():
        B = rng.standard_normal(shape).astype(np.float32)
        if backend == "torch":
            B = torch.from_numpy(B)
        t = {}
        for method in ("polar_express", "gram", "eigh"):
            so.polar(B, method=method)  # warm-up, coefficient cache
            t[method] = best_of(lambda: so.polar(B, method=method))
        iteration = min(t["polar_express"], t["gram"])
        print(backend, shape, " ".join(f"{k}={v * 1e3:.3f}ms" for k, v in t.items()),
              f"eigh/iteration={t['eigh'] / iteration:.2f}", "auto:",
              so.polar_plan(B).method, flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "numpy")
