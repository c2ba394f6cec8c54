"""Tests of ptebench.ingest(): the real capture bundles, input forms, prefix variants, errors and markers.

Expected values come from the recorder's meta.json, from the raw trace text read here with a
small independent parser (``raw_entries`` / ``stack_owners``), or are written out by hand.
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import importlib
import io
import json
import lzma
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import ptebench
from ptebench import PtebenchError, has_frame

api_mod = importlib.import_module("ptebench.api")
source_mod = importlib.import_module("ptebench.parse.source")
runs_mod = importlib.import_module("ptebench.parse.runs")

# --------------------------------------------------------------------------------------------
# independent reading of ftrace text

STACK = "<stack trace>"
_ENTRY = re.compile(
    r"^\s*(?P<comm>.+)-(?P<pid>\d+)\s+(?:\((?:\s*\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+(?:(?P<flags>\S+)\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s(?P<name><stack trace>|[^:\s]+)(?::\s?(?P<rest>.*))?$"
)
_PROBED = re.compile(r"^\((\w+)\+0x0/0x[0-9a-f]+\)")
#: the tracer's own leading frames (event class, kprobe machinery, ftrace trampoline)
TRACER_PREFIXES = ("trace_event_raw_event_", "perf_trace_", "kprobe_", "0x")


def ts_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")) if frac else int(sec)


def frame_symbol(text: str) -> str:
    """' => __alloc_pages+0x233/0x320 <ffffffff812871c3>' -> '__alloc_pages'."""
    return re.split(r"[ +]", text.strip()[2:].strip(), maxsplit=1)[0]


def strip_tracer(frames: list[str]) -> tuple[str, ...]:
    i = 0
    while i < len(frames) and frames[i].startswith(TRACER_PREFIXES):
        i += 1
    return tuple(frames[i:])


@dataclass
class RawEntry:
    line: int  # 1-based
    cpu: int
    pid: int
    comm: str
    ts_ns: int
    name: str  # event name or "<stack trace>"
    rest: str
    frames: list[str] = field(default_factory=list)
    nlines: int = 1  # the entry line plus its frame lines


def raw_entries(text: str) -> list[RawEntry]:
    """Every entry (event or <stack trace>) of ftrace text, with the frames that follow it."""
    out: list[RawEntry] = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith(" =>"):
            out[-1].frames.append(frame_symbol(line))
            out[-1].nlines += 1
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = _ENTRY.match(line)
        assert m is not None, (number, line)
        out.append(RawEntry(number, int(m["cpu"]), int(m["pid"]), m["comm"].strip(), ts_ns(m["ts"]),
                            m["name"], m["rest"] or ""))
    return out


def stack_owner_lines(entries: list[RawEntry]) -> dict[int, int]:
    """<stack trace> line -> line of the event it belongs to, by ptebench's documented rule.

    A stack belongs to the latest event on its CPU and pid; when its first frame names an
    event (``trace_event_raw_event_<event>``, or a kprobe stack whose probed function is the
    ``(func+0x0/..)`` of a kprobe event), to the latest event of that name on its CPU and pid.
    """
    last: dict[tuple[int, int], int] = {}
    last_named: dict[tuple[int, int, str], int] = {}
    probes: dict[str, str] = {}
    names: set[str] = set()
    owner_of: dict[int, int] = {}
    for e in entries:
        key = (e.cpu, e.pid)
        if e.name != STACK:
            names.add(e.name)
            last[key] = e.line
            last_named[(*key, e.name)] = e.line
            if (m := _PROBED.match(e.rest)) is not None:
                probes.setdefault(m[1], e.name)
            continue
        first = e.frames[0] if e.frames else ""
        want = None
        if first.startswith("trace_event_raw_event_") and first[len("trace_event_raw_event_"):] in names:
            want = first[len("trace_event_raw_event_"):]
        elif first.startswith("kprobe_"):
            want = probes.get(next((f for f in e.frames if not f.startswith(TRACER_PREFIXES)), ""))
        owner = last_named.get((*key, want)) if want else last.get(key)
        assert owner is not None and owner not in owner_of.values(), e.line
        owner_of[e.line] = owner
    return owner_of


def stack_owners(entries: list[RawEntry]) -> dict[int, tuple[str, ...]]:
    """Event line -> frames of its stack, tracer frames stripped."""
    stacks = {e.line: e for e in entries if e.name == STACK}
    return {owner: strip_tracer(stacks[line].frames) for line, owner in stack_owner_lines(entries).items()}


# --------------------------------------------------------------------------------------------
# hand-written traces

HEADER = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 5/5   #P:2
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
HEADER_LINES = 12


def entry(comm: str, pid: int, cpu: int, ts: str, event: str, rest: str, flags: str = ".....") -> str:
    """One line as trace_print_context() prints it: "%16s-%-7d [%03d] flags %12s: event: rest"."""
    return f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {ts:>12}: {event}: {rest}"


def free(pfn: int, order: int = 0) -> str:
    return f"page=0000000011112222 pfn={pfn:#x} order={order}"


def alloc(pfn: int, order: int = 0, gfp: str = "GFP_KERNEL") -> str:
    return f"page=0000000011112222 pfn={pfn:#x} order={order} migratetype=0 gfp_flags={gfp}"


def ingest_file(path: Path, **kw) -> tuple[ptebench.IngestSummary, ptebench.Trace]:
    out = path.with_name(path.name + ".parquet")
    summary = ptebench.ingest(path, out, **kw)
    return summary, ptebench.load(out)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def force_chunks(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    """ingest() opens inputs with api.open_chunks (a ChunkReader with the default CHUNK_BYTES bound
    at definition time, so patching source.CHUNK_BYTES has no effect): wrap that name instead."""
    monkeypatch.setattr(api_mod, "open_chunks", functools.partial(source_mod.ChunkReader, chunk_bytes=nbytes))


def count_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every spilled run, recorded as RunWriter.add is called."""
    calls: list[int] = []
    original = runs_mod.RunWriter.add

    def add(self, table: pa.Table) -> None:
        calls.append(table.num_rows)
        original(self, table)

    monkeypatch.setattr(runs_mod.RunWriter, "add", add)
    return calls


def records(trace: ptebench.Trace, columns: tuple[str, ...]) -> list[tuple]:
    """Rows in file order as tuples of ``columns`` plus the stack's frames (None without a stack)."""
    rows = trace.table.select([*columns, "stack_id"]).to_pylist()
    return [(*(r[c] for c in columns), None if r["stack_id"] is None else tuple(trace.frames(r["stack_id"])))
            for r in rows]


def assert_ordered(table: pa.Table) -> None:
    ts = table.column("ts_ns").to_numpy()
    seq = table.column("seq").to_numpy()
    assert table.schema.field("ts_ns").type == pa.int64()
    assert (ts[1:] >= ts[:-1]).all()
    assert ((ts[1:] > ts[:-1]) | (seq[1:] > seq[:-1])).all()


# --------------------------------------------------------------------------------------------
# fixtures: the small real capture (secretmem_64)


@pytest.fixture(scope="module")
def small_bundle(repo_traces: Path) -> Path:
    path = repo_traces / "secretmem_64"
    if not (path / "trace.txt.xz").is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def small_text(small_bundle: Path) -> str:
    return lzma.decompress((small_bundle / "trace.txt.xz").read_bytes()).decode()


@pytest.fixture(scope="module")
def small_trace(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ptebench.IngestSummary, Path]:
    out = tmp_path_factory.mktemp("small") / "secretmem_64.parquet"
    return ptebench.ingest(small_bundle, out), out


# ============================================================================================
# 1. every real capture against the recorder's meta.json

SLOW = {"boot", "forkexec", "memload", "secretmem_16384", "mixed_small"}
CAPTURES = ["boot", "forkexec", "memload", "modules", "secretmem_64", "secretmem_1024", "secretmem_16384", "mixed_small"]

#: stacks the recorder (shared/tracegen/summarize.py: owner = last event on the same CPU) gave to the
#: wrong event: (stack line, owner event line, owner event, recorder's owner), lines 1-based in trace.txt
MISATTRIBUTED: dict[str, list[tuple[int, int, str, str]]] = {
    # dd's mm_page_alloc, then softirq mm_page_free lines on dd's pid, then the alloc's stack
    "memload": [
        (1217364, 1217339, "mm_page_alloc", "mm_page_free"),
        (1225226, 1225209, "mm_page_alloc", "mm_page_free"),
        (1226730, 1226713, "mm_page_alloc", "mm_page_free"),
        (1232900, 1232875, "mm_page_alloc", "mm_page_free"),
    ],
    "mixed_small": [(860968, 860958, "mm_page_alloc", "mm_page_free")],
    # a dm_default kprobe stack printed after ~4800 softirq free/pcpu_drain lines of the same task
    "secretmem_16384": [(789167, 784346, "dm_default", "mm_page_pcpu_drain")],
}


def _raw_stack_blocks(path: Path, wanted: set[int]) -> dict[int, tuple[str, list[str]]]:
    """Stack line -> (its text, its frames), streaming through the compressed trace."""
    out: dict[int, tuple[str, list[str]]] = {}
    current = None
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if current is not None:
                if line.startswith(" =>"):
                    out[current][1].append(frame_symbol(line))
                    continue
                current = None
                if len(out) == len(wanted):
                    break
            if number in wanted:
                out[number] = (line.rstrip("\n"), [])
                current = number
    return out


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CAPTURES])
def test_capture_matches_recorder(name: str, shared_traces: Path, tmp_path: Path) -> None:
    bundle = shared_traces / name
    meta = json.loads((bundle / "meta.json").read_text())
    out = tmp_path / f"{name}.parquet"
    summary = ptebench.ingest(bundle, out)
    trace = ptebench.load(out)
    table = trace.table

    # event counts and rows
    assert summary.events == meta["events"]
    assert trace.meta["events"] == meta["events"]
    assert summary.rows == table.num_rows == trace.meta["rows"] == trace.meta["event_total"] == meta["event_total"]
    assert_ordered(table)
    assert set(table.column("src").to_pylist()) == {0}
    assert trace.meta["cpus"] == [0, 1]

    # nothing skipped, nothing odd, nothing lost
    assert summary.skipped == {} and trace.meta["skipped"] == {}
    assert summary.warnings == {} and trace.meta["warnings"] == {}
    assert summary.losses == [] and trace.meta["losses"] == []
    assert summary.inversions == {}
    header = meta["trace_header"]
    assert [(h["entries_in_buffer"], h["entries_written"]) for h in trace.meta["trace_headers"]] == [
        (header["entries_in_buffer"], header["entries_written"])
    ]

    # stacks per event: the recorder's counts, corrected by exactly the misattributed stacks
    expected = collections.Counter(meta["stack_owner_counts"])
    for _, _, owner, recorder_owner in MISATTRIBUTED.get(name, []):
        expected[recorder_owner] -= 1
        expected[owner] += 1
    expected = +expected  # drop zero counts
    df = table.select(["line", "cpu", "event", "stack_id"]).to_pandas()
    df["event"] = df["event"].astype(str)
    with_stack = df["stack_id"].notna()
    assert dict(df.loc[with_stack, "event"].value_counts()) == dict(expected)
    assert trace.meta["stacks"]["by_event"] == dict(expected)
    assert summary.stacks == int(with_stack.sum()) == meta["stack_traces"]

    # each misattributed stack sits on its real owner, with the frames printed at the stack line
    table_rows = MISATTRIBUTED.get(name, [])
    blocks = _raw_stack_blocks(bundle / "trace.txt.xz", {s for s, _, _, _ in table_rows})
    for stack_line, owner_line, owner, recorder_owner in table_rows:
        text, frames = blocks[stack_line]
        m = _ENTRY.match(text)
        assert m is not None and m["name"] == STACK, text
        row = df[df["line"] == owner_line]
        assert len(row) == 1
        assert row["event"].iloc[0] == owner
        assert int(row["cpu"].iloc[0]) == int(m["cpu"])
        assert pd.notna(row["stack_id"].iloc[0])
        assert tuple(trace.frames(int(row["stack_id"].iloc[0]))) == strip_tracer(frames)
        # ... and the recorder's owner was the last event on that CPU before the stack
        before = df[(df["cpu"] == int(m["cpu"])) & (df["line"] < stack_line)]
        assert before.loc[before["line"].idxmax(), "event"] == recorder_owner

    # every allocation carries its stack (stacktrace trigger; options/stacktrace in boot)
    assert with_stack[df["event"] == "mm_page_alloc"].all()
    # stored stacks start below the tracer
    firsts = [frames[0] for frames in trace.stacks["frames"] if len(frames)]
    assert not [f for f in firsts if f.startswith(TRACER_PREFIXES)]


# ============================================================================================
# 2. round trip through Parquet


def test_parquet_round_trip(small_bundle: Path, small_trace, small_text: str) -> None:
    summary, out = small_trace
    trace_file = small_bundle / "trace.txt.xz"
    assert summary.out == out and summary.bundle == str(small_bundle)
    assert summary.rows == 477

    # pandas
    df = pd.read_parquet(out)
    assert len(df) == 477
    assert df["ts_ns"].dtype == "int64"
    assert df["ts_ns"].is_monotonic_increasing
    for col in ("comm", "event", "gfp"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col

    # pyarrow
    table = pq.read_table(out)
    assert table.num_rows == 477
    assert_ordered(table)
    schema = pq.read_schema(out)
    for col in ("comm", "event", "gfp"):
        assert pa.types.is_dictionary(schema.field(col).type), col
    # format 2: pfn stored dense (-1 where the event has none), its nulls in bit 1 of ``absent``
    assert schema.field("pfn").type == pa.int64() and not schema.field("pfn").nullable
    none = (table.column("absent").to_numpy() >> 1) & 1 == 1
    assert none.sum() == 6 + 64 + 64  # tracing_mark_write, dm_invalid, dm_default
    assert (table.column("pfn").to_numpy()[none] == -1).all()
    logical = ptebench.load(out).table  # the nulls back
    assert logical.schema.field("pfn").nullable and "absent" not in logical.column_names
    assert logical.column("pfn").null_count == 6 + 64 + 64

    meta = json.loads(schema.metadata[b"ptebench"])
    assert meta["format_version"] == 2
    data = trace_file.read_bytes()
    assert meta["sources"] == [{
        "name": str(trace_file),
        "compression": "xz",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "decompressed_size": len(small_text.encode()),
        "lines": small_text.count("\n"),
    }]
    assert meta["kernel_release"] == "6.1.0-56-amd64"
    assert meta["kernel_release_from"] == "bundle uname.txt"
    assert meta["ts_resolution_ns"] == 1000
    assert meta["pfn_radix"] == ["hex"]
    trace = ptebench.load(out)
    assert trace.meta == meta

    # one known line: the first mm_page_alloc, line 14 of trace.txt
    row = next(r for r in table.to_pylist() if r["line"] == 14)
    assert {k: row[k] for k in ("ts_ns", "cpu", "pid", "comm", "lat_flags", "event", "pfn", "order",
                                "migratetype", "gfp", "gfp_mask", "failed", "fields")} == {
        "ts_ns": 8_612_027_000, "cpu": 0, "pid": 1, "comm": "init", "lat_flags": ".....",
        "event": "mm_page_alloc", "pfn": 0x100AE8, "order": 1, "migratetype": 0,
        "gfp": "GFP_KERNEL_ACCOUNT|__GFP_ZERO", "gfp_mask": 0x400DC0, "failed": False, "fields": None,
    }
    assert row["pfn"] == 1051368
    assert trace.frames(row["stack_id"]) == [
        "__alloc_pages", "__get_free_pages", "pgd_alloc", "mm_init", "copy_process", "kernel_clone",
        "__do_sys_clone", "do_syscall_64", "entry_SYSCALL_64_after_hwframe",
    ]
    marker = next(r for r in logical.to_pylist() if r["line"] == 13)
    assert (marker["event"], marker["fields"], marker["pfn"], marker["stack_id"]) == (
        "tracing_mark_write", "workload secretmem start", None, None)
    stored = next(r for r in table.to_pylist() if r["line"] == 13)  # as stored: the none values
    assert (stored["pfn"], stored["stack_id"], stored["order"]) == (-1, -1, 0)

    # the bundle's counters travel along
    counters = json.loads((small_bundle / "meta.json").read_text())["counters"]["vmstat"]
    snapshots = trace.bundle["snapshots"]
    assert snapshots["before"]["vmstat"]["direct_map_level2_splits"] == counters["direct_map_level2_splits"]["before"] == 4
    assert snapshots["after"]["vmstat"]["direct_map_level2_splits"] == counters["direct_map_level2_splits"]["after"] == 5
    assert trace.bundle["kernel_release"] == "6.1.0-56-amd64"


def test_kernel_version_option(small_bundle: Path, tmp_path: Path) -> None:
    ptebench.ingest(small_bundle, tmp_path / "k.parquet", kernel_version="5.10.0-28-amd64")
    meta = ptebench.load(tmp_path / "k.parquet").meta
    assert (meta["kernel_release"], meta["kernel_release_from"]) == ("5.10.0-28-amd64", "--kernel-version")
    with pytest.raises(PtebenchError):
        ptebench.ingest(small_bundle, tmp_path / "f.parquet", fmt="perf-script")
    assert not (tmp_path / "f.parquet").exists()


# ============================================================================================
# 3. stacks and has_frame


def test_stacks_match_raw_text(small_trace, small_text: str) -> None:
    _, out = small_trace
    trace = ptebench.load(out)
    owners = stack_owners(raw_entries(small_text))
    assert len(owners) == 244
    got = {r["line"]: tuple(trace.frames(r["stack_id"]))
           for r in trace.table.select(["line", "stack_id"]).to_pylist() if r["stack_id"] is not None}
    assert got == owners
    # no stored stack starts with a tracer frame; the kprobe stacks start at the probed function
    for frames in trace.stacks["frames"]:
        assert len(frames) and not frames[0].startswith(TRACER_PREFIXES), frames
    kprobe = trace.events[trace.events["event"] == "dm_invalid"]
    assert {trace.frames(int(s))[0] for s in kprobe["stack_id"]} == {"set_direct_map_invalid_noflush"}


@pytest.mark.parametrize("frame", ["secretmem_fault", "pte_alloc_one", "set_direct_map_default_noflush",
                                   "__alloc_pages", "kprobe_trace_func", "no_such_frame"])
def test_has_frame(frame: str, small_trace, small_text: str) -> None:
    _, out = small_trace
    events = ptebench.load(out).events
    expected = {line for line, frames in stack_owners(raw_entries(small_text)).items() if frame in frames}
    mask = has_frame(events, frame)
    assert str(mask.dtype) in ("bool", "boolean") and not mask.isna().any() and len(mask) == len(events)
    assert set(events.loc[mask, "line"]) == expected
    assert int(mask.sum()) == len(expected)
    # a selection of the events still knows its stacks
    allocs = events[events["event"] == "mm_page_alloc"]
    assert set(allocs.loc[has_frame(allocs, frame), "line"]) == expected & set(allocs["line"])
    if frame == "secretmem_fault":
        picked = events.loc[mask, "event"].astype(str).value_counts().to_dict()
        alloc_lines = {e.line for e in raw_entries(small_text) if e.name == "mm_page_alloc"}
        assert picked == {"dm_invalid": 64, "mm_page_alloc": len(expected & alloc_lines)}
        assert picked["mm_page_alloc"] > 0


# ============================================================================================
# 4. compression and stdin


def _zstd_two_frames(data: bytes) -> bytes:
    cut = data.index(b"\n", len(data) // 2) + 1
    c = zstandard.ZstdCompressor()
    return c.compress(data[:cut]) + c.compress(data[cut:])


COMPRESSORS = {
    "plain.txt": lambda d: d,
    "trace.txt.gz": lambda d: gzip.compress(d, mtime=0),
    "trace.txt.xz": lzma.compress,
    "trace.txt.zst": lambda d: zstandard.ZstdCompressor().compress(d),
    "two-frames.zst": _zstd_two_frames,
    "xz-without-suffix.dat": lzma.compress,  # recognised by magic bytes, not by name
}
KIND = {"plain.txt": "none", "trace.txt.gz": "gzip", "trace.txt.xz": "xz", "trace.txt.zst": "zstd",
        "two-frames.zst": "zstd", "xz-without-suffix.dat": "xz"}


@pytest.fixture(scope="module")
def small_plain(small_text: str, tmp_path_factory: pytest.TempPathFactory) -> ptebench.Trace:
    """secretmem_64's trace as one plain text file, ingested: the reference for other input forms."""
    path = tmp_path_factory.mktemp("plain") / "trace.txt"
    path.write_text(small_text)
    return ingest_file(path)[1]


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_compressed_inputs(name: str, small_text: str, small_plain, tmp_path: Path) -> None:
    data = COMPRESSORS[name](small_text.encode())
    path = write(tmp_path, name, data)
    summary, trace = ingest_file(path)
    assert trace.table.equals(small_plain.table)
    assert summary.sources == trace.meta["sources"] == [{
        "name": str(path), "compression": KIND[name], "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "decompressed_size": len(small_text.encode()),
        "lines": small_text.count("\n"),
    }]


class _Stdin:
    """Stands in for sys.stdin: ingest("-") reads sys.stdin.buffer."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("compress", ["plain.txt", "trace.txt.xz"])
def test_stdin(compress: str, small_text: str, small_plain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = COMPRESSORS[compress](small_text.encode())
    monkeypatch.setattr(sys, "stdin", _Stdin(data))
    summary = ptebench.ingest("-", tmp_path / "stdin.parquet")
    trace = ptebench.load(tmp_path / "stdin.parquet")
    assert trace.table.equals(small_plain.table)
    (source,) = summary.sources
    assert (source["name"], source["compression"], source["sha256"]) == (
        "-", KIND[compress], hashlib.sha256(data).hexdigest())
    with pytest.raises(PtebenchError, match="once"):
        ptebench.ingest(["-", "-"], tmp_path / "twice.parquet")


def test_stdin_cli(small_text: str, small_plain, tmp_path: Path) -> None:
    if not (Path(ptebench.__file__).parent / "cli.py").is_file():
        pytest.skip("ptebench/cli.py does not exist yet (stdin is covered through the API in test_stdin)")
    subprocess.run([sys.executable, "-m", "ptebench", "ingest", "-", "-o", "out.parquet"],
                   input=small_text.encode(), cwd=tmp_path, check=True, capture_output=True, timeout=600)
    assert ptebench.load(tmp_path / "out.parquet").table.equals(small_plain.table)


@pytest.mark.parametrize("name", ["trace.txt.gz", "trace.txt.xz", "trace.txt.zst", "two-frames.zst"])
@pytest.mark.parametrize("cut", ["two-thirds", "last-byte"])
@pytest.mark.parametrize("lenient", [False, True])
def test_truncated_compressed_input(name: str, cut: str, lenient: bool, small_text: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dir = tmp_path / "tmp"
    runs_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(runs_dir))  # where RunWriter spills
    data = COMPRESSORS[name](small_text.encode())
    data = data[: len(data) * 2 // 3] if cut == "two-thirds" else data[:-1]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = write(inputs, name, data)
    out = inputs / "out.parquet"
    with pytest.raises(PtebenchError) as info:
        ptebench.ingest(path, out, lenient=lenient)
    assert info.value.file == str(path)
    assert info.value.expected
    assert sorted(p.name for p in inputs.iterdir()) == [name]
    assert list(runs_dir.iterdir()) == []


# ============================================================================================
# 5. per-CPU files merged by time


def _split_by_cpu(text: str) -> tuple[str, str]:
    parts: dict[int, list[str]] = {0: [], 1: []}
    target = 0
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            target = 0
        elif not line.startswith(" =>"):
            m = _ENTRY.match(line)
            assert m is not None, line
            target = int(m["cpu"])
        parts[target].append(line)
    return "\n".join(parts[0]) + "\n", "\n".join(parts[1]) + "\n"


COMPARE = ("ts_ns", "cpu", "pid", "comm", "event", "pfn", "order", "gfp", "fields")


def test_per_cpu_files_merge(small_text: str, small_plain, tmp_path: Path) -> None:
    cpu0, cpu1 = _split_by_cpu(small_text)
    assert cpu0.startswith("# tracer: nop") and "[001]" not in cpu0 and "[000]" not in cpu1
    p0, p1 = write(tmp_path, "cpu0.txt", cpu0), write(tmp_path, "cpu1.txt", cpu1)
    summary = ptebench.ingest([p0, p1], tmp_path / "merged.parquet")
    merged = ptebench.load(tmp_path / "merged.parquet")
    single = small_plain
    assert [s["name"] for s in summary.sources] == [str(p0), str(p1)]
    assert summary.rows == 477 and summary.stacks == 244 and summary.warnings == {}
    assert_ordered(merged.table)

    def by_time(trace: ptebench.Trace) -> list[tuple]:
        # ties between CPUs may come out in either order; within a CPU the input order holds
        return sorted(records(trace, COMPARE), key=lambda r: (r[0], r[1]))

    assert by_time(merged) == by_time(single)
    # src and line point at the line in the per-CPU file
    split_lines = {0: cpu0.split("\n"), 1: cpu1.split("\n")}
    for r in merged.table.select(["src", "line", "cpu", "ts_ns", "event"]).to_pylist():
        assert r["src"] == r["cpu"]
        m = _ENTRY.match(split_lines[r["src"]][r["line"] - 1])
        assert (int(m["cpu"]), ts_ns(m["ts"]), m["name"]) == (r["cpu"], r["ts_ns"], r["event"])


# ============================================================================================
# 6. out-of-order input: spilled runs and their merge


def _shuffled(text: str, seed: int) -> tuple[str, list[RawEntry]]:
    """Header first, then each event with the stack block(s) it owns, blocks in random order."""
    lines = text.split("\n")
    entries = raw_entries(text)
    owner_of = stack_owner_lines(entries)
    blocks: dict[int, list[str]] = {}
    events: dict[int, RawEntry] = {}
    for e in entries:
        own = lines[e.line - 1 : e.line - 1 + e.nlines]
        if e.name == STACK:
            blocks[owner_of[e.line]].extend(own)
        else:
            blocks[e.line] = own
            events[e.line] = e
    order = list(blocks)
    random.Random(seed).shuffle(order)
    header = [line for line in lines if line.startswith("#")]
    body = [line for key in order for line in blocks[key]]
    return "\n".join(header + body) + "\n", [events[key] for key in order]


@pytest.mark.parametrize(("chunk", "batch_rows"), [(4096, None), (4096, 7), (20000, 3)])
def test_out_of_order_input(chunk: int, batch_rows: int | None, small_text: str, small_plain, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    text, order = _shuffled(small_text, seed=chunk + (batch_rows or 0))
    path = write(tmp_path, "shuffled.txt", text)
    force_chunks(monkeypatch, chunk)
    if batch_rows is not None:
        monkeypatch.setattr(runs_mod, "RUN_BATCH_ROWS", batch_rows)
    runs = count_runs(monkeypatch)
    summary, trace = ingest_file(path)
    assert len(runs) >= len(text.encode()) // chunk >= 7 and sum(runs) == 477
    assert summary.warnings == {} and summary.skipped == {}
    assert_ordered(trace.table)
    assert sorted(records(trace, COMPARE), key=repr) == sorted(records(small_plain, COMPARE), key=repr)
    # inversions: per CPU, how often an event's time is below the previous one's (input order)
    expected: collections.Counter[int] = collections.Counter()
    prev: dict[int, int] = {}
    for e in order:
        if e.cpu in prev and e.ts_ns < prev[e.cpu]:
            expected[e.cpu] += 1
        prev[e.cpu] = e.ts_ns
    assert sum(expected.values()) > 100
    assert summary.inversions == dict(expected)
    assert trace.meta["inversions_per_cpu"] == {str(k): v for k, v in expected.items()}


# ============================================================================================
# 7. prefix variants of the kernel text format

ALLOC_NULL = ("page= (null) pfn=0 order=0 migratetype=1 "
              "gfp_flags=GFP_NOWAIT|__GFP_HIGHMEM|__GFP_NOWARN|__GFP_MOVABLE")
SCHED = ("prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=sh next_pid=5 "
         "next_prio=120")
PREFIX_CASES = [
    pytest.param("              sh-123     (    123) [000] .....   100.000002: mm_page_free: " + free(0x11),
                 {"comm": "sh", "pid": 123, "tgid": 123, "cpu": 0, "lat_flags": ".....", "pfn": 0x11}, id="tgid"),
    pytest.param("          <idle>-0       (-------) [001] d..3.   100.000001: mm_page_free: " + free(0x10),
                 {"comm": "<idle>", "pid": 0, "tgid": None, "cpu": 1, "lat_flags": "d..3."}, id="tgid-unknown"),
    pytest.param("              sh-5       [001] d..3   100.000003: mm_page_free: " + free(0x12),
                 {"comm": "sh", "pid": 5, "lat_flags": "d..3", "ts_ns": 100_000_003_000}, id="flags-4"),
    pytest.param("              sh-5       [001] d..4.   100.000003: mm_page_free: " + free(0x12),
                 {"lat_flags": "d..4.", "tgid": None}, id="flags-5"),
    pytest.param("  gnome-terminal-1567  [000]  4415.246506: mm_page_alloc: page=ffffea0003db9f40 pfn=1155800 "
                 "order=0 migratetype=0 gfp_flags=GFP_KERNEL",
                 {"comm": "gnome-terminal", "pid": 1567, "cpu": 0, "lat_flags": None, "ts_ns": 4_415_246_506_000,
                  "pfn": 1155800, "gfp": "GFP_KERNEL", "gfp_mask": 0xCC0, "failed": False}, id="no-flags"),
    pytest.param(" Chrome_ChildIOT-1234    [001] d..3   100.000003: mm_page_free: " + free(0x12),
                 {"comm": "Chrome_ChildIOT", "pid": 1234}, id="comm-chrome"),
    pytest.param("    kworker/u8:2-55      [000] d..4.  100.000004: mm_page_free: " + free(0x13),
                 {"comm": "kworker/u8:2", "pid": 55}, id="comm-kworker"),
    pytest.param("    my task name-77      [001] .....  100.000005: mm_page_free: " + free(0x14),
                 {"comm": "my task name", "pid": 77}, id="comm-spaces"),
    pytest.param("           <...>-22275   [006] ....   889.213383: mm_page_free: " + free(0x15),
                 {"comm": "<...>", "pid": 22275, "cpu": 6}, id="comm-unknown"),
    pytest.param("       worker[1]-8       [001] .....  100.000007: mm_page_free: " + free(0x16),
                 {"comm": "worker[1]", "pid": 8}, id="comm-bracket"),
    pytest.param("          sh [1]-9       [001] .....  100.000008: mm_page_free: " + free(0x17),
                 {"comm": "sh [1]", "pid": 9, "cpu": 1}, id="comm-space-bracket"),
    pytest.param("       job-3 [1]-99      [001] .....  100.000008: mm_page_free: " + free(0x17),
                 {"comm": "job-3 [1]", "pid": 99, "cpu": 1, "ts_ns": 100_000_008_000}, id="comm-dash-bracket"),
    pytest.param("              sh-10      [000] .....  1234.567890123: mm_page_free: " + free(0x18),
                 {"ts_ns": 1_234_567_890_123}, id="ts-ns"),
    pytest.param("         kswapd0-1207    [005] ...1   889.213398: mm_page_alloc: " + ALLOC_NULL,
                 {"failed": True, "pfn": None, "order": 0, "migratetype": 1, "gfp_mask": 0x280A}, id="failed-null"),
    pytest.param("         kswapd0-1207    [005] ...1   889.213398: mm_page_alloc: page=0000000000000000 pfn=0x0 "
                 "order=2 migratetype=0 gfp_flags=GFP_KERNEL", {"failed": True, "pfn": None, "order": 2},
                 id="failed-zero"),
    pytest.param("          <idle>-0       [001] d..2.  4416.000000: sched_switch: " + SCHED,
                 {"event": "sched_switch", "fields": SCHED, "pfn": None, "gfp": None, "failed": None}, id="generic"),
    pytest.param("              sh-5       [001] .....  4416.000001: tracing_mark_write: hello world",
                 {"event": "tracing_mark_write", "fields": "hello world"}, id="marker"),
]


@pytest.mark.parametrize(("line", "expected"), PREFIX_CASES)
def test_prefix_variants(line: str, expected: dict, tmp_path: Path) -> None:
    summary, trace = ingest_file(write(tmp_path, "t.txt", HEADER + line + "\n"))
    assert (summary.rows, summary.skipped, summary.warnings) == (1, {}, {})
    (row,) = trace.table.to_pylist()
    assert row["line"] == HEADER_LINES + 1
    m = _ENTRY.match(line)
    assert (row["event"], row["ts_ns"]) == (m["name"], ts_ns(m["ts"]))
    assert {k: row[k] for k in expected} == expected


def test_trace_pipe_excerpt(tmp_path: Path) -> None:
    text = (
        entry("bash", 2046, 1, "512.104231", "mm_page_alloc", alloc(0x1A2B3C, gfp="GFP_HIGHUSER_MOVABLE|__GFP_ZERO"))
        + "\n" + entry("bash", 2046, 1, "512.104240", "<stack trace>", "").rstrip(": ") + "\n"
        " => trace_event_raw_event_mm_page_alloc+0x11a/0x160 <ffffffff8129a0ca>\n"
        " => __alloc_pages+0x1a8/0x320 <ffffffff812871c3>\n"
        " => vma_alloc_folio\n"
        " => do_anonymous_page\n"
        + entry("bash", 2046, 1, "512.104301", "mm_page_free", free(0x1A2B3C)) + "\n"
    )
    assert text.split("\n")[1].endswith("512.104240: <stack trace>")
    summary, trace = ingest_file(write(tmp_path, "pipe.txt", text))
    assert (summary.rows, summary.stacks, summary.warnings, summary.skipped) == (2, 1, {}, {})
    alloc_row, free_row = trace.table.to_pylist()
    assert (alloc_row["line"], free_row["line"]) == (1, 7)
    assert trace.frames(alloc_row["stack_id"]) == ["__alloc_pages", "vma_alloc_folio", "do_anonymous_page"]
    assert free_row["stack_id"] is None
    assert alloc_row["gfp_mask"] == 0x100DCA  # GFP_HIGHUSER_MOVABLE|__GFP_ZERO on 6.1
    assert trace.meta["trace_headers"] == [] and trace.meta["ts_resolution_ns"] == 1000


def test_decimal_pfn(tmp_path: Path) -> None:
    dec = entry("sh", 1, 0, "10.000001", "mm_page_alloc", "page=ffffea0003db9f40 pfn=1155800 order=0 "
                "migratetype=0 gfp_flags=GFP_KERNEL", flags="....")
    hexa = entry("sh", 1, 0, "10.000002", "mm_page_alloc", alloc(1155800), flags="....")
    _, trace = ingest_file(write(tmp_path, "dec.txt", dec + "\n"))
    assert trace.table.column("pfn").to_pylist() == [1155800]
    assert trace.meta["pfn_radix"] == ["dec"]
    _, trace = ingest_file(write(tmp_path, "both.txt", dec + "\n" + hexa + "\n"))
    assert trace.table.column("pfn").to_pylist() == [1155800, 1155800]


def test_counter_clock(tmp_path: Path) -> None:
    lines = [entry("sh", 1, 0, str(ts), "mm_page_free", free(ts)) for ts in (123456789, 123456790)]
    _, trace = ingest_file(write(tmp_path, "counter.txt", "\n".join(lines) + "\n"))
    assert trace.table.column("ts_ns").to_pylist() == [123456789, 123456790]
    assert trace.meta["ts_resolution_ns"] == "counter"


# ============================================================================================
# 8. bad input

GOOD = [entry("sh", 10, 0, f"100.{i:06d}", "mm_page_free", free(i)).encode() for i in range(1, 7)]
BAD = {
    "garbage": (b"this is not a trace line", "malformed_line"),
    "no-timestamp": (entry("sh", 10, 0, "abc", "mm_page_free", free(1)).encode(), "malformed_line"),
    "missing-order": (entry("sh", 10, 0, "100.000009", "mm_page_alloc",
                            "page=0000000011112222 pfn=0x10 migratetype=0 gfp_flags=GFP_KERNEL").encode(),
                      "bad_fields:mm_page_alloc"),
    "missing-migratetype": (entry("sh", 10, 0, "100.000009", "mm_page_alloc",
                                  "page=0000000011112222 pfn=0x10 order=0 gfp_flags=GFP_KERNEL").encode(),
                            "bad_fields:mm_page_alloc"),
    "not-utf8": (entry("caf\udce9", 10, 0, "100.000009", "mm_page_free", free(9)).encode("utf-8", "surrogateescape"),
                 "not_utf8"),
}


@pytest.mark.parametrize("chunk", [None, 100])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_line_strict(case: str, chunk: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if chunk is not None:
        force_chunks(monkeypatch, chunk)
    bad, _ = BAD[case]
    data = HEADER.encode() + b"\n".join([*GOOD[:3], bad, *GOOD[3:]]) + b"\n"
    path = write(tmp_path, "bad.txt", data)
    with pytest.raises(PtebenchError) as info:
        ptebench.ingest(path, tmp_path / "bad.parquet")
    err = info.value
    assert (err.file, err.line) == (str(path), HEADER_LINES + 4)
    assert err.text == bad.decode("utf-8", "replace")
    assert err.expected
    if case.startswith("missing-"):
        named = re.search(r"\b(page|pfn|order|migratetype|gfp_flags)=", err.expected)
        assert named is not None and named[1] == case.removeprefix("missing-"), err.expected
    if case == "not-utf8":
        assert "UTF-8" in str(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]


def test_bad_lines_lenient(tmp_path: Path) -> None:
    body = [GOOD[0], BAD["garbage"][0], GOOD[1], BAD["missing-order"][0], GOOD[2], BAD["not-utf8"][0],
            BAD["no-timestamp"][0], GOOD[3], BAD["missing-migratetype"][0], GOOD[4]]
    data = HEADER.encode() + b"\n".join(body) + b"\n"
    summary, trace = ingest_file(write(tmp_path, "bad.txt", data), lenient=True)
    expected = collections.Counter(reason for _, reason in BAD.values())
    assert summary.skipped == dict(expected) == trace.meta["skipped"]
    assert summary.warnings == {}
    assert summary.rows == 5
    assert summary.rows + sum(summary.skipped.values()) == len(body)
    good_lines = [HEADER_LINES + 1 + body.index(g) for g in GOOD[:5]]
    assert trace.table.column("line").to_pylist() == good_lines
    assert trace.table.column("pfn").to_pylist() == [1, 2, 3, 4, 5]


# ============================================================================================
# 9. lost events, overwritten buffers, unterminated last line

LOSSY = "\n".join([
    "# tracer: nop",
    "#",
    "# entries-in-buffer/entries-written: 90/100   #P:2",
    "#",
    entry("sh", 10, 0, "100.000001", "mm_page_free", free(1)),
    "CPU:1 [LOST 123 EVENTS]",
    entry("sh", 11, 1, "100.000002", "mm_page_free", free(2)),
    "CPU:0 [LOST EVENTS]",
    "##### CPU 2 buffer started ####",
    entry("sh", 12, 2, "100.000003", "mm_page_free", free(3)),
    "CPU:1 [7 EVENTS DROPPED]",
    entry("sh", 12, 2, "100.000004", "mm_page_free", free(4)),
]) + "\n"


def test_losses(tmp_path: Path) -> None:
    summary, trace = ingest_file(write(tmp_path, "lossy.txt", LOSSY))
    assert summary.rows == 4 and summary.warnings == {} and summary.skipped == {}
    got = [{k: loss[k] for k in ("kind", "cpu", "count", "line", "src")} for loss in summary.losses]
    assert got == [
        {"kind": "overwritten", "cpu": None, "count": 10, "line": 3, "src": 0},
        {"kind": "lost", "cpu": 1, "count": 123, "line": 6, "src": 0},
        {"kind": "lost", "cpu": 0, "count": None, "line": 8, "src": 0},
        {"kind": "buffer_started", "cpu": 2, "count": None, "line": 9, "src": 0},
        {"kind": "dropped", "cpu": 1, "count": 7, "line": 11, "src": 0},
    ]
    assert trace.meta["losses"] == summary.losses
    assert trace.meta["trace_headers"] == [{"src": 0, "entries_in_buffer": 90, "entries_written": 100, "cpus": 2}]


def test_loss_positions(tmp_path: Path) -> None:
    """Each in-band marker records the event it follows (after_seq / after_ts_ns)."""
    summary, _ = ingest_file(write(tmp_path, "lossy.txt", LOSSY))
    got = [(loss["line"], loss["after_seq"], loss["after_ts_ns"]) for loss in summary.losses if loss["line"] != 3]
    assert got == [(6, 0, 100_000_001_000), (8, 1, 100_000_002_000), (9, 1, 100_000_002_000),
                   (11, 2, 100_000_003_000)]


def test_unterminated_last_line(tmp_path: Path) -> None:
    lines = [entry("sh", 10, 0, f"100.00000{i}", "mm_page_free", free(i)) for i in (1, 2, 3)]
    summary, trace = ingest_file(write(tmp_path, "cut.txt", "\n".join(lines)))
    assert summary.rows == 2
    assert summary.warnings == {"partial_last_line": 1} == trace.meta["warnings"]
    assert trace.table.column("pfn").to_pylist() == [1, 2]
    summary, _ = ingest_file(write(tmp_path, "whole.txt", "\n".join(lines) + "\n"))
    assert (summary.rows, summary.warnings) == (3, {})
    # cut off in the middle of a line, as trace_pipe can be
    summary, _ = ingest_file(write(tmp_path, "mid.txt", "\n".join(lines)[:-20]))
    assert (summary.rows, summary.warnings, summary.skipped) == (2, {"partial_last_line": 1}, {})


# ============================================================================================
# 10. determinism


def test_deterministic_output(small_bundle: Path, small_text: str, tmp_path: Path) -> None:
    ptebench.ingest(small_bundle, tmp_path / "a.parquet")
    ptebench.ingest(small_bundle, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    cpu0, cpu1 = _split_by_cpu(small_text)
    inputs = [write(tmp_path, "cpu0.txt", cpu0), write(tmp_path, "cpu1.txt", cpu1)]
    ptebench.ingest(inputs, tmp_path / "c.parquet")
    ptebench.ingest(inputs, tmp_path / "d.parquet")
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "d.parquet").read_bytes()
