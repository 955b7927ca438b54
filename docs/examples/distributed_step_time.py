"""Optimizer step time with 1, 2 and 4 processes (gloo, CPU): owner compute measured.

Twelve transformer-shaped matrices (four each of 256 x 1024, 1024 x 256 and
256 x 256), Muon with Polar Express. For each process count W: the step time
(``optimizer.step()``, gradients set by hand) and the part of it spent in the
maps on each rank, for parameters sharded as FSDP2 shards them (DTensor
``Shard(0)``) and for replicated parameters under data parallelism (DDP); W = 1
is the single-process optimizer. Prints a markdown table:

    python docs/examples/distributed_step_time.py [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import numpy as np
import torch

SHAPES = [(256, 1024)] * 4 + [(1024, 256)] * 4 + [(256, 256)] * 4


def _grads(step):
    rng = np.random.default_rng(step)
    return [torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in SHAPES]


def _bench(layout, steps, world, rank):
    from spectral_ops.adapters import torch as st
    from spectral_ops.adapters.direction import Direction
    inner, spent, units = Direction.__call__, [], []

    def timed(self, x, step=0):
        # CPU time of this rank's thread: what the maps cost it, whatever else runs
        t = time.thread_time()
        out = inner(self, x, step)
        spent[-1] += time.thread_time() - t
        units[-1] += int(np.prod(x.shape[:-2]))
        return out
    Direction.__call__ = timed
    try:
        rng = np.random.default_rng(0)
        full = [torch.from_numpy(0.02 * rng.standard_normal(s).astype(np.float32))
                for s in SHAPES]
        if layout == "fsdp" and world > 1:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor import Shard, distribute_tensor
            mesh = init_device_mesh("cpu", (world,))
            params = [torch.nn.Parameter(distribute_tensor(p, mesh, [Shard(0)])) for p in full]
        else:
            mesh, params = None, [torch.nn.Parameter(p.clone()) for p in full]
        opt = st.Muon(params, lr=0.02, method="polar_express",
                      process_group="auto" if world > 1 else None)
        times = []
        for t in range(steps + 2):  # two warm-up steps
            for p, g in zip(params, _grads(t)):
                if mesh is not None:
                    from torch.distributed.tensor import distribute_tensor
                    g = distribute_tensor(g, mesh, p.placements)
                p.grad = g
            spent.append(0.0)
            units.append(0)
            if world > 1:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        return float(np.median(times[2:])), float(np.median(spent[2:])), units[-1]
    finally:
        Direction.__call__ = inner


def _worker(rank, world, port, steps, threads, queue):
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    out = {layout: _bench(layout, steps, world, rank) for layout in ("fsdp", "ddp")}
    queue.put((rank, out))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def run(world, steps, threads):
    if world == 1:
        torch.set_num_threads(threads)
        return {0: {layout: _bench(layout, steps, 1, 0) for layout in ("fsdp", "ddp")}}
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(r, world, port, steps, threads, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    res = dict(queue.get(timeout=900) for _ in range(world))
    for p in procs:
        p.join()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args()
    print("| processes | layout | step time (wall, median, slowest rank) | maps per rank "
          "| map CPU time per rank (median; min-max over ranks) |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for world in (1, 2, 4):
        res = run(world, args.steps, args.threads)
        for layout, name in (("fsdp", "sharded (FSDP2)"), ("ddp", "replicated (DDP)")):
            step = max(res[r][layout][0] for r in res)
            maps = [res[r][layout][1] for r in res]
            units = sorted({res[r][layout][2] for r in res})
            print(f"| {world} | {name if world > 1 else 'single process'} "
                  f"| {1e3 * step:.0f} ms | {'-'.join(map(str, units))} "
                  f"| {1e3 * min(maps):.0f}-{1e3 * max(maps):.0f} ms |", flush=True)
            if world == 1:
                break


if __name__ == "__main__":
    main()
