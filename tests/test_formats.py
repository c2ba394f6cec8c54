"""Input formats: detection, trace-cmd report, perf script, systrace HTML and trace.dat.

The format fixtures (``tests/fixtures/formats``) are the real ``secretmem_64`` capture re-printed in
each tool's layout by ``make_fixtures.py``; every row they give must equal the row the kernel's own
text gives, up to what the tool prints differently.  The public files (LISA, TRAPpy) are real
tool output; their expected counts are read from the files here with small regexes.
"""

from __future__ import annotations

import collections
import lzma
import os
import re
import stat
from pathlib import Path

import pytest

import ptebench
from ptebench import PtebenchError
from ptebench.parse import formats

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "formats"
PUBLIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "public"

COLUMNS = ("ts_ns", "cpu", "pid", "comm", "event", "pfn", "order", "migratetype", "gfp", "gfp_mask", "failed",
           "percpu_refill", "fields")


@pytest.fixture(scope="module")
def public() -> Path:
    if not PUBLIC.is_dir():
        pytest.skip(f"public trace files not found at {PUBLIC}")
    return PUBLIC


@pytest.fixture(scope="module")
def capture(repo_traces: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The kernel-text capture, row by row in input order, with each row's stack frames."""
    path = repo_traces / "secretmem_64" / "trace.txt.xz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return rows_of(path, tmp_path_factory.mktemp("capture") / "ftrace.parquet")


def rows_of(path: Path, out: Path, **kw) -> list[dict]:
    ptebench.ingest(path, out, **kw)
    trace = ptebench.load(out)
    rows = sorted(trace.table.to_pylist(), key=lambda r: r["seq"])
    for r in rows:
        r["frames"] = None if r["stack_id"] is None else tuple(trace.frames(r["stack_id"]))
    return rows


def ingest_text(tmp_path: Path, text: str, name: str = "t.txt", **kw) -> tuple[ptebench.IngestSummary, ptebench.Trace]:
    path = tmp_path / name
    path.write_text(text)
    summary = ptebench.ingest(path, tmp_path / (name + ".parquet"), **kw)
    return summary, ptebench.load(tmp_path / (name + ".parquet"))


# ============================================================================================
# 1. detection


@pytest.mark.parametrize(("name", "fmt", "evidence"), [
    ("lisa-tests/trace.txt", "trace-cmd", "preamble line 'version = 6'"),
    ("trappy-tests/trace_idle_unsorted.txt", "trace-cmd", "preamble line 'version = 6'"),
    ("trappy-tests/trace_empty.txt", "trace-cmd", "preamble line 'version = 6'"),
    ("trappy-tests/trace_failed_to_parse.txt", "trace-cmd", "event name padded"),
    ("trappy-tests/trace_systrace.html", "systrace", "HTML"),
    ("trappy-tests/trace_legacy_systrace.html", "systrace", "HTML"),
    ("trappy-tests/raw_trace.dat", "trace-dat", "magic"),
])
def test_detect_public_files(name: str, fmt: str, evidence: str, public: Path) -> None:
    got, why = formats.sniff((public / name).read_bytes()[:1 << 16])
    assert got == fmt
    assert evidence in why


@pytest.mark.parametrize(("fixture", "fmt"), [
    ("secretmem_64.trace-cmd.txt.xz", "trace-cmd"),
    ("secretmem_64.perf-script.txt.xz", "perf-script"),
])
def test_detect_fixtures(fixture: str, fmt: str, repo_traces: Path) -> None:
    assert formats.sniff(lzma.decompress((FIXTURES / fixture).read_bytes()))[0] == fmt
    kernel = lzma.decompress((repo_traces / "secretmem_64" / "trace.txt.xz").read_bytes())
    assert formats.sniff(kernel) == ("ftrace", "tracefs header '# tracer: nop'")


@pytest.mark.parametrize(("head", "fmt"), [
    # no preamble: the padded event name gives trace-cmd away
    ("          <idle>-0     [001]    76.222125: sched_wakeup:          comm=rcu_preempt pid=8\n", "trace-cmd"),
    # the kernel prints one space after the event name
    ("              sh-781   [004] ...1    31.300106: mm_page_alloc: page=ffffffbdc0246380 pfn=299406 "
     "order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE\n", "ftrace"),
    ("perf  6503 [000]  1567.570191:             kmem:mm_page_alloc: page=0x16c904 pfn=1493252 order=0 "
     "migratetype=0 gfp_flags=GFP_KERNEL\n", "perf-script"),
    ("            perf  6503/6503  [000]  1567.570191: kmem:mm_page_free: page=0x16c904 pfn=1493252 order=0\n",
     "perf-script"),
    ("CPU 0 is empty\nCPU 1 is empty\ncpus=8\n", "trace-cmd"),
    ("<!DOCTYPE html>\n<html>\n", "systrace"),
    ("no trace here\n", "ftrace"),
])
def test_detect_heads(head: str, fmt: str) -> None:
    assert formats.sniff(head.encode())[0] == fmt


# ============================================================================================
# 2. the real capture re-printed by trace-cmd and perf


def _as_kernel(row: dict) -> dict:
    """What the kernel's own text says for the event a tool printed differently."""
    row = dict(row)
    if row["event"] in ("print", "ftrace:print"):  # trace_marker entries: "print: tracing_mark_write: ..."
        assert row["fields"].startswith("tracing_mark_write: ")
        row["event"], row["fields"] = "tracing_mark_write", row["fields"].removeprefix("tracing_mark_write: ")
    row["event"] = row["event"].removeprefix("probe:")
    return row


@pytest.mark.parametrize("fixture", ["secretmem_64.trace-cmd.txt.xz", "secretmem_64.trace-cmd-ns.txt.xz"])
def test_trace_cmd_report_of_the_capture(fixture: str, capture: list[dict], tmp_path: Path) -> None:
    rows = rows_of(FIXTURES / fixture, tmp_path / "tc.parquet")
    assert len(rows) == len(capture) == 477
    ns = "-ns" in fixture
    for got, want in zip(rows, capture, strict=True):
        got = _as_kernel(got)
        expected = {c: want[c] for c in COLUMNS}
        if ns:  # make_fixtures.py appended the kernel line number's last three digits as nanoseconds
            expected["ts_ns"] += want["line"] % 1000
        assert {c: got[c] for c in COLUMNS} == expected
        assert got["frames"] == want["frames"]
        assert got["line"] == want["line"] - 10  # 12 header lines became "version = 6" and "cpus=2"
        assert got["lat_flags"] is None and len(want["lat_flags"]) == 5  # trace-cmd 2.x prints no irq-info
    meta = ptebench.load(tmp_path / "tc.parquet").meta
    assert meta["format"] == "trace-cmd"
    assert meta["tool_preamble"] == {"0": {"version": 6, "cpus": 2}}
    assert meta["ts_resolution_ns"] == (1 if ns else 1000)
    assert meta["line_kinds"] == {"comment": 2, "event": 477, "frame": 3179, "skipped": 0, "stack": 244}


def test_perf_script_of_the_capture(capture: list[dict], tmp_path: Path) -> None:
    path = FIXTURES / "secretmem_64.perf-script.txt.xz"
    rows = rows_of(path, tmp_path / "perf.parquet")
    text_lines = lzma.decompress(path.read_bytes()).decode().split("\n")
    assert len(rows) == 477
    for got, want in zip(rows, capture, strict=True):
        assert {c: _as_kernel(got)[c] for c in COLUMNS} == {c: want[c] for c in COLUMNS}
        assert got["frames"] == want["frames"]  # the callchain under the sample line
        assert got["tgid"] is None
        line = text_lines[got["line"] - 1]
        assert re.search(rf"\s{got['pid']} \[{got['cpu']:03d}\]", line), line
    trace = ptebench.load(tmp_path / "perf.parquet")
    assert trace.meta["event_renames"] == {"kmem:mm_page_alloc": "mm_page_alloc", "kmem:mm_page_free": "mm_page_free",
                                           "kmem:mm_page_free_batched": "mm_page_free_batched"}
    assert trace.meta["line_kinds"] == {"blank": 244, "event": 477, "frame": 2551, "skipped": 0}
    assert trace.meta["stacks"]["attached"] == 244


# ============================================================================================
# 3. perf script and trace-cmd line variants

PERF_51 = (  # trace-formats.md 1.5: kernel 5.1-rc3, decimal pfn, a kernel and a user frame
    "perf  6503 [000]  1567.570191:             kmem:mm_page_alloc: page=0x16c904 pfn=1493252 order=0 "
    "migratetype=0 gfp_flags=GFP_KERNEL\n"
    "\t    ffffffffb523e2ae __alloc_pages_nodemask+0x22e (/lib/modules/5.1.0-rc3+/build/vmlinux)\n"
    "\t    ffffffffb52383bd __get_free_pages+0xd (/lib/modules/5.1.0-rc3+/build/vmlinux)\n"
    "\t        7f71e92d03e8 __poll+0x18 (/usr/lib64/libc-2.28.so)\n"
    "\n"
)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(PERF_51, {"comm": "perf", "pid": 6503, "tgid": None, "cpu": 0, "ts_ns": 1_567_570_191_000,
                           "event": "mm_page_alloc", "pfn": 1493252, "gfp_mask": 0xCC0,
                           "frames": ("__alloc_pages_nodemask", "__get_free_pages", "__poll")}, id="perf-5.1"),
    pytest.param("            perf  6503/6504  [002]  1567.570191123: kmem:mm_page_free: page=0x16c904 "
                 "pfn=0x16c904 order=3\n",
                 {"pid": 6504, "tgid": 6503, "cpu": 2, "ts_ns": 1_567_570_191_123, "event": "mm_page_free",
                  "order": 3, "frames": None}, id="pid-tid-ns"),
    pytest.param("     Web Content    4411 [001]   200.000001:          1 kmem:mm_page_free: page=0x1 pfn=0x1 "
                 "order=0\n", {"comm": "Web Content", "pid": 4411, "pfn": 1}, id="comm-spaces-period"),
    pytest.param("            perf    6503 [000]  1567.570191: kmem:mm_page_alloc: page=0xffffea00001347a7 "
                 "pfn=0x1347a7 order=0 migratetype=1 gfp_flags=0x152c4a\n"
                 "\tffffffff8129a0ca [unknown] ([kernel.kallsyms])\n",
                 {"pid": 6503, "gfp": "0x152c4a", "gfp_mask": 0x152C4A, "frames": ("[unknown]",)},
                 id="tid7-numeric-gfp-unknown-frame"),
    pytest.param("       swapper     0 [003]   300.000001:      sched:sched_switch: prev_comm=swapper/3 "
                 "prev_pid=0 ==> next_comm=sh next_pid=5\n",
                 {"event": "sched:sched_switch", "fields": "prev_comm=swapper/3 prev_pid=0 ==> next_comm=sh "
                  "next_pid=5", "pfn": None}, id="generic"),
])
def test_perf_variants(text: str, expected: dict, tmp_path: Path) -> None:
    summary, trace = ingest_text(tmp_path, text)
    assert (summary.rows, summary.skipped, summary.warnings) == (1, {}, {})
    assert trace.meta["format"] == "perf-script"
    (row,) = trace.table.to_pylist()
    row["frames"] = None if row["stack_id"] is None else tuple(trace.frames(row["stack_id"]))
    assert {k: row[k] for k in expected} == expected


TRACE_CMD_LINES = [
    # trace-formats.md 1.4: trace-cmd 3.x with latency flags, a 6.10+ kernel's numeric gfp
    pytest.param("make-16810 [004] .....  2319.000857: mm_page_alloc:        page=0xffffea00001347a7 pfn=0x1347a7 "
                 "order=0 migratetype=1 gfp_flags=0x152c4a",
                 {"comm": "make", "pid": 16810, "lat_flags": ".....", "pfn": 0x1347A7, "gfp": "0x152c4a",
                  "gfp_mask": 0x152C4A, "failed": False}, id="flags-numeric-gfp"),
    pytest.param("<...>-187168 [003] 14540.343835: mm_page_alloc:        page=0x3070e0 pfn=3174624 order=1 "
                 "migratetype=0 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO",
                 {"comm": "<...>", "pid": 187168, "pfn": 3174624, "order": 1, "gfp_mask": 0x400DC0}, id="decimal-pfn"),
    # libtraceevent cannot parse the print fmt: raw struct fields, gfp_t in decimal
    pytest.param("     kworker/5:2-1497  [005]   454.414591: mm_page_alloc:        [FAILED TO PARSE] pfn=0x100ae8 "
                 "order=1 gfp_flags=4197824 migratetype=0",
                 {"pfn": 0x100AE8, "order": 1, "migratetype": 0, "gfp": "4197824", "gfp_mask": 0x400DC0,
                  "failed": False}, id="failed-to-parse-kmem"),
    # trace-cmd report -R: raw fields, unsigned long as 0x%llx, -1UL for a failed allocation
    pytest.param("     kworker/5:2-1497  [005]   454.414592: mm_page_alloc:        pfn=0xffffffffffffffff order=2 "
                 "gfp_flags=0xcc0 migratetype=1",
                 {"pfn": None, "failed": True, "order": 2, "gfp_mask": 0xCC0}, id="raw-failed"),
    pytest.param("     kworker/5:2-1497  [005]   454.414593: mm_page_alloc_zone_locked: pfn=0x1230b6 order=0 "
                 "migratetype=1",
                 {"pfn": 0x1230B6, "migratetype": 1, "percpu_refill": None}, id="raw-zone-locked"),
    pytest.param("     kworker/5:2-1497  [005]   454.414594: mm_page_free_batched: pfn=0x1230b6",
                 {"pfn": 0x1230B6, "order": 0}, id="raw-batched"),
    pytest.param("     kworker/5:2-1497  [005]   454.414603: thermal_power_cpu_get_power: [FAILED TO PARSE] "
                 "cpumask=ARRAY[0f, 00, 00, 00, 00, 00, 00, 00] freq=0x82208 load_len=4",
                 {"event": "thermal_power_cpu_get_power", "fields": "[FAILED TO PARSE] cpumask=ARRAY[0f, 00, 00, "
                  "00, 00, 00, 00, 00] freq=0x82208 load_len=4"}, id="failed-to-parse-generic"),
]


@pytest.mark.parametrize(("line", "expected"), TRACE_CMD_LINES)
def test_trace_cmd_variants(line: str, expected: dict, tmp_path: Path) -> None:
    summary, trace = ingest_text(tmp_path, "CPU 0 is empty\ncpus=8\n" + line + "\n")
    assert (summary.rows, summary.skipped, summary.warnings) == (1, {}, {})
    assert trace.meta["tool_preamble"] == {"0": {"empty_cpus": [0], "cpus": 8}}
    (row,) = trace.table.to_pylist()
    assert row["line"] == 3
    assert {k: row[k] for k in expected} == expected


def test_trace_cmd_user_stack_and_fields_padding(tmp_path: Path) -> None:
    text = (
        "cpus=1\n"
        "              sh-5     [000]   10.000001: mm_page_free:         page=0x1 pfn=0x1 order=0\n"
        "              sh-5     [000]   10.000002: kernel_stack:         <stack trace>\n"
        "=> free_pages (ffffffff81000001)\n"
        "=> do_exit (ffffffff81000002)\n"
        "              sh-5     [000]   10.000003: user_stack:           <user stack trace>\n"
        "=>  <00007f0000000001>\n"
    )
    summary, trace = ingest_text(tmp_path, text)
    assert summary.rows == 1 and summary.stacks == 1
    assert summary.warnings == {"user_stack_frames": 1}
    (row,) = trace.table.to_pylist()
    assert trace.frames(row["stack_id"]) == ["free_pages", "do_exit"]


# ============================================================================================
# 4. the real public files

_TC_ENTRY = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<ts>\d+\.\d+):\s+(?P<ev>[^\s:]+):\s+"
                       r"(?P<rest>.*)$")


def _entries(path: Path) -> list[re.Match]:
    return [m for line in path.read_text().splitlines() if (m := _TC_ENTRY.match(line))]


@pytest.mark.parametrize(("name", "preamble", "inversions"), [
    ("lisa-tests/trace.txt", {"version": 6, "cpus": 6}, {}),
    ("trappy-tests/trace_idle_unsorted.txt", {"version": 6, "cpus": 8}, {6: 1}),
    ("trappy-tests/trace_empty.txt", {"version": 6, "cpus": 5}, {}),
    ("trappy-tests/trace_failed_to_parse.txt", None, {}),
])
def test_public_trace_cmd_files(name: str, preamble: dict | None, inversions: dict, public: Path,
                                tmp_path: Path) -> None:
    path = public / name
    entries = _entries(path)
    summary = ptebench.ingest(path, tmp_path / "p.parquet")
    trace = ptebench.load(tmp_path / "p.parquet")
    assert summary.rows == len(entries) > 10
    assert (summary.skipped, summary.warnings) == ({}, {})
    assert summary.events == dict(collections.Counter(m["ev"] for m in entries))
    assert summary.inversions == inversions
    assert trace.meta["tool_preamble"] == ({"0": preamble} if preamble else {})
    rows = sorted(trace.table.to_pylist(), key=lambda r: r["seq"])
    for row, m in zip(rows, entries, strict=True):
        sec, frac = m["ts"].split(".")
        assert (row["comm"], row["pid"], row["cpu"], row["ts_ns"], row["event"], row["fields"]) == (
            m["comm"].strip(), int(m["pid"]), int(m["cpu"]), int(sec) * 10**9 + int(frac) * 1000, m["ev"], m["rest"])


def test_lisa_trace_first_row(public: Path, tmp_path: Path) -> None:
    ptebench.ingest(public / "lisa-tests" / "trace.txt", tmp_path / "l.parquet")
    row = min(ptebench.load(tmp_path / "l.parquet").table.to_pylist(), key=lambda r: r["seq"])
    assert {k: row[k] for k in ("line", "comm", "pid", "cpu", "ts_ns", "event", "fields", "lat_flags", "tgid")} == {
        "line": 3, "comm": "<...>", "pid": 1701, "cpu": 1, "ts_ns": 76_211_513_000, "event": "sched_switch",
        "fields": "prev_comm=trace-cmd prev_pid=1701 prev_prio=120 prev_state=64 next_comm=swapper/1 next_pid=0 "
                  "next_prio=120", "lat_flags": None, "tgid": None}


_SYSTRACE_ENTRY = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
                             r"(?P<flags>\S+)\s+(?P<ts>\d+\.\d+):\s(?P<ev>[^\s:]+):\s(?P<rest>.*)$")


@pytest.mark.parametrize(("name", "rows"), [("trappy-tests/trace_systrace.html", 10),
                                            ("trappy-tests/trace_legacy_systrace.html", 15)])
def test_systrace_html(name: str, rows: int, public: Path, tmp_path: Path) -> None:
    path = public / name
    html = path.read_text().split("\n")
    summary = ptebench.ingest(path, tmp_path / "s.parquet")
    trace = ptebench.load(tmp_path / "s.parquet")
    assert (summary.rows, summary.skipped, summary.warnings) == (rows, {}, {})
    assert trace.meta["format"] == "systrace"
    assert sum(trace.meta["line_kinds"].values()) == len(html) - 1  # every line of the HTML file is accounted for
    for row in trace.table.to_pylist():  # line numbers are those of the HTML file
        m = _SYSTRACE_ENTRY.match(html[row["line"] - 1])
        assert m is not None, html[row["line"] - 1]
        tgid = None if m["tgid"] is None or m["tgid"].startswith("-") else int(m["tgid"])
        assert (row["comm"], row["pid"], row["tgid"], row["cpu"], row["lat_flags"], row["event"], row["fields"]) == (
            m["comm"], int(m["pid"]), tgid, int(m["cpu"]), m["flags"], m["ev"], m["rest"])
    assert trace.meta["trace_headers"][0]["entries_in_buffer"] in (71906, 1023529)


def test_systrace_skips_json_blocks(tmp_path: Path) -> None:
    text = ('<!DOCTYPE html>\n<html>\n<script class="trace-data" type="application/json">\n{"traceEvents": []}\n'
            '</script>\n<script class="trace-data" type="application/text">\nTRACE:\n# tracer: nop\n'
            '              sh-5     [000] ....   10.000001: mm_page_free: page=0000000011112222 pfn=0x1 order=0\n'
            '  </script>\n</html>\n')
    summary, trace = ingest_text(tmp_path, text, "t.html")
    assert summary.rows == 1 and trace.table.column("line").to_pylist() == [9]
    assert trace.meta["tool_preamble"] == {"0": {"atrace": True}}


# ============================================================================================
# 5. trace.dat through trace-cmd


def test_trace_dat_without_trace_cmd(public: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats.shutil, "which", lambda name: None)
    with pytest.raises(PtebenchError) as info:
        ptebench.ingest(public / "trappy-tests" / "raw_trace.dat", tmp_path / "d.parquet")
    assert "trace-cmd" in info.value.message and "not installed" in info.value.message
    assert info.value.file == str(public / "trappy-tests" / "raw_trace.dat")
    assert "trace-cmd report" in info.value.expected
    assert not (tmp_path / "d.parquet").exists()


def _fake_trace_cmd(tmp_path: Path, body: str, code: int = 0) -> Path:
    """A stand-in 'trace-cmd' that prints a report and records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "report.txt").write_text(body)
    script = bindir / "trace-cmd"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args.txt\ncat {tmp_path}/report.txt\n'
                      f'echo "trace-cmd: some warning" >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


@pytest.mark.parametrize("compress", [False, True])
def test_trace_dat_through_trace_cmd(compress: bool, public: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    report = ("cpus=2\n            bash-2046  [001]  512.104231456: mm_page_alloc:        page=0xffffea00001a2b3c "
              "pfn=0x1a2b3c order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO\n")
    monkeypatch.setenv("PATH", f"{_fake_trace_cmd(tmp_path, report)}{os.pathsep}{os.environ['PATH']}")
    data = (public / "trappy-tests" / "raw_trace.dat").read_bytes()
    src = tmp_path / ("trace.dat.xz" if compress else "trace.dat")
    src.write_bytes(lzma.compress(data, preset=0) if compress else data)
    summary = ptebench.ingest(src, tmp_path / "d.parquet")
    trace = ptebench.load(tmp_path / "d.parquet")
    assert summary.rows == 1 and trace.meta["format"] == "trace-dat"
    (row,) = trace.table.to_pylist()
    assert (row["line"], row["ts_ns"], row["pfn"], row["gfp_mask"]) == (2, 512_104_231_456, 0x1A2B3C, 0x100DCA)
    args = (tmp_path / "args.txt").read_text().split()
    assert args[:3] == ["report", "-t", "-i"]
    assert (Path(args[3]) == src) is not compress  # a compressed trace.dat is decompressed to a temporary file
    assert trace.meta["sources"][0]["converted_with"] == "trace-cmd report -t"
    assert trace.meta["sources"][0]["decompressed_size"] == len(data)


def test_trace_dat_report_failure(public: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_trace_cmd(tmp_path, '', code=3)}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(PtebenchError) as info:
        ptebench.ingest(public / "trappy-tests" / "raw_trace.dat", tmp_path / "d.parquet")
    assert "exit code 3" in info.value.message and "some warning" in info.value.message
    with pytest.raises(PtebenchError, match="not a trace.dat"):
        ptebench.ingest(public / "trappy-tests" / "trace_empty.txt", tmp_path / "e.parquet", fmt="trace-dat")


# ============================================================================================
# 6. --format


def test_format_override(repo_traces: Path, public: Path, tmp_path: Path) -> None:
    summary = ptebench.ingest(public / "lisa-tests" / "trace.txt", tmp_path / "a.parquet", fmt="trace-cmd")
    assert summary.rows == 2941
    assert ptebench.load(tmp_path / "a.parquet").meta["source_formats"] == [
        {"format": "trace-cmd", "detected_from": "--format"}]
    with pytest.raises(PtebenchError) as info:
        ptebench.ingest(repo_traces / "secretmem_64" / "trace.txt.xz", tmp_path / "b.parquet", fmt="perf-script")
    assert info.value.line == 13  # the first entry after the 12 header lines
    assert info.value.text == "            init-1       [000] .....     8.608457: tracing_mark_write: workload secretmem start"
    assert "perf script line" in info.value.expected
    with pytest.raises(PtebenchError, match="unknown input format"):
        ptebench.ingest(repo_traces / "secretmem_64", tmp_path / "c.parquet", fmt="json")


# ============================================================================================
# 7. lost data: every marker in its tool's layout, injected into the real capture

_K_ENTRY = re.compile(r"^\s*(?P<comm>.+)-(?P<pid>\d+)\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
                      r"(?P<ts>\d+\.\d+):\s+(?P<name><stack trace>|[^:\s]+)")


def _event_lines(text: str) -> list[tuple[int, int, int]]:
    """(line, cpu, ts_ns) of every event entry (not stack entries), read independently of ptebench."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        m = _K_ENTRY.match(line)
        if m and m["name"] not in ("<stack trace>", "kernel_stack"):
            sec, frac = m["ts"].split(".")
            out.append((number, int(m["cpu"]), int(sec) * 10**9 + int(frac.ljust(9, "0"))))
    return out


def _inject(text: str, markers: dict[int, str]) -> str:
    """Insert marker lines before the given 1-based lines."""
    lines = text.split("\n")
    for at in sorted(markers, reverse=True):
        lines.insert(at - 1, markers[at])
    return "\n".join(lines)


def _expected_position(events: list[tuple[int, int, int]], line: int, cpu: int | None) -> dict:
    before = [e for e in events if e[0] < line]
    mine_before = [e for e in before if cpu is None or e[1] == cpu]
    mine_after = [e for e in events if e[0] > line and (cpu is None or e[1] == cpu)]
    return {"after_ts_ns": before[-1][2] if before else None,
            "prev_cpu_ts_ns": mine_before[-1][2] if mine_before else None,
            "next_ts_ns": mine_after[0][2] if mine_after else None}


def _nth_event_on(events: list[tuple[int, int, int]], cpu: int, n: int) -> int:
    return [e[0] for e in events if e[1] == cpu][n]


@pytest.fixture(scope="module")
def kernel_text(repo_traces: Path) -> str:
    return lzma.decompress((repo_traces / "secretmem_64" / "trace.txt.xz").read_bytes()).decode()


@pytest.mark.parametrize("chunk", [None, 2048])
def test_kernel_loss_markers(chunk: int | None, kernel_text: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    if chunk is not None:
        import functools
        import importlib
        api_mod = importlib.import_module("ptebench.api")
        source_mod = importlib.import_module("ptebench.parse.source")
        monkeypatch.setattr(api_mod, "open_chunks", functools.partial(source_mod.ChunkReader, chunk_bytes=chunk))
    events = _event_lines(kernel_text)
    cpu1 = [e for e in events if e[1] == 1]
    assert len(cpu1) > 20
    markers = {
        cpu1[0][0]: "##### CPU 1 buffer started ####",  # CPU 1's buffer starts later than CPU 0's
        _nth_event_on(events, 1, 10): "CPU:1 [LOST 4821 EVENTS]",
        _nth_event_on(events, 0, 12): "CPU:0 [LOST EVENTS]",
    }
    text = _inject(kernel_text.replace("entries-written: 721/721", "entries-written: 721/9000"), markers)
    summary, trace = ingest_text(tmp_path, text)
    assert summary.rows == 477 and summary.skipped == {} and summary.warnings == {}
    shifted = _event_lines(text)
    meaning = {"##### CPU 1 buffer started ####": ("buffer_started", 1, None), "CPU:1 [LOST 4821 EVENTS]": ("lost", 1, 4821),
               "CPU:0 [LOST EVENTS]": ("lost", 0, None)}
    in_file = [(i, meaning[line]) for i, line in enumerate(text.split("\n"), 1) if line in meaning]
    assert len(in_file) == 3
    got = [{k: loss[k] for k in ("kind", "cpu", "count", "line")} for loss in summary.losses]
    assert got == [{"kind": "overwritten", "cpu": None, "count": 9000 - 721, "line": 3}] + [
        {"kind": kind, "cpu": cpu, "count": count, "line": line} for line, (kind, cpu, count) in in_file]
    for loss in summary.losses[1:]:
        assert {k: loss[k] for k in ("after_ts_ns", "prev_cpu_ts_ns", "next_ts_ns")} == _expected_position(
            shifted, loss["line"], loss["cpu"])
    firsts = {str(c): next(e[2] for e in shifted if e[1] == c) for c in (0, 1)}
    assert summary.losses[0]["next_ts_ns_per_cpu"] == firsts
    assert trace.meta["losses"] == summary.losses

    # the summary tables
    from ptebench import summary as summary_mod
    table = summary_mod.loss_table(trace)
    assert list(table["kind"]) == ["overwritten"] + [kind for _, (kind, _, _) in in_file]
    assert table["to_ts_ns"].tolist() == [min(firsts.values()), *(loss["next_ts_ns"] for loss in summary.losses[1:])]
    windows = summary_mod.loss_windows(trace)
    for cpu in (0, 1):
        assert windows[cpu] == [(None, firsts[str(cpu)], "overwritten", None)] + [
            (loss["prev_cpu_ts_ns"], loss["next_ts_ns"], loss["kind"], loss["count"])
            for loss in summary.losses[1:] if loss["cpu"] == cpu]
    started = next(loss for loss in summary.losses if loss["kind"] == "buffer_started")
    assert started["prev_cpu_ts_ns"] is None and started["next_ts_ns"] == firsts["1"]


def test_trace_cmd_dropped_markers(tmp_path: Path) -> None:
    text = lzma.decompress((FIXTURES / "secretmem_64.trace-cmd.txt.xz").read_bytes()).decode()
    events = _event_lines(text)
    markers = {_nth_event_on(events, 1, 5): "CPU:1 [4821 EVENTS DROPPED]",
               _nth_event_on(events, 0, 7): "CPU:0 [EVENTS DROPPED]",
               _nth_event_on(events, 1, 300): "CPU:1 [SUBBUFFER START]"}
    text = _inject(text, markers)
    summary, _ = ingest_text(tmp_path, text)
    assert summary.rows == 477 and summary.skipped == {}
    shifted = _event_lines(text)
    meaning = {"CPU:1 [4821 EVENTS DROPPED]": (1, 4821), "CPU:0 [EVENTS DROPPED]": (0, None)}
    in_file = [(i, meaning[line]) for i, line in enumerate(text.split("\n"), 1) if line in meaning]
    got = [{k: loss[k] for k in ("kind", "cpu", "count", "line")} for loss in summary.losses]
    assert got == [{"kind": "dropped", "cpu": cpu, "count": count, "line": line} for line, (cpu, count) in in_file]
    for loss in summary.losses:
        assert text.split("\n")[loss["line"] - 1] in markers.values()
        assert {k: loss[k] for k in ("after_ts_ns", "prev_cpu_ts_ns", "next_ts_ns")} == _expected_position(
            shifted, loss["line"], loss["cpu"])


def test_info_shows_losses(kernel_text: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ptebench import cli
    events = _event_lines(kernel_text)
    text = _inject(kernel_text, {_nth_event_on(events, 1, 3): "CPU:1 [LOST 77 EVENTS]"})
    (tmp_path / "t.txt").write_text(text)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli.app, ["ingest", str(tmp_path / "t.txt"), "-o", str(tmp_path / "t.parquet")],
                           catch_exceptions=False)
    assert result.exit_code == 0 and "lost-event records: 1" in result.output
    result = runner.invoke(cli.app, ["info", str(tmp_path / "t.parquet")], catch_exceptions=False)
    loss = ptebench.load(tmp_path / "t.parquet").meta["losses"][0]
    out = " ".join(result.output.split())
    assert "lost-event records: 1" in out and "format: ftrace" in out
    assert f"│ lost │ 1 │ 77 │ 0 │ {loss['line']} │ {loss['prev_cpu_ts_ns'] / 1e9:.6f} │ {loss['next_ts_ns'] / 1e9:.6f} │" \
        in out
