"""An ingested trace as a stream of flat-array chunks for the replay engine.

Each chunk is one Parquet row group (or less), so the engine's memory does not grow
with the trace.  Events are classified into kind codes; kprobe events are recognised by
the function they probe (``(set_memory_ro+0x0/0x30)`` in their fields), not by the name
the user gave them, and their arguments (``page=``, ``addr=``, ``n=``) are parsed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ptebench.engine.arrowcols import _fill, _hex_arg, _lookup, probe_fields
from ptebench.engine.scratch import Reused
from ptebench.errors import PtebenchError
from ptebench.parse.schema import DENSE, stored_dense

K_OTHER = 0
K_ALLOC = 1  # mm_page_alloc
K_FREE = 2  # mm_page_free
K_FREE_BATCHED = 3  # mm_page_free_batched
K_ZONE_LOCKED = 4  # mm_page_alloc_zone_locked: buddy -> per-CPU list movement
K_PCPU_DRAIN = 5  # mm_page_pcpu_drain: per-CPU list -> buddy movement
K_EXTFRAG = 6  # mm_page_alloc_extfrag
K_DM_INVALID = 7  # kprobe on set_direct_map_invalid_noflush(page)
K_DM_DEFAULT = 8  # kprobe on set_direct_map_default_noflush(page)
K_CPA = 9  # kprobe on set_memory_*(addr, numpages); the API is in ``api``

KMEM_KINDS = {
    "mm_page_alloc": K_ALLOC, "mm_page_free": K_FREE, "mm_page_free_batched": K_FREE_BATCHED,
    "mm_page_alloc_zone_locked": K_ZONE_LOCKED, "mm_page_pcpu_drain": K_PCPU_DRAIN,
    "mm_page_alloc_extfrag": K_EXTFRAG,
}
#: probed function -> kind; CPA APIs get K_CPA and an ``api`` code (index in CPA_APIS)
DM_PROBES = {"set_direct_map_invalid_noflush": K_DM_INVALID, "set_direct_map_default_noflush": K_DM_DEFAULT}
CPA_APIS = ("set_memory_ro", "set_memory_rw", "set_memory_x", "set_memory_nx", "set_memory_np", "set_memory_4k",
            "set_memory_rox")

#: the probed functions the replay knows (direct-map ones, then CPA_APIS), and their kind codes
_PROBED_NAMES = list(DM_PROBES) + list(CPA_APIS)
_PROBED = pa.array(_PROBED_NAMES)
_PROBED_KIND = np.array(list(DM_PROBES.values()) + [K_CPA] * len(CPA_APIS), dtype=np.int8)

COLUMNS = ["ts_ns", "cpu", "pid", "line", "event", "pfn", "order", "gfp_mask", "failed", "fields", "stack_id",
           "migratetype", "percpu_refill", "fragmenting", "change_ownership", "fallback_migratetype"]
#: what the replay's own pass reads once the prepass has parsed the kprobes (``KprobeRows``)
REPLAY_COLUMNS = [c for c in COLUMNS if c not in ("fields", "fallback_migratetype")]


@dataclass
class Chunk:
    """One slice of the event stream, as numpy arrays; ``start`` is the global index of row 0.  The types are
    those a decoded chunk has; the replay's column store (``engine/store.py``) hands out ``cpu``, ``pid`` and
    ``stack`` as 16-bit and ``pfn`` and ``gfp`` as 32-bit integers when the trace's values fit (the same values)."""

    start: int
    kind: np.ndarray  # int8
    api: np.ndarray  # int8, CPA API index for K_CPA, else -1
    ts: np.ndarray  # int64 ns
    cpu: np.ndarray  # int32
    pid: np.ndarray  # int32
    line: np.ndarray  # int64 (source line of the event)
    pfn: np.ndarray  # int64 (-1 when none)
    order: np.ndarray  # int8 (0 when none)
    gfp: np.ndarray  # uint64
    failed: np.ndarray  # bool
    stack: np.ndarray  # int32 (-1 when none)
    page: np.ndarray  # uint64 (kprobe page= argument, 0 when none)
    addr: np.ndarray  # uint64 (kprobe addr= argument)
    npages: np.ndarray  # int64 (kprobe n= argument)
    mt: np.ndarray  # int8 migratetype (-1 when none)
    percpu_refill: np.ndarray  # bool (mm_page_alloc_zone_locked)
    fragmenting: np.ndarray  # bool (mm_page_alloc_extfrag)
    change_ownership: np.ndarray  # bool (mm_page_alloc_extfrag)
    fallback_mt: np.ndarray  # int8 (mm_page_alloc_extfrag fallback_migratetype, -1 when none)

    def __len__(self) -> int:
        return len(self.kind)


def _event_kinds(col: pa.Array, scratch: Scratch | None = None) -> np.ndarray:
    """Kind code per row; through the dictionary when the column is dictionary-encoded (one lookup per name)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, pa.DictionaryArray):
        lut = np.array([KMEM_KINDS.get(v, K_OTHER) for v in col.dictionary.to_pylist()] + [K_OTHER], dtype=np.int8)
        idx = col.indices
        idx = (idx.fill_null(len(lut) - 1) if idx.null_count else idx).to_numpy(zero_copy_only=False)
        out = np.empty(len(idx), np.int8) if scratch is None else scratch.get("kind", len(idx), np.int8)
        _lookup(lut, idx, out)  # lut.take(idx) without numpy's conversion of the indices to intp
        return out
    ev = pc.cast(col, pa.string())
    kind = np.zeros(len(col), dtype=np.int8)
    for name, code in KMEM_KINDS.items():
        kind[np.asarray(pc.fill_null(pc.equal(ev, name), False).to_numpy(zero_copy_only=False), dtype=bool)] = code
    return kind


_TYPES = {"ts_ns": np.int64, "cpu": np.int32, "pid": np.int32, "line": np.int64, "pfn": np.int64, "order": np.int8,
          "gfp_mask": np.uint64, "failed": bool, "stack_id": np.int32, "migratetype": np.int8, "percpu_refill": bool,
          "fragmenting": bool, "change_ownership": bool, "fallback_migratetype": np.int8}
#: column -> (none value, type): a null's value in a chunk, which format 2 files store in place of the null
#: (``parse/schema.py`` DENSE: these passes read those columns as they are)
_DEFAULTS = {name: ({"ts_ns": 0, "cpu": -1, "pid": -1, "line": -1}.get(name, DENSE.get(name)), t)
             for name, t in _TYPES.items()}


def check_none_values(trace) -> None:
    """Refuse a trace file whose dense columns store their nulls as other values than the replay's none values."""
    stored = stored_dense(trace.meta)
    wrong = {k: v for k, v in stored.items() if k in _DEFAULTS and v != _DEFAULTS[k][0]}
    if wrong:
        raise PtebenchError(f"the trace stores the nulls of {', '.join(sorted(wrong))} as {wrong}",
                            file=str(trace.path), expected=f"none values {({k: _DEFAULTS[k][0] for k in wrong})}")


def _col(batch, name: str, *, writable: bool = False, scratch: Scratch | None = None) -> np.ndarray:
    value, dtype = _DEFAULTS[name]
    if name not in batch.schema.names:  # a pass that did not read this column: a read-only constant view
        if writable:
            return np.full(batch.num_rows, value, dtype=dtype)
        return np.broadcast_to(np.array(value, dtype=dtype), (batch.num_rows,))
    out = None if scratch is None else scratch.get(name, batch.num_rows, dtype)
    return _fill(batch.column(name), value, dtype, writable=writable, out=out)


class KprobeRows:
    """The kprobe events of a whole trace as one pass parsed them (global row, kind, api, page, addr, n),
    so that a later pass need not read or parse ``fields`` (:func:`iter_chunks`' ``kprobes``)."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []
        self.rows = np.zeros(0, np.int64)

    def add(self, ch: Chunk) -> None:
        """Keep the chunk's kprobe rows (chunks in trace order, from a pass that read ``fields``)."""
        p = np.flatnonzero(ch.kind >= K_DM_INVALID)
        if len(p):
            self._parts.append((ch.start + p, ch.kind[p], ch.api[p], ch.page[p], ch.addr[p], ch.npages[p]))

    def finish(self) -> KprobeRows:
        if self._parts:
            self.rows, self.kind, self.api, self.page, self.addr, self.npages = (
                np.concatenate(c) for c in zip(*self._parts, strict=True))
        self._parts = []
        return self

    def count(self, start: int, n: int) -> int:
        """How many kprobe rows fall in [start, start + n)."""
        lo, hi = np.searchsorted(self.rows, [start, start + n])
        return int(hi - lo)

    def fill(self, start: int, kind: np.ndarray, api: np.ndarray, page: np.ndarray, addr: np.ndarray,
             npages: np.ndarray) -> np.ndarray:
        """Set the kind and arguments of the kprobe rows in [start, start + len(kind)); returns those rows."""
        lo, hi = np.searchsorted(self.rows, [start, start + len(kind)])
        r = self.rows[lo:hi] - start
        if hi > lo:
            kind[r], api[r], page[r] = self.kind[lo:hi], self.api[lo:hi], self.page[lo:hi]
            addr[r], npages[r] = self.addr[lo:hi], self.npages[lo:hi]
        return r


def kprobe_arrays(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunk's ``api``, ``page``, ``addr`` and ``npages`` for ``n`` rows, with their none values."""
    return (np.full(n, -1, dtype=np.int8), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64),
            np.zeros(n, dtype=np.int64))


def no_kprobes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`kprobe_arrays` of a chunk without kprobes, as read-only constant views (nothing allocated)."""
    return (np.broadcast_to(np.int8(-1), (n,)), np.broadcast_to(np.uint64(0), (n,)),
            np.broadcast_to(np.uint64(0), (n,)), np.broadcast_to(np.int64(0), (n,)))


class Scratch(Reused):
    """Output arrays that :func:`chunk_from_batch` reuses from one batch to the next (``iter_chunks(reuse=True)``,
    :class:`~ptebench.engine.scratch.Reused`): a chunk's converted columns and kprobe arguments live until the
    next chunk is made, so a consumer takes copies of what it keeps."""

    __slots__ = ("kprobes", "dirty")

    def __init__(self) -> None:
        super().__init__()
        self.kprobes: tuple[np.ndarray, ...] = kprobe_arrays(0)
        self.dirty = np.zeros(0, np.int64)  # the kprobe rows the latest chunk set (reset before the next one)

    def kprobe_arrays(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`kprobe_arrays` of ``n`` rows, with their none values."""
        api, page, addr, npages = self.kprobes
        if len(api) < n:
            self.kprobes = api, page, addr, npages = kprobe_arrays(n)
        else:
            r = self.dirty
            api[r], page[r], addr[r], npages[r] = -1, 0, 0, 0
        self.dirty = np.zeros(0, np.int64)
        return api[:n], page[:n], addr[:n], npages[:n]


def _probe_fields(fields, other: np.ndarray, kind: np.ndarray, api: np.ndarray, page: np.ndarray,
                  addr: np.ndarray, npages: np.ndarray) -> np.ndarray:
    """Classify the rows ``other`` (events that are not kmem ones) whose fields name a probed function, and
    parse their arguments (:func:`~ptebench.engine.arrowcols.probe_fields`); returns the kprobe rows."""
    got = probe_fields(fields, other, _PROBED_NAMES, len(DM_PROBES))
    if got is None:  # a value longer than 64 bits: Arrow's regex engine (and int()) as the reference does
        return _probe_fields_reference(fields, other, kind, api, page, addr, npages)
    code, arg, n = got
    sel = np.flatnonzero(code >= 0)
    rows, code, arg, n = other[sel], code[sel], arg[sel], n[sel]
    kind[rows] = _PROBED_KIND[code]
    dm = code < len(DM_PROBES)
    page[rows[dm]] = arg[dm]
    cpa = ~dm
    api[rows[cpa]] = code[cpa] - len(DM_PROBES)
    addr[rows[cpa]] = arg[cpa]
    npages[rows[cpa]] = n[cpa]
    return rows


def _probe_fields_reference(fields, other: np.ndarray, kind: np.ndarray, api: np.ndarray, page: np.ndarray,
                            addr: np.ndarray, npages: np.ndarray) -> np.ndarray:
    """:func:`_probe_fields` through Arrow's string functions (its differential tests' reference)."""
    fields = pc.take(fields, pa.array(other))
    is_probe = np.asarray(pc.fill_null(pc.starts_with(fields, "("), False).to_numpy(zero_copy_only=False), bool)
    probe = other[is_probe]
    f = pc.filter(fields, pa.array(is_probe))
    # the probed function: "(NAME+0x0/0x..) args"; the arguments of the two kinds, on their rows only
    parts = pc.split_pattern(f, "+0x0/", max_splits=1)
    name = pc.utf8_slice_codeunits(pc.list_element(parts, 0), 1)
    funcs = pc.if_else(pc.equal(pc.list_value_length(parts), 2), name, None)
    code = pc.index_in(funcs, value_set=_PROBED).fill_null(-1).to_numpy(zero_copy_only=False)
    dm = np.flatnonzero((code >= 0) & (code < len(DM_PROBES)))
    if len(dm):
        rows = probe[dm]
        kind[rows] = _PROBED_KIND[code[dm]]
        page[rows] = _hex_arg(f.take(pa.array(dm)), "page")
    cpa = np.flatnonzero(code >= len(DM_PROBES))
    if len(cpa):
        rows, fc = probe[cpa], f.take(pa.array(cpa))
        kind[rows] = K_CPA
        api[rows] = code[cpa] - len(DM_PROBES)
        addr[rows] = _hex_arg(fc, "addr")
        nm = pc.struct_field(pc.extract_regex(fc, r"\bn(?:umpages)?=(?P<n>-?[0-9]+)"), "n").to_pylist()
        npages[rows] = [int(v) if v else 0 for v in nm]
    return probe[code >= 0]


def chunk_from_batch(batch: pa.RecordBatch | pa.Table, start: int, kprobes: KprobeRows | None = None,
                     scratch: Scratch | None = None, store=None) -> Chunk:
    """Classify one batch of the Parquet ``events`` schema into flat arrays (columns not read get defaults);
    ``kprobes``: the kprobe rows as an earlier pass parsed them (then ``fields`` is not needed); ``scratch``:
    reuse its arrays for the converted columns (see :class:`Scratch`); ``store``: an ``EventStore`` that writes
    the columns it keeps straight from the batch, the chunk's arrays then being its views (in its types)."""
    n = batch.num_rows
    kind = _event_kinds(batch.column("event"), scratch)
    parse = kprobes is None and "fields" in batch.schema.names
    other = np.flatnonzero(kind == K_OTHER) if parse else np.zeros(0, np.int64)
    # the kprobe arguments: arrays only when the chunk may hold kprobes (else read-only constant views)
    if len(other) or (kprobes is not None and kprobes.count(start, n)):
        api, page, addr, npages = kprobe_arrays(n) if scratch is None else scratch.kprobe_arrays(n)
        if kprobes is not None:
            rows = kprobes.fill(start, kind, api, page, addr, npages)
        else:  # kprobes are among the events that are not kmem ones
            rows = _probe_fields(batch.column("fields"), other, kind, api, page, addr, npages)
        if scratch is not None:
            scratch.dirty = rows  # to be reset before the next chunk
    else:
        api, page, addr, npages = no_kprobes(n)

    def col(name: str, writable: bool = False) -> np.ndarray:
        if store is not None and name in store.PUT and name in batch.schema.names:
            return store.put(name, batch.column(name), *_DEFAULTS[name], start)
        return _col(batch, name, writable=writable, scratch=scratch)
    return Chunk(
        start=start, kind=kind, api=api, ts=col("ts_ns"), cpu=col("cpu"), pid=col("pid"), line=col("line"),
        pfn=col("pfn", writable=True), order=col("order"), gfp=col("gfp_mask"), failed=col("failed"),
        stack=col("stack_id"), page=page, addr=addr, npages=npages, mt=col("migratetype"),
        percpu_refill=col("percpu_refill"), fragmenting=col("fragmenting"),
        change_ownership=col("change_ownership"), fallback_mt=col("fallback_migratetype"),
    )


class LazyChunk(Chunk):
    """A chunk whose ``ts`` and ``line`` are read from the file when first used: a replay needs them only at
    the few events that split (and for every event only when it has a SYSTEM_RUNNING moment to compare)."""

    _source: _RowGroupColumns

    @property
    def ts(self) -> np.ndarray:
        if self._ts is None:
            self._ts, self._line = self._source.rows(self.start, len(self))
        return self._ts

    @ts.setter
    def ts(self, value) -> None:
        self._ts = value

    @property
    def line(self) -> np.ndarray:
        if self._line is None:
            self._ts, self._line = self._source.rows(self.start, len(self))
        return self._line

    @line.setter
    def line(self, value) -> None:
        self._line = value


class _RowGroupColumns:
    """``ts_ns`` and ``line`` of a Parquet file by global row, for :class:`LazyChunk`: a row group's batches
    decoded in order as the chunks ask for rows (a replay's pass asks in row order; an earlier row starts its row
    group again).  Batches of the pass's chunk size rather than whole row groups: the allocator reuses their
    buffers, where a row group's columns (16 MB at 1 Mi rows) were faulted in afresh each time (measured on
    the bench's 10 M-event trace, every row group read: 0.055-0.095 CPU-s, now 0.04-0.05)."""

    NAMES = ("ts_ns", "line")

    def __init__(self, file, batch: int = 1 << 18) -> None:
        self.file = file
        md = file.metadata
        self.bounds = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        self.names = [c for c in self.NAMES if c in file.schema_arrow.names]
        self.batch_rows = max(1, batch)
        self.group = -1
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._at = 0  # global row of the latest batch's first row
        self._batch: tuple[np.ndarray, np.ndarray] | None = None

    def rows(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.names:  # neither column in the file: their none values
            return tuple(np.full(n, _DEFAULTS[c][0], _DEFAULTS[c][1]) for c in self.NAMES)
        parts = []
        row, end = start, start + n
        while row < end:
            self._seek(row)
            ts, line = self._batch
            lo, hi = row - self._at, min(end - self._at, len(ts))
            parts.append((ts[lo:hi], line[lo:hi]))
            row = self._at + hi
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _seek(self, row: int) -> None:
        """Make the latest batch the one that holds global ``row``."""
        g = int(np.searchsorted(self.bounds, row, side="right")) - 1
        if g != self.group or self._batch is None or row < self._at:
            self.group = g
            self._batches = iter(self.file.iter_batches(batch_size=self.batch_rows, row_groups=[g],
                                                        columns=self.names, use_threads=False))
            self._at, self._batch = int(self.bounds[g]), None
        while self._batch is None or row >= self._at + len(self._batch[0]):
            if self._batch is not None:
                self._at += len(self._batch[0])
            b = next(self._batches)
            self._batch = (_col(b, "ts_ns"), _col(b, "line"))  # no copy without nulls


def iter_chunks(trace, rows: int = 1 << 20, columns: list[str] | None = None,
                kprobes: KprobeRows | None = None, lazy: bool = False, reuse: bool = False,
                store=None) -> Iterator[Chunk]:
    """The trace's events in (ts, seq) order, ``rows`` at a time; ``columns`` limits what is read;
    ``kprobes``: the trace's kprobe rows from an earlier pass (``fields`` is then not read); ``lazy``:
    chunks read ``ts`` and ``line`` only when used (:class:`LazyChunk`); ``reuse``: each chunk's converted
    arrays are reused by the next one (:class:`Scratch`: a consumer keeps copies, not the arrays); ``store``:
    the columns an ``EventStore`` keeps go straight into it (:func:`chunk_from_batch`)."""
    check_none_values(trace)
    start = 0
    columns = columns or COLUMNS
    if kprobes is not None:
        columns = [c for c in columns if c != "fields"]
    source = None
    if lazy:
        columns = [c for c in columns if c not in _RowGroupColumns.NAMES]
        source = _RowGroupColumns(trace._file, rows)
    # one decoding thread: the replay is one sequential consumer, and CPU time is what it costs
    scratch = Scratch() if reuse else None
    for batch in trace._file.iter_batches(batch_size=rows, columns=columns, use_threads=False):
        ch = chunk_from_batch(batch, start, kprobes, scratch, store)
        if source is not None:
            ch = LazyChunk(**{**vars(ch), "ts": None, "line": None})
            ch._source = source
        yield ch
        start += batch.num_rows


def chunk_from_table(table: pa.Table, start: int = 0) -> Chunk:
    """A whole (possibly filtered) events table as one chunk, for tests and small traces."""
    return chunk_from_batch(table.select(COLUMNS), start)


def first_ts(trace) -> int:
    """Timestamp of the trace's first event (0 for an empty trace), reading one row."""
    for batch in trace._file.iter_batches(batch_size=1, columns=["ts_ns"], use_threads=False):
        if batch.num_rows:
            return int(batch.column(0)[0].as_py())
    return 0
