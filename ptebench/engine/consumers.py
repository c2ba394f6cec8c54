"""Consumers: who allocated a page, and what that consumer does to the direct map.

Rules live in a readable TOML file (``ptebench/consumers.toml`` by default, see its header);
users extend it or pass their own.  A rule matches an allocation's stack by frame symbols
(first rule wins); traces without stacks fall back to the rules' gfp patterns, with a
warning count, since gfp flags say far less than a stack.

Each consumer's direct-map changes are named by kernel API (``ACTIONS``), so a rule reads
like the kernel code it models.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ptebench.errors import PtebenchError
from ptebench.parse.gfp import GFP_NAMES
from ptebench.sim import directmap as D

#: kernel API -> (set mask, clear mask, op flags) of its change_page_attr_set_clr() call.
#: ``flush_tlb_kernel_range`` is not a CPA call: it turns the preceding change's noflush off
#: (the flush of the same range: per page up to tlb_single_page_flush_ceiling, else all).
ACTIONS: dict[str, tuple[int, int, int]] = {
    # arch/x86/mm/pat/set_memory.c __set_pages_np(): clear _PAGE_PRESENT | _PAGE_RW, no alias, no flush
    "set_direct_map_invalid_noflush": (0, D.ATTR_P | D.ATTR_RW, D.F_NOFLUSH),
    # __set_pages_p(): set _PAGE_PRESENT | _PAGE_RW, no alias, no flush
    "set_direct_map_default_noflush": (D.ATTR_P | D.ATTR_RW, 0, D.F_NOFLUSH),
    # set_memory_ro()/set_memory_rw()/set_memory_np() on a direct-map address: the primary is the direct map
    "set_memory_ro": (0, D.ATTR_RW, 0),
    "set_memory_rw": (D.ATTR_RW, 0, 0),
    "set_memory_np": (0, D.ATTR_P, 0),
    "set_memory_nx": (D.ATTR_NX, 0, 0),
    "set_memory_x": (0, D.ATTR_NX, 0),
    # set_memory_4k(): CPA_FORCE_SPLIT (+ _PAGE_KERNEL_4K from 6.15)
    "set_memory_4k": (0, 0, D.F_FORCE_SPLIT | D.F_KERNEL_4K),
    "flush_tlb_kernel_range": (0, 0, 0),
}

#: page-allocator entry points skipped to find an allocation's caller (mm/page_alloc.c, mm/mempolicy.c)
ALLOCATOR_FRAMES = frozenset({
    "__alloc_pages", "alloc_pages", "__alloc_pages_node", "alloc_pages_node", "__folio_alloc", "folio_alloc",
    "alloc_pages_vma", "vma_alloc_folio", "alloc_page_interleave", "__get_free_pages", "get_zeroed_page",
    "get_page_from_freelist", "__alloc_pages_slowpath", "alloc_pages_mpol", "alloc_pages_exact",
    "__alloc_pages_bulk", "alloc_pages_bulk_array_mempolicy", "__folio_alloc_node", "folio_alloc_mpol",
})
OTHER = "other"
DEFAULT_RULES = "consumers.toml"


@dataclass(frozen=True)
class Consumer:
    name: str
    frames: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()
    on_alloc: tuple[str, ...] = ()
    on_free: tuple[str, ...] = ()
    witness: bool = False
    gfp: tuple[str, ...] = ()
    order: int | None = None
    description: str = ""


@dataclass
class Consumers:
    """The ordered rule set; consumer ids are indices into ``items`` (``other`` is last)."""

    items: list[Consumer]
    source: str
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [c.name for c in self.items]

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None) -> Consumers:
        if path is None:
            text = resources.files("ptebench").joinpath(DEFAULT_RULES).read_text()
            source = f"ptebench/{DEFAULT_RULES}"
        else:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise PtebenchError(f"cannot read consumer rules ({exc.strerror})", file=str(path)) from exc
            source = str(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PtebenchError(f"bad TOML: {exc}", file=source, expected="consumer rules, see consumers.toml") from exc
        rules = data.get("consumer")
        if not isinstance(rules, list) or not rules:
            raise PtebenchError("no [[consumer]] tables", file=source, expected="one [[consumer]] table per consumer")
        items: list[Consumer] = []
        for i, rule in enumerate(rules):
            items.append(cls._rule(rule, i, source))
        names = [c.name for c in items]
        if len(set(names)) != len(names):
            raise PtebenchError("duplicate consumer names", file=source, text=", ".join(names))
        if OTHER not in names:
            items.append(Consumer(OTHER, description="no rule matched"))
        return cls(items, source)

    @staticmethod
    def _rule(rule: dict, i: int, source: str) -> Consumer:
        known = {"name", "frames", "callers", "on_alloc", "on_free", "witness", "gfp", "order", "description"}
        where = f"[[consumer]] #{i + 1}"
        if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
            raise PtebenchError(f"{where} has no name", file=source, expected="name = \"...\"")
        extra = set(rule) - known
        if extra:
            raise PtebenchError(f"{where} ({rule['name']}) has unknown keys {sorted(extra)}", file=source,
                                expected=f"keys among {sorted(known)}")
        for key in ("on_alloc", "on_free"):
            for api in rule.get(key, []):
                if api not in ACTIONS:
                    raise PtebenchError(f"{where} ({rule['name']}): unknown kernel API {api!r} in {key}", file=source,
                                        expected=f"one of {sorted(ACTIONS)}")
        for flag in rule.get("gfp", []):
            if flag not in GFP_NAMES:
                raise PtebenchError(f"{where} ({rule['name']}): unknown gfp flag {flag!r}", file=source,
                                    expected="a flag name as the kernel prints it, e.g. __GFP_ZERO")
        return Consumer(name=rule["name"], frames=tuple(rule.get("frames", ())),
                        callers=tuple(rule.get("callers", ())), on_alloc=tuple(rule.get("on_alloc", ())),
                        on_free=tuple(rule.get("on_free", ())), witness=bool(rule.get("witness", False)),
                        gfp=tuple(rule.get("gfp", ())), order=rule.get("order"),
                        description=str(rule.get("description", "")))

    # ------------------------------------------------------------------ queries
    def id(self, name: str) -> int:
        return self.names.index(name)

    @property
    def other(self) -> int:
        return self.names.index(OTHER)

    def witness_ids(self) -> np.ndarray:
        return np.array([i for i, c in enumerate(self.items) if c.witness], dtype=np.int16)

    def classify_stacks(self, stack_index) -> np.ndarray:
        """Consumer id of every stack id (``trace.StackIndex``): first matching rule wins.

        ``callers`` match the first frame outside the page allocator (``ALLOCATOR_FRAMES``):
        secretmem_fault()'s own folio, not the xarray node its filemap_add_folio() allocates;
        ``frames`` match at any depth.
        """
        n = len(stack_index.table)
        out = np.full(n, self.other, dtype=np.int16)
        done = np.zeros(n, dtype=bool)
        caller = None
        for cid, c in enumerate(self.items):
            if not c.frames and not c.callers:
                continue
            hit = np.zeros(n, dtype=bool)
            for frame in c.frames:
                hit[stack_index.with_frame(frame)] = True
            if c.callers:
                if caller is None:
                    caller = np.array([next((f for f in fr if f not in ALLOCATOR_FRAMES), "") if fr else ""
                                       for fr in stack_index.table.column("frames").to_pylist()], dtype=object)
                hit |= np.isin(caller, list(c.callers))
            new = hit & ~done
            out[new] = cid
            done |= new
        return out

    def classify_gfp(self, gfp_mask: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Fallback for allocations without a stack: first rule whose gfp flags are all present."""
        out = np.full(len(gfp_mask), self.other, dtype=np.int16)
        done = np.zeros(len(gfp_mask), dtype=bool)
        for cid, c in enumerate(self.items):
            if not c.gfp:
                continue
            want = 0
            for flag in c.gfp:
                want |= GFP_NAMES[flag]
            hit = (gfp_mask & np.uint64(want)) == np.uint64(want)
            if c.order is not None:
                hit &= order == c.order
            new = hit & ~done
            out[new] = cid
            done |= new
        return out

    def action_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Per consumer: (alloc set, alloc clr, alloc flags, has) and the same for free, as int arrays [n, 4]."""
        def fold(apis: tuple[str, ...]) -> tuple[int, int, int, int]:
            setm = clrm = 0
            flags = 0
            for api in apis:
                s, c, f = ACTIONS[api]
                setm = (setm & ~c) | s
                clrm = (clrm & ~s) | c
                flags |= f
            if "flush_tlb_kernel_range" in apis:
                flags &= ~D.F_NOFLUSH
            has = int(any(api != "flush_tlb_kernel_range" for api in apis))
            return setm, clrm, flags, has

        alloc = np.array([fold(c.on_alloc) for c in self.items], dtype=np.int64).reshape(-1, 4)
        free = np.array([fold(c.on_free) for c in self.items], dtype=np.int64).reshape(-1, 4)
        return alloc, free
