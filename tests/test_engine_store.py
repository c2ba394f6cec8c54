"""The replay's in-memory column store (``engine/store.py``): the chunks it gives back are the ones the replay's
own read of the file would make, field by field, whatever the chunk cuts and the narrow types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptebench
from ptebench.engine import store as S
from ptebench.engine.stream import COLUMNS, REPLAY_COLUMNS, KprobeRows, iter_chunks

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("kind", "api", "cpu", "pid", "pfn", "order", "gfp", "failed", "stack", "page", "addr", "npages", "mt",
          "percpu_refill", "fragmenting", "change_ownership", "fallback_mt", "ts", "line")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """The modules capture (kprobes of every kind) in row groups that no chunk cut matches."""
    d = tmp_path_factory.mktemp("store")
    base = d / "t.parquet"
    ptebench.ingest([str(ROOT / "traces" / "modules")], base)
    small = d / "small.parquet"
    pq.write_table(pq.read_table(base), small, row_group_size=777)
    return ptebench.load(small)


def _first_pass(trace, rows, store, put=False):
    kp = KprobeRows()
    for ch in iter_chunks(trace, rows, columns=COLUMNS, store=store if put else None, reuse=put):
        kp.add(ch)
        store.add(ch)
    return kp.finish()


def _as_rows(chunks):
    out = {f: [] for f in FIELDS}
    starts = []
    for ch in chunks:
        starts.append(ch.start)
        for f in FIELDS:
            a = np.asarray(getattr(ch, f))
            out[f].append((str(a.dtype), a.tolist()))
    return starts, out


@pytest.mark.parametrize("put", [False, True])
@pytest.mark.parametrize("rows", [500, 97, 4096])
@pytest.mark.parametrize("narrow", [None, "all", "none"])
def test_store_gives_the_replays_own_chunks(trace, rows, narrow, put):
    if narrow == "all":
        store = S.EventStore(trace._file.metadata.num_rows, dict.fromkeys(("cpu", "pid", "pfn", "stack", "gfp"), True))
    elif narrow == "none":
        store = S.EventStore(trace._file.metadata.num_rows)
    else:
        store = S.EventStore.for_trace(trace)
    kp = _first_pass(trace, rows, store, put)  # put: the prepass's way (columns written into the store)
    want = _as_rows(iter_chunks(trace, rows, columns=REPLAY_COLUMNS, kprobes=kp, lazy=True))
    kept = {f: str(store.cols[f].dtype) for f in S.NARROW} | {"gfp": str(store.cols["gfp"].dtype)}
    got = _as_rows(store.chunks(trace, kp))  # each chunk read before the next (its arrays are scratch)
    assert got[0] == want[0]
    for f in FIELDS:  # the same values; the integer columns in the store's own types (views, not widened)
        assert [v for _, v in got[1][f]] == [v for _, v in want[1][f]], f
        assert {t for t, _ in got[1][f]} == {kept.get(f, t) for t, _ in want[1][f]}, f
    if narrow == "all":
        assert kept == {"cpu": "int16", "pid": "int16", "pfn": "int32", "stack": "int16", "gfp": "uint32"}
    assert store.cols == {}


def test_statistics_narrow_what_fits(trace):
    s = S.EventStore.for_trace(trace)
    assert s.cols["cpu"].dtype == np.int16 and s.cols["stack"].dtype == np.int16
    assert s.cols["pfn"].dtype == np.int32 and s.cols["gfp"].dtype == np.uint32
    assert s.nbytes == 18 * trace._file.metadata.num_rows


def test_ingest_writes_the_statistics_the_store_trusts(tmp_path):
    """``ptebench ingest`` writes min/max for the columns the store narrows: its chunks need no range check."""
    out = tmp_path / "s.parquet"
    ptebench.ingest([str(ROOT / "traces" / "secretmem_64")], out)
    s = S.EventStore.for_trace(ptebench.load(out))
    assert s.known == {"cpu", "pid", "pfn", "stack", "gfp"}
    assert s.nbytes == 18 * pq.ParquetFile(out).metadata.num_rows


def test_no_statistics_start_narrow(tmp_path, trace):
    """A file without statistics (``ptebench ingest`` writes them for the sort key only): its store starts
    narrow, and stays so where the values fit."""
    f = tmp_path / "nostats.parquet"
    pq.write_table(pq.read_table(trace.path), f, row_group_size=777, write_statistics=False)
    md = pq.ParquetFile(f).metadata
    pfn = md.schema.names.index("pfn")
    assert not md.row_group(0).column(pfn).is_stats_set
    s = S.EventStore.for_trace(ptebench.load(f))
    assert s.nbytes == 18 * md.num_rows and not s.known  # each chunk checked


@pytest.mark.parametrize("put", [False, True])
def test_wrong_statistics_widen_the_column(put):
    """A chunk whose values do not fit the narrow type the statistics chose: the column goes wide, values kept."""
    n = 6
    cols = {"event": pa.array(["mm_page_alloc"] * n).dictionary_encode(), "cpu": pa.array([0, 1, 40000, 2, 3, 4]),
            "pid": pa.array([1, -1, 7, 1 << 20, 5, 6], pa.int32()),
            "pfn": pa.array([1, None, 1 << 40, 3, 4, 5]), "order": pa.array([0] * n, pa.int8()),
            "gfp_mask": pa.array([1, 1 << 40, None, 0, 0, 0], pa.uint64()),
            "failed": pa.array([False, True, None, False, False, True]),
            "stack_id": pa.array([0, None, 1 << 20, 2, 3, 4], pa.int32())}
    from ptebench.engine.stream import chunk_from_batch

    batch = pa.record_batch(cols)
    s = S.EventStore(2 * n, dict.fromkeys(("cpu", "pid", "pfn", "stack", "gfp"), True))
    chunks = [chunk_from_batch(batch.slice(0, 3), 0), chunk_from_batch(batch.slice(3), 3)]
    for k, ch in enumerate(chunks):
        if put:  # the first pass's way: the columns written from the batch into the store, then add()
            put_ch = chunk_from_batch(batch.slice(3 * k, 3), 3 * k, store=s)
            assert np.may_share_memory(put_ch.pfn, s.cols["pfn"])
            s.add(put_ch)
        else:
            s.add(ch)
    assert {k: s.cols[k].dtype for k in ("cpu", "pid", "pfn", "stack", "gfp")} == {
        "cpu": np.int32, "pid": np.int32, "pfn": np.int64, "stack": np.int32, "gfp": np.uint64}

    class _File:
        metadata = pq.ParquetFile(pa.BufferReader(_parquet_bytes(batch))).metadata
        schema_arrow = batch.schema

    class _Trace:
        _file = _File()

    got = [(ch.cpu.copy(), ch.pid.copy(), ch.pfn.copy(), ch.stack.copy(), ch.gfp.copy(), ch.failed.copy())
           for ch in s.chunks(_Trace(), KprobeRows().finish())]
    for ch, g in zip(chunks, got, strict=True):
        for a, b in zip((ch.cpu, ch.pid, ch.pfn, ch.stack, ch.gfp, ch.failed), g, strict=True):
            assert a.dtype == b.dtype and a.tolist() == b.tolist()


def _parquet_bytes(batch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([batch]), sink)
    return sink.getvalue()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-(1 << 20), 1 << 20), st.integers(-(1 << 40), 1 << 40),
                          st.integers(0, (1 << 64) - 1), st.integers(0, 15)), min_size=1, max_size=50))
def test_ranges_and_flags_against_numpy(rows):
    """The jitted min/max pass and the flag packing against numpy's min/max and bit arithmetic."""
    cpu = np.array([r[0] for r in rows], np.int32)
    pid = cpu[::-1].copy()
    pfn = np.array([r[1] for r in rows], np.int64)
    stack = (cpu // 3).astype(np.int32)
    gfp = np.array([r[2] for r in rows], np.uint64)
    for a in (cpu, pid, pfn, stack, gfp):
        assert [int(v) for v in S.lohi(a)] == [int(a.min()), int(a.max())]
    bits = np.array([r[3] for r in rows], np.uint8)
    flags = [((bits >> k) & 1).astype(bool) for k in range(4)]
    packed = np.empty(len(rows), np.uint8)
    S.pack_flags(*flags, packed)
    assert packed.tolist() == bits.tolist()
    back = [np.empty(len(rows), bool) for _ in range(4)]
    S.unpack_flags(packed, *back)
    assert [b.tolist() for b in back] == [f.tolist() for f in flags]


def test_replay_without_the_store_is_the_same(trace, monkeypatch):
    """A trace too long for the store is decoded twice (the replay's own read): same results, both modes."""
    from ptebench import runner

    def run(mode):
        r = ptebench.replay(trace, mode=mode, chunk_rows=500)
        d = r.run_dict()
        d.pop("timing")
        return d, r.splits

    for mode in ("faithful", "simulate"):
        with_store = run(mode)
        monkeypatch.setattr(runner, "STORE_MAX_BYTES", 0)

        def no_store(*a, **kw):
            raise AssertionError("no store past STORE_MAX_BYTES")
        monkeypatch.setattr(runner.EventStore, "for_trace", no_store)
        without = run(mode)
        monkeypatch.undo()
        assert with_store[0] == without[0] and with_store[1].equals(without[1])
    assert S.EventStore.MAX_BYTES_PER_EVENT == 32


def test_trace_reads_allocate_from_the_system_pool(trace):
    """A trace's reads come from Arrow's malloc pool (``trace.open_parquet``), whatever the process default
    (which stays as it was): the replay's chunks then reuse memory instead of faulting it in again."""
    tr = ptebench.load(trace.path)
    system, default = pa.system_memory_pool(), pa.default_memory_pool()
    assert default.backend_name != "system" or pytest.skip("the default pool is malloc already")
    before = system.bytes_allocated()
    t = tr._file.read_row_group(0, columns=["pfn", "ts_ns", "fields"])
    assert system.bytes_allocated() - before >= t.nbytes // 2
    assert pa.default_memory_pool().backend_name == default.backend_name


def test_a_page_pointer_past_32_bit_pfns_widens_the_chunk(trace, tmp_path, monkeypatch):
    """A direct-map kprobe whose ``struct page *`` names a pfn past the store's 32-bit pfns: the prepass, which
    maps the kprobe pages first, makes the stored pfn column wide before the engine writes that pfn into it (a
    wrapped pfn would change the page a CPA call lands on); the replay equals the one that decodes the file
    again, which is wide throughout."""
    from ptebench import runner

    t = pq.read_table(trace.path)
    fields = t.column("fields").to_pylist()
    events = t.column("event").to_pylist()
    j = events.index("dm_invalid")
    base = int(fields[j].split("page=")[1], 16) - 64 * int(t.column("pfn")[j].as_py() or 0)
    vmemmap = 0xFFD4000000000000 if base >= 0xFFD4000000000000 else 0xFFFFEA0000000000
    fields[j] = fields[j].split("page=")[0] + f"page={vmemmap + 64 * ((1 << 32) + 5):#x}"
    t = t.set_column(t.schema.get_field_index("fields"), "fields", pa.array(fields, pa.string()))
    path = tmp_path / "wide.parquet"
    pq.write_table(t, path, row_group_size=777)
    tr = ptebench.load(path)
    assert S.EventStore.for_trace(tr).cols["pfn"].dtype == np.int32

    def run():
        r = ptebench.replay(tr, chunk_rows=500)
        d = r.run_dict()
        d.pop("timing")
        return d, r.splits

    with_store = run()
    monkeypatch.setattr(runner, "STORE_MAX_BYTES", 0)
    without = run()
    assert with_store[0] == without[0] and with_store[1].equals(without[1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 2000)), min_size=1, max_size=8),
       st.sampled_from([1, 97, 500, 1 << 18]))
def test_lazy_ts_and_line_any_request_order(trace, requests, batch):
    """``ts``/``line`` by global row (``_RowGroupColumns``: a row group's batches decoded as asked, restarted for an
    earlier row), for requests in any order, across batches and row groups, equal the file's columns."""
    from ptebench.engine.stream import _RowGroupColumns

    whole = pq.read_table(trace.path, columns=["ts_ns", "line"])
    ts, line = whole.column("ts_ns").to_numpy(), whole.column("line").to_numpy()
    src = _RowGroupColumns(trace._file, batch)
    for start, n in requests:
        start = min(start, len(ts))
        n = min(n, len(ts) - start)
        got_ts, got_line = src.rows(start, n)
        assert got_ts.tolist() == ts[start: start + n].tolist()
        assert got_line.tolist() == line[start: start + n].tolist()
