"""Kernel eras: the five real kernels' kmem ``format`` files, gfp tables, migratetype numbering, inference.

For each kernel the expected gfp table is written out below from the kernel's own headers
(include/trace/events/gfpflags.h + include/linux/gfp.h of that version; the 5.10 Android common kernel
adds a ``__GFP_CMA`` bit, 0x1000000, to its movable composites), and lines are rendered here from the
format file's ``print fmt`` with a small printf and the kernel's ``trace_print_flags_seq()`` rules,
independently of ptebench.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ptebench
from ptebench import PtebenchError, summary
from ptebench.parse import eras

FORMATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "public" / "perfetto-kmem-formats"
KMEM = ("mm_page_alloc", "mm_page_free", "mm_page_free_batched", "mm_page_alloc_zone_locked", "mm_page_pcpu_drain",
        "mm_page_alloc_extfrag")


def _t(names: str, values: str) -> list[tuple[str, int]]:
    return [(n, int(v, 16)) for n, v in zip(names.split(), values.split(), strict=True)]


_OLD_NAMES = ("GFP_TRANSHUGE GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_TEMPORARY GFP_KERNEL GFP_NOFS GFP_ATOMIC "
              "GFP_NOIO GFP_HIGH GFP_WAIT GFP_IO GFP_COLD GFP_NOWARN GFP_REPEAT GFP_NOFAIL GFP_NORETRY GFP_COMP "
              "GFP_ZERO GFP_NOMEMALLOC ")
# 3.x: __GFP_WAIT 0x10 __GFP_HIGH 0x20 __GFP_IO 0x40 __GFP_FS 0x80 ... GFP_KERNEL = WAIT|IO|FS = 0xd0
TABLE_3_10 = _t(_OLD_NAMES + "GFP_MEMALLOC GFP_HARDWALL GFP_THISNODE GFP_RECLAIMABLE GFP_KMEMCG GFP_MOVABLE "
                "GFP_NOTRACK GFP_NO_KSWAPD GFP_OTHER_NODE",
                "4352da 200da 200d2 200d0 800d0 d0 50 20 10 20 10 40 100 200 400 800 1000 4000 8000 10000 2000 "
                "20000 40000 80000 100000 8 200000 400000 800000")
# 3.4: no __GFP_MEMALLOC (3.6) or __GFP_KMEMCG (3.8); __GFP_NOTRACK is 0 without CONFIG_KMEMCHECK
TABLE_3_4 = _t(_OLD_NAMES + "GFP_HARDWALL GFP_THISNODE GFP_RECLAIMABLE GFP_MOVABLE GFP_NOTRACK GFP_NO_KSWAPD "
               "GFP_OTHER_NODE",
               "4352da 200da 200d2 200d0 800d0 d0 50 20 10 20 10 40 100 200 400 800 1000 4000 8000 10000 20000 "
               "40000 80000 8 0 400000 800000")
# 4.4: __GFP_RECLAIMABLE 0x10, __GFP_ATOMIC 0x80000 (named GFP_ATOMIC too), DIRECT_RECLAIM 0x400000,
# KSWAPD_RECLAIM 0x2000000; GFP_KERNEL = RECLAIM|IO|FS = 0x24000c0
TABLE_4_4 = _t("GFP_TRANSHUGE GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_TEMPORARY GFP_KERNEL GFP_NOFS GFP_ATOMIC "
               "GFP_NOIO GFP_HIGH GFP_ATOMIC GFP_IO GFP_COLD GFP_NOWARN GFP_REPEAT GFP_NOFAIL GFP_NORETRY GFP_COMP "
               "GFP_ZERO GFP_NOMEMALLOC GFP_MEMALLOC GFP_HARDWALL GFP_THISNODE GFP_RECLAIMABLE GFP_MOVABLE "
               "GFP_NOTRACK GFP_DIRECT_RECLAIM GFP_KSWAPD_RECLAIM GFP_OTHER_NODE",
               "4352ca 24200ca 24200c2 24200c0 24000d0 24000c0 2400040 2080020 2400000 20 80000 40 100 200 400 800 "
               "1000 4000 8000 10000 2000 20000 40000 10 8 200000 400000 2000000 800000")
# 5.10 (mmflags.h): __GFP_ZERO 0x100, __GFP_ATOMIC 0x200, RECLAIM 0xc00; Android's __GFP_CMA 0x1000000
TABLE_5_10 = _t("GFP_TRANSHUGE GFP_TRANSHUGE_LIGHT GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_KERNEL_ACCOUNT "
                "GFP_KERNEL GFP_NOFS GFP_ATOMIC GFP_NOIO GFP_NOWAIT GFP_DMA __GFP_HIGHMEM GFP_DMA32 __GFP_HIGH "
                "__GFP_ATOMIC __GFP_IO __GFP_FS __GFP_NOWARN __GFP_RETRY_MAYFAIL __GFP_NOFAIL __GFP_NORETRY "
                "__GFP_COMP __GFP_ZERO __GFP_NOMEMALLOC __GFP_MEMALLOC __GFP_HARDWALL __GFP_THISNODE "
                "__GFP_RECLAIMABLE __GFP_MOVABLE __GFP_ACCOUNT __GFP_WRITE __GFP_RECLAIM __GFP_DIRECT_RECLAIM "
                "__GFP_KSWAPD_RECLAIM",
                "11c24ca 11c20ca 1100cca 100cc2 100cc0 400cc0 cc0 c40 a20 c00 800 1 2 4 20 200 40 80 2000 4000 8000 "
                "10000 40000 100 80000 20000 100000 200000 10 8 400000 1000 c00 400 800")

OLD_BATCHED = ["page", "pfn", "order", "cold"]
KERNELS = {
    # directory: (table, zero word, migratetypes, pointer hex digits, batched fields, sample masks)
    "android_hammerhead_MRA59G_3.4.0": (TABLE_3_4, "GFP_NOWAIT", "linux<4.4", 8, OLD_BATCHED,
                                        [0xD0, 0x200DA | 0x8000, 0, 0x4000D0, 0x10000D0, 0x20]),
    "android_flounder_lte_LRX16F_3.10.40": (TABLE_3_10, "GFP_NOWAIT", "linux<4.4", 16, OLD_BATCHED,
                                            [0xD0, 0x20, 0x200D0 | 0x100, 0, 0x10, 0x4000D0 | 0x1000000]),
    "android_seed_N2F62_3.10.49": (TABLE_3_10, "GFP_NOWAIT", "linux<4.4", 8, OLD_BATCHED,
                                   [0xD0, 0x200DA, 0, 0x100000 | 0xD0, 0x2000]),
    "android_walleye_OPM5.171019.017.A1_4.4.88": (TABLE_4_4, "GFP_NOWAIT", "linux-4.4+", 16, OLD_BATCHED,
                                                  [0x24000C0, 0x2080020, 0x80020, 0, 0x24000C0 | 0x8000, 0x10]),
    "android_raven_AOSP.MASTER_5.10.43": (TABLE_5_10, "none", "linux-4.4+", 16, ["page", "pfn", "order"],
                                          [0xCC0, 0x1100CCA, 0, 0x2800, 0x100CCA, 0x400CC0 | 0x100]),
}


@pytest.fixture(scope="module")
def formats_root() -> Path:
    if not FORMATS.is_dir():
        pytest.skip(f"format files not found at {FORMATS}")
    return FORMATS


def print_flags(table: list[tuple[str, int]], zero: str, mask: int) -> str:
    """kernel/trace/trace_output.c trace_print_flags_seq() behind show_gfp_flags()'s "?:" zero word."""
    if mask == 0:
        return zero
    out = []
    for name, value in table:
        if not mask:
            break
        if mask & value == value:
            out.append(name)
            mask &= ~value
    if mask:
        out.append(hex(mask))
    return "|".join(out)


def _print_fmt(directory: Path, event: str) -> str:
    text = (directory / event / "format").read_text()
    return re.search(r'^print fmt: "([^"]*)"', text, re.M)[1]


def render(fmt: str, values: dict[str, object]) -> str:
    """A print fmt's format string with each key's conversion replaced by its value."""
    out = []
    for token in fmt.split():
        key, _, conv = token.partition("=")
        if conv.isdigit():
            out.append(token)
            continue
        v = values[key]
        if conv == "%p":
            out.append(f"{key}={v}")
        elif conv.startswith("0x"):
            out.append(f"{key}={v:#x}")
        else:
            out.append(f"{key}={v}")
    return " ".join(out)


def entry(ts: int, event: str, fields: str, cpu: int = 1) -> str:
    """The pre-5.9 prefix: "%16s-%-5d [%03d] " and 4 irq-info flags."""
    return f"{'kworker/1:2':>16}-{321:<5} [{cpu:03d}] d..2 {ts // 10**6:>5}.{ts % 10**6:06d}: {event}: {fields}"


def _lines(directory: Path, table, zero, digits: int) -> tuple[list[str], list[dict]]:
    """One line per sample mask of mm_page_alloc plus one of every other event; their expected rows."""
    kernel = KERNELS[directory.name]
    pages = lambda i: f"{0xC0A1B2C0 + 64 * i:08x}" if digits == 8 else f"{0xFFFFFFBDC0246380 + 64 * i:016x}"  # noqa: E731
    lines, expected = [], []
    ts = 100_000_001
    for i, mask in enumerate(kernel[5]):
        vals = {"page": pages(i), "pfn": 299406 + i, "order": i % 3, "migratetype": 1,
                "gfp_flags": print_flags(table, zero, mask)}
        lines.append(entry(ts + i, "mm_page_alloc", render(_print_fmt(directory, "mm_page_alloc"), vals)))
        expected.append({"event": "mm_page_alloc", "pfn": 299406 + i, "order": i % 3, "migratetype": 1,
                         "gfp": vals["gfp_flags"], "gfp_mask": mask, "failed": False})
    others = {
        "mm_page_free": ({"pfn": 7, "order": 2}, {"pfn": 7, "order": 2}),
        "mm_page_free_batched": ({"pfn": 8, "cold": 1}, {"pfn": 8, "order": 0}),
        "mm_page_alloc_zone_locked": ({"pfn": 9, "order": 0, "migratetype": 2, "percpu_refill": 1},
                                      {"pfn": 9, "order": 0, "migratetype": 2, "percpu_refill": True}),
        "mm_page_pcpu_drain": ({"pfn": 10, "order": 0, "migratetype": 0}, {"pfn": 10, "migratetype": 0}),
        "mm_page_alloc_extfrag": ({"pfn": 11, "alloc_order": 0, "fallback_order": 3, "pageblock_order": 9,
                                   "alloc_migratetype": 0, "fallback_migratetype": 1, "fragmenting": 1,
                                   "change_ownership": 0},
                                  {"pfn": 11, "alloc_order": 0, "fallback_order": 3, "pageblock_order": 9,
                                   "alloc_migratetype": 0, "fallback_migratetype": 1, "fragmenting": True,
                                   "change_ownership": False}),
    }
    for j, (event, (vals, want)) in enumerate(others.items()):
        lines.append(entry(ts + 100 + j, event, render(_print_fmt(directory, event), {"page": pages(50 + j), **vals})))
        expected.append({"event": event, **want})
    return lines, expected


# ============================================================================================
# 1. the format files themselves


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_gfp_table_flag_by_flag(kernel: str, formats_root: Path) -> None:
    table, zero, migratetypes, _, batched, masks = KERNELS[kernel]
    formats = eras.load_event_formats(formats_root / kernel)
    assert sorted(formats) == sorted(KMEM)
    derived = eras.gfp_table_from_format(formats["mm_page_alloc"])
    assert derived is not None and derived.zero == zero
    assert len(derived.entries) == len(table)
    for (name, value), (want_name, want_value) in zip(derived.entries, table, strict=True):
        assert (name, hex(value)) == (want_name, hex(want_value))
    era = eras.era_from_formats(formats, str(formats_root / kernel))
    assert (era.migratetypes, era.pfn_radix) == (migratetypes, "dec")
    assert [f.key for f in era.specs["mm_page_free_batched"]] == batched
    assert [f.key for f in era.specs["mm_page_alloc"]] == ["page", "pfn", "order", "migratetype", "gfp_flags"]
    assert [f.column for f in era.specs["mm_page_alloc"]] == [None, "pfn", "order", "migratetype", "gfp"]
    for mask in masks:  # rendering and decoding follow the kernel, including repeated and zero entries
        text = print_flags(table, zero, mask)
        assert derived.render(mask) == text
        assert derived.mask(text) == mask


def test_quirks_of_real_tables() -> None:
    t34 = eras.GfpTable("3.4", TABLE_3_4, "GFP_NOWAIT", "test")
    # a zero-valued entry (__GFP_NOTRACK without CONFIG_KMEMCHECK) prints whenever bits remain
    assert t34.render(0x4000D0) == "GFP_KERNEL|GFP_NOTRACK|GFP_NO_KSWAPD"
    assert t34.render(0xD0) == "GFP_KERNEL"
    t44 = eras.GfpTable("4.4", TABLE_4_4, "GFP_NOWAIT", "test")
    # 4.4 names the composite and the __GFP_ATOMIC bit both GFP_ATOMIC: the position decides
    assert t44.render(0x2080020) == "GFP_ATOMIC" and t44.mask("GFP_ATOMIC") == 0x2080020
    assert t44.render(0x80020) == "GFP_HIGH|GFP_ATOMIC" and t44.mask("GFP_HIGH|GFP_ATOMIC") == 0x80020
    assert t44.mask("GFP_NOWAIT") == 0 and t44.mask("GFP_KERNEL|0x4000000") == 0x64000C0
    assert t44.mask("GFP_KERNEL|__GFP_ZERO") is None  # a 4.6+ name is not in the 4.4 table
    assert t44.mask("0x24000c0") == 0x24000C0 and t44.mask("37748928") == 0x24000C0


def test_eval_constant() -> None:
    assert eras.eval_constant("((( gfp_t)0x10u) | (( gfp_t)0x40u) | (( gfp_t)0x80u))") == 0xD0
    assert eras.eval_constant("(__force gfp_t)((1UL << 3) | 0x4)") == 0xC
    assert eras.eval_constant("~(( gfp_t)0x1u) & 0xffu") == 0xFE
    assert eras.eval_constant("(( gfp_t)(1U << ___GFP_DMA_BIT))") is None  # 6.10-6.12 enums
    assert eras.eval_constant("__import__('os').system('true')") is None


# ============================================================================================
# 2. lines rendered from each kernel's print fmt


def _ingest(tmp_path: Path, lines: list[str], **kw) -> tuple[ptebench.IngestSummary, ptebench.Trace]:
    path = tmp_path / "t.txt"
    path.write_text("\n".join(lines) + "\n")
    result = ptebench.ingest(path, tmp_path / "t.parquet", **kw)
    return result, ptebench.load(tmp_path / "t.parquet")


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_rendered_lines_with_format_files(kernel: str, formats_root: Path, tmp_path: Path) -> None:
    table, zero, migratetypes, digits, _, _ = KERNELS[kernel]
    lines, expected = _lines(formats_root / kernel, table, zero, digits)
    result, trace = _ingest(tmp_path, lines, event_formats=formats_root / kernel)
    assert (result.rows, result.skipped, result.warnings) == (len(lines), {}, {})
    rows = sorted(trace.table.to_pylist(), key=lambda r: r["seq"])
    for row, want in zip(rows, expected, strict=True):
        assert {k: row[k] for k in want} == want
    meta = trace.meta
    assert meta["kmem_keyed_rows"] == {}  # every line took the print fmt's own field list
    assert meta["event_formats"] == str(formats_root / kernel)
    assert meta["gfp_table"] == f"format:{kernel}"
    assert [tuple(e) for e in meta["gfp_table_entries"]["entries"]] == table
    assert meta["migratetype_table"] == migratetypes
    assert meta["pfn_radix"] == ["dec"] and meta["pfn_radix_from"].startswith("print fmt in ")
    if migratetypes == "linux<4.4":
        assert meta["migratetype_names"]["1"] == "Reclaimable"
        assert list(summary.order_by_migratetype(trace).columns) == ["Reclaimable"]  # migratetype=1 before 4.4
    else:
        assert list(summary.order_by_migratetype(trace).columns) == ["Movable"]


@pytest.mark.parametrize(("kernel", "table_id", "exact"), [
    ("android_hammerhead_MRA59G_3.4.0", "linux-3.10", False),  # 3.4 has __GFP_NOTRACK = 0, 3.10 does not
    ("android_flounder_lte_LRX16F_3.10.40", "linux-3.10", True),
    ("android_seed_N2F62_3.10.49", "linux-3.10", True),
    ("android_walleye_OPM5.171019.017.A1_4.4.88", "linux-4.4", True),
    ("android_raven_AOSP.MASTER_5.10.43", "linux-6.1", False),  # Android's __GFP_CMA bit is in no built-in table
])
def test_rendered_lines_inferred(kernel: str, table_id: str, exact: bool, formats_root: Path, tmp_path: Path) -> None:
    table, zero, migratetypes, digits, _, masks = KERNELS[kernel]
    lines, expected = _lines(formats_root / kernel, table, zero, digits)
    result, trace = _ingest(tmp_path, lines)
    assert (result.rows, result.skipped) == (len(lines), {})
    meta = trace.meta
    assert meta["gfp_table"] == table_id and result.gfp_table == table_id
    assert meta["gfp_table_from"].startswith("inferred from ")
    assert meta["kernel_era"]["from"].startswith("inferred from ")
    assert "prefix: 4 irq-info flag characters (before 5.15)" in meta["kernel_era"]["evidence"]
    assert "radix: pfn=%lu (before 5.14)" in meta["kernel_era"]["evidence"]
    assert meta["migratetype_table"] == migratetypes
    if "4.4" in kernel:  # no 4.4-only name: the print order of "GFP_HIGH|GFP_ATOMIC" decides
        assert meta["kernel_era"]["evidence"][-1] == ("gfp strings that print in linux-4.4's table order only "
                                                      "(6 of 6 against 5 for linux-3.10)")
        assert (meta["kernel_era"]["min"], meta["kernel_era"]["before"]) == ("4.4", "4.6")
    builtin = eras.BUILTIN_TABLES[table_id]
    got = {r["gfp"]: r["gfp_mask"] for r in trace.table.to_pylist() if r["event"] == "mm_page_alloc"}
    assert got == {e["gfp"]: builtin.mask(e["gfp"]) for e in expected if e["event"] == "mm_page_alloc"}
    truth = {e["gfp"]: e["gfp_mask"] for e in expected if e["event"] == "mm_page_alloc"}
    assert (got == truth) is exact


def test_kernel_version_picks_tables(formats_root: Path, tmp_path: Path) -> None:
    kernel = "android_seed_N2F62_3.10.49"
    table, zero, _, digits, _, _ = KERNELS[kernel]
    lines, expected = _lines(formats_root / kernel, table, zero, digits)
    _, trace = _ingest(tmp_path, lines, kernel_version="3.10.49")
    assert (trace.meta["gfp_table"], trace.meta["gfp_table_from"]) == ("linux-3.10", "kernel 3.10.49 (--kernel-version)")
    assert trace.meta["migratetype_table"] == "linux<4.4"
    assert [r["gfp_mask"] for r in sorted(trace.table.to_pylist(), key=lambda r: r["seq"])] == [
        e.get("gfp_mask") for e in expected]
    _, trace = _ingest(tmp_path, lines, kernel_version="4.9.0")  # 4.6-4.14: no built-in table holds its bits
    assert trace.meta["gfp_table"] is None and "--event-formats" in trace.meta["gfp_table_from"]
    assert trace.table.column("gfp_mask").null_count == len(lines)
    with pytest.raises(PtebenchError, match="not a kernel version"):
        _ingest(tmp_path, lines, kernel_version="bookworm")


def test_format_files_inside_a_bundle(formats_root: Path, tmp_path: Path) -> None:
    kernel = "android_walleye_OPM5.171019.017.A1_4.4.88"
    table, zero, _, digits, _, _ = KERNELS[kernel]
    lines, expected = _lines(formats_root / kernel, table, zero, digits)
    bundle = tmp_path / "bundle"
    (bundle / "events" / "kmem").mkdir(parents=True)
    for event in KMEM:
        (bundle / "events" / "kmem" / event).mkdir()
        (bundle / "events" / "kmem" / event / "format").write_bytes((formats_root / kernel / event / "format").read_bytes())
    (bundle / "trace.txt").write_text("\n".join(lines) + "\n")
    ptebench.ingest(bundle, tmp_path / "b.parquet")
    trace = ptebench.load(tmp_path / "b.parquet")
    assert trace.meta["event_formats"] == str(bundle / "events")
    assert [r["gfp_mask"] for r in sorted(trace.table.to_pylist(), key=lambda r: r["seq"])] == [
        e.get("gfp_mask") for e in expected]


def test_format_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PtebenchError, match="needs a directory"):
        eras.load_event_formats(tmp_path / "nope")
    with pytest.raises(PtebenchError, match="no kmem event format files"):
        eras.load_event_formats(tmp_path)
    (tmp_path / "mm_page_free").mkdir()
    (tmp_path / "mm_page_free" / "format").write_text("name: mm_page_free\nformat:\n")
    with pytest.raises(PtebenchError, match="not a tracefs event format file"):
        eras.load_event_formats(tmp_path)
    (tmp_path / "mm_page_free" / "format").write_text('name: mm_page_free\nprint fmt: "page=%p pfn=%lx order=%d"\n')
    with pytest.raises(PtebenchError, match="without 0x"):
        eras.era_from_formats(eras.load_event_formats(tmp_path), str(tmp_path))


def test_radix_differs_from_format_files(formats_root: Path, tmp_path: Path) -> None:
    line = entry(100_000_001, "mm_page_free", "page=00000000d2be5665 pfn=0x1234 order=0")
    result, _ = _ingest(tmp_path, [line], event_formats=formats_root / "android_raven_AOSP.MASTER_5.10.43")
    assert result.rows == 1 and result.warnings == {"pfn_radix_differs_from_event_formats": 1}


# ============================================================================================
# 3. inference from the header, the prefix and the radix

HEADER_6_1 = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 3/3   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def test_inferred_modern_era(tmp_path: Path) -> None:
    line = ("              sh-781     [004] .....    31.300106: mm_page_alloc: page=00000000d2be5665 pfn=0x1234 "
            "order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO")
    _, trace = _ingest(tmp_path, [HEADER_6_1 + line])
    era = trace.meta["kernel_era"]
    assert era["evidence"] == [
        "header: 'irqs-off/BH-disabled' legend (trace_output.c, 5.18+)",
        "prefix: 5 irq-info flag characters (migrate-disable, 5.15+)",
        "radix: pfn=0x%lx (5.14+, 'mm, tracing: Unify PFN format strings')",
        "page=%p hashed (4.15+)",
        "gfp names ['__GFP_ZERO'] (mmflags.h, 4.6+)",
    ]
    assert (era["min"], era["before"]) == ("5.18", None)
    assert trace.meta["gfp_table"] == "linux-6.1"
    assert trace.meta["gfp_table_from"].endswith("; assumes the bit values of 4.15-6.2")
    assert trace.table.column("gfp_mask").to_pylist() == [0x100DCA]


def test_inferred_conflict_and_default(tmp_path: Path) -> None:
    # a 5-flag prefix with a decimal pfn cannot come from one kernel's own text
    conflict = ("              sh-781     [004] .....    31.300106: mm_page_alloc: page=00000000d2be5665 pfn=4660 "
                "order=0 migratetype=1 gfp_flags=GFP_KERNEL")
    _, trace = _ingest(tmp_path, [conflict])
    assert trace.meta["kernel_era"]["min"] is None and trace.meta["kernel_era"]["from"].startswith("conflicting")
    assert trace.meta["gfp_table_from"].startswith("gfp spelling only")
    # nothing tells the era: the 6.1 table, said to be a default
    plain = "              sh-781     [004]    31.300106: mm_page_free: page=(null) pfn=0x1234 order=0"
    _, trace = _ingest(tmp_path, [plain.replace("pfn=0x1234", "pfn=4660")])
    assert trace.meta["gfp_table"] == "linux-6.1"
