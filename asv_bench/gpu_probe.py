"""Measurements beside the asv suite, for one short GPU call: prints to stdout.

    python asv_bench/gpu_probe.py [SECTIONS]     # comma-separated; default quick,cross,acc,jax

Sections (each CUDA-only part prints "no cuda" elsewhere):

* ``quick``: bfloat16 ``polar`` (Polar Express; ``jordan``, 5 steps, the
  arithmetic of Muon's Newton-Schulz) against ``torch.optim.Muon``'s own
  Newton-Schulz, medians of 20 synchronised calls, at four shapes;
* ``cross``: Polar Express against Gram Newton-Schulz and what ``auto`` picks,
  float32, single matrices and stacks: the data of
  ``routing.GRAM_MIN_WORK_ACCELERATOR``;
* ``acc``: each fast path of ``spectral_ops._fastpaths`` on and off, the error
  of ``power`` (p = 1/2, and -1/2 through the ridge route) against the float64
  SVD route, torch (CPU, CUDA) and CuPy: the data of ``tests/test_fast_paths.py``;
* ``prof``: torch profiler tables of bfloat16 ``polar`` and Muon's Newton-Schulz;
* ``svd``: float32 ``polar``/``clip``/``power`` at 4096 x 4096 and the time of
  ``torch.linalg.svd``'s drivers (``probe-d11d2a3d.txt`` holds an earlier form,
  section "TF32 on": it toggled ``allow_tf32``, which changes nothing with the
  precision pinned to "highest", and timed an SVD for tau inside ``clip``);
* ``jax``: jitted JAX ``polar`` and the optax ``muon`` update against the same
  iteration in torch, with the plan, and whether the lowered update holds an SVD;
* ``host``: bfloat16 ``polar`` on matrices too small to take GPU time (the host's
  cost per call: launches and scalar work) and the kernels it launches;
* ``clip``: float32 ``clip`` ``"polar"`` with the default design (nothing read on
  the device: ``s_max / tau <= 1 / floor`` assumed, which puts ``H`` and the sign
  in float64) against the same call given ``ratio = ||B||_F / tau`` (float32
  throughout, fewer steps), the SVD route and ``polar_express``, with plans and
  the error against the float64 SVD clip.

float32 means float32: TF32 is off. Outputs kept so far are in
``asv_bench/results/<machine>/probe-<commit>.txt``.
"""
import sys
import time
import traceback

import numpy as np

SECTIONS = sys.argv[1].split(",") if len(sys.argv) > 1 else ["quick", "cross", "acc", "jax"]
import torch  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"

import spectral_ops
import spectral_ops._fastpaths as fp
from spectral_ops import polar, power, clip
from spectral_ops.accuracy import to_numpy
from spectral_ops.testing import make_matrix


def sync():
    if CUDA:
        torch.cuda.synchronize()


def tmed(fn, n=10):
    fn(); sync()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def section(name):
    print(f"\n===== {name} =====", flush=True)


def acc():
    section("fast-path accuracy: errors against the exact map (float64 SVD / svd route)")
    try:
        import cupy
    except Exception:
        cupy = None
    backends = [("torch_cpu", lambda b, dt: torch.tensor(b, dtype=getattr(torch, dt)))]
    if CUDA:
        backends.append(("torch_cuda", lambda b, dt: torch.tensor(b, dtype=getattr(torch, dt), device="cuda")))
    if cupy is not None and CUDA:
        backends.append(("cupy", lambda b, dt: cupy.asarray(b.astype(dt))))
    cases = [("power", "float64", 0.5), ("power_ridge", "float32", -0.5), ("power_ridge", "float64", -0.5),
             ("power", "float32", 0.5)]
    for call, dt, p in cases:
        for bname, mk in backends:
            for shape in [(48, 80), (80, 48), (3, 32, 40)]:
                for seed in range(4):
                    b = make_matrix("ill", shape, cond=1e2, seed=seed)
                    ref = to_numpy(power(b, p, method="svd"))  # float64 numpy: exact map (ridge included)
                    B = mk(b, dt)
                    row = []
                    for switch in ("FUSED_GEMM", "SYMMETRIC_GRAM", "FUSED_ADD"):
                        # syrk is CuPy's only, the fused add torch's only
                        if {"SYMMETRIC_GRAM": bname != "cupy",
                                "FUSED_ADD": bname == "cupy"}.get(switch, False):
                            continue
                        old = getattr(fp, switch)
                        try:
                            setattr(fp, switch, True)
                            on = to_numpy(power(B, p, method="newton"))
                            setattr(fp, switch, False)
                            off = to_numpy(power(B, p, method="newton"))
                        finally:
                            setattr(fp, switch, old)
                        nr = np.linalg.norm(ref)
                        row.append(f"{switch} on {np.linalg.norm(on - ref) / nr:.3e} off {np.linalg.norm(off - ref) / nr:.3e}"
                                   f" maxdiff/max {np.abs(on - off).max() / np.abs(off).max():.2e}")
                    print(f"{call:12s} {dt} {bname:10s} {str(shape):12s} seed {seed}: " + " | ".join(row), flush=True)


def prof():
    section("profile: bf16 polar 4096x4096 (polar_express) and gemm floor")
    if not CUDA:
        print("no cuda"); return
    from torch.profiler import profile, ProfilerActivity
    for shape in [(4096, 4096), (4096, 16384)]:
        B = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0)).bfloat16()
        plan = spectral_ops.polar_plan(B, method="polar_express")
        print(shape, "plan:", plan)
        # the fused first-step sum (spectral_ops._fastpaths.FUSED_ADD) on and off
        old = fp.FUSED_ADD
        try:
            for on in (True, False, True, False):
                fp.FUSED_ADD = on
                print("polar_express FUSED_ADD", on, "median ms",
                      1e3 * tmed(lambda: polar(B, method="polar_express")))
        finally:
            fp.FUSED_ADD = old
        for method in ("polar_express", "jordan"):
            kw = {"steps": 5} if method == "jordan" else {}
            f = lambda: polar(B, method=method, **kw)
            print(method, "median ms", 1e3 * tmed(f))
            f(); sync()
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
                for _ in range(3):
                    f()
                sync()
            print(pr.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
        from spectral_ops.testing import torch_muon_newton_schulz
        ref, why = torch_muon_newton_schulz()
        if ref is not None:
            f = lambda: ref(B)
            print("torch_muon_ns median ms", 1e3 * tmed(f))
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
                for _ in range(3):
                    f()
                sync()
            print(pr.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


def cross():
    section("gram vs polar_express crossover, torch CUDA, float32 (TF32 off) and plans; ms median of 10")
    if not CUDA:
        print("no cuda"); return
    shapes = [(256, 1024), (512, 2048), (768, 3072), (1024, 4096), (2048, 8192), (1024, 8192),
              (4096, 16384), (16, 256, 1024), (64, 256, 1024)]
    for shape in shapes:
        B = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        res = []
        for method in ("polar_express", "gram", "auto"):
            plan = spectral_ops.polar_plan(B, method=method)
            t = tmed(lambda: polar(B, method=method))
            res.append(f"{method} {1e3 * t:.3f} ms ({plan.method}, {plan.matmuls} products)")
        print("x".join(map(str, shape)) + ": " + "; ".join(res), flush=True)


def svd():
    section("float32 4096x4096 (TF32 off): the maps, and the SVD drivers")
    if not CUDA:
        print("no cuda"); return
    B = torch.randn((4096, 4096), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    tau = 0.5 * torch.linalg.matrix_norm(B, 2).item()  # once, outside the timing
    t = tmed(lambda: polar(B), n=5)
    tc = tmed(lambda: clip(B, tau), n=3)
    tp = tmed(lambda: power(B, 0.5), n=3)
    print(f"polar {1e3 * t:.1f} ms, clip (tau = s_max / 2) {1e3 * tc:.1f} ms, "
          f"power 1/2 {1e3 * tp:.1f} ms", flush=True)
    for driver in ("gesvd", "gesvdj", "gesvda"):
        try:
            def f():
                u, s, vh = torch.linalg.svd(B, full_matrices=False, driver=driver)
                return u @ vh
            print(f"torch.linalg.svd driver={driver}: {1e3 * tmed(f, n=1):.0f} ms", flush=True)
        except Exception as exc:
            print(driver, "failed", exc)


def jaxsec():
    section("JAX jitted polar and the optax muon update vs torch, float32 1024x4096 (TF32 off / highest)")
    try:
        import jax, jax.numpy as jnp, optax
        jax.config.update("jax_default_matmul_precision", "highest")
        from spectral_ops.adapters import optax as sopt
    except Exception as exc:
        print("jax unavailable", exc); return
    print("jax devices", jax.devices())
    b = np.random.default_rng(0).standard_normal((1024, 4096)).astype(np.float32)
    xj = jnp.asarray(b)
    for method in ("polar_express", "jordan", "auto"):
        kw = {"steps": 5} if method == "jordan" else {}
        plan = spectral_ops.polar_plan(xj, method=method, **kw)
        f = jax.jit(lambda x: polar(x, method=method, **kw))
        f(xj).block_until_ready()
        ts = []
        for _ in range(10):
            t0 = time.perf_counter(); f(xj).block_until_ready(); ts.append(time.perf_counter() - t0)
        xt = torch.tensor(b, device=DEV)
        tt = tmed(lambda: polar(xt, method=method, **kw))
        print(f"{method}: jax {1e3 * np.median(ts):.3f} ms, torch {1e3 * tt:.3f} ms, ratio {np.median(ts) / tt:.2f};"
              f" plan {plan.method} {plan.matmuls} products", flush=True)
    params = {"w": jnp.asarray(b)}
    tx = sopt.muon(0.02)
    state = tx.init(params)
    upd = jax.jit(lambda g, s, p: tx.update(g, s, p))
    g = {"w": jnp.asarray(b)}
    u, s2 = upd(g, state, params); jax.block_until_ready(u)
    ts = []
    for _ in range(10):
        t0 = time.perf_counter(); u, s2 = upd(g, state, params); jax.block_until_ready(u); ts.append(time.perf_counter() - t0)
    print(f"optax muon update 1024x4096: {1e3 * np.median(ts):.3f} ms; lowered has svd: "
          f"{'svd' in upd.lower(g, state, params).as_text().lower()}", flush=True)
    from spectral_ops.adapters.torch import Muon
    p = torch.nn.Parameter(torch.tensor(b, device=DEV))
    opt = Muon([p], lr=0.02)
    p.grad = torch.tensor(b, device=DEV)
    print(f"torch Muon step 1024x4096: {1e3 * tmed(lambda: opt.step()):.3f} ms", flush=True)


def clipsec():
    section("float32 clip (TF32 off): default design vs a given ratio; ms median of 5")
    if not CUDA:
        print("no cuda"); return
    for shape in [(4096, 4096), (1024, 4096), (768, 3072)]:
        B = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        s = torch.linalg.svdvals(B.double())
        tau = float(s.median())  # once, outside the timing
        ratio = float(torch.linalg.matrix_norm(B.double())) / tau
        u, _, vh = torch.linalg.svd(B.double(), full_matrices=False)
        exact = (u * s.clamp(max=tau)) @ vh
        res = []
        for label, kw in (("default", {}), ("ratio", {"ratio": ratio})):
            plan = spectral_ops.clip_plan(B, tau, method="polar", **kw)
            y = clip(B, tau, method="polar", **kw)
            err = float(torch.linalg.matrix_norm(y.double() - exact) / torch.linalg.matrix_norm(exact))
            t = tmed(lambda: clip(B, tau, method="polar", **kw), n=5)
            res.append(f"{label} {1e3 * t:.2f} ms ({plan.matmuls} products, {plan.polar_steps}+"
                       f"{plan.sign_steps} steps, sign {plan.sign_dtype or 'float32'}, "
                       f"rel err {err:.2e})")
        t_svd = tmed(lambda: clip(B, tau, method="svd"), n=3)
        t_pe = tmed(lambda: polar(B, method="polar_express"), n=5)
        print("x".join(map(str, shape)) + f" (||B||_F/tau {ratio:.1f}): " + "; ".join(res)
              + f"; svd {1e3 * t_svd:.1f} ms; polar_express {1e3 * t_pe:.2f} ms", flush=True)


def host():
    section("host overhead: bfloat16 polar on matrices too small to take GPU time; us, median of 50")
    if not CUDA:
        print("no cuda"); return
    from spectral_ops.testing import torch_muon_newton_schulz
    ref, why = torch_muon_newton_schulz()
    for shape in [(8, 32), (256, 256), (4, 256, 256)]:
        B = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0)).bfloat16()
        r = {"polar_express": tmed(lambda: polar(B, method="polar_express"), 50),
             "jordan": tmed(lambda: polar(B, method="jordan", steps=5), 50)}
        if ref is not None and B.ndim == 2:
            r["torch_muon_ns"] = tmed(lambda: ref(B), 50)
        # kernels launched per call (each is at least one host-side launch)
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as pr:
            polar(B, method="polar_express"); sync()
        # kernels only (no memcpy/memset or profiler records); ops without the sync
        kernels = sum(1 for e in pr.events() if e.device_type.name == "CUDA"
                      and not e.name.startswith(("Memcpy", "Memset", "Activity")))
        ops = sum(1 for e in pr.events() if e.device_type.name == "CPU" and e.cpu_parent is None
                  and not e.name.startswith("cuda"))
        print("x".join(map(str, shape)), {k: round(1e6 * v, 1) for k, v in r.items()},
              f"polar_express per call: {kernels} CUDA kernels, {ops} top-level ops", flush=True)


def quick():
    section("bf16 polar: medians of 20 calls (ms)")
    if not CUDA:
        print("no cuda"); return
    from spectral_ops.testing import torch_muon_newton_schulz
    ref, why = torch_muon_newton_schulz()
    for shape in [(4096, 4096), (4096, 16384), (1024, 4096), (768, 3072)]:
        B = torch.randn(shape, device="cuda", generator=torch.Generator("cuda").manual_seed(0)).bfloat16()
        r = {"polar_express": tmed(lambda: polar(B, method="polar_express"), 20),
             "jordan": tmed(lambda: polar(B, method="jordan", steps=5), 20),
             "torch_muon_ns": tmed(lambda: ref(B), 20)}
        print(shape, {k: round(1e3 * v, 3) for k, v in r.items()},
              "jordan/torch_muon_ns", round(r["jordan"] / r["torch_muon_ns"], 3), flush=True)


for name in SECTIONS:
    fn = {"quick": quick, "acc": acc, "prof": prof, "cross": cross, "svd": svd, "jax": jaxsec,
          "clip": clipsec, "host": host}[name]
    try:
        fn()
    except Exception:
        traceback.print_exc()
