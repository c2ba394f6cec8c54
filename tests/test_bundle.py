"""Tests of ptebench.parse.bundle: the real capture bundles and small constructed inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ptebench.errors import PtebenchError
from ptebench.parse.bundle import (
    bundle_trace_file,
    is_bundle,
    parse_buddyinfo,
    parse_direct_map_dump,
    parse_dmdump,
    parse_dmesg_running_ns,
    parse_firmware_memmap,
    parse_iomem,
    parse_meminfo,
    parse_ptdump,
    parse_vmstat,
    read_bundle,
)

TRACES = (Path(__file__).resolve().parents[1] / ".." / "shared" / "traces").resolve()
if not TRACES.is_dir():
    pytest.skip(f"capture bundles not found at {TRACES}", allow_module_level=True)

CAPTURES = sorted(p.name for p in TRACES.iterdir() if p.is_dir())
LEVEL_KEYS = (
    ("DirectMap4k", "dmdump_DirectMap4k_kB"),
    ("DirectMap2M", "dmdump_DirectMap2M_kB"),
    ("DirectMap1G", "dmdump_DirectMap1G_kB"),
)
_BUNDLES: dict[str, dict] = {}


def bundle(name: str) -> dict:
    """read_bundle once per capture for the whole module."""
    if name not in _BUNDLES:
        _BUNDLES[name] = read_bundle(TRACES / name)
    return _BUNDLES[name]


def test_all_captures_present() -> None:
    expected = {
        "boot",
        "forkexec",
        "memload",
        "mixed_small",
        "modules",
        "secretmem_64",
        "secretmem_1024",
        "secretmem_16384",
    }
    assert expected <= set(CAPTURES)


@pytest.mark.parametrize("name", CAPTURES)
def test_read_bundle_shape(name: str) -> None:
    b = bundle(name)
    assert is_bundle(TRACES / name)
    assert bundle_trace_file(TRACES / name).name == "trace.txt.xz"
    assert json.loads(json.dumps(b)) == b
    assert b["name"] == name
    assert b["meta"]["capture"] == name
    assert b["kernel_release"] == "6.1.0-56-amd64"
    assert b["cmdline"].startswith("console=ttyS0") and "\n" not in b["cmdline"]
    assert "trace.txt.xz" not in b["files"]
    assert b["files"]["meta.json"]["size"] == (TRACES / name / "meta.json").stat().st_size
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in b["files"].values())
    assert isinstance(b["trace_stats"], str) and "overrun: 0" in b["trace_stats"]
    iomem, firmware = b["memmap"]["iomem"], b["memmap"]["firmware"]
    assert {"start": 0x100000000, "end": 0x23FFFFFFF, "name": "System RAM", "depth": 0} in iomem
    assert {"start": 0x1000000, "end": 0x1E01D31, "name": "Kernel code", "depth": 1} in iomem
    assert max(r["depth"] for r in iomem) == 2
    assert {"start": 0x100000, "end": 0xBFFD6FFF, "type": "System RAM"} in firmware
    assert isinstance(b["system_running_ns"], int)


@pytest.mark.parametrize("name", CAPTURES)
def test_snapshots_are_well_formed(name: str) -> None:
    snapshots = bundle(name)["snapshots"]
    assert ({"after"} if name == "boot" else {"before", "after"}) <= set(snapshots)
    for kinds in snapshots.values():
        assert set(kinds) <= {"vmstat", "meminfo", "buddyinfo", "dmdump"}
        if "dmdump" in kinds:
            dump = kinds["dmdump"]
            assert dump["format"] == "dmdump"
            assert (dump["page_offset"], dump["high_memory"]) == (0xFF11000000000000, 0xFF11000240000000)
            assert dump["declared"] == {**dump["totals_kB"], "2M-regions-mapped-by-4K": len(dump["regions_2m_on_4k"])}
            assert dump["runs"][0]["phys_start"] == 0
            assert dump["runs"][-1]["phys_end"] == dump["high_memory"] - dump["page_offset"]
            for prev, run in zip(dump["runs"], dump["runs"][1:], strict=False):
                assert prev["phys_end"] == run["phys_start"]
        if "buddyinfo" in kinds:
            zones = kinds["buddyinfo"]
            assert [z["zone"] for z in zones] == ["DMA", "DMA32", "Normal"]
            assert all(z["node"] == 0 and len(z["free"]) == 11 for z in zones)


@pytest.mark.parametrize("name", CAPTURES)
def test_counters_agree_with_meta(name: str) -> None:
    b = bundle(name)
    snapshots, counters = b["snapshots"], b["meta"]["counters"]
    for when in ("before", "after"):
        for kind in ("vmstat", "meminfo"):
            for key, counter in counters[kind].items():
                if when in snapshots:
                    assert snapshots[when][kind][key] == counter[when], (when, key)
                else:  # boot: no before-snapshot; meta says 0 for the split counters (kernel start), else null
                    assert counter[when] in (None, 0), (when, key)


@pytest.mark.parametrize("name", CAPTURES)
def test_dmdump_agrees_with_meta(name: str) -> None:
    b = bundle(name)
    meta, snapshots = b["meta"], b["snapshots"]
    # Only boot and mixed_small record the walk's totals per snapshot in meta.json.
    for snap, meta_snap in meta.get("snapshots", {}).items():
        assert snapshots[snap]["vmstat"]["direct_map_level2_splits"] == meta_snap["direct_map_level2_splits"]
        assert snapshots[snap]["vmstat"]["direct_map_level3_splits"] == meta_snap["direct_map_level3_splits"]
        if "dmdump_2M_regions_on_4K" in meta_snap:
            dump = snapshots[snap]["dmdump"]
            for ours, theirs in LEVEL_KEYS:
                assert dump["totals_kB"][ours] == meta_snap[theirs], (snap, ours)
            assert len(dump["regions_2m_on_4k"]) == meta_snap["dmdump_2M_regions_on_4K"], snap
    if "before" not in snapshots:
        return
    # Every capture: the walk's before/after change equals meminfo's, and each level-2 split adds one 4K region.
    before, after = snapshots["before"]["dmdump"], snapshots["after"]["dmdump"]
    for ours, _ in LEVEL_KEYS:
        assert after["totals_kB"][ours] - before["totals_kB"][ours] == meta[f"{ours}_kB_delta"], ours
    grown = len(after["regions_2m_on_4k"]) - len(before["regions_2m_on_4k"])
    assert grown == meta["direct_map_level2_splits_delta"]
    assert set(before["regions_2m_on_4k"]) <= set(after["regions_2m_on_4k"])


def test_boot_bundle() -> None:
    b = bundle("boot")
    assert set(b["snapshots"]) == {"after", "after-dmdump-insmod"}
    assert set(b["snapshots"]["after-dmdump-insmod"]) == {"vmstat", "meminfo"}
    assert b["snapshots"]["after-dmdump-insmod"]["vmstat"]["direct_map_level2_splits"] == 2
    line = next(x for x in (TRACES / "boot" / "dmesg.txt").read_text().splitlines() if "Run /init as init" in x)
    seconds, fraction = re.search(r"\[\s*(\d+)\.(\d{6})\]", line).groups()
    assert b["system_running_ns"] == int(seconds) * 1_000_000_000 + int(fraction) * 1000
    # The unmapped PCI hole below 4 GiB is a non-present "--" run, outside the totals.
    runs = b["snapshots"]["after"]["dmdump"]["runs"]
    hole = next(r for r in runs if r["level"] == "none")
    assert (hole["phys_start"], hole["phys_end"], hole["count"], hole["present"]) == (0xC0000000, 1 << 32, 512, False)


def test_mixed_small_phases() -> None:
    snaps = bundle("mixed_small")["snapshots"]
    phases = {"phase1-forkexec", "phase2-secretmem", "phase3-modules", "phase4-memload"}
    assert phases <= set(snaps)
    assert all(set(snaps[p]) == {"vmstat", "meminfo", "buddyinfo", "dmdump"} for p in phases)
    # The one real level-3 split: a 1G mapping is gone after the secretmem phase.
    assert snaps["phase1-forkexec"]["dmdump"]["totals_kB"]["DirectMap1G"] == 4 << 20
    assert snaps["phase2-secretmem"]["dmdump"]["totals_kB"]["DirectMap1G"] == 3 << 20


def test_not_a_bundle(tmp_path: Path) -> None:
    assert not is_bundle(tmp_path)
    assert not is_bundle(tmp_path / "missing")
    with pytest.raises(PtebenchError, match="no trace file"):
        bundle_trace_file(tmp_path)
    (tmp_path / "trace.gz").write_bytes(b"")
    (tmp_path / "trace.txt").write_text("")
    assert is_bundle(tmp_path)
    assert bundle_trace_file(tmp_path).name == "trace.txt"


def test_minimal_bundle(tmp_path: Path) -> None:
    (tmp_path / "trace.txt").write_text("# tracer: nop\n")
    (tmp_path / "vmstat-before.txt").write_text("nr_free_pages 10\ndirect_map_level2_splits 0\n")
    b = read_bundle(tmp_path)
    assert b["snapshots"] == {"before": {"vmstat": {"nr_free_pages": 10, "direct_map_level2_splits": 0}}}
    assert b["meta"] is b["kernel_release"] is b["cmdline"] is b["system_running_ns"] is b["trace_stats"] is None
    assert b["memmap"] == {"iomem": None, "firmware": None}
    assert set(b["files"]) == {"vmstat-before.txt"}


def test_malformed_vmstat_line(tmp_path: Path) -> None:
    with pytest.raises(PtebenchError) as info:
        parse_vmstat("nr_free_pages 10\n\npgfree 1.5\n", file="v.txt")
    assert (info.value.file, info.value.line, info.value.text) == ("v.txt", 3, "pgfree 1.5")
    assert info.value.expected
    (tmp_path / "trace.txt").write_text("")
    (tmp_path / "vmstat-after.txt").write_text("a 1\nb 2\nc\n")
    with pytest.raises(PtebenchError) as info:
        read_bundle(tmp_path)
    assert (info.value.file, info.value.line, info.value.text) == (str(tmp_path / "vmstat-after.txt"), 3, "c")


def test_malformed_other_files(tmp_path: Path) -> None:
    cases = [
        (parse_meminfo, "MemTotal: 8 kB\nMemFree 7 kB\n", 2),
        (parse_buddyinfo, "Node 0, zone DMA 1 2\nNode 0, zone DMA32 x\n", 2),
        (parse_iomem, "00000000-00000fff : Reserved\n 00001000-0009fbff : odd indent\n", 2),
        (parse_firmware_memmap, "0x0 0x9fbff System RAM\n0x9fc00 Reserved\n", 2),
    ]
    for parse, text, line in cases:
        with pytest.raises(PtebenchError) as info:
            parse(text, file="f")
        assert (info.value.file, info.value.line) == ("f", line)
    (tmp_path / "trace.txt").write_text("")
    (tmp_path / "meta.json").write_text('{\n "a": 1,\n}\n')
    with pytest.raises(PtebenchError) as info:
        read_bundle(tmp_path)
    assert info.value.file == str(tmp_path / "meta.json") and info.value.line == 3


def test_small_parsers() -> None:
    assert parse_meminfo("MemTotal:        8129720 kB\nHugePages_Total:       0\nActive(anon):  12 kB\n") == {
        "MemTotal": 8129720,
        "HugePages_Total": 0,
        "Active(anon)": 12,
    }
    assert parse_buddyinfo("Node 0, zone      DMA      0      1      3 \n") == [
        {"node": 0, "zone": "DMA", "free": [0, 1, 3]}
    ]
    assert parse_iomem("00100000-bffd6fff : System RAM\n  01000000-01e01d31 : Kernel code\n") == [
        {"start": 0x100000, "end": 0xBFFD6FFF, "name": "System RAM", "depth": 0},
        {"start": 0x1000000, "end": 0x1E01D31, "name": "Kernel code", "depth": 1},
    ]
    assert parse_dmesg_running_ns("[    0.000000] Linux\n[    6.912345] Run /init as init process\n") == 6912345000
    assert parse_dmesg_running_ns("[12345.000001] Run /sbin/init as init process\n") == 12345000001000
    assert parse_dmesg_running_ns("[    6.912345] Freeing unused kernel image\n") is None


DMDUMP = """\
# dmdump PAGE_OFFSET=0xff11000000000000 high_memory=0xff11000080000000
0xff11000000000000-0xff11000000098000 phys 0x0000000000-0x0000098000    152 x 4K P  RW NX GLB
0xff11000000098000-0xff1100000009a000 phys 0x0000098000-0x000009a000      2 x 4K P  ro x  GLB
0xff1100000009a000-0xff11000000200000 phys 0x000009a000-0x0000200000    358 x 4K np ro x
0xff11000000200000-0xff11000000400000 phys 0x0000200000-0x0000400000      1 x 2M P  ro NX GLB
0xff11000000400000-0xff11000040000000 phys 0x0000400000-0x0040000000    510 x 2M P  RW NX GLB
0xff11000040000000-0xff11000080000000 phys 0x0040000000-0x0080000000    512 x -- np ro x
# DirectMap4k: 616 kB
# DirectMap2M: 1046528 kB
# DirectMap1G: 0 kB
# 2M-regions-mapped-by-4K: 1
"""


def test_dmdump_sample() -> None:
    dump = parse_direct_map_dump(DMDUMP, file="d")
    assert dump == parse_dmdump(DMDUMP, file="d")
    assert dump["format"] == "dmdump"
    assert (dump["page_offset"], dump["high_memory"]) == (0xFF11000000000000, 0xFF11000080000000)
    assert dump["totals_kB"] == {"DirectMap4k": 616, "DirectMap2M": 1046528, "DirectMap1G": 0}
    assert dump["declared"] == {**dump["totals_kB"], "2M-regions-mapped-by-4K": 1}
    assert dump["regions_2m_on_4k"] == [0]
    assert dump["runs"][1] == {
        "phys_start": 0x98000,
        "phys_end": 0x9A000,
        "level": "4K",
        "count": 2,
        "present": True,
        "rw": False,
        "nx": False,
        "global": True,
    }
    assert [r["present"] for r in dump["runs"]] == [True, True, False, True, True, False]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("# DirectMap4k: 616 kB", "# DirectMap4k: 620 kB", "DirectMap4k"),
        ("# 2M-regions-mapped-by-4K: 1", "# 2M-regions-mapped-by-4K: 2", "2M-regions"),
        ("# DirectMap1G: 0 kB\n", "", "no '# DirectMap1G'"),
    ],
)
def test_dmdump_declared_totals_disagree(old: str, new: str, message: str) -> None:
    with pytest.raises(PtebenchError, match=message) as info:
        parse_dmdump(DMDUMP.replace(old, new), file="dm.txt")
    assert info.value.file == "dm.txt"


def test_dmdump_bad_run() -> None:
    bad = DMDUMP.replace("    152 x 4K", "    151 x 4K")
    with pytest.raises(PtebenchError, match="count mismatch") as info:
        parse_dmdump(bad, file="dm.txt")
    assert info.value.line == 2
    with pytest.raises(PtebenchError) as info:
        parse_dmdump(DMDUMP.replace("x 2M P  ro", "x 2M Q  ro"), file="dm.txt")
    assert info.value.line == 5


PTDUMP = """\
---[ User Space ]---
0x0000000000000000-0xffff800000000000   16777088T                               pgd
---[ Kernel Space ]---
0xffff800000000000-0xffff888000000000         136T                               pgd
---[ Low Kernel Mapping ]---
0xffff888000000000-0xffff888000001000           4K     RW                     GLB NX pte
0xffff888000001000-0xffff888000099000         608K                               pte
0xffff888000099000-0xffff88800009b000           8K     ro                     GLB x  pte
0xffff88800009b000-0xffff888000200000        1428K     RW                     GLB NX pte
0xffff888000200000-0xffff888001000000          14M     RW         PSE         GLB NX pmd
0xffff888001000000-0xffff888001200000           2M     ro         PSE         GLB NX pmd
0xffff888001200000-0xffff888001400000           2M     ro                     GLB NX pte
0xffff888001400000-0xffff888040000000        1004M     RW         PSE         GLB NX pmd
0xffff888040000000-0xffff888100000000           3G     RW         PSE         GLB NX pud
0xffff888100000000-0xffff888140000000           1G                               pud
0xffff888140000000-0xffffc88000000000   67103744M                               pgd
---[ vmalloc() Area ]---
0xffffc90000000000-0xffffc90000005000          20K     RW                     GLB NX pte
"""


def test_ptdump_sample() -> None:
    dump = parse_direct_map_dump(PTDUMP, file="p")
    assert dump == parse_ptdump(PTDUMP, file="p")
    assert dump["format"] == "ptdump"
    assert (dump["page_offset"], dump["high_memory"], dump["declared"]) == (0xFFFF888000000000, None, {})
    assert [r["level"] for r in dump["runs"]] == ["4K", "4K", "4K", "4K", "2M", "2M", "4K", "2M", "1G", "1G", "none"]
    assert [r["count"] for r in dump["runs"][:10]] == [1, 152, 2, 357, 7, 1, 512, 502, 3, 1]
    assert [r["present"] for r in dump["runs"]] == [True, False, True, True, True, True, True, True, True, False, False]
    assert dump["runs"][2] == {
        "phys_start": 0x99000,
        "phys_end": 0x9B000,
        "level": "4K",
        "count": 2,
        "present": True,
        "rw": False,
        "nx": False,
        "global": True,
    }
    assert dump["totals_kB"] == {
        "DirectMap4k": 4 + 8 + 1428 + 2048,
        "DirectMap2M": (14 + 2 + 1004) * 1024,
        "DirectMap1G": 3 << 20,
    }
    assert dump["regions_2m_on_4k"] == [0, 9]
    assert dump["runs"][-1]["phys_start"] == 5 << 30


def test_ptdump_errors() -> None:
    with pytest.raises(PtebenchError, match="size mismatch") as info:
        parse_ptdump(PTDUMP.replace("   1428K", "   1432K"), file="p")
    assert info.value.line == 9
    with pytest.raises(PtebenchError, match="unknown flags") as info:
        parse_ptdump(PTDUMP.replace("RW         PSE         GLB NX pud", "RW  PSE  ZZZ GLB NX pud"), file="p")
    assert info.value.line == 14
    with pytest.raises(PtebenchError, match="Low Kernel Mapping"):
        parse_ptdump(PTDUMP.replace("Low Kernel Mapping", "LDT remap"), file="p")
    with pytest.raises(PtebenchError, match="not a direct-map dump"):
        parse_direct_map_dump("hello\n", file="p")
