"""The jitted kernels and vectorised paths added for replay speed (issue #5), each against a plain-Python
reference on random event streams cut into chunks in several ways."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptebench.engine.faithful import _witness_walk
from ptebench.engine.prepass import LastAlloc
from ptebench.engine.stream import (
    K_ALLOC,
    K_CPA,
    K_DM_DEFAULT,
    K_DM_INVALID,
    K_EXTFRAG,
    K_FREE,
    K_FREE_BATCHED,
    K_OTHER,
    K_PCPU_DRAIN,
    K_ZONE_LOCKED,
    Chunk,
)
from ptebench.sim import buddy as B
from ptebench.sim import directmap as D
from ptebench.sim.buddy_init import F_BUDDY, F_PCP, F_USED, NO_ROW, PAGEBLOCK_ORDER, FirstEventScan

KINDS = [K_ALLOC, K_ALLOC, K_FREE, K_FREE, K_FREE_BATCHED, K_ZONE_LOCKED, K_PCPU_DRAIN, K_EXTFRAG, K_OTHER,
         K_DM_INVALID, K_CPA]


def _events(seed: int, n: int, npfn: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = rng.choice([0, 0, 0, 0, 1, 2, 3, 4, 9], n)
    return {
        "kind": rng.choice(KINDS, n).astype(np.int8),
        "pfn": np.where(rng.random(n) < 0.05, -1, rng.integers(0, npfn + 64, n)).astype(np.int64),
        "order": order.astype(np.int8),
        "failed": rng.random(n) < 0.05,
        "mt": rng.choice([-1, 0, 1, 1, 2, 3, 4], n).astype(np.int8),
        "fallback_mt": rng.choice([-1, 0, 1, 2], n).astype(np.int8),
        "cpu": rng.integers(0, 4, n).astype(np.int32),
        "pid": rng.integers(-1, 6, n).astype(np.int32),
    }


def _chunks(ev: dict[str, np.ndarray], cuts: list[int]):
    n = len(ev["kind"])
    edges = [0, *sorted(c for c in cuts if 0 < c < n), n]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = b - a
        yield Chunk(start=a, kind=ev["kind"][a:b], api=np.full(m, -1, np.int8), ts=np.arange(a, b, dtype=np.int64),
                    cpu=ev["cpu"][a:b], pid=ev["pid"][a:b], line=np.arange(a, b, dtype=np.int64),
                    pfn=ev["pfn"][a:b].copy(), order=ev["order"][a:b], gfp=np.zeros(m, np.uint64),
                    failed=ev["failed"][a:b], stack=np.full(m, -1, np.int32), page=np.zeros(m, np.uint64),
                    addr=np.zeros(m, np.uint64), npages=np.zeros(m, np.int64), mt=ev["mt"][a:b],
                    percpu_refill=np.zeros(m, bool), fragmenting=np.zeros(m, bool),
                    change_ownership=np.zeros(m, bool), fallback_mt=ev["fallback_mt"][a:b])


def first_events_reference(ev: dict[str, np.ndarray], npfn: int, thp: bool = True):
    """Plain per-event, per-page walk of ``first_events()``' rules (docs in sim/buddy_init.py)."""
    first: dict[int, int] = {}
    first_row: dict[int, int] = {}
    pbmt: dict[int, int] = {}
    last: dict[int, tuple[int, int]] = {}
    seeds_a, seeds_d, refreed, unseen = [], [], [], []
    for i in range(len(ev["kind"])):
        k, p0, o, failed, mt, fb, cpu = (int(ev[c][i]) for c in ("kind", "pfn", "order", "failed", "mt",
                                                                  "fallback_mt", "cpu"))
        if p0 < 0:
            continue
        alloc = k == K_ALLOC and not failed
        if (k == K_EXTFRAG or alloc) and p0 < npfn and pbmt.get(p0 >> PAGEBLOCK_ORDER, -1) < 0:
            pbmt[p0 >> PAGEBLOCK_ORDER] = fb if k == K_EXTFRAG else mt
        if not (alloc or k in (K_FREE, K_FREE_BATCHED, K_ZONE_LOCKED, K_PCPU_DRAIN)):
            continue
        pcp_order = o <= 3 or (thp and o == PAGEBLOCK_ORDER)
        if k in (K_FREE, K_FREE_BATCHED):
            code = F_USED
        elif k == K_PCPU_DRAIN or (alloc and pcp_order and 0 <= mt < 3):
            code = F_PCP
        else:
            code = F_BUDDY
        for p in range(p0, min(p0 + (1 << o), npfn)):
            if p not in first:
                first[p], first_row[p] = code, i
                if code == F_PCP and p == p0:
                    (seeds_d if k == K_PCPU_DRAIN else seeds_a).append((cpu, p0, o, mt if mt < 3 else 1))
            latest = {K_ALLOC: "alloc", K_ZONE_LOCKED: "taken", K_FREE: "free0" if o == 0 else "free"}.get(k)
            if latest is None:
                continue
            if latest.startswith("free") and p in last and last[p][0] == "free0":
                refreed.append((last[p][1], p, i))
            if latest.startswith("free") and p in last and last[p][0] == "taken":
                unseen.append((last[p][1], p, i))
            last[p] = (latest, i)
    return first, first_row, pbmt, seeds_a + seeds_d[::-1], sorted(refreed), sorted(unseen)


@pytest.mark.parametrize("seed", range(4))
def test_first_event_scan_against_reference(seed):
    npfn = 3 << PAGEBLOCK_ORDER
    ev = _events(seed, 3000, npfn)
    first, first_row, pbmt, pcp, refreed, unseen = first_events_reference(ev, npfn)
    rng = np.random.default_rng(100 + seed)
    for cuts, events in (([], None), ([1, 2, 3, 1500], 3000), (rng.integers(0, 3000, 40).tolist(), None)):
        scan = FirstEventScan(npfn, events=events)  # rows in int32 when the event count fits
        for ch in _chunks(ev, cuts):
            scan.feed(ch)
        fe = scan.result()
        assert fe.row.dtype == (np.int64 if events is None else np.int32)
        none = NO_ROW if events is None else np.iinfo(np.int32).max
        assert {int(p): int(fe.first[p]) for p in np.flatnonzero(fe.first)} == first
        assert {int(p): int(fe.row[p]) for p in np.flatnonzero(fe.row != none)} == first_row
        assert {int(b): int(fe.pageblock_mt[b]) for b in np.flatnonzero(fe.pageblock_mt >= 0)} == {
            b: v for b, v in pbmt.items() if v >= 0}
        assert fe.pcp == pcp
        assert list(map(tuple, fe.refreed.tolist())) == refreed
        assert list(map(tuple, fe.unseen.tolist())) == unseen
    assert pcp and refreed and unseen  # the stream exercises every output


def last_alloc_reference(ch: Chunk, carry: dict[int, int]) -> np.ndarray:
    """The pandas walk the prepass used before ``LastAlloc``: per row, the pfn of the latest allocation by
    the same pid up to it (-1 if none)."""
    alloc = pd.Series(np.where(ch.kind == K_ALLOC, ch.pfn, np.nan))
    out = alloc.groupby(ch.pid).ffill().to_numpy().copy()
    missing = np.isnan(out)
    if missing.any() and carry:
        out[missing] = [carry.get(int(p), np.nan) for p in ch.pid[missing]]
    last = alloc.groupby(ch.pid).last().dropna()
    carry.update({int(k): int(v) for k, v in last.items()})
    return np.nan_to_num(out, nan=-1).astype(np.int64)


@pytest.mark.parametrize("seed", range(4))
def test_last_alloc_against_reference(seed):
    ev = _events(seed, 2000, 1 << 12)
    rng = np.random.default_rng(200 + seed)
    for cuts in ([], [7, 8, 1000], rng.integers(0, 2000, 30).tolist()):
        carry: dict[int, int] = {}
        last = LastAlloc()
        for ch in _chunks(ev, cuts):
            at = np.flatnonzero(ch.kind >= K_DM_INVALID)
            want = last_alloc_reference(ch, carry)[at]
            assert last.feed(ch.kind, ch.pid, ch.pfn, at).tolist() == want.tolist()


def _walk_reference(pid, wmask, call_mask):
    """Per witness row, its pid's latest call row before it (what the witness walk reads)."""
    latest: dict[int, int] = {}
    out = []
    for j in np.flatnonzero(wmask | call_mask).tolist():
        if call_mask[j]:
            latest[int(pid[j])] = j
        else:
            out.append((j, latest.get(int(pid[j]))))
    return out, latest


@pytest.mark.parametrize("seed", range(6))
def test_witness_walk_keeps_what_witnesses_see(seed):
    rng = np.random.default_rng(seed)
    n = 500
    pid = rng.integers(0, 4, n).astype(np.int32)
    r = rng.random(n)
    wmask, call_mask = r < 0.1, (r >= 0.1) & (r < 0.7)
    rows = _witness_walk(pid, wmask, call_mask)
    assert len(rows) < len(np.flatnonzero(wmask | call_mask))
    keep = np.zeros(n, dtype=bool)
    keep[rows] = True
    assert _walk_reference(pid, wmask & keep, call_mask & keep) == _walk_reference(pid, wmask, call_mask)


def build_reference(ev, cons_in, pair, cons, run, start, unseen, refreed, mt_gfp, is_witness, acts, ncons,
                    extra_rows, extra):
    """Plain walk of ``sim_chunk()``'s rules for turning events into ops: a list of op tuples (``OP_FIELDS``
    order)."""
    from ptebench.engine.sim_kernel import S_ALLOC, S_FREE

    out = []
    ex = sorted(zip(extra_rows, extra, strict=True), key=lambda t: t[0])
    for i in range(len(ev["kind"])):
        while ex and ex[0][0] <= i:
            out.append(tuple(ex.pop(0)[1]))
        k, pfn, o = int(ev["kind"][i]), int(ev["pfn"][i]), int(ev["order"][i])
        forced = i in unseen
        alloc = ((k == K_ALLOC and not ev["failed"][i] and pfn >= 0) or forced) and not is_witness[cons_in[i]]
        free = (not alloc and k in (K_FREE, K_FREE_BATCHED) and pair[i] != -2 and pfn >= 0 and i not in refreed)
        if alloc:
            cid = int(cons_in[i])
            act = acts[cid if cid >= 0 else ncons - 1]
            gfp = int(mt_gfp[min(max(int(ev["mt"][i]), 0), 2)]) if forced else int(ev["gfp"][i])
            row = [S_ALLOC, o, B.request(gfp, o), -1 if forced else int(ev["mt"][i])]
        elif free:
            cid = int(cons[i]) if pair[i] >= 0 else -1
            act = acts[ncons + (cid if cid >= 0 else ncons - 1)]
            row = [S_FREE, o, 0, -1]
        else:
            continue
        kind, o, req, mt = row
        out.append((kind, o, req, int(ev["cpu"][i]), pfn, mt, int(act[0]), int(act[1]), int(act[2]) | int(run[i]),
                    (1 << o) if act[3] > 0 else 0, cid, start + i))
    out.extend(tuple(r) for _, r in ex)
    return out


def _sim_engine(npfn: int, ncons: int, acts: np.ndarray, is_witness: np.ndarray, intercepts=()):
    """A simulate engine over a fresh machine (every page free) with a stand-in for the faithful engine."""
    from types import SimpleNamespace

    from ptebench import policies
    from ptebench.engine.simulate import SimulateEngine
    from ptebench.sim.dmap import DirectMap

    buddy = B.Buddy.from_zones([("DMA32", 0, npfn)], 4, min_free_kbytes=128)
    buddy.set_free_blocks([(p, 10) for p in range(0, npfn, 1024)])
    half = ncons - 1
    f = SimpleNamespace(consumers=SimpleNamespace(names=[f"c{k}" for k in range(half)]),
                        binding=SimpleNamespace(areas=[]), alloc_act=acts[:half], free_act=acts[ncons:ncons + half],
                        is_witness=is_witness)
    policy = policies.Policy()
    policy.intercepts = tuple(intercepts)
    dm = DirectMap(npfn)
    dm.state["pud"][0] = D.LEAF  # one 1G page: the first CPA splits it
    dm.state["attr1g"][0] = D.ATTR_DEFAULT
    sim = SimulateEngine(f, dm, buddy, policy)
    sim.dmap.log = np.zeros((2, sim.dmap.log.shape[1]), np.int64)  # grown on the way (ST_LOG)
    return sim


@pytest.mark.parametrize("seed", range(4))
def test_sim_chunk_ops_against_reference(seed):
    """The ops ``sim_chunk()`` turns the events into (recorded as it applies them) against a plain walk of the
    rules (``build_reference``), through the engine's driver: request words learnt on the way, the split log
    grown, built ops at their rows, a policy's hooks stopping the loop and resuming it."""
    from ptebench.engine.sim_kernel import NCOL
    from ptebench.engine.simulate import MT_GFP, OP_FIELDS

    rng = np.random.default_rng(seed)
    n, ncons, npfn = 800, 4, 1 << 13
    ev = _events(seed, n, npfn - 64)
    ev["order"] = np.minimum(ev["order"], 3).astype(np.int8)
    ev["gfp"] = rng.choice(np.array([B.GFP_KERNEL, 0x100cca, 0x400dc0, 0x2800, 0xcc0], np.uint64), n)
    cons_in = rng.integers(-1, ncons - 1, n).astype(np.int16)
    pair = rng.choice([-2, -1, 5, 9], n).astype(np.int64)
    cons = rng.integers(-1, ncons - 1, n).astype(np.int16)
    run = rng.choice([0, 1], n).astype(np.int64)
    is_witness = np.array([False, True, False, False])  # ncons - 1 consumers, then id -1
    acts = np.zeros((2 * ncons, 4), np.int64)
    acts[[0, ncons + 2]] = [1, 0, 4, 1]  # consumer 0 acts on allocation, consumer 2 on free: CPA ops
    unseen = np.sort(rng.choice(n, 30, replace=False)).astype(np.int64)
    refreed = np.sort(rng.choice(n, 30, replace=False)).astype(np.int64)
    extra_rows = np.sort(rng.choice(n + 1, 25)).astype(np.int64)
    extra = np.zeros((25, NCOL), np.int64)  # kind 0: ops that apply nothing, at their rows
    extra[:, 1:] = rng.integers(0, 50, (25, NCOL - 1))
    extra[:, 9] = 0
    start = 1000 * seed
    want = build_reference(ev, cons_in, pair, cons, run, start, set(unseen.tolist()), set(refreed.tolist()), MT_GFP,
                           is_witness, acts, ncons, extra_rows.tolist(), extra.tolist())
    mask = ~(D.F_COLLAPSE | D.F_KERNEL_4K)  # a 6.1 kernel's CPA knows neither flag
    want = [(*w[:8], w[8] & mask, *w[9:]) for w in want]
    hooked = []
    for intercepts in ((), ("c2",)):
        sim = _sim_engine(npfn, ncons, acts, is_witness, intercepts)
        sim._hook = lambda row: hooked.append(row)  # noqa: B023 (the hook of this engine)
        sim._buf.rec = np.zeros((len(want) + 8, NCOL), np.int64)
        sim._buf.pos[4] = 0
        sim._sim(extra_rows, extra, (ev["kind"], ev["failed"], ev["pfn"], ev["order"], ev["cpu"], ev["mt"],
                                     ev["gfp"], cons_in, pair, cons, run, start, unseen, refreed))
        got = [tuple(r) for r in sim._buf.rec[: sim._buf.pos[4]].tolist()]
        assert len(OP_FIELDS) == NCOL and got == want
        assert sim.xs[0] > 0 and int(sim.dmap.log_n[0]) > 0  # allocations made, splits logged past a grown log
    assert hooked and all(r[10] == 2 and r[0] in (1, 2) for r in hooked)


def test_sim_chunk_keeps_every_extfrag_entry():
    """A chunk that steals more pageblocks than the buddy's extfrag log has room for: the loop stops for room
    (``ST_BLOG``) instead of dropping entries, so ``extfrag_events()`` holds one row per steal counted."""
    from ptebench.engine.sim_kernel import NCOL

    n, ncons = 600, 2
    sim = _sim_engine(1 << 20, ncons, np.zeros((2 * ncons, 4), np.int64), np.array([False, False]))
    z = np.zeros(0, np.int64)
    rows = (np.full(n, K_ALLOC, np.int8), np.zeros(n, bool), np.arange(n, dtype=np.int64) * 512,  # order-9
            np.full(n, 9, np.int8), np.zeros(n, np.int32), np.zeros(n, np.int8),  # unmovable allocations
            np.full(n, B.GFP_KERNEL, np.uint64), np.full(n, -1, np.int16), np.full(n, -1, np.int64),
            np.full(n, -1, np.int16), np.ones(n, np.int64), 0, z, z)
    log_rows = len(sim.buddy.state["log"])
    sim._sim(z, np.zeros((0, NCOL), np.int64), rows)
    steals = int(sim.buddy.state["ctr"][B.C_EXTFRAG])
    assert steals > log_rows and sim.xs[0] == n and sim.xs[1] == 0  # more steals than the log had rows
    ev = sim.buddy.extfrag_events()
    assert len(ev) == steals == int(sim.buddy.state["log_n"][0])
    assert (ev[:, B.L_ALLOC_MT] == B.MT_UNMOVABLE).all() and not (ev == 0).all(axis=1).any()


def test_fill_from_buffers_matches_fill_null():
    """Booleans and writable numbers come straight from the Arrow buffers: same values as fill_null, sliced
    arrays (a non-zero offset) included."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ptebench.engine.arrowcols import _fill, _fill_reference

    rng = np.random.default_rng(5)
    n = 1000
    nulls = rng.random(n) < 0.3
    cases = [(pa.array(rng.random(n) < 0.5, mask=nulls), False, bool, False),
             (pa.array(rng.random(n) < 0.5), False, bool, False),
             (pa.array(rng.integers(0, 1 << 40, n), mask=nulls), -1, np.int64, True),
             (pa.array(rng.integers(0, 100, n).astype(np.int8), mask=nulls), 0, np.int8, True),
             (pa.array(rng.integers(0, 100, n).astype(np.int16), mask=nulls), -1, np.int32, False),
             (pa.array(rng.integers(0, 1 << 63, n).astype(np.uint64) * 2, mask=nulls), 0, np.uint64, False),
             (pa.array(rng.integers(0, 100, n).astype(np.int8), mask=nulls), -1, np.int8, False),
             (pa.array(rng.integers(0, 100, n).astype(np.int32)), -1, np.int32, False)]
    for arr, value, dtype, writable in cases:
        for a in (arr, arr.slice(13, 700)):
            want = pc.fill_null(a, value).to_numpy(zero_copy_only=False).astype(dtype)
            got = _fill(a, value, dtype, writable=writable)
            assert got.dtype == dtype and got.tolist() == want.tolist()
            ref = _fill_reference(a, value, dtype, writable=writable)
            assert ref.dtype == dtype and ref.tolist() == want.tolist()
            if writable:
                got[:1] = 0  # a fresh array


def choose_free_blocks_reference(zones, absent, npfn, buddyinfo, first):
    """The prefix-sum form of ``choose_free_blocks()`` (full sort of the candidates at every order)."""
    from ptebench.sim.buddy_init import MAX_ORDER

    avail = np.ones(npfn, dtype=bool)
    for a, b in absent:
        avail[a:b] = False
    avail &= (first != F_USED) & (first != F_PCP)
    likely = (first == F_BUDDY).astype(np.int64)
    blocks, short = [], {}
    for name, start, end in zones:
        want = buddyinfo.get(name)
        if want is None:
            continue
        for order in range(MAX_ORDER - 1, -1, -1):
            need = int(want[order]) if order < len(want) else 0
            if need == 0:
                continue
            size = 1 << order
            b0, b1 = -(-start // size), end // size
            if b1 <= b0:
                short.setdefault(name, [0] * MAX_ORDER)[order] = need
                continue
            cs = np.concatenate(([0], np.cumsum(avail[b0 * size: b1 * size], dtype=np.int64)))
            ls = np.concatenate(([0], np.cumsum(likely[b0 * size: b1 * size])))
            ends = np.arange(1, b1 - b0 + 1) * size
            cand = np.flatnonzero((cs[ends] - cs[ends - size]) == size)
            score = (ls[ends] - ls[ends - size])[cand]
            chosen: set[int] = set()
            for c in cand[np.lexsort((-cand, -score))].tolist():
                if len(chosen) == need:
                    break
                if order < MAX_ORDER - 1 and (b0 + c) ^ 1 in chosen:
                    continue
                chosen.add(b0 + c)
            for blk in chosen:
                avail[blk * size: (blk + 1) * size] = False
                blocks.append((blk * size, order))
            if len(chosen) < need:
                short.setdefault(name, [0] * MAX_ORDER)[order] = need - len(chosen)
    return sorted(blocks), short


@pytest.mark.parametrize("seed", range(4))
def test_choose_free_blocks_against_reference(seed):
    from ptebench.sim.buddy_init import choose_free_blocks

    rng = np.random.default_rng(seed)
    npfn = 1 << 15
    zones = [("DMA", 0, 4096), ("DMA32", 4096, 20000), ("Normal", 20000, npfn - 100)]
    absent = [(0, 1), (159, 256), (9000, 9100)]
    first = rng.choice([0, 0, 0, F_BUDDY, F_USED, F_PCP], npfn, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]).astype(np.int8)
    first[rng.integers(0, npfn, 40)] = F_BUDDY
    for counts in ([3, 2, 2, 1, 1, 1, 0, 0, 0, 1, 1], [50, 40, 30, 20, 10, 5, 3, 2, 1, 1, 2], [400] * 11):
        bi = {"DMA": counts, "DMA32": counts, "Normal": counts[::-1]}
        assert choose_free_blocks(zones, absent, npfn, bi, first) == choose_free_blocks_reference(
            zones, absent, npfn, bi, first)


def test_vmemmap_agree_as_integers():
    from ptebench.engine.addresses import STRUCT_PAGE
    from ptebench.engine.prepass import vmemmap_agree

    rng = np.random.default_rng(9)
    for base in (0, 0xFFFFEA0000000000, (1 << 64) - 64 * 5, 12345 * 64):
        pfn = np.concatenate([rng.integers(0, 1 << 30, 200), [0, 1, 4, 5, 6, (1 << 57) + 3]]).astype(np.int64)
        page = np.array([(base + STRUCT_PAGE * int(p)) % (1 << 64) if k % 3 else int(rng.integers(0, 1 << 62))
                         for k, p in enumerate(pfn.tolist())], dtype=np.uint64)
        want = sum(1 for pg, p in zip(page.tolist(), pfn.tolist(), strict=True) if pg - STRUCT_PAGE * p == base)
        assert vmemmap_agree(page, pfn, base) == want


def placement_reference(ev, npfn):
    """Per event: pageblocks touched by unmovable allocations, extfrag counts, pcp refill pages and bursts
    (a refill whose previous event on its CPU was not one), drained pages."""
    from ptebench.engine.placement import MIGRATE_UNMOVABLE

    touched: set[int] = set()
    c = dict.fromkeys(("extfrag_steals", "extfrag_fragmenting", "extfrag_change_ownership", "pcp_refills",
                       "pcp_refill_pages", "pcp_drain_pages"), 0)
    prev: dict[int, bool] = {}
    nb = (npfn >> PAGEBLOCK_ORDER) + 1
    for i in range(len(ev["kind"])):
        k, p, o = int(ev["kind"][i]), int(ev["pfn"][i]), int(ev["order"][i])
        if k == K_ALLOC and not ev["failed"][i] and ev["mt"][i] == MIGRATE_UNMOVABLE and p >= 0:
            touched.update(b for b in (p >> PAGEBLOCK_ORDER, (p + (1 << o) - 1) >> PAGEBLOCK_ORDER) if b < nb)
        if k == K_EXTFRAG:
            c["extfrag_steals"] += 1
            c["extfrag_fragmenting"] += bool(ev["fragmenting"][i])
            c["extfrag_change_ownership"] += bool(ev["change_ownership"][i])
        if k == K_PCPU_DRAIN:
            c["pcp_drain_pages"] += 1 << o  # the event is one block of its order
        refill = k == K_ZONE_LOCKED and bool(ev["percpu_refill"][i])
        cpu = int(ev["cpu"][i])
        c["pcp_refill_pages"] += (1 << o) if refill else 0
        c["pcp_refills"] += refill and not prev.get(cpu, False)
        prev[cpu] = refill
    return touched, c


@pytest.mark.parametrize("seed", range(3))
def test_placement_against_reference(seed):
    from ptebench.engine.placement import Placement

    npfn = 1 << 14
    ev = _events(seed, 3000, npfn)
    rng = np.random.default_rng(300 + seed)
    ev["cpu"] = rng.integers(-1, 3, 3000).astype(np.int32)
    ev["kind"][rng.random(3000) < 0.3] = K_ZONE_LOCKED  # bursts
    for name in ("fragmenting", "change_ownership", "percpu_refill"):
        ev[name] = rng.random(3000) < 0.6
    touched, counts = placement_reference(ev, npfn)
    for cuts in ([], [1, 2, 1500], rng.integers(0, 3000, 30).tolist()):
        pl = Placement(npfn)
        for ch in _chunks(ev, cuts):
            ch.fragmenting, ch.change_ownership = ev["fragmenting"][ch.start: ch.start + len(ch)], \
                ev["change_ownership"][ch.start: ch.start + len(ch)]
            ch.percpu_refill = ev["percpu_refill"][ch.start: ch.start + len(ch)]
            pl.feed(ch)
        assert set(np.flatnonzero(pl.touched).tolist()) == touched
        assert pl.counts == counts
        assert counts["pcp_refills"] > 0 and counts["extfrag_fragmenting"] > 0


def test_lazy_timestamps_across_row_groups(tmp_path):
    """The replay's chunks read ts and line on demand, by row group: with row groups that no chunk boundary
    matches, they are the file's, and replays (faithful and simulate, splits table included) are the same."""
    from pathlib import Path

    import pyarrow.parquet as pq

    import ptebench
    from ptebench.engine.stream import COLUMNS, iter_chunks

    root = Path(__file__).resolve().parents[1]
    base = tmp_path / "t.parquet"
    ptebench.ingest([str(root / "traces" / "modules")], base)
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(base), small, row_group_size=333)
    tr = ptebench.load(small)
    assert tr._file.metadata.num_row_groups > 3
    want = [(ch.ts.copy(), ch.line.copy()) for ch in iter_chunks(tr, 500, columns=COLUMNS)]
    for rows in (500, 97, 1000):
        got = [(ch.ts, ch.line) for ch in iter_chunks(tr, rows, columns=COLUMNS, lazy=True)]
        assert np.array_equal(np.concatenate([g[0] for g in got]), np.concatenate([w[0] for w in want]))
        assert np.array_equal(np.concatenate([g[1] for g in got]), np.concatenate([w[1] for w in want]))
    for mode in ("faithful", "simulate"):
        a, b = ptebench.replay(base, mode=mode), ptebench.replay(small, mode=mode, chunk_rows=250)
        ra, rb = a.run_dict(), b.run_dict()
        ra.pop("timing"), rb.pop("timing")
        ra.pop("trace"), rb.pop("trace")
        assert ra == rb and a.splits.equals(b.splits) and len(a.splits)


def _kprobe_reference(fields: list[str | None]):
    """The per-row regex parse of kprobe fields (what chunk_from_batch() did before): kind, api, page, addr, n."""
    import re

    from ptebench.engine.stream import CPA_APIS, DM_PROBES

    out = []
    for s in fields:
        m = re.match(r"^\((?P<f>[A-Za-z0-9_.]+)\+0x0/", s) if s is not None else None
        fn = m.group("f") if m else None

        def arg(name, s=s):
            a = re.search(rf"\b{name}=0x(?P<v>[0-9a-fA-F]+)", s)
            return int(a.group("v"), 16) if a else 0
        if fn in DM_PROBES:
            out.append((DM_PROBES[fn], -1, arg("page"), 0, 0))
        elif fn in CPA_APIS:
            n = re.search(r"\bn(?:umpages)?=(?P<n>-?[0-9]+)", s)
            out.append((K_CPA, CPA_APIS.index(fn), 0, arg("addr"), int(n.group("n")) if n else 0))
        else:
            out.append(None)
    return out


def test_kprobe_fields_parse_against_reference():
    import pyarrow as pa

    from ptebench.engine.stream import chunk_from_batch

    fields = ["(set_direct_map_invalid_noflush+0x0/0x90) page=0xffd4000007cbab00",
              "(set_direct_map_default_noflush+0x0/0x40) mypage=0x1 page=0x2f",
              "(set_direct_map_default_noflush+0x0/0x40) oldpage=0x1",
              "(set_memory_ro+0x0/0x30) addr=0xffffffffc0001000 numpages=3",
              "(set_memory_nx+0x0/0x30) addr=0xffffffffc0001000 n=-2",
              "(set_memory_4k+0x0/0x30) addr=0xffff888100000000",
              "(set_memory_ro", "(set_memory_ro+0x1/0x30) addr=0x10 numpages=1", "set_memory_ro+0x0/0x30",
              "(set_memory_rox+0x0/0x30+0x0/0x1) addr=0x1000 numpages=7", "(bad name+0x0/0x1) page=0x1",
              "(+0x0/0x1) page=0x1", "workload mixed start", None,
              "(set_direct_map_invalid_noflush+0x0/0x90) page=0xABCDEF0123456789",
              "(set_direct_map_invalid_noflush+0x0/0x90) page=0x0000000000000000000001f",
              "(set_memory_x+0x0/0x30) addr=0x0 numpages=0"]
    for short in (True, False):  # with a value past 16 hex digits (one by one) and without (vectorised)
        fl = [x for x in fields if not (short and x and x.endswith("01f"))]
        n = len(fl)
        for typ in (pa.string(), pa.large_string()):
            batch = pa.record_batch({"event": pa.array(["kp"] * n).dictionary_encode(), "fields": pa.array(fl, typ)})
            for b in (batch, batch.slice(3), pa.Table.from_batches([batch.slice(0, 5), batch.slice(5)])):
                ch = chunk_from_batch(b, 0)
                want = _kprobe_reference(b.column("fields").to_pylist())
                for j, w in enumerate(want):
                    got = (int(ch.kind[j]), int(ch.api[j]), int(ch.page[j]), int(ch.addr[j]), int(ch.npages[j]))
                    assert got == (w if w is not None else (K_OTHER, -1, 0, 0, 0)), fl[j]


def test_per_event_kernels_run_without_the_nrt():
    """The per-op and per-event loops are compiled without numba's reference counting: with it, every array
    alias the inlined buddy code makes in ``sim_chunk`` cost an atomic incref/decref pair (about two thirds of
    that loop's time).  None of them allocates; ``_cpa`` uses the caller's scratch for its one-op arrays."""
    from ptebench.engine import arrowcols, faithful_rows, pairing, placement, prepass, sim_kernel, store
    from ptebench.sim import buddy_init

    kernels = [sim_kernel.sim_chunk, sim_kernel._cpa, pairing.pair_events, B.free_blocks,
               placement._placement_chunk, prepass._last_alloc, buddy_init._first_events_chunk, B.run_ops,
               arrowcols._fill_valid, arrowcols._bool_bits, arrowcols._lookup, arrowcols._scan_hex,
               arrowcols._find_hex, arrowcols._find_n, arrowcols._digits, arrowcols._same, arrowcols._scan_probes, arrowcols._true_bit, buddy_init._page_count,
               faithful_rows.chunk_rows, faithful_rows.classify_rows, store._lohi, store.lohi, store.pack_flags, store.unpack_flags]
    if not hasattr(sim_kernel.sim_chunk, "targetoptions"):
        pytest.skip("NUMBA_DISABLE_JIT: plain Python functions")
    assert [k.__name__ for k in kernels if k.targetoptions.get("_nrt") is not False] == []


def test_fill_kernels_against_reference_any_nulls_and_offset():
    """The jitted conversions (whole validity bytes, mixed ones branch-free, unaligned heads and tails) against
    Arrow's fill_null, for null fractions from none to all, every type the replay reads, sliced arrays."""
    import pyarrow as pa

    from ptebench.engine.arrowcols import _fill, _fill_reference

    rng = np.random.default_rng(11)
    types = [(pa.int64(), np.int64, -1), (pa.int8(), np.int8, 0), (pa.int8(), np.int8, -1),
             (pa.int16(), np.int32, -1), (pa.uint64(), np.uint64, 0), (pa.bool_(), bool, False),
             (pa.int32(), np.int32, -1)]
    for t, dtype, value in types:
        for _ in range(200):
            n = int(rng.integers(0, 100))
            p = rng.random()
            if t == pa.bool_():
                vals = [bool(v) for v in rng.integers(0, 2, n)]
            elif t == pa.uint64():
                vals = [int(v) * 2 + 1 for v in rng.integers(0, 1 << 63, n)]
            else:
                vals = [int(v) for v in rng.integers(0, 100, n)]
            arr = pa.array([None if rng.random() < p else v for v in vals], type=t)
            a = arr.slice(int(rng.integers(0, n + 1)), int(rng.integers(0, n + 1)))
            for writable in (False, True):
                got = _fill(a, value, dtype, writable=writable)
                want = _fill_reference(a, value, dtype, writable=writable)
                assert got.dtype == want.dtype == dtype and got.tolist() == want.tolist()


def test_event_kinds_lookup_against_take():
    import pyarrow as pa

    from ptebench.engine.stream import KMEM_KINDS, _event_kinds

    rng = np.random.default_rng(3)
    names = [*KMEM_KINDS, "kp", "tracing_mark_write"]
    for itype in (pa.int8(), pa.int32(), pa.int64()):
        idx = pa.array([None if v < 0 else int(v) for v in rng.integers(-1, len(names), 500)], itype)
        col = pa.DictionaryArray.from_arrays(idx, pa.array(names))
        lut = np.array([KMEM_KINDS.get(v, 0) for v in names] + [0], np.int8)
        want = lut.take(np.where(np.isnan(np.array(idx.to_pylist(), float)), len(lut) - 1,
                                 np.nan_to_num(np.array(idx.to_pylist(), float))).astype(np.int64))
        for a, w in ((col, want), (col.slice(17, 300), want[17:317])):
            assert _event_kinds(a).tolist() == w.tolist()


_HEX_TOKENS = ["page=0x", "addr=0x", "mypage=0x", "_page=0x", "-page=0x", "page=0X", "page=0", "0", "00000000", "f",
               "A", "9", "g", "x", " ", "(", ")", "é", "+0x0/0x30", "=", "p", "ffffffffffffffff", "1" * 17]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(_HEX_TOKENS), max_size=8).map("".join)), max_size=12),
       st.integers(0, 3), st.sampled_from(["page", "addr"]), st.booleans())
def test_hex_arg_against_regex(strings, cut, name, large):
    """The jitted ``name=0x`` scan against Arrow's regex (word boundaries, case, leading zeros, more than 16
    digits, nulls, sliced and large-offset arrays)."""
    import pyarrow as pa

    from ptebench.engine.arrowcols import _hex_arg, _hex_arg_reference

    arr = pa.array(strings, pa.large_string() if large else pa.string()).slice(min(cut, len(strings)))

    def run(f):
        try:
            return f(arr, name).tolist()
        except OverflowError:
            return "overflow"
    assert run(_hex_arg) == run(_hex_arg_reference)


_PROBE_TOKENS = ["(", "set_memory_ro", "set_memory_rox", "set_direct_map_invalid_noflush", "set_direct_map_default_noflush",
                 "set_memory_x", "+0x0/", "+0x1/", "0x30)", " ", "page=0x", "addr=0x", "n=", "numpages=", "numpagesx=",
                 "-", "0", "7", "f", "1" * 17, "9" * 19, "mypage=0x", "_n=", "é", "x"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.lists(st.sampled_from(_PROBE_TOKENS), max_size=10).map("".join)),
                max_size=12), st.integers(0, 3), st.booleans())
def test_probe_fields_scan_against_arrow(strings, cut, large):
    """The jitted kprobe-fields scan (probed name, ``page=``/``addr=``, ``n=``/``numpages=``) against Arrow's
    string functions and regexes, row for row: names, word boundaries, signs, long values, nulls, slices."""
    import pyarrow as pa

    from ptebench.engine.stream import _probe_fields, _probe_fields_reference

    arr = pa.array(strings, pa.large_string() if large else pa.string()).slice(min(cut, len(strings)))
    other = np.arange(len(arr), dtype=np.int64)

    def run(f):
        out = (np.zeros(len(arr), np.int8), np.full(len(arr), -1, np.int8), np.zeros(len(arr), np.uint64),
               np.zeros(len(arr), np.uint64), np.zeros(len(arr), np.int64))
        try:
            rows = f(arr, other, *out)
        except OverflowError:
            return "overflow"
        return sorted(rows.tolist()), [a.tolist() for a in out]
    assert run(_probe_fields) == run(_probe_fields_reference)


def chunk_rows_reference(kind, failed, pfn, cons_in, cons, pair, has_a, has_f, is_witness, use_kprobes, ncons):
    """The numpy masks the faithful engine computed before ``chunk_rows()`` (feed, _ops and _witnesses)."""
    alloc = kind == K_ALLOC
    ok_alloc = alloc & ~failed & (pfn >= 0)
    allocs = np.bincount(cons_in[ok_alloc].astype(np.int64) % ncons, minlength=ncons)
    cons_safe = np.where(cons >= 0, cons, 0).astype(np.int64)
    on_alloc = ok_alloc & has_a[cons_safe] & (cons >= 0)
    is_free = (kind == K_FREE) | (kind == K_FREE_BATCHED)
    sel = np.flatnonzero(on_alloc | (is_free & (pair >= 0) & (cons >= 0) & has_f[cons_safe]))
    wmask = (kind == K_ALLOC) & is_witness[cons_in] & ~failed
    cin_safe = np.where(cons_in >= 0, cons_in, 0).astype(np.int64)
    call_mask = np.zeros(len(kind), dtype=bool)
    if use_kprobes:
        call_mask |= (kind == K_DM_INVALID) | (kind == K_DM_DEFAULT) | (kind == K_CPA)
    call_mask |= (kind == K_ALLOC) & has_a[cin_safe] & (cons_in >= 0) & ~failed
    walk = np.flatnonzero(wmask | call_mask)
    return allocs, sel, on_alloc[sel], walk, call_mask[walk]


@pytest.mark.parametrize("seed", range(6))
def test_chunk_rows_against_reference(seed):
    from ptebench.engine.faithful_rows import chunk_rows

    rng = np.random.default_rng(seed)
    n, ncons = 2000, 5
    kind = rng.choice(np.array(KINDS + [K_DM_DEFAULT], np.int8), n)
    failed = rng.random(n) < 0.1
    pfn = np.where(rng.random(n) < 0.1, -1, rng.integers(0, 1000, n)).astype(np.int64)
    cons_in = rng.integers(-1, ncons, n).astype(np.int16)
    cons = rng.integers(-1, ncons, n).astype(np.int16)
    pair = rng.integers(-2, 50, n).astype(np.int64)
    has_a, has_f = rng.random(ncons) < 0.5, rng.random(ncons) < 0.5
    is_witness = np.append(rng.random(ncons) < 0.4, False)
    has_a[0], is_witness[0] = False, True  # a witness consumer (page-table pages) makes no call itself
    has_a[1] = True
    for use_kprobes in (True, False):
        allocs, sel, sel_alloc, walk, walk_call = chunk_rows_reference(
            kind, failed, pfn, cons_in, cons, pair, has_a, has_f, is_witness, use_kprobes, ncons)
        got_allocs = np.zeros(ncons, np.int64)
        out = np.empty(n, np.int64), np.empty(n, bool), np.empty(n, np.int64), np.empty(n, bool)
        ns, nw = chunk_rows(kind, failed, pfn, cons_in, cons, pair, has_a, has_f, is_witness, use_kprobes, got_allocs,
                            *out)
        assert got_allocs.tolist() == allocs.tolist()
        assert out[0][:ns].tolist() == sel.tolist() and out[1][:ns].tolist() == sel_alloc.tolist()
        assert out[2][:nw].tolist() == walk.tolist() and out[3][:nw].tolist() == walk_call.tolist()
        assert len(sel) and len(walk) and walk_call.any() and not walk_call.all()


def classify_rows_reference(kind, stack, stack_cons):
    """The numpy masks the faithful engine computed before ``classify_rows()``: the consumer by stack, and the
    rows of stackless allocations, direct-map kprobes and set_memory_* kprobes."""
    cons_in = stack_cons[stack]
    nostack = np.flatnonzero((kind == K_ALLOC) & (stack < 0))
    dm = np.flatnonzero((kind == K_DM_INVALID) | (kind == K_DM_DEFAULT))
    return cons_in, nostack, dm, np.flatnonzero(kind == K_CPA)


@pytest.mark.parametrize("seed", range(3))
def test_classify_rows_against_reference(seed):
    from ptebench.engine.faithful_rows import classify_rows

    rng = np.random.default_rng(seed)
    n = 3000
    kind = rng.choice(np.array(KINDS + [K_DM_DEFAULT, K_CPA], np.int8), n)
    stack_cons = np.append(rng.integers(-1, 6, 40), -1).astype(np.int16)  # the last entry: no stack
    for stack in (rng.integers(-1, 40, n).astype(np.int32), rng.integers(-1, 40, n).astype(np.int16)):
        want = classify_rows_reference(kind, stack, stack_cons)
        out = np.empty(n, np.int16), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        counts = classify_rows(kind, stack, stack_cons, *out)
        got = [out[0], *(a[:c] for a, c in zip(out[1:], counts, strict=True))]
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
        assert all(len(w) for w in want[1:])  # every kind of row occurs
