"""The scaling estimate of docs/distributed.md, on paper: prints its table.

Owner compute (each matrix's map computed by one rank) against every rank
computing every map, for a LLaMA-7B-shaped model on W = 8 ... 1024 GPUs. The
inputs are the constants below; the map flops are the core's own plan
(:func:`spectral_ops.polar_plan`). ``python docs/examples/distributed_scaling.py``
prints the markdown that docs/distributed.md holds (a test keeps them equal).
"""

from __future__ import annotations

import numpy as np

import spectral_ops as so

#: (m, n): how many, torch (out, in) layout; the embeddings and head get AdamW
MATRICES = {(4096, 4096): 4 * 32,      # q, k, v, o of 32 layers
            (11008, 4096): 2 * 32,     # gate and up
            (4096, 11008): 1 * 32}     # down
WORLDS = (8, 64, 256, 1024)
GPUS_PER_NODE = 8
TFLOPS = 400.0          # achieved bf16 matmul rate per GPU (about 40% of an H100's peak)
INTER_GBPS = 50.0       # inter-node bandwidth per GPU, GB/s (one 400 Gb/s NIC per GPU)
INTRA_GBPS = 450.0      # intra-node (NVLink) bandwidth per GPU, GB/s
STATE_BYTES = 4         # the exchanged momentum is float32
GRAD_BYTES = 4          # gradients reduce-scattered in float32


def map_flops(m, n):
    """Flops of one polar map (Polar Express, the float32 plan of the core)."""
    return so.polar_plan(np.broadcast_to(np.float32(0), (m, n)), method="polar_express").flops


def owners(world):
    """Per rank: (flops, elements exchanged) under the documented ownership (buckets
    by decreasing cost, matrices dealt round-robin with one cursor carried over).
    A rank sends its 1/W shard of each matrix it does not own and receives the
    other shards of each it owns; back, the reverse: the same count each way."""
    flops, elems = [0.0] * world, [0.0] * world
    cursor = 0
    for (m, n), k in sorted(MATRICES.items(), key=lambda kv: -map_flops(*kv[0])):
        f = map_flops(m, n)
        for _ in range(k):
            flops[cursor] += f
            for r in range(world):
                elems[r] += m * n * (world - 1) / world if r == cursor else m * n / world
            cursor = (cursor + 1) % world
    return flops, elems


def seconds(nbytes, world):
    """Time to send ``nbytes`` from one GPU: the inter-node share over its NIC, the
    rest over NVLink (a ring reduce-scatter across nodes is NIC-bound as well)."""
    cross = max(0, world - GPUS_PER_NODE) / world
    return nbytes * cross / (INTER_GBPS * 1e9) + nbytes * (1 - cross) / (INTRA_GBPS * 1e9)


def table() -> str:
    params = sum(k * m * n for (m, n), k in MATRICES.items())
    total = sum(k * map_flops(m, n) for (m, n), k in MATRICES.items())
    rows = ["| W | maps per rank (max) | map time per rank: owner compute | every rank "
            "every map | exchange sent per rank and step: mean / max | its time (max) "
            "| gradient reduce-scatter sent per rank | its time | exchange / reduce-scatter "
            "(mean) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    nmat = sum(MATRICES.values())
    for w in WORLDS:
        flops, elems = owners(w)
        # mean: 2 k m n (W - 1) / W^2 per bucket (out and back)
        mean = 2 * sum(k * m * n for (m, n), k in MATRICES.items()) * (w - 1) / w**2
        mean, peak = mean * STATE_BYTES, max(elems) * STATE_BYTES
        rs = params * (w - 1) / w * GRAD_BYTES
        rows.append(f"| {w} | {-(-nmat // w)} | {1e3 * max(flops) / (TFLOPS * 1e12):.0f} ms "
                    f"| {1e3 * total / (TFLOPS * 1e12):.0f} ms "
                    f"| {mean / 1e9:.2f} / {peak / 1e9:.2f} GB "
                    f"| {1e3 * seconds(peak, w):.1f} ms | {rs / 1e9:.1f} GB "
                    f"| {1e3 * seconds(rs, w):.0f} ms | {mean / rs:.4f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
