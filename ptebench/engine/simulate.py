"""Simulate mode: the trace gives the requests, the modeled buddy allocator chooses the pfns.

Per event, in order (one jitted loop per chunk, :func:`sim_ops`):

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

import numpy as np
from numba import njit

from ptebench.engine import addresses as A
from ptebench.engine.faithful import CPA_MASKS, DM_MASKS, FaithfulEngine
from ptebench.engine.placement import MIGRATE_UNMOVABLE, PAGEBLOCK_ORDER
from ptebench.engine.stream import CPA_APIS, K_ALLOC, K_CPA, K_DM_DEFAULT, K_DM_INVALID, K_FREE, K_FREE_BATCHED, Chunk
from ptebench.parse.gfp import GFP_NAMES
from ptebench.policies import Policy
from ptebench.sim import buddy as B
from ptebench.sim import directmap as D
from ptebench.sim.dmap import DirectMap

#: gfp of an unseen __alloc_pages_bulk() allocation by its zone_locked migratetype (vmalloc's GFP_KERNEL etc.)
MT_GFP = np.array([B.GFP_KERNEL, GFP_NAMES["GFP_HIGHUSER_MOVABLE"], B.GFP_KERNEL | GFP_NAMES["__GFP_RECLAIMABLE"]],
                  dtype=np.uint64)

S_ALLOC = 1
S_FREE = 2
S_CPA_K = 3  # CPA at the model page a kernel page maps to
S_CPA_P = 4  # CPA at these pfns as they are (kernel image, pages outside the buddy)
S_AREA = 5  # recreate one vmalloc page of a module area: allocate it, map the kernel page to it
S_PLACED = 6  # an allocation a policy placed (its pfn in ``req``): map and account it, nothing else

X_ALLOCS = 0
X_ALLOC_FAILED = 1
X_FREES = 2
X_FREE_UNMAPPED = 3  # the kernel page maps to no model page (its allocation failed in the model)
X_FREE_REJECTED = 4  # the model page is not an allocated block (freed before, or a per-CPU page in reality)
X_PT_PAGES = 5  # split page-table pages allocated from the model
X_PT_FAILED = 6
X_AREA_PAGES = 7
X_CPA_UNMAPPED = 8
NX = 9
X_NAMES = ("allocs", "alloc_failed", "frees", "free_unmapped", "free_rejected", "split_pt_pages", "split_pt_failed",
           "area_pages", "cpa_unmapped")


@njit(cache=True)
def _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, pfn, n, s, c, f, origin):
    a_pfn = np.full(1, pfn, np.int64)
    a_n = np.full(1, n, np.int64)
    a_s = np.full(1, s, np.uint8)
    a_c = np.full(1, c, np.uint8)
    a_f = np.full(1, f, np.int64)
    before = dctr[D.C_PT_ALLOC]
    n0 = dlog_n[0]
    D.apply_ops(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, a_pfn, a_n, a_s, a_c, a_f, 0, gbpages)
    for r in range(n0, dlog_n[0]):
        dlog[r, D.L_OP] = origin
    return dctr[D.C_PT_ALLOC] - before


@njit(cache=True)
def sim_ops(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n,
            pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages,
            kmap, mmt, touched, xs,
            kind, order, req, cpu, kpfn, mt, cset, cclr, cflags, cn, origin, pt_req, out):
    """Apply one chunk's simulate ops in order (see the module docstring); ``out`` gets model pfns."""
    npfn = kmap.shape[0]
    for i in range(kind.shape[0]):
        k = kind[i]
        out[i] = -1
        new_pt = 0
        if k == S_ALLOC or k == S_PLACED:
            xs[X_ALLOCS] += 1
            n = np.int64(1) << order[i]
            if k == S_PLACED:
                m = req[i]
            else:
                m = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, order[i], req[i], cpu[i],
                            origin[i])
            out[i] = m
            kp = kpfn[i]
            if m < 0:
                xs[X_ALLOC_FAILED] += 1
                for j in range(n):
                    if 0 <= kp + j < npfn:
                        kmap[kp + j] = -1
                continue
            for j in range(n):
                if 0 <= kp + j < npfn:
                    kmap[kp + j] = m + j
                mmt[m + j] = mt[i]
            if mt[i] == 0:
                touched[m >> 9] = True
                touched[(m + n - 1) >> 9] = True
            if cn[i] > 0:
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, m, n,
                              cset[i], cclr[i], cflags[i], origin[i])
        elif k == S_FREE:
            kp = kpfn[i]
            if kp < 0 or kp >= npfn:
                continue
            xs[X_FREES] += 1
            m = kmap[kp]
            if m < 0:
                xs[X_FREE_UNMAPPED] += 1
                continue
            n = np.int64(1) << order[i]
            if cn[i] > 0:
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, m, n,
                              cset[i], cclr[i], cflags[i], origin[i])
            ok = B.free(lk, pst, pbmt, zi, pcp, cfg, bctr, m, order[i], cpu[i], 0)
            if ok:
                for j in range(n):
                    mmt[m + j] = -1
                    if kp + j < npfn:
                        kmap[kp + j] = -1
            else:
                xs[X_FREE_REJECTED] += 1
        elif k == S_CPA_K:
            kp = kpfn[i]
            m = kmap[kp] if 0 <= kp < npfn else -1
            if m < 0:
                xs[X_CPA_UNMAPPED] += 1
                continue
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, m, cn[i],
                          cset[i], cclr[i], cflags[i], origin[i])
        elif k == S_CPA_P:
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, kpfn[i], cn[i],
                          cset[i], cclr[i], cflags[i], origin[i])
        elif k == S_AREA:
            m = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, 0, pt_req, cpu[i], origin[i])
            xs[X_AREA_PAGES] += 1
            kp = kpfn[i]
            if 0 <= kp < npfn:
                kmap[kp] = m
            out[i] = m
        for _ in range(new_pt):  # split_large_page(): one page-table page per split, from the buddy
            p = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, 0, pt_req, cpu[i], origin[i])
            xs[X_PT_PAGES] += 1
            if p < 0:
                xs[X_PT_FAILED] += 1
            else:  # an unmovable page that stays: it pollutes its pageblock as the kernel's does
                mmt[p] = 0
                touched[p >> 9] = True


class SimulateEngine:
    """Simulate mode over chunks; shares the faithful engine's classification and kprobe binding."""

    def __init__(self, faithful: FaithfulEngine, sim_dmap: DirectMap, buddy: B.Buddy, policy: Policy | None = None
                 ) -> None:
        self.f = faithful
        self.policy = policy or Policy()
        self.intercept = np.array([name in self.policy.intercepts for name in faithful.consumers.names], dtype=bool)
        self._cur = (0, 0, 0)  # origin event, running flag, cpu of the hook being called
        self.dmap = sim_dmap
        self.buddy = buddy
        npfn = len(sim_dmap.state["attr4k"])
        self.kmap = np.arange(npfn, dtype=np.int64)
        self.mmt = np.full(npfn, -1, dtype=np.int8)
        self.touched = np.zeros((npfn >> PAGEBLOCK_ORDER) + 1, dtype=bool)
        self.xs = np.zeros(NX, dtype=np.int64)
        self.pt_req = B.request(B.GFP_KERNEL, 0)
        self.area_first = {area.created: area for area in faithful.binding.areas if area.pfns is not None}
        self.consumer_of_event: dict[int, str] = {}
        self.init_stats: dict[str, int] = {}
        self.distance_after = None
        self.refreed = np.zeros(0, np.int64)
        self.unseen = np.zeros(0, np.int64)

    def feed(self, ch: Chunk) -> None:
        f = self.f
        # classify as the faithful engine does (it runs first on the same chunk and keeps its own state)
        cons_in, pair, cons = f.last_classification
        run = f._running(ch.ts)
        # the bulk (allocations and frees) as arrays; kprobe-driven rows (rare) as tuples, merged by position
        alloc = (ch.kind == K_ALLOC) & ~ch.failed & (ch.pfn >= 0)
        witness = np.isin(cons_in, list(f.witness_ids))
        gfp, mt_a = ch.gfp, ch.mt
        if len(self.unseen):  # __alloc_pages_bulk() allocations the trace shows only by their zone_locked
            lo, hi = np.searchsorted(self.unseen, [ch.start, ch.start + len(ch)])
            if hi > lo:
                u = self.unseen[lo:hi] - ch.start
                alloc = alloc.copy()
                alloc[u] = True
                gfp = gfp.copy()
                gfp[u] = MT_GFP[np.clip(ch.mt[u], 0, 2)]
                mt_a = ch.mt.copy()
                mt_a[u] = -1  # not counted in placement: the kernel's measures cannot see them either
        sel_a = np.flatnonzero(alloc & ~witness)
        free = ((ch.kind == K_FREE) | (ch.kind == K_FREE_BATCHED)) & (pair != -2) & (ch.pfn >= 0)
        sel_f = np.flatnonzero(free)
        if len(self.refreed):  # reallocated unseen right after this free: the model keeps the page allocated
            sel_f = sel_f[~np.isin(ch.start + sel_f, self.refreed)]
        ca = cons_in[sel_a].astype(np.int64)
        cf = np.where(pair[sel_f] >= 0, cons[sel_f], -1).astype(np.int64)
        act_a = np.vstack([f.alloc_act, np.zeros((1, 4), np.int64)])[ca]  # row -1 -> no action
        act_f = np.vstack([f.free_act, np.zeros((1, 4), np.int64)])[cf]
        order_a = ch.order[sel_a].astype(np.int64)
        order_f = ch.order[sel_f].astype(np.int64)
        bulk = np.empty((len(sel_a) + len(sel_f), 11), dtype=np.int64)
        na = len(sel_a)
        bulk[:na, 0] = S_ALLOC
        bulk[:na, 1] = order_a
        bulk[:na, 2] = B.requests(gfp[sel_a].astype(np.int64), order_a) if na else 0
        bulk[:na, 3] = ch.cpu[sel_a]
        bulk[:na, 4] = ch.pfn[sel_a]
        bulk[:na, 5] = mt_a[sel_a]
        bulk[:na, 6:9] = act_a[:, 0:3]
        bulk[:na, 8] |= run[sel_a]
        bulk[:na, 9] = np.where(act_a[:, 3] > 0, np.int64(1) << order_a, 0)
        bulk[:na, 10] = ca
        bulk[na:, 0] = S_FREE
        bulk[na:, 1] = order_f
        bulk[na:, 2] = 0
        bulk[na:, 3] = ch.cpu[sel_f]
        bulk[na:, 4] = ch.pfn[sel_f]
        bulk[na:, 5] = -1
        bulk[na:, 6:9] = act_f[:, 0:3]
        bulk[na:, 8] |= run[sel_f]
        bulk[na:, 9] = np.where(act_f[:, 3] > 0, np.int64(1) << order_f, 0)
        bulk[na:, 10] = cf
        pos = np.concatenate([sel_a, sel_f]).astype(np.int64) << 20 | (1 << 19)
        rows: list[tuple] = []  # (j, sub, kind, order, req, cpu, kpfn, mt, set, clr, flags, cn, cid)
        if f.opt.use_kprobes:
            for j in np.flatnonzero((ch.kind == K_DM_INVALID) | (ch.kind == K_DM_DEFAULT)).tolist():
                c = int(cons[j])
                if (c >= 0 and f.alloc_act[c, 3]) or ch.pfn[j] < 0:
                    continue
                s, cl = DM_MASKS[int(ch.kind[j])]
                rows.append((j, 0, S_CPA_K, 0, 0, int(ch.cpu[j]), int(ch.pfn[j]), -1, s, cl,
                             D.F_NOFLUSH | int(run[j]), 1, -1))
            for j in np.flatnonzero(ch.kind == K_CPA).tolist():
                area = self.area_first.get(ch.start + j)
                if area is not None:
                    for k, kp in enumerate(area.pfns.tolist()):
                        rows.append((j, -1 - k, S_AREA, 0, 0, int(ch.cpu[j]), int(kp), 0, 0, 0, 0, 0, -1))
                rows.extend(self._cpa_rows(ch, j, int(run[j])))
        if rows:
            extra = np.array([r[2:] for r in rows], dtype=np.int64).reshape(-1, 11)
            epos = np.array([(r[0] << 20) | (r[1] + (1 << 19)) for r in rows], dtype=np.int64)
            bulk = np.vstack([bulk, extra])
            pos = np.concatenate([pos, epos])
        if not len(bulk):
            return
        order = np.argsort(pos, kind="stable")
        a = bulk[order]
        origin = ch.start + (pos[order] >> 20)
        for k in np.flatnonzero((a[:, 9] > 0) & (a[:, 0] != S_AREA)).tolist():  # name each CPA's origin
            g = int(origin[k])
            j = g - ch.start
            if g in self.consumer_of_event:
                continue
            c = int(a[k, 10])
            name = (f.consumers.names[c] if c >= 0 else f"kprobe:{CPA_APIS[ch.api[j]]}" if ch.kind[j] == K_CPA
                    else "kprobe:set_direct_map")
            self.consumer_of_event[g] = (name, int(ch.ts[j]), int(ch.line[j]), int(ch.stack[j]))
        if self.dmap.kernel < (6, 15):
            a[:, 8] &= ~np.int64(D.F_COLLAPSE | D.F_KERNEL_4K)
        self._reserve_dlog(a)
        cons_col = a[:, 10]
        hooked = ((a[:, 0] == S_ALLOC) | (a[:, 0] == S_FREE)) & (cons_col >= 0)
        hooked &= self.intercept[np.where(cons_col >= 0, cons_col, 0)]
        start = 0
        for h in np.flatnonzero(hooked).tolist():
            self._run(a[start:h], origin[start:h])
            self._hook(a[h], int(origin[h]))
            start = h + 1
        self._run(a[start:], origin[start:])

    def _run(self, a: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """The jitted path for a run of ops."""
        out = np.empty(len(a), dtype=np.int64)
        if not len(a):
            return out
        self.buddy._grow_log()
        bst = self.buddy.state
        st = self.dmap.state
        sim_ops(*[bst[k] for k in B.STATE_ORDER], st["pud"], st["pmd"], st["attr1g"], st["attr2m"], st["attr4k"],
                st["kernel4k"], st["ctr"], self.dmap.log, self.dmap.log_n, self.dmap.gbpages,
                self.kmap, self.mmt, self.touched, self.xs,
                a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), a[:, 4].copy(), a[:, 5].astype(np.int8),
                a[:, 6].astype(np.uint8), a[:, 7].astype(np.uint8), a[:, 8].copy(), a[:, 9].copy(), origin.copy(),
                self.pt_req, out)
        return out

    # ------------------------------------------------------------------ the policy seam
    def _hook(self, row: np.ndarray, origin: int) -> None:
        kind, order, req, cpu, kpfn, mt, _s, _c, flags, _n, cid = (int(v) for v in row)
        name = self.f.consumers.names[cid]
        self._cur = (origin, flags & D.F_RUNNING, cpu)
        if kind == S_ALLOC:
            pfn = int(self.policy.alloc(self, order, req, cpu, name))
            placed = np.array([[S_PLACED, order, pfn, cpu, kpfn, mt, 0, 0, 0, 0, cid]], dtype=np.int64)
            if pfn < 0:
                placed[0, 0] = S_ALLOC  # let the engine account a failure the way it does its own
                placed[0, 2] = 0
                self.xs[X_ALLOCS] += 1
                self.xs[X_ALLOC_FAILED] += 1
                n = 1 << order
                self.kmap[kpfn: kpfn + n] = -1
                return
            self._run(placed, np.array([origin], dtype=np.int64))
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
        row = np.array([[S_CPA_P, 0, 0, cpu, pfn, -1, set_mask, clr_mask, flags | running, npages, -1]], np.int64)
        self._reserve_dlog(row)
        self._run(row, np.array([origin], dtype=np.int64))

    def default_action(self, consumer: str, when: str, pfn: int, order: int) -> None:
        """The consumer's own direct-map change (consumers.toml) at ``pfn``, as the kernel makes it."""
        cid = self.f.consumers.names.index(consumer)
        s, c, f, has = (self.f.alloc_act if when == "alloc" else self.f.free_act)[cid]
        if has:
            self.cpa(pfn, 1 << order, int(s), int(c), int(f))

    def _cpa_rows(self, ch: Chunk, j: int, run: int) -> list[tuple]:
        api = CPA_APIS[ch.api[j]]
        n = int(ch.npages[j])
        if n <= 0:
            return []
        s, c, alias = CPA_MASKS[api]
        force = D.F_FORCE_SPLIT | D.F_KERNEL_4K if api == "set_memory_4k" else 0
        collapse = D.F_COLLAPSE if api == "set_memory_rox" else 0
        addr = int(ch.addr[j])
        amap = self.f.amap
        where = amap.classify(addr)
        cpu = int(ch.cpu[j])
        if where == A.DIRECT:  # pages the trace does not allocate (initrd, boot memory): as they are
            return [(j, 0, S_CPA_P, 0, 0, cpu, amap.pfn_of(addr), -1, s, c, run | force | collapse, n, -1)]
        if not alias:
            return []
        if where == A.KERNEL:
            return [(j, 0, S_CPA_P, 0, 0, cpu, amap.pfn_of(addr), -1, s, c, run | force | collapse | D.F_ALIAS, n,
                     -1)]
        pfns = self.f.binding.call_pfns.get(ch.start + j) if where == A.MODULE else None
        if pfns is None:
            return []
        return [(j, k, S_CPA_K, 0, 0, cpu, int(p), -1, s, c, run | force | collapse |
                 (D.F_ALIAS if k == 0 else D.F_NOFLUSH), 1, -1) for k, p in enumerate(pfns.tolist())]

    def _reserve_dlog(self, a: np.ndarray) -> None:
        """Room in the split log for the worst case of every CPA of the chunk (apply_ops stops early otherwise);
        ``ctx.cpa()`` reserves for a policy's own calls."""
        cn = a[:, 9]
        cn = cn[cn > 0]
        need = int((4 * (cn // D.PTRS + 3)).sum())  # directmap.max_log_entries()
        log = self.dmap.log
        have = len(log) - int(self.dmap.log_n[0])
        if have < need:
            grown = np.zeros((len(log) + need + 1024, D.NLOG), dtype=np.int64)
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
