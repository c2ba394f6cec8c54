"""The buddy allocator's state at the start of a trace, from a capture's buddyinfo and the trace itself.

``/proc/buddyinfo`` gives only the number of free blocks per zone and order, not where they
are.  The rule (documented in docs/buddy.md, "initial state"):

1. Zones from the memory map (``free_area_init()``: DMA below 16 MiB, DMA32 below 4 GiB,
   Normal above); pages outside E820 RAM are holes.
2. Pages whose first event in the trace is a free were allocated before the trace began:
   they start allocated (``must_used``).
3. Pages whose first event is an allocation were free at the start (in the buddy or on a
   per-CPU list): free blocks prefer them (``likely_free``).
4. For each zone, orders 10 down to 0, exactly ``buddyinfo[zone][order]`` aligned blocks are
   made free: blocks wholly in RAM, holding no ``must_used`` page and no page already free,
   whose buddy of the same order is not free below order 10 (so that the free blocks are fully merged, as
   ``__free_one_page()`` keeps them), chosen by the most ``likely_free`` pages, then from the
   top of the zone down (``memblock_free_all()`` hands memory over in pfn order and the
   allocator takes from the list heads, so a running system's free memory is its high part).
5. Everything else is in use.  Per-CPU lists start empty (buddyinfo does not count them).
6. Pageblock migratetypes: ``MIGRATE_MOVABLE`` (``memmap_init_range()``) unless the trace says
   otherwise: the ``fallback_migratetype`` of a first ``mm_page_alloc_extfrag`` in the
   pageblock (its owner before the steal), else the migratetype of its first allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptebench.engine.stream import K_ALLOC, K_EXTFRAG, K_FREE, K_FREE_BATCHED, iter_chunks
from ptebench.errors import PtebenchError

MAX_ORDER = 11
PAGEBLOCK_ORDER = 9
MIGRATE_MOVABLE = 1
ZONE_LIMITS = (("DMA", 16 << 20), ("DMA32", 4 << 30), ("Normal", 1 << 62))  # MAX_DMA_PFN, MAX_DMA32_PFN


@dataclass
class InitialState:
    zones: list[tuple[str, int, int]]  # (name, start_pfn, end_pfn)
    blocks: list[tuple[int, int]]  # free (pfn, order)
    pageblock_mt: np.ndarray  # int8 per pageblock
    absent: list[tuple[int, int]]  # holes (start_pfn, end_pfn)
    stats: dict[str, Any] = field(default_factory=dict)


def zones_from_ram(ram: list[tuple[int, int]]) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]], int]:
    """Zone spans (pfns) and holes from E820 RAM byte ranges."""
    end_pfn = max(e for _, e in ram) >> 12
    zones, lo = [], 0
    for name, limit in ZONE_LIMITS:
        hi = min(limit >> 12, end_pfn)
        if hi > lo and any(s >> 12 < hi and e >> 12 > lo for s, e in ram):
            zones.append((name, lo, hi))
        lo = max(lo, hi)
    present = np.zeros(end_pfn, dtype=bool)
    for s, e in ram:
        present[-(-s // 4096): e >> 12] = True
    edges = np.flatnonzero(np.diff(np.concatenate(([1], present.astype(np.int8), [1]))))
    absent = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return zones, absent, end_pfn


def first_events(trace, npfn: int, rows: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Per pfn: 1 if its first trace event is an allocation, 2 a free (0 none); per pageblock: the first
    allocation's migratetype or an extfrag's fallback migratetype (-1 none)."""
    first = np.zeros(npfn, dtype=np.int8)
    pbmt = np.full((npfn >> PAGEBLOCK_ORDER) + 1, -1, dtype=np.int8)
    cols = ["event", "pfn", "order", "failed", "migratetype", "fallback_migratetype"]
    for ch in iter_chunks(trace, rows, columns=cols):
        alloc = (ch.kind == K_ALLOC) & ~ch.failed
        free = (ch.kind == K_FREE) | (ch.kind == K_FREE_BATCHED)
        sel = np.flatnonzero((alloc | free) & (ch.pfn >= 0))
        n = np.int64(1) << ch.order[sel].astype(np.int64)
        pages = np.repeat(ch.pfn[sel], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        kinds = np.repeat(np.where(alloc[sel], 1, 2).astype(np.int8), n)
        ok = pages < npfn
        pages, kinds = pages[ok], kinds[ok]
        uniq, at = np.unique(pages, return_index=True)
        new = first[uniq] == 0
        first[uniq[new]] = kinds[at[new]]
        # pageblock owners: extfrag names the pageblock's previous owner; else the first allocation
        ev = np.flatnonzero(((ch.kind == K_EXTFRAG) | alloc) & (ch.pfn >= 0) & (ch.pfn < npfn))
        pb = ch.pfn[ev] >> PAGEBLOCK_ORDER
        mt = np.where(ch.kind[ev] == K_EXTFRAG, ch.fallback_mt[ev], ch.mt[ev]).astype(np.int8)
        upb, at = np.unique(pb, return_index=True)
        new = pbmt[upb] < 0
        pbmt[upb[new]] = mt[at[new]]
    return first, pbmt


def choose_free_blocks(zones, absent, npfn: int, buddyinfo: dict[str, list[int]], first: np.ndarray):
    """Step 4 of the module rule: exactly buddyinfo's counts, as aligned, fully merged free blocks."""
    avail = np.ones(npfn, dtype=bool)
    for a, b in absent:
        avail[a:b] = False
    avail &= first != 2
    likely = (first == 1).astype(np.int64)
    blocks: list[tuple[int, int]] = []
    short: dict[str, list[int]] = {}
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
            ok = (cs[ends] - cs[ends - size]) == size
            cand = np.flatnonzero(ok)
            score = (ls[ends] - ls[ends - size])[cand]
            order_idx = np.lexsort((-cand, -score))  # most likely-free pages first, then top-down
            chosen: set[int] = set()
            for c in cand[order_idx].tolist():
                if len(chosen) == need:
                    break
                blk = b0 + c
                if order < MAX_ORDER - 1 and (blk ^ 1) in chosen:  # order-10 blocks never merge
                    continue
                chosen.add(blk)
            for blk in chosen:
                avail[blk * size: (blk + 1) * size] = False
                blocks.append((blk * size, order))
            if len(chosen) < need:
                short.setdefault(name, [0] * MAX_ORDER)[order] = need - len(chosen)
    blocks.sort()
    return blocks, short


def initial_state(trace, *, memmap: list[dict], buddyinfo: list[dict], rows: int = 1 << 20) -> InitialState:
    """The buddy allocator's start state for a capture (see the module rule)."""
    from ptebench.sim.layout import e820_ram

    ram = e820_ram(memmap)
    if not ram:
        raise PtebenchError("the memory map holds no RAM", expected="'usable' or 'System RAM' entries")
    zones, absent, npfn = zones_from_ram(ram)
    per_zone = {str(z["zone"]): list(z["free"]) for z in buddyinfo}
    first, pb_first = first_events(trace, npfn, rows)
    blocks, short = choose_free_blocks(zones, absent, npfn, per_zone, first)
    pbmt = np.where(pb_first >= 0, pb_first, MIGRATE_MOVABLE).astype(np.int8)
    stats = {"pages_allocated_before_trace": int((first == 2).sum()), "pages_first_allocated": int((first == 1).sum()),
             "free_pages": int(sum(1 << o for _, o in blocks)),
             "likely_free_pages_placed_free": int(sum(int((first[p: p + (1 << o)] == 1).sum()) for p, o in blocks)),
             "blocks_short": short, "pageblocks_typed_by_trace": int((pb_first >= 0).sum())}
    return InitialState(zones, blocks, pbmt[: (npfn >> PAGEBLOCK_ORDER) + 1], absent, stats)


def buddyinfo_distance(model: dict[str, list[int]], kernel: list[dict]) -> dict[str, int]:
    """L1 distance between two buddyinfo tables: in blocks and in pages."""
    blocks = pages = 0
    for z in kernel:
        m = model.get(str(z["zone"]), [0] * MAX_ORDER)
        for order, k in enumerate(z["free"]):
            d = abs(int(m[order]) - int(k))
            blocks += d
            pages += d << order
    return {"blocks": blocks, "pages": pages}
