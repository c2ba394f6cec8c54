"""The boot direct-map layout (sim/layout.py): constructed memory maps and the real captures' dumps.

The capture expectations are the differences documented in docs/layout.md; a change of the model
that moves any of them fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptebench.errors import PtebenchError
from ptebench.parse import bundle as B
from ptebench.sim import directmap as D
from ptebench.sim import layout as L
from ptebench.sim.dmap import DirectMap

DEF = D.ATTR_DEFAULT
GiB, MiB = 1 << 30, 1 << 20


def ram(s: int, e: int) -> dict:
    return {"start": s, "end": e - 1, "type": "usable"}


def res(s: int, e: int) -> dict:
    return {"start": s, "end": e - 1, "type": "reserved"}


#: a PC: low RAM, the BIOS hole, RAM from 1M to 2G + 0x123000 (ends inside a 2M block)
PC = [ram(0, 0x9FC00), res(0x9FC00, 0xA0000), res(0xF0000, 0x100000), ram(0x100000, 2 * GiB + 0x123000)]


def kinds(dm: DirectMap) -> tuple[list[str], list[str]]:
    g, m = L.region_kinds(dm)
    return list(g), list(m)


# ------------------------------------------------------------------------------------------ input rules
def test_e820_sanitize_and_trim_bios_range():
    mm = [ram(0, 0x9FC00), res(0x9FC00, 0xA0000), ram(0xA0000, 0x100000), ram(0x100000, 0x200000),
          ram(0x200000, 0x400000), res(0x300000, 0x301000)]
    assert L.e820_ram(mm) == [(0x1000, 0x9FC00), (0x100000, 0x300000), (0x301000, 0x400000)]
    assert L.e820_ram(mm, trim_bios=False) == [(0, 0x9FC00), (0xA0000, 0x300000), (0x301000, 0x400000)]
    # memblock: whole pages only, adjacent regions merged
    assert L.memblock_memory([(0x1000, 0x9FC00), (0x100000, 0x200000), (0x200000, 0x300800)]) == [
        (0x1000, 0x9F000), (0x100000, 0x300000)]


def test_memmap_sources_of_a_bundle_agree(shared_traces):
    d = shared_traces / "memload"
    dmesg = L.read_memmap(d, "dmesg")
    assert dmesg[0] == {"start": 0, "end": 0x9FBFF, "type": "usable"} and len(dmesg) == 8
    ref = L.build_layout(dmesg)
    for src in ("firmware", "iomem"):
        other = L.build_layout(L.read_memmap(d, src))
        assert other.e820_ram == ref.e820_ram == [(0x1000, 0x9FC00), (0x100000, 0xBFFD7000), (4 * GiB, 9 * GiB)]
        for key in ("pud", "pmd", "attr1g", "attr2m", "attr4k"):
            assert np.array_equal(other.dm.state[key], ref.dm.state[key])
    # the kernel's own edits of the table are trim_bios_range()'s, which e820_ram() re-applies
    text = (d / "dmesg.txt").read_text()
    assert "e820: update [mem 0x00000000-0x00000fff] usable ==> reserved" in text
    assert "e820: remove [mem 0x000a0000-0x000fffff] usable" in text
    with pytest.raises(PtebenchError):
        L.read_memmap(d, "bogus")
    with pytest.raises(PtebenchError):
        L.parse_dmesg_e820("no map here")
    with pytest.raises(PtebenchError):
        L.parse_dmesg_e820("[0.0] BIOS-e820: [mem 0x0-0xfff usable")


# ------------------------------------------------------------------------------------------ constructed layouts
def test_pc_layout_1g_body_2m_and_4k_edges_and_the_first_mib():
    bl = L.build_layout(PC)
    dm, st = bl.dm, bl.dm.state
    g, m = kinds(dm)
    assert g == ["table", "1G", "table"]
    assert m[0] == "4K" and m[1:512] == ["2M"] * 511
    assert m[1024] == "4K" and m[1025:] == ["none"] * 511
    # ISA range: all 256 pages of the first MiB mapped, page 0 and the BIOS hole included; 1M-2M from RAM
    assert np.all(st["attr4k"][:512] == DEF)
    # the 2M tail block: 0x123 pages mapped, the rest of its PTE table pte_none (not E820 RAM: cleared)
    assert np.all(st["attr4k"][0x80000:0x80123] == DEF) and not st["attr4k"][0x80123:0x80200].any()
    assert st["attr1g"][1] == DEF and np.all(st["attr2m"][1:512] == DEF)
    assert dm.direct_map_kb() == {"DirectMap4k": (512 + 0x123) * 4, "DirectMap2M": 511 * 2048,
                                  "DirectMap1G": 1 << 20}
    assert dm.regions_on_4k() == [0, 1024]
    # top-down: the top 2M block, widened to the whole GiB by adjust_range_page_size_mask(); the later
    # steps re-use that leaf and count it again (direct_pages_count 1G = 3 for one leaf)
    assert [(c.start, c.end, c.ranges, c.caller) for c in bl.calls] == [
        (0, MiB, ((0, MiB, "4k"),), "isa"),
        (0x7FE00000, 2 * GiB, ((0x7FE00000, 2 * GiB, "1G"),), "top_down"),
        (0x60000000, 0x7FE00000, ((0x60000000, 0x7FE00000, "1G"),), "top_down"),
        (MiB, 0x60000000, ((MiB, 2 * MiB, "4k"), (2 * MiB, GiB, "2M"), (GiB, 0x60000000, "1G")), "top_down"),
        (2 * GiB, 2 * GiB + 0x123000, ((2 * GiB, 2 * GiB + 0x123000, "4k"),), "top_down_rest"),
    ]
    assert bl.meminfo_kb == {"DirectMap4k": (512 + 0x123) * 4, "DirectMap2M": 511 * 2048, "DirectMap1G": 3 << 20}
    assert bl.pfn_mapped == [(0, 0x80123)]
    assert bl.max_pfn == 0x80123 and bl.memblock == [(0x1000, 0x9F000), (MiB, 2 * GiB + 0x123000)]


def test_nogbpages():
    bl = L.build_layout(PC, gbpages=False)
    g, m = kinds(bl.dm)
    assert g == ["table", "table", "table"]
    assert m[0] == "4K" and m[1:1024] == ["2M"] * 1023 and m[1024] == "4K"
    assert bl.dm.direct_map_kb()["DirectMap1G"] == 0 and bl.dm.direct_map_kb()["DirectMap2M"] == 1023 * 2048
    assert bl.meminfo_kb == {"DirectMap4k": (512 + 0x123) * 4, "DirectMap2M": 1023 * 2048}  # no 1G line
    assert not bl.dm.gbpages
    assert DirectMap.from_memmap(PC, gbpages=False).direct_map_kb() == bl.dm.direct_map_kb()


def test_without_adjust_the_first_step_leaves_a_pmd_table_that_phys_pud_init_keeps():
    """adjust_page_size=False: the top 2M step builds a PMD table; the later 1G-mask range keeps it (2M leaves)."""
    bl = L.build_layout(PC, adjust_page_size=False)
    g, m = kinds(bl.dm)
    assert g == ["table", "table", "table"] and m[512:1024] == ["2M"] * 512
    # split_mem_range()'s 2M and tail-2M ranges, not widened to 1G, merge into one
    assert bl.calls[3].ranges == ((MiB, 2 * MiB, "4k"), (2 * MiB, 0x60000000, "2M"))
    assert bl.meminfo_kb == {"DirectMap4k": (512 + 0x123) * 4, "DirectMap2M": 1023 * 2048, "DirectMap1G": 0}


def test_single_pass_and_bottom_up_reach_the_same_layout_with_other_counts():
    top = L.build_layout(PC)
    for kw in ({"order": "single"}, {"order": "bottom_up", "kernel_end": 0x4400000}):
        bl = L.build_layout(PC, **kw)
        for key in ("pud", "pmd", "attr1g", "attr2m", "attr4k"):
            assert np.array_equal(bl.dm.state[key], top.dm.state[key])
    assert L.build_layout(PC, order="single").meminfo_kb["DirectMap1G"] == 1 << 20
    bu = L.build_layout(PC, order="bottom_up", kernel_end=0x4400000)
    assert [c.caller for c in bu.calls] == ["isa"] + ["bottom_up"] * (len(bu.calls) - 1)
    with pytest.raises(PtebenchError):
        L.build_layout(PC, order="bottom_up")
    with pytest.raises(PtebenchError):
        L.build_layout(PC, order="sideways")


def test_hole_inside_a_gib():
    """RAM [1M, 0x40201000) and [0x40403000, 2G): the hole's two 2M blocks get PTE tables."""
    mm = [ram(0, 0x9FC00), ram(MiB, 0x40201000), res(0x40201000, 0x40403000), ram(0x40403000, 2 * GiB)]
    bl = L.build_layout(mm)
    st = bl.dm.state
    g, m = kinds(bl.dm)
    assert g == ["table", "table"]  # [1G, 2G) is not one memblock region: no 1G leaf
    assert m[512] == "2M" and m[513] == "4K" and m[514] == "4K" and m[515:1024] == ["2M"] * 509
    assert st["attr4k"][0x40200] == DEF and not st["attr4k"][0x40201:0x40400].any()  # cleared: no RAM
    assert not st["attr4k"][0x40400:0x40403].any()  # before the range start: never written
    assert np.all(st["attr4k"][0x40403:0x40600] == DEF)
    assert bl.dm.regions_on_4k() == [0, 513, 514]
    assert bl.dm.direct_map_kb() == {"DirectMap4k": (512 + 1 + 509) * 4, "DirectMap2M": (511 + 1 + 509) * 2048,
                                     "DirectMap1G": 0}
    assert bl.meminfo_kb == bl.dm.direct_map_kb()  # nothing re-used, nothing counted twice
    assert bl.pfn_mapped == [(0, 0x40201), (0x40403, 0x80000)]


def test_first_mib_is_mapped_even_without_ram_there():
    mm = [res(0, MiB), ram(MiB, GiB)]
    bl = L.build_layout(mm)
    st = bl.dm.state
    assert np.all(st["attr4k"][:512] == DEF)  # ISA range [0, 1M) plus RAM [1M, 2M)
    g, m = kinds(bl.dm)
    assert g == ["table"] and m[0] == "4K" and m[1:] == ["2M"] * 511
    assert bl.pfn_mapped == [(0, 0x40000)]


def test_reserved_top_block_moves_the_first_step():
    bl = L.build_layout(PC, reserved=[(2 * GiB - 2 * MiB, 2 * GiB + 0x123000)])
    # the first step is the top-most *free* 2M block; after 2M + 508M the step stays 512M once more
    # (mapped_ram_size < step_size), and the reserved top is mapped last, in one call
    assert [(c.start, c.end, c.caller) for c in bl.calls] == [
        (0, MiB, "isa"),
        (2 * GiB - 4 * MiB, 2 * GiB - 2 * MiB, "top_down"),
        (0x60000000, 2 * GiB - 4 * MiB, "top_down"),
        (GiB, 0x60000000, "top_down"),
        (MiB, GiB, "top_down"),
        (2 * GiB - 2 * MiB, 2 * GiB + 0x123000, "top_down_rest"),
    ]
    assert bl.calls[-1].ranges == ((2 * GiB - 2 * MiB, 2 * GiB, "1G"), (2 * GiB, 2 * GiB + 0x123000, "4k"))
    assert bl.dm.direct_map_kb() == L.build_layout(PC).dm.direct_map_kb()


def test_pti_drops_global_and_no_pse_maps_4k():
    mm = [ram(0, 0x9FC00), ram(MiB, 64 * MiB)]
    bl = L.build_layout(mm, pti=True)
    assert set(np.unique(bl.dm.state["attr2m"][1:32])) == {D.ATTR_P | D.ATTR_RW | D.ATTR_NX}
    small = L.build_layout(mm, pse=False)
    assert small.dm.direct_map_kb() == {"DirectMap4k": 64 * 1024, "DirectMap2M": 0, "DirectMap1G": 0}
    assert small.meminfo_kb == {"DirectMap4k": 64 * 1024, "DirectMap2M": 0}
    with pytest.raises(PtebenchError):
        L.build_layout([res(0, MiB)])


def test_compare_layouts_reports_blocks_pages_and_attributes():
    a = L.layout_from_memmap(PC)
    b = L.layout_from_memmap(PC)
    b.state["pud"][1] = D.TABLE  # a 1G leaf split to 2M, one of which split to 4K with 3 ro pages
    b.state["pmd"][512:1024] = D.LEAF
    b.state["attr2m"][512:1024] = DEF
    b.state["pmd"][600] = D.TABLE
    b.state["attr4k"][600 << 9 : 601 << 9] = DEF
    b.state["attr4k"][(600 << 9) + 5 : (600 << 9) + 8] = DEF & ~D.ATTR_RW
    b.state["attr4k"][0x80100] = 0  # a pte_none
    diff = L.compare_layouts(a, b)
    assert diff.gb == {1: ("1G", "table")} and diff.gb_split == [1]
    assert diff.regions_to_4k == [600] and diff.unexplained_mb == {}
    assert len(diff.mb) == 512 and diff.mb[600] == ("1G", "4K")
    assert diff.mapped == [(0x80100, 0x80101, DEF, 0)]
    assert diff.attrs == [((600 << 9) + 5, (600 << 9) + 8, DEF, DEF & ~D.ATTR_RW)]
    assert diff.attr_pages() == {("P RW NX GLB", "P ro NX GLB"): 3}
    assert L.describe_region(b, 600) == "ro"
    assert L.describe_region(b, 601) == "default"
    assert L.attr_str(0) == "np" and L.attr_str(D.ATTR_P) == "P ro x"


def test_kernel_image_boot_ops_on_a_constructed_image():
    sections = {"text": (0x1000000, 0x1E01D32), "rodata": (0x2000000, 0x28EB000), "data": (0x2A00000, 0x2C48980),
                "bss": (0x3310000, 0x4400000)}
    ops = L.kernel_image_boot_ops(sections, idt=0x3313000)
    rows = list(zip(ops.pfn.tolist(), ops.npages.tolist(), ops.set_mask.tolist(), ops.clr_mask.tolist(),
                    strict=True))
    assert rows[0] == (0x3313, 1, 0, D.ATTR_RW)  # the IDT
    assert rows[1:14] == [(p, 512, 0, D.ATTR_RW) for p in range(0x1000, 0x2A00, 0x200)]  # mark_rodata_ro
    assert rows[14:] == [(0x1E02, 0x1FE, D.ATTR_RW, 0), (0x28EB, 0x115, D.ATTR_RW, 0)]  # the two gaps


# ------------------------------------------------------------------------------------------ the captures
K3 = {0x1E00000, 0x2800000, 0x3200000}  # kernel text end, rodata end, IDT page (bss)
BPF = {0x100200000, 0x100800000, 0x237A00000}  # the boot-time BPF program pack (captures without boot tracing)
#: 2M blocks mapped by 4K in the dump but by large leaves by the boot rules (docs/layout.md)
REGIONS_TO_4K = {
    "boot": K3 | {0x120E00000, 0x121000000, 0x237A00000} | {0x121200000, 0x122600000, 0x122C00000},
    "forkexec": K3 | BPF | {0x102400000, 0x102600000},
    "memload": K3 | BPF | {0x101A00000, 0x102600000, 0x133A00000},
    "mixed_small": K3 | BPF | {0x101A00000, 0x102400000, 0x102600000, 0x120000000},
    "modules": K3 | BPF | {0x101A00000, 0x102400000, 0x102600000},
    "secretmem_1024": K3 | BPF | {0x101A00000, 0x102400000, 0x102600000, 0x114800000},
    "secretmem_16384": K3 | BPF | {0x102400000, 0x102600000, 0x123000000},
    "secretmem_64": K3 | BPF | {0x101400000, 0x101E00000, 0x102400000, 0x102600000},
}
#: pages whose attributes differ: (rule-built PAGE_KERNEL -> dump) page counts
_NG, _RO_NG, _RO, _RO_X = ("P RW NX GLB", "P RW NX"), ("P RW NX GLB", "P ro NX"), ("P RW NX GLB", "P ro NX GLB"), (
    "P RW NX GLB", "P ro x GLB")
ATTR_PAGES = {
    "boot": {_NG: 12, _RO_NG: 10, _RO: 6398, _RO_X: 2},
    "forkexec": {_NG: 12, _RO_NG: 9, _RO: 6399, _RO_X: 2},
    "memload": {_NG: 14, _RO_NG: 8, _RO: 6400, _RO_X: 2},
    "mixed_small": {_NG: 20, _RO: 6408, _RO_X: 2},
    "modules": {_NG: 18, _RO_NG: 3, _RO: 6405, _RO_X: 2},
    "secretmem_1024": {_NG: 19, _RO_NG: 3, _RO: 6405, _RO_X: 2},
    "secretmem_16384": {_NG: 15, _RO_NG: 4, _RO: 6404, _RO_X: 2},
    "secretmem_64": {_NG: 16, _RO_NG: 6, _RO: 6402, _RO_X: 2},
}
KERNEL_RO_PAGES = (0x1E02000 - 0x1000000 + 0x28EB000 - 0x2000000) >> 12  # text + rodata made ro by mark_rodata_ro


def _capture(shared_traces, name):
    d = shared_traces / name
    snap = "before" if (d / "dmdump-before.txt").exists() else "after"  # boot has only the after-dump
    dump = DirectMap.from_dump(B.parse_direct_map_dump((d / f"dmdump-{snap}.txt").read_text()))
    meminfo = "meminfo-before.txt" if snap == "before" else "meminfo-after-dmdump-insmod.txt"
    sections = L.kernel_sections_from_iomem(B.parse_iomem((d / "iomem.txt").read_text()))
    return d, dump, B.parse_meminfo((d / meminfo).read_text()), sections


@pytest.mark.parametrize("name", sorted(REGIONS_TO_4K))
def test_capture_rule_layout_against_its_dump(shared_traces, name):
    d, dump, meminfo, sections = _capture(shared_traces, name)
    bl = L.build_layout(L.read_memmap(d))
    # the rule-built layout of this 8 GiB guest (same memory map in every capture)
    assert bl.dm.direct_map_kb() == {"DirectMap4k": 3932, "DirectMap2M": 2093056, "DirectMap1G": 6 << 20}
    assert bl.meminfo_kb == {"DirectMap4k": 3932, "DirectMap2M": 2093056, "DirectMap1G": 8 << 20}
    assert bl.pfn_mapped == [(0, 0xBFFD7), (0x100000, 0x240000)]
    assert [(c.start, c.end, c.ranges) for c in bl.calls] == [
        (0, MiB, ((0, MiB, "4k"),)),
        (0x23FE00000, 9 * GiB, ((0x23FE00000, 9 * GiB, "1G"),)),  # the top 2M: the whole 8G-9G as a 1G leaf
        (0x220000000, 0x23FE00000, ((0x220000000, 0x23FE00000, "1G"),)),
        (MiB, 0xBFFD7000, ((MiB, 2 * MiB, "4k"), (2 * MiB, GiB, "2M"), (GiB, 2 * GiB, "1G"),
                           (2 * GiB, 0xBFE00000, "2M"), (0xBFE00000, 0xBFFD7000, "4k"))),
        (4 * GiB, 0x220000000, ((4 * GiB, 0x220000000, "1G"),)),
    ]
    diff = L.compare_layouts(bl.dm, dump)
    assert diff.gb == {4: ("1G", "table"), 8: ("1G", "table")}  # 4G-5G and 8G-9G: 1G leaves split at boot
    assert {m << 21 for m in diff.regions_to_4k} == REGIONS_TO_4K[name]
    assert diff.unexplained_mb == {}  # every other 2M difference is a 2M leaf inside those two GiB
    assert diff.mapped == []  # the same pages mapped, the same pte_none entries (0xbffd7000-0xc0000000)
    assert diff.attr_pages() == ATTR_PAGES[name]
    # /proc/meminfo = boot counts + splits: two 1G splits, the dump's 2M splits and 5 in the kernel's high map
    acc = L.meminfo_accounting(bl, diff, meminfo)
    assert acc == {"level3_splits": 2, "level2_splits": len(REGIONS_TO_4K[name]) + 5, "consistent": True,
                   "level3_direct": 2, "level2_direct": len(REGIONS_TO_4K[name]), "level2_outside": 5}
    # the BPF program pack: 512 ro global pages spread over three of the split 2M blocks
    pack = BPF if name != "boot" else {0x120E00000, 0x121000000, 0x237A00000}
    attrs = L.page_attrs(dump)
    n_ro = sum(int(np.count_nonzero(attrs[a >> 12 : (a >> 12) + 512] == (DEF & ~D.ATTR_RW))) for a in pack)
    assert n_ro == 512
    assert L.describe_region(dump, 0x3200000 >> 21, sections) == "kernel bss; ro"


@pytest.mark.parametrize("name", sorted(REGIONS_TO_4K))
def test_capture_boot_splits_before_system_running(shared_traces, name):
    """vmstat counts only splits after SYSTEM_RUNNING: the other 6 direct-map 2M splits (7 in boot) came before."""
    d, dump, _, _ = _capture(shared_traces, name)
    diff = L.compare_layouts(L.layout_from_memmap(L.read_memmap(d)), dump)
    vm = "vmstat-before.txt" if name != "boot" else "vmstat-after-dmdump-insmod.txt"
    vmstat = B.parse_vmstat((d / vm).read_text())
    assert vmstat["direct_map_level3_splits"] == 0
    assert len(diff.regions_to_4k) - vmstat["direct_map_level2_splits"] == (7 if name == "boot" else 6)


@pytest.mark.parametrize("name", sorted(REGIONS_TO_4K))
def test_capture_with_kernel_image_boot_cpa(shared_traces, name):
    d, dump, meminfo, sections = _capture(shared_traces, name)
    bl = L.build_layout(L.read_memmap(d), kernel_image=sections)
    assert bl.dm.direct_map_kb() == {"DirectMap4k": 3932 + 2 * 2048, "DirectMap2M": 2093056 - 2 * 2048,
                                     "DirectMap1G": 6 << 20}
    diff = L.compare_layouts(bl.dm, dump)
    assert {m << 21 for m in diff.regions_to_4k} == REGIONS_TO_4K[name] - {0x1E00000, 0x2800000}
    want = dict(ATTR_PAGES[name])
    want[_RO] -= KERNEL_RO_PAGES
    assert diff.attr_pages() == want
    assert not [r for r in diff.attrs if r[0] < 0x2A00 and r[1] > 0x1000]  # text/rodata/gaps as in the dump
    acc = L.meminfo_accounting(bl, diff, meminfo)
    assert acc["consistent"] and acc["level2_outside"] == 5 and acc["level3_splits"] == 2
    # with the IDT's address (the only ro page in bss) its 2M block matches too
    bl2 = L.build_layout(L.read_memmap(d), kernel_image={**sections, "idt": 0x3313000})
    diff2 = L.compare_layouts(bl2.dm, dump)
    assert {m << 21 for m in diff2.regions_to_4k} == REGIONS_TO_4K[name] - K3
    assert diff2.attr_pages()[_RO] == want[_RO] - 1
