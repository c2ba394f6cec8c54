"""Simulate mode: the trace gives the requests, the modeled buddy allocator chooses the pfns.

Per event, in order (per chunk, one jitted walk turns each event into its op and applies it at once,
:func:`sim_chunk` in ``engine/sim_kernel.py``):

- ``mm_page_alloc`` (not a witness, not failed): ``__alloc_pages()`` of the model
  (``sim/buddy.py``) for the same order, gfp and CPU; the kernel's pfns map to the model's
  (``kmap``), so that later frees — whole or in order-0 pieces — free the model's pages.
  The consumer's direct-map change (secretmem) is applied at the model's pfns.
- a free: the model pages its kernel pages map to (identity for pages allocated before the
  trace, which the initial state keeps in use at the kernel's pfns); the consumer's change
  on free first.  ``mm_page_free_batched`` duplicates are skipped.
- a direct-map kprobe on a page no consumer owns (module and vmalloc pages): at the model
  page its kernel page maps to.
- module/vmalloc areas the kprobe binding resolved are *recreated*: at the area's first
  ``set_memory_*`` call its pages are allocated from the model (order 0, GFP_KERNEL, as
  ``vm_area_alloc_pages()`` does), mapped from the kernel's pages, so the alias changes and
  the frees at unload land on the model's pages.
- every split the CPA model makes allocates its page-table page from the model buddy
  (``split_large_page()``: ``alloc_pages(GFP_KERNEL, 0)``); the trace's own page-table
  witnesses are not replayed.

The same chunk also runs through a faithful engine, which supplies the kernel's placement
(``placement_kernel``) and the splits neither mode can place (``witness_driven``).
"""

from __future__ import annotations

import time

import numpy as np

from ptebench.engine.faithful import FaithfulEngine
from ptebench.engine.placement import MIGRATE_UNMOVABLE, PAGEBLOCK_ORDER
from ptebench.engine.sim_kernel import (  # the op and counter codes, re-exported
    NCOL,
    NPOS,
    NX,
    S_ALLOC,
    S_AREA,
    S_CPA_K,
    S_CPA_P,
    S_PLACED,
    ST_BLOG,
    ST_DONE,
    ST_HOOK,
    ST_LOG,
    ST_MISSING,
    X_ALLOC_FAILED,
    X_ALLOCS,
    X_FREE_UNMAPPED,
    X_FREES,
    X_NAMES,
    sim_chunk,
)
from ptebench.engine.stream import CPA_APIS, K_ALLOC, K_CPA, K_DM_INVALID, K_ZONE_LOCKED, Chunk
from ptebench.parse.gfp import GFP_NAMES
from ptebench.policies import Policy
from ptebench.sim import buddy as B
from ptebench.sim import directmap as D
from ptebench.sim.dmap import DirectMap

#: gfp of an unseen __alloc_pages_bulk() allocation by its zone_locked migratetype (vmalloc's GFP_KERNEL etc.)
MT_GFP = np.array([B.GFP_KERNEL, GFP_NAMES["GFP_HIGHUSER_MOVABLE"], B.GFP_KERNEL | GFP_NAMES["__GFP_RECLAIMABLE"]],
                  dtype=np.uint64)


#: the fields of one simulate op (a row of the built ops ``sim_chunk()`` takes, and of a policy hook's op): kind
#: (``S_*``), order, request word (the pfn of ``S_PLACED``), cpu, kernel pfn, migratetype, the CPA (set, clr,
#: flags, npages; none when npages is 0), the consumer id (-1 none) and the origin event
OP_FIELDS = ("kind", "order", "req", "cpu", "kpfn", "mt", "cset", "cclr", "cflags", "cn", "cid", "origin")


def op_rows(rows: list[tuple]) -> np.ndarray:
    """Ops as ``sim_chunk()``'s built ops: one row of :data:`OP_FIELDS` each."""
    return np.array(rows, dtype=np.int64).reshape(-1, NCOL)


class _Buffers:
    """``sim_chunk()``'s small arrays, reused across chunks: scratch, not state (``__slots__``: the bench's state
    census does not count it)."""

    __slots__ = ("scr64", "scr8", "pos", "op", "rec", "no_rows", "no_extra", "no_chunk")

    def __init__(self) -> None:
        self.scr64 = np.zeros(3, np.int64)  # _cpa()'s one-op CPA arrays
        self.scr8 = np.zeros(2, np.uint8)
        self.pos = np.zeros(NPOS, np.int64)
        self.op = np.zeros(NCOL, np.int64)
        self.rec = np.zeros((0, NCOL), np.int64)  # no recording (the tests give it rows)
        self.no_rows = np.zeros(0, np.int64)
        self.no_extra = np.zeros((0, NCOL), np.int64)
        z = self.no_rows  # no chunk rows, in the types of a decoded chunk (feed() sets its own chunk's)
        self.no_chunk = (z.astype(np.int8), z.astype(bool), z, z.astype(np.int8), z.astype(np.int32),
                         z.astype(np.int8), z.astype(np.uint64), z.astype(np.int16), z, z.astype(np.int16), z, 0, z, z)


class SimulateEngine:
    """Simulate mode over chunks; shares the faithful engine's classification and kprobe binding."""

    def __init__(self, faithful: FaithfulEngine, sim_dmap: DirectMap, buddy: B.Buddy, policy: Policy | None = None
                 ) -> None:
        self.f = faithful
        self.policy = policy or Policy()
        self.intercept = np.array([name in self.policy.intercepts for name in faithful.consumers.names], dtype=bool)
        # CPA_COLLAPSE and _PAGE_KERNEL_4K exist from 6.15 on: older kernels' ops carry neither flag
        self.flag_mask = ~np.int64(D.F_COLLAPSE | D.F_KERNEL_4K) if sim_dmap.kernel < (6, 15) else np.int64(-1)
        self._cur = (0, 0, 0)  # origin event, running flag, cpu of the hook being called
        self.dmap = sim_dmap
        self.buddy = buddy
        npfn = len(sim_dmap.state["attr4k"])
        # kernel pfn -> model pfn (-1: none); int32 while pfns fit (4 bytes a page less)
        self.kmap = np.arange(npfn, dtype=np.int32 if npfn < (1 << 31) else np.int64)
        self.mmt = np.full(npfn, -1, dtype=np.int8)
        self.touched = np.zeros((npfn >> PAGEBLOCK_ORDER) + 1, dtype=bool)
        self.xs = np.zeros(NX, dtype=np.int64)
        self.pt_req = B.request(B.GFP_KERNEL, 0)
        self.area_first = {area.created: area for area in faithful.binding.areas if area.pfns is not None}
        self._area_created = np.array(sorted(self.area_first), dtype=np.int64)
        # per consumer id (row -1: none), the alloc actions then the free actions: (set, clr, flags, has)
        none = np.zeros((1, 4), np.int64)
        self.acts = np.vstack([faithful.alloc_act, none, faithful.free_act, none]).astype(np.int64)
        self.consumer_of_event: dict[int, tuple[str, int, int, int]] = {}
        self._named = 0  # split-log rows whose origin has been named
        self.model_cpu_s = 0.0  # CPU time in the jitted model loop (sim_chunk), for result.timing
        self._req_keys = np.zeros(0, np.int64)  # request words by gfp * MAX_ORDER + order, sorted
        self._req_words = np.zeros(0, np.int64)
        self._buf = _Buffers()
        self.init_stats: dict[str, int] = {}
        self.distance_after = None
        self.refreed = np.zeros(0, np.int64)
        self.unseen = np.zeros(0, np.int64)

    def feed(self, ch: Chunk) -> None:
        f = self.f
        # classify as the faithful engine does (it runs first on the same chunk and keeps its own state)
        cons_in, pair, cons = f.last_classification
        run = f.last_run
        # the events in row order, with the kprobe-driven ops (rare) at their rows
        end = ch.start + len(ch)
        lo, hi = np.searchsorted(self.unseen, [ch.start, end])
        unseen = self.unseen[lo:hi] - ch.start  # __alloc_pages_bulk() allocations shown only by their zone_locked
        lo, hi = np.searchsorted(self.refreed, [ch.start, end])
        refreed = self.refreed[lo:hi] - ch.start  # frees whose page the bulk allocator took again unseen
        if f.opt.use_kprobes:
            rows, extra = self._kprobe_rows(ch, run)
        else:
            rows, extra = self._buf.no_rows, self._buf.no_extra
        arrays = (ch.kind, ch.failed, ch.pfn, ch.order, ch.cpu, ch.mt, ch.gfp, cons_in, pair, cons, run, ch.start,
                  unseen, refreed)
        # a policy's own ops run over no rows of the same types (one compiled loop for both)
        self._buf.no_chunk = tuple(a[:0] if isinstance(a, np.ndarray) else 0 for a in arrays)
        self._sim(rows, extra, arrays)
        self._name_origins(ch, cons_in, pair, cons)

    def _sim(self, extra_row: np.ndarray, extra: np.ndarray, rows: tuple | None = None) -> None:
        """Run ``sim_chunk()`` over a chunk's ``rows`` (its arrays, as ``feed()`` passes them; none: only the
        built ops ``extra``, at ``extra_row``) to the end: learning missing request words, growing the split
        log and the buddy's extfrag log, calling the policy's hooks on the way."""
        buf = self._buf
        rows = buf.no_chunk if rows is None else rows
        pos, op = buf.pos, buf.op
        pos[:4] = 0
        bst, st = self.buddy.state, self.dmap.state
        while True:
            self.buddy._grow_log()
            t0 = time.process_time()
            status = sim_chunk(*[bst[k] for k in B.STATE_ORDER], st["pud"], st["pmd"], st["attr1g"], st["attr2m"],
                               st["attr4k"], st["kernel4k"], st["ctr"], self.dmap.log, self.dmap.log_n, self.dmap.gbpages,
                               self.kmap, self.mmt, self.touched, self.xs, self.pt_req, buf.scr64, buf.scr8, *rows,
                               MT_GFP, self.f.is_witness, self.acts, len(self.f.alloc_act) + 1, self._req_keys,
                               self._req_words, extra_row, extra, self.flag_mask, self.intercept, pos, op, buf.rec,
                               self.buddy._log_reserve())
            self.model_cpu_s += time.process_time() - t0
            if status == ST_DONE:
                return
            if status == ST_MISSING:
                self._learn_requests(op[:1].copy())
            elif status == ST_LOG:
                self._grow_dlog(int(op[0]))
            elif status == ST_BLOG:
                continue  # the extfrag log grows at the top of the loop
            elif status == ST_HOOK:
                p = pos[:4].copy()  # the hook may run ops of its own through this loop
                self._hook(tuple(int(v) for v in op))
                pos[:4] = p

    def _kprobe_rows(self, ch: Chunk, run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's kprobe ops in order (their rows, and the ops, :data:`OP_FIELDS` rows), from the
        faithful engine's decoding of the same chunk (``FaithfulEngine.last_kprobes``): the direct-map kprobes
        that no consumer's own change confirms, and each set_memory_* call after the area pages it binds."""
        dm, dm_set, dm_clr, cpa, calls = self.f.last_kprobes
        n = len(dm)
        if not n and not len(calls):
            return self._buf.no_rows, self._buf.no_extra
        # (j, sub-position, then OP_FIELDS but the origin): a direct-map kprobe at the kernel's page
        parts = [np.stack([dm, np.zeros(n, np.int64), np.full(n, S_CPA_K), np.zeros(n, np.int64),
                           np.zeros(n, np.int64), ch.cpu[dm], ch.pfn[dm], np.full(n, -1), dm_set, dm_clr,
                           D.F_NOFLUSH | run[dm], np.ones(n, np.int64), np.full(n, -1)], axis=1).astype(np.int64)]
        # the module/vmalloc areas these calls create: their pages allocated before the call's ops
        creates = calls[np.isin(ch.start + calls, self._area_created)]
        if len(creates):
            kps = [self.area_first[g].pfns for g in (ch.start + creates).tolist()]
            sizes = np.array([len(kp) for kp in kps], np.int64)
            j = np.repeat(creates, sizes)
            m = len(j)
            area = np.zeros((m, 13), np.int64)  # order, request, mt, set, clear, flags and npages 0
            area[:, 0] = j
            area[:, 1] = -1 - (np.arange(m) - np.repeat(np.cumsum(sizes) - sizes, sizes))  # the k-th page: -1 - k
            area[:, 2] = S_AREA
            area[:, 5] = ch.cpu[j]
            area[:, 6] = np.concatenate(kps)
            area[:, 12] = -1
            parts.append(area)
        if len(cpa):  # each call's ops: at a physical address (S_CPA_P), or per module page (S_CPA_K)
            j, k = cpa[:, 0], cpa[:, 6]
            m = len(j)
            parts.append(np.stack([j, np.maximum(k, 0), np.where(k >= 0, S_CPA_K, S_CPA_P), np.zeros(m, np.int64),
                                   np.zeros(m, np.int64), ch.cpu[j], cpa[:, 1], np.full(m, -1), cpa[:, 3], cpa[:, 4],
                                   cpa[:, 5], cpa[:, 2], np.full(m, -1)], axis=1).astype(np.int64))
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]  # by event, then sub-position
        j = rows[:, 0].copy()
        ops = np.empty((len(j), NCOL), np.int64)
        ops[:, : NCOL - 1] = rows[:, 2:]
        ops[:, NCOL - 1] = ch.start + j
        return j, ops

    def _learn_requests(self, keys: np.ndarray) -> None:
        """Add the request words of these ``gfp * MAX_ORDER + order`` keys to the cache ``sim_chunk()`` reads."""
        new = np.unique(keys)
        self._req_keys = np.concatenate([self._req_keys, new])
        self._req_words = np.concatenate([self._req_words, B.requests(new // B.MAX_ORDER, new % B.MAX_ORDER)])
        o = np.argsort(self._req_keys)
        self._req_keys, self._req_words = self._req_keys[o], self._req_words[o]

    def _name_origins(self, ch: Chunk, cons_in: np.ndarray, pair: np.ndarray, cons: np.ndarray) -> None:
        """Name the event of each split-log row this chunk added (consumer, ts, line, stack), for the split
        table: the consumer of the event's op (``sim_chunk()``'s: an allocation's own, a free's pairing's; none
        for a kprobe's, which names its probed function)."""
        log_n = int(self.dmap.log_n[0])
        if log_n == self._named:
            return
        f = self.f
        for g in np.unique(self.dmap.log[self._named: log_n, D.L_OP]).tolist():
            j = g - ch.start
            if g in self.consumer_of_event or not 0 <= j < len(ch):
                continue
            k = int(ch.kind[j])
            if k >= K_DM_INVALID:
                c = -1
            elif k in (K_ALLOC, K_ZONE_LOCKED):
                c = int(cons_in[j])
            else:
                c = int(cons[j]) if pair[j] >= 0 else -1
            name = (f.consumers.names[c] if c >= 0 else f"kprobe:{CPA_APIS[ch.api[j]]}" if k == K_CPA
                    else "kprobe:set_direct_map")
            self.consumer_of_event[g] = (name, int(ch.ts[j]), int(ch.line[j]), int(ch.stack[j]))
        self._named = log_n

    def _run(self, rows: list[tuple]) -> None:
        """Apply these ops (:data:`OP_FIELDS` tuples, one event's) through the jitted loop."""
        ops = op_rows(rows)
        self._sim(np.zeros(len(ops), np.int64), ops)

    # ------------------------------------------------------------------ the policy seam
    def _hook(self, row: tuple[int, ...]) -> None:
        kind, order, req, cpu, kpfn, mt, _s, _c, flags, _n, cid, origin = row
        name = self.f.consumers.names[cid]
        self._cur = (origin, flags & D.F_RUNNING, cpu)
        if kind == S_ALLOC:
            pfn = int(self.policy.alloc(self, order, req, cpu, name))
            if pfn < 0:  # account a failure the way the engine does its own
                self.xs[X_ALLOCS] += 1
                self.xs[X_ALLOC_FAILED] += 1
                n = 1 << order
                self.kmap[kpfn: kpfn + n] = -1
                return
            self._run([(S_PLACED, order, pfn, cpu, kpfn, mt, 0, 0, 0, 0, cid, origin)])
            return
        self.xs[X_FREES] += 1
        m = int(self.kmap[kpfn]) if 0 <= kpfn < len(self.kmap) else -1
        if m < 0:
            self.xs[X_FREE_UNMAPPED] += 1
            return
        n = 1 << order
        self.policy.free(self, m, order, cpu, name)
        self.mmt[m: m + n] = -1
        self.kmap[kpfn: kpfn + n] = -1

    def buddy_alloc(self, order: int, req: int, cpu: int) -> int:
        """``__alloc_pages()`` of the model, for a policy (``req``: ``sim.buddy.request(gfp, order)``)."""
        return self.buddy.alloc(order, cpu=cpu, req=req)

    def buddy_free(self, pfn: int, order: int, cpu: int) -> None:
        self.buddy.free(pfn, order, cpu)

    def cpa(self, pfn: int, npages: int, set_mask: int, clr_mask: int, flags: int = 0) -> None:
        """A ``change_page_attr_set_clr()`` call on the model's direct map; splits take their page-table
        pages from the buddy, as in the kernel."""
        origin, running, cpu = self._cur
        self._run([(S_CPA_P, 0, 0, cpu, pfn, -1, set_mask, clr_mask, flags | running, npages, -1, origin)])

    def default_action(self, consumer: str, when: str, pfn: int, order: int) -> None:
        """The consumer's own direct-map change (consumers.toml) at ``pfn``, as the kernel makes it."""
        cid = self.f.consumers.names.index(consumer)
        s, c, f, has = (self.f.alloc_act if when == "alloc" else self.f.free_act)[cid]
        if has:
            self.cpa(pfn, 1 << order, int(s), int(c), int(f))

    def _grow_dlog(self, need: int) -> None:
        """Room in the split log for ``need`` more entries (``sim_chunk()`` asks before a CPA that could log
        more than the room left: ``directmap.max_log_entries()``)."""
        log = self.dmap.log
        grown = np.zeros((max(2 * len(log), int(self.dmap.log_n[0]) + need + 1024), D.NLOG), dtype=np.int64)
        grown[: len(log)] = log
        self.dmap.log = grown

    # ------------------------------------------------------------------ results
    def finish(self) -> None:
        """End of trace: the distance of the model's free lists to buddyinfo-after."""
        if getattr(self, "after_buddyinfo", None) is not None:
            self.distance_after = self.distance_fn(self.buddy.buddyinfo(), self.after_buddyinfo)

    def origin_info(self, event: int) -> tuple[str, int, int, int]:
        """(consumer, ts_ns, line, stack id) of the event whose CPA call split."""
        return self.consumer_of_event.get(event, ("?", -1, -1, -1))

    def stats(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(X_NAMES, self.xs, strict=True)}

    def placement(self) -> dict[str, int]:
        c = self.buddy.counters
        live = (self.mmt == MIGRATE_UNMOVABLE)
        return {
            "distinct_2m_blocks_unmovable": int(self.touched.sum()),
            "polluted_pageblocks": int(len(np.unique(np.flatnonzero(live) >> PAGEBLOCK_ORDER))),
            "extfrag_steals": c["extfrag"], "extfrag_fragmenting": c["extfrag_fragmenting"],
            "extfrag_change_ownership": c["extfrag_change_ownership"], "pcp_refills": c["pcp_refill"],
            "pcp_refill_pages": c["pcp_refill_pages"], "pcp_drain_pages": c["pcp_drain_pages"],
        }
