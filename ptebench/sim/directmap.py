"""The x86-64 direct map and change_page_attr (CPA), jitted.

Model of arch/x86/mm/pat/set_memory.c (Linux 6.1, plus the collapse rules of 6.15):

- The direct map is a tree of 1G (PUD), 2M (PMD) and 4K (PTE) leaves over pfns.
  ``pud[g]`` is LEAF (a 1G leaf), TABLE (512 PMD entries) or NONE; ``pmd[m]`` the same
  for a 2M region under a TABLE pud.  Leaves carry an attribute byte: the pte flags
  that CPA compares (``ATTR_P | ATTR_RW | ATTR_NX | ATTR_GLB``), so attribute equality
  models ``pte_flags()`` equality.
- A CPA call (``change_page_attr_set_clr()``) walks its range.  At a 4K leaf it writes
  ``(old & ~clr) | set``.  At a large leaf, ``__should_split_large_page()``: if the
  new prot equals the old, the rest of the leaf is consumed with no write
  (``cpa_inc_lp_sameprot``); if the request starts at the leaf base and covers it
  whole, the leaf is rewritten in place (``cpa_inc_lp_preserved``); otherwise, or
  always under ``force_split`` (``set_memory_4k()``), ``split_large_page()`` splits
  it: 1G -> 512 2M leaves or 2M -> 512 4K leaves, one page-table page from the buddy
  and one ``flush_tlb_all()`` each, then the walk repeats at the same address.
- ``split_page_count()`` moves ``direct_pages_count``; the vmstat events
  ``direct_map_level{2,3}_splits`` count only while ``system_state == SYSTEM_RUNNING``.
- ``cpa_flush()``: if anything changed and the call is not ``_noflush``:
  ``flush_tlb_all()`` when an alias was processed or more than
  ``tlb_single_page_flush_ceiling`` (33) pages changed, else one INVLPG per page.
- Collapse (kernels >= 6.15, ``CPA_COLLAPSE``, only ``set_memory_rox()``):
  ``collapse_large_pages()`` per touched 2M step: a PTE table whose 512 entries are
  present with identical flags and none marked ``_PAGE_KERNEL_4K`` becomes a 2M leaf;
  only then a PMD table of 512 identical 2M leaves becomes a 1G leaf (gbpages); one
  ``flush_tlb_all()`` if anything collapsed; the freed tables go back to the buddy.

Static protections (``static_protections()``) and the kernel high-map alias are not
modelled: direct-map pages of the kernel image never reach CPA in the replay.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# entry states of pud[] and pmd[]
NONE = 0
TABLE = 1
LEAF = 2

# attribute bits (the pte flags CPA compares)
ATTR_P = 1
ATTR_RW = 2
ATTR_NX = 4
ATTR_GLB = 8
ATTR_DEFAULT = ATTR_P | ATTR_RW | ATTR_NX | ATTR_GLB  # PAGE_KERNEL on the direct map

# op flags
F_FORCE_SPLIT = 1  # set_memory_4k()
F_COLLAPSE = 2  # set_memory_rox(): CPA_COLLAPSE (kernels >= 6.15)
F_NOFLUSH = 4  # set_direct_map_*_noflush()
F_ALIAS = 8  # the range is the direct-map alias of a vmalloc/module range: force_flush_all
F_RUNNING = 16  # system_state == SYSTEM_RUNNING: vmstat events count
F_KERNEL_4K = 32  # mark the pages _PAGE_KERNEL_4K (set_memory_4k on kernels >= 6.15)

# counters (the kernel's names where they are the kernel's)
C_L2_SPLITS = 0  # direct_map_level2_splits
C_L3_SPLITS = 1  # direct_map_level3_splits
C_L2_COLLAPSES = 2  # direct_map_level2_collapses
C_L3_COLLAPSES = 3  # direct_map_level3_collapses
C_COUNT_4K = 4  # direct_pages_count[PG_LEVEL_4K]  (DirectMap4k = << 2 kB)
C_COUNT_2M = 5  # direct_pages_count[PG_LEVEL_2M]  (DirectMap2M = << 11 kB)
C_COUNT_1G = 6  # direct_pages_count[PG_LEVEL_1G]  (DirectMap1G = << 20 kB)
C_FLUSH_ALL = 7  # flush_tlb_all() calls
C_FLUSH_PAGES = 8  # pages flushed one by one (INVLPG on every CPU)
C_PT_ALLOC = 9  # page-table pages allocated by splits
C_PT_FREE = 10  # page-table pages freed by collapses
C_CPA_CALLS = 11
C_SPLITS_ALL = 12  # splits including those before SYSTEM_RUNNING (level 2 + level 3)
C_UNMAPPED = 13  # pages a CPA call met that the direct map does not map (skipped)
NCOUNTERS = 14

# split/collapse log columns
L_OP = 0  # index of the op that caused it
L_PFN = 1  # base pfn of the region
L_LEVEL = 2  # 2: a 2M leaf (split to 4K / collapsed from 4K), 3: a 1G leaf
L_KIND = 3  # 0 split, 1 collapse
NLOG = 4

PTRS = 512
TLB_SINGLE_PAGE_FLUSH_CEILING = 33


@njit(cache=True)
def max_log_entries(npages):
    """Worst case of splits plus collapses one CPA call over ``npages`` can log."""
    return 4 * (npages // PTRS + 3)


@njit(cache=True)
def _log(log, log_n, op, pfn, level, kind):
    n = log_n[0]
    if n < log.shape[0]:
        log[n, L_OP] = op
        log[n, L_PFN] = pfn
        log[n, L_LEVEL] = level
        log[n, L_KIND] = kind
    log_n[0] = n + 1


@njit(cache=True)
def _split(pud, pmd, attr1g, attr2m, attr4k, ctr, log, log_n, op, pfn, level, running):
    """split_large_page()/__split_large_page() at ``pfn``'s leaf of ``level`` (3: 1G, 2: 2M)."""
    if level == 3:
        g = pfn >> 18
        pud[g] = TABLE
        m0 = g * PTRS
        for m in range(m0, m0 + PTRS):
            pmd[m] = LEAF
            attr2m[m] = attr1g[g]
        ctr[C_COUNT_1G] -= 1
        ctr[C_COUNT_2M] += PTRS
        if running:
            ctr[C_L3_SPLITS] += 1
        _log(log, log_n, op, g << 18, 3, 0)
    else:
        m = pfn >> 9
        pmd[m] = TABLE
        p0 = m * PTRS
        a = attr2m[m]
        for p in range(p0, p0 + PTRS):
            attr4k[p] = a
        ctr[C_COUNT_2M] -= 1
        ctr[C_COUNT_4K] += PTRS
        if running:
            ctr[C_L2_SPLITS] += 1
        _log(log, log_n, op, m << 9, 2, 0)
    ctr[C_SPLITS_ALL] += 1
    ctr[C_PT_ALLOC] += 1
    ctr[C_FLUSH_ALL] += 1


@njit(cache=True)
def _collapse(pud, pmd, attr1g, attr2m, attr4k, kernel4k, ctr, log, log_n, op, m, running, gbpages):
    """collapse_large_pages() for the 2M region ``m``: PMD first, then (only if it worked) PUD."""
    g = m >> 9
    if pud[g] != TABLE or pmd[m] != TABLE:
        return False
    p0 = m * PTRS
    first = attr4k[p0]
    if (first & ATTR_P) == 0:
        return False
    for p in range(p0, p0 + PTRS):
        if attr4k[p] != first or kernel4k[p]:
            return False
    pmd[m] = LEAF
    attr2m[m] = first
    ctr[C_COUNT_4K] -= PTRS
    ctr[C_COUNT_2M] += 1
    ctr[C_PT_FREE] += 1
    if running:
        ctr[C_L2_COLLAPSES] += 1
    _log(log, log_n, op, m << 9, 2, 1)
    if not gbpages:
        return True
    m0 = g * PTRS
    for mm in range(m0, m0 + PTRS):
        if pmd[mm] != LEAF or attr2m[mm] != first:
            return True
    pud[g] = LEAF
    attr1g[g] = first
    ctr[C_COUNT_2M] -= PTRS
    ctr[C_COUNT_1G] += 1
    ctr[C_PT_FREE] += 1
    if running:
        ctr[C_L3_COLLAPSES] += 1
    _log(log, log_n, op, g << 18, 3, 1)
    return True


@njit(cache=True)
def apply_ops(pud, pmd, attr1g, attr2m, attr4k, kernel4k, ctr, log, log_n,
              op_pfn, op_n, op_set, op_clr, op_flags, start, gbpages):
    """Apply CPA calls ``start..`` in order; return the index of the first op not applied.

    An op is one ``change_page_attr_set_clr()`` call on the direct-map range
    ``[op_pfn, op_pfn + op_n)``.  The loop stops early (returning that op's index, with
    the state as it was before the op) when the split log has no room for the worst case
    of one op, so that the caller can grow the log and resume.
    """
    nops = op_pfn.shape[0]
    npfn = attr4k.shape[0]
    for i in range(start, nops):
        n_total = op_n[i]
        if log.shape[0] - log_n[0] < max_log_entries(n_total):
            return i
        flags = op_flags[i]
        running = (flags & F_RUNNING) != 0
        force = (flags & F_FORCE_SPLIT) != 0
        setm = op_set[i]
        clrm = op_clr[i]
        ctr[C_CPA_CALLS] += 1
        changed = 0
        a = op_pfn[i]
        end = a + n_total
        while a < end:
            if a < 0 or a >= npfn:
                ctr[C_UNMAPPED] += 1
                a += 1
                continue
            g = a >> 18
            m = a >> 9
            if pud[g] == LEAF:
                level = 3
                base = g << 18
                size = PTRS * PTRS
                old = attr1g[g]
            elif pud[g] == TABLE and pmd[m] == LEAF:
                level = 2
                base = m << 9
                size = PTRS
                old = attr2m[m]
            elif pud[g] == TABLE and pmd[m] == TABLE and attr4k[a] != 0:
                old = attr4k[a]
                new = (old & ~clrm) | setm
                if new != old:
                    attr4k[a] = new
                    changed += 1
                if (flags & F_KERNEL_4K) != 0:
                    kernel4k[a] = True
                a += 1
                continue
            else:  # not mapped (or a pte_none entry): __cpa_process_fault() skips it
                ctr[C_UNMAPPED] += 1
                a += 1
                continue
            take = min(end - a, base + size - a)
            new = (old & ~clrm) | setm
            if not force and new == old:
                a += take
                continue
            if not force and a == base and take == size:
                if level == 3:
                    attr1g[g] = new
                else:
                    attr2m[m] = new
                changed += take
                a += take
                continue
            _split(pud, pmd, attr1g, attr2m, attr4k, ctr, log, log_n, i, a, level, running)
        if changed and (flags & F_NOFLUSH) == 0:
            if (flags & F_ALIAS) != 0 or n_total > TLB_SINGLE_PAGE_FLUSH_CEILING:
                ctr[C_FLUSH_ALL] += 1
            else:
                ctr[C_FLUSH_PAGES] += n_total
        if changed and (flags & F_COLLAPSE) != 0:
            any_collapsed = False
            m = op_pfn[i] >> 9
            while (m << 9) < end and (m << 9) < npfn:
                if _collapse(pud, pmd, attr1g, attr2m, attr4k, kernel4k, ctr, log, log_n, i, m, running, gbpages):
                    any_collapsed = True
                m += 1
            if any_collapsed:
                ctr[C_FLUSH_ALL] += 1
    return nops


def new_state(npfn: int) -> dict[str, np.ndarray]:
    """An empty (all unmapped) direct map covering pfns [0, npfn) rounded up to 1G."""
    n1g = -(-npfn // (PTRS * PTRS))
    return {
        "pud": np.zeros(n1g, np.uint8),
        "pmd": np.zeros(n1g * PTRS, np.uint8),
        "attr1g": np.zeros(n1g, np.uint8),
        "attr2m": np.zeros(n1g * PTRS, np.uint8),
        "attr4k": np.zeros(n1g * PTRS * PTRS, np.uint8),
        "kernel4k": np.zeros(n1g * PTRS * PTRS, np.bool_),
        "ctr": np.zeros(NCOUNTERS, np.int64),
    }
