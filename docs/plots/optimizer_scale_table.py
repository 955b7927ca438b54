"""Measure the learning-rate table of docs/optimizers.md and print it as Markdown.

One small task, the same data and initialisation in PyTorch and optax: a
teacher-student regression in which a fixed tanh MLP (32-64-64-8, weights
2 N(0, 1)/sqrt(fan_in)) labels 256 Gaussian inputs and a student of the same
shape (weights N(0, 1)/sqrt(fan_in), zero biases) learns them with the mean
squared error, full batch, 30 steps, every weight matrix on the spectral update
with ``lr=0.02`` and the optimizer's defaults otherwise (biases: AdamW with
each adapter's defaults). Each optimizer runs twice: with its defaults
(``normalize=True``: scale-invariant directions) and with ``normalize=False``
(the literal maps, as before the option existed), MuCon at ``tau=0.5`` in both.
Momentum SGD (the direction ``M`` itself, ``MuCon`` with an infinite radius) is
the reference for "barely moves". Run it from the repository root:

    python docs/plots/optimizer_scale_table.py          # the table, torch and optax
    python docs/plots/optimizer_scale_table.py extra    # tau, normalisers, s_max estimate

The Sphinx build does not run this script; paste its output into the page.
The test suite runs the same task (tests/test_adapters_torch.py and
tests/test_adapters_optax.py, ``*_one_learning_rate_*``).
"""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np

SIZES = (32, 64, 64, 8)
SAMPLES = 256
STEPS = 30
LR = 0.02


def task(seed: int = 0):
    """``(student weights [(out, in)], student biases, x, y)`` as NumPy float32."""
    from spectral_ops.testing import teacher_student_task

    return teacher_student_task(seed, SIZES, SAMPLES)


def torch_run(factory, steps: int = STEPS, seed: int = 0):
    """(first loss, last loss) of ``factory(params)`` on the task, PyTorch."""
    import torch
    ws, bs, x, y = task(seed)
    ws = [torch.nn.Parameter(torch.from_numpy(w)) for w in ws]
    bs = [torch.nn.Parameter(torch.from_numpy(b)) for b in bs]
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def loss_fn():
        h = x
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w.T + b
            if i < len(ws) - 1:
                h = torch.tanh(h)
        return ((h - y) ** 2).mean()
    opt = factory(ws + bs)
    first = float(loss_fn().detach())
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return first, float(loss_fn().detach())


def optax_run(tx, steps: int = STEPS, seed: int = 0):
    """(first loss, last loss) of the optax transformation ``tx`` on the task
    (flax layout: kernels ``(in, out)``), one jitted step."""
    import jax
    import jax.numpy as jnp
    import optax
    ws, bs, x, y = task(seed)
    params = {f"l{i}": {"kernel": jnp.asarray(w.T), "bias": jnp.asarray(b)}
              for i, (w, b) in enumerate(zip(ws, bs))}
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss_fn(p):
        h = x
        for i in range(len(ws)):
            h = h @ p[f"l{i}"]["kernel"] + p[f"l{i}"]["bias"]
            if i < len(ws) - 1:
                h = jnp.tanh(h)
        return jnp.mean((h - y) ** 2)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss_fn)(p), s, p)
        return optax.apply_updates(p, u), s
    state = tx.init(params)
    first = float(loss_fn(params))
    for _ in range(steps):
        params, state = step(params, state)
    return first, float(loss_fn(params))


def torch_rows():
    from spectral_ops.adapters import torch as st
    from spectral_ops.schedules import dynmuon_schedule
    half = Fraction(1, 2)
    return [
        ("Muon", lambda ps: st.Muon(ps, lr=LR), None),
        ("MuCon (tau = 0.5)", lambda ps: st.MuCon(ps, lr=LR, tau=0.5),
         lambda ps: st.MuCon(ps, lr=LR, tau=0.5, normalize=False)),
        ("Muon^p (p = 1/2)", lambda ps: st.MuonP(ps, lr=LR, p=half),
         lambda ps: st.MuonP(ps, lr=LR, p=half, normalize=False)),
        ("DynMuon", lambda ps: st.DynMuon(ps, lr=LR, p_schedule=dynmuon_schedule(STEPS)),
         lambda ps: st.DynMuon(ps, lr=LR, p_schedule=dynmuon_schedule(STEPS),
                               normalize=False)),
        ("momentum SGD (clip at tau = inf)", None,
         lambda ps: st.MuCon(ps, lr=LR, tau=1e30, normalize=False)),
    ]


def optax_rows():
    from spectral_ops.adapters import optax as so
    from spectral_ops.schedules import dynmuon_schedule
    half = Fraction(1, 2)
    return [
        ("Muon", lambda: so.muon(LR), None),
        ("MuCon (tau = 0.5)", lambda: so.mucon(LR, tau=0.5),
         lambda: so.mucon(LR, tau=0.5, normalize=False)),
        ("Muon^p (p = 1/2)", lambda: so.muon_p(LR, p=half),
         lambda: so.muon_p(LR, p=half, normalize=False)),
        ("DynMuon", lambda: so.dyn_muon(LR, p_schedule=dynmuon_schedule(STEPS)),
         lambda: so.dyn_muon(LR, p_schedule=dynmuon_schedule(STEPS), normalize=False)),
        ("momentum SGD (clip at tau = inf)", None,
         lambda: so.mucon(LR, tau=1e30, normalize=False)),
    ]


def tau_rows(taus=(0.25, 0.5, 1.0, 2.0), seeds=(0, 1, 2)):
    """MuCon's relative tau against Muon on the task (PyTorch): the loss ratio."""
    from spectral_ops.adapters import torch as st
    out = []
    muon = [torch_run(lambda ps: st.Muon(ps, lr=LR), seed=s)[1] for s in seeds]
    for t in taus:
        losses = [torch_run(lambda ps: st.MuCon(ps, lr=LR, tau=t), seed=s)[1] for s in seeds]
        out.append((t, losses, [x / m for x, m in zip(losses, muon)]))
    return muon, out


def normaliser_rows(p=Fraction(1, 2), n=256):
    """Spectral norm of the Muon^p direction (p = 1/2) of a 256 x 256 momentum
    under the two normalisers: the dual Schatten one (exact, through the SVD)
    and the s_max one that the adapters use (power-iteration estimate)."""
    from spectral_ops.adapters import Direction
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((n, n)))[0]
    v = np.linalg.qr(rng.standard_normal((n, n)))[0]
    spectra = {
        "flat, full rank": np.ones(n),
        "rank 1": np.r_[1.0, np.zeros(n - 1)],
        "rank 8": np.r_[np.ones(8), np.zeros(n - 8)],
        "power law s_i = i^-1": 1.0 / np.arange(1, n + 1),
        "gradient-like (1e-8 decay)": np.logspace(0, -8, n),
    }
    ours = Direction("power", method="svd", p=p)
    rows = []
    for name, sv in spectra.items():
        m = ((u * sv) @ v.T).astype(np.float32)
        q = float(p)
        fs = sv ** q
        dual = fs * (n / np.sum(sv * fs)) ** (q / (q + 1))
        rows.append((name, float(dual.max()), float(np.linalg.norm(ours(m), 2))))
    return rows


def smax_rows(iterations=(2, 4, 8, 16)):
    """Power-iteration estimate of s_max (fixed start) over the true s_max."""
    from spectral_ops.adapters import direction
    rng = np.random.default_rng(0)
    out = []
    for (m, n) in ((128, 128), (256, 1024), (1024, 1024)):
        x = rng.standard_normal((m, n)).astype(np.float32)
        s1 = np.linalg.norm(x.astype(np.float64), 2)
        ratios = []
        for k in iterations:
            old, direction.SMAX_ITERATIONS = direction.SMAX_ITERATIONS, k
            try:
                ratios.append(float(direction._smax_power(x, 1.0)) / s1)
            finally:
                direction.SMAX_ITERATIONS = old
        out.append((f"Gaussian {m} x {n}", ratios))
    return iterations, out


def print_extra_tables() -> None:
    muon, rows = tau_rows()
    print("MuCon's relative tau (PyTorch, 30 steps, seeds 0-2): loss / Muon's loss\n")
    print("| tau | seed 0 | seed 1 | seed 2 |\n| ---: | ---: | ---: | ---: |")
    for t, _, ratios in rows:
        print(f"| {t} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    print("\nSpectral norm of the Muon^p direction (p = 1/2), 256 x 256 momentum:\n")
    print("| momentum spectrum | dual Schatten normaliser | s_max normaliser (adapters) |")
    print("| --- | ---: | ---: |")
    for name, dual, ours in normaliser_rows():
        print(f"| {name} | {dual:.3f} | {ours:.3f} |")
    its, rows = smax_rows()
    print("\nPower-iteration estimate of s_max over the exact s_max (fixed start vector):\n")
    print("| matrix | " + " | ".join(f"{k} steps" for k in its) + " |")
    print("| --- |" + " ---: |" * len(its))
    for name, ratios in rows:
        print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")


def main() -> None:
    if sys.argv[1:] == ["extra"]:
        print_extra_tables()
        return
    frameworks = sys.argv[1:] or ["torch", "optax"]
    results = {}
    for fw in frameworks:
        rows, run = ((torch_rows(), torch_run) if fw == "torch"
                     else (optax_rows(), lambda f: optax_run(f())))
        for name, default, literal in rows:
            d = run(default) if default is not None else None
            lit = run(literal) if literal is not None else None
            results[(fw, name)] = (d, lit)
            print(f"# {fw} {name}: defaults {d}, normalize=False {lit}", file=sys.stderr)
    first = next(v for pair in results.values() for v in pair if v is not None)[0]
    print(f"Loss after {STEPS} steps at lr = {LR} (first loss {first:.3f}):\n")
    print("| optimizer | " + " | ".join(
        f"{fw}: defaults | {fw}: `normalize=False`" for fw in frameworks) + " |")
    print("| --- |" + " ---: | ---: |" * len(frameworks))
    names = [n for (fw, n) in results if fw == frameworks[0]]
    for name in names:
        cells = []
        for fw in frameworks:
            d, lit = results[(fw, name)]
            cells += [f"{d[1]:.3f}" if d else "", f"{lit[1]:.3f}" if lit else ""]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
