"""The jitted loop of simulate mode (:func:`sim_chunk`): one chunk's events, in order, on the modeled buddy and
direct map.  Kept apart from ``engine/simulate.py`` (the Python around it) so that editing that file does not
invalidate numba's cache of this one (see ``engine/simulate.py`` for what each op does).

Each event becomes at most one *op* where it is met, applied at once (no op arrays between the two):

- an allocation (``mm_page_alloc`` not failed, with a pfn, not a page-table witness; or a
  ``mm_page_alloc_zone_locked`` the initial state found to be an unseen ``__alloc_pages_bulk()``
  allocation, with the gfp of its migratetype and no migratetype of its own): ``S_ALLOC`` with
  the request word of its (gfp, order) and the consumer's alloc action;
- a free (``mm_page_free`` / ``mm_page_free_batched``, not a batched duplicate, with a pfn, not a
  free the bulk allocator reused unseen): ``S_FREE`` with the action of the consumer its pairing found.

The ops built beforehand (the kprobe-driven ones, few; a policy's own) come in as rows of a 2-D array,
each at the event it belongs to, before that event's own op.  Reference: ``build_reference`` in
``tests/test_speed_kernels.py`` (the ops :func:`sim_chunk` records when asked to).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.engine.stream import K_ALLOC, K_FREE, K_FREE_BATCHED
from ptebench.sim import buddy as B
from ptebench.sim import directmap as D

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
#: :func:`sim_chunk`'s returns: the chunk is done; a request word is missing (its key in ``op[0]``); the
#: direct map's split log needs room (``op[0]`` entries); an op goes to the policy (its fields in ``op``); the
#: buddy's extfrag log needs room (its reserve)
ST_DONE, ST_MISSING, ST_LOG, ST_HOOK, ST_BLOG = 0, 1, 2, 3, 4
#: the op fields, as ``simulate.Ops.FIELDS``; ``pos``: the resume position (row, built op, unseen, refreed,
#: recorded ops)
NCOL = 12
NPOS = 5

X_NAMES = ("allocs", "alloc_failed", "frees", "free_unmapped", "free_rejected", "split_pt_pages", "split_pt_failed",
           "area_pages", "cpa_unmapped")


@njit(cache=True, _nrt=False)
def _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8, pfn, n, s, c,
         f, origin):
    """One change_page_attr_set_clr() call through ``directmap.apply_ops`` (its one-op arrays are views of
    the caller's scratch, so that nothing here allocates); returns the page-table pages its splits took."""
    scr64[0] = pfn
    scr64[1] = n
    scr64[2] = f
    scr8[0] = s
    scr8[1] = c
    a_pfn = scr64[0:1]
    a_n = scr64[1:2]
    a_f = scr64[2:3]
    a_s = scr8[0:1]
    a_c = scr8[1:2]
    before = dctr[D.C_PT_ALLOC]
    n0 = dlog_n[0]
    D.apply_ops(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, a_pfn, a_n, a_s, a_c, a_f, 0, gbpages)
    for r in range(n0, dlog_n[0]):
        dlog[r, D.L_OP] = origin
    return dctr[D.C_PT_ALLOC] - before


@njit(cache=True, _nrt=False, inline="always")
def _find(keys, key):
    """The index of ``key`` in the sorted ``keys``, -1 if absent."""
    lo, hi = 0, keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < keys.shape[0] and keys[lo] == key else -1


@njit(cache=True, _nrt=False)
def sim_chunk(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n,
              pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages,
              kmap, mmt, touched, xs, pt_req, scr64, scr8,
              kind, failed, pfn, order, cpu, mt, gfp, cons_in, pair, cons, run, start, unseen, refreed, mt_gfp,
              is_witness, acts, ncons, req_keys, req_words, extra_row, extra, flag_mask, intercept, pos, op, rec,
              blog_reserve):
    """Apply one chunk's ops in order (see the module docstring), from ``pos`` on; returns ``ST_*``, with
    ``pos`` where to resume.

    Rows: the chunk's events (``unseen``/``refreed``: sorted chunk-local rows; ``acts``: per consumer id, its
    alloc actions then its free actions, ``ncons`` rows each, the last one for id -1; ``req_keys``/``req_words``:
    the request words by ``gfp * MAX_ORDER + order``, sorted).  ``extra``: built ops (``k`` x ``NCOL``) at their
    sorted rows ``extra_row``.  ``flag_mask`` is and-ed into every op's CPA flags; an allocation or free of a
    consumer ``intercept`` names stops here for the policy, past it.  ``rec``: when it has rows, each op is
    recorded there (``pos[4]`` of them), for the tests.  The buddy's extfrag log keeps ``blog_reserve`` rows of
    room before every op (a pcp refill may steal once per block of its batch; ``Buddy._log_reserve()``).

    Compiled without the NRT (nothing here allocates; ``scr64``/``scr8``: int64[3]/uint8[2] scratch for
    :func:`_cpa`): with it, every array alias the inlined buddy code makes costs an atomic incref/decref
    pair, which was most of this loop's time."""
    npfn = kmap.shape[0]
    n_rows = kind.shape[0]
    ne = extra_row.shape[0]
    i, e, u, r = pos[0], pos[1], pos[2], pos[3]
    have_last = False
    last_key = np.int64(0)
    last_at = np.int64(-1)
    while True:
        i0, e0 = i, e  # where this op starts (unseen/refreed need no rewind: they stop at the row)
        # ---- the next op: a built one at or before this row, else the row's own
        if e < ne and (i >= n_rows or extra_row[e] <= i):
            k = extra[e, 0]
            o = extra[e, 1]
            req = extra[e, 2]
            c = extra[e, 3]
            kp = extra[e, 4]
            m_t = extra[e, 5]
            cs = extra[e, 6]
            cc = extra[e, 7]
            cf = extra[e, 8] & flag_mask
            cn = extra[e, 9]
            cid = extra[e, 10]
            origin = extra[e, 11]
            if cn > 0 and dlog.shape[0] - dlog_n[0] < D.max_log_entries(cn):
                pos[0], pos[1], pos[2], pos[3] = i, e, u, r
                op[0] = D.max_log_entries(cn)
                return ST_LOG
            e += 1
        elif i < n_rows:
            kk = kind[i]
            forced = False
            while u < unseen.shape[0] and unseen[u] < i:
                u += 1
            if u < unseen.shape[0] and unseen[u] == i:
                forced = True
            is_alloc = ((kk == K_ALLOC and not failed[i] and pfn[i] >= 0) or forced) and not is_witness[cons_in[i]]
            is_free = False
            if not is_alloc and (kk == K_FREE or kk == K_FREE_BATCHED) and pair[i] != -2 and pfn[i] >= 0:
                is_free = True
                while r < refreed.shape[0] and refreed[r] < i:
                    r += 1
                if r < refreed.shape[0] and refreed[r] == i:
                    is_free = False
            if not (is_alloc or is_free):
                i += 1
                continue
            o = np.int64(order[i])
            if is_alloc:
                cid = np.int64(cons_in[i])
                a = cid if cid >= 0 else cid + ncons  # cid % ncons (cid >= -1) without a division
                g = np.int64(mt_gfp[min(max(np.int64(mt[i]), 0), 2)]) if forced else np.int64(gfp[i])
                key = g * B.MAX_ORDER + o
                if not have_last or key != last_key:  # runs of allocations share a (gfp, order): search once a run
                    have_last = True
                    last_key = key
                    last_at = _find(req_keys, key)
                if last_at < 0:
                    pos[0], pos[1], pos[2], pos[3] = i, e, u, r
                    op[0] = key
                    return ST_MISSING
                k = S_ALLOC
                req = req_words[last_at]
                m_t = np.int64(-1) if forced else np.int64(mt[i])
            else:
                cid = np.int64(cons[i]) if pair[i] >= 0 else np.int64(-1)
                a = ncons + (cid if cid >= 0 else cid + ncons)
                k = S_FREE
                req = np.int64(0)
                m_t = np.int64(-1)
            c = np.int64(cpu[i])
            kp = np.int64(pfn[i])
            cs = acts[a, 0]
            cc = acts[a, 1]
            cf = (acts[a, 2] | run[i]) & flag_mask
            cn = (np.int64(1) << o) if acts[a, 3] > 0 else np.int64(0)
            origin = start + i
            if cn > 0 and dlog.shape[0] - dlog_n[0] < D.max_log_entries(cn):
                pos[0], pos[1], pos[2], pos[3] = i, e, u, r
                op[0] = D.max_log_entries(cn)
                return ST_LOG
            i += 1
        else:
            break
        if (k == S_ALLOC or k == S_AREA or cn > 0) and blog.shape[0] - blog_n[0] < blog_reserve:
            pos[0], pos[1], pos[2], pos[3] = i0, e0, u, r  # room for every extfrag entry its allocations may log
            return ST_BLOG
        if rec.shape[0] > 0:
            w = pos[4]
            rec[w, 0], rec[w, 1], rec[w, 2], rec[w, 3], rec[w, 4], rec[w, 5] = k, o, req, c, kp, m_t
            rec[w, 6], rec[w, 7], rec[w, 8], rec[w, 9], rec[w, 10], rec[w, 11] = cs, cc, cf, cn, cid, origin
            pos[4] = w + 1
        if (k == S_ALLOC or k == S_FREE) and cid >= 0 and intercept[cid]:
            op[0], op[1], op[2], op[3], op[4], op[5] = k, o, req, c, kp, m_t
            op[6], op[7], op[8], op[9], op[10], op[11] = cs, cc, cf, cn, cid, origin
            pos[0], pos[1], pos[2], pos[3] = i, e, u, r
            return ST_HOOK
        # ---- apply it
        new_pt = 0
        if k == S_ALLOC or k == S_PLACED:
            xs[X_ALLOCS] += 1
            n = np.int64(1) << o
            if k == S_PLACED:
                m = req
            else:
                m = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, o, req, c, origin)
            if m < 0:
                xs[X_ALLOC_FAILED] += 1
                for j in range(n):
                    if 0 <= kp + j < npfn:
                        kmap[kp + j] = -1
                continue
            for j in range(n):
                if 0 <= kp + j < npfn:
                    kmap[kp + j] = m + j
                mmt[m + j] = m_t
            if m_t == 0:
                touched[m >> 9] = True
                touched[(m + n - 1) >> 9] = True
            if cn > 0:
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                              m, n, cs, cc, cf, origin)
        elif k == S_FREE:
            if kp < 0 or kp >= npfn:
                continue
            xs[X_FREES] += 1
            m = np.int64(kmap[kp])
            if m < 0:
                xs[X_FREE_UNMAPPED] += 1
                continue
            n = np.int64(1) << o
            if cn > 0:
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                              m, n, cs, cc, cf, origin)
            ok = B.free(lk, pst, pbmt, zi, pcp, cfg, bctr, m, o, c, 0)
            if ok:
                for j in range(n):
                    mmt[m + j] = -1
                    if kp + j < npfn:
                        kmap[kp + j] = -1
            else:
                xs[X_FREE_REJECTED] += 1
        elif k == S_CPA_K:
            m = np.int64(kmap[kp]) if 0 <= kp < npfn else np.int64(-1)
            if m < 0:
                xs[X_CPA_UNMAPPED] += 1
                continue
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                          m, cn, cs, cc, cf, origin)
        elif k == S_CPA_P:
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                          kp, cn, cs, cc, cf, origin)
        elif k == S_AREA:
            m = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, 0, pt_req, c, origin)
            xs[X_AREA_PAGES] += 1
            if 0 <= kp < npfn:
                kmap[kp] = m
        for _ in range(new_pt):  # split_large_page(): one page-table page per split, from the buddy
            p = B.alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n, 0, pt_req, c, origin)
            xs[X_PT_PAGES] += 1
            if p < 0:
                xs[X_PT_FAILED] += 1
            else:  # an unmovable page that stays: it pollutes its pageblock as the kernel's does
                mmt[p] = 0
                touched[p >> 9] = True
    pos[0], pos[1], pos[2], pos[3] = i, e, u, r
    return ST_DONE
