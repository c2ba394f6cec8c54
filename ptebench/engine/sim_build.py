"""The ops of one chunk for simulate mode (``engine/simulate.py``), built in one jitted walk over its rows.

Per row, in order: the kprobe ops of the row (built beforehand, few), then, for

- an allocation (``mm_page_alloc`` not failed, with a pfn, not a page-table witness; or a
  ``mm_page_alloc_zone_locked`` the initial state found to be an unseen ``__alloc_pages_bulk()``
  allocation, with the gfp of its migratetype and no migratetype of its own): ``S_ALLOC`` with
  the request word of its (gfp, order) and the consumer's alloc action;
- a free (``mm_page_free`` / ``mm_page_free_batched``, not a batched duplicate, with a pfn, not a
  free the bulk allocator reused unseen): ``S_FREE`` with the action of the consumer its pairing found.

Reference: ``build_reference`` in ``tests/test_speed_kernels.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.engine.sim_kernel import S_ALLOC, S_FREE
from ptebench.engine.stream import K_ALLOC, K_FREE, K_FREE_BATCHED
from ptebench.sim.buddy import MAX_ORDER

#: the op columns, as ``simulate.Ops.FIELDS``
NCOL = 12


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
def build_ops(kind, failed, pfn, order, cpu, mt, gfp, cons_in, pair, cons, run, start, unseen, refreed, mt_gfp,
              is_witness, acts, ncons, req_keys, req_words, extra_row, extra, out, missing):
    """Fill ``out`` (NCOL x rows, ``Ops.FIELDS`` order) with the chunk's ops; ``unseen``/``refreed``: sorted
    chunk-local rows; ``extra``: the kprobe ops (NCOL x k) at their sorted rows ``extra_row``.  Returns the
    number of ops, or -(number of request keys missing from ``req_keys``), which are put in ``missing``."""
    n = kind.shape[0]
    ne = extra_row.shape[0]
    e = 0
    u = 0
    r = 0
    m = 0
    nmiss = 0
    have_last = False
    last_key = np.int64(0)
    last_at = np.int64(-1)
    for i in range(n):
        while e < ne and extra_row[e] <= i:
            for c in range(NCOL):
                out[c, m] = extra[c, e]
            m += 1
            e += 1
        k = kind[i]
        forced = False
        while u < unseen.shape[0] and unseen[u] < i:
            u += 1
        if u < unseen.shape[0] and unseen[u] == i:
            forced = True
        is_alloc = ((k == K_ALLOC and not failed[i] and pfn[i] >= 0) or forced) and not is_witness[cons_in[i]]
        is_free = False
        if not is_alloc and (k == K_FREE or k == K_FREE_BATCHED) and pair[i] != -2 and pfn[i] >= 0:
            is_free = True
            while r < refreed.shape[0] and refreed[r] < i:
                r += 1
            if r < refreed.shape[0] and refreed[r] == i:
                is_free = False
        if not (is_alloc or is_free):
            continue
        o = np.int64(order[i])
        if is_alloc:
            cid = np.int64(cons_in[i])
            a = cid % ncons
            g = np.int64(mt_gfp[min(max(np.int64(mt[i]), 0), 2)]) if forced else np.int64(gfp[i])
            key = g * MAX_ORDER + o
            if not have_last or key != last_key:  # runs of allocations share a (gfp, order): search once a run
                have_last = True
                last_key = key
                last_at = _find(req_keys, key)
            at = last_at
            if at >= 0:
                out[2, m] = req_words[at]
            else:
                missing[nmiss] = key
                nmiss += 1
                out[2, m] = 0
            out[0, m] = S_ALLOC
            out[5, m] = -1 if forced else mt[i]
        else:
            cid = np.int64(cons[i]) if pair[i] >= 0 else -1
            a = ncons + cid % ncons
            out[0, m] = S_FREE
            out[2, m] = 0
            out[5, m] = -1
        out[1, m] = o
        out[3, m] = cpu[i]
        out[4, m] = pfn[i]
        out[6, m] = acts[a, 0]
        out[7, m] = acts[a, 1]
        out[8, m] = acts[a, 2] | run[i]
        out[9, m] = (np.int64(1) << o) if acts[a, 3] > 0 else 0
        out[10, m] = cid
        out[11, m] = start + i
        m += 1
    while e < ne:
        for c in range(NCOL):
            out[c, m] = extra[c, e]
        m += 1
        e += 1
    return -nmiss if nmiss else m
