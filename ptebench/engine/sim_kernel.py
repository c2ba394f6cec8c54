"""The jitted loop of simulate mode (:func:`sim_ops`): one chunk's ops, in order, on the modeled buddy and
direct map.  Kept apart from ``engine/simulate.py`` (the Python around it) so that editing that file does not
invalidate numba's cache of this one (see ``engine/simulate.py`` for what each op does)."""

from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True, _nrt=False)
def sim_ops(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, bctr, blog, blog_n,
            pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages,
            kmap, mmt, touched, xs,
            kind, order, req, cpu, kpfn, mt, cset, cclr, cflags, cn, origin, pt_req, out, scr64, scr8):
    """Apply one chunk's simulate ops in order (see the module docstring); ``out`` gets model pfns.

    Compiled without the NRT (nothing here allocates; ``scr64``/``scr8``: int64[3]/uint8[2] scratch for
    :func:`_cpa`): with it, every array alias the inlined buddy code makes costs an atomic incref/decref
    pair, which was most of this loop's time."""
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
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                              m, n, cset[i], cclr[i], cflags[i], origin[i])
        elif k == S_FREE:
            kp = kpfn[i]
            if kp < 0 or kp >= npfn:
                continue
            xs[X_FREES] += 1
            m = np.int64(kmap[kp])
            if m < 0:
                xs[X_FREE_UNMAPPED] += 1
                continue
            n = np.int64(1) << order[i]
            if cn[i] > 0:
                new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                              m, n, cset[i], cclr[i], cflags[i], origin[i])
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
            m = np.int64(kmap[kp]) if 0 <= kp < npfn else np.int64(-1)
            if m < 0:
                xs[X_CPA_UNMAPPED] += 1
                continue
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                          m, cn[i], cset[i], cclr[i], cflags[i], origin[i])
        elif k == S_CPA_P:
            new_pt = _cpa(pud, pmd, attr1g, attr2m, attr4k, kernel4k, dctr, dlog, dlog_n, gbpages, scr64, scr8,
                          kpfn[i], cn[i], cset[i], cclr[i], cflags[i], origin[i])
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
