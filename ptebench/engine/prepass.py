"""The pass over the trace before the replay: kprobe area binding, the vmemmap check, and (simulate mode)
the buddy's initial-state scan (``sim/buddy_init.py``) sharing the same read of the Parquet."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from ptebench.engine import addresses as A
from ptebench.engine.areas import bind_areas, resolve_call
from ptebench.engine.stream import K_ALLOC, K_CPA, K_DM_INVALID, KprobeRows, iter_chunks

VFREE_FRAMES = ("vm_reset_perms", "__vunmap", "vfree")
COLUMNS = ["event", "pid", "pfn", "order", "failed", "fields", "stack_id"]


class LastAlloc:
    """Per pid, the pfn of its latest ``mm_page_alloc`` (failed ones included, -1 for none), carried across
    chunks so that the answer does not depend on where they are cut."""

    def __init__(self) -> None:
        self.pfn = np.full(1, -1, dtype=np.int64)  # by pid + 1 (pid -1: no pid)

    def feed(self, kind: np.ndarray, pid: np.ndarray, pfn: np.ndarray, at: np.ndarray) -> np.ndarray:
        """The latest allocation's pfn by the same pid up to each row of ``at`` (sorted), after the chunk's
        allocations before it; the carry then holds the chunk's latest ones."""
        if len(pid):
            lo, hi = int(pid.min()), int(pid.max())
            if lo < -1:
                raise ValueError(f"pid {lo} in the trace")
            if hi + 2 > len(self.pfn):
                grown = np.full(max(hi + 2, 2 * len(self.pfn)), -1, dtype=np.int64)
                grown[: len(self.pfn)] = self.pfn
                self.pfn = grown
        out = np.empty(len(at), dtype=np.int64)
        _last_alloc(kind, pid, pfn, at, self.pfn, out)
        return out


@njit(cache=True, _nrt=False)
def _last_alloc(kind, pid, pfn, at, carry, out):
    """:class:`LastAlloc` over one chunk (reference: ``last_alloc_reference`` in the tests)."""
    q = 0
    for i in range(kind.shape[0]):
        if kind[i] == K_ALLOC:
            carry[pid[i] + 1] = pfn[i]
        if q < at.shape[0] and at[q] == i:
            out[q] = carry[pid[i] + 1]
            q += 1


def vmemmap_agree(page: np.ndarray, pfn: np.ndarray, base: int) -> int:
    """How many ``page - STRUCT_PAGE * pfn == base`` (as integers: uint64 pages, pfns >= 0)."""
    limit = ((1 << 64) - 1 - base) // A.STRUCT_PAGE  # beyond it, base + STRUCT_PAGE * pfn is no uint64
    ok = pfn <= limit
    want = np.uint64(base) + pfn[ok].astype(np.uint64) * np.uint64(A.STRUCT_PAGE)
    return int(np.count_nonzero(page[ok] == want))


def prepass(trace, amap: A.AddressMap, rows: int, scan: Any = None,
            kprobes: KprobeRows | None = None, store: Any = None) -> tuple[Any, dict[str, Any]]:
    """One pass over the kprobe events: module/vmalloc area binding and the vmemmap base check.

    ``scan``: another consumer of the same chunks (``FirstEventScan``, with its ``COLUMNS``), fed first;
    ``kprobes`` collects the parsed kprobe rows for the replay's pass; ``store`` (``engine/store.py``) keeps
    the chunks' narrow columns for it, so that it need not decode the file again."""
    idx = trace.stack_index
    vfree_stacks = set()
    for f in VFREE_FRAMES:
        vfree_stacks.update(idx.with_frame(f).tolist())
    vfree = np.array(sorted(vfree_stacks), dtype=np.int64)
    calls: list[tuple[int, int, int, int]] = []
    call_args: dict[int, tuple[int, int]] = {}
    runs: list[tuple[int, list[int]]] = []
    open_run: dict[int, tuple[int, list[int]]] = {}
    agree = 0
    last = LastAlloc()
    columns = list(COLUMNS)
    for extra in (scan, store):
        if extra is not None:
            columns += [c for c in extra.COLUMNS if c not in columns]
    base = amap.vmemmap_base
    for ch in iter_chunks(trace, rows, columns=columns, reuse=True, store=store):
        if scan is not None:
            scan.feed(ch)
        if kprobes is not None:
            kprobes.add(ch)
        if store is not None:
            store.add(ch)
        probe = np.flatnonzero(ch.kind >= K_DM_INVALID)
        last_alloc = last.feed(ch.kind, ch.pid, ch.pfn, probe)
        if not len(probe):
            continue
        kind, page, pid = ch.kind[probe], ch.page[probe], ch.pid[probe]
        # the vmemmap base check: a set_direct_map_invalid_noflush() page against the pid's latest allocation
        inv = kind == K_DM_INVALID
        m = inv & (last_alloc >= 0)
        agree += vmemmap_agree(page[m], last_alloc[m], base)
        pfns = amap.page_pfns(page)
        if store is not None:
            store.admit_pfns(pfns)  # the replay's engine writes them into the stored pfn column
        # the walk below: vfree runs of direct-map kprobes, module CPA calls, and the rows that end a run
        vf = inv & np.isin(ch.stack[probe], vfree) & (pfns >= 0)
        keep = vf | (kind == K_CPA) | np.isin(pid, np.array(list(open_run) + pid[vf].tolist(), np.int64))
        probe, kind, pid, pfns = probe[keep], kind[keep].tolist(), pid[keep].tolist(), pfns[keep].tolist()
        vf = vf[keep].tolist()
        addrs = ch.addr[probe]
        in_module = (amap.classify_many(addrs) == A.WHERE.index(A.MODULE)).tolist()
        addrs = addrs.tolist()
        npages = ch.npages[probe].tolist()
        for k, j in enumerate(probe.tolist()):
            g, p = ch.start + j, pid[k]
            if vf[k]:
                if p not in open_run:
                    open_run[p] = (g, [])
                    runs.append(open_run[p])
                open_run[p][1].append(pfns[k])
                continue
            open_run.pop(p, None)
            if kind[k] == K_CPA and in_module[k]:
                calls.append((g, p, addrs[k], npages[k]))
                call_args[g] = (addrs[k], npages[k])
    binding = bind_areas(calls, [(g, np.array(p)) for g, p in runs])
    resolve_call(binding, call_args)
    return binding, {"vmemmap_base": hex(amap.vmemmap_base), "vmemmap_from": amap.vmemmap_from,
                     "vmemmap_pairs_agreeing": agree, **binding.stats}
