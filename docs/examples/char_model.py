"""Train a small GPT-style character model with AdamW, torch.optim.Muon and our optimizers.

Data (no download): the English text of Python's own help topics,
``pydoc_data.topics`` (about 465 KB; the values joined in the order of their
sorted keys). The vocabulary is the set of characters of the text; the last 10%
is the validation split.

Model: a decoder-only transformer, pre-LayerNorm, learned position embeddings,
2 blocks of causal self-attention (4 heads, separate q, k, v and output
projections) and a GELU MLP (4x), d_model 128, context 64, untied output head.

Optimizers, each at 3 learning rates: AdamW on every parameter, and
``torch.optim.Muon``, ``Muon``, ``MuCon``, ``MuonP`` and ``DynMuon`` on the
twelve hidden matrices (q, k, v, output, MLP in and out of each block) with the
embeddings, the head, the LayerNorms and the biases in AdamW at one fixed
learning rate (``AUX_LR``, the same for every spectral optimizer; for
``torch.optim.Muon`` a second optimizer). Our optimizers are built with their
public constructors and their defaults (``tau`` of MuCon, ``p`` of MuonP,
``method``, ``scale``), momentum 0.95; no weight decay anywhere; constant
learning rates.

Every run starts from the same initial weights and sees the same batches. The
runs are interleaved: all models are kept in memory and trained round-robin, a
few steps each in turn, so that a change in the machine's load is spread over
every run instead of falling on one optimizer. Forward plus backward and the
optimizer step are timed separately (``time.perf_counter``; evaluation is not
timed).

Run (measured: 467 s of CPU time with ``--threads 1`` on a 2-core Xeon, so under 10
minutes on an otherwise idle 2-core CPU):

    python docs/examples/char_model.py --json docs/examples/char_model_results.json \
        --plot docs/_static/char_model.png

``--quick`` is a smoke test (a smaller model, 30 steps, one learning rate per
optimizer); ``--from PATH`` prints the Markdown table of a results file, and
with ``--plot`` draws its figure, without training; ``--from`` with several
files (the same optimizers at other ``--seed``) prints their losses side by side.

Variants of our optimizers run side by side under names that carry constructor
arguments, ``NAME[key=value;key=value]``, and ``--seed`` shifts both seeds.
The measurement behind Muon's accuracy defaults (docs/training.md, "Optimizer
defaults"; about 5 minutes):

    python docs/examples/char_model.py --threads 1 \
        --optimizers "torch.optim.Muon,Muon,Muon[method=auto;floor=0.001;tol=0.0001],Muon[compute_dtype=bfloat16],Muon[scale=spectral]" \
        --lrs 0.02 --lrs torch.optim.Muon=0.015,0.02,0.03 --lrs Muon=0.015,0.02,0.03 \
        --json docs/examples/char_model_defaults.json

and behind the default ``scale`` (about 4 minutes per seed; seeds 0 to 4):

    python docs/examples/char_model.py --threads 1 --seed 1 \
        --optimizers "torch.optim.Muon,Muon,Muon[scale=spectral]" --lrs 0.015,0.02,0.03 \
        --json docs/examples/char_model_scale_seeds/seed1.json
    python docs/examples/char_model.py --from docs/examples/char_model_scale_seeds/seed*.json

(``char_model_dtype_seeds/``: the same with
``--optimizers "torch.optim.Muon,Muon,Muon[compute_dtype=bfloat16]"``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import spectral_ops
from spectral_ops.adapters.torch import DynMuon, MuCon, Muon, MuonP
from spectral_ops.schedules import dynmuon_schedule

FULL = dict(d_model=128, n_layers=2, n_heads=4, context=64, batch=32, steps=200,
            eval_every=20, eval_seqs=128, chunk=5)
QUICK = dict(d_model=64, n_layers=1, n_heads=2, context=32, batch=16, steps=30,
             eval_every=10, eval_seqs=32, chunk=5)

OPTIMIZERS = ("AdamW", "torch.optim.Muon", "Muon", "MuCon", "MuonP", "DynMuon")
# a small grid (factors of 2) around each optimizer's sensible value, from short pilot runs
# (60 and 100 steps; AdamW also 200): AdamW best near 1e-3 (higher rates are worse without
# warm-up), the spectral optimizers best between 0.02 and 0.04
SPECTRAL_LRS = (0.015, 0.03, 0.06)
LRS = {
    "AdamW": (5e-4, 1e-3, 2e-3),
    "torch.optim.Muon": SPECTRAL_LRS,
    "Muon": SPECTRAL_LRS,
    "MuCon": SPECTRAL_LRS,
    "MuonP": SPECTRAL_LRS,
    "DynMuon": SPECTRAL_LRS,
}
# AdamW learning rate of the embeddings, head, LayerNorms and biases under the spectral
# optimizers (in a 60-step pilot, Muon reached 2.06 with 4e-3 and 2.14 with 1e-3)
AUX_LR = 4e-3
BETAS = (0.9, 0.95)    # every AdamW here, inside and outside the spectral optimizers
MOMENTUM = 0.95
INIT_SEED, DATA_SEED = 0, 1
ROOT = Path(__file__).resolve().parents[2]


# --- data ---------------------------------------------------------------------------

def load_text() -> str:
    from pydoc_data.topics import topics
    return "".join(topics[k] for k in sorted(topics))


class CharData:
    """Character-level train/validation split, fixed batches and a fixed validation subset."""

    def __init__(self, text: str, context: int, batch: int, steps: int, eval_seqs: int,
                 seed: int = DATA_SEED):
        self.vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(self.vocab)}
        data = torch.tensor([index[c] for c in text], dtype=torch.long)
        n_train = int(0.9 * len(data))
        self.train, self.val = data[:n_train], data[n_train:]
        self.context = context
        gen = torch.Generator().manual_seed(seed)
        # the starts of every training batch, drawn once: every run sees the same batches
        self.starts = torch.randint(0, len(self.train) - context - 1, (steps, batch), generator=gen)
        # validation: eval_seqs windows evenly spaced over the validation split
        last = len(self.val) - context - 1
        self.val_starts = torch.linspace(0, last, eval_seqs).long()

    def _windows(self, data, starts):
        offsets = torch.arange(self.context + 1)
        w = data[starts[:, None] + offsets]
        return w[:, :-1], w[:, 1:]

    def batch(self, step: int):
        return self._windows(self.train, self.starts[step])

    def val_batches(self, size: int = 64):
        for i in range(0, len(self.val_starts), size):
            yield self._windows(self.val, self.val_starts[i:i + size])


# --- model ------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (m(y).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))

    def hidden_matrices(self):
        return [m.weight for m in (self.q, self.k, self.v, self.o, self.fc, self.proj)]


class CharGPT(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, context: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("o.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def split_params(self):
        """(hidden matrices, everything else: embeddings, head, LayerNorms, biases)."""
        hidden = [w for block in self.blocks for w in block.hidden_matrices()]
        ids = {id(w) for w in hidden}
        return hidden, [p for p in self.parameters() if id(p) not in ids]


# --- optimizers -------------------------------------------------------------------

def split_name(name: str) -> tuple[str, dict]:
    """``"Muon[method=jordan;compute_dtype=bfloat16]"`` -> ``("Muon", {"method": "jordan",
    "compute_dtype": torch.bfloat16})``: an optimizer of ``OPTIMIZERS`` with constructor
    arguments of our optimizers (numbers, strings, ``compute_dtype`` a torch dtype)."""
    base, bracket, rest = name.partition("[")
    if not bracket:
        return name, {}
    if not rest.endswith("]") or base not in OPTIMIZERS[2:]:
        raise ValueError(f"{name!r}: options in brackets are for our optimizers "
                         f"({', '.join(OPTIMIZERS[2:])}): NAME[key=value;key=value]")
    options = {}
    for item in filter(None, rest[:-1].split(";")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{name!r}: {item!r} is not key=value")
        if key == "compute_dtype":
            options[key] = getattr(torch, value)
            continue
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                pass
        else:
            options[key] = value
    return base, options


def split_names(text: str) -> list[str]:
    """A comma-separated list of optimizer names; commas inside brackets do not split."""
    names, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            names.append(cur.strip())
            cur = ""
        else:
            cur += ch
    names.append(cur.strip())
    return [n for n in names if n]


def make_optimizers(name: str, model: CharGPT, lr: float, steps: int, aux_lr: float = AUX_LR) -> list:
    """The optimizer(s) of one run; every one of them is stepped after each backward pass.
    ``name`` may carry constructor arguments of our optimizers (:func:`split_name`)."""
    name, options = split_name(name)
    hidden, rest = model.split_params()
    if name == "AdamW":
        return [torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, weight_decay=0.0)]
    if name == "torch.optim.Muon":
        if not hasattr(torch.optim, "Muon"):
            raise SystemExit(f"torch.optim.Muon needs torch >= 2.9 (this is {torch.__version__}); "
                             f"leave it out with --optimizers")
        return [torch.optim.Muon(hidden, lr=lr, momentum=MOMENTUM, weight_decay=0.0),
                torch.optim.AdamW(rest, lr=aux_lr, betas=BETAS, weight_decay=0.0)]
    groups = [{"params": hidden}, {"params": rest, "spectral": False}]
    common = dict(lr=lr, momentum=MOMENTUM, weight_decay=0.0, adamw_lr=aux_lr, adamw_betas=BETAS,
                  **options)
    if name == "Muon":
        return [Muon(groups, **common)]
    if name == "MuCon":
        return [MuCon(groups, **common)]
    if name == "MuonP":
        return [MuonP(groups, **common)]
    if name == "DynMuon":
        return [DynMuon(groups, p_schedule=dynmuon_schedule(steps), **common)]
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


# --- training ---------------------------------------------------------------------

def _finite(x: float):
    return x if math.isfinite(x) else None   # JSON has no NaN


class Run:
    """One (optimizer, learning rate): its model, optimizers, curves and timings."""

    def __init__(self, name: str, lr: float, cfg: dict, data: CharData, init_state: dict):
        self.name, self.lr = name, lr
        self.model = CharGPT(len(data.vocab), cfg["d_model"], cfg["n_layers"], cfg["n_heads"],
                             cfg["context"])
        self.model.load_state_dict(init_state)
        self.opts = make_optimizers(name, self.model, lr, cfg["steps"], cfg["aux_lr"])
        self.step = 0
        self.diverged_at = None
        self.train_loss, self.fwd_bwd_s, self.opt_s = [], [], []
        self.val_steps, self.val_loss = [], []

    def train(self, data: CharData, n: int):
        for _ in range(n):
            if self.diverged_at is not None:
                return
            x, y = data.batch(self.step)
            t0 = time.perf_counter()
            logits = self.model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            for opt in self.opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            t1 = time.perf_counter()
            for opt in self.opts:
                opt.step()
            t2 = time.perf_counter()
            value = loss.item()
            self.train_loss.append(value)
            self.fwd_bwd_s.append(t1 - t0)
            self.opt_s.append(t2 - t1)
            self.step += 1
            if not math.isfinite(value):
                self.diverged_at = self.step

    @torch.no_grad()
    def evaluate(self, data: CharData):
        total, count = 0.0, 0
        for x, y in data.val_batches():
            logits = self.model(x)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
        self.val_steps.append(self.step)
        self.val_loss.append(total / count if self.diverged_at is None else math.nan)

    def record(self, tokens_per_step: int) -> dict:
        train_s = sum(self.fwd_bwd_s) + sum(self.opt_s)
        return {
            "optimizer": self.name, "lr": self.lr,
            "steps_done": self.step, "diverged_at_step": self.diverged_at,
            "final_val_loss": _finite(self.val_loss[-1]),
            "val_steps": self.val_steps, "val_loss": [_finite(v) for v in self.val_loss],
            "train_loss": [_finite(round(v, 5)) for v in self.train_loss],
            "train_seconds": train_s,
            "tokens_per_s": tokens_per_step * self.step / train_s if train_s else None,
            "fwd_bwd_ms_median": 1e3 * statistics.median(self.fwd_bwd_s) if self.step else None,
            "opt_step_ms_median": 1e3 * statistics.median(self.opt_s) if self.step else None,
            "opt_step_ms_mean": 1e3 * statistics.fmean(self.opt_s) if self.step else None,
            "opt_step_ms": [round(1e3 * t, 3) for t in self.opt_s],
        }


def summarise(runs: list[dict], names: list[str], tokens_per_step: int) -> list[dict]:
    """Per optimizer: the learning rate with the lowest final validation loss, and the
    timings over all of its runs (the cost of a step does not depend on the learning rate)."""
    table = []
    for name in names:
        mine = [r for r in runs if r["optimizer"] == name]
        ok = [r for r in mine if r["final_val_loss"] is not None]
        best = min(ok, key=lambda r: r["final_val_loss"]) if ok else None
        steps = sum(r["steps_done"] for r in mine)
        seconds = sum(r["train_seconds"] for r in mine)
        opt_ms = [t for r in mine for t in r["opt_step_ms"]]
        table.append({
            "optimizer": name,
            "best_lr": best["lr"] if best else None,
            "final_val_loss": best["final_val_loss"] if best else None,
            "val_loss_by_lr": {str(r["lr"]): r["final_val_loss"] for r in mine},
            "diverged_lrs": [r["lr"] for r in mine if r["final_val_loss"] is None],
            "tokens_per_s": tokens_per_step * steps / seconds if seconds else None,
            "opt_step_ms_median": statistics.median(opt_ms) if opt_ms else None,
        })
    return table


def markdown_table(results: dict) -> str:
    lines = ["| optimizer | best lr | final val loss | val loss at each lr | tokens/s | optimizer step (ms) |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for row in results["table"]:
        by_lr = " / ".join(f"{float(lr):g}: " + ("diverged" if v is None else f"{v:.3f}")
                           for lr, v in row["val_loss_by_lr"].items())
        best = "-" if row["best_lr"] is None else f"{row['best_lr']:g}"
        loss = "diverged" if row["final_val_loss"] is None else f"{row['final_val_loss']:.4f}"
        tps = "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,.0f}"
        ms = "-" if row["opt_step_ms_median"] is None else f"{row['opt_step_ms_median']:.2f}"
        lines.append(f"| {row['optimizer']} | {best} | {loss} | {by_lr} | {tps} | {ms} |")
    return "\n".join(lines)


def seeds_table(results: list) -> str:
    """Several runs of the same optimizers at other seeds: each optimizer's final
    validation loss at its best learning rate, per seed, their mean, and the mean
    against the first optimizer's mean (the reference, e.g. ``torch.optim.Muon``)."""
    seeds = [r["config"].get("seed", 0) for r in results]
    names = [row["optimizer"] for row in results[0]["table"]]
    loss = {n: [] for n in names}
    speed = {n: [] for n in names}
    for r in results:
        rows = {row["optimizer"]: row for row in r["table"]}
        if list(rows) != names:
            raise ValueError("the results files must hold the same optimizers in the same order")
        for n in names:
            loss[n].append(rows[n]["final_val_loss"])
            speed[n].append(rows[n]["tokens_per_s"])
    head = ("| optimizer | " + " | ".join(f"seed {s}" for s in seeds)
            + " | mean | against the first | tokens/s, mean |")
    lines = [head, "| --- |" + " ---: |" * (len(seeds) + 3)]
    ref = statistics.fmean(loss[names[0]])
    for n in names:
        mean = statistics.fmean(loss[n])
        vs = "" if n == names[0] else f"{100 * (mean / ref - 1):+.2f}%"
        lines.append(f"| {n} | " + " | ".join(f"{v:.4f}" for v in loss[n])
                     + f" | {mean:.4f} | {vs} | {statistics.fmean(speed[n]):,.0f} |")
    return "\n".join(lines)


def dumps(results: dict) -> str:
    """The results as JSON text: indented, one line per run (the per-step lists are long)."""
    head = json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1)
    runs = ",\n  ".join(json.dumps(r) for r in results["runs"])
    return head[:-2] + ',\n "runs": [\n  ' + runs + "\n ]\n}\n"


def describe(opt) -> dict:
    """An optimizer's class, defaults and (ours) direction, as text for the results file."""
    out = {"class": f"{type(opt).__module__}.{type(opt).__name__}",
           "defaults": {k: repr(v) for k, v in opt.defaults.items()}}
    if hasattr(opt, "direction"):
        out["direction"] = repr(opt.direction)
    return out


def environment() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    package = hashlib.sha256()
    for f in sorted(Path(spectral_ops.__file__).parent.rglob("*.py")):
        package.update(f.read_bytes())
    status = git("status", "--porcelain", "--", "spectral_ops")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "spectral_ops_modified": bool(status) if status is not None else None,
        "spectral_ops_sources_sha256": package.hexdigest()[:16],
        "spectral_ops": spectral_ops.__version__,
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
    }


def run_benchmark(cfg: dict, names: list[str], lrs: dict) -> dict:
    env = environment()
    wall0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    text = load_text()
    init_seed = cfg.get("seed", 0) + INIT_SEED
    data_seed = cfg.get("seed", 0) + DATA_SEED
    data = CharData(text, cfg["context"], cfg["batch"], cfg["steps"], cfg["eval_seqs"], data_seed)
    torch.manual_seed(init_seed)
    init = CharGPT(len(data.vocab), cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["context"])
    n_params = sum(p.numel() for p in init.parameters())
    n_hidden = sum(p.numel() for p in init.split_params()[0])
    print(f"text: {len(text):,} characters, vocabulary {len(data.vocab)}; "
          f"train {len(data.train):,}, validation {len(data.val):,} "
          f"({len(data.val_starts)} windows evaluated)")
    print(f"model: {n_params:,} parameters ({n_hidden:,} in hidden matrices); "
          f"{cfg['steps']} steps of {cfg['batch']}x{cfg['context']} tokens; "
          f"{torch.get_num_threads()} threads", flush=True)

    init_state = init.state_dict()
    # what each optimizer was built with (our directions carry their resolved options)
    settings = {}
    for name in names:
        opts = make_optimizers(name, init, lrs[name][0], cfg["steps"], cfg["aux_lr"])
        settings[name] = [describe(o) for o in opts]   # built, never stepped
    # warm-up, untimed: a throwaway run of each optimizer takes the one-time costs (first
    # calls of the kernels, plans, allocations) out of the measured runs
    for name in names:
        Run(name, lrs[name][0], cfg, data, init_state).train(data, 3)
    # ordered (first lr of every optimizer, second lr of every optimizer, ...): neighbours in
    # the round-robin are different optimizers
    runs = [Run(name, lrs[name][i], cfg, data, init_state)
            for i in range(max(len(lrs[n]) for n in names)) for name in names if i < len(lrs[name])]
    for run in runs:
        run.evaluate(data)
    # round-robin: `chunk` steps per run in turn, the order rotated every round
    done, rnd = 0, 0
    while done < cfg["steps"]:
        n = min(cfg["chunk"], cfg["steps"] - done)
        k = rnd % len(runs)
        for run in runs[k:] + runs[:k]:
            run.train(data, n)
        done += n
        rnd += 1
        if done % cfg["eval_every"] == 0 or done == cfg["steps"]:
            for run in runs:
                run.evaluate(data)
            best = {}
            for run in runs:
                v = run.val_loss[-1]
                if math.isfinite(v) and v < best.get(run.name, math.inf):
                    best[run.name] = v
            print(f"step {done:4d}  best val loss: "
                  + ", ".join(f"{n} {best[n]:.3f}" if n in best else f"{n} diverged" for n in names)
                  + f"  ({time.perf_counter() - wall0:.0f} s)", flush=True)

    tokens_per_step = cfg["batch"] * cfg["context"]
    records = [run.record(tokens_per_step) for run in runs]
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    env["load_average_end"] = os.getloadavg()
    env["wall_seconds"] = time.perf_counter() - wall0
    env["cpu_seconds"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "config": dict(cfg, vocab=len(data.vocab), text_chars=len(text),
                       parameters=n_params, hidden_parameters=n_hidden,
                       adamw_betas=BETAS, momentum=MOMENTUM, weight_decay=0.0,
                       init_seed=init_seed, data_seed=data_seed),
        "environment": env,
        "lrs": {n: list(lrs[n]) for n in names},
        "optimizer_settings": settings,
        "table": summarise(records, names, tokens_per_step),
        "runs": records,
    }


def plot(results: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110,
                                  gridspec_kw={"width_ratios": [3, 2]})
    finals = []
    for row in results["table"]:
        mine = [r for r in results["runs"] if r["optimizer"] == row["optimizer"]]
        best = next((r for r in mine if r["lr"] == row["best_lr"]), None)
        if best is not None:
            line, = ax.plot(best["val_steps"], [math.nan if v is None else v for v in best["val_loss"]],
                            marker=".", label=f"{row['optimizer']} (lr {row['best_lr']:g})")
            finals.append(best["val_loss"][-1])
            color = line.get_color()
        else:
            color = None
        ax2.plot([r["lr"] for r in mine],
                 [math.nan if r["final_val_loss"] is None else r["final_val_loss"] for r in mine],
                 marker="o", color=color, label=row["optimizer"])
    if finals:
        lo = min(finals)
        # the step-0 loss, ln(vocabulary), is left above the frame
        early = [v for r in results["runs"] for v in r["val_loss"][1:2] if v is not None]
        ax.set_ylim(lo - 0.1, max(early, default=lo + 1.0) + 0.1)
        grid = [r["final_val_loss"] for r in results["runs"] if r["final_val_loss"] is not None]
        ax2.set_ylim(lo - 0.05, max(grid) + 0.05)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title(f"Character model, {cfg['parameters']:,} parameters, best lr each")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate (hidden matrices; AdamW: all)")
    ax2.set_ylabel(f"validation loss after {cfg['steps']} steps")
    ax2.set_title("Learning-rate grid (colours as on the left)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_lrs(specs: list[str] | None, names: list[str]) -> dict:
    """``--lrs 0.01,0.02`` for every optimizer, ``--lrs MuCon=0.02,0.04`` for one (a name
    with options, ``Muon[tol=0.1]=0.02``, for that variant)."""
    lrs = {n: LRS[split_name(n)[0]] for n in names}
    for spec in specs or []:
        target, _, values = spec.rpartition("=")
        grid = tuple(float(v) for v in values.split(","))
        if target and target not in OPTIMIZERS and target not in names:
            raise SystemExit(f"--lrs: unknown optimizer {target!r}")
        for n in names:  # NAME: that run; a base name not run itself: all its variants
            if not target or target == n or (target == split_name(n)[0]
                                             and target not in names):
                lrs[n] = grid
    return lrs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, help=f"training steps (default {FULL['steps']})")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: a smaller model, 30 steps, the middle learning rate only")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                    help=f"comma-separated subset of {','.join(OPTIMIZERS)}; ours may carry "
                         f"constructor arguments, e.g. 'Muon[method=polar_express;tol=0.1]'")
    ap.add_argument("--lrs", action="append", metavar="[NAME=]LR,LR,...",
                    help="learning-rate grid for every optimizer, or for NAME (repeatable)")
    ap.add_argument("--aux-lr", type=float, default=AUX_LR,
                    help=f"AdamW learning rate of the embeddings, head, LayerNorms and biases "
                         f"under the spectral optimizers (default {AUX_LR:g})")
    ap.add_argument("--seed", type=int, default=0,
                    help=f"added to the seeds of the initial weights ({INIT_SEED}) and of the "
                         f"batches ({DATA_SEED}); default 0")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", help="write curves, timings and the table here")
    ap.add_argument("--plot", help="write the figure here (e.g. docs/_static/char_model.png)")
    ap.add_argument("--from", dest="source", metavar="JSON", nargs="+",
                    help="no training: print the table of this results file (and --plot its "
                         "figure); of several files (other seeds), the losses side by side")
    args = ap.parse_args(argv)

    if args.source and len(args.source) > 1:
        results = [json.loads(Path(s).read_text()) for s in args.source]
        print(seeds_table(results))
        return results
    if args.source:
        results = json.loads(Path(args.source[0]).read_text())
        print(markdown_table(results))
        if args.plot:
            plot(results, args.plot)
            print(f"wrote {args.plot}")
        return results
    names = split_names(args.optimizers)
    for n in names:
        try:
            base, _ = split_name(n)
        except (ValueError, AttributeError) as e:
            ap.error(str(e))
        if base not in OPTIMIZERS:
            ap.error(f"unknown optimizer {n!r}; choose from {', '.join(OPTIMIZERS)}")
    cfg = dict(QUICK if args.quick else FULL)
    lrs = parse_lrs(args.lrs, names)
    if args.quick and not args.lrs:
        lrs = {n: (g[len(g) // 2],) for n, g in lrs.items()}
    if args.steps:
        cfg["steps"] = args.steps
    cfg["aux_lr"] = args.aux_lr
    if args.seed:
        cfg["seed"] = args.seed
    if args.threads:
        torch.set_num_threads(args.threads)

    results = run_benchmark(cfg, names, lrs)
    env = results["environment"]
    print()
    print(markdown_table(results))
    print(f"\n{cfg['steps']} steps, {env['wall_seconds']:.0f} s wall, {env['cpu_seconds']:.0f} s CPU; "
          f"commit {env['commit']}{' (spectral_ops modified)' if env['spectral_ops_modified'] else ''}, "
          f"{env['date_utc']} UTC, {env['cpu']}, {env['cpu_count']} cores, load average "
          f"{env['load_average_start'][0]:.1f} at the start, {env['load_average_end'][0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(dumps(results))
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return results


if __name__ == "__main__":
    main()
