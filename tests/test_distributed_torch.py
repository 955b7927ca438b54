"""The torch optimizers on several real processes (gloo, CPU): DDP, FSDP2, DTensor.

Each world size is one ``torch.multiprocessing`` spawn whose ranks run every
case on one process group; results come back as NumPy arrays through a queue
and are compared here with the single-process optimizer. Every rank sees the
same batch, so the data-parallel gradient is the single-process one and every
difference is the optimizer's. Checked: the parameters after 10 steps (Muon,
MuCon, Muon^p, DynMuon), that every matrix's map is computed exactly once per
step across the ranks, the bytes each rank sends per step against the formula
of docs/distributed.md, and a DCP checkpoint saved with 4 processes and
resumed with 2.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

STEPS = 10
SAVE_AT = 5
BATCH = 8
# (name, class name, keywords); explicit methods: the matrix iterations, whose
# arithmetic does not depend on how many matrices share a call ("auto" may
# route a stack of 1 and one of 16 to different methods on CPUs)
OPTIMIZERS = [("muon", "Muon", dict(method="polar_express")),
              ("mucon", "MuCon", dict(tau=0.5, method="polar")),
              ("muonp", "MuonP", dict(p=Fraction(1, 2), method="newton")),
              ("dynmuon", "DynMuon", dict(method="newton"))]


# -- the model: square, wide, tall, 1-D, MoE stack, conv, a matrix of 3 rows ----------------
def _model():
    nn = torch.nn

    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(0.2 * torch.randn(3, 8, 16))  # batch_dims=1: 3 of 8 x 16

        def forward(self, h):
            return torch.einsum("bi,eoi->beo", h, self.w)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 16)                   # AdamW group
            self.sq = nn.Linear(16, 16)                       # square + 1-D bias
            self.sq2 = nn.Linear(16, 16, bias=False)          # same bucket as sq
            self.tiny = nn.Linear(16, 3, bias=False)          # 3 rows < 4 processes
            self.wide = nn.Linear(32, 8, bias=False)          # 8 x 32
            self.tall = nn.Linear(8, 24, bias=False)          # 24 x 8
            self.conv = nn.Conv2d(2, 4, 3)                    # 4 x 2 x 3 x 3 -> 4 x 18
            self.experts = Experts()

        def forward(self, x, idx, img):
            h = torch.tanh(self.sq(x + self.emb(idx)))
            h = torch.tanh(self.sq2(h))
            y = self.tall(torch.tanh(self.wide(torch.cat([h, h], 1))))
            return ((y ** 2).mean() + (torch.tanh(self.tiny(h)) ** 2).mean()
                    + (torch.tanh(self.experts(h)) ** 2).mean()
                    + (torch.tanh(self.conv(img)) ** 2).mean())

    torch.manual_seed(0)
    return Net()


def _batch(t):
    rng = np.random.default_rng(100 + t)
    return (torch.from_numpy(rng.standard_normal((BATCH, 16)).astype(np.float32)),
            torch.from_numpy(rng.integers(0, 10, BATCH)),
            torch.from_numpy(rng.standard_normal((BATCH, 2, 6, 6)).astype(np.float32)))


def _groups(model):
    by_name = dict(model.named_parameters())
    experts, emb = by_name.pop("experts.w"), by_name.pop("emb.weight")
    return [{"params": list(by_name.values())}, {"params": [experts], "batch_dims": 1},
            {"params": [emb], "spectral": False}]


def _optimizer(name, params, **extra):
    from spectral_ops.adapters import torch as st
    from spectral_ops.schedules import dynmuon_schedule
    _, cls, kw = next(o for o in OPTIMIZERS if o[0] == name)
    kw = dict(kw)
    if cls == "DynMuon":
        kw["p_schedule"] = dynmuon_schedule(STEPS)
    return getattr(st, cls)(params, lr=0.05, weight_decay=0.01, adamw_lr=0.01, **kw, **extra)


def _units(model):
    """Matrices (maps) per step: one per 2-D or conv weight, three for the experts."""
    n = 0
    for name, p in model.named_parameters():
        if name == "experts.w":
            n += p.shape[0]
        elif p.ndim >= 2 and name != "emb.weight":
            n += 1
    return n


def _numpy(model):
    out = {}
    for name, p in model.named_parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = p.detach().cpu().numpy().copy()
    return out


def _single(name):
    """The single-process reference: parameters after ``STEPS`` steps, on one
    thread as the ranks (the blocking of a product depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model()
        opt = _optimizer(name, _groups(model), process_group=None)
        for t in range(STEPS):
            opt.zero_grad()
            model(*_batch(t)).backward()
            opt.step()
        return _numpy(model)
    finally:
        torch.set_num_threads(threads)


# -- what runs on every rank ---------------------------------------------------------------
class _Meter:
    """Counts the core's matrices and the optimizer's bytes on this rank, per step."""

    def __init__(self, monkey):
        import torch.distributed as dist

        from spectral_ops.adapters.direction import Direction
        self.reset()
        meter = self
        inner = Direction.__call__

        def call(self_, x, step=0):
            if meter.in_step:
                meter.units[-1] += math.prod(x.shape[:-2])
                meter.calls[-1] += 1
            return inner(self_, x, step)
        a2a, gather = dist.all_to_all_single, dist.all_gather_into_tensor

        def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None,
                              group=None, async_op=False):
            if meter.in_step and input.is_floating_point():
                me = dist.get_rank(group)
                sizes = input_split_sizes or [input.numel() // dist.get_world_size(group)] * \
                    dist.get_world_size(group)
                meter.a2a[-1] += (sum(sizes) - sizes[me]) * input.element_size()
            return a2a(output, input, output_split_sizes, input_split_sizes, group=group,
                       async_op=async_op)

        def all_gather_into_tensor(output, input, group=None, async_op=False):
            if meter.in_step and input.is_floating_point():
                meter.gather[-1] += input.numel() * input.element_size() * \
                    (dist.get_world_size(group) - 1)
            return gather(output, input, group=group, async_op=async_op)
        monkey.append((Direction, "__call__", inner))
        monkey.append((dist, "all_to_all_single", a2a))
        monkey.append((dist, "all_gather_into_tensor", gather))
        Direction.__call__ = call
        dist.all_to_all_single = all_to_all_single
        dist.all_gather_into_tensor = all_gather_into_tensor

    def reset(self):
        self.units, self.calls, self.a2a, self.gather = [], [], [], []
        self.in_step = False

    def result(self, model):
        return dict(params=_numpy(model), units=self.units, calls=self.calls, a2a=self.a2a,
                    gather=self.gather)

    def step(self, opt):
        for lst in (self.units, self.calls, self.a2a, self.gather):
            lst.append(0)
        self.in_step = True
        try:
            opt.step()
        finally:
            self.in_step = False


def _fsdp(model, mesh):
    from torch.distributed.fsdp import fully_shard
    for mod in [model.emb, model.sq, model.sq2, model.tiny, model.wide, model.tall, model.conv,
                model.experts]:
        fully_shard(mod, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _train(mode, name, meter, mesh, steps=STEPS, start=0, model=None, opt=None):
    """Train ``steps - start`` steps under ``mode``; returns (model, optimizer)."""
    if model is None:
        model = _model()
        if mode == "fsdp":
            _fsdp(model, mesh)
        opt = _optimizer(name, _groups(model))
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if mode == "ddp" else model
    for t in range(start, steps):
        opt.zero_grad()
        wrapped(*_batch(t)).backward()
        meter.step(opt)
    return model, opt


def _dtensor_case(name, meter, mesh, hsdp=False):
    """Plain DTensors: on a 1-D mesh row and column shards and a replica; with
    ``hsdp``, on a 2 x 2 mesh replicated over its first dimension and sharded on
    dim 0 over its second, but for one matrix sharded over both (which every rank
    then computes whole). The gradients are set by hand (the same on every rank
    and in the reference)."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    model = _model()
    layout = {"sq.weight": Shard(1), "sq2.weight": Shard(0), "tiny.weight": Shard(0),
              "wide.weight": Shard(1), "tall.weight": Replicate(), "conv.weight": Shard(0),
              "experts.w": Shard(0)}
    for mod_name, mod in model.named_modules():
        for pname, p in list(mod.named_parameters(recurse=False)):
            full = f"{mod_name}.{pname}" if mod_name else pname
            pl = [layout.get(full, Replicate())]
            if hsdp:
                pl = [Shard(0), Shard(1)] if full == "tall.weight" else [Replicate(), Shard(0)]
            setattr(mod, pname, torch.nn.Parameter(distribute_tensor(p.detach(), mesh, pl)))
    opt = _optimizer(name, _groups(model))
    ref = _model()  # the same gradients from the same model, unsharded
    for t in range(STEPS):
        with torch.no_grad():
            for (_, r), (_, p) in zip(ref.named_parameters(), model.named_parameters()):
                r.copy_(p.full_tensor())
        ref.zero_grad()
        ref(*_batch(t)).backward()
        for (_, r), (_, p) in zip(ref.named_parameters(), model.named_parameters()):
            p.grad = distribute_tensor(r.grad, mesh, p.placements)
        meter.step(opt)
    return model


def _by_position(osd):
    """An optimizer state dict keyed by parameter names (DCP's) keyed by position."""
    ids: dict = {}
    groups = [{**g, "params": [ids.setdefault(k, len(ids)) for k in g["params"]]}
              for g in osd["param_groups"]]
    return {"state": {ids[k]: v for k, v in osd["state"].items()}, "param_groups": groups}


def _worker(rank, world, port, tmp, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    mesh = init_device_mesh("cpu", (world,))
    monkey: list = []
    out = {}
    try:
        meter = _Meter(monkey)
        for mode in ("ddp", "fsdp"):
            for name, _, _ in OPTIMIZERS:
                meter.reset()
                model, _ = _train(mode, name, meter, mesh)
                out[(mode, name)] = meter.result(model)
        for name in ("muon", "dynmuon"):
            meter.reset()
            model = _dtensor_case(name, meter, mesh)
            out[("dtensor", name)] = meter.result(model)
        if world == 4:  # HSDP: each replica group of 2 shares its maps out
            meter.reset()
            mesh2 = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
            model = _dtensor_case("muon", meter, mesh2, hsdp=True)
            out[("hsdp", "muon")] = meter.result(model)
        # DCP: saved at SAVE_AT by 4 processes, resumed by 2
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (get_state_dict,
                                                             set_model_state_dict,
                                                             set_state_dict)
        for name in ("muon", "dynmuon"):
            path = os.path.join(tmp, f"ckpt-{name}")
            meter.reset()
            if world == 4:
                model, opt = _train("fsdp", name, meter, mesh, steps=SAVE_AT)
                msd, osd = get_state_dict(model, opt)
                dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)
                _train("fsdp", name, meter, mesh, steps=STEPS, start=SAVE_AT, model=model,
                       opt=opt)
            else:
                model = _fsdp(_model(), mesh)
                opt = _optimizer(name, _groups(model))
                msd, osd = get_state_dict(model, opt)
                state = {"model": msd, "optim": osd}
                dcp.load(state, checkpoint_id=path)
                standard = None
                try:  # torch's path: the optimizer state keyed by parameter names
                    set_state_dict(model, opt, model_state_dict=state["model"],
                                   optim_state_dict=state["optim"])
                except Exception as e:  # the same on every rank: no collective is left open
                    standard = f"{type(e).__name__}: {e}"[:300]
                    set_model_state_dict(model, state["model"])
                    opt.load_state_dict(_by_position(state["optim"]))
                out[("dcp-standard", name)] = standard
                _train("fsdp", name, meter, mesh, steps=STEPS, start=SAVE_AT, model=model,
                       opt=opt)
            out[("dcp", name)] = dict(params=_numpy(model))
            dist.barrier()
        # an explicit group for plain parameters: the world's ProcessGroup, a 1-D mesh
        got = []
        for pg in (None, dist.group.WORLD, mesh):
            ps = [torch.nn.Parameter(torch.ones(4, 8)) for _ in range(3)]
            opt = _optimizer("muon", ps, process_group=pg)
            for i, p in enumerate(ps):
                p.grad = torch.eye(4, 8) + i
            meter.reset()
            meter.step(opt)
            got.append((np.stack([p.detach().numpy() for p in ps]), meter.units[0]))
        out["explicit-group"] = got
        # plain parameters that are not replicas (no DDP): refused, not silently mixed
        p = torch.nn.Parameter(torch.ones(4, 8))
        opt = _optimizer("muon", [p])
        p.grad = torch.eye(4, 8) + rank
        try:
            opt.step()
            out["not-replicas"] = None
        except RuntimeError as e:
            out["not-replicas"] = str(e)
    except BaseException as e:  # report, do not hang the others
        import traceback
        queue.put((rank, {"error": f"rank {rank}: {traceback.format_exc()}"}))
        queue.close()
        queue.join_thread()  # flushed before the hard exit
        os._exit(1)
    finally:
        for obj, attr, val in monkey:
            setattr(obj, attr, val)
    queue.put((rank, out))
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world, tmp):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, tmp, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world):
            rank, out = queue.get(timeout=600)
            if "error" in out:
                raise AssertionError(out["error"])
            results[rank] = out
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return results


@pytest.fixture(scope="module")
def runs():
    """{world: {rank: results}}: 4 processes first (they write the checkpoint)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for world in (4, 2):
            out[world] = _spawn(world, tmp)
        return out


@pytest.fixture(scope="module")
def reference():
    return {name: _single(name) for name, _, _ in OPTIMIZERS}


def _close(a, b, rtol=1e-6):
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-30)) for k in b) \
        <= rtol


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", [o[0] for o in OPTIMIZERS])
def test_matches_single_process(runs, reference, world, mode, name):
    res = runs[world]
    for rank in range(world):
        got = res[rank][(mode, name)]["params"]
        err = max(float(np.abs(got[k] - reference[name][k]).max()
                        / np.abs(reference[name][k]).max()) for k in got)
        assert err <= 1e-6, (rank, err)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["ddp", "fsdp", "dtensor"])
def test_each_map_once_per_step(runs, world, mode):
    units = _units(_model())
    for name in ("muon", "dynmuon"):
        per_rank = [runs[world][r][(mode, name)] for r in range(world)]
        for t in range(STEPS):
            assert sum(p["units"][t] for p in per_rank) == units, (name, t)
            # one core call per bucket and rank at most (6 buckets)
            assert all(p["calls"][t] <= 6 for p in per_rank)


def _owners(buckets, world):
    """The documented ownership: buckets by decreasing map flops, units dealt
    round-robin with one cursor carried from bucket to bucket."""
    cursor, owners = 0, {}
    for key in sorted(buckets, key=lambda k: -(min(k) ** 2 * max(k))):
        for i in range(buckets[key]):
            owners[(key, i)] = cursor
            cursor = (cursor + 1) % world
    return owners


def _chunks(n, w):
    c = -(-n // w)
    return [max(0, min(c, n - r * c)) for r in range(w)]


@pytest.mark.parametrize("world", [2, 4])
def test_bytes_per_step_match_the_formula(runs, world):
    # the 2-D/conv buckets of the model, (m, n): number of matrices; the experts are
    # sharded on their stack axis under FSDP2 and need no exchange
    buckets = {(16, 16): 2, (3, 16): 1, (8, 32): 1, (24, 8): 1, (4, 18): 1}
    owners = _owners(buckets, world)
    # FSDP2 (Shard(0)): out, each rank sends its rows of the matrices it does not own;
    # back, each owner sends every other rank its rows of the result (float32)
    fwd, rev = [0] * world, [0] * world
    for ((m, n), _), o in owners.items():
        rows = _chunks(m, world)
        for r in range(world):
            if r != o:
                fwd[r] += rows[r] * n * 4
                rev[o] += rows[r] * n * 4
    # in all, each way: sum over matrices of m n minus the owner's shard
    total = sum(m * n - _chunks(m, world)[o] * n for ((m, n), _), o in owners.items())
    assert sum(fwd) == sum(rev) == 4 * total
    # which is k m n (W - 1) / W per bucket whose rows split evenly
    even = [((m, n), k) for (m, n), k in buckets.items() if m % world == 0]
    assert sum(m * n - _chunks(m, world)[owners[(key, i)]] * n
               for key, k in even for i in range(k) for m, n in [key]) == \
        sum(k * m * n * (world - 1) // world for (m, n), k in even)
    # DDP: every rank all-gathers ceil(k / W) slots of each bucket (experts: 3 matrices)
    ddp = 4 * (world - 1) * (sum(-(-k // world) * m * n for (m, n), k in buckets.items())
                             + -(-3 // world) * 8 * 16)
    for r in range(world):
        for name in ("muon", "dynmuon"):
            f = runs[world][r][("fsdp", name)]
            d = runs[world][r][("ddp", name)]
            for t in range(STEPS):  # floating-point payloads only (not the plan check)
                assert f["a2a"][t] == fwd[r] + rev[r] and f["gather"][t] == 0, (name, t)
                assert d["gather"][t] == ddp and d["a2a"][t] == 0, (name, t)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("name", ["muon", "dynmuon"])
def test_plain_dtensor_rows_columns_replicas(runs, reference, world, name):
    # the gradients are the single-process ones: the arithmetic is the same
    ref = reference[name]
    for r in range(world):
        got = runs[world][r][("dtensor", name)]["params"]
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


@pytest.mark.parametrize("name", ["muon", "dynmuon"])
def test_dcp_checkpoint_from_4_processes_resumes_on_2(runs, reference, name):
    saved4 = runs[4][0][("dcp", name)]["params"]
    resumed2 = runs[2][0][("dcp", name)]["params"]
    for k in saved4:
        np.testing.assert_array_equal(resumed2[k], saved4[k], err_msg=k)
    assert _close(resumed2, reference[name])


@pytest.mark.parametrize("name", ["muon", "dynmuon"])
def test_dcp_set_state_dict_loads_the_optimizer(runs, name):
    assert runs[2][0][("dcp-standard", name)] is None


@pytest.mark.parametrize("world", [2, 4])
def test_plain_parameters_that_differ_between_ranks_are_refused(runs, world):
    for r in range(world):
        assert "not data-parallel replicas" in runs[world][r]["not-replicas"]


def test_hsdp_two_replica_groups_share_out_the_maps(runs, reference):
    units = _units(_model())
    for r in range(4):
        got = runs[4][r][("hsdp", "muon")]
        for k in reference["muon"]:
            np.testing.assert_array_equal(got["params"][k], reference["muon"][k], err_msg=k)
    for t in range(STEPS):  # each replica group (ranks 0-1, 2-3) computes every map once,
        # but the one sharded over both mesh dimensions, which both of its ranks compute
        assert sum(runs[4][r][("hsdp", "muon")]["units"][t] for r in (0, 1)) == units + 1
        assert sum(runs[4][r][("hsdp", "muon")]["units"][t] for r in (2, 3)) == units + 1


@pytest.mark.parametrize("world", [2, 4])
def test_explicit_process_group_or_mesh_for_plain_parameters(runs, world):
    units = []
    for r in range(world):
        (local, n_local), (pg, n_pg), (mesh, n_mesh) = runs[world][r]["explicit-group"]
        np.testing.assert_array_equal(pg, local)
        np.testing.assert_array_equal(mesh, local)
        assert n_local == 3
        units.append((n_pg, n_mesh))
    assert sum(u[0] for u in units) == sum(u[1] for u in units) == 3
