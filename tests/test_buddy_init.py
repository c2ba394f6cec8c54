"""The buddy's start state: exactly buddyinfo-before, aligned and fully merged, never on a page in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptebench
from ptebench.sim.buddy_init import (
    F_PCP,
    F_USED,
    MAX_ORDER,
    buddyinfo_distance,
    choose_free_blocks,
    first_events,
    initial_state,
    zones_from_ram,
    zones_from_ram_reference,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["secretmem_1024", "modules"])
def capture(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("bi") / "t.parquet"
    ptebench.ingest([str(ROOT / "traces" / request.param)], out)
    return ptebench.load(out)


def _check(state, buddyinfo, first):
    counts: dict[str, list[int]] = {}
    seen = np.zeros(max(e for _, _, e in state.zones), dtype=bool)
    zone_of = {}
    for name, s, e in state.zones:
        zone_of[name] = (s, e)
    free_set = set(state.blocks)
    for pfn, order in state.blocks:
        size = 1 << order
        assert pfn % size == 0
        name = next(n for n, (s, e) in zone_of.items() if s <= pfn < e)
        assert pfn + size <= zone_of[name][1]
        assert not seen[pfn: pfn + size].any()
        seen[pfn: pfn + size] = True
        assert not (first[pfn: pfn + size] == F_USED).any()  # never a page the trace frees before allocating it
        assert not (first[pfn: pfn + size] == F_PCP).any()  # nor one on a per-CPU list (buddyinfo omits those)
        if order < MAX_ORDER - 1:
            assert (pfn ^ size, order) not in free_set  # fully merged: no free buddy of the same order
        counts.setdefault(name, [0] * MAX_ORDER)[order] += 1
    for a, b in state.absent:
        assert not seen[a: min(b, len(seen))].any()
    assert buddyinfo_distance(counts, buddyinfo) == {"blocks": 0, "pages": 0}


def test_initial_state_matches_buddyinfo_exactly(capture):
    bi = capture.bundle["snapshots"]["before"]["buddyinfo"]
    state = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    fe = first_events(capture, max(e for _, _, e in state.zones))
    _check(state, bi, fe.first)
    assert state.stats["blocks_short"] == {}
    assert [z[0] for z in state.zones] == ["DMA", "DMA32", "Normal"]
    again = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    assert again.blocks == state.blocks and (again.pageblock_mt == state.pageblock_mt).all()


#: (pages in use before, pages taken off the buddy first, of those placed free, pcp blocks, pcp pages, re-freed)
GOLDEN = {"secretmem_1024": (9, 944, 944, 213, 214, 0), "modules": (100, 1889, 1889, 265, 422, 777)}


def test_likely_free_pages_are_preferred(capture):
    """Golden: pages in use before the trace, pages the trace takes off the buddy first and how many of those
    start free (all: no chosen block also holds a page in use), the per-CPU blocks of the start, and the
    frees followed by another free of the page (reallocated without an event)."""
    bi = capture.bundle["snapshots"]["before"]["buddyinfo"]
    state = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    s = state.stats
    before, first, placed, pcp_blocks, pcp_pages, refreed = GOLDEN[capture.bundle["name"]]
    assert (s["pages_allocated_before_trace"], s["pages_first_allocated"], s["likely_free_pages_placed_free"]) == (
        before, first, placed)
    assert (s["pcp_blocks_at_start"], s["pcp_pages_at_start"], s["frees_reallocated_unseen"]) == (
        pcp_blocks, pcp_pages, refreed)


def test_constructed_zone_choice():
    ram = [(0x1000, 0x9F000), (0x100000, 0x1000000)]  # 4K..636K, 1M..16M: DMA only
    zones, absent, npfn = zones_from_ram(ram)
    assert zones == [("DMA", 0, 4096)] and absent[0] == (0, 1) and (159, 256) in absent
    first = np.zeros(npfn, dtype=np.int8)
    first[2048] = 2  # in use before the trace: no free block may hold it
    first[1024:1030] = 1  # allocated by the trace first: preferred
    blocks, short = choose_free_blocks(zones, absent, npfn, {"DMA": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]}, first)
    assert short == {}
    assert (1024, 10) in blocks  # the 4M block [4M, 8M) holds the likely-free pages
    assert all(not (p <= 2048 < p + (1 << o)) for p, o in blocks)
    assert len(blocks) == 3
    blocks, short = choose_free_blocks(zones, absent, npfn, {"DMA": [0] * 10 + [4]}, first)
    assert short == {"DMA": [0] * 10 + [2]}  # only [4M,8M) and [12M,16M) are whole and free of used pages


def _first_events_oracle(trace, npfn):
    """Plain per-event walk of the rules in first_events() (an independent oracle)."""
    import pyarrow.compute as pc

    t = trace._file.read(columns=["event", "cpu", "pfn", "order", "failed", "migratetype"])
    ev = pc.cast(t["event"], "string").to_pylist()
    cols = {k: t[k].to_pylist() for k in ("cpu", "pfn", "order", "failed", "migratetype")}
    first: dict[int, int] = {}
    last: dict[int, tuple[str, int, int]] = {}
    seeds_a, seeds_d, refreed, unseen = [], [], [], []
    for i, name in enumerate(ev):
        pfn, order, failed, mt, cpu = (cols[k][i] for k in ("pfn", "order", "failed", "migratetype", "cpu"))
        if pfn is None or pfn < 0 or name not in ("mm_page_alloc", "mm_page_free", "mm_page_free_batched",
                                                  "mm_page_alloc_zone_locked", "mm_page_pcpu_drain"):
            continue
        if name == "mm_page_alloc" and failed:
            continue
        pcp_ok = (order <= 3 or order == 9) and mt is not None and 0 <= mt < 3
        code = {"mm_page_free": 2, "mm_page_free_batched": 2, "mm_page_alloc_zone_locked": 1,
                "mm_page_pcpu_drain": 3}.get(name, 3 if pcp_ok else 1)
        for p in range(pfn, min(pfn + (1 << order), npfn)):
            if p not in first:
                first[p] = code
                if code == 3 and p == pfn:
                    (seeds_d if name == "mm_page_pcpu_drain" else seeds_a).append((cpu, pfn, order, mt if mt < 3 else 1))
            if name in ("mm_page_alloc", "mm_page_free", "mm_page_alloc_zone_locked"):
                kind = {"mm_page_alloc": "alloc", "mm_page_alloc_zone_locked": "taken"}.get(
                    name, "free0" if order == 0 else "free")
                if kind.startswith("free") and p in last and last[p][0] == "free0":
                    refreed.append((last[p][1], p, i))
                if kind.startswith("free") and p in last and last[p][0] == "taken":
                    unseen.append((last[p][1], p, i))
                last[p] = (kind, i, order)
    return first, seeds_a + seeds_d[::-1], sorted(refreed), sorted(unseen)


def test_first_events_against_oracle(capture):
    npfn = 1 << 22
    fe = first_events(capture, npfn, rows=97)  # small chunks: state carried across chunk edges
    first, pcp, refreed, unseen = _first_events_oracle(capture, npfn)
    got = {int(p): int(fe.first[p]) for p in np.flatnonzero(fe.first)}
    assert got == first
    assert fe.pcp == pcp
    assert sorted(map(tuple, fe.refreed.tolist())) == refreed
    assert sorted(map(tuple, fe.unseen.tolist())) == unseen
    assert len(pcp) > 0


def test_pcp_seeds_start_on_their_lists(capture):
    """Pcp blocks of the start are on the lists of their CPU, never in a free block; the model's first
    order-0 allocation on a seeded list returns the seed at its head."""
    from ptebench.parse.gfp import GFP_NAMES
    from ptebench.sim import buddy as B

    bi = capture.bundle["snapshots"]["before"]["buddyinfo"]
    state = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    buddy = B.Buddy.from_zones(state.zones, 2)
    buddy.set_free_blocks(state.blocks, state.pageblock_mt[: len(buddy.state["pbmt"])], absent=state.absent)
    assert buddy.set_pcp_blocks(state.pcp) == 0
    buddy.check()
    lists = buddy.pcp_lists()
    assert sum(len(v) for v in lists.values()) == len(state.pcp) == state.stats["pcp_blocks_at_start"]
    cpu, pfn, order, mt = state.pcp[0]
    gfp = {0: B.GFP_KERNEL, 1: GFP_NAMES["GFP_HIGHUSER_MOVABLE"]}.get(mt)
    if gfp is not None and order == 0:
        assert buddy.alloc(0, gfp, cpu) == pfn
    with pytest.raises(ptebench.PtebenchError, match="not an aligned, allocated block"):
        buddy.set_pcp_blocks([state.pcp[1]] if len(state.pcp) > 1 else [(cpu, pfn, order, mt)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(0, 1 << 20)), min_size=1, max_size=8))
def test_holes_match_per_pfn_reference(spans):
    """zones_from_ram()'s holes, from merged ranges, equal the per-pfn map's (overlaps, unaligned edges,
    ranges shorter than a page)."""
    ram = [(s, s + n) for s, n in spans]
    if max(e for _, e in ram) >> 12 == 0:
        ram.append((0, 4096))
    assert zones_from_ram(ram)[1] == zones_from_ram_reference(ram)


def _choose_free_blocks_reference(zones, absent, npfn, buddyinfo, first):
    """:func:`choose_free_blocks` block by block in plain Python: candidates by likely-free pages, then top-down;
    a candidate whose buddy was chosen is skipped; chosen blocks leave every order's availability."""
    from ptebench.sim.buddy_init import F_BUDDY, F_PCP, F_USED, MAX_ORDER

    avail = [True] * npfn
    for a, b in absent:
        for p in range(a, b):
            avail[p] = False
    for p in range(npfn):
        if first[p] in (F_USED, F_PCP):
            avail[p] = False
    blocks, short = [], {}
    wanted = [(name, lo, hi, order, list(buddyinfo[name]) + [0] * MAX_ORDER)
              for name, lo, hi in zones if name in buddyinfo for order in reversed(range(MAX_ORDER))]
    for name, lo, hi, order, counts in wanted:  # zone by zone, largest blocks first
        size, need = 2 ** order, counts[order]
        if need:
            inside = range((lo + size - 1) // size, hi // size)  # the aligned blocks wholly in the zone
            cands = [b for b in inside if len(avail[b * size: (b + 1) * size]) == size
                     and all(avail[b * size: (b + 1) * size])]
            score = {b: sum(first[p] == F_BUDDY for p in range(b * size, (b + 1) * size)) for b in cands}
            cands.sort(key=lambda b: (-score[b], -b))
            chosen = []
            for b in cands:
                if len(chosen) < need and not (order < MAX_ORDER - 1 and (b ^ 1) in chosen):
                    chosen.append(b)
            for b in chosen:
                for p in range(b * size, (b + 1) * size):
                    avail[p] = False
                blocks.append((b * size, order))
            if len(chosen) < need:
                short.setdefault(name, [0] * MAX_ORDER)[order] = need - len(chosen)
    return sorted(blocks), short


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([np.int32, np.int64]))
def test_free_block_choice_and_list_order_against_reference(data, row_type):
    """The initial free blocks (numpy: ranked candidates, a pair's first, availability by index arrays) and
    their list order (one reduceat: earliest first-event row of a block's likely-free pages, then pfn) equal
    the block-by-block rules, whatever the rows' integer type."""
    from ptebench.sim.buddy_init import F_BUDDY, MAX_ORDER, NO_ROW, list_order

    npfn = data.draw(st.sampled_from([2048, 3072, 4096 + 512]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1 << 32)))  # pages drawn by a seed: thousands of them
    # per 128 pages, either only untouched and likely-free pages (free blocks of every order can form) or any
    first = np.where(np.repeat(rng.random(npfn // 128) < 0.7, 128), rng.choice(np.array([0, 1], np.int8), npfn),
                     rng.choice(np.array([0, 1, 1, 2, 3], np.int8), npfn)).astype(np.int8)
    cut = data.draw(st.integers(0, npfn // 1024)) * 1024
    zones = [("DMA32", 0, cut), ("Normal", cut, npfn)]
    absent = [(a, a + data.draw(st.integers(0, 40))) for a in data.draw(st.lists(st.integers(0, npfn - 1),
                                                                                max_size=3))]
    absent = [(a, min(b, npfn)) for a, b in absent]
    buddyinfo = {z: data.draw(st.lists(st.integers(0, 6), min_size=MAX_ORDER, max_size=MAX_ORDER))
                 for z in ("DMA32", "Normal")}
    none = np.iinfo(row_type).max
    row = np.where(first == F_BUDDY, rng.permutation(npfn).astype(row_type), none).astype(row_type)
    blocks, short = choose_free_blocks(zones, absent, npfn, buddyinfo, first)
    assert (blocks, short) == _choose_free_blocks_reference(zones, absent, npfn, buddyinfo, first.tolist())

    def key(b):
        r = [int(row[p]) for p in range(b[0], b[0] + (1 << b[1])) if first[p] == F_BUDDY]
        return (min(r) if r else NO_ROW, b[0])
    assert list_order(blocks, first, row) == sorted(blocks, key=key)
