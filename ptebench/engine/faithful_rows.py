"""The faithful engine's per-row selections of one chunk, in one jitted pass (``engine/faithful.py``): the
events whose consumer acts on the direct map (an allocation's or a free's CPA call), the allocations each
consumer made, and the rows of the witness walk (witnesses and CPA calls).  Kept apart from
``engine/faithful.py`` so that editing that file does not invalidate numba's cache of this one.

Reference: ``chunk_rows_reference`` in ``tests/test_speed_kernels.py`` (the numpy masks the engine used).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.engine.stream import K_ALLOC, K_CPA, K_DM_DEFAULT, K_DM_INVALID, K_FREE, K_FREE_BATCHED


@njit(cache=True, _nrt=False)
def classify_rows(kind, stack, stack_cons, cons_in, nostack, dm, cpa):
    """The consumer of each row by its stack (``cons_in[i] = stack_cons[stack[i]]``, a negative stack id
    counted from the table's end as numpy does: -1, no stack, is the table's last entry), and, in row order,
    the allocations without a stack (``nostack``), the direct-map kprobes (``dm``) and the set_memory_*
    kprobes (``cpa``); returns how many of each.  Reference: the numpy masks in ``classify_rows_reference``
    (``tests/test_speed_kernels.py``)."""
    nn = 0
    nd = 0
    nc = 0
    ns = stack_cons.shape[0]
    for i in range(kind.shape[0]):
        s = np.int64(stack[i])
        cons_in[i] = stack_cons[s if s >= 0 else s + ns]
        k = kind[i]
        if k == K_ALLOC:
            if s < 0:
                nostack[nn] = i
                nn += 1
        elif k == K_DM_INVALID or k == K_DM_DEFAULT:
            dm[nd] = i
            nd += 1
        elif k == K_CPA:
            cpa[nc] = i
            nc += 1
    return nn, nd, nc


@njit(cache=True, _nrt=False)
def chunk_rows(kind, failed, pfn, cons_in, cons, pair, has_a, has_f, is_witness, use_kprobes, consumer_allocs,
               sel, sel_alloc, walk, walk_call):
    """One pass over a chunk's rows (``cons_in``: the consumer of each allocation by its stack; ``cons``/``pair``:
    the pairing's; ``has_a``/``has_f``: per consumer, whether it acts on allocation / on free; ``is_witness``
    per consumer id, its last entry for id -1).  Fills, in row order:

    - ``sel``/``sel_alloc``: the rows of consumer CPA calls: a successful allocation (not failed, with a pfn)
      whose consumer acts on allocation (True), or a paired free whose consumer acts on free (False);
    - ``consumer_allocs``: successful allocations counted per consumer (``cons_in`` modulo their number);
    - ``walk``/``walk_call``: the witness walk's rows: an allocation (not failed) by a witness consumer, and
      the calls (True): with kprobes, every direct-map and set_memory_* kprobe; an allocation (not failed)
      whose consumer acts on allocation.

    Returns (rows in ``sel``, rows in ``walk``)."""
    ncons = consumer_allocs.shape[0]
    nwit = is_witness.shape[0]
    ns = 0
    nw = 0
    for i in range(kind.shape[0]):
        k = kind[i]
        ci = np.int64(cons_in[i])
        alloc = k == K_ALLOC and not failed[i]
        if alloc and pfn[i] >= 0:
            consumer_allocs[ci if ci >= 0 else ci + ncons] += 1  # ci % ncons (ci >= -1) without a division
            c = np.int64(cons[i])
            if c >= 0 and has_a[c]:
                sel[ns] = i
                sel_alloc[ns] = True
                ns += 1
        elif k == K_FREE or k == K_FREE_BATCHED:
            c = np.int64(cons[i])
            if pair[i] >= 0 and c >= 0 and has_f[c]:
                sel[ns] = i
                sel_alloc[ns] = False
                ns += 1
        witness = alloc and is_witness[ci if ci >= 0 else nwit + ci]
        call = alloc and ci >= 0 and has_a[ci]
        if use_kprobes and (k == K_DM_INVALID or k == K_DM_DEFAULT or k == K_CPA):
            call = True
        if witness or call:
            walk[nw] = i
            walk_call[nw] = call
            nw += 1
    return ns, nw
