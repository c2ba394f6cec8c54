"""Pair every free with the allocation it ends, causally, as events stream by.

The state is a pfn -> live-allocation map (``owner``: global event index of the
allocation, -1 when the trace has not shown the page allocated) that persists across
chunks.  Rules, each from Linux 6.1 mm/page_alloc.c:

- ``mm_page_alloc`` (``__alloc_pages``) makes its 2^order pages live; a failed allocation
  (``page=0000000000000000 pfn=0``) is counted and changes nothing.
- ``mm_page_free`` (``free_pages_prepare``) ends the pages it names.  A high-order page
  freed in order-0 pieces (``split_page()`` users, ``__free_pages`` of a non-compound
  page) pairs each piece with the one allocation; it is counted as a piece.
- ``mm_page_free_batched`` (``free_unref_page_list``) follows the ``mm_page_free`` that
  ``free_pages_prepare`` already emitted for the same page: it is a duplicate, counted and
  skipped.  Alone (no preceding free of the page) it is the free.
- A free of a page the trace never showed allocated is *unpaired* (allocated before the
  trace began, or by the bulk allocator, which has no tracepoint): counted, and the
  consumer it reports is -1.
- ``mm_page_alloc_zone_locked`` and ``mm_page_pcpu_drain`` move pages between the buddy
  and the per-CPU lists; they are not user operations and are only counted.

Outputs per event: ``pair`` (the allocation a free ends or a direct-map kprobe's page
belongs to, -2 for a batched duplicate, -1 otherwise) and ``cons`` (for
frees and direct-map kprobes, the consumer of the live allocation holding the page at
that moment; for allocations, their own consumer).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.engine.scratch import Reused
from ptebench.engine.stream import (
    K_ALLOC,
    K_DM_DEFAULT,
    K_DM_INVALID,
    K_FREE,
    K_FREE_BATCHED,
    K_PCPU_DRAIN,
    K_ZONE_LOCKED,
)

S_ALLOCS = 0
S_FAILED = 1
S_FREES = 2
S_PAIRED = 3
S_PIECES = 4
S_UNPAIRED = 5
S_BATCHED_DUP = 6
S_BATCHED_ALONE = 7
S_ALLOC_OVER_LIVE = 8
S_ZONE_LOCKED = 9
S_PCPU_DRAIN = 10
S_OUT_OF_RANGE = 11
S_MIXED_OWNERS = 12
NSTATS = 13
STAT_NAMES = ("allocs", "failed_allocs", "frees", "paired_frees", "piece_frees", "unpaired_frees",
              "batched_duplicates", "batched_alone", "alloc_over_live", "zone_locked", "pcpu_drain",
              "pfn_out_of_range", "mixed_owner_frees")


def new_state(npfn: int, events: int | None = None) -> dict[str, np.ndarray]:
    """Empty state; ``events``: how many events the stream has at most (owners are int32 when they fit)."""
    return {
        "owner": np.full(npfn, -1, dtype=np.int32 if events is not None and events < (1 << 31) else np.int64),
        "owner_cons": np.full(npfn, -1, dtype=np.int16),
        "owner_order": np.zeros(npfn, dtype=np.int8),
        "owner_mt": np.full(npfn, -1, dtype=np.int8),  # migratetype of the owning allocation
        "freed": np.zeros(npfn, dtype=np.bool_),  # last event on the page was its mm_page_free
        "stats": np.zeros(NSTATS, dtype=np.int64),
    }


@njit(cache=True, _nrt=False)
def pair_events(kind, pfn, order, failed, cons_in, mt, start, owner, owner_cons, owner_order, owner_mt, freed, stats,
                pair, cons):
    """Advance the pairing state over one chunk (see module docstring); fills ``pair`` and ``cons``."""
    npfn = owner.shape[0]
    for i in range(kind.shape[0]):
        k = kind[i]
        pair[i] = -1
        cons[i] = -1
        if k == K_ALLOC:
            stats[S_ALLOCS] += 1
            cons[i] = cons_in[i]
            if failed[i]:
                stats[S_FAILED] += 1
                continue
            p = pfn[i]
            n = np.int64(1) << order[i]
            if p < 0 or p + n > npfn:
                stats[S_OUT_OF_RANGE] += 1
                continue
            over = False
            for q in range(p, p + n):
                if owner[q] >= 0:
                    over = True
                owner[q] = start + i
                owner_cons[q] = cons_in[i]
                owner_order[q] = order[i]
                owner_mt[q] = mt[i]
                freed[q] = False
            if over:
                stats[S_ALLOC_OVER_LIVE] += 1
        elif k == K_FREE or k == K_FREE_BATCHED:
            p = pfn[i]
            n = np.int64(1) << order[i]
            if p < 0 or p + n > npfn:
                stats[S_OUT_OF_RANGE] += 1
                continue
            if k == K_FREE_BATCHED:
                if owner[p] < 0 and freed[p]:
                    stats[S_BATCHED_DUP] += 1
                    freed[p] = False
                    pair[i] = -2  # a duplicate, not a free
                    continue
                stats[S_BATCHED_ALONE] += 1
            stats[S_FREES] += 1
            o = owner[p]
            if o < 0:
                stats[S_UNPAIRED] += 1
            else:
                stats[S_PAIRED] += 1
                pair[i] = o
                cons[i] = owner_cons[p]
                if order[i] < owner_order[p]:
                    stats[S_PIECES] += 1
            mixed = False
            for q in range(p, p + n):
                if owner[q] != o:
                    mixed = True
                owner[q] = -1
                owner_cons[q] = -1
                owner_mt[q] = -1
                freed[q] = k == K_FREE
            if mixed:
                stats[S_MIXED_OWNERS] += 1
        elif k == K_DM_INVALID or k == K_DM_DEFAULT:
            p = pfn[i]
            if 0 <= p < npfn:
                cons[i] = owner_cons[p]
                pair[i] = owner[p]
        elif k == K_ZONE_LOCKED:
            stats[S_ZONE_LOCKED] += 1
        elif k == K_PCPU_DRAIN:
            stats[S_PCPU_DRAIN] += 1


class Pairing:
    """Typed wrapper: persistent pairing state over a stream of chunks."""

    def __init__(self, npfn: int, events: int | None = None, reuse: bool = False) -> None:
        """``reuse``: :meth:`feed`'s outputs are arrays that the next call reuses (scratch; a caller that keeps
        them across chunks copies them)."""
        self.state = new_state(npfn, events)
        self._out = Reused() if reuse else None

    def feed(self, kind: np.ndarray, pfn: np.ndarray, order: np.ndarray, failed: np.ndarray, cons_in: np.ndarray,
             start: int, mt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(kind)
        if mt is None:
            mt = np.full(n, -1, dtype=np.int8)
        if self._out is None:
            pair, cons = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int16)
        else:
            pair, cons = self._out.get("pair", n, np.int64), self._out.get("cons", n, np.int16)
        st = self.state
        pair_events(kind, pfn, order, failed, cons_in, mt, start, st["owner"], st["owner_cons"], st["owner_order"],
                    st["owner_mt"], st["freed"], st["stats"], pair, cons)
        return pair, cons

    @property
    def stats(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(STAT_NAMES, self.state["stats"], strict=True)}

    def live_pages(self) -> int:
        return int(np.count_nonzero(self.state["owner"] >= 0))

    def live_with_migratetype(self, mt: int) -> np.ndarray:
        """Bool per pfn: a live allocation of the trace with this migratetype holds it."""
        return (self.state["owner"] >= 0) & (self.state["owner_mt"] == mt)


def pair_reference(events: list[tuple[int, int, int, bool, int]]) -> tuple[list[int], list[int], dict[str, int]]:
    """Plain-Python oracle of :func:`pair_events` over (kind, pfn, order, failed, consumer) tuples, no shared code."""
    live: dict[int, tuple[int, int, int]] = {}  # pfn -> (alloc index, consumer, order)
    just_freed: set[int] = set()
    stats = dict.fromkeys(STAT_NAMES, 0)
    pairs, conss = [], []
    for i, (k, p, order, failed, c) in enumerate(events):
        pr, cs = -1, -1
        if k == K_ALLOC:
            stats["allocs"] += 1
            cs = c
            if failed:
                stats["failed_allocs"] += 1
            else:
                pages = range(p, p + 2**order)
                if any(q in live for q in pages):
                    stats["alloc_over_live"] += 1
                for q in pages:
                    live[q] = (i, c, order)
                    just_freed.discard(q)
        elif k in (K_FREE, K_FREE_BATCHED):
            if k == K_FREE_BATCHED and p not in live and p in just_freed:
                stats["batched_duplicates"] += 1
                just_freed.discard(p)
                pairs.append(-2)
                conss.append(cs)
                continue
            if k == K_FREE_BATCHED:
                stats["batched_alone"] += 1
            stats["frees"] += 1
            head = live.get(p)
            if head is None:
                stats["unpaired_frees"] += 1
            else:
                stats["paired_frees"] += 1
                pr, cs = head[0], head[1]
                if order < head[2]:
                    stats["piece_frees"] += 1
            owners = {live.get(q, (None,))[0] for q in range(p, p + 2**order)}
            if owners != {None if head is None else head[0]}:
                stats["mixed_owner_frees"] += 1
            for q in range(p, p + 2**order):
                live.pop(q, None)
                if k == K_FREE:
                    just_freed.add(q)
                else:
                    just_freed.discard(q)
        elif k in (K_DM_INVALID, K_DM_DEFAULT):
            if p in live:
                pr, cs = live[p][0], live[p][1]
        elif k == K_ZONE_LOCKED:
            stats["zone_locked"] += 1
        elif k == K_PCPU_DRAIN:
            stats["pcpu_drain"] += 1
        pairs.append(pr)
        conss.append(cs)
    return pairs, conss, stats
