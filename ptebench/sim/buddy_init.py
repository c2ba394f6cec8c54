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
from numba import njit

from ptebench.engine.scratch import Reused
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
    refreed: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # see FirstEvents.refreed
    unseen: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # see FirstEvents.unseen


def zones_from_ram(ram: list[tuple[int, int]]) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]], int]:
    """Zone spans (pfns) and holes from E820 RAM byte ranges."""
    end_pfn = max(e for _, e in ram) >> 12
    zones, lo = [], 0
    for name, limit in ZONE_LIMITS:
        hi = min(limit >> 12, end_pfn)
        if hi > lo and any(s >> 12 < hi and e >> 12 > lo for s, e in ram):
            zones.append((name, lo, hi))
        lo = max(lo, hi)
    # the pfns no range covers whole (pages [ceil(s), floor(e)) of each), from the merged ranges
    absent, covered = [], 0
    for a, b in sorted((-(-s // 4096), e >> 12) for s, e in ram):
        if a >= b:
            continue
        if a > covered:
            absent.append((covered, a))
        covered = max(covered, b)
    if covered < end_pfn:
        absent.append((covered, end_pfn))
    return zones, absent, end_pfn


def zones_from_ram_reference(ram: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The holes of :func:`zones_from_ram` from a per-pfn map (the differential tests' reference)."""
    end_pfn = max(e for _, e in ram) >> 12
    present = np.zeros(end_pfn, dtype=bool)
    for s, e in ram:
        present[-(-s // 4096): e >> 12] = True
    edges = np.flatnonzero(np.diff(np.concatenate(([1], present.astype(np.int8), [1]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


#: ``first`` codes: the page's first event in the trace
F_NONE, F_BUDDY, F_USED, F_PCP = 0, 1, 2, 3  # none / allocated or taken off the buddy / freed / on a pcp list


@dataclass
class FirstEvents:
    first: np.ndarray  # int8 per pfn: F_* code
    pageblock_mt: np.ndarray  # int8 per pageblock, -1 when the trace does not say
    pcp: list[tuple[int, int, int, int]]  # (cpu, pfn, order, mt) on a pcp list at the start, head to tail
    row: np.ndarray  # per pfn: the trace row of its first event (its type's largest value, NO_ROW for int64, when none)
    refreed: np.ndarray  # int64 (n, 3) sorted by row: [row, pfn, next] of each order-0 free whose page is freed
    # again (at row ``next``) with no event between
    unseen: np.ndarray  # int64 (n, 3) sorted by row: [row, pfn, next] of each zone_locked whose page is next freed


NO_ROW = np.iinfo(np.int64).max


def first_events(trace, npfn: int, rows: int = 1 << 20, *, thp: bool = True) -> FirstEvents:
    """Per pfn, what its first trace event says about the start; per pageblock, its first owner.

    Every block taken off the buddy fires ``mm_page_alloc_zone_locked`` (``__rmqueue_smallest()``),
    so a pcp-order block (``pcp_allowed_order()``) whose first event is its ``mm_page_alloc``
    was on the allocating CPU's pcp list at the start (``__rmqueue_pcplist()``), and so was one
    whose first event is ``mm_page_pcpu_drain`` (``free_pcppages_bulk()``): ``F_PCP``.  Their
    list order: allocations take the head in trace order, drains the tail
    (``list_last_entry()``).  One pass over the trace (:class:`FirstEventScan`)."""
    scan = FirstEventScan(npfn, thp=thp)
    for ch in iter_chunks(trace, rows, columns=FirstEventScan.COLUMNS):
        scan.feed(ch)
    return scan.result()


class FirstEventScan:
    """:func:`first_events` over a stream of chunks (any cut: the state carries across them), so that
    the runner can share one pass over the trace with its kprobe prepass."""

    COLUMNS = ["event", "cpu", "pfn", "order", "failed", "migratetype", "fallback_migratetype"]

    def __init__(self, npfn: int, *, thp: bool = True, events: int | None = None) -> None:
        self.npfn = npfn
        self.thp = thp
        # rows are int32 when the trace's ``events`` fit (the first row's none value then int32's largest)
        rows = np.int32 if events is not None and events < np.iinfo(np.int32).max else np.int64
        self.first = np.zeros(npfn, dtype=np.int8)
        self.first_row = np.full(npfn, np.iinfo(rows).max, dtype=rows)
        self.pbmt = np.full((npfn >> PAGEBLOCK_ORDER) + 1, -1, dtype=np.int8)
        self.last = np.zeros(npfn, dtype=np.int8)  # its latest event: 1 alloc, 2 free (3 of order 0), 4 zone_locked
        self.last_row = np.full(npfn, -1, dtype=rows)
        self.refreed: list[np.ndarray] = []
        self.unseen: list[np.ndarray] = []
        self.seeds: list[np.ndarray] = []
        self._scratch = Reused()  # feed()'s outputs

    def feed(self, ch) -> None:
        n = len(ch)
        if not n:
            return
        # one (row, pfn) pair per page event at most: the pages of the chunk bound both outputs (scratch
        # arrays that the next chunk reuses)
        bound = _page_count(ch.order)
        scr = self._scratch
        pairs, kinds = scr.get("pairs", bound, np.int64, 3), scr.get("kinds", bound, np.int8)
        seeds = scr.get("seeds", n, np.int64, 6)
        np_, ns = _first_events_chunk(ch.kind, ch.pfn, ch.order, ch.failed, ch.mt, ch.fallback_mt, ch.cpu,
                                      ch.start, self.thp, self.first, self.first_row, self.pbmt, self.last,
                                      self.last_row, pairs, kinds, seeds)
        pairs, kinds = pairs[:np_], kinds[:np_]
        self.refreed.append(pairs[kinds == 3])
        self.unseen.append(pairs[kinds == 4])
        self.seeds.append(seeds[:ns].copy())

    def result(self) -> FirstEvents:
        seeds = np.concatenate(self.seeds) if self.seeds else np.zeros((0, 6), np.int64)
        recs = [tuple(r) for r in seeds[:, 1:5].tolist()]
        drain = seeds[:, 5].astype(bool).tolist()
        pcp = [r for r, d in zip(recs, drain, strict=True) if not d]
        pcp += [r for r, d in zip(recs[::-1], drain[::-1], strict=True) if d]
        return FirstEvents(self.first, self.pbmt, pcp, self.first_row, _by_row(self.refreed), _by_row(self.unseen))


@njit(cache=True, _nrt=False)
def _page_count(order):
    """The pages of blocks of these orders (``sum(1 << order)``)."""
    n = 0
    for i in range(order.shape[0]):
        n += np.int64(1) << np.int64(order[i])
    return n


@njit(cache=True, _nrt=False)
def _first_events_chunk(kind, pfn, order, failed, mt, fallback_mt, cpu, start, thp, first, first_row, pbmt, last,
                        last_row, pairs, pair_kind, seeds):
    """The rules of :func:`first_events` over one chunk, event by event, page by page.  Fills ``pairs``
    ([row, pfn, next row] of an order-0 free (kind 3) or a zone_locked (4) whose page is freed next, at next row) and ``seeds``
    ([row, cpu, pfn, order, mt, drain] of a pcp block of the start); returns how many of each."""
    npfn = first.shape[0]
    npair = 0
    nseed = 0
    for i in range(kind.shape[0]):
        k = kind[i]
        p0 = pfn[i]
        if p0 < 0:
            continue
        alloc = k == K_ALLOC and not failed[i]
        # pageblock owners: extfrag names the pageblock's previous owner; else the first allocation
        if (k == K_EXTFRAG or alloc) and p0 < npfn:
            pb = p0 >> PAGEBLOCK_ORDER
            if pbmt[pb] < 0:
                pbmt[pb] = fallback_mt[i] if k == K_EXTFRAG else mt[i]
        free = k == K_FREE or k == K_FREE_BATCHED
        taken = k == K_ZONE_LOCKED
        drain = k == K_PCPU_DRAIN
        if not (alloc or free or taken or drain):
            continue
        o = np.int64(order[i])
        m = np.int64(mt[i])
        seedable = (o <= 3 or (thp and o == PAGEBLOCK_ORDER)) and 0 <= m < 3
        code = F_USED if free else (F_PCP if drain or (alloc and seedable) else F_BUDDY)
        # latest-event codes (mm_page_free_batched duplicates and drains do not count)
        lk = 1 if alloc else 4 if taken else (3 if o == 0 else 2) if k == K_FREE else 0
        row = start + i
        for p in range(p0, min(p0 + (np.int64(1) << o), npfn)):
            if first[p] == F_NONE:
                first[p] = code
                first_row[p] = row
                if code == F_PCP and p == p0:  # a pcp block: its head's first event is its own alloc or drain
                    seeds[nseed, 0] = row
                    seeds[nseed, 1] = cpu[i]
                    seeds[nseed, 2] = p0
                    seeds[nseed, 3] = o
                    seeds[nseed, 4] = m if m < 3 else 1  # a highatomic pcppage sits on the movable list
                    seeds[nseed, 5] = drain
                    nseed += 1
            if lk == 0:
                continue
            # __alloc_pages_bulk() allocates without mm_page_alloc: a page freed (order 0) and freed again
            # with nothing between was reused from the pcp head (refreed); one taken off the buddy
            # (zone_locked) and then freed with no allocation between was allocated unseen (unseen)
            if (lk == 2 or lk == 3) and (last[p] == 3 or last[p] == 4):
                pairs[npair, 0] = last_row[p]
                pairs[npair, 1] = p
                pairs[npair, 2] = row
                pair_kind[npair] = last[p]
                npair += 1
            last[p] = lk
            last_row[p] = row
    return npair, nseed


def _by_row(parts: list[np.ndarray]) -> np.ndarray:
    rows = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def choose_free_blocks(zones, absent, npfn: int, buddyinfo: dict[str, list[int]], first: np.ndarray):
    """Step 4 of the module rule: exactly buddyinfo's counts, as aligned, fully merged free blocks."""
    avail = np.ones(npfn, dtype=bool)
    for a, b in absent:
        avail[a:b] = False
    avail &= (first != F_USED) & (first != F_PCP)
    # per order, per aligned block: wholly available (updated as blocks are chosen), likely-free pages
    whole, likely = [avail], [(first == F_BUDDY).astype(np.int16)]  # at most 1024 pages a block
    for _ in range(1, MAX_ORDER):
        w, lk = whole[-1], likely[-1]
        m = len(w) // 2
        whole.append(w[0: 2 * m: 2] & w[1: 2 * m: 2])
        likely.append(lk[0: 2 * m: 2] + lk[1: 2 * m: 2])
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
            cand = np.flatnonzero(whole[order][b0:b1])
            # most likely-free pages first, then top-down (_by_score); a block whose buddy came first is
            # skipped (they would merge; order-10 blocks never do); the first ``need`` of the rest
            ranked = _by_score(cand, likely[order][b0:b1][cand], 2 * need)  # at least half are a pair's first
            if order < MAX_ORDER - 1:
                _, first_of_pair = np.unique((b0 + ranked) >> 1, return_index=True)
                ranked = ranked[np.sort(first_of_pair)]
            chosen = b0 + ranked[:need]
            for o in range(order + 1):  # its pages are no longer available, at every order up to its own
                span = 1 << (order - o)
                whole[o][((chosen[:, None] << (order - o)) + np.arange(span)).ravel()] = False
            blocks.extend(zip((chosen * size).tolist(), [order] * len(chosen), strict=True))
            if len(chosen) < need:
                short.setdefault(name, [0] * MAX_ORDER)[order] = need - len(chosen)
    blocks.sort()
    return blocks, short


def _by_score(cand: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` of ``cand`` (ascending) by score descending, then candidate descending
    (``np.lexsort((-cand, -score))[:k]``): the scored few sorted, then the unscored many top-down."""
    pos = score > 0
    top = cand[pos][np.lexsort((-cand[pos], -score[pos]))][:k]
    return np.concatenate([top, cand[~pos][::-1][: k - len(top)]])


def list_order(blocks: list[tuple[int, int]], first: np.ndarray, row: np.ndarray) -> list[tuple[int, int]]:
    """The order in which the free blocks join their lists (each to the tail): blocks the trace takes
    pages of first come first, so they sit at the list heads where ``get_page_from_free_area()``
    and ``__rmqueue_fallback()`` look; blocks the trace never touches follow in pfn order."""
    def key(b: tuple[int, int]) -> tuple[int, int]:
        p, o = b
        r = row[p: p + (1 << o)][first[p: p + (1 << o)] == F_BUDDY]
        return (int(r.min()) if len(r) else NO_ROW, p)
    return sorted(blocks, key=key)


def _pages_in_blocks(mask: np.ndarray, blocks: list[tuple[int, int]]) -> int:
    """How many pages of the (non-overlapping) blocks ``mask`` holds, in one ``reduceat``."""
    if not blocks:
        return 0
    pfn, order = np.array(sorted(blocks), np.int64).T
    idx = np.empty(2 * len(pfn), np.int64)
    idx[0::2], idx[1::2] = pfn, pfn + (np.int64(1) << order)
    if idx[-1] == len(mask):  # the last block ends the array: its reduction runs to the end
        idx = idx[:-1]
    return int(np.add.reduceat(mask, idx, dtype=np.int64)[0::2].sum())


def memmap_zones(memmap: list[dict]) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]], int]:
    """:func:`zones_from_ram` of a firmware memory map's RAM: zones, holes and the pfn count."""
    from ptebench.sim.layout import e820_ram

    ram = e820_ram(memmap)
    if not ram:
        raise PtebenchError("the memory map holds no RAM", expected="'usable' or 'System RAM' entries")
    return zones_from_ram(ram)


def initial_state(trace, *, memmap: list[dict], buddyinfo: list[dict], rows: int = 1 << 20,
                  first: FirstEvents | None = None) -> InitialState:
    """The buddy allocator's start state for a capture (see the module rule); ``first``: the trace's
    :func:`first_events` over ``memmap_zones(memmap)``'s pfns when a pass the caller made already has them."""
    zones, absent, npfn = memmap_zones(memmap)
    per_zone = {str(z["zone"]): list(z["free"]) for z in buddyinfo}
    fe = first if first is not None else first_events(trace, npfn, rows)
    first, pb_first = fe.first, fe.pageblock_mt
    blocks, short = choose_free_blocks(zones, absent, npfn, per_zone, first)
    blocks = list_order(blocks, first, fe.row)
    pbmt = np.where(pb_first >= 0, pb_first, MIGRATE_MOVABLE).astype(np.int8)
    stats = {"pages_allocated_before_trace": int((first == F_USED).sum()),
             "pages_first_allocated": int((first == F_BUDDY).sum()),
             "free_pages": int(sum(1 << o for _, o in blocks)),
             "likely_free_pages_placed_free": _pages_in_blocks(first == F_BUDDY, blocks),
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
