"""A typed, validating wrapper around the jitted direct-map model (``directmap.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ptebench.errors import PtebenchError
from ptebench.sim import directmap as D

LEVEL_PFNS = {"4K": 1, "2M": D.PTRS, "1G": D.PTRS * D.PTRS}


def attr_of(run: dict[str, Any]) -> int:
    """Attribute byte of a dump run (present, RW, NX, global)."""
    return ((D.ATTR_P if run["present"] else 0) | (D.ATTR_RW if run["rw"] else 0)
            | (D.ATTR_NX if run["nx"] else 0) | (D.ATTR_GLB if run["global"] else 0))


@dataclass
class Ops:
    """A batch of CPA calls as flat arrays (one row per ``change_page_attr_set_clr()``)."""

    pfn: np.ndarray
    npages: np.ndarray
    set_mask: np.ndarray
    clr_mask: np.ndarray
    flags: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, int, int]]) -> Ops:
        a = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return cls(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].astype(np.uint8), a[:, 3].astype(np.uint8),
                   a[:, 4].astype(np.int64))

    def __len__(self) -> int:
        return len(self.pfn)


class DirectMap:
    """The direct map of one machine: state arrays, kernel-named counters and a split/collapse log.

    ``kernel`` selects version-dependent rules: collapse (``CPA_COLLAPSE``) and
    ``_PAGE_KERNEL_4K`` exist only from Linux 6.15 on; with an older kernel those op
    flags are ignored, as the kernel of that version has no such code.
    """

    def __init__(self, npfn: int, *, kernel: tuple[int, int] = (6, 1), gbpages: bool = True) -> None:
        if npfn <= 0:
            raise PtebenchError(f"direct map needs a positive number of pfns, got {npfn}")
        self.state = D.new_state(npfn)
        self.kernel = kernel
        self.gbpages = gbpages
        self.log = np.zeros((1024, D.NLOG), dtype=np.int64)
        self.log_n = np.zeros(1, dtype=np.int64)
        self.ops_applied = 0

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dump(cls, dump: dict[str, Any], **kw: Any) -> DirectMap:
        """The layout of a direct-map dump (``bundle.parse_direct_map_dump``): every run, its level and flags."""
        runs = dump["runs"]
        npfn = max(r["phys_end"] for r in runs) >> 12
        dm = cls(npfn, **kw)
        st = dm.state
        for r in runs:
            a, b = r["phys_start"] >> 12, r["phys_end"] >> 12
            level = r["level"]
            if level == "none":
                continue
            attr = attr_of(r)
            if level == "1G":
                st["pud"][a >> 18 : b >> 18] = D.LEAF
                st["attr1g"][a >> 18 : b >> 18] = attr
                continue
            st["pud"][a >> 18 : ((b - 1) >> 18) + 1] = D.TABLE
            if level == "2M":
                st["pmd"][a >> 9 : b >> 9] = D.LEAF
                st["attr2m"][a >> 9 : b >> 9] = attr
            else:
                st["pmd"][a >> 9 : ((b - 1) >> 9) + 1] = D.TABLE
                st["attr4k"][a:b] = attr
        dm._recount()
        want = dump["totals_kB"]
        if dm.direct_map_kb() != {k: want[k] for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G")}:
            raise PtebenchError(f"direct-map dump totals {want} disagree with its runs {dm.direct_map_kb()}")
        return dm

    def _recount(self) -> None:
        st = self.state
        pud, pmd = st["pud"], st["pmd"]
        table = np.repeat(pud == D.TABLE, D.PTRS)
        st["ctr"][D.C_COUNT_1G] = int(np.count_nonzero(pud == D.LEAF))
        st["ctr"][D.C_COUNT_2M] = int(np.count_nonzero(table & (pmd == D.LEAF)))
        pte_tables = np.repeat(table & (pmd == D.TABLE), D.PTRS)
        # zero (pte_none) entries in a PTE table are not mappings: phys_pte_init() does not count them
        st["ctr"][D.C_COUNT_4K] = int(np.count_nonzero(pte_tables & (st["attr4k"] != 0)))

    def set_vmstat(self, vmstat: dict[str, int]) -> None:
        """Start the event counters from a vmstat snapshot (the kernel's counts before the trace)."""
        ctr = self.state["ctr"]
        for key, idx in (("direct_map_level2_splits", D.C_L2_SPLITS), ("direct_map_level3_splits", D.C_L3_SPLITS),
                         ("direct_map_level2_collapses", D.C_L2_COLLAPSES),
                         ("direct_map_level3_collapses", D.C_L3_COLLAPSES)):
            ctr[idx] = int(vmstat.get(key, 0))

    # ---------------------------------------------------------------- operations
    def apply(self, ops: Ops) -> None:
        """Apply a batch of CPA calls in order."""
        flags = ops.flags
        if self.kernel < (6, 15):
            flags = flags & ~np.int64(D.F_COLLAPSE | D.F_KERNEL_4K)
        st = self.state
        first_log = int(self.log_n[0])
        i = 0
        while i < len(ops):
            i = D.apply_ops(st["pud"], st["pmd"], st["attr1g"], st["attr2m"], st["attr4k"], st["kernel4k"],
                            st["ctr"], self.log, self.log_n, ops.pfn, ops.npages, ops.set_mask, ops.clr_mask,
                            flags, i, self.gbpages)
            if i < len(ops):
                need = int(D.max_log_entries(int(ops.npages[i])))
                grown = np.zeros((max(2 * len(self.log), len(self.log) + need), D.NLOG), dtype=np.int64)
                grown[: len(self.log)] = self.log
                self.log = grown
        self.log[first_log : int(self.log_n[0]), D.L_OP] += self.ops_applied  # batch-local -> global op index
        self.ops_applied += len(ops)

    # ---------------------------------------------------------------- views
    @property
    def counters(self) -> dict[str, int]:
        ctr = self.state["ctr"]
        names = {
            "direct_map_level2_splits": D.C_L2_SPLITS, "direct_map_level3_splits": D.C_L3_SPLITS,
            "direct_map_level2_collapses": D.C_L2_COLLAPSES, "direct_map_level3_collapses": D.C_L3_COLLAPSES,
            "flush_tlb_all": D.C_FLUSH_ALL, "flush_tlb_pages": D.C_FLUSH_PAGES,
            "pt_pages_alloc": D.C_PT_ALLOC, "pt_pages_free": D.C_PT_FREE, "cpa_calls": D.C_CPA_CALLS,
            "splits_all": D.C_SPLITS_ALL, "unmapped_pages": D.C_UNMAPPED,
        }
        out = {k: int(ctr[v]) for k, v in names.items()}
        out.update(self.direct_map_kb())
        return out

    def direct_map_kb(self) -> dict[str, int]:
        """``arch_report_meminfo()``: DirectMap4k/2M/1G in kB."""
        ctr = self.state["ctr"]
        return {"DirectMap4k": int(ctr[D.C_COUNT_4K]) << 2, "DirectMap2M": int(ctr[D.C_COUNT_2M]) << 11,
                "DirectMap1G": int(ctr[D.C_COUNT_1G]) << 20}

    def regions_on_4k(self) -> list[int]:
        """Indices (pfn >> 9) of the 2M regions mapped by a PTE table."""
        table = np.repeat(self.state["pud"] == D.TABLE, D.PTRS)
        return np.flatnonzero(table & (self.state["pmd"] == D.TABLE)).tolist()

    def events(self) -> np.ndarray:
        """The split/collapse log: rows of (op, pfn, level, kind 0=split 1=collapse)."""
        return self.log[: int(self.log_n[0])].copy()

    @classmethod
    def from_memmap(cls, memmap: list[dict[str, Any]], **kw: Any) -> DirectMap:
        """The layout boot builds from a memory map (delegates to ``layout.layout_from_memmap``)."""
        from ptebench.sim.layout import layout_from_memmap

        return layout_from_memmap(memmap, **kw)
