r"""Owner compute of the spectral maps for data- and fully-sharded torch training.

A spectral map needs the whole matrix: a shard's map is not a shard of the map.
:class:`OwnerCompute` is what :class:`~spectral_ops.adapters.torch.SpectralOptimizer`
calls, once per step, for the directions of all its buckets (matrices of one
shape and dtype). Each matrix ("unit": one matrix, or one ``(out, in)`` slice of
a ``batch_dims`` stack) is computed by exactly one rank of its group, its
*owner*, inside one batched call of the core per bucket and rank:

* **sharded** (a DTensor ``Shard(d)`` on a matrix dimension, e.g. FSDP2's
  ``Shard(0)``, or plain DTensor row/column shards): one
  ``all_to_all_single`` per bucket on the local shards both unshards and
  hands each owner its whole matrices; a reverse ``all_to_all_single``
  returns every rank its shards of the results. Per direction, the ranks send
  :math:`\sum_u (mn - |\text{owner's shard of } u|)` elements in all, i.e.
  :math:`k\,m\,n\,(W-1)/W` for a bucket of ``k`` evenly sharded ``m x n``
  matrices, :math:`k\,m\,n\,(W-1)/W^2` per rank.
* **local** (a ``batch_dims`` stack sharded on a stack axis, e.g. MoE experts
  under FSDP2): each rank already holds whole matrices and computes their
  maps; nothing is sent.
* **replicated** (plain tensors under DDP with an initialised process group,
  or ``Replicate()`` DTensors): each rank computes its share of the bucket and
  one ``all_gather_into_tensor`` returns the rest; each rank contributes
  ``ceil(k / W)`` slots (zero-padded), so receives ``(W - 1) ceil(k / W) m n``
  elements per bucket.

Ownership: buckets are taken in decreasing order of the flops of one map
(``min(m, n)^2 max(m, n)``) and their units dealt round-robin with one cursor
per group that carries over from bucket to bucket: every rank owns ``floor``
or ``ceil`` of ``k / W`` units of each bucket (the bucket padded to a multiple
of ``W``), and the extra units of consecutive buckets go to different ranks.

Other layouts (``Partial``, several sharded mesh dimensions, strided shards)
fall back to ``full_tensor()`` and every rank computing every map of those
parameters: correct, not efficient.

Collectives are issued with ``async_op=True``: the exchange of later buckets
runs while earlier buckets' maps are computed.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.distributed as dist

__all__ = ["OwnerCompute", "chunk_sizes", "unit_flops"]

# item classes
_A2A, _LOCAL, _REP, _SELF, _FULL = "a2a", "local", "rep", "self", "full"


def chunk_sizes(n: int, world: int) -> list[int]:
    """Sizes of ``torch.chunk(range(n), world)`` padded with empty chunks to
    ``world`` entries: the local extents of a ``Shard`` DTensor (and of FSDP2)."""
    c = -(-n // world) if n else 0
    return [max(0, min(c, n - r * c)) for r in range(world)]


def unit_flops(m: int, n: int) -> int:
    """Relative cost of one map of an ``m x n`` matrix (every iteration's products
    are ``min^2 max`` flops up to a constant)."""
    return min(m, n) ** 2 * max(m, n)


def _dtensor_types():
    try:
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # pragma: no cover - torch without DTensor
        return None
    return DTensor, Shard, Replicate


class _Group:
    """A process group and this rank's place in it (hashable by identity)."""

    def __init__(self, pg, world, rank, name):
        self.pg, self.world, self.rank, self.name = pg, world, rank, name


class _Item:
    __slots__ = ("cls", "group", "axis", "local", "n_units", "dt", "units")

    def __init__(self, cls, group=None, axis=0, local=None, n_units=0, dt=None):
        self.cls, self.group, self.axis, self.local = cls, group, axis, local
        self.n_units, self.dt = n_units, dt
        self.units = None  # local unit stack (n_units, ...)


class OwnerCompute:
    """The distributed direction engine of one optimizer.

    ``process_group``: where plain (non-DTensor) parameters' maps are shared
    out. ``"auto"``: the default group when ``torch.distributed`` is initialised
    with more than one process (DDP: every rank holds the same parameters in the
    same order); ``None``: no communication, every rank computes every map of
    its plain parameters (pipeline stages, parameters that differ by rank); a
    ``ProcessGroup`` or a 1-D ``DeviceMesh``: that group (e.g. the
    data-parallel group of a 2-D layout). DTensor parameters always use their
    own device mesh.
    """

    def __init__(self, process_group="auto"):
        if not (process_group is None or (isinstance(process_group, str)
                                          and process_group == "auto")
                or _is_mesh(process_group) or _is_pg(process_group)):
            raise TypeError("process_group must be 'auto', None, a torch.distributed "
                            f"ProcessGroup or a 1-D DeviceMesh; got {process_group!r}.")
        if _is_mesh(process_group) and process_group.ndim != 1:
            raise ValueError("process_group: pass a 1-D DeviceMesh (or the mesh's "
                             "data-parallel dimension, mesh['dp']).")
        self.process_group = process_group
        self._checked: set = set()
        self._groups: dict = {}
        #: counts of the last step: units computed here, core calls, elements
        #: sent (to other ranks) by all_to_all / all_gather
        self.stats: dict = {}

    # copies of the optimizer (deepcopy, pickle) keep the option, not the live groups
    def __getstate__(self):
        pg = self.process_group
        if not (pg is None or isinstance(pg, str)):
            raise TypeError("an optimizer with an explicit process_group cannot be pickled; "
                            "save its state_dict() instead.")
        return {"process_group": pg}

    def __setstate__(self, state):
        self.__init__(state["process_group"])

    def __deepcopy__(self, memo):
        return OwnerCompute(self.process_group)  # the same group, fresh caches

    # -- public entry ------------------------------------------------------------------------
    def directions(self, direction, buckets):
        """``{key: [direction of each item]}`` for ``buckets`` (``{(shape, dtype,
        device, step): [(param, update in its matrix view)]}``), or ``None`` when
        nothing is distributed (then the caller computes every map itself)."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        types = _dtensor_types()
        DTensor = types[0] if types else ()
        plain = self._plain_group()
        if plain is None and not any(isinstance(u, DTensor) for items in buckets.values()
                                     for _, u in items):
            return None
        return self._run(direction, buckets, plain, types)

    # -- groups ------------------------------------------------------------------------------
    def _plain_group(self):
        pg = self.process_group
        if pg is None:
            return None
        if isinstance(pg, str):  # "auto"
            if dist.get_world_size() < 2:
                return None
            return self._group(dist.group.WORLD)
        if _is_mesh(pg):
            return self._group(pg.get_group(), name=f"mesh{tuple(pg.mesh.flatten().tolist())}")
        return self._group(pg)

    def _group(self, pg, name=None):
        key = id(pg)
        g = self._groups.get(key)
        if g is None:
            world = dist.get_world_size(pg)
            ranks = dist.get_process_group_ranks(pg) if pg is not dist.group.WORLD else \
                list(range(world))
            g = _Group(pg, world, dist.get_rank(pg), name or f"ranks{tuple(ranks)}")
            self._groups[key] = g
        return g

    def _classify(self, u, nb, plain, types):
        """The class of one item: its update ``u`` in the matrix view, ``nb`` batch dims."""
        if types is None or not isinstance(u, types[0]):
            if plain is None or plain.world < 2:
                return _Item(_SELF, local=u)
            return _Item(_REP, plain, local=u)
        _, Shard, Replicate = types
        mesh, placements = u.device_mesh, u.placements
        shard = [(i, pl) for i, pl in enumerate(placements) if not isinstance(pl, Replicate)]
        if not shard:
            if mesh.ndim == 1 and mesh.size() > 1:
                return _Item(_REP, self._group(mesh.get_group()), local=u.to_local(), dt=u)
            return _Item(_SELF, local=u.to_local(), dt=u)
        if len(shard) == 1 and type(shard[0][1]) is Shard:
            md, pl = shard[0]
            g = self._group(mesh.get_group(md))
            d = pl.dim % u.ndim
            local = u.to_local()
            # this rank's extent must be torch.chunk's (FSDP2 and DTensor's Shard)
            if local.shape[d] == chunk_sizes(u.shape[d], g.world)[g.rank]:
                if d < nb:
                    return _Item(_LOCAL, g, local=local, dt=u)
                return _Item(_A2A, g, axis=d - nb, local=local, dt=u)
        return _Item(_FULL, local=u.full_tensor(), dt=u)

    # -- one step ----------------------------------------------------------------------------
    def _run(self, direction, buckets, plain, types):
        keys = list(buckets)
        plan_items = {}
        for key in keys:
            shape = key[0]
            nb = len(shape) - 2
            its = []
            for _, u in buckets[key]:
                it = self._classify(u, nb, plain, types)
                it.n_units = math.prod(it.local.shape[:-2])
                it.units = it.local.reshape((it.n_units,) + tuple(it.local.shape[-2:]))
                its.append(it)
            plan_items[key] = its
        owners = self._assign(keys, plan_items)
        self._check(keys, plan_items, owners)
        stats = dict(units=0, calls=0, a2a_sent=0, a2a_recv=0, gather_sent=0, gather_recv=0)

        # 1. launch every bucket's forward exchange
        fwd = {key: self._a2a_forward(key, plan_items[key], owners[key], stats) for key in keys}
        # 2. per bucket: wait, one batched core call, launch the returns
        back = {}
        for key in keys:
            back[key] = self._compute(direction, key, plan_items[key], owners[key], fwd[key],
                                      stats)
        # 3. wait for the returns, hand back every item's direction
        out = {key: self._finish(key, plan_items[key], owners[key], back[key], types)
               for key in keys}
        self.stats = stats
        return out

    def _assign(self, keys, plan_items):
        """``owners[key][(item index, unit index)] = rank in the item's group`` for the
        a2a and rep units; round-robin by flops with one cursor per group."""
        order = sorted(range(len(keys)), key=lambda i: -unit_flops(*keys[i][0][-2:]))
        cursor: dict = {}
        owners = {key: {} for key in keys}
        for i in order:
            key = keys[i]
            for j, it in enumerate(plan_items[key]):
                if it.cls not in (_A2A, _REP):
                    continue
                c = cursor.get(id(it.group), 0)
                for t in range(it.n_units):
                    owners[key][(j, t)] = c
                    c = (c + 1) % it.group.world
                cursor[id(it.group)] = c
        return owners

    def _check(self, keys, plan_items, owners):
        """Once per distinct plan: every rank of each group must hold the same plan
        (else the collectives would pair up wrong or hang), and replicated
        parameters the same updates (else they are not data-parallel replicas, and
        sharing out their maps would hand each rank another rank's direction)."""
        per_group: dict = {}
        for key in keys:
            for j, it in enumerate(plan_items[key]):
                if it.group is not None:
                    sig = (tuple(key[0]), str(key[1]), j, it.cls, it.axis,
                           it.n_units if it.cls in (_A2A, _REP) else None)
                    entry = per_group.setdefault(id(it.group), (it.group, [], []))
                    entry[1].append(sig)
                    if it.cls == _REP:
                        entry[2].append(it.local)
        for gid, (g, sigs, replicas) in per_group.items():
            h = hashlib.sha256(repr((g.name, sigs)).encode()).digest()
            if (gid, h) in self._checked:
                continue
            dev = _collective_device(g.pg)
            # the plan's hash, and a fingerprint of the replicated updates (float64 bits)
            fp = torch.zeros((), dtype=torch.float64, device=dev)
            for u in replicas:
                u64 = u.to(device=dev, dtype=torch.float64)
                fp += u64.sum() + u64.square().sum()
            mine = torch.cat([torch.tensor(list(h[:8]), dtype=torch.int64, device=dev),
                              fp.reshape(1).view(torch.int64)])
            allh = torch.zeros(g.world * 9, dtype=torch.int64, device=dev)
            dist.all_gather_into_tensor(allh, mine, group=g.pg)
            allh = allh.view(g.world, 9)
            if not bool((allh[:, :8] == mine[:8]).all()):
                raise RuntimeError(
                    "spectral optimizer: the ranks of a process group hold different "
                    "parameters (shapes, order or placements), so the maps cannot be shared "
                    "out. For parameters that differ between ranks (pipeline stages) pass "
                    "process_group=None, or the data-parallel group.")
            if not bool((allh[:, 8] == mine[8]).all()):
                raise RuntimeError(
                    "spectral optimizer: the updates of the plain (replicated) parameters "
                    "differ between the ranks of the process group, so they are not "
                    "data-parallel replicas (DDP averages the gradients; did the model run "
                    "without DDP?). Pass process_group=None for per-rank parameters.")
            self._checked.add((gid, h))

    def _a2a_forward(self, key, items, owners, stats):
        """Launch the all-to-all of this bucket's sharded units, per group."""
        shape = key[0]
        m, n = shape[-2:]
        launched = {}
        for gid, g, idx in _groups_of(items, _A2A):
            W, r = g.world, g.rank
            # units ordered by (axis, item, unit); for each, its owner
            units, send_parts, in_splits = [], [[] for _ in range(W)], [0] * W
            for a in (0, 1):
                for j in idx:
                    it = items[j]
                    if it.axis != a:
                        continue
                    for t in range(it.n_units):
                        units.append((a, j, t, owners[(j, t)]))
            for a, j, t, o in units:
                piece = items[j].units[t]
                send_parts[o].append(piece.reshape(-1))
                in_splits[o] += piece.numel()
            mine = [(a, j, t) for a, j, t, o in units if o == r]
            out_splits = [0] * W
            ext = {a: chunk_sizes((m, n)[a], W) for a in (0, 1)}
            for a, j, t in mine:
                for s in range(W):
                    out_splits[s] += (ext[0][s] * n) if a == 0 else (m * ext[1][s])
            flat = [p for q in range(W) for p in send_parts[q]]
            dtype, dev = items[idx[0]].units.dtype, items[idx[0]].units.device
            send = torch.cat(flat) if flat else torch.empty(0, dtype=dtype, device=dev)
            recv = torch.empty(sum(out_splits), dtype=dtype, device=dev)
            work = dist.all_to_all_single(recv, send, out_splits, in_splits, group=g.pg,
                                          async_op=True)
            stats["a2a_sent"] += sum(in_splits) - in_splits[r]
            stats["a2a_recv"] += sum(out_splits) - out_splits[r]
            launched[gid] = dict(group=g, units=units, mine=mine, work=work, recv=recv, send=send,
                                 in_splits=in_splits, out_splits=out_splits, ext=ext)
        return launched

    def _compute(self, direction, key, items, owners, fwd, stats):
        shape, step = key[0], key[-1]
        m, n = shape[-2:]
        parts, where = [], []  # blocks of the owner stack and what each is
        for gid, ex in fwd.items():
            ex["work"].wait()
            W, mine = ex["group"].world, ex["mine"]
            chunks = list(ex["recv"].split(ex["out_splits"]))
            for a in (0, 1):
                ka = sum(1 for x in mine if x[0] == a)
                if not ka:
                    continue
                pieces = []
                for s in range(W):
                    e = ex["ext"][a][s]
                    size = ka * (e * n if a == 0 else m * e)
                    # blocks of axis 0 come first in every chunk
                    off = 0 if a == 0 else sum(1 for x in mine if x[0] == 0) * ex["ext"][0][s] * n
                    pieces.append(chunks[s][off:off + size].view(
                        (ka, e, n) if a == 0 else (ka, m, e)))
                parts.append(torch.cat(pieces, dim=1 + a))
                where.append(("a2a", gid, a, ka))
        for j, it in enumerate(items):
            if it.cls in (_LOCAL, _SELF, _FULL):
                parts.append(it.units)
                where.append(("item", j, None, it.n_units))
        rep = {}
        for gid, g, idx in _groups_of(items, _REP):
            sel = [(j, t) for j in idx for t in range(items[j].n_units)
                   if owners[(j, t)] == g.rank]
            rep[gid] = (g, idx, sel)
            if sel:
                parts.append(torch.stack([items[j].units[t] for j, t in sel]))
                where.append(("rep", gid, None, len(sel)))
        results = []
        if parts:
            stack = torch.cat(parts) if len(parts) > 1 else parts[0]
            stats["units"] += stack.shape[0]
            stats["calls"] += 1
            if len(items) == 1 and len(shape) == 2:
                # a bucket of one matrix: the core sees it as the single-process step
                # does, unbatched (its batched and unbatched products may round apart)
                res = direction(stack[0], step)[None]
            else:
                res = direction(stack, step)
            results = list(res.split([w[3] for w in where]))
        blocks = dict(zip([w[:3] for w in where], results))
        # launch the returns
        back = dict(a2a={}, rep={}, item={})
        for gid, ex in fwd.items():
            W, mine = ex["group"].world, ex["mine"]
            send_parts = [[] for _ in range(W)]
            for a in (0, 1):
                blk = blocks.get(("a2a", gid, a))
                if blk is None:
                    continue
                off = 0
                for s in range(W):
                    e = ex["ext"][a][s]
                    send_parts[s].append(blk.narrow(1 + a, off, e).reshape(-1))
                    off += e
            flat = [p for s in range(W) for p in send_parts[s]]
            dtype, dev = ex["recv"].dtype, ex["recv"].device
            send = torch.cat(flat) if flat else torch.empty(0, dtype=dtype, device=dev)
            recv = torch.empty(sum(ex["in_splits"]), dtype=dtype, device=dev)
            work = dist.all_to_all_single(recv, send, ex["in_splits"], ex["out_splits"],
                                          group=ex["group"].pg, async_op=True)
            stats["a2a_sent"] += sum(ex["out_splits"]) - ex["out_splits"][ex["group"].rank]
            stats["a2a_recv"] += sum(ex["in_splits"]) - ex["in_splits"][ex["group"].rank]
            back["a2a"][gid] = (work, recv, send)  # send kept alive until the wait
        for gid, (g, idx, sel) in rep.items():
            total = sum(items[j].n_units for j in idx)
            slots = -(-total // g.world)
            u0 = items[idx[0]].units
            mine = torch.zeros((slots, m, n), dtype=u0.dtype, device=u0.device)
            blk = blocks.get(("rep", gid, None))
            if blk is not None:
                mine[:blk.shape[0]] = blk
            dev = _collective_device(g.pg)
            full = torch.empty((g.world * slots, m, n), dtype=u0.dtype, device=dev)
            work = dist.all_gather_into_tensor(full, mine.to(dev), group=g.pg, async_op=True)
            stats["gather_sent"] += mine.numel() * (g.world - 1)
            stats["gather_recv"] += mine.numel() * (g.world - 1)
            back["rep"][gid] = (work, full, slots, g, idx, mine)
        for j, it in enumerate(items):
            if it.cls in (_LOCAL, _SELF, _FULL):
                back["item"][j] = blocks[("item", j, None)]
        return back

    def _finish(self, key, items, owners, back, types):
        units_out = [None] * len(items)
        for gid, g, idx in _groups_of(items, _A2A):
            work, recv, _ = back["a2a"][gid]
            work.wait()
            # recv holds, by owner q, this rank's pieces of q's units in (axis, item, unit)
            # order: walk the same order as the forward send
            order = [(a, j, t, owners[(j, t)]) for a in (0, 1) for j in idx
                     if items[j].axis == a for t in range(items[j].n_units)]
            by_owner = [[] for _ in range(g.world)]
            for a, j, t, o in order:
                by_owner[o].append((j, t))
            res = {j: [None] * items[j].n_units for j in idx}
            off = 0
            for q in range(g.world):
                for j, t in by_owner[q]:
                    shp = items[j].units.shape[1:]
                    size = math.prod(shp)
                    res[j][t] = recv[off:off + size].view(shp)
                    off += size
            for j in idx:
                units_out[j] = torch.stack(res[j]) if res[j] else items[j].units
        for work, full, slots, g, idx, _ in back["rep"].values():
            work.wait()
            pos, count = [], [0] * g.world
            for j in idx:
                for t in range(items[j].n_units):
                    o = owners[(j, t)]
                    pos.append(o * slots + count[o])
                    count[o] += 1
            dev = items[idx[0]].units.device
            allres = full.to(dev)[torch.tensor(pos, device=dev)]
            off = 0
            for j in idx:
                units_out[j] = allres[off:off + items[j].n_units]
                off += items[j].n_units
        for j, blk in back["item"].items():
            units_out[j] = blk
        return [self._wrap(it, units_out[j], types) for j, it in enumerate(items)]

    @staticmethod
    def _wrap(it, units, types):
        local = units.reshape(it.local.shape)
        if it.dt is None:
            return local
        DTensor, _, Replicate = types
        u = it.dt
        if it.cls == _FULL:
            # every rank holds the whole result: its own piece is a local slice
            mesh = u.device_mesh
            full = DTensor.from_local(local, mesh, [Replicate()] * mesh.ndim, run_check=False,
                                      shape=u.shape, stride=u.stride())
            return full.redistribute(mesh, u.placements)
        return DTensor.from_local(local, u.device_mesh, u.placements, run_check=False,
                                  shape=u.shape, stride=u.stride())


def _groups_of(items, cls):
    """``[(group id, group, [item indices])]`` of the items of class ``cls``, in order."""
    seen: dict = {}
    for j, it in enumerate(items):
        if it.cls == cls:
            seen.setdefault(id(it.group), (it.group, []))[1].append(j)
    return [(gid, g, idx) for gid, (g, idx) in seen.items()]


def _collective_device(pg):
    """CPU for gloo, the current CUDA device for NCCL."""
    try:
        backend = dist.get_backend(pg)
    except Exception:  # pragma: no cover
        backend = "gloo"
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _is_pg(x) -> bool:
    return dist.is_available() and isinstance(x, dist.ProcessGroup)


def _is_mesh(x) -> bool:
    try:
        from torch.distributed.device_mesh import DeviceMesh
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, DeviceMesh)
