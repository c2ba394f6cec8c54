"""The direct map that x86-64 boot builds, from the memory map (Linux 6.1 ``init_mem_mapping()``).

Without a direct-map dump, a replay needs the layout the kernel built at boot.  This module
rebuilds it from the E820 memory map by the kernel's own rules, function by function:

- the E820 table: ``e820__update_table()`` (overlaps: the larger type wins, so a reserved
  entry beats RAM) and ``trim_bios_range()`` (page 0 becomes reserved, 640K..1M is not RAM);
  memblock memory is E820 RAM (``e820__memblock_setup()``), adjacent regions merged
  (``memblock_add()``) and trimmed to whole pages (``memblock_trim_memory()``);
- ``init_mem_mapping()``: the ISA range ``[0, 1M)`` is always mapped, then
  ``memory_map_top_down(1M, max_pfn << 12)``: the first step maps the top-most free 2M block
  (``memblock_phys_alloc_range()``), the steps then grow from 2M to 512M to 128G
  (``get_new_step_size()``), each step going through ``init_range_memory_mapping()``, which
  calls ``init_memory_mapping()`` once per memblock range it intersects;
- ``init_memory_mapping()`` -> ``split_mem_range()``: 4K head up to 2M alignment, 2M up to 1G
  alignment, 1G body, 2M tail, 4K tail; then ``adjust_range_page_size_mask()`` widens a range's
  page size to 2M/1G when the enclosing aligned 2M/1G block lies inside one memblock region, and
  equal neighbours are merged; each range goes to ``kernel_physical_mapping_init()``;
- ``phys_pud_init()`` / ``phys_pmd_init()`` / ``phys_pte_init()``: a 1G/2M leaf maps the whole
  aligned block that holds ``paddr``; an existing page table is kept and filled; an existing
  leaf is kept (and *counted again* in ``direct_pages_count``) when the mask allows its size;
  entries past the range end are cleared when their block holds no E820 RAM (that is how the
  dumps get ``pte_none`` entries after the last RAM page of a 2M block); ``update_page_count()``.

Two rules the issue did not name decide this machine's layout: ``adjust_range_page_size_mask()``
makes the first top-down step (the top 2M of RAM) map the whole top GiB as a 1G leaf, and later
steps re-count that leaf.  The dumps' 2M-mapped 4G-5G and 8G-9G are *not* built that way at boot:
they are 1G leaves split by boot-time ``set_memory_ro()`` on the BPF program pack (see
``docs/layout.md``, where the kernel's own counters confirm it).

Attributes are ``PAGE_KERNEL`` on the direct map: present, RW, NX, global (global is dropped
under page-table isolation, ``pti=True``).  ``kernel_image_boot_ops()`` adds the deterministic
boot-time CPA on the kernel image's direct-map alias (``mark_rodata_ro()``,
``free_kernel_image_pages()``, optionally the IDT page).

Assumptions: no KASLR of the direct map (``nokaslr`` or ``CONFIG_RANDOMIZE_MEMORY=n``; with it,
only which entries past a range end get cleared could change), no ``mem=``/``memmap=``, no
``E820_TYPE_RESERVED_KERN`` entries (setup_data), kernel image inside E820 RAM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptebench.errors import PtebenchError
from ptebench.sim import directmap as D
from ptebench.sim.dmap import DirectMap, Ops

PAGE_SHIFT = 12
PAGE_SIZE = 1 << 12
PMD_SIZE = 1 << 21
PUD_SIZE = 1 << 30
PUD_PAGE_SPAN = 1 << 39  # one page of 512 PUD entries (a p4d/pgd entry) covers 512 GiB
ISA_END_ADDRESS = 0x100000
BIOS_BEGIN, BIOS_END = 0xA0000, 0x100000
PG_LEVEL_2M, PG_LEVEL_1G = 2, 3  # page_size_mask bits are 1 << PG_LEVEL_xx
MASK_2M, MASK_1G = 1 << PG_LEVEL_2M, 1 << PG_LEVEL_1G
_U64 = (1 << 64) - 1
_PFN_PMD, _PFN_PUD = PMD_SIZE >> PAGE_SHIFT, PUD_SIZE >> PAGE_SHIFT
_RAM_TYPES = frozenset({"usable", "system ram", "ram"})
ORDERS = ("top_down", "bottom_up", "single")

Range = tuple[int, int]  # half-open [start, end) in bytes


def _round_down(x: int, a: int) -> int:
    return x & ~(a - 1) & _U64 if a else 0  # the kernel's round_down(); round_down(x, 0) is 0


def _round_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _union(ranges: Iterable[Range]) -> list[Range]:
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[0] < r[1]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _subtract(ranges: Iterable[Range], cut: Iterable[Range]) -> list[Range]:
    out = _union(ranges)
    for cs, ce in _union(cut):
        nxt: list[Range] = []
        for s, e in out:
            if ce <= s or cs >= e:
                nxt.append((s, e))
                continue
            if s < cs:
                nxt.append((s, cs))
            if ce < e:
                nxt.append((ce, e))
        out = nxt
    return out


# ------------------------------------------------------------------------------------------ memory map input
_E820_LINE = re.compile(r"BIOS-e820: \[mem 0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)\] (\S.*?)\s*")


def parse_dmesg_e820(text: str, *, file: str = "dmesg") -> list[dict]:
    """The firmware E820 table from dmesg's ``BIOS-e820: [mem a-b] type`` lines (``e820__print_table()``).

    Returns ``[{"start", "end" (inclusive), "type"}]`` like ``bundle.parse_firmware_memmap``.  These
    lines are the table as the firmware handed it over; the kernel's own edits (``e820: update`` /
    ``e820: remove``, from ``trim_bios_range()``) are re-applied by :func:`e820_ram`.
    """
    out = []
    for line in text.splitlines():
        i = line.find("BIOS-e820: ")
        if i < 0:
            continue
        m = _E820_LINE.fullmatch(line[i:])
        if m is None:
            raise PtebenchError("malformed BIOS-e820 line", file=file, text=line,
                                expected="'BIOS-e820: [mem 0x<start>-0x<end>] <type>'")
        out.append({"start": int(m[1], 16), "end": int(m[2], 16), "type": m[3]})
    if not out:
        raise PtebenchError("no 'BIOS-e820:' lines", file=file, expected="the kernel's boot log (dmesg)")
    return out


def memmap_from_iomem(iomem: Sequence[dict]) -> list[dict]:
    """The top-level entries of ``bundle.parse_iomem`` output as a memory map (``System RAM`` is RAM)."""
    return [{"start": r["start"], "end": r["end"], "type": r["name"]} for r in iomem if r["depth"] == 0]


def read_memmap(bundle: Path | str, source: str = "dmesg") -> list[dict]:
    """A bundle's memory map: ``dmesg`` (BIOS-e820 lines), ``firmware`` (firmware-memmap.txt) or ``iomem``."""
    from ptebench.parse import bundle as B

    path = Path(bundle)
    files = {"dmesg": "dmesg.txt", "firmware": "firmware-memmap.txt", "iomem": "iomem.txt"}
    if source not in files:
        raise PtebenchError(f"unknown memory-map source {source!r}", expected=" or ".join(files))
    f = path / files[source]
    try:
        text = f.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PtebenchError(f"cannot read: {exc}", file=str(f)) from exc
    if source == "dmesg":
        return parse_dmesg_e820(text, file=str(f))
    if source == "firmware":
        return B.parse_firmware_memmap(text, file=str(f))
    return memmap_from_iomem(B.parse_iomem(text, file=str(f)))


def e820_ram(memmap: Sequence[dict], *, trim_bios: bool = True) -> list[Range]:
    """E820 RAM of the kernel's e820_table as sorted disjoint byte ranges.

    ``memmap`` entries: ``{"start", "end" (inclusive), "type"}`` (or iomem-style ``"name"``).
    Types ``usable`` / ``System RAM`` are RAM; every other type beats RAM where they overlap
    (``e820__update_table()``: the larger type wins).  ``trim_bios`` applies ``trim_bios_range()``.
    """
    ram, other = [], []
    for r in memmap:
        kind = str(r.get("type", r.get("name", ""))).strip().lower()
        (ram if kind in _RAM_TYPES else other).append((int(r["start"]), int(r["end"]) + 1))
    out = _subtract(ram, other)
    if trim_bios:
        # trim_bios_range(): page 0 usable ==> reserved; the PC BIOS area 640K..1M is not RAM
        out = _subtract(out, [(0, PAGE_SIZE), (BIOS_BEGIN, BIOS_END)])
    return out


def memblock_memory(ram: Sequence[Range]) -> list[Range]:
    """memblock.memory: E820 RAM (``e820__memblock_setup()``), merged, trimmed to whole pages."""
    out = []
    for s, e in _union(ram):  # memblock_add() merges adjacent regions
        s, e = _round_up(s, PAGE_SIZE), _round_down(e, PAGE_SIZE)  # memblock_trim_memory(PAGE_SIZE)
        if s < e:
            out.append((s, e))
    return out


# ------------------------------------------------------------------------------------------ the boot builder
@dataclass(frozen=True)
class MappingCall:
    """One ``init_memory_mapping(start, end)`` call and its ``split_mem_range()`` ranges."""

    start: int
    end: int
    ranges: tuple[tuple[int, int, str], ...]  # (start, end, page_size_string(): "4k" | "2M" | "1G")
    caller: str  # "isa", "top_down", "top_down_rest", "bottom_up", "single"


def _page_size_string(mask: int) -> str:
    """page_size_string()"""
    return "1G" if mask & MASK_1G else "2M" if mask & MASK_2M else "4k"


class _Boot:
    """The state of ``init_mem_mapping()``: page tables, direct_pages_count, pfn_mapped."""

    def __init__(self, npfn: int, ram: list[Range], memblock: list[Range], reserved: list[Range],
                 page_size_mask: int, prot: int, adjust: bool) -> None:
        self.st = D.new_state(npfn)
        self.n1g = len(self.st["pud"])
        self.memblock = memblock
        self.reserved = reserved
        self.page_size_mask = page_size_mask
        self.prot = prot
        self.adjust = adjust
        self.count = {1: 0, 2: 0, 3: 0}  # direct_pages_count[PG_LEVEL_4K/2M/1G]
        self.calls: list[MappingCall] = []
        self.pfn_mapped: list[Range] = []
        self.caller = ""
        # e820__mapped_any(start, end, E820_TYPE_RAM) per 4K page, 2M block and 1G block
        ram4k = np.zeros(self.n1g << 18, np.bool_)
        for s, e in ram:
            ram4k[s >> PAGE_SHIFT : min(((e - 1) >> PAGE_SHIFT) + 1, len(ram4k))] = True
        self.ram4k = ram4k
        self.ram2m = ram4k.reshape(-1, D.PTRS).any(axis=1)
        self.ram1g = self.ram2m.reshape(-1, D.PTRS).any(axis=1)

    # ---------------------------------------------------------------- arch/x86/mm/init_64.c
    def phys_pte_init(self, m: int, paddr: int, paddr_end: int, prot: int) -> int:
        """phys_pte_init(): fill PTE table ``m`` from ``pte_index(paddr)`` to its end."""
        base = m << 21
        idx = np.arange((paddr - base) >> PAGE_SHIFT, D.PTRS)
        pfns = (m << 9) + idx
        inside = base + (idx << PAGE_SHIFT) < paddr_end
        a4 = self.st["attr4k"]
        new = inside & (a4[pfns] == 0)
        a4[pfns[new]] = prot
        # an existing entry is re-used and counted again (!after_bootmem)
        self.count[1] += int(np.count_nonzero(inside))
        past = ~inside & ~self.ram4k[pfns]
        a4[pfns[past]] = 0  # past the end and not E820 RAM: set_pte(pte, 0)
        if new.any():
            return base + ((int(idx[new][-1]) + 1) << PAGE_SHIFT)
        return paddr_end

    def _clear_pmd(self, m: int) -> None:
        st = self.st
        st["pmd"][m] = D.NONE
        st["attr2m"][m] = 0
        st["attr4k"][m << 9 : (m + 1) << 9] = 0

    def phys_pmd_init(self, g: int, paddr: int, paddr_end: int, mask: int, prot: int) -> int:
        """phys_pmd_init(): fill PMD table ``g`` from ``pmd_index(paddr)`` to its end."""
        st = self.st
        pmd, attr2m = st["pmd"], st["attr2m"]
        pages, paddr_last = 0, paddr_end
        for i in range((paddr >> 21) & 511, D.PTRS):
            m = (g << 9) + i
            paddr_next = (paddr & ~(PMD_SIZE - 1)) + PMD_SIZE
            if paddr >= paddr_end:
                if not self.ram2m[m]:
                    self._clear_pmd(m)  # set_pmd(pmd, __pmd(0))
                paddr = paddr_next
                continue
            new_prot = prot
            if pmd[m] != D.NONE:
                if pmd[m] == D.TABLE:  # keep the PTE table, fill it
                    paddr_last = self.phys_pte_init(m, paddr, paddr_end, prot)
                    paddr = paddr_next
                    continue
                if mask & MASK_2M:  # keep the 2M leaf; counted again
                    pages += 1
                    paddr_last = paddr_next
                    paddr = paddr_next
                    continue
                new_prot = int(attr2m[m])  # split the leaf with its own protections
            if mask & MASK_2M:
                pages += 1
                pmd[m] = D.LEAF
                attr2m[m] = prot
                paddr_last = paddr_next
                paddr = paddr_next
                continue
            pmd[m] = D.TABLE  # alloc_low_page(): a zeroed PTE table
            st["attr4k"][m << 9 : (m + 1) << 9] = 0
            paddr_last = self.phys_pte_init(m, paddr, paddr_end, new_prot)
            paddr = paddr_next
        self.count[2] += pages  # update_page_count(PG_LEVEL_2M, pages)
        return paddr_last

    def phys_pud_init(self, paddr: int, paddr_end: int, mask: int) -> int:
        """phys_pud_init(): one page of PUD entries, from ``pud_index(__va(paddr))`` to its end."""
        st = self.st
        pud, attr1g = st["pud"], st["attr1g"]
        pages, paddr_last = 0, paddr_end
        g_stop = min(((paddr >> 39) + 1) << 9, self.n1g)  # entries beyond the model hold no RAM: nothing to clear
        for g in range(paddr >> 30, g_stop):
            paddr_next = (paddr & ~(PUD_SIZE - 1)) + PUD_SIZE
            if paddr >= paddr_end:
                if not self.ram1g[g]:
                    pud[g] = D.NONE  # set_pud(pud, __pud(0))
                    attr1g[g] = 0
                    for m in range(g << 9, (g + 1) << 9):
                        self._clear_pmd(m)
                paddr = paddr_next
                continue
            prot = self.prot  # PAGE_KERNEL
            if pud[g] != D.NONE:
                if pud[g] == D.TABLE:  # "if (!pud_large(*pud))": keep the PMD table, fill it
                    paddr_last = self.phys_pmd_init(g, paddr, paddr_end, mask, prot)
                    paddr = paddr_next
                    continue
                if mask & MASK_1G:  # keep the 1G leaf; counted again
                    pages += 1
                    paddr_last = paddr_next
                    paddr = paddr_next
                    continue
                prot = int(attr1g[g])  # split the gbpage with its own protections
            if mask & MASK_1G:
                pages += 1
                pud[g] = D.LEAF  # maps the whole GiB: pfn (paddr & PUD_MASK)
                attr1g[g] = prot
                paddr_last = paddr_next
                paddr = paddr_next
                continue
            pud[g] = D.TABLE  # alloc_low_page(): a zeroed PMD table
            for m in range(g << 9, (g + 1) << 9):
                self._clear_pmd(m)
            paddr_last = self.phys_pmd_init(g, paddr, paddr_end, mask, prot)
            paddr = paddr_next
        self.count[3] += pages  # update_page_count(PG_LEVEL_1G, pages)
        return paddr_last

    def kernel_physical_mapping_init(self, paddr_start: int, paddr_end: int, mask: int) -> int:
        """kernel_physical_mapping_init() -> phys_p4d_init(): one phys_pud_init() per 512 GiB."""
        paddr_last, paddr = paddr_end, paddr_start
        while paddr < paddr_end:
            paddr_last = self.phys_pud_init(paddr, paddr_end, mask)
            paddr = (paddr & ~(PUD_PAGE_SPAN - 1)) + PUD_PAGE_SPAN
        return paddr_last

    # ---------------------------------------------------------------- arch/x86/mm/init.c
    def memblock_is_region_memory(self, base: int, size: int) -> bool:
        """memblock_is_region_memory(): [base, base+size) inside one memblock.memory region."""
        return any(s <= base < e and base + size <= e for s, e in self.memblock)

    def adjust_range_page_size_mask(self, mr: list[list[int]]) -> None:
        """adjust_range_page_size_mask(): use a bigger page if the whole aligned block is RAM."""
        for r in mr:
            if (self.page_size_mask & MASK_2M) and not (r[2] & MASK_2M):
                start, end = _round_down(r[0], PMD_SIZE), _round_up(r[1], PMD_SIZE)
                if self.memblock_is_region_memory(start, end - start):
                    r[2] |= MASK_2M
            if (self.page_size_mask & MASK_1G) and not (r[2] & MASK_1G):
                start, end = _round_down(r[0], PUD_SIZE), _round_up(r[1], PUD_SIZE)
                if self.memblock_is_region_memory(start, end - start):
                    r[2] |= MASK_1G

    def split_mem_range(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """split_mem_range() (CONFIG_X86_64): (start, end, page_size_mask) per range."""
        mask = self.page_size_mask
        mr: list[list[int]] = []

        def save_mr(s_pfn: int, e_pfn: int, m: int) -> None:  # save_mr()
            if s_pfn < e_pfn:
                mr.append([s_pfn << PAGE_SHIFT, e_pfn << PAGE_SHIFT, m])

        limit_pfn = end >> PAGE_SHIFT
        pfn = start_pfn = start >> PAGE_SHIFT
        end_pfn = min(_round_up(pfn, _PFN_PMD), limit_pfn)  # head if not big page alignment
        if start_pfn < end_pfn:
            save_mr(start_pfn, end_pfn, 0)
            pfn = end_pfn
        start_pfn = _round_up(pfn, _PFN_PMD)  # big page (2M) range, up to 1G alignment
        end_pfn = min(_round_up(pfn, _PFN_PUD), _round_down(limit_pfn, _PFN_PMD))
        if start_pfn < end_pfn:
            save_mr(start_pfn, end_pfn, mask & MASK_2M)
            pfn = end_pfn
        start_pfn = _round_up(pfn, _PFN_PUD)  # big page (1G) range
        end_pfn = _round_down(limit_pfn, _PFN_PUD)
        if start_pfn < end_pfn:
            save_mr(start_pfn, end_pfn, mask & (MASK_2M | MASK_1G))
            pfn = end_pfn
        start_pfn = _round_up(pfn, _PFN_PMD)  # tail is not big page (1G) alignment
        end_pfn = _round_down(limit_pfn, _PFN_PMD)
        if start_pfn < end_pfn:
            save_mr(start_pfn, end_pfn, mask & MASK_2M)
            pfn = end_pfn
        save_mr(pfn, limit_pfn, 0)  # tail is not big page (2M) alignment
        if self.adjust:  # !after_bootmem
            self.adjust_range_page_size_mask(mr)
        i = 0  # try to merge same page size and continuous
        while len(mr) > 1 and i < len(mr) - 1:
            if mr[i][1] == mr[i + 1][0] and mr[i][2] == mr[i + 1][2]:
                mr[i][1] = mr[i + 1][1]
                del mr[i + 1]
            else:
                i += 1
        return [(s, e, m) for s, e, m in mr]

    def add_pfn_range_mapped(self, start_pfn: int, end_pfn: int) -> None:
        """add_pfn_range_mapped(): pfn_mapped[] (add_range_with_merge + clean_sort_range)."""
        self.pfn_mapped = _union([*self.pfn_mapped, (start_pfn, end_pfn)])

    def init_memory_mapping(self, start: int, end: int) -> int:
        """init_memory_mapping(start, end, PAGE_KERNEL)."""
        mr = self.split_mem_range(start, end)
        ret = 0
        for s, e, m in mr:
            ret = self.kernel_physical_mapping_init(s, e, m)
        self.add_pfn_range_mapped(start >> PAGE_SHIFT, ret >> PAGE_SHIFT)
        self.calls.append(MappingCall(start, end, tuple((s, e, _page_size_string(m)) for s, e, m in mr),
                                      self.caller))
        return ret >> PAGE_SHIFT

    def init_range_memory_mapping(self, r_start: int, r_end: int) -> int:
        """init_range_memory_mapping(): init_memory_mapping() on each memblock range inside [r_start, r_end)."""
        mapped = 0
        for s, e in self.memblock:  # for_each_mem_pfn_range()
            s, e = min(max(s, r_start), r_end), min(max(e, r_start), r_end)
            if s >= e:
                continue
            self.init_memory_mapping(s, e)
            mapped += e - s
        return mapped

    def memblock_find_top_down(self, size: int, align: int, start: int, end: int) -> int:
        """memblock_phys_alloc_range() top-down (__memblock_find_range_top_down); 0 if nothing fits."""
        start = max(start, PAGE_SIZE)
        for fs, fe in reversed(_subtract(self.memblock, self.reserved)):
            fs, fe = min(max(fs, start), end), min(max(fe, start), end)
            if fe < size:
                continue
            cand = _round_down(fe - size, align)
            if cand >= fs:
                return cand
        return 0

    def memory_map_top_down(self, map_start: int, map_end: int) -> None:
        """memory_map_top_down(): from the top-most free 2M block down, in growing steps."""
        self.caller = "top_down"
        addr = self.memblock_find_top_down(PMD_SIZE, PMD_SIZE, map_start, map_end)
        real_end = addr + PMD_SIZE
        step_size, last_start, mapped = PMD_SIZE, real_end, 0
        while last_start > map_start:
            if last_start > step_size:
                start = max(_round_down(last_start - 1, step_size), map_start)
            else:
                start = map_start
            mapped += self.init_range_memory_mapping(start, last_start)
            last_start = start
            if mapped >= step_size:
                step_size = (step_size << (21 - PAGE_SHIFT - 1)) & _U64  # get_new_step_size()
        if real_end < map_end:
            self.caller = "top_down_rest"
            self.init_range_memory_mapping(real_end, map_end)

    def memory_map_bottom_up(self, map_start: int, map_end: int) -> None:
        """memory_map_bottom_up(): from map_start up, in growing steps."""
        self.caller = "bottom_up"
        start, mapped, step_size = map_start, 0, PMD_SIZE
        while start < map_end:
            if step_size and map_end - start > step_size:
                nxt = min(_round_up(start + 1, step_size), map_end)
            else:
                nxt = map_end
            mapped += self.init_range_memory_mapping(start, nxt)
            start = nxt
            if mapped >= step_size:
                step_size = (step_size << (21 - PAGE_SHIFT - 1)) & _U64  # get_new_step_size()


# ------------------------------------------------------------------------------------------ public API
@dataclass
class BootLayout:
    """The direct map at the end of ``init_mem_mapping()`` and how it was built."""

    dm: DirectMap
    e820_ram: list[Range]  # the kernel's E820 RAM (after trim_bios_range)
    memblock: list[Range]  # memblock.memory
    max_pfn: int
    calls: list[MappingCall]  # every init_memory_mapping() call, in order
    pfn_mapped: list[Range]  # pfn_mapped[] (pfn ranges)
    #: direct_pages_count as /proc/meminfo would print it (kB): the kernel counts a leaf that a later
    #: call re-uses once more, so this exceeds the mapped size (DirectMap1G only printed with gbpages)
    meminfo_kb: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)
    boot_ops: Ops | None = None  # boot-time CPA applied afterwards (kernel_image=...)


def build_layout(
    memmap: Sequence[dict],
    *,
    gbpages: bool = True,
    pse: bool = True,
    pti: bool = False,
    kernel: tuple[int, int] = (6, 1),
    order: str = "top_down",
    adjust_page_size: bool = True,
    trim_bios: bool = True,
    reserved: Iterable[Range] = (),
    kernel_end: int | None = None,
    kernel_image: dict[str, Any] | None = None,
) -> BootLayout:
    """Build the boot direct map from a memory map by the rules of Linux 6.1 ``init_mem_mapping()``.

    - ``gbpages``: ``page_size_mask`` has 1G (CPU GBPAGES and ``direct_gbpages``; ``nogbpages``
      is ``gbpages=False``).  ``pse=False`` (no PSE, or ``debug_pagealloc``) maps everything 4K.
    - ``pti``: page-table isolation drops ``_PAGE_GLOBAL`` from the direct map's PAGE_KERNEL.
    - ``order``: ``top_down`` (the kernel default: memblock allocates top-down),
      ``bottom_up`` (``memblock_bottom_up()``, e.g. ``movable_node``; needs ``kernel_end``,
      ``__pa_symbol(_end)``), or ``single`` (not a kernel path: one pass over [1M, end), for
      comparison).
    - ``adjust_page_size``: ``adjust_range_page_size_mask()`` (always on in the kernel at boot);
      ``False`` shows the layout without it.
    - ``trim_bios``: ``trim_bios_range()`` (always on in the kernel).
    - ``reserved``: memblock reservations (byte ranges) in force at ``init_mem_mapping()`` time;
      they only move the first top-down step (default: none, the top 2M of RAM is free).
    - ``kernel_image``: sections from :func:`kernel_sections_from_iomem` (optionally with
      ``"idt"``: the IDT's physical address); applies :func:`kernel_image_boot_ops` after boot.
    """
    if order not in ORDERS:
        raise PtebenchError(f"unknown mapping order {order!r}", expected=" or ".join(ORDERS))
    ram = e820_ram(memmap, trim_bios=trim_bios)
    if not ram:
        raise PtebenchError("the memory map holds no RAM", expected="'usable' or 'System RAM' entries")
    memblock = memblock_memory(ram)
    max_pfn = max(e for _, e in ram) >> PAGE_SHIFT  # e820__end_of_ram_pfn()
    end = max_pfn << PAGE_SHIFT
    # probe_page_size_mask()
    mask = (MASK_2M if pse else 0) | (MASK_1G if (pse and gbpages) else 0)
    prot = D.ATTR_P | D.ATTR_RW | D.ATTR_NX | (0 if pti else D.ATTR_GLB)  # PAGE_KERNEL
    boot = _Boot(max(max_pfn, ISA_END_ADDRESS >> PAGE_SHIFT), ram, memblock, _union(reserved), mask, prot,
                 adjust_page_size)
    # init_mem_mapping(): the ISA range is always mapped regardless of memory holes
    boot.caller = "isa"
    boot.init_memory_mapping(0, ISA_END_ADDRESS)
    if order == "top_down":
        boot.memory_map_top_down(ISA_END_ADDRESS, end)
    elif order == "bottom_up":
        if kernel_end is None:
            raise PtebenchError("order='bottom_up' needs kernel_end (__pa_symbol(_end))")
        boot.memory_map_bottom_up(kernel_end, end)
        boot.memory_map_bottom_up(ISA_END_ADDRESS, kernel_end)
    else:
        boot.caller = "single"
        boot.init_range_memory_mapping(ISA_END_ADDRESS, end)

    dm = DirectMap(max(max_pfn, ISA_END_ADDRESS >> PAGE_SHIFT), kernel=kernel, gbpages=bool(mask & MASK_1G))
    for key in ("pud", "pmd", "attr1g", "attr2m", "attr4k"):
        dm.state[key][:] = boot.st[key]
    dm._recount()
    counts = dict(boot.count)
    ops = None
    if kernel_image is not None:
        ops = kernel_image_boot_ops(kernel_image, idt=kernel_image.get("idt"))
        before = dm.state["ctr"][[D.C_COUNT_4K, D.C_COUNT_2M, D.C_COUNT_1G]].copy()
        dm.apply(ops)
        delta = dm.state["ctr"][[D.C_COUNT_4K, D.C_COUNT_2M, D.C_COUNT_1G]] - before
        for lvl, d in zip((1, 2, 3), delta, strict=True):  # split_page_count() moves direct_pages_count too
            counts[lvl] += int(d)
    meminfo = {"DirectMap4k": counts[1] << 2, "DirectMap2M": counts[2] << 11}
    if mask & MASK_1G:  # arch_report_meminfo(): the 1G line only if direct_gbpages
        meminfo["DirectMap1G"] = counts[3] << 20
    options = {"gbpages": gbpages, "pse": pse, "pti": pti, "kernel": kernel, "order": order,
               "adjust_page_size": adjust_page_size, "trim_bios": trim_bios}
    return BootLayout(dm, ram, memblock, max_pfn, boot.calls, boot.pfn_mapped, meminfo, options, ops)


def layout_from_memmap(memmap: Sequence[dict], *, gbpages: bool = True, kernel: tuple[int, int] = (6, 1),
                       **kw: Any) -> DirectMap:
    """The direct map ``init_mem_mapping()`` builds from ``memmap`` (see :func:`build_layout` for options)."""
    return build_layout(memmap, gbpages=gbpages, kernel=kernel, **kw).dm


# ------------------------------------------------------------------------------------------ boot-time CPA
def kernel_sections_from_iomem(iomem: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """Kernel image sections from ``/proc/iomem`` (``bundle.parse_iomem``), half-open physical ranges.

    ``text`` is [_text, _etext), ``rodata`` [__start_rodata, __end_rodata), ``data`` [_sdata,
    _edata), ``bss`` [__bss_start, __bss_stop) (``setup_arch()`` fills these resources).
    """
    names = {"Kernel code": "text", "Kernel rodata": "rodata", "Kernel data": "data", "Kernel bss": "bss"}
    out = {names[r["name"]]: (r["start"], r["end"] + 1) for r in iomem if r["name"] in names}
    missing = sorted(set(names.values()) - set(out))
    if missing:
        raise PtebenchError(f"iomem lacks the kernel sections {missing}", expected="'Kernel code/rodata/data/bss'")
    return out


def kernel_image_boot_ops(sections: dict[str, Any], *, idt: int | None = None) -> Ops:
    """The direct-map side of the boot-time CPA calls on the kernel image (Linux 6.1), in kernel order.

    The calls act on the kernel's high mapping; ``cpa_process_alias()`` repeats them on the direct
    map, chunk by chunk as the primary walk goes (a 2M high-map leaf at a time), never touching NX
    ("Directmap always has NX set").  So only RW changes reach the direct map:

    - ``idt_setup_apic_and_irq_gates()``: ``set_memory_ro(idt_table, 1)`` (if ``idt`` is given);
    - ``mark_rodata_ro()``: ``set_memory_ro(_text, __end_rodata_hpage_align)``, one op per 2M chunk;
      its ``set_memory_nx(_etext, ...)`` has no direct-map effect;
    - ``free_kernel_image_pages()`` -> ``free_init_pages()``: ``set_memory_rw`` on the text/rodata
      gap ``[PFN_ALIGN(_etext), __start_rodata)`` and the rodata/data gap ``[PFN_ALIGN(__end_rodata),
      _sdata)``.  ``free_initmem()`` makes init memory RW, which it already is in the direct map.
    """
    flags = D.F_ALIAS  # before SYSTEM_RUNNING: no vmstat events
    rows = []
    if idt is not None:
        rows.append((idt >> PAGE_SHIFT, 1, 0, D.ATTR_RW, flags))
    text0 = sections["text"][0]
    text_end = _round_up(sections["text"][1], PAGE_SIZE)
    ro_start = _round_up(sections["rodata"][0], PAGE_SIZE)
    ro_end = _round_up(sections["rodata"][1], PAGE_SIZE)
    ro_hpage = _round_up(ro_end, PMD_SIZE)  # __end_rodata_hpage_align
    sdata = sections["data"][0]
    a = text0
    while a < ro_hpage:
        b = min(_round_down(a, PMD_SIZE) + PMD_SIZE, ro_hpage)
        rows.append((a >> PAGE_SHIFT, (b - a) >> PAGE_SHIFT, 0, D.ATTR_RW, flags))
        a = b
    for s, e in ((text_end, ro_start), (ro_end, sdata)):
        if s < e:
            rows.append((s >> PAGE_SHIFT, (e - s) >> PAGE_SHIFT, D.ATTR_RW, 0, flags))
    return Ops.from_rows(rows)


# ------------------------------------------------------------------------------------------ comparison
_KIND_1G = {D.NONE: "none", D.TABLE: "table", D.LEAF: "1G"}


def region_kinds(dm: DirectMap, n1g: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per 1G block ("none"/"table"/"1G") and per 2M block ("none"/"1G"/"2M"/"4K": 4K = a PTE table)."""
    st = dm.state
    n = len(st["pud"]) if n1g is None else n1g
    pud = np.zeros(n, np.uint8)
    pud[: min(n, len(st["pud"]))] = st["pud"][:n]
    pmd = np.zeros(n << 9, np.uint8)
    pmd[: min(n << 9, len(st["pmd"]))] = st["pmd"][: n << 9]
    gk = np.array([_KIND_1G[int(v)] for v in pud], dtype=object)
    mk = np.full(n << 9, "none", dtype=object)
    pud_m = np.repeat(pud, D.PTRS)
    mk[pud_m == D.LEAF] = "1G"
    mk[(pud_m == D.TABLE) & (pmd == D.LEAF)] = "2M"
    mk[(pud_m == D.TABLE) & (pmd == D.TABLE)] = "4K"
    return gk, mk


def page_attrs(dm: DirectMap, npfn: int | None = None) -> np.ndarray:
    """The attribute byte of every pfn's mapping (0 = not mapped, including pte_none entries)."""
    st = dm.state
    n1g = len(st["pud"])
    pud_p = np.repeat(st["pud"], D.PTRS * D.PTRS)
    pmd_p = np.repeat(st["pmd"], D.PTRS)
    out = np.zeros(n1g << 18, np.uint8)
    leaf1 = pud_p == D.LEAF
    out[leaf1] = np.repeat(st["attr1g"], D.PTRS * D.PTRS)[leaf1]
    leaf2 = (pud_p == D.TABLE) & (pmd_p == D.LEAF)
    out[leaf2] = np.repeat(st["attr2m"], D.PTRS)[leaf2]
    pte = (pud_p == D.TABLE) & (pmd_p == D.TABLE)
    out[pte] = st["attr4k"][pte]
    if npfn is not None:
        full = np.zeros(npfn, np.uint8)
        full[: min(npfn, len(out))] = out[:npfn]
        return full
    return out


def attr_str(attr: int) -> str:
    """An attribute byte as the dump prints it: ``P RW NX GLB`` / ``np``."""
    if not attr & D.ATTR_P:
        return "np"
    return " ".join(["P", "RW" if attr & D.ATTR_RW else "ro", "NX" if attr & D.ATTR_NX else "x"]
                    + (["GLB"] if attr & D.ATTR_GLB else []))


def _runs(mask: np.ndarray, *keys: np.ndarray) -> list[tuple[int, ...]]:
    """Maximal runs of ``mask`` over which every array in ``keys`` is constant: (start, end, *values)."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    brk = np.flatnonzero(np.diff(idx) != 1) + 1
    for k in keys:
        brk = np.union1d(brk, np.flatnonzero(np.diff(k[idx]) != 0) + 1)
    starts = np.concatenate([[0], brk]).astype(np.int64)
    ends = np.concatenate([brk, [len(idx)]]).astype(np.int64)
    return [(int(idx[s]), int(idx[e - 1]) + 1, *(int(k[idx[s]]) for k in keys)) for s, e in zip(starts, ends,
                                                                                                 strict=True)]


@dataclass
class LayoutDiff:
    """Where a rule-built layout and a dump differ."""

    rule_kb: dict[str, int]
    dump_kb: dict[str, int]
    gb: dict[int, tuple[str, str]]  # 1G block index -> (rule kind, dump kind)
    mb: dict[int, tuple[str, str]]  # 2M block index (pfn >> 9) -> (rule kind, dump kind)
    mapped: list[tuple[int, int, int, int]]  # pfn runs mapped on one side only: (start, end, rule attr, dump attr)
    attrs: list[tuple[int, int, int, int]]  # pfn runs mapped on both sides with other attributes

    @property
    def gb_split(self) -> list[int]:
        """1G blocks that are a 1G leaf by the rules but a PMD table in the dump."""
        return sorted(g for g, (r, d) in self.gb.items() if r == "1G" and d == "table")

    @property
    def regions_to_4k(self) -> list[int]:
        """2M blocks mapped by a PTE table in the dump but by a large leaf by the rules."""
        return sorted(m for m, (r, d) in self.mb.items() if d == "4K" and r in ("1G", "2M"))

    @property
    def unexplained_mb(self) -> dict[int, tuple[str, str]]:
        """2M differences that are neither a 2M leaf inside a split 1G block nor a split to 4K."""
        split, to4k = set(self.gb_split), set(self.regions_to_4k)
        return {m: k for m, k in self.mb.items() if not (k == ("1G", "2M") and (m >> 9) in split) and m not in to4k}

    def attr_pages(self) -> dict[tuple[str, str], int]:
        """Number of pages per (rule attributes, dump attributes) among ``attrs``."""
        out: dict[tuple[str, str], int] = {}
        for s, e, r, d in self.attrs:
            key = (attr_str(r), attr_str(d))
            out[key] = out.get(key, 0) + e - s
        return dict(sorted(out.items()))


def compare_layouts(rule: DirectMap, dump: DirectMap) -> LayoutDiff:
    """Compare two direct maps block by block and page by page."""
    n1g = max(len(rule.state["pud"]), len(dump.state["pud"]))
    rg, rm = region_kinds(rule, n1g)
    dg, dmk = region_kinds(dump, n1g)
    gb = {int(g): (str(rg[g]), str(dg[g])) for g in np.flatnonzero(rg != dg)}
    mb = {int(m): (str(rm[m]), str(dmk[m])) for m in np.flatnonzero(rm != dmk)}
    ra, da = page_attrs(rule, n1g << 18), page_attrs(dump, n1g << 18)
    rp, dp = (ra & D.ATTR_P) != 0, (da & D.ATTR_P) != 0
    mapped = _runs(rp != dp, ra, da)
    attrs = _runs(rp & dp & (ra != da), ra, da)
    return LayoutDiff(rule.direct_map_kb(), dump.direct_map_kb(), gb, mb, mapped, attrs)


def meminfo_accounting(layout: BootLayout, diff: LayoutDiff, meminfo: dict[str, int]) -> dict[str, int | bool]:
    """Explain a ``/proc/meminfo`` snapshot as the boot counts plus splits (6.1 never merges back).

    From boot on, only ``split_page_count()`` moves ``direct_pages_count``: a 1G split is 1G -1,
    2M +512; a 2M split is 2M -1, 4K +512.  So ``level3_splits`` = boot 1G - meminfo 1G and
    ``level2_splits`` = (meminfo 4K - boot 4K) / 512; ``consistent`` checks the 2M line against
    both.  ``level2_outside`` = level-2 splits the direct-map dump does not show: splits of the
    kernel's high mapping, which ``__split_large_page()`` counts too (``virt_addr_valid()`` holds
    for kernel-image addresses).  Before/after snapshots must be taken at the same time as the dump.
    """
    k4, k2 = layout.meminfo_kb["DirectMap4k"] >> 2, layout.meminfo_kb["DirectMap2M"] >> 11
    k1 = layout.meminfo_kb.get("DirectMap1G", 0) >> 20
    m4, m2, m1 = meminfo["DirectMap4k"] >> 2, meminfo["DirectMap2M"] >> 11, meminfo.get("DirectMap1G", 0) >> 20
    s3 = k1 - m1
    s2, rest = divmod(m4 - k4, D.PTRS)
    return {
        "level3_splits": s3,
        "level2_splits": s2,
        "consistent": rest == 0 and m2 == k2 + D.PTRS * s3 - s2,
        "level3_direct": len(diff.gb_split),
        "level2_direct": len(diff.regions_to_4k),
        "level2_outside": s2 - len(diff.regions_to_4k),
    }


def describe_region(dump: DirectMap, m: int, sections: dict[str, tuple[int, int]] | None = None) -> str:
    """What a 2M block of a dump holds, as evidence for why it is 4K-mapped (not a proven cause).

    ``kernel <sections>`` when it overlaps the kernel image, then the non-default attributes found
    among its pages: ``ro``, ``x``, ``non-global``, ``not-present`` (pte_none inside E820 RAM is not
    told apart from a hole), or ``default`` when every page is back to PAGE_KERNEL.
    """
    base, end = m << 21, (m + 1) << 21
    parts = []
    if sections:
        hit = [name for name, (s, e) in sections.items() if s < end and base < e]
        if hit:
            parts.append("kernel " + "+".join(hit))
    st = dump.state
    g = m >> 9
    if st["pud"][g] == D.LEAF:
        a = np.full(D.PTRS, st["attr1g"][g], np.uint8)
    elif st["pud"][g] == D.TABLE and st["pmd"][m] == D.LEAF:
        a = np.full(D.PTRS, st["attr2m"][m], np.uint8)
    elif st["pud"][g] == D.TABLE and st["pmd"][m] == D.TABLE:
        a = st["attr4k"][m << 9 : (m + 1) << 9]
    else:
        a = np.zeros(D.PTRS, np.uint8)
    p = (a & D.ATTR_P) != 0
    found = []
    if np.any(p & ((a & D.ATTR_RW) == 0)):
        found.append("ro")
    if np.any(p & ((a & D.ATTR_NX) == 0)):
        found.append("x")
    if np.any(p & ((a & D.ATTR_GLB) == 0)):
        found.append("non-global")
    if np.any(~p):
        found.append("not-present")
    parts.append(", ".join(found) if found else "default")
    return "; ".join(parts)
