"""Which physical pages back a module/vmalloc address named by a ``set_memory_*`` kprobe.

``set_memory_ro(addr, n)`` on a module address changes the module's 4K PTEs and, through
``cpa_process_alias()`` (arch/x86/mm/pat/set_memory.c), the direct-map alias of each
backing page: that alias change is what splits the direct map.  The backing pages come
from ``vm_area_alloc_pages()``'s bulk allocator, which has no tracepoint, so the trace
never shows them being allocated.  They are revealed when the area is freed:
``vfree()`` of a ``VM_FLUSH_RESET_PERMS`` area runs ``vm_reset_perms()``, which calls
``set_direct_map_invalid_noflush()`` on every page of ``area->pages`` *in order*, then
``set_direct_map_default_noflush()`` on each (mm/vmalloc.c, 6.1).

So a pre-pass over the (few) kprobe events binds addresses to pages:

1. Areas are built from the ``set_memory_*`` calls on module/vmalloc space: ranges that
   overlap or touch belong to one area.  Distinct vmalloc areas never touch, because each
   has a guard page after it (``__get_vm_area_node`` without ``VM_NO_GUARD``).  A module's
   core and init layouts are two areas (``module_alloc()`` twice).
2. A run of ``dm_invalid`` events from one ``vm_reset_perms()`` (same pid, consecutive in
   that pid's events, stacks under ``__vunmap``/``vfree``) frees one area.  It is bound to the
   live area whose extent fits (area pages <= run length), preferring an exact size match,
   then the most recently created area (``do_free_init`` frees the init area of the module
   loaded last).  Ties are counted as ``ambiguous``.
3. An area never freed in the trace (a module loaded and never unloaded) stays
   unresolved: its calls cannot be placed (the engine reports their witnesses as
   ``witness_driven``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Area:
    base: int
    end: int
    created: int  # global index of the first call on it
    calls: list[int] = field(default_factory=list)
    pfns: np.ndarray | None = None
    freed_by: int | None = None  # global index of the first dm_invalid of its vfree

    @property
    def pages(self) -> int:
        return (self.end - self.base) >> 12


@dataclass
class AreaBinding:
    """Result of the pre-pass: pages of every resolved call, and what could not be bound."""

    call_pfns: dict[int, np.ndarray] = field(default_factory=dict)
    unresolved_calls: set[int] = field(default_factory=set)
    areas: list[Area] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {
        "areas": 0, "areas_resolved": 0, "areas_unresolved": 0, "ambiguous_bindings": 0,
        "vfree_runs": 0, "vfree_runs_unbound": 0})


def bind_areas(calls: list[tuple[int, int, int, int]], runs: list[tuple[int, np.ndarray]]) -> AreaBinding:
    """Bind module/vmalloc ``set_memory_*`` calls to backing pages.

    ``calls``: (global index, pid, addr, npages) of calls on module/vmalloc space, in order.
    ``runs``: (global index of its first event, pfns in order) of each ``vm_reset_perms`` run.
    """
    out = AreaBinding()
    live: list[Area] = []
    events = [(c[0], 0, c) for c in calls] + [(r[0], 1, r) for r in runs]
    events.sort(key=lambda e: (e[0], e[1]))
    for _, what, item in events:
        if what == 0:
            idx, _pid, addr, npages = item
            if npages <= 0:
                continue
            end = addr + (npages << 12)
            hits = [a for a in live if a.base <= end and addr <= a.end]
            if hits:
                area = hits[0]
                for other in hits[1:]:  # a call bridging two ranges: they were one area
                    area.base, area.end = min(area.base, other.base), max(area.end, other.end)
                    area.calls += other.calls
                    area.created = min(area.created, other.created)
                    live.remove(other)
                area.base, area.end = min(area.base, addr), max(area.end, end)
            else:
                area = Area(addr, end, idx)
                live.append(area)
                out.areas.append(area)
            area.calls.append(idx)
        else:
            first, pfns = item
            out.stats["vfree_runs"] += 1
            fits = [a for a in live if a.pages <= len(pfns)]
            exact = [a for a in fits if a.pages == len(pfns)]
            pool = exact or fits
            if not pool:
                out.stats["vfree_runs_unbound"] += 1
                continue
            best = max(pool, key=lambda a: a.created)
            if sum(1 for a in pool if a.pages == best.pages) > 1:
                out.stats["ambiguous_bindings"] += 1
            best.pfns = np.asarray(pfns, dtype=np.int64)
            best.freed_by = first
            live.remove(best)
    out.areas = [a for a in out.areas if a.calls]
    out.stats["areas"] = len(out.areas)
    for area in out.areas:
        if area.pfns is None:
            out.stats["areas_unresolved"] += 1
            out.unresolved_calls.update(area.calls)
        else:
            out.stats["areas_resolved"] += 1
    return out


def resolve_call(binding: AreaBinding, calls: dict[int, tuple[int, int]]) -> None:
    """Fill ``binding.call_pfns`` for every call (index -> (addr, npages)) on a resolved area."""
    for area in binding.areas:
        if area.pfns is None:
            continue
        for idx in area.calls:
            addr, npages = calls[idx]
            off = (addr - area.base) >> 12
            binding.call_pfns[idx] = area.pfns[off: off + npages]
