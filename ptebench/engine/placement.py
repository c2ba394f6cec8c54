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
- ``pcp_drain_pages``: pages ``free_pcppages_bulk()`` returned to the buddy (``mm_page_pcpu_drain``).
"""

from __future__ import annotations

import numpy as np

from ptebench.engine.stream import K_ALLOC, K_EXTFRAG, K_PCPU_DRAIN, K_ZONE_LOCKED, Chunk

PAGEBLOCK_ORDER = 9  # pageblock_order with CONFIG_HUGETLB_PAGE on x86-64 (HPAGE_PMD_ORDER)
MIGRATE_UNMOVABLE = 0


class Placement:
    """Accumulates the placement measures over a stream of chunks (persistent state)."""

    def __init__(self, npfn: int) -> None:
        self.touched = np.zeros((npfn >> PAGEBLOCK_ORDER) + 1, dtype=bool)
        self.counts = dict.fromkeys(("extfrag_steals", "extfrag_fragmenting", "extfrag_change_ownership",
                                     "pcp_refills", "pcp_refill_pages", "pcp_drain_pages"), 0)
        self.prev_refill: dict[int, bool] = {}

    def feed(self, ch: Chunk) -> None:
        unmov = (ch.kind == K_ALLOC) & ~ch.failed & (ch.mt == MIGRATE_UNMOVABLE) & (ch.pfn >= 0)
        if unmov.any():
            lo = ch.pfn[unmov] >> PAGEBLOCK_ORDER
            hi = (ch.pfn[unmov] + (np.int64(1) << ch.order[unmov].astype(np.int64)) - 1) >> PAGEBLOCK_ORDER
            self.touched[lo[lo < len(self.touched)]] = True
            self.touched[hi[hi < len(self.touched)]] = True
        ext = ch.kind == K_EXTFRAG
        c = self.counts
        c["extfrag_steals"] += int(ext.sum())
        c["extfrag_fragmenting"] += int((ext & ch.fragmenting).sum())
        c["extfrag_change_ownership"] += int((ext & ch.change_ownership).sum())
        refill = (ch.kind == K_ZONE_LOCKED) & ch.percpu_refill
        c["pcp_refill_pages"] += int(refill.sum())
        # one rmqueue_bulk() call traces its pages back to back on its CPU: a burst starts at a refill
        # event whose previous event on the same CPU (carried across chunks) was not one
        for cpu in np.unique(ch.cpu).tolist():
            r = refill[ch.cpu == cpu]
            prev = np.concatenate(([self.prev_refill.get(cpu, False)], r[:-1]))
            c["pcp_refills"] += int((r & ~prev).sum())
            self.prev_refill[cpu] = bool(r[-1])
        c["pcp_drain_pages"] += int((ch.kind == K_PCPU_DRAIN).sum())

    def result(self, live_unmovable: np.ndarray) -> dict[str, int]:
        """The measures, given a bool array of pfns holding a live unmovable page at the end."""
        polluted = np.unique(np.flatnonzero(live_unmovable) >> PAGEBLOCK_ORDER)
        return {"distinct_2m_blocks_unmovable": int(self.touched.sum()), "polluted_pageblocks": int(len(polluted)),
                **self.counts}

