"""Placement measures: where unmovable pages land, as the kernel placed them or as a model does.

- ``distinct_2m_blocks_unmovable``: 2M blocks (pageblocks, ``pfn >> pageblock_order``) that
  an unmovable allocation of the trace touched at any time;
- ``polluted_pageblocks``: pageblocks holding at least one unmovable page allocated in the
  trace and still live at its end (the Contiguitas measure of pollution; pages allocated
  before the trace are unknown and not counted);
- ``extfrag_steals`` / ``extfrag_fragmenting`` / ``extfrag_change_ownership``: fallback
  steals (``mm_page_alloc_extfrag``, traced by ``__rmqueue_fallback()`` -> ``steal_suitable_fallback``);
- ``pcp_refills`` / ``pcp_refill_pages``: ``rmqueue_bulk()`` refills of the per-CPU lists
  (``mm_page_alloc_zone_locked`` with ``percpu_refill=1``), counted once per refill burst
  (consecutive refill pages on one CPU) and in pages;
- ``pcp_drain_pages``: pages ``free_pcppages_bulk()`` returned to the buddy (``mm_page_pcpu_drain``, one
  event per block: ``1 << order`` pages, as the model counts them).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.engine.stream import K_ALLOC, K_EXTFRAG, K_PCPU_DRAIN, K_ZONE_LOCKED, Chunk

PAGEBLOCK_ORDER = 9  # pageblock_order with CONFIG_HUGETLB_PAGE on x86-64 (HPAGE_PMD_ORDER)
MIGRATE_UNMOVABLE = 0


class Placement:
    """Accumulates the placement measures over a stream of chunks (persistent state)."""

    NAMES = ("extfrag_steals", "extfrag_fragmenting", "extfrag_change_ownership", "pcp_refills", "pcp_refill_pages",
             "pcp_drain_pages")

    def __init__(self, npfn: int) -> None:
        self.touched = np.zeros((npfn >> PAGEBLOCK_ORDER) + 1, dtype=bool)
        self.ctr = np.zeros(len(self.NAMES), dtype=np.int64)
        self.prev_refill = np.zeros(1, dtype=np.bool_)  # per CPU + 1: its latest event was a pcp refill

    @property
    def counts(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(self.NAMES, self.ctr, strict=True)}

    def feed(self, ch: Chunk) -> None:
        if len(ch):
            lo, hi = int(ch.cpu.min()), int(ch.cpu.max())
            if lo < -1:
                raise ValueError(f"cpu {lo} in the trace")
            if hi + 2 > len(self.prev_refill):
                grown = np.zeros(hi + 2, dtype=np.bool_)
                grown[: len(self.prev_refill)] = self.prev_refill
                self.prev_refill = grown
        _placement_chunk(ch.kind, ch.failed, ch.mt, ch.pfn, ch.order, ch.fragmenting, ch.change_ownership,
                         ch.percpu_refill, ch.cpu, self.touched, self.prev_refill, self.ctr)

    def result(self, live_unmovable: np.ndarray) -> dict[str, int]:
        """The measures, given a bool array of pfns holding a live unmovable page at the end."""
        polluted = np.unique(np.flatnonzero(live_unmovable) >> PAGEBLOCK_ORDER)
        return {"distinct_2m_blocks_unmovable": int(self.touched.sum()), "polluted_pageblocks": int(len(polluted)),
                **self.counts}


@njit(cache=True, _nrt=False)
def _placement_chunk(kind, failed, mt, pfn, order, fragmenting, change_ownership, percpu_refill, cpu, touched,
                     prev_refill, ctr):
    """:class:`Placement` over one chunk, event by event (reference: ``placement_reference`` in the tests).
    One ``rmqueue_bulk()`` call traces its pages back to back on its CPU: a refill burst starts at a refill
    event whose previous event on the same CPU (carried across chunks) was not one."""
    nb = touched.shape[0]
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == K_ALLOC and not failed[i] and mt[i] == MIGRATE_UNMOVABLE and pfn[i] >= 0:
            lo = pfn[i] >> PAGEBLOCK_ORDER
            hi = (pfn[i] + (np.int64(1) << np.int64(order[i])) - 1) >> PAGEBLOCK_ORDER
            if lo < nb:
                touched[lo] = True
            if hi < nb:
                touched[hi] = True
        elif k == K_EXTFRAG:
            ctr[0] += 1
            if fragmenting[i]:
                ctr[1] += 1
            if change_ownership[i]:
                ctr[2] += 1
        elif k == K_PCPU_DRAIN:
            ctr[5] += np.int64(1) << np.int64(order[i])  # one block of its order per event
        refill = k == K_ZONE_LOCKED and percpu_refill[i]
        c = cpu[i] + 1
        if refill:
            ctr[4] += np.int64(1) << np.int64(order[i])
            if not prev_refill[c]:
                ctr[3] += 1
        prev_refill[c] = refill
