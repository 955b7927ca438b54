"""asv benchmarks of spectral_ops (see ../README.md).

One module per concern:

* ``bench_polar_numpy``     -- polar (auto, polar_express) vs the SVD route, NumPy
* ``bench_polar_torch_cpu`` -- polar (auto, polar_express) vs torch.linalg.svd, torch CPU
* ``bench_gram``            -- method="gram" vs "polar_express" at aspect ratio 4
* ``bench_overhead``        -- the array-API layer vs the same iteration in plain torch
* ``bench_accuracy``        -- track_* accuracy of the iterations (spectral_report)
* ``bench_gpu_torch``       -- torch on a CUDA device: time and peak memory
* ``bench_gpu_cupy``        -- CuPy on a CUDA device: time and memory-pool high water

Every benchmark whose backend (torch, CuPy, a CUDA device) is missing raises
``NotImplementedError`` in ``setup``, which asv reports as skipped.
"""
