"""The ingest fast path (``parse/_fast.py``, ``parse/fastpath.py``) and the chunk reader against
their plain references: the general parser, ``TextParser._last_index`` and plain byte reading.

The fast path's reference is the general path itself: every generated trace is ingested with the
fast path on and off (``fastpath.ENABLED``), at several chunk sizes, and the Parquet files --
rows, schema, metadata -- and the summaries, or the errors, must be identical.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

import ptebench
from ptebench import PtebenchError
from ptebench.parse import _fast as F
from ptebench.parse import _names as N
from ptebench.parse import fastpath
from ptebench.parse.source import ChunkReader, Source, read_chunks
from ptebench.parse.text import TextParser

api_mod = importlib.import_module("ptebench.api")

# --------------------------------------------------------------------------------------------
# generated traces: mostly lines the fast path takes, some it must hand to the general path

COMMS = ["bash", "kworker/u4:1", "systemd", "sh", "<...>", "a b-c", "x[1] y", "ünïcödé", "", "-", "w-9 [3]",
         "averyveryverylongcommname"]
GFPS = ["GFP_KERNEL|__GFP_ZERO", "GFP_HIGHUSER_MOVABLE|__GFP_ZERO", "GFP_NOWAIT|__GFP_NOWARN", "0x152c4a",
        "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP|__GFP_RETRY_MAYFAIL"]


@st.composite
def kmem_line(draw: st.DrawFn, ts: float) -> str:
    comm = draw(st.sampled_from(COMMS))
    pid = draw(st.integers(0, 4194304))
    cpu = draw(st.integers(0, 3))
    tgid = draw(st.sampled_from(["", "", "", "(-------) ", f"({pid:7d}) "]))
    flags = draw(st.sampled_from(["d..1.", "d..1.", "....", ".N.2", "", "dnhs1"]))
    digits = draw(st.sampled_from([6, 6, 6, 9, 3]))
    stamp = f"{ts:.{digits}f}"
    pfn = draw(st.sampled_from([0, 1, 0x8490B, (1 << 52) - 1, 1 << 52, -1]))
    radix = draw(st.sampled_from(["hex", "hex", "dec"]))
    pfn_s = (f"0x{pfn:x}" if pfn >= 0 else "0xffffffffffffffff") if radix == "hex" else str(pfn)
    page = draw(st.sampled_from([f"00000000{pfn & 0xFFFFFFFF:08x}", "(null)", "0000000000000000", "ffffea0001234"]))
    order = draw(st.sampled_from([0, 0, 1, 3, 10, 200, -1]))
    event = draw(st.sampled_from(["mm_page_alloc", "mm_page_alloc", "mm_page_free", "mm_page_free",
                                  "mm_page_free_batched", "mm_page_pcpu_drain", "mm_page_alloc_zone_locked",
                                  "mm_page_free_direct", "kmem:mm_page_free", "sched_switch"]))
    if event == "mm_page_alloc":
        fields = (f"page={page} pfn={pfn_s} order={order} migratetype={draw(st.integers(0, 5))} "
                  f"gfp_flags={draw(st.sampled_from(GFPS))}")
    elif event == "mm_page_alloc_zone_locked":
        fields = f"page={page} pfn={pfn_s} order={order} migratetype=1 percpu_refill={draw(st.integers(0, 1))}"
    elif event == "mm_page_pcpu_drain":
        fields = f"page={page} pfn={pfn_s} order={order} migratetype=2"
    elif event == "sched_switch":
        fields = "prev_comm=bash prev_pid=1 next_comm=sh next_pid=2"
    else:
        fields = f"page={page} pfn={pfn_s} order={order}"
    tail = draw(st.sampled_from(["", "", "", " ", " cold=0", "\r"]))
    flag_part = f"{flags} " if flags else ""
    return f"{comm:>16s}-{pid:<7d} {tgid}[{cpu:03d}] {flag_part}{stamp}: {event}: {fields}{tail}"


@st.composite
def traces(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 60))
    ts = draw(st.floats(0, 1e5))
    lines = []
    for _ in range(n):
        ts += draw(st.sampled_from([0.0, 1e-6, 3e-5, -2e-6]))
        ts = max(ts, 0.0)
        kind = draw(st.sampled_from(["kmem"] * 12 + ["comment", "blank", "marker", "stack", "bad"]))
        if kind == "kmem":
            lines.append(draw(kmem_line(ts)))
        elif kind == "comment":
            lines.append("# tracer: nop")
        elif kind == "blank":
            lines.append("")
        elif kind == "marker":
            lines.append("CPU:1 [LOST 12 EVENTS]")
        elif kind == "stack":
            lines += [f"            bash-1234    [001] d..1. {ts:.6f}: <stack trace>",
                      " => __alloc_pages+0x233/0x320", " => alloc_pages+0x8a/0x110"]
        else:
            lines.append("garbage line without a prefix")
    end = draw(st.sampled_from(["\n", "\n", ""]))
    return "\n".join(lines) + end


def _run(tmp_path: Path, name: str, texts: list[bytes], fast: bool, chunk: int, monkeypatch: pytest.MonkeyPatch,
         lenient: bool) -> tuple[object, ...]:
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"{name}.{i}")
        paths[-1].write_bytes(text)
    out = tmp_path / f"{name}.{int(fast)}.parquet"
    monkeypatch.setattr(fastpath, "ENABLED", fast)
    monkeypatch.setattr(api_mod, "open_chunks", functools.partial(ChunkReader, chunk_bytes=chunk))
    try:
        summary = ptebench.ingest(paths, out, lenient=lenient)
    except PtebenchError as exc:
        return ("error", str(exc))
    pf = pq.ParquetFile(out)
    table = pf.read()
    meta = json.loads(pf.schema_arrow.metadata[b"ptebench"])
    stacks = pf.schema_arrow.metadata[b"ptebench.stacks"]
    return ("ok", table.to_pylist(), table.schema, meta, stacks, summary.__dict__ | {"out": None})


def assert_same(tmp_path: Path, text: bytes | list[bytes], monkeypatch: pytest.MonkeyPatch, chunk: int,
                lenient: bool) -> None:
    texts = text if isinstance(text, list) else [text]
    slow = _run(tmp_path, "t.txt", texts, False, chunk, monkeypatch, lenient)
    fast = _run(tmp_path, "t.txt", texts, True, chunk, monkeypatch, lenient)
    assert fast[0] == slow[0]
    if fast[0] == "error":
        assert fast == slow
        return
    assert fast[1] == slow[1]
    assert fast[2].equals(slow[2], check_metadata=True)
    assert fast[3] == slow[3]
    assert fast[4] == slow[4]
    assert fast[5] == slow[5]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=traces(), chunk=st.sampled_from([64, 256, 1 << 12, 1 << 20]), lenient=st.booleans(),
       bad_utf8=st.booleans())
def test_fast_path_matches_general_path(text: str, chunk: int, lenient: bool, bad_utf8: bool, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = text.encode()
    if bad_utf8:  # a comm that is not UTF-8: the whole chunk goes the general way, which skips or fails
        data = data.replace("ü".encode(), b"\xff", 1)
    assert_same(tmp_path, data, monkeypatch, chunk, lenient)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(traces(), min_size=2, max_size=3), chunk=st.sampled_from([128, 1 << 20]))
def test_fast_path_matches_general_path_on_several_inputs(texts: list[str], chunk: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-CPU files of one trace: merged by time, each source's lines and first timestamps."""
    assert_same(tmp_path, [t.encode() for t in texts], monkeypatch, chunk, True)


@pytest.mark.parametrize("chunk", [200, 1 << 12, 1 << 20])
def test_fast_path_on_many_lines(chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines of the benchmark's shape, with stacks and headers now and then: many chunks both ways."""
    rng = random.Random(3)
    lines = ["# tracer: nop", "#"]
    t = 100.0
    for i in range(3000):
        t += rng.random() * 1e-5
        comm = rng.choice(["bash-1234", "kworker/u4:1-56", "systemd-1", "sh-999"])
        pfn = rng.randrange(1 << 20)
        if rng.random() < 0.5:
            lines.append(f"{comm:>16s} [{rng.randrange(2):03d}] d..1. {t:12.6f}: mm_page_alloc: page=00000000{pfn:08x} "
                         f"pfn=0x{pfn:x} order=0 migratetype={rng.randrange(2)} gfp_flags=GFP_KERNEL")
        else:
            lines.append(f"{comm:>16s} [{rng.randrange(2):03d}] d..1. {t:12.6f}: mm_page_free: page=00000000{pfn:08x} "
                         f"pfn=0x{pfn:x} order=0")
        if i % 700 == 699:
            lines += [f"{comm:>16s} [000] d..1. {t:12.6f}: <stack trace>", " => __alloc_pages+0x233/0x320"]
    assert_same(tmp_path, ("\n".join(lines) + "\n").encode(), monkeypatch, chunk, False)


def test_fast_path_takes_plain_kmem_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "".join(f"  bash-1 [000] d..1. {i}.000001: mm_page_free: page=0000000000001 pfn=0x{i:x} order=0\n"
                   for i in range(1, 200))
    path = tmp_path / "t.txt"
    path.write_text(text)

    def general(*args: object, **kw: object) -> None:
        raise AssertionError("the general path parsed a chunk of plain kmem lines")

    monkeypatch.setattr(TextParser, "parse", general)
    monkeypatch.setattr(api_mod, "open_chunks", functools.partial(ChunkReader, chunk_bytes=1000))
    summary = ptebench.ingest(path, tmp_path / "t.parquet")
    assert summary.rows == 199


# --------------------------------------------------------------------------------------------
# kernels against their plain references


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(1 << 40), 1 << 40), max_size=300) | st.lists(st.integers(0, 5), max_size=300))
def test_last_index_matches_reference(keys: list[int]) -> None:
    key = np.array(keys, dtype=np.int64)
    assert fastpath.last_index(key) == TextParser._last_index(key)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=40)), max_size=200))
def test_name_table_interns_like_a_dict(items: list[tuple[int, bytes]]) -> None:
    """Equal (name space, bytes) get one entry, others distinct ones; growing keeps every entry."""
    table = N.NameTable(slots=4, entries=2, store=8)
    seen: dict[tuple[int, bytes], int] = {}
    for ns, value in items:
        buf = np.frombuffer(b"\0" * 3 + value + b"\n", dtype=np.uint8)
        while True:
            with np.errstate(over="ignore"):
                ent = F.intern(buf, 3, 3 + len(value), len(buf), ns, *table.arrays())
            if ent >= 0:
                break
            table.grow()
        assert seen.setdefault((ns, value), ent) == ent
        assert table.value(ent) == value and int(table.e_ns[ent]) == ns
    assert len(set(seen.values())) == len(seen) == int(table.meta[0])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\0", b" ")), st.integers(0, 40), st.integers(0, 40))
def test_byte_finders_match_reference(data: bytes, a: int, e: int) -> None:
    """The word-at-a-time finders (trailing-zero counts) against plain byte loops."""
    buf = np.frombuffer(data + b"\n" + b"\0" * 8, dtype=np.uint8)
    a, e = min(a, len(data)), min(e, len(data))
    e = max(a, e)

    def first(stop: bytes) -> int:
        return next((i for i in range(a, e) if data[i] in stop), e)

    with np.errstate(over="ignore"):  # the word arithmetic wraps around (JIT off: numpy scalars)
        assert F._find2(buf, a, e, 91, 91) == first(b"[")
        assert F._find2(buf, a, e, 32, 9) == first(b" \t")
        assert F._find2(buf, a, e, 58, 32) == first(b": ")
        assert F._line_end(buf, a, len(data) + 1, np.uint64(0))[0] == (data + b"\n").index(b"\n", a)
        assert F._skip_spaces(buf, a, e) == next((i for i in range(a, e) if data[i] not in b" \t"), e)


@settings(max_examples=100, deadline=None)
@given(st.text(" \t\nx", max_size=40).map(str.encode), st.integers(0, 40), st.integers(0, 40))
def test_skip_spaces_matches_reference(data: bytes, a: int, e: int) -> None:
    """``_skip_spaces`` (trailing-zero count of a word's spaces) against a byte loop, on runs of
    spaces and tabs of every length."""
    buf = np.frombuffer(data + b"\0" * 8, dtype=np.uint8)
    a, e = min(a, len(data)), min(e, len(data))
    e = max(a, e)
    with np.errstate(over="ignore"):
        assert F._skip_spaces(buf, a, e) == next((i for i in range(a, e) if data[i] not in b" \t"), e)


_CTZ = njit(lambda v: F._ctz(v))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, (1 << 64) - 1))
def test_ctz_matches_reference(x: int) -> None:
    assert _CTZ(np.uint64(x)) == F._ctz(x) == (x & -x).bit_length() - 1


# --------------------------------------------------------------------------------------------
# the chunk reader


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=3000).map(lambda b: b"#" + b.replace(b"\r", b"\n")),  # "#": no compressor's magic
       chunk=st.integers(1, 700), keep=st.integers(0, 3), gz=st.booleans())
def test_chunk_reader_hands_out_the_input(data: bytes, chunk: int, keep: int, gz: bool,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """Views end at newlines (unless at the end); unconsumed bytes come back first; nothing is lost;
    size and sha256 as read_chunks reports them."""
    path = tmp_path_factory.mktemp("r") / "in"
    path.write_bytes(gzip.compress(data) if gz else data)
    source = Source(name=str(path))
    got = b""
    with ChunkReader(path, source, chunk_bytes=chunk) as reader:
        view, at_eof = reader.next(0)
        while True:
            b = view.tobytes()
            if not at_eof:
                assert b.endswith(b"\n")
            consumed = len(b) if at_eof else max(0, len(b) - keep)
            got += b[:consumed]
            if at_eof:
                break
            view, at_eof = reader.next(consumed)
    assert got == data
    ref = Source(name=str(path))
    assert b"".join(c for c, _ in read_chunks(path, ref, chunk_bytes=chunk)) == data
    assert (source.size, source.sha256, source.decompressed_size, source.compression) == (
        ref.size, ref.sha256, ref.decompressed_size, ref.compression)


# --------------------------------------------------------------------------------------------
# runs read back one after another when they do not overlap


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=20), min_size=1, max_size=6))
def test_runs_in_order_merge_like_the_general_merge(runs: list[list[int]]) -> None:
    """``RunWriter.in_order`` holds exactly when each run starts after the previous one ends; the
    chained read then yields what the frontier merge yields."""
    from ptebench.parse.runs import RunWriter, merge_runs

    schema = pa.schema([pa.field("ts_ns", pa.int64()), pa.field("seq", pa.int64()), pa.field("x", pa.int32())])
    writer = RunWriter(schema)
    seq = 0
    keys = []
    try:
        for i, ts in enumerate(runs):  # x: seq, or all null in odd runs (not spilled, put back on reading)
            n = len(ts)
            x = pa.array(np.arange(seq, seq + n, dtype=np.int32), mask=np.full(n, i % 2 == 1))
            writer.add(pa.table({"ts_ns": np.array(ts, dtype=np.int64), "seq": np.arange(seq, seq + n), "x": x},
                                schema=schema))
            keys.append((min(ts), seq + ts.index(min(ts)), max(ts), seq + n - 1 - ts[::-1].index(max(ts))))
            seq += n
        expect = all((a[2], a[3]) < (b[0], b[1]) for a, b in zip(keys, keys[1:], strict=False))
        assert writer.in_order == expect
        merged = [pa.Table.from_batches(list(merge_runs(writer.paths, schema, flag)), schema=schema)
                  for flag in ({False, writer.in_order})]
        rows = [list(zip(t.column(0).to_pylist(), t.column(1).to_pylist(), strict=True)) for t in merged]
        assert all(r == sorted(r) for r in rows)
        assert all(r == rows[0] for r in rows)
        odd = {s for i, ts in enumerate(runs) for s in range(sum(map(len, runs[:i])), sum(map(len, runs[: i + 1])))
               if i % 2 == 1}
        for t in merged:
            assert t.column("x").to_pylist() == [None if s in odd else s for s in t.column("seq").to_pylist()]
    finally:
        writer.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.tuples(st.integers(1, 300), st.booleans(), st.booleans(), st.booleans()), min_size=1,
                       max_size=5), batch=st.integers(1, 5))
def test_runs_rebuild_the_columns_they_do_not_spill(chunks: list[tuple[int, bool, bool, bool]], batch: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``seq`` and ``line`` counting up by one and a constant ``src`` are left out of a run and rebuilt
    on reading, batch by batch; any other run keeps them.  Reading gives back exactly what was added."""
    from ptebench.parse import runs as runs_mod

    monkeypatch.setattr(runs_mod, "RUN_BATCH_ROWS", 7 * batch)  # several batches per run
    schema = pa.schema([pa.field("ts_ns", pa.int64()), pa.field("seq", pa.int64()), pa.field("src", pa.int16()),
                        pa.field("line", pa.int64()), pa.field("x", pa.int32())])
    writer = runs_mod.RunWriter(schema)
    tables = []
    seq = 0
    try:
        for n, seq_gap, line_gap, two_src in chunks:
            seqs = seq + np.arange(n) + (np.arange(n) >= n // 2) * int(seq_gap)  # a jump: spilled as it is
            lines = 10 + np.arange(n) * (2 if line_gap else 1)
            src = (np.arange(n) % 2 * int(two_src)).astype(np.int16)
            t = pa.table({"ts_ns": np.arange(n, dtype=np.int64) + seq, "seq": seqs, "src": src, "line": lines,
                          "x": np.arange(n, dtype=np.int32)}, schema=schema)
            tables.append(t)
            writer.add(t)
            seq = int(seqs[-1]) + 1
        spilled = [pa.ipc.open_file(pa.memory_map(str(p))).schema.names for p in writer.paths]
        for (n, seq_gap, line_gap, two_src), names in zip(chunks, spilled, strict=True):
            assert ("seq" in names) == (seq_gap and n > 1)
            assert ("line" in names) == (line_gap and n > 1)
            assert ("src" in names) == (two_src and n > 1)
        got = pa.Table.from_batches(list(runs_mod.merge_runs(writer.paths, schema, writer.in_order)), schema=schema)
        assert got.equals(pa.concat_tables(tables))
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------
# gfp masks: the numpy gather against Arrow's take


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, (1 << 64) - 1)), max_size=6),
       st.lists(st.one_of(st.none(), st.integers(-1, 8)), max_size=40), st.integers(0, 5))
def test_gfp_mask_gather_matches_take(masks: list[int | None], codes: list[int | None], skip: int) -> None:
    """``Finisher._gfp_mask`` (codes under null rows may be anything, offsets anywhere) against
    ``gfp_masks.take``."""
    from ptebench.parse.schema import Finisher

    fin = Finisher({"comm": [], "lat_flags": [], "event": [], "gfp": []}, [])
    fin.gfp_masks = pa.array(masks, type=pa.uint64())
    n = len(masks)
    valid_codes = [c if c is not None and 0 <= c < n else None for c in codes]
    raw = np.array([c if c is not None else -1 for c in codes], dtype=np.int32)  # nulls hold -1 or junk
    arr = pa.array(raw, type=pa.int32(), mask=np.array([c is None for c in valid_codes], dtype=bool))
    s0 = min(skip, len(codes))
    arr = arr.slice(s0)
    expect = fin.gfp_masks.take(pa.array(valid_codes[s0:], type=pa.int32()))
    got = fin._gfp_mask(arr)
    assert got.type == pa.uint64()
    assert got.to_pylist() == expect.to_pylist()


# --------------------------------------------------------------------------------------------
# the chunk reader: plain and compressed files alike, growing files


@settings(max_examples=25, deadline=None)
@given(lines=st.lists(st.integers(0, 9000), min_size=1, max_size=12), chunk=st.integers(1, 20000),
       keep=st.integers(0, 3))
def test_chunk_reader_views_do_not_depend_on_compression(lines: list[int], chunk: int, keep: int,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """A plain file and a gzip file of the same bytes (long lines, views across many pages) give the
    same views, new byte counts and decompressed sizes; the plain file's sha256 is that of its bytes."""
    data = b"".join(b"#" + b"x" * k + b"\n" for k in lines)[:-1]  # the last line unterminated
    d = tmp_path_factory.mktemp("m")
    (d / "plain").write_bytes(data)
    (d / "gz").write_bytes(gzip.compress(data))
    got = []
    sources = []
    for name in ("plain", "gz"):
        source = Source(name=name)
        views = []
        with ChunkReader(d / name, source, chunk_bytes=chunk) as reader:
            view, at_eof = reader.next(0)
            while True:
                b = view.tobytes()
                views.append((b, at_eof, reader.new_bytes))
                if at_eof:
                    break
                view, at_eof = reader.next(max(0, len(b) - keep))
        got.append(views)
        sources.append(source)
    assert got[0] == got[1]
    assert b"".join(b[: max(0, len(b) - keep)] if not e else b for b, e, _ in got[0]) == data
    assert sources[0].decompressed_size == sources[1].decompressed_size == sources[0].size == len(data)
    assert sources[0].sha256 == hashlib.sha256(data).hexdigest()  # (the gzip file's is of its compressed bytes)


def test_chunk_reader_reads_on_when_the_file_grows(tmp_path: Path) -> None:
    """Bytes appended while a plain file is read are read (and hashed) too, as a stream would."""
    path = tmp_path / "growing"
    first = b"# a\n" * 3000
    path.write_bytes(first)
    source = Source(name=str(path))
    with ChunkReader(path, source, chunk_bytes=5000) as reader:
        view, at_eof = reader.next(0)
        with path.open("ab") as f:
            f.write(b"# b\n" * 2000)
        out = b""
        while True:
            out += view.tobytes()
            if at_eof:
                break
            view, at_eof = reader.next(len(view))
    assert out == first + b"# b\n" * 2000
    assert source.sha256 == hashlib.sha256(out).hexdigest() and source.size == len(out)
