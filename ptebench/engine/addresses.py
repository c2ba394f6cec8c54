"""Kernel virtual addresses in kprobe arguments -> physical pages.

x86-64 layout (Documentation/x86/x86_64/mm.rst, Linux 6.1), without KASLR (``nokaslr``,
as in the bundled captures; with KASLR the bases move and ``vmemmap_base`` must come from
the data, see :func:`derive_vmemmap_base`):

===================  ======================  ======================
region               4-level paging          5-level paging (LA57)
===================  ======================  ======================
direct map           0xffff888000000000      0xff11000000000000
vmalloc/ioremap      0xffffc90000000000      0xffa0000000000000
vmemmap (struct page) 0xffffea0000000000     0xffd4000000000000
kernel text mapping  0xffffffff80000000 (+1 GiB, KERNEL_IMAGE_SIZE with RANDOMIZE_BASE)
modules              0xffffffffc0000000 .. 0xffffffffff000000 (MODULES_VADDR..MODULES_END)
===================  ======================  ======================

``struct page`` is 64 bytes, so ``pfn = (page - vmemmap_base) / 64``.  A kernel-image
address maps to ``addr - __START_KERNEL_map + phys_base`` (``__pa_symbol``; phys_base is 0
for a kernel that runs where it was linked, as with nokaslr).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

STRUCT_PAGE = 64
START_KERNEL_MAP = 0xFFFFFFFF80000000
MODULES_VADDR = 0xFFFFFFFFC0000000
MODULES_END = 0xFFFFFFFFFF000000
LAYOUTS = {
    4: {"page_offset": 0xFFFF888000000000, "vmalloc": 0xFFFFC90000000000, "vmemmap": 0xFFFFEA0000000000,
        "direct_size": 1 << 46},
    5: {"page_offset": 0xFF11000000000000, "vmalloc": 0xFFA0000000000000, "vmemmap": 0xFFD4000000000000,
        "direct_size": 1 << 55},
}

DIRECT = "direct"
KERNEL = "kernel"  # the kernel image's high mapping
MODULE = "module"  # module/vmalloc space: backing pages unknown until revealed
UNKNOWN = "unknown"
#: :meth:`AddressMap.classify_many`'s codes
WHERE = (DIRECT, KERNEL, MODULE, UNKNOWN)


@dataclass
class AddressMap:
    levels: int
    page_offset: int
    vmemmap_base: int
    phys_base: int = 0
    vmemmap_from: str = ""
    #: :meth:`regions` for the bases they were made from (``vmemmap_base`` may be set after construction)
    _cached: tuple = field(default=(), init=False, repr=False, compare=False)

    @classmethod
    def for_page_offset(cls, page_offset: int | None) -> AddressMap:
        """The layout whose direct map starts at ``page_offset`` (from the dump); 5-level when unknown."""
        for levels, lay in LAYOUTS.items():
            if page_offset == lay["page_offset"]:
                return cls(levels, lay["page_offset"], lay["vmemmap"],
                           vmemmap_from=f"{levels}-level paging layout (page_offset {page_offset:#x})")
        lay = LAYOUTS[5]
        return cls(5, lay["page_offset"], lay["vmemmap"], vmemmap_from="5-level paging layout (assumed)")

    def regions(self) -> list[tuple[str, int, int]]:
        """(class, start, end) of each address range, first match wins: the direct map, the kernel image's
        high mapping, then module and vmalloc space."""
        lay = LAYOUTS[self.levels]
        return [(DIRECT, self.page_offset, self.page_offset + lay["direct_size"]),
                (KERNEL, START_KERNEL_MAP, MODULES_VADDR), (MODULE, MODULES_VADDR, MODULES_END),
                (MODULE, lay["vmalloc"], self.vmemmap_base)]

    def classify(self, addr: int) -> str:
        for where, lo, hi in self._regions():
            if lo <= addr < hi:
                return where
        return UNKNOWN

    def _regions(self) -> list[tuple[str, int, int]]:
        """:meth:`regions`, made again only when a base it depends on changed (classify() runs per kprobe)."""
        key = (self.levels, self.page_offset, self.vmemmap_base)
        if not self._cached or self._cached[0] != key:
            self._cached = (key, self.regions())
        return self._cached[1]

    def classify_many(self, addr: np.ndarray) -> np.ndarray:
        """:meth:`classify` of each address (``uint64``), as indices into :data:`WHERE`."""
        a = np.asarray(addr, np.uint64)
        out = np.full(len(a), WHERE.index(UNKNOWN), np.int8)
        for where, lo, hi in reversed(self.regions()):  # the first match wins: it is written last
            out[(a >= np.uint64(lo)) & (a < np.uint64(hi))] = WHERE.index(where)
        return out

    def pfn_of_many(self, addr: np.ndarray, where: np.ndarray) -> np.ndarray:
        """:meth:`pfn_of` of each address given its :meth:`classify_many` code (meaningless for module and
        unknown ones)."""
        a = np.asarray(addr, np.uint64)
        direct = (a - np.uint64(self.page_offset)) >> np.uint64(12)
        kernel = (a - np.uint64(START_KERNEL_MAP) + np.uint64(self.phys_base)) >> np.uint64(12)
        return np.where(where == WHERE.index(DIRECT), direct, kernel).astype(np.int64)

    def pfn_of(self, addr: int) -> int:
        """pfn of a direct-map or kernel-image address (``__pa`` / ``__pa_symbol``)."""
        if self.classify(addr) == DIRECT:
            return (addr - self.page_offset) >> 12
        return (addr - START_KERNEL_MAP + self.phys_base) >> 12

    def page_pfns(self, page: np.ndarray) -> np.ndarray:
        """pfns of ``struct page *`` values; -1 where a pointer is not a 64-byte slot of vmemmap."""
        off = page.astype(np.int64) - np.int64(self.vmemmap_base - (1 << 64) if self.vmemmap_base >= 1 << 63
                                                 else self.vmemmap_base)
        ok = (page != 0) & (off >= 0) & (off % STRUCT_PAGE == 0)
        return np.where(ok, off // STRUCT_PAGE, -1)


def derive_vmemmap_base(pairs: list[tuple[int, int]]) -> tuple[int, int] | None:
    """``vmemmap_base`` from (struct page pointer, pfn) pairs known to name the same page.

    The pairs come from a direct-map kprobe that follows an allocation of the page on the
    same CPU and pid (secretmem_fault: ``folio_alloc`` then ``set_direct_map_invalid_noflush``).
    Returns (base, number of pairs agreeing) for the most common candidate, or None.
    """
    votes = Counter(page - STRUCT_PAGE * pfn for page, pfn in pairs if page)
    if not votes:
        return None
    base, n = votes.most_common(1)[0]
    return base, n
