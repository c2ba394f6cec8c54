"""The buddy allocator's state at the start of a trace, from a capture's buddyinfo and the trace itself.

``/proc/buddyinfo`` gives only the number of free blocks per zone and order, not where they
are.  The rule (documented in docs/buddy.md, "initial state"):

1. Zones from the memory map (``free_area_init()``: DMA below 16 MiB, DMA32 below 4 GiB,
   Normal above); pages outside E820 RAM are holes.
2. Pages whose first event in the trace is a free were allocated before the trace began:
   they start allocated (``must_used``).
3. A pcp-order block whose first event is its own allocation, with no
   ``mm_page_alloc_zone_locked`` before it, or whose first event is ``mm_page_pcpu_drain``, was
   on a per-CPU list at the start (every block leaving the buddy fires zone_locked in
   ``__rmqueue_smallest()``): it starts on that CPU's list (see :func:`first_events`).  Other
   pages whose first event is an allocation or a zone_locked were in the buddy at the start: free
   blocks prefer them (``likely_free``).
4. For each zone, orders 10 down to 0, exactly ``buddyinfo[zone][order]`` aligned blocks are
   made free: blocks wholly in RAM, holding no ``must_used`` page and no page already free,
   whose buddy of the same order is not free below order 10 (so that the free blocks are fully merged, as
   ``__free_one_page()`` keeps them), chosen by the most ``likely_free`` pages, then from the
   top of the zone down (``memblock_free_all()`` hands memory over in pfn order and the
   allocator takes from the list heads, so a running system's free memory is its high part).
   They join their free lists (``__free_one_page()`` to the tail) in the order the trace first
   takes pages from them, untouched blocks last in pfn order (:func:`list_order`).
5. Everything else is in use.  Per-CPU lists hold only the blocks of rule 3 (buddyinfo does not
   count pcp pages, so they never take a free block's place).
6. Pageblock migratetypes: ``MIGRATE_MOVABLE`` (``memmap_init_range()``) unless the trace says
   otherwise: the ``fallback_migratetype`` of a first ``mm_page_alloc_extfrag`` in the
   pageblock (its owner before the steal), else the migratetype of its first allocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptebench.engine.stream import (
    K_ALLOC,
    K_EXTFRAG,
    K_FREE,
    K_FREE_BATCHED,
    K_PCPU_DRAIN,
    K_ZONE_LOCKED,
    iter_chunks,
)
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
    pcp: list[tuple[int, int, int, int]] = field(default_factory=list)  # (cpu, pfn, order, mt), head to tail
    refreed: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # see FirstEvents.refreed
    unseen: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # see FirstEvents.unseen


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


#: ``first`` codes: the page's first event in the trace
F_NONE, F_BUDDY, F_USED, F_PCP = 0, 1, 2, 3  # none / allocated or taken off the buddy / freed / on a pcp list


@dataclass
class FirstEvents:
    first: np.ndarray  # int8 per pfn: F_* code
    pageblock_mt: np.ndarray  # int8 per pageblock, -1 when the trace does not say
    pcp: list[tuple[int, int, int, int]]  # (cpu, pfn, order, mt) on a pcp list at the start, head to tail
    row: np.ndarray  # int64 per pfn: the trace row of its first event (NO_ROW when none)
    refreed: np.ndarray  # int64 (n, 2) sorted by row: [row, pfn] of each order-0 free whose page is freed
    # again with no event between
    unseen: np.ndarray  # int64 (n, 2) sorted by row: [row, pfn] of each zone_locked whose page is next freed


NO_ROW = np.iinfo(np.int64).max


def first_events(trace, npfn: int, rows: int = 1 << 20, *, thp: bool = True) -> FirstEvents:
    """Per pfn, what its first trace event says about the start; per pageblock, its first owner.

    Every block taken off the buddy fires ``mm_page_alloc_zone_locked`` (``__rmqueue_smallest()``),
    so a pcp-order block (``pcp_allowed_order()``) whose first event is its ``mm_page_alloc``
    was on the allocating CPU's pcp list at the start (``__rmqueue_pcplist()``), and so was one
    whose first event is ``mm_page_pcpu_drain`` (``free_pcppages_bulk()``): ``F_PCP``.  Their
    list order: allocations take the head in trace order, drains the tail
    (``list_last_entry()``)."""
    first = np.zeros(npfn, dtype=np.int8)
    first_row = np.full(npfn, NO_ROW, dtype=np.int64)
    pbmt = np.full((npfn >> PAGEBLOCK_ORDER) + 1, -1, dtype=np.int8)
    last = np.zeros(npfn, dtype=np.int8)  # its latest event: 1 alloc, 2 free (3 of order 0), 4 zone_locked
    last_row = np.full(npfn, -1, dtype=np.int64)
    refreed: list[np.ndarray] = []
    unseen: list[np.ndarray] = []
    seeds_alloc: list[tuple[int, int, int, int, int]] = []
    seeds_drain: list[tuple[int, int, int, int, int]] = []
    cols = ["event", "cpu", "pfn", "order", "failed", "migratetype", "fallback_migratetype"]
    for ch in iter_chunks(trace, rows, columns=cols):
        alloc = (ch.kind == K_ALLOC) & ~ch.failed
        free = (ch.kind == K_FREE) | (ch.kind == K_FREE_BATCHED)
        taken = ch.kind == K_ZONE_LOCKED
        drain = ch.kind == K_PCPU_DRAIN
        sel = np.flatnonzero((alloc | free | taken | drain) & (ch.pfn >= 0))
        order = ch.order[sel].astype(np.int64)
        pcp_order = (order <= 3) | (thp & (order == PAGEBLOCK_ORDER))
        mt = ch.mt[sel].astype(np.int64)
        seedable = pcp_order & (mt >= 0) & (mt < 3)
        code = np.where(free[sel], F_USED, np.where(drain[sel] | (alloc[sel] & seedable), F_PCP, F_BUDDY))
        n = np.int64(1) << order
        pages = np.repeat(ch.pfn[sel], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        kinds = np.repeat(code.astype(np.int8), n)
        row = np.repeat(np.arange(len(sel)), n)
        ok = pages < npfn
        pages, kinds, row = pages[ok], kinds[ok], row[ok]
        uniq, at = np.unique(pages, return_index=True)
        new = first[uniq] == 0
        first[uniq[new]] = kinds[at[new]]
        first_row[uniq[new]] = ch.start + sel[row[at[new]]]
        # __alloc_pages_bulk() allocates without mm_page_alloc: a page freed (order 0) and freed again
        # with nothing between was reused from the pcp head (``refreed``); one taken off the buddy
        # (zone_locked) and then freed with no allocation between was allocated unseen (``unseen``)
        af = np.flatnonzero(alloc[sel[row]] | (ch.kind[sel[row]] == K_FREE) | taken[sel[row]])  # no batched dup
        p2, r2 = pages[af], row[af]
        k2 = np.where(alloc[sel[r2]], 1, np.where(taken[sel[r2]], 4, np.where(order[r2] == 0, 3, 2))).astype(np.int8)
        srt = np.lexsort((r2, p2))
        p2, r2, k2 = p2[srt], ch.start + sel[r2[srt]], k2[srt]
        same = p2[1:] == p2[:-1]
        head = np.concatenate(([True], ~same))
        ph = p2[head]
        for acc, want in ((refreed, 3), (unseen, 4)):
            m = same & (k2[:-1] == want) & ((k2[1:] == 2) | (k2[1:] == 3))
            acc.append(np.stack([r2[:-1][m], p2[:-1][m]], axis=1))
            m = (last[ph] == want) & ((k2[head] == 2) | (k2[head] == 3))
            acc.append(np.stack([last_row[ph][m], ph[m]], axis=1))
        tail = np.concatenate((~same, [True]))
        last[p2[tail]] = k2[tail]
        last_row[p2[tail]] = r2[tail]
        # a pcp block: its head's first event is the block's own alloc or drain
        heads = at[new & (kinds[at] == F_PCP)]
        heads = heads[pages[heads] == ch.pfn[sel[row[heads]]]]
        for j in np.sort(row[heads]).tolist():
            i = int(sel[j])
            m = int(ch.mt[i]) if int(ch.mt[i]) < 3 else 1  # a highatomic pcppage sits on the movable list
            rec = (ch.start + i, int(ch.cpu[i]), int(ch.pfn[i]), int(ch.order[i]), m)
            (seeds_drain if drain[i] else seeds_alloc).append(rec)
        # pageblock owners: extfrag names the pageblock's previous owner; else the first allocation
        ev = np.flatnonzero(((ch.kind == K_EXTFRAG) | alloc) & (ch.pfn >= 0) & (ch.pfn < npfn))
        pb = ch.pfn[ev] >> PAGEBLOCK_ORDER
        mt8 = np.where(ch.kind[ev] == K_EXTFRAG, ch.fallback_mt[ev], ch.mt[ev]).astype(np.int8)
        upb, at = np.unique(pb, return_index=True)
        new = pbmt[upb] < 0
        pbmt[upb[new]] = mt8[at[new]]
    pcp = [r[1:] for r in seeds_alloc] + [r[1:] for r in reversed(seeds_drain)]
    return FirstEvents(first, pbmt, pcp, first_row, _by_row(refreed), _by_row(unseen))


def _by_row(parts: list[np.ndarray]) -> np.ndarray:
    rows = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def choose_free_blocks(zones, absent, npfn: int, buddyinfo: dict[str, list[int]], first: np.ndarray):
    """Step 4 of the module rule: exactly buddyinfo's counts, as aligned, fully merged free blocks."""
    avail = np.ones(npfn, dtype=bool)
    for a, b in absent:
        avail[a:b] = False
    avail &= (first != F_USED) & (first != F_PCP)
    likely = (first == F_BUDDY).astype(np.int64)
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


def list_order(blocks: list[tuple[int, int]], first: np.ndarray, row: np.ndarray) -> list[tuple[int, int]]:
    """The order in which the free blocks join their lists (each to the tail): blocks the trace takes
    pages of first come first, so they sit at the list heads where ``get_page_from_free_area()``
    and ``__rmqueue_fallback()`` look; blocks the trace never touches follow in pfn order."""
    def key(b: tuple[int, int]) -> tuple[int, int]:
        p, o = b
        r = row[p: p + (1 << o)][first[p: p + (1 << o)] == F_BUDDY]
        return (int(r.min()) if len(r) else NO_ROW, p)
    return sorted(blocks, key=key)


def initial_state(trace, *, memmap: list[dict], buddyinfo: list[dict], rows: int = 1 << 20) -> InitialState:
    """The buddy allocator's start state for a capture (see the module rule)."""
    from ptebench.sim.layout import e820_ram

    ram = e820_ram(memmap)
    if not ram:
        raise PtebenchError("the memory map holds no RAM", expected="'usable' or 'System RAM' entries")
    zones, absent, npfn = zones_from_ram(ram)
    per_zone = {str(z["zone"]): list(z["free"]) for z in buddyinfo}
    fe = first_events(trace, npfn, rows)
    first, pb_first = fe.first, fe.pageblock_mt
    blocks, short = choose_free_blocks(zones, absent, npfn, per_zone, first)
    blocks = list_order(blocks, first, fe.row)
    pbmt = np.where(pb_first >= 0, pb_first, MIGRATE_MOVABLE).astype(np.int8)
    stats = {"pages_allocated_before_trace": int((first == F_USED).sum()),
             "pages_first_allocated": int((first == F_BUDDY).sum()),
             "free_pages": int(sum(1 << o for _, o in blocks)),
             "likely_free_pages_placed_free": int(sum(int((first[p: p + (1 << o)] == F_BUDDY).sum())
                                                      for p, o in blocks)),
             "blocks_short": short, "pageblocks_typed_by_trace": int((pb_first >= 0).sum()),
             "pcp_blocks_at_start": len(fe.pcp), "pcp_pages_at_start": int(sum(1 << o for _, _, o, _ in fe.pcp))}
    stats["frees_reallocated_unseen"] = len(fe.refreed)
    stats["allocations_unseen"] = len(np.unique(fe.unseen[:, 0]))
    return InitialState(zones, blocks, pbmt[: (npfn >> PAGEBLOCK_ORDER) + 1], absent, stats, fe.pcp, fe.refreed,
                        fe.unseen)


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
