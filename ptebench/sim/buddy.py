"""The Linux 6.1 buddy allocator, jitted: zones, orders 0..10, migratetypes, pcp lists, watermarks.

Model of mm/page_alloc.c as built in the captured kernels (Debian 6.1.y stable: the
``ALLOC_HIGHATOMIC`` / ``ALLOC_NON_BLOCK`` / ``ALLOC_MIN_RESERVE`` alloc flags, two THP pcp
lists and ``CONFIG_PCP_BATCH_SCALE_MAX=5`` are in that tree; ``CONFIG_CMA`` is off, THP is on).
``docs/buddy.md`` lists every rule with its kernel function and every simplification.

State (a dict of flat arrays made by :func:`new_state`, all mutated in place by the kernels):

- ``lk`` (int32, ``2 * (npfn + nlists)``): intrusive circular doubly linked lists over pfn
  indices, ``lk[2 * n]`` the next and ``lk[2 * n + 1]`` the previous node of node ``n``.  Node
  ``npfn + L`` is the head (sentinel) of list ``L``: buddy free lists
  ``L = (zone * 11 + order) * 4 + migratetype`` (``zone->free_area[order].free_list[mt]``), then
  pcp lists ``L = NB + (cpu * nzones + zone) * 14 + pindex`` (``pcp->lists[pindex]``).  A page is
  on at most one list, so one array serves both (``page->buddy_list``/``pcp_list``).
- ``pst`` (int8, npfn): what a pfn is, one byte so that one cache line answers every question:
  ``PS_NONE`` (inside a free or pcp block, or absent), ``PS_USED`` / ``PS_MOVABLE`` (allocated;
  movable = by a MIGRATE_MOVABLE request, counted as ``PageLRU``/``__PageMovable`` by
  ``move_freepages()``), ``PS_BUDDY + order`` (a ``PageBuddy`` head and its ``buddy_order()``),
  ``PS_PCP + mt`` (the head of a block on a pcp list and its ``get_pcppage_migratetype()``).
- ``pbmt`` (int8, npfn >> 9): the pageblock migratetype (``get_pageblock_migratetype()``).
- ``zi`` (int64, nzones x Z_COLS): zone bounds, type, node, managed pages, watermarks,
  ``lowmem_reserve[]``, ``NR_FREE_PAGES``, ``nr_reserved_highatomic``, pcp batch/high,
  ``free_area[].nr_free``, PGALLOC/PGFREE.
- ``pcp`` (int64, ncpus * nzones x 2): ``pcp->count`` and ``pcp->free_factor``.
- ``zl`` (int64, nnodes * 2 x nzones + 1): per node the fallback zonelist and the
  ``__GFP_THISNODE`` zonelist, zone indices ending with -1.
- ``cfg`` (int64): sizes and switches; ``cpu_node`` (int64, ncpus): ``cpu_to_node()``.
- ``ctr`` (int64, NCOUNTERS): kernel-named event counters; ``log``/``log_n``: the
  ``mm_page_alloc_extfrag`` events.

An allocation request is one int64 (:func:`request`): the fast-path and slow-path alloc flags,
the reserve flags, ``gfp_migratetype()``, ``gfp_zone()`` and a few gfp bits the slow path reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from ptebench.errors import PtebenchError
from ptebench.parse.gfp import GFP_NAMES

MAX_ORDER = 11  # orders 0..10
PAGEBLOCK_ORDER = 9
PAGEBLOCK_PAGES = 1 << PAGEBLOCK_ORDER
COSTLY_ORDER = 3  # PAGE_ALLOC_COSTLY_ORDER
PCP_BATCH_SCALE_MAX = 5  # CONFIG_PCP_BATCH_SCALE_MAX

# enum migratetype (no CMA, no ISOLATE)
MT_UNMOVABLE = 0
MT_MOVABLE = 1
MT_RECLAIMABLE = 2
MT_HIGHATOMIC = 3
NMT = 4
MIGRATE_PCPTYPES = 3
MT_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic")

NR_LOWORDER_PCP_LISTS = MIGRATE_PCPTYPES * (COSTLY_ORDER + 1)
NR_PCP_LISTS = NR_LOWORDER_PCP_LISTS + 2  # NR_PCP_THP = 2

# enum zone_type (x86-64; ZONE_MOVABLE is folded into Normal, see gfp_zone())
ZONE_DMA = 0
ZONE_DMA32 = 1
ZONE_NORMAL = 2
ZONE_TYPES = {"DMA": ZONE_DMA, "DMA32": ZONE_DMA32, "Normal": ZONE_NORMAL}
LOWMEM_RESERVE_RATIO = (256, 256, 32)  # sysctl_lowmem_reserve_ratio[DMA, DMA32, NORMAL]

# mm/internal.h alloc flags
ALLOC_WMARK_MIN = 0
ALLOC_WMARK_LOW = 1
ALLOC_WMARK_HIGH = 2
ALLOC_NO_WATERMARKS = 0x04
ALLOC_WMARK_MASK = ALLOC_NO_WATERMARKS - 1
ALLOC_OOM = 0x08
ALLOC_NON_BLOCK = 0x10
ALLOC_MIN_RESERVE = 0x20
ALLOC_CPUSET = 0x40
ALLOC_CMA = 0x80
ALLOC_NOFRAGMENT = 0x100
ALLOC_HIGHATOMIC = 0x200
ALLOC_KSWAPD = 0x800
ALLOC_RESERVES = ALLOC_NON_BLOCK | ALLOC_MIN_RESERVE | ALLOC_HIGHATOMIC | ALLOC_OOM

# gfp bits (include/linux/gfp_types.h, Linux 6.1, via ptebench.parse.gfp)
GFP_DMA_BIT = GFP_NAMES["GFP_DMA"]  # == __GFP_DMA
GFP_HIGHMEM_BIT = GFP_NAMES["__GFP_HIGHMEM"]
GFP_DMA32_BIT = GFP_NAMES["GFP_DMA32"]  # == __GFP_DMA32
GFP_MOVABLE_BIT = GFP_NAMES["__GFP_MOVABLE"]
GFP_RECLAIMABLE_BIT = GFP_NAMES["__GFP_RECLAIMABLE"]
GFP_HIGH_BIT = GFP_NAMES["__GFP_HIGH"]
GFP_DIRECT_RECLAIM_BIT = GFP_NAMES["__GFP_DIRECT_RECLAIM"]
GFP_KSWAPD_RECLAIM_BIT = GFP_NAMES["__GFP_KSWAPD_RECLAIM"]
GFP_RETRY_MAYFAIL_BIT = GFP_NAMES["__GFP_RETRY_MAYFAIL"]
GFP_NORETRY_BIT = GFP_NAMES["__GFP_NORETRY"]
GFP_MEMALLOC_BIT = GFP_NAMES["__GFP_MEMALLOC"]
GFP_NOMEMALLOC_BIT = GFP_NAMES["__GFP_NOMEMALLOC"]
GFP_THISNODE_BIT = GFP_NAMES["__GFP_THISNODE"]
GFP_KERNEL = GFP_NAMES["GFP_KERNEL"]

# request word
R_FAST_SHIFT = 0  # alloc flags of the get_page_from_freelist() fast path (12 bits)
R_SLOW_SHIFT = 12  # gfp_to_alloc_flags() (12 bits)
R_RESERVE_SHIFT = 24  # __gfp_pfmemalloc_flags() (12 bits)
R_FLAGS_MASK = 0xFFF
R_MT_SHIFT = 36  # gfp_migratetype() (2 bits)
R_ZONE_SHIFT = 38  # gfp_zone() (2 bits)
R_THISNODE = 1 << 40  # __GFP_THISNODE: the node's NOFALLBACK zonelist
R_DIRECT_RECLAIM = 1 << 41  # __GFP_DIRECT_RECLAIM: the slow path reaches direct reclaim
R_RETRY = 1 << 42  # ... and should_reclaim_retry() (not NORETRY; costly orders only with RETRY_MAYFAIL)

# op kinds of run_ops()
K_ALLOC = 0
K_FREE = 1  # op_pfn is the pfn
K_FREE_REF = 2  # op_pfn is the index of an earlier alloc op in the same batch: free its pfn
K_DRAIN_ALL = 3  # drain_all_pages(NULL)

# free flags (op_req of a free op)
F_TO_TAIL = 1  # FPI_TO_TAIL (__free_pages_core(): fresh memory to the list tail)
F_BYPASS_PCP = 2  # free through __free_pages_ok()/free_one_page(), not the pcp lists

# pst[] values
PS_NONE = 0
PS_USED = 1
PS_MOVABLE = 2
PS_BUDDY = 16  # + buddy order
PS_PCP = 32  # + pcppage migratetype

# zi columns
Z_START = 0
Z_END = 1
Z_TYPE = 2
Z_NID = 3
Z_MANAGED = 4
Z_WMIN = 5  # _watermark[WMARK_MIN]; Z_WMIN + (alloc_flags & ALLOC_WMARK_MASK) is wmark_pages()
Z_WLOW = 6
Z_WHIGH = 7
Z_LOWMEM = 8  # lowmem_reserve[DMA, DMA32, NORMAL]: Z_LOWMEM + highest_zoneidx
Z_FREE = 11  # NR_FREE_PAGES
Z_HIGHATOMIC = 12  # nr_reserved_highatomic
Z_BATCH = 13  # pcp->batch
Z_HIGH = 14  # pcp->high
Z_PGALLOC = 15  # PGALLOC (pages)
Z_PGFREE = 16  # PGFREE (pages)
Z_NOFRAG = 17  # alloc_flags_nofragment() would set ALLOC_NOFRAGMENT with this zone preferred
Z_BOOST = 18  # boost_watermark() would boost (zone large enough and high watermark nonzero)
Z_NRFREE = 19  # free_area[order].nr_free: Z_NRFREE + order
Z_COLS = Z_NRFREE + MAX_ORDER

# pcp columns
P_COUNT = 0
P_FREE_FACTOR = 1

# cfg entries
CF_NPFN = 0
CF_NZ = 1
CF_NCPU = 2
CF_NNODES = 3
CF_NB = 4  # number of buddy free lists
CF_THP = 5
CF_RECLAIM_DRAIN = 6  # the direct-reclaim stub drains the pcp lists (reclaim "made progress")
NCFG = 7

# counters
C_ALLOC = 0  # successful allocations
C_ALLOC_FAIL = 1  # failed allocations (the model has no reclaim, compaction or OOM killer)
C_FREE = 2
C_BAD_FREE = 3  # frees rejected: not allocated, misaligned or outside a zone
C_SLOWPATH = 4  # __alloc_pages_slowpath() entered (wake_all_kswapds() when ALLOC_KSWAPD)
C_EXTFRAG = 5  # mm_page_alloc_extfrag
C_EXTFRAG_FRAGMENTING = 6  # ... with fragmenting=1 (fallback_order < pageblock_order)
C_EXTFRAG_CHANGE_OWNERSHIP = 7  # ... with change_ownership=1
C_ZONE_LOCKED = 8  # mm_page_alloc_zone_locked (every __rmqueue_smallest() hit)
C_ZONE_LOCKED_PERCPU_REFILL = 9  # ... with percpu_refill=1
C_PCP_REFILL = 10  # rmqueue_bulk() calls
C_PCP_REFILL_PAGES = 11  # pages they put on pcp lists
C_PCP_DRAIN = 12  # mm_page_pcpu_drain (blocks freed by free_pcppages_bulk())
C_PCP_DRAIN_PAGES = 13
C_PCP_DRAIN_CALLS = 14  # free_pcppages_bulk() calls
C_HIGHATOMIC_RESERVE = 15  # pageblocks reserve_highatomic_pageblock() made MIGRATE_HIGHATOMIC
C_HIGHATOMIC_UNRESERVE = 16  # unreserve_highatomic_pageblock() successes
C_WMARK_BOOST = 17  # boost_watermark() calls that would boost (the boost is not applied)
C_NOFRAGMENT_RETRY = 18  # get_page_from_freelist() retries without ALLOC_NOFRAGMENT
C_DRAIN_ALL = 19  # drain_all_pages() calls
C_KSWAPD_WAKE = 20  # slow path entries with ALLOC_KSWAPD
NCOUNTERS = 21
COUNTER_NAMES = (
    "alloc", "alloc_fail", "free", "bad_free", "slowpath", "extfrag", "extfrag_fragmenting",
    "extfrag_change_ownership", "alloc_zone_locked", "alloc_zone_locked_percpu_refill", "pcp_refill",
    "pcp_refill_pages", "pcp_drain", "pcp_drain_pages", "pcp_drain_calls", "highatomic_reserve",
    "highatomic_unreserve", "watermark_boost", "nofragment_retry", "drain_all_pages", "kswapd_wake",
)

# extfrag log columns (trace_mm_page_alloc_extfrag)
L_OP = 0
L_PFN = 1
L_ALLOC_ORDER = 2
L_FALLBACK_ORDER = 3
L_ALLOC_MT = 4
L_FALLBACK_MT = 5
L_CHANGE_OWNERSHIP = 6
NLOG = 7


# ----------------------------------------------------------------------------- list primitives
@njit(cache=True, _nrt=False, inline="always")
def _first(lk, head):
    """The first entry of a list (the head itself when empty)."""
    return int(lk[2 * head])


@njit(cache=True, _nrt=False, inline="always")
def _last(lk, head):
    return int(lk[2 * head + 1])


@njit(cache=True, _nrt=False, inline="always")
def _list_add(lk, node, head):
    """list_add(): insert right after the head."""
    n = int(lk[2 * head])
    lk[2 * head] = node
    lk[2 * node + 1] = head
    lk[2 * node] = n
    lk[2 * n + 1] = node


@njit(cache=True, _nrt=False, inline="always")
def _list_add_tail(lk, node, head):
    """list_add_tail(): insert right before the head."""
    p = int(lk[2 * head + 1])
    lk[2 * head + 1] = node
    lk[2 * node] = head
    lk[2 * node + 1] = p
    lk[2 * p] = node


@njit(cache=True, _nrt=False, inline="always")
def _list_del(lk, node):
    p = int(lk[2 * node + 1])
    n = int(lk[2 * node])
    lk[2 * p] = n
    lk[2 * n + 1] = p


@njit(cache=True, _nrt=False, inline="always")
def _bhead(npfn, z, order, mt):
    """Sentinel of zone->free_area[order].free_list[mt]."""
    return npfn + (z * MAX_ORDER + order) * NMT + mt


@njit(cache=True, _nrt=False, inline="always")
def _pcp_allowed(order, thp):
    """pcp_allowed_order()."""
    return order <= COSTLY_ORDER or (thp != 0 and order == PAGEBLOCK_ORDER)


@njit(cache=True, _nrt=False, inline="always")
def _order_to_pindex(mt, order):
    """order_to_pindex(): two THP lists, movable and the rest."""
    if order > COSTLY_ORDER:
        return NR_LOWORDER_PCP_LISTS + (1 if mt == MT_MOVABLE else 0)
    return MIGRATE_PCPTYPES * order + mt


@njit(cache=True, _nrt=False, inline="always")
def _pindex_to_order(pindex):
    """pindex_to_order()."""
    if pindex >= NR_LOWORDER_PCP_LISTS:
        return PAGEBLOCK_ORDER
    return pindex // MIGRATE_PCPTYPES


@njit(cache=True, _nrt=False, inline="always")
def _zone_of(zi, pfn):
    """page_zone() (zones are disjoint pfn ranges)."""
    for z in range(zi.shape[0]):
        if zi[z, Z_START] <= pfn < zi[z, Z_END]:
            return z
    return -1


# ----------------------------------------------------------------------------- freeing
@njit(cache=True, _nrt=False)
def _free_one_page(lk, pst, pbmt, zi, npfn, pfn, z, order, mt, to_tail):
    """__free_one_page(): merge with free buddies up to order 10, then add to the list of ``mt``."""
    zi[z, Z_FREE] += 1 << order  # __mod_zone_freepage_state()
    zs = zi[z, Z_START]
    ze = zi[z, Z_END]
    buddy = 0
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)  # __find_buddy_pfn()
        if buddy < zs or buddy >= ze or pst[buddy] != PS_BUDDY + order:  # page_is_buddy(): PageBuddy, order, zone
            break
        if order >= PAGEBLOCK_ORDER:  # no merging of isolate/highatomic blocks with normal ones
            bmt = int(pbmt[buddy >> PAGEBLOCK_ORDER])
            if mt != bmt and (mt >= MIGRATE_PCPTYPES or bmt >= MIGRATE_PCPTYPES):  # migratetype_is_mergeable()
                break
        _list_del(lk, buddy)  # del_page_from_free_list()
        pst[buddy] = PS_NONE
        zi[z, Z_NRFREE + order] -= 1
        pfn = pfn & buddy
        order += 1
    pst[pfn] = PS_BUDDY + order  # set_buddy_order()
    if not to_tail and order < MAX_ORDER - 2:  # buddy_merge_likely(): is the next-higher buddy free?
        higher = buddy & pfn
        hb = higher ^ (1 << (order + 1))
        to_tail = zs <= hb < ze and pst[hb] == PS_BUDDY + order + 1
    head = _bhead(npfn, z, order, mt)
    if to_tail:
        _list_add_tail(lk, pfn, head)  # add_to_free_list_tail()
    else:
        _list_add(lk, pfn, head)  # add_to_free_list()
    zi[z, Z_NRFREE + order] += 1


@njit(cache=True, _nrt=False)
def _free_pcppages_bulk(lk, pst, pbmt, zi, pcp, ctr, npfn, nb, z, count, pc, pindex):
    """free_pcppages_bulk(): round robin over the pcp lists from ``pindex``, each from its tail."""
    c = pcp[pc, P_COUNT]
    if count > c:
        count = c
    pindex -= 1
    min_pindex = 0
    max_pindex = NR_PCP_LISTS - 1
    base = npfn + nb + pc * NR_PCP_LISTS
    ctr[C_PCP_DRAIN_CALLS] += 1
    while count > 0:
        while True:
            pindex += 1
            if pindex > max_pindex:
                pindex = min_pindex
            h = base + pindex
            if _first(lk, h) != h:
                break
            if pindex == max_pindex:
                max_pindex -= 1
            if pindex == min_pindex:
                min_pindex += 1
        order = _pindex_to_order(pindex)
        n = 1 << order
        while True:
            page = _last(lk, h)  # list_last_entry()
            mt = int(pst[page]) - PS_PCP  # get_pcppage_migratetype()
            _list_del(lk, page)
            pst[page] = PS_NONE
            count -= n
            pcp[pc, P_COUNT] -= n
            _free_one_page(lk, pst, pbmt, zi, npfn, page, z, order, mt, False)
            ctr[C_PCP_DRAIN] += 1  # trace_mm_page_pcpu_drain()
            ctr[C_PCP_DRAIN_PAGES] += n
            if count <= 0 or _first(lk, h) == h:
                break


@njit(cache=True, _nrt=False, inline="always")
def _nr_pcp_free(pcp, pc, high, batch, free_high):
    """nr_pcp_free(): batch << free_factor, clamped to [batch, high - batch]; everything when free_high."""
    if free_high:
        return pcp[pc, P_COUNT]
    if high < batch:
        return 1
    min_nr = batch
    max_nr = high - batch
    b = batch << pcp[pc, P_FREE_FACTOR]
    if b < max_nr and pcp[pc, P_FREE_FACTOR] < PCP_BATCH_SCALE_MAX:
        pcp[pc, P_FREE_FACTOR] += 1
    return min(max(b, min_nr), max_nr)


@njit(cache=True, _nrt=False, inline="always")
def _free_unref_page_commit(lk, pst, pbmt, zi, pcp, ctr, npfn, nb, z, pc, pfn, mt, order):
    """free_unref_page_commit(): to the head of the pcp list; drain when pcp->count reaches high."""
    pindex = _order_to_pindex(mt, order)
    _list_add(lk, pfn, npfn + nb + pc * NR_PCP_LISTS + pindex)
    pcp[pc, P_COUNT] += 1 << order
    free_high = pcp[pc, P_FREE_FACTOR] != 0 and order != 0 and order <= COSTLY_ORDER
    high = zi[z, Z_HIGH]  # nr_pcp_high() (ZONE_RECLAIM_ACTIVE is never set: no kswapd)
    if high == 0 or free_high:
        high = 0
    if pcp[pc, P_COUNT] >= high:
        batch = zi[z, Z_BATCH]
        _free_pcppages_bulk(lk, pst, pbmt, zi, pcp, ctr, npfn, nb, z, _nr_pcp_free(pcp, pc, high, batch, free_high),
                            pc, pindex)


@njit(cache=True, _nrt=False, inline="always")
def free(lk, pst, pbmt, zi, pcp, cfg, ctr, pfn, order, cpu, flags):
    """__free_pages(): free_the_page() to the pcp lists of ``cpu``, or __free_pages_ok() to the buddy.

    Returns False (and counts ``bad_free``) when the block is not an allocated, aligned block
    inside one zone; the state is then unchanged.
    """
    npfn = cfg[CF_NPFN]
    if order < 0 or order >= MAX_ORDER or pfn < 0 or pfn >= npfn or (pfn & ((1 << order) - 1)) != 0:
        ctr[C_BAD_FREE] += 1
        return False
    z = _zone_of(zi, pfn)
    n = 1 << order
    if z < 0 or pfn + n > zi[z, Z_END]:
        ctr[C_BAD_FREE] += 1
        return False
    bad = 0
    for p in range(pfn, pfn + n):  # every page allocated (PS_USED or PS_MOVABLE); branch-free so it vectorizes
        bad |= (pst[p] - 1) & 0x7E  # 0 for PS_USED, PS_MOVABLE only (fits int8 without the JIT too)
    if bad != 0:
        ctr[C_BAD_FREE] += 1
        return False
    pst[pfn:pfn + n] = PS_NONE
    ctr[C_FREE] += 1
    zi[z, Z_PGFREE] += n  # __count_vm_events(PGFREE)
    mt = int(pbmt[pfn >> PAGEBLOCK_ORDER])  # get_pfnblock_migratetype()
    if _pcp_allowed(order, cfg[CF_THP]) and (flags & F_BYPASS_PCP) == 0:
        # free_unref_page(): the page keeps its pageblock's type; HIGHATOMIC goes on the movable list
        pst[pfn] = PS_PCP + mt  # set_pcppage_migratetype()
        list_mt = mt if mt < MIGRATE_PCPTYPES else MT_MOVABLE
        _free_unref_page_commit(lk, pst, pbmt, zi, pcp, ctr, npfn, cfg[CF_NB], z, cpu * cfg[CF_NZ] + z, pfn,
                                list_mt, order)
    else:
        _free_one_page(lk, pst, pbmt, zi, npfn, pfn, z, order, mt, (flags & F_TO_TAIL) != 0)
    return True


@njit(cache=True, _nrt=False)
def drain_all_pages(lk, pst, pbmt, zi, pcp, cfg, ctr):
    """drain_all_pages(NULL): every cpu with pcp pages, every zone: drain_pages_zone()."""
    npfn = cfg[CF_NPFN]
    nz = cfg[CF_NZ]
    nb = cfg[CF_NB]
    ctr[C_DRAIN_ALL] += 1
    for cpu in range(cfg[CF_NCPU]):
        has = False
        for z in range(nz):
            if pcp[cpu * nz + z, P_COUNT] != 0:
                has = True
        if not has:
            continue
        for z in range(nz):
            pc = cpu * nz + z
            while True:  # drain_pages_zone()
                count = pcp[pc, P_COUNT]
                if count != 0:
                    to_drain = min(count, zi[z, Z_BATCH] << PCP_BATCH_SCALE_MAX)
                    _free_pcppages_bulk(lk, pst, pbmt, zi, pcp, ctr, npfn, nb, z, to_drain, pc, 0)
                    count -= to_drain
                if count == 0:
                    break


# ----------------------------------------------------------------------------- allocation
@njit(cache=True, _nrt=False)
def _rmqueue_smallest(lk, pst, zi, ctr, npfn, thp, z, order, mt):
    """__rmqueue_smallest(): the head of the smallest non-empty list >= order; expand() the rest."""
    for co in range(order, MAX_ORDER):
        h = _bhead(npfn, z, co, mt)
        page = _first(lk, h)  # get_page_from_free_area()
        if page == h:
            continue
        _list_del(lk, page)  # del_page_from_free_list()
        pst[page] = PS_NONE
        zi[z, Z_NRFREE + co] -= 1
        high = co
        while high > order:  # expand(): upper halves back to the list heads, largest first
            high -= 1
            b = page + (1 << high)
            _list_add(lk, b, _bhead(npfn, z, high, mt))
            pst[b] = PS_BUDDY + high
            zi[z, Z_NRFREE + high] += 1
        ctr[C_ZONE_LOCKED] += 1  # trace_mm_page_alloc_zone_locked()
        if _pcp_allowed(order, thp) and mt < MIGRATE_PCPTYPES:
            ctr[C_ZONE_LOCKED_PERCPU_REFILL] += 1
        return page
    return -1


@njit(cache=True, _nrt=False, inline="always")
def _fallback_mt(mt, i):
    """fallbacks[mt][i] (MIGRATE_TYPES ends the row)."""
    if mt == MT_UNMOVABLE:
        return MT_RECLAIMABLE if i == 0 else MT_MOVABLE
    if mt == MT_MOVABLE:
        return MT_RECLAIMABLE if i == 0 else MT_UNMOVABLE
    return MT_UNMOVABLE if i == 0 else MT_MOVABLE


@njit(cache=True, _nrt=False, inline="always")
def _can_steal_fallback(order, start_mt):
    """can_steal_fallback()."""
    if order >= PAGEBLOCK_ORDER:
        return True
    return order >= PAGEBLOCK_ORDER // 2 or start_mt == MT_RECLAIMABLE or start_mt == MT_UNMOVABLE


@njit(cache=True, _nrt=False)
def _find_suitable_fallback(lk, zi, npfn, z, order, mt):
    """find_suitable_fallback(only_stealable=false): (fallback mt or -1, can_steal)."""
    if zi[z, Z_NRFREE + order] == 0:
        return -1, False
    can_steal = False
    for i in range(2):
        fmt = _fallback_mt(mt, i)
        h = _bhead(npfn, z, order, fmt)
        if _first(lk, h) == h:  # free_area_empty()
            continue
        if _can_steal_fallback(order, mt):
            can_steal = True
        return fmt, can_steal
    return -1, can_steal


@njit(cache=True, _nrt=False)
def _move_freepages_block(lk, pst, zi, npfn, z, page, mt):
    """move_freepages_block(): every free block of the pageblock to the tail of ``mt``'s lists.

    Returns (pages moved, allocated movable pages seen)."""
    start = (page >> PAGEBLOCK_ORDER) << PAGEBLOCK_ORDER
    end = start + PAGEBLOCK_PAGES - 1
    if start < zi[z, Z_START]:  # do not cross zone boundaries
        start = page
    if end >= zi[z, Z_END]:
        return 0, 0
    moved = 0
    movable = 0
    p = start
    while p <= end:  # move_freepages()
        s = int(pst[p])
        if s < PS_BUDDY or s >= PS_PCP:  # not PageBuddy
            if s == PS_MOVABLE:  # PageLRU() || __PageMovable()
                movable += 1
            p += 1
            continue
        o = s - PS_BUDDY
        _list_del(lk, p)  # move_to_free_list(): list_move_tail()
        _list_add_tail(lk, p, _bhead(npfn, z, o, mt))
        p += 1 << o
        moved += 1 << o
    return moved, movable


@njit(cache=True, _nrt=False)
def _steal_suitable_fallback(lk, pst, pbmt, zi, ctr, npfn, z, page, start_mt, whole_block):
    """steal_suitable_fallback(): take the block, or the pageblock when at least half is free or alike."""
    co = int(pst[page]) - PS_BUDDY
    pb = page >> PAGEBLOCK_ORDER
    old = int(pbmt[pb])
    if old != MT_HIGHATOMIC:
        if co >= PAGEBLOCK_ORDER:  # change_pageblock_range(): take ownership of whole pageblocks
            for k in range(1 << (co - PAGEBLOCK_ORDER)):
                pbmt[pb + k] = start_mt
        else:
            if zi[z, Z_BOOST] != 0:  # boost_watermark(): counted, not applied
                ctr[C_WMARK_BOOST] += 1
            if whole_block:
                free_pages, movable_pages = _move_freepages_block(lk, pst, zi, npfn, z, page, start_mt)
                if start_mt == MT_MOVABLE:
                    alike = movable_pages
                elif old == MT_MOVABLE:
                    alike = PAGEBLOCK_PAGES - (free_pages + movable_pages)
                else:
                    alike = 0
                if free_pages != 0:
                    if free_pages + alike >= PAGEBLOCK_PAGES // 2:
                        pbmt[pb] = start_mt
                    return
    _list_del(lk, page)  # single_page: move_to_free_list()
    _list_add_tail(lk, page, _bhead(npfn, z, co, start_mt))


@njit(cache=True, _nrt=False)
def _rmqueue_fallback(lk, pst, pbmt, zi, ctr, log, log_n, npfn, z, order, start_mt, flags, op):
    """__rmqueue_fallback(): steal the largest block of a fallback type (the smallest for movable
    requests that cannot steal the pageblock); under ALLOC_NOFRAGMENT only whole pageblocks."""
    min_order = order
    if order < PAGEBLOCK_ORDER and (flags & ALLOC_NOFRAGMENT) != 0:
        min_order = PAGEBLOCK_ORDER
    fmt = -1
    can_steal = False
    co = MAX_ORDER - 1
    while co >= min_order:
        fmt, can_steal = _find_suitable_fallback(lk, zi, npfn, z, co, start_mt)
        if fmt != -1:
            if not can_steal and start_mt == MT_MOVABLE and co > order:  # find_smallest
                co = order
                while co < MAX_ORDER:
                    fmt, can_steal = _find_suitable_fallback(lk, zi, npfn, z, co, start_mt)
                    if fmt != -1:
                        break
                    co += 1
            break
        co -= 1
    if fmt == -1:
        return False
    page = _first(lk, _bhead(npfn, z, co, fmt))
    _steal_suitable_fallback(lk, pst, pbmt, zi, ctr, npfn, z, page, start_mt, can_steal)
    change = pbmt[page >> PAGEBLOCK_ORDER] == start_mt
    ctr[C_EXTFRAG] += 1  # trace_mm_page_alloc_extfrag()
    if co < PAGEBLOCK_ORDER:
        ctr[C_EXTFRAG_FRAGMENTING] += 1
    if change:
        ctr[C_EXTFRAG_CHANGE_OWNERSHIP] += 1
    n = log_n[0]
    if n < log.shape[0]:
        log[n, L_OP] = op
        log[n, L_PFN] = page
        log[n, L_ALLOC_ORDER] = order
        log[n, L_FALLBACK_ORDER] = co
        log[n, L_ALLOC_MT] = start_mt
        log[n, L_FALLBACK_MT] = fmt
        log[n, L_CHANGE_OWNERSHIP] = 1 if change else 0
    log_n[0] = n + 1
    return True


@njit(cache=True, _nrt=False)
def _rmqueue(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, mt, flags, op):
    """__rmqueue(): the smallest block of ``mt``, else steal a fallback and retry (no CMA)."""
    while True:
        page = _rmqueue_smallest(lk, pst, zi, ctr, npfn, thp, z, order, mt)
        if page >= 0:
            return page
        if not _rmqueue_fallback(lk, pst, pbmt, zi, ctr, log, log_n, npfn, z, order, mt, flags, op):
            return -1


@njit(cache=True, _nrt=False)
def _rmqueue_bulk(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, count, h, mt, flags, op):
    """rmqueue_bulk(): ``count`` blocks of __rmqueue() to the list tail, in the order expand() gives."""
    i = 0
    while i < count:
        page = _rmqueue(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, mt, flags, op)
        if page < 0:
            break
        _list_add_tail(lk, page, h)
        pst[page] = PS_PCP + mt  # set_pcppage_migratetype() in __rmqueue_smallest()
        i += 1
    zi[z, Z_FREE] -= i << order
    ctr[C_PCP_REFILL] += 1
    ctr[C_PCP_REFILL_PAGES] += i << order
    return i


@njit(cache=True, _nrt=False, inline="always")
def _rmqueue_pcplist(lk, pst, pbmt, zi, pcp, ctr, log, log_n, npfn, nb, thp, z, pc, order, mt, flags, op):
    """rmqueue_pcplist()/__rmqueue_pcplist(): the list head; refill with rmqueue_bulk() when empty."""
    pcp[pc, P_FREE_FACTOR] >>= 1
    h = npfn + nb + pc * NR_PCP_LISTS + _order_to_pindex(mt, order)
    if _first(lk, h) == h:
        batch = zi[z, Z_BATCH]
        if batch > 1:
            batch = max(batch >> order, 2)
        got = _rmqueue_bulk(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, batch, h, mt, flags, op)
        pcp[pc, P_COUNT] += got << order
        if _first(lk, h) == h:
            return -1
    page = _first(lk, h)  # list_first_entry()
    _list_del(lk, page)
    pst[page] = PS_NONE
    pcp[pc, P_COUNT] -= 1 << order
    zi[z, Z_PGALLOC] += 1 << order
    return page


@njit(cache=True, _nrt=False)
def _rmqueue_buddy(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, mt, flags, op):
    """rmqueue_buddy(): highatomic first under ALLOC_HIGHATOMIC, last for ALLOC_OOM/ALLOC_NON_BLOCK."""
    page = -1
    if (flags & ALLOC_HIGHATOMIC) != 0:
        page = _rmqueue_smallest(lk, pst, zi, ctr, npfn, thp, z, order, MT_HIGHATOMIC)
    if page < 0:
        page = _rmqueue(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, mt, flags, op)
        if page < 0 and (flags & (ALLOC_OOM | ALLOC_NON_BLOCK)) != 0:
            page = _rmqueue_smallest(lk, pst, zi, ctr, npfn, thp, z, order, MT_HIGHATOMIC)
        if page < 0:
            return -1
    zi[z, Z_FREE] -= 1 << order
    zi[z, Z_PGALLOC] += 1 << order
    return page


@njit(cache=True, _nrt=False)
def _watermark_ok(lk, zi, npfn, z, order, mark, hz, flags, free_pages):
    """__zone_watermark_ok()."""
    unusable = (1 << order) - 1  # __zone_watermark_unusable_free() (no CMA)
    if (flags & ALLOC_RESERVES) == 0:
        unusable += zi[z, Z_HIGHATOMIC]
    free_pages -= unusable
    mn = mark
    if (flags & ALLOC_RESERVES) != 0:
        if (flags & ALLOC_MIN_RESERVE) != 0:
            mn -= mn // 2
            if (flags & ALLOC_NON_BLOCK) != 0:
                mn -= mn // 4
        if (flags & ALLOC_OOM) != 0:
            mn -= mn // 2
    if free_pages <= mn + zi[z, Z_LOWMEM + hz]:
        return False
    if order == 0:
        return True
    for o in range(order, MAX_ORDER):
        if zi[z, Z_NRFREE + o] == 0:
            continue
        for mt in range(MIGRATE_PCPTYPES):
            h = _bhead(npfn, z, o, mt)
            if _first(lk, h) != h:
                return True
        if (flags & (ALLOC_HIGHATOMIC | ALLOC_OOM)) != 0:
            h = _bhead(npfn, z, o, MT_HIGHATOMIC)
            if _first(lk, h) != h:
                return True
    return False


@njit(cache=True, _nrt=False, inline="always")
def _watermark_fast(lk, zi, npfn, z, order, mark, hz, flags):
    """zone_watermark_fast() (no watermark boost, so no GFP_ATOMIC boost exception)."""
    free_pages = zi[z, Z_FREE]
    if order == 0:
        reserved = 0 if (flags & ALLOC_RESERVES) != 0 else zi[z, Z_HIGHATOMIC]
        usable = free_pages - min(free_pages, reserved)
        if usable > mark + zi[z, Z_LOWMEM + hz]:
            return True
    return _watermark_ok(lk, zi, npfn, z, order, mark, hz, flags, free_pages)


@njit(cache=True, _nrt=False)
def _reserve_highatomic_pageblock(lk, pst, pbmt, zi, ctr, npfn, z, page):
    """reserve_highatomic_pageblock(): up to 1% of the zone plus one pageblock."""
    max_managed = zi[z, Z_MANAGED] // 100 + PAGEBLOCK_PAGES
    if zi[z, Z_HIGHATOMIC] >= max_managed:
        return
    pb = page >> PAGEBLOCK_ORDER
    if pbmt[pb] < MIGRATE_PCPTYPES:  # migratetype_is_mergeable()
        zi[z, Z_HIGHATOMIC] += PAGEBLOCK_PAGES
        pbmt[pb] = MT_HIGHATOMIC
        _move_freepages_block(lk, pst, zi, npfn, z, page, MT_HIGHATOMIC)
        ctr[C_HIGHATOMIC_RESERVE] += 1


@njit(cache=True, _nrt=False)
def _unreserve_highatomic_pageblock(lk, pst, pbmt, zi, ctr, zl, npfn, row, hz, ac_mt, force):
    """unreserve_highatomic_pageblock(): give one highatomic pageblock back to the request's type."""
    for k in range(zl.shape[1]):
        z = zl[row, k]
        if z < 0:
            break
        if zi[z, Z_TYPE] > hz:
            continue
        if not force and zi[z, Z_HIGHATOMIC] <= PAGEBLOCK_PAGES:
            continue
        for order in range(MAX_ORDER):
            h = _bhead(npfn, z, order, MT_HIGHATOMIC)
            page = _first(lk, h)
            if page == h:
                continue
            pb = page >> PAGEBLOCK_ORDER
            if pbmt[pb] == MT_HIGHATOMIC:
                zi[z, Z_HIGHATOMIC] -= min(PAGEBLOCK_PAGES, zi[z, Z_HIGHATOMIC])
            pbmt[pb] = ac_mt
            moved, _ = _move_freepages_block(lk, pst, zi, npfn, z, page, ac_mt)
            if moved != 0:
                ctr[C_HIGHATOMIC_UNRESERVE] += 1
                return True
    return False


@njit(cache=True, _nrt=False, inline="always")
def _get_page_from_freelist(lk, pst, pbmt, zi, pcp, zl, cfg, ctr, log, log_n, row, pref, order, mt, hz, flags, cpu,
                            op):
    """get_page_from_freelist(): the first zone of the zonelist passing its watermark that has a page."""
    npfn = cfg[CF_NPFN]
    nb = cfg[CF_NB]
    thp = cfg[CF_THP]
    nz = cfg[CF_NZ]
    while True:
        no_fallback = (flags & ALLOC_NOFRAGMENT) != 0
        restart = False
        for k in range(zl.shape[1]):
            z = zl[row, k]
            if z < 0:
                break
            if zi[z, Z_TYPE] > hz:
                continue
            if no_fallback and cfg[CF_NNODES] > 1 and z != pref and zi[z, Z_NID] != zi[pref, Z_NID]:
                flags &= ~ALLOC_NOFRAGMENT  # moving to a remote node: allow fragmenting fallbacks
                restart = True
                break
            mark = zi[z, Z_WMIN + (flags & ALLOC_WMARK_MASK)]  # wmark_pages()
            if not _watermark_fast(lk, zi, npfn, z, order, mark, hz, flags):
                if (flags & ALLOC_NO_WATERMARKS) == 0:
                    continue  # node_reclaim() is off (zone_reclaim_mode = 0)
            # rmqueue(): the pcp lists for pcp orders (no CMA), else the buddy
            page = -1
            if _pcp_allowed(order, thp):
                page = _rmqueue_pcplist(lk, pst, pbmt, zi, pcp, ctr, log, log_n, npfn, nb, thp, z, cpu * nz + z, order,
                                        mt, flags, op)
            if page < 0:
                page = _rmqueue_buddy(lk, pst, pbmt, zi, ctr, log, log_n, npfn, thp, z, order, mt, flags, op)
            if page >= 0:
                if (flags & ALLOC_HIGHATOMIC) != 0:
                    _reserve_highatomic_pageblock(lk, pst, pbmt, zi, ctr, npfn, z, page)
                return page
        if restart:
            continue
        if no_fallback:  # a UMA machine can find every zone fragmented: retry allowing fallbacks
            flags &= ~ALLOC_NOFRAGMENT
            ctr[C_NOFRAGMENT_RETRY] += 1
            continue
        return -1


@njit(cache=True, _nrt=False, inline="always")
def alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, ctr, log, log_n, order, req, cpu, op):
    """__alloc_pages() for a request word (:func:`request`) on ``cpu``: the pfn, or -1.

    Fast path with ALLOC_WMARK_LOW (+ ALLOC_NOFRAGMENT when the preferred zone is Normal),
    then __alloc_pages_slowpath(): gfp_to_alloc_flags(), the reserve flags, and in place of
    direct reclaim only its drain_all_pages()/unreserve_highatomic_pageblock() steps.
    """
    mt = (req >> R_MT_SHIFT) & 3
    hz = (req >> R_ZONE_SHIFT) & 3
    row = cpu_node[cpu] * 2 + (1 if (req & R_THISNODE) != 0 else 0)
    pref = -1
    for k in range(zl.shape[1]):  # first_zones_zonelist()
        z = zl[row, k]
        if z < 0:
            break
        if zi[z, Z_TYPE] <= hz:
            pref = z
            break
    page = -1
    if pref >= 0:
        flags = (req >> R_FAST_SHIFT) & R_FLAGS_MASK
        if zi[pref, Z_NOFRAG] != 0:  # alloc_flags_nofragment()
            flags |= ALLOC_NOFRAGMENT
        step = 0
        while True:
            page = _get_page_from_freelist(lk, pst, pbmt, zi, pcp, zl, cfg, ctr, log, log_n, row, pref, order, mt, hz,
                                           flags, cpu, op)
            if page >= 0:
                break
            step += 1
            if step == 1:  # __alloc_pages_slowpath(): gfp_to_alloc_flags(), wake_all_kswapds()
                ctr[C_SLOWPATH] += 1
                flags = (req >> R_SLOW_SHIFT) & R_FLAGS_MASK
                if (flags & ALLOC_KSWAPD) != 0:
                    ctr[C_KSWAPD_WAKE] += 1
                continue
            reserve = (req >> R_RESERVE_SHIFT) & R_FLAGS_MASK
            if step == 2 and reserve != 0:  # __gfp_pfmemalloc_flags()
                flags = reserve | (flags & ALLOC_KSWAPD)
                continue
            if step <= 3 and (req & R_DIRECT_RECLAIM) != 0 and cfg[CF_RECLAIM_DRAIN] != 0:
                # __alloc_pages_direct_reclaim() after reclaim that freed nothing: unreserve, drain, retry once
                step = 3
                _unreserve_highatomic_pageblock(lk, pst, pbmt, zi, ctr, zl, cfg[CF_NPFN], row, hz, mt, False)
                drain_all_pages(lk, pst, pbmt, zi, pcp, cfg, ctr)
                continue
            if step <= 4 and (req & R_RETRY) != 0 and (req & R_DIRECT_RECLAIM) != 0:
                # should_reclaim_retry() giving up: exhaust the highatomic reserve before the OOM path
                step = 4
                if _unreserve_highatomic_pageblock(lk, pst, pbmt, zi, ctr, zl, cfg[CF_NPFN], row, hz, mt, True):
                    continue
            break
    if page < 0:
        ctr[C_ALLOC_FAIL] += 1
        return -1
    uv = PS_MOVABLE if mt == MT_MOVABLE else PS_USED
    pst[page:page + (1 << order)] = uv
    ctr[C_ALLOC] += 1
    return page


@njit(cache=True, _nrt=False)
def run_ops(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, ctr, log, log_n, op_kind, op_order, op_req, op_cpu, op_pfn, out,
            start, log_reserve):
    """Apply ops ``start..`` in order, writing each alloc's pfn (or -1) to ``out``.

    Frees write 1 (done) or 0 (rejected) to ``out``.  Returns the index of the first op not
    applied: ``len(ops)``, or earlier when the extfrag log has fewer than ``log_reserve`` free
    rows (the caller grows it and resumes).
    """
    nops = op_kind.shape[0]
    for i in range(start, nops):
        if log.shape[0] - log_n[0] < log_reserve:
            return i
        k = op_kind[i]
        if k == K_ALLOC:
            out[i] = alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, ctr, log, log_n, op_order[i], op_req[i],
                           op_cpu[i], i)
        elif k == K_FREE or k == K_FREE_REF:
            pfn = op_pfn[i]
            if k == K_FREE_REF:
                pfn = out[pfn] if 0 <= pfn < i else -1
            if pfn < 0:
                out[i] = 0
                continue
            ok = free(lk, pst, pbmt, zi, pcp, cfg, ctr, pfn, op_order[i], op_cpu[i], op_req[i])
            out[i] = 1 if ok else 0
        else:
            drain_all_pages(lk, pst, pbmt, zi, pcp, cfg, ctr)
            out[i] = 1
    return nops


@njit(cache=True, _nrt=False)
def alloc_one(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, ctr, log, log_n, order, req, cpu, op):
    """:func:`alloc` as its own entry point (for Python callers)."""
    return alloc(lk, pst, pbmt, zi, pcp, zl, cfg, cpu_node, ctr, log, log_n, order, req, cpu, op)


@njit(cache=True, _nrt=False)
def free_one(lk, pst, pbmt, zi, pcp, cfg, ctr, pfn, order, cpu, flags):
    """:func:`free` as its own entry point (for Python callers)."""
    return free(lk, pst, pbmt, zi, pcp, cfg, ctr, pfn, order, cpu, flags)


@njit(cache=True, _nrt=False)
def free_blocks(lk, pst, pbmt, zi, pcp, cfg, ctr, pfns, orders, flags):
    """:func:`free` of each ``(pfns[k], orders[k])`` in turn on CPU 0 (a seeding loop without a Python call
    a block); returns the index of the first block it rejects (the rest not freed), or -1."""
    for k in range(pfns.shape[0]):
        if not free(lk, pst, pbmt, zi, pcp, cfg, ctr, pfns[k], orders[k], 0, flags):
            return k
    return -1


# ----------------------------------------------------------------------------- gfp helpers
def gfp_zone(gfp: int) -> int:
    """gfp_zone(): the highest zone type a gfp mask may use (ZONE_MOVABLE is empty here: Normal)."""
    bits = gfp & (GFP_DMA_BIT | GFP_HIGHMEM_BIT | GFP_DMA32_BIT)
    if bits == 0 or bits == GFP_HIGHMEM_BIT:
        return ZONE_NORMAL
    if bits == GFP_DMA_BIT:
        return ZONE_DMA
    if bits == GFP_DMA32_BIT:
        return ZONE_DMA32
    raise PtebenchError(f"gfp mask {gfp:#x} names more than one zone modifier (GFP_ZONE_BAD)")


def gfp_migratetype(gfp: int) -> int:
    """gfp_migratetype(): __GFP_MOVABLE -> movable, __GFP_RECLAIMABLE -> reclaimable, else unmovable."""
    mt = (gfp & (GFP_MOVABLE_BIT | GFP_RECLAIMABLE_BIT)) >> 3
    if mt == MT_HIGHATOMIC:
        raise PtebenchError(f"gfp mask {gfp:#x} is both movable and reclaimable")
    return mt


def alloc_flags_nofragment(zone_type: int, gfp: int, *, dma32_populated: bool = True, nr_nodes: int = 1) -> int:
    """alloc_flags_nofragment(): ALLOC_KSWAPD from the gfp, ALLOC_NOFRAGMENT when the preferred
    zone is Normal (and, on NUMA, its node has a populated DMA32)."""
    flags = gfp & GFP_KSWAPD_RECLAIM_BIT  # == ALLOC_KSWAPD
    if zone_type != ZONE_NORMAL:
        return flags
    if nr_nodes > 1 and not dma32_populated:
        return flags
    return flags | ALLOC_NOFRAGMENT


def gfp_to_alloc_flags(gfp: int, order: int) -> int:
    """gfp_to_alloc_flags(): the slow path's flags (no CMA, no rt task)."""
    flags = ALLOC_WMARK_MIN | ALLOC_CPUSET
    flags |= gfp & (GFP_HIGH_BIT | GFP_KSWAPD_RECLAIM_BIT)  # == ALLOC_MIN_RESERVE | ALLOC_KSWAPD
    if not gfp & GFP_DIRECT_RECLAIM_BIT:
        if not gfp & GFP_NOMEMALLOC_BIT:
            flags |= ALLOC_NON_BLOCK
            if order > 0:
                flags |= ALLOC_HIGHATOMIC
        if flags & ALLOC_MIN_RESERVE:
            flags &= ~ALLOC_CPUSET
    return flags


def gfp_pfmemalloc_flags(gfp: int) -> int:
    """__gfp_pfmemalloc_flags() for the gfp bits alone (task flags such as PF_MEMALLOC are unknown)."""
    if gfp & GFP_NOMEMALLOC_BIT:
        return 0
    if gfp & GFP_MEMALLOC_BIT:
        return ALLOC_NO_WATERMARKS
    return 0


def request(gfp: int, order: int) -> int:
    """The request word of one allocation: what ``alloc()``/``run_ops()`` take."""
    if not 0 <= order < MAX_ORDER:
        raise PtebenchError(f"order {order} outside 0..{MAX_ORDER - 1}")
    fast = ALLOC_WMARK_LOW | (gfp & GFP_KSWAPD_RECLAIM_BIT)  # prepare_alloc_pages() + nofragment's KSWAPD
    slow = gfp_to_alloc_flags(gfp, order)
    reserve = gfp_pfmemalloc_flags(gfp)
    req = fast << R_FAST_SHIFT | slow << R_SLOW_SHIFT | reserve << R_RESERVE_SHIFT
    req |= gfp_migratetype(gfp) << R_MT_SHIFT | gfp_zone(gfp) << R_ZONE_SHIFT
    if gfp & GFP_THISNODE_BIT:
        req |= R_THISNODE
    if gfp & GFP_DIRECT_RECLAIM_BIT:
        req |= R_DIRECT_RECLAIM
        if not gfp & GFP_NORETRY_BIT and (order <= COSTLY_ORDER or gfp & GFP_RETRY_MAYFAIL_BIT):
            req |= R_RETRY
    return req


def requests(gfp: np.ndarray, order: np.ndarray) -> np.ndarray:
    """:func:`request` over arrays (one word per distinct (gfp, order) pair is computed)."""
    gfp = np.asarray(gfp, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    keys = gfp * MAX_ORDER + order
    uniq, inv = np.unique(keys, return_inverse=True)
    words = np.array([request(int(k // MAX_ORDER), int(k % MAX_ORDER)) for k in uniq], dtype=np.int64)
    return words[inv.reshape(-1)] if len(uniq) else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------- boot-time sizing
def zone_batchsize(managed: int) -> int:
    """zone_batchsize(): ~0.1% of the zone or 1 MiB, /4, clamped to 2^n - 1 (at least 1 by the caller)."""
    batch = min(managed >> 10, (1 << 20) // 4096) // 4
    batch = max(batch, 1)
    x = batch + batch // 2
    return (1 << (x.bit_length() - 1)) - 1  # rounddown_pow_of_two() - 1


def zone_highsize(low_wmark: int, managed: int, batch: int, node_cpus: int, online_cpus: int,
                  high_fraction: int = 0) -> int:
    """zone_highsize(): the low watermark (or managed / percpu_pagelist_high_fraction) split across
    the node's CPUs, at least 4 * batch."""
    total = managed // high_fraction if high_fraction else low_wmark
    split = node_cpus if node_cpus else online_cpus
    return max(total // split, batch << 2)


def setup_per_zone_wmarks(managed: Sequence[int], min_free_kbytes: int, scale_factor: int) -> list[tuple[int, ...]]:
    """__setup_per_zone_wmarks(): (min, low, high) per zone; min in proportion to managed pages."""
    pages_min = min_free_kbytes >> 2
    lowmem = sum(managed)
    out = []
    for m in managed:
        wmin = pages_min * m // lowmem if lowmem else 0
        step = max(wmin >> 2, m * scale_factor // 10000)  # mult_frac()
        out.append((wmin, wmin + step, wmin + 2 * step))
    return out


def calculate_min_free_kbytes(free_buffer_pages: int) -> int:
    """calculate_min_free_kbytes(): int_sqrt(lowmem_kbytes * 16) clamped to [128, 262144]."""
    return min(max(math.isqrt(free_buffer_pages * 4 * 16), 128), 262144)


def _nr_free_buffer_pages(managed: Sequence[int], wmarks: Sequence[tuple[int, ...]]) -> int:
    """nr_free_buffer_pages(): managed pages above the high watermark, over every zone <= Normal."""
    return sum(max(0, m - w[2]) for m, w in zip(managed, wmarks, strict=True))


def new_state(npfn: int, nzones: int, ncpus: int, nnodes: int, *, log_rows: int = 256) -> dict[str, np.ndarray]:
    """Empty arrays for pfns [0, npfn): every list empty, every pfn absent, every pageblock movable."""
    nb = nzones * MAX_ORDER * NMT
    nlists = nb + ncpus * nzones * NR_PCP_LISTS
    if npfn + nlists >= 1 << 31:
        raise PtebenchError(f"{npfn} pfns do not fit the int32 list links")
    lk = np.full(2 * (npfn + nlists), -1, np.int32)
    heads = np.arange(npfn, npfn + nlists, dtype=np.int32)
    lk[2 * npfn::2] = heads
    lk[2 * npfn + 1::2] = heads
    cfg = np.zeros(NCFG, np.int64)
    cfg[CF_NPFN] = npfn
    cfg[CF_NZ] = nzones
    cfg[CF_NCPU] = ncpus
    cfg[CF_NNODES] = nnodes
    cfg[CF_NB] = nb
    return {
        "lk": lk,
        "pst": np.zeros(npfn, np.int8),
        "pbmt": np.full((npfn + PAGEBLOCK_PAGES - 1) >> PAGEBLOCK_ORDER, MT_MOVABLE, np.int8),
        "zi": np.zeros((nzones, Z_COLS), np.int64),
        "pcp": np.zeros((ncpus * nzones, 2), np.int64),
        "zl": np.full((nnodes * 2, nzones + 1), -1, np.int64),
        "cfg": cfg,
        "cpu_node": np.zeros(ncpus, np.int64),
        "ctr": np.zeros(NCOUNTERS, np.int64),
        "log": np.zeros((log_rows, NLOG), np.int64),
        "log_n": np.zeros(1, np.int64),
    }


#: argument order of alloc()/run_ops(); free()/drain_all_pages() take FREE_ORDER
STATE_ORDER = ("lk", "pst", "pbmt", "zi", "pcp", "zl", "cfg", "cpu_node", "ctr", "log", "log_n")
FREE_ORDER = ("lk", "pst", "pbmt", "zi", "pcp", "cfg", "ctr")


class Buddy:
    """One machine's page allocator: zones of one or more nodes, per-cpu lists, kernel-named counters.

    Build with :meth:`from_zones`; seed the free memory with :meth:`set_free_blocks` (every pfn of
    a zone starts allocated, as before ``memblock_free_all()``); then :meth:`alloc`/:meth:`free` or
    batches of ops through :meth:`run`.
    """

    def __init__(self, st: dict[str, np.ndarray], names: list[str], zone_nids: list[int]) -> None:
        self.state = st
        self.names = names
        self.zone_nids = zone_nids
        self.ops_applied = 0
        self._seeded = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_zones(cls, zones: Sequence[tuple], ncpus: int = 1, *, cpu_nodes: Sequence[int] | None = None,
                   managed: Sequence[int] | None = None, min_free_kbytes: int | None = None,
                   watermark_scale_factor: int = 10, thp: bool = True, percpu_pagelist_high_fraction: int = 0,
                   pcp_batch: int | None = None, pcp_high: int | None = None, reclaim_drain: bool = True) -> Buddy:
        """Zones as ``(name, start_pfn, end_pfn)`` or ``(name, start_pfn, end_pfn, nid)``; name is
        DMA, DMA32 or Normal.  ``managed`` defaults to each zone's span.  ``min_free_kbytes=None``
        runs the boot computation (calculate_min_free_kbytes(), then khugepaged's
        set_recommended_min_free_kbytes() when ``thp``); a value is a sysctl write.  ``pcp_batch``
        and ``pcp_high`` override zone_batchsize()/zone_highsize() (test knobs, not kernel ones).
        ``reclaim_drain=False`` removes the direct-reclaim stub's unreserve + drain_all_pages() step
        (the kernel takes it only when reclaim made progress; the model has no reclaim)."""
        if ncpus < 1:
            raise PtebenchError(f"need at least one cpu, got {ncpus}")
        if not zones:
            raise PtebenchError("need at least one zone")
        rows = []
        for zdesc in zones:
            if len(zdesc) not in (3, 4):
                raise PtebenchError(f"zone {zdesc!r}: expected (name, start_pfn, end_pfn[, nid])")
            name, start, end = zdesc[0], int(zdesc[1]), int(zdesc[2])
            nid = int(zdesc[3]) if len(zdesc) == 4 else 0
            if name not in ZONE_TYPES:
                raise PtebenchError(f"zone {name!r}: name must be one of {sorted(ZONE_TYPES)}")
            if not 0 <= start < end:
                raise PtebenchError(f"zone {name}: empty or negative range [{start}, {end})")
            rows.append((name, start, end, nid))
        rows.sort(key=lambda r: (r[3], ZONE_TYPES[r[0]]))
        for a, b in zip(rows, rows[1:], strict=False):
            if (a[3], a[0]) == (b[3], b[0]):
                raise PtebenchError(f"zone {a[0]} of node {a[3]} given twice")
        spans = sorted((r[1], r[2]) for r in rows)
        for a, b in zip(spans, spans[1:], strict=False):
            if b[0] < a[1]:
                raise PtebenchError(f"zones overlap: [{a[0]}, {a[1]}) and [{b[0]}, {b[1]})")
        nids = sorted({r[3] for r in rows})
        if nids != list(range(len(nids))):
            raise PtebenchError(f"node ids must be 0..n-1, got {nids}")
        nnodes = len(nids)
        cpu_nodes = [0] * ncpus if cpu_nodes is None else [int(c) for c in cpu_nodes]
        if len(cpu_nodes) != ncpus or any(not 0 <= c < nnodes for c in cpu_nodes):
            raise PtebenchError(f"cpu_nodes must give a node in 0..{nnodes - 1} for each of {ncpus} cpus")
        nz = len(rows)
        if managed is None:
            managed = [r[2] - r[1] for r in rows]
        else:
            if len(managed) != nz:
                raise PtebenchError(f"managed: {len(managed)} values for {nz} zones")
            order = sorted(range(nz), key=lambda i: (int(zones[i][3]) if len(zones[i]) == 4 else 0,
                                                     ZONE_TYPES[zones[i][0]]))
            managed = [int(managed[i]) for i in order]
        for r, m in zip(rows, managed, strict=True):
            if not 0 <= m <= r[2] - r[1]:
                raise PtebenchError(f"zone {r[0]}: managed pages {m} outside 0..{r[2] - r[1]}")

        # init_per_zone_wmark_min(), then khugepaged's set_recommended_min_free_kbytes()
        zero = [(0, 0, 0)] * nz
        if min_free_kbytes is None:
            mfk = calculate_min_free_kbytes(_nr_free_buffer_pages(managed, zero))
            wm = setup_per_zone_wmarks(managed, mfk, watermark_scale_factor)
            if thp:
                nr_zones = sum(1 for m in managed if m > 0)
                rec = PAGEBLOCK_PAGES * nr_zones * 2 + PAGEBLOCK_PAGES * nr_zones * MIGRATE_PCPTYPES ** 2
                rec = min(rec, _nr_free_buffer_pages(managed, wm) // 20) << 2
                if rec > mfk:
                    mfk = rec
                wm = setup_per_zone_wmarks(managed, mfk, watermark_scale_factor)
        else:
            mfk = int(min_free_kbytes)
            wm = setup_per_zone_wmarks(managed, mfk, watermark_scale_factor)

        npfn = max(r[2] for r in rows)
        st = new_state(npfn, nz, ncpus, nnodes)
        zi = st["zi"]
        st["cfg"][CF_THP] = 1 if thp else 0
        st["cfg"][CF_RECLAIM_DRAIN] = 1 if reclaim_drain else 0
        st["cpu_node"][:] = cpu_nodes
        for z, (name, start, end, nid) in enumerate(rows):
            m = managed[z]
            zi[z, Z_START], zi[z, Z_END], zi[z, Z_NID], zi[z, Z_MANAGED] = start, end, nid, m
            zi[z, Z_TYPE] = ZONE_TYPES[name]
            zi[z, Z_WMIN:Z_WHIGH + 1] = wm[z]
            # setup_per_zone_lowmem_reserve(): lowmem_reserve[j] = managed of the node's zones above, up to j
            t = ZONE_TYPES[name]
            for j in range(3):
                if j <= t or m == 0:
                    zi[z, Z_LOWMEM + j] = 0
                    continue
                upper = sum(managed[u] for u, r in enumerate(rows) if r[3] == nid and t < ZONE_TYPES[r[0]] <= j)
                zi[z, Z_LOWMEM + j] = upper // LOWMEM_RESERVE_RATIO[t]
            batch = max(1, zone_batchsize(m)) if pcp_batch is None else int(pcp_batch)
            node_cpus = sum(1 for c in cpu_nodes if c == nid)
            high = zone_highsize(wm[z][1], m, batch, node_cpus, ncpus, percpu_pagelist_high_fraction) \
                if pcp_high is None else int(pcp_high)
            zi[z, Z_BATCH], zi[z, Z_HIGH] = batch, high
            dma32 = any(r[3] == nid and r[0] == "DMA32" for r in rows)
            zi[z, Z_NOFRAG] = 1 if t == ZONE_NORMAL and (nnodes == 1 or dma32) else 0
            zi[z, Z_BOOST] = 1 if PAGEBLOCK_PAGES * 4 <= m and wm[z][2] * 15000 // 10000 != 0 else 0
        # build_zonelists(): own node's zones from the highest type down, then the next nodes in turn
        for nid in range(nnodes):
            fallback = []
            for k in range(nnodes):
                other = (nid + k) % nnodes
                fallback += [z for z in range(nz - 1, -1, -1) if rows[z][3] == other]
            thisnode = [z for z in range(nz - 1, -1, -1) if rows[z][3] == nid]
            st["zl"][2 * nid, :len(fallback)] = fallback
            st["zl"][2 * nid + 1, :len(thisnode)] = thisnode
        # every pfn of a zone starts allocated (reserved memblock memory)
        for _, start, end, _ in rows:
            st["pst"][start:end] = PS_MOVABLE
        b = cls(st, [r[0] if nnodes == 1 else f"{r[0]}@{r[3]}" for r in rows], [r[3] for r in rows])
        b.min_free_kbytes = mfk
        return b

    def set_free_blocks(self, blocks: Sequence[tuple[int, int]], migratetypes: Any = MT_MOVABLE, *,
                        absent: Sequence[tuple[int, int]] = ()) -> None:
        """Seed the free memory: ``migratetypes`` (one value, a ``{pageblock: mt}`` dict or an array
        over all pageblocks) sets the pageblock types; pages in ``absent`` ranges are holes; every
        other zone page stays allocated (movable when its pageblock is MOVABLE); then each
        ``(pfn, order)`` block is freed like ``__free_pages_core()``: __free_one_page() to the tail."""
        if self._seeded or self.ops_applied:
            raise PtebenchError("set_free_blocks() seeds a fresh allocator only")
        st = self.state
        pbmt = st["pbmt"]
        if isinstance(migratetypes, dict):
            for pb, mt in migratetypes.items():
                if not 0 <= int(pb) < len(pbmt):
                    raise PtebenchError(f"pageblock {pb} outside 0..{len(pbmt) - 1}")
                pbmt[int(pb)] = int(mt)
        else:
            arr = np.asarray(migratetypes)
            if arr.ndim and arr.shape != pbmt.shape:
                raise PtebenchError(f"migratetypes: {arr.shape[0]} values for {len(pbmt)} pageblocks")
            pbmt[:] = arr
        if ((pbmt < 0) | (pbmt >= NMT)).any():
            raise PtebenchError("pageblock migratetypes must be 0..3")
        zi = st["zi"]
        pst = st["pst"]
        for z in range(len(self.names)):
            s, e = int(zi[z, Z_START]), int(zi[z, Z_END])
            movable = np.repeat(pbmt == MT_MOVABLE, PAGEBLOCK_PAGES)[s:e]
            pst[s:e] = np.where(movable, PS_MOVABLE, PS_USED)
            zi[z, Z_HIGHATOMIC] = PAGEBLOCK_PAGES * int(np.count_nonzero(
                pbmt[s >> PAGEBLOCK_ORDER:((e - 1) >> PAGEBLOCK_ORDER) + 1] == MT_HIGHATOMIC))
        for a, b in absent:
            pst[int(a):int(b)] = PS_NONE
        arr = np.asarray(blocks, dtype=np.int64).reshape(-1, 2)
        bad = free_blocks(*self._free_args(), arr[:, 0].copy(), arr[:, 1].copy(), F_TO_TAIL | F_BYPASS_PCP)
        if bad >= 0:
            pfn, order = (int(v) for v in arr[bad])
            raise PtebenchError(f"free block ({pfn}, order {order}) is not inside one zone, aligned, "
                                "and not already free or absent")
        st["ctr"][:] = 0
        zi[:, Z_PGFREE] = 0
        self._seeded = True

    def set_pcp_blocks(self, blocks: Sequence[tuple[int, int, int, int]]) -> int:
        """Seed the per-CPU lists after :meth:`set_free_blocks`: each ``(cpu, pfn, order, mt)``, an
        allocated block, goes to the tail of ``pcp->lists[order_to_pindex(mt, order)]`` of its zone
        on ``cpu`` (so the first block given is the list head, the next one ``__rmqueue_pcplist()``
        hands out), with ``set_pcppage_migratetype(mt)``; ``NR_FREE_PAGES`` does not count pcp
        pages (``rmqueue_bulk()`` took them off it).  A block that would lift ``pcp->count`` above
        ``pcp->high`` is left allocated (the kernel would have drained it, ``free_unref_page_commit()``):
        returns how many were left so."""
        if not self._seeded or self.ops_applied:
            raise PtebenchError("set_pcp_blocks() follows set_free_blocks() on a fresh allocator")
        st = self.state
        zi, pst, pcp, lk = st["zi"], st["pst"], st["pcp"], st["lk"]
        npfn, nb, nz = int(st["cfg"][CF_NPFN]), int(st["cfg"][CF_NB]), len(self.names)
        thp = int(st["cfg"][CF_THP])
        ncpus = self.ncpus
        # plain Python per block (thousands of them): the jitted helpers' pure forms, the zones as int bounds
        pcp_allowed, order_to_pindex, list_add_tail = (getattr(f, "py_func", f) for f in (
            _pcp_allowed, _order_to_pindex, _list_add_tail))
        bounds = [(int(zi[z, Z_START]), int(zi[z, Z_END])) for z in range(zi.shape[0])]
        high = [int(zi[z, Z_HIGH]) for z in range(zi.shape[0])]
        count = [int(c) for c in pcp[:, P_COUNT]]
        dropped = 0
        for cpu, pfn, order, mt in blocks:
            cpu, pfn, order, mt = int(cpu), int(pfn), int(order), int(mt)
            if not 0 <= cpu < ncpus:
                self._check_cpu(cpu)
            if not (pcp_allowed(order, thp) and 0 <= mt < MIGRATE_PCPTYPES):
                raise PtebenchError(f"pcp block ({pfn}, order {order}, migratetype {mt}): not a pcp order/type")
            z = next((k for k, (zs, ze) in enumerate(bounds) if zs <= pfn < ze), -1)  # _zone_of()
            n = 1 << order
            if z < 0 or pfn % n or pfn + n > bounds[z][1]:
                raise PtebenchError(f"pcp block ({pfn}, order {order}) is not an aligned, allocated block of one zone")
            if n == 1:
                allocated = int(pst[pfn]) in (PS_USED, PS_MOVABLE)
            else:
                s = pst[pfn:pfn + n]
                allocated = bool(((s == PS_USED) | (s == PS_MOVABLE)).all())
            if not allocated:
                raise PtebenchError(f"pcp block ({pfn}, order {order}) is not an aligned, allocated block of one zone")
            pc = cpu * nz + z
            if count[pc] + n > high[z]:
                dropped += 1
                continue
            pst[pfn:pfn + n] = PS_NONE
            pst[pfn] = PS_PCP + mt
            list_add_tail(lk, pfn, npfn + nb + pc * NR_PCP_LISTS + order_to_pindex(mt, order))
            count[pc] += n
            pcp[pc, P_COUNT] = count[pc]
        return dropped

    # ------------------------------------------------------------------ operations
    def _args(self) -> list[np.ndarray]:
        return [self.state[k] for k in STATE_ORDER]

    def _free_args(self) -> list[np.ndarray]:
        return [self.state[k] for k in FREE_ORDER]

    def alloc(self, order: int, gfp: int = GFP_KERNEL, cpu: int = 0, *, req: int | None = None) -> int:
        """Allocate a block of ``order`` for ``gfp`` on ``cpu``: its pfn, or -1."""
        self._check_cpu(cpu)
        word = request(gfp, order) if req is None else int(req)
        if not 0 <= order < MAX_ORDER:
            raise PtebenchError(f"order {order} outside 0..{MAX_ORDER - 1}")
        self._grow_log()
        pfn = int(alloc_one(*self._args(), order, word, cpu, self.ops_applied))
        self.ops_applied += 1
        return pfn

    def free(self, pfn: int, order: int, cpu: int = 0, *, to_tail: bool = False, bypass_pcp: bool = False) -> None:
        """Free an allocated block; raises when it is not one (the state is then unchanged)."""
        self._check_cpu(cpu)
        flags = (F_TO_TAIL if to_tail else 0) | (F_BYPASS_PCP if bypass_pcp else 0)
        ok = free_one(*self._free_args(), int(pfn), int(order), cpu, flags)
        self.ops_applied += 1
        if not ok:
            raise PtebenchError(f"free of pfn {pfn} order {order}: not an allocated block inside one zone")

    def drain_all(self) -> None:
        """drain_all_pages(NULL)."""
        drain_all_pages(*self._free_args())

    def run(self, kind: np.ndarray, order: np.ndarray, req: np.ndarray, cpu: np.ndarray, pfn: np.ndarray) -> np.ndarray:
        """Apply a batch of ops (see :func:`run_ops`); returns ``out``."""
        n = len(kind)
        arrs = [np.ascontiguousarray(a, dtype=np.int64) for a in (kind, order, req, cpu, pfn)]
        if any(len(a) != n for a in arrs):
            raise PtebenchError("op arrays must have the same length")
        if n and (arrs[3].min() < 0 or arrs[3].max() >= self.ncpus):
            raise PtebenchError(f"op cpu outside 0..{self.ncpus - 1}")
        if n and (arrs[1].min() < 0 or arrs[1].max() >= MAX_ORDER):
            raise PtebenchError(f"op order outside 0..{MAX_ORDER - 1}")
        out = np.full(n, -1, np.int64)
        first = int(self.state["log_n"][0])
        i = 0
        while i < n:
            self._grow_log()
            i = int(run_ops(*self._args(), *arrs, out, i, self._log_reserve()))
        log = self.state["log"]
        log[first:int(self.state["log_n"][0]), L_OP] += self.ops_applied  # batch-local -> global op index
        self.ops_applied += n
        return out

    def _check_cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.ncpus:
            raise PtebenchError(f"cpu {cpu} outside 0..{self.ncpus - 1}")

    def _log_reserve(self) -> int:
        return int(self.state["zi"][:, Z_BATCH].max()) + 64

    def _grow_log(self) -> None:
        st = self.state
        need = self._log_reserve()
        if len(st["log"]) - int(st["log_n"][0]) >= need:
            return
        grown = np.zeros((max(2 * len(st["log"]), int(st["log_n"][0]) + 2 * need), NLOG), np.int64)
        grown[: len(st["log"])] = st["log"]
        st["log"] = grown

    # ------------------------------------------------------------------ views
    @property
    def ncpus(self) -> int:
        return int(self.state["cfg"][CF_NCPU])

    @property
    def counters(self) -> dict[str, int]:
        c = self.state["ctr"]
        return {name: int(c[i]) for i, name in enumerate(COUNTER_NAMES)}

    def buddyinfo(self) -> dict[str, list[int]]:
        """/proc/buddyinfo: free blocks per order and zone (pcp pages are not counted)."""
        zi = self.state["zi"]
        return {name: [int(v) for v in zi[z, Z_NRFREE:Z_NRFREE + MAX_ORDER]] for z, name in enumerate(self.names)}

    def zone_info(self) -> dict[str, dict[str, Any]]:
        """Per zone: span, managed, watermarks, lowmem_reserve, pcp batch/high, free pages, reserves, PGALLOC/PGFREE."""
        zi = self.state["zi"]
        out = {}
        for z, name in enumerate(self.names):
            r = zi[z]
            out[name] = {
                "start_pfn": int(r[Z_START]), "end_pfn": int(r[Z_END]), "nid": int(r[Z_NID]),
                "managed": int(r[Z_MANAGED]), "min": int(r[Z_WMIN]), "low": int(r[Z_WLOW]), "high": int(r[Z_WHIGH]),
                "lowmem_reserve": [int(v) for v in r[Z_LOWMEM:Z_LOWMEM + 3]], "pcp_batch": int(r[Z_BATCH]),
                "pcp_high": int(r[Z_HIGH]), "nr_free_pages": int(r[Z_FREE]),
                "nr_reserved_highatomic": int(r[Z_HIGHATOMIC]), "pgalloc": int(r[Z_PGALLOC]),
                "pgfree": int(r[Z_PGFREE]),
            }
        return out

    def extfrag_events(self) -> np.ndarray:
        """The mm_page_alloc_extfrag log: rows of (op, pfn, alloc_order, fallback_order, alloc_mt,
        fallback_mt, change_ownership)."""
        return self.state["log"][: int(self.state["log_n"][0])].copy()

    def _walk(self, head: int) -> list[int]:
        lk = self.state["lk"]
        out = []
        p = int(lk[2 * head])
        while p != head:
            out.append(p)
            p = int(lk[2 * p])
            if len(out) > len(lk):
                raise AssertionError(f"list at {head} does not return to its head")
        return out

    def free_lists(self) -> dict[tuple[str, int, int], list[int]]:
        """Non-empty buddy free lists: (zone, order, migratetype) -> pfns from head to tail."""
        npfn = int(self.state["cfg"][CF_NPFN])
        out = {}
        for z, name in enumerate(self.names):
            for o in range(MAX_ORDER):
                for mt in range(NMT):
                    pfns = self._walk(npfn + (z * MAX_ORDER + o) * NMT + mt)
                    if pfns:
                        out[(name, o, mt)] = pfns
        return out

    def pcp_lists(self) -> dict[tuple[int, str, int], list[tuple[int, int]]]:
        """Non-empty pcp lists: (cpu, zone, pindex) -> (pfn, pcppage migratetype) from head to tail."""
        st = self.state
        npfn, nb, nz = int(st["cfg"][CF_NPFN]), int(st["cfg"][CF_NB]), len(self.names)
        out = {}
        for cpu in range(self.ncpus):
            for z, name in enumerate(self.names):
                for pi in range(NR_PCP_LISTS):
                    pfns = self._walk(npfn + nb + (cpu * nz + z) * NR_PCP_LISTS + pi)
                    if pfns:
                        out[(cpu, name, pi)] = [(p, int(st["pst"][p]) - PS_PCP) for p in pfns]
        return out

    def snapshot(self) -> dict[str, Any]:
        """The whole state in plain Python form (the same form as ``RefBuddy.snapshot()``)."""
        st = self.state
        nz = len(self.names)
        pst = st["pst"]
        nzu = np.flatnonzero((pst == PS_USED) | (pst == PS_MOVABLE))
        return {
            "free": self.free_lists(),
            "pcp": self.pcp_lists(),
            "pcp_state": {(cpu, name): (int(st["pcp"][cpu * nz + z, P_COUNT]), int(st["pcp"][cpu * nz + z,
                                                                                                 P_FREE_FACTOR]))
                          for cpu in range(self.ncpus) for z, name in enumerate(self.names)},
            "pageblocks": [int(v) for v in st["pbmt"]],
            "used": dict(zip(nzu.tolist(), pst[nzu].tolist(), strict=True)),
            "zones": {name: (int(st["zi"][z, Z_FREE]), int(st["zi"][z, Z_HIGHATOMIC]), int(st["zi"][z, Z_PGALLOC]),
                             int(st["zi"][z, Z_PGFREE])) for z, name in enumerate(self.names)},
            "buddyinfo": self.buddyinfo(),
            "counters": self.counters,
            "extfrag": [tuple(int(x) for x in row) for row in self.extfrag_events()],
        }

    # ------------------------------------------------------------------ invariants
    def check(self) -> None:
        """Assert the invariants: lists well formed, pages conserved, no overlap, free blocks aligned
        and fully merged, counters consistent, pageblock ownership consistent, pcp counts bounded."""
        st = self.state
        npfn = int(st["cfg"][CF_NPFN])
        nz = len(self.names)
        zi, pst, pbmt = st["zi"], st["pst"], st["pbmt"]
        valid = (pst == PS_NONE) | (pst == PS_USED) | (pst == PS_MOVABLE) | ((pst >= PS_BUDDY) & (
            pst < PS_BUDDY + MAX_ORDER)) | ((pst >= PS_PCP) & (pst < PS_PCP + NMT))
        assert valid.all(), f"pfns with an unknown state: {np.flatnonzero(~valid)[:10]}"
        cover = np.zeros(npfn, np.int64)
        heads = np.zeros(npfn, np.int64)
        in_zone = np.zeros(npfn, bool)
        for z in range(nz):
            in_zone[int(zi[z, Z_START]):int(zi[z, Z_END])] = True
        fl = self.free_lists()
        ever_highatomic = bool(st["ctr"][C_HIGHATOMIC_RESERVE]) or bool((pbmt == MT_HIGHATOMIC).any())
        for z, name in enumerate(self.names):
            s, e = int(zi[z, Z_START]), int(zi[z, Z_END])
            free_pages = 0
            for o in range(MAX_ORDER):
                nr = 0
                for mt in range(NMT):
                    for p in fl.get((name, o, mt), []):
                        assert s <= p and p + (1 << o) <= e, f"free block {p}/{o} outside zone {name}"
                        assert p % (1 << o) == 0, f"free block {p}/{o} misaligned"
                        assert pst[p] == PS_BUDDY + o, f"free block {p} on an order-{o} list has state {pst[p]}"
                        heads[p] += 1
                        cover[p:p + (1 << o)] += 1
                        nr += 1
                        free_pages += 1 << o
                        # fully merged: below pageblock order always; above it the kernel keeps
                        # highatomic blocks apart and never re-merges once they are given back
                        if o < MAX_ORDER - 1 and (o < PAGEBLOCK_ORDER or not ever_highatomic):
                            b = p ^ (1 << o)
                            assert not (s <= b < e and pst[b] == PS_BUDDY + o), f"free buddies {p}, {b} of order {o}"
                assert zi[z, Z_NRFREE + o] == nr, f"zone {name} order {o}: nr_free {zi[z, Z_NRFREE + o]} != {nr}"
            assert zi[z, Z_FREE] == free_pages, f"zone {name}: NR_FREE_PAGES {zi[z, Z_FREE]} != {free_pages}"
            # reserve_highatomic_pageblock() stops at 1% + one pageblock, in whole pageblocks
            ha = int(zi[z, Z_HIGHATOMIC])
            assert ha % PAGEBLOCK_PAGES == 0 and 0 <= ha < zi[z, Z_MANAGED] // 100 + 2 * PAGEBLOCK_PAGES, \
                f"zone {name}: nr_reserved_highatomic {ha}"
            if not ever_highatomic:
                assert not (pbmt[s >> PAGEBLOCK_ORDER:((e - 1) >> PAGEBLOCK_ORDER) + 1] == MT_HIGHATOMIC).any() or ha
        is_buddy = (pst >= PS_BUDDY) & (pst < PS_PCP)
        assert int(np.count_nonzero(is_buddy)) == int(heads.sum()), "PageBuddy pfns not on any free list"
        assert ((pbmt >= 0) & (pbmt < NMT)).all()
        pl = self.pcp_lists()
        for (_cpu, name, pi), entries in pl.items():
            z = self.names.index(name)
            o = _pindex_to_order(pi)
            for p, mt in entries:
                assert zi[z, Z_START] <= p and p + (1 << o) <= zi[z, Z_END], f"pcp block {p} outside zone {name}"
                assert p % (1 << o) == 0
                assert 0 <= mt < NMT, f"pcp block {p} has state {pst[p]}"
                assert _order_to_pindex(mt if mt < MIGRATE_PCPTYPES else MT_MOVABLE, o) == pi, \
                    f"pcp block {p} (mt {mt}) on list {pi}"
                cover[p:p + (1 << o)] += 1
        assert int(np.count_nonzero(pst >= PS_PCP)) == sum(len(v) for v in pl.values()), "pcp heads off the lists"
        cover += (pst == PS_USED) | (pst == PS_MOVABLE)
        assert (cover[in_zone] <= 1).all(), "a page is in two places (free, pcp, allocated)"
        assert (cover[~in_zone] == 0).all(), "a page outside every zone is in use or free"
        # every zone page is free, on a pcp list, allocated, or an absent page that was never freed
        assert ((cover == 1) | ((cover == 0) & (pst == PS_NONE))).all()
        for cpu in range(self.ncpus):
            for z, name in enumerate(self.names):
                cnt, ff = st["pcp"][cpu * nz + z]
                pages = sum(1 << _pindex_to_order(pi) for (c, n, pi), v in pl.items() if c == cpu and n == name
                            for _ in v)
                assert cnt == pages, f"pcp count {cnt} != {pages} pages on the lists of cpu {cpu} zone {name}"
                assert 0 <= ff <= PCP_BATCH_SCALE_MAX
                batch, high = int(zi[z, Z_BATCH]), int(zi[z, Z_HIGH])
                bound = high + PAGEBLOCK_PAGES + sum(max(batch >> _pindex_to_order(pi), 2) << _pindex_to_order(pi)
                                                     for pi in range(NR_PCP_LISTS))
                assert cnt <= bound, f"pcp count {cnt} above high {high} + refills (cpu {cpu} zone {name})"
