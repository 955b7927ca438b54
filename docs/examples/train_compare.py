"""Train the same small network with Muon, MuCon, Muon^p, DynMuon and AdamW.

Task (no download): a teacher-student classification. A fixed random teacher
MLP (64 -> 256 -> 256 -> 10, tanh) labels Gaussian inputs; a student of the same
shape learns the labels from fresh batches (cross-entropy). Hidden matrices get
the spectral update, biases and the output layer AdamW (the usual Muon recipe),
and AdamW alone is the baseline. Every run: same seed, same batches.

Run:  python docs/examples/train_compare.py [--steps 300] [--out docs/_static/train_compare.png]
Prints a table (final loss averaged over the last 20 steps, accuracy on a held-out
batch, steps per second) and saves the loss curves. The spectral optimizers run
with their defaults (scale-invariant directions) and, for MuCon, Muon^p and
DynMuon, also with ``normalize=False`` (the literal maps; "literal" rows, not drawn).
"""

from __future__ import annotations

import argparse
import time

import torch

from spectral_ops.adapters.torch import DynMuon, MuCon, Muon, MuonP
from spectral_ops.schedules import dynmuon_schedule

D_IN, WIDTH, CLASSES, BATCH = 64, 256, 10, 256


def mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(D_IN, WIDTH), torch.nn.Tanh(),
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(),
        torch.nn.Linear(WIDTH, CLASSES))


def optimizers(model, steps):
    hidden = [model[0].weight, model[2].weight]
    rest = [model[0].bias, model[2].bias, model[4].weight, model[4].bias]
    groups = [{"params": hidden}, {"params": rest, "spectral": False}]
    common = dict(lr=0.02, momentum=0.95, weight_decay=0.0, adamw_lr=3e-3)
    return {
        "Muon": lambda: Muon(groups, **common),
        "MuCon (tau=0.5)": lambda: MuCon(groups, tau=0.5, **common),
        "Muon^p (p=1/2)": lambda: MuonP(groups, p=0.5, **common),
        "DynMuon": lambda: DynMuon(groups, p_schedule=dynmuon_schedule(steps), **common),
        # the literal maps (absolute tau, raw powers), the defaults before `normalize`
        "MuCon literal": lambda: MuCon(groups, tau=0.5, normalize=False, **common),
        "Muon^p literal": lambda: MuonP(groups, p=0.5, normalize=False, **common),
        "DynMuon literal": lambda: DynMuon(groups, p_schedule=dynmuon_schedule(steps),
                                           normalize=False, **common),
        "AdamW": lambda: torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95)),
    }


def run(name, steps, teacher):
    model = mlp(1)
    opt = optimizers(model, steps)[name]()
    gen = torch.Generator().manual_seed(2)
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        x = torch.randn(BATCH, D_IN, generator=gen)
        with torch.no_grad():
            y = teacher(x).argmax(-1)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rate = steps / (time.perf_counter() - t0)
    x = torch.randn(4096, D_IN, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == teacher(x).argmax(-1)).float().mean())
    return losses, rate, acc


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="docs/_static/train_compare.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    teacher = mlp(0)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher[4].weight.mul_(4.0)  # sharper teacher logits
    curves = {}
    print(f"{'optimizer':18s} {'first loss':>10s} {'final loss':>10s} {'accuracy':>9s} {'steps/s':>8s}")
    for name in ("Muon", "MuCon (tau=0.5)", "Muon^p (p=1/2)", "DynMuon", "AdamW",
                 "MuCon literal", "Muon^p literal", "DynMuon literal"):
        losses, rate, acc = run(name, args.steps, teacher)
        if "literal" not in name:  # the figure shows the defaults
            curves[name] = losses
        final = sum(losses[-20:]) / 20
        print(f"{name:18s} {losses[0]:10.4f} {final:10.4f} {acc:9.3f} {rate:8.1f}")
    if args.out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
        for name, losses in curves.items():
            k = 10  # moving average over 10 steps
            smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                      for i in range(len(losses))]
            ax.plot(smooth, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (10-step mean)")
        ax.set_yscale("log")
        ax.set_title("Teacher-student MLP, 64-256-256-10, batch 256 (CPU)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out)
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
