"""The replay's narrow columns as the first pass over the trace decoded them, kept in memory so that the
replay's own pass does not read and decode the Parquet file a second time.

The prepass (``engine/prepass.py``) reads every column the replay needs except ``ts_ns``, ``line`` (read
lazily, only by the chunks that need them: :class:`~ptebench.engine.stream.LazyChunk`) and ``fields`` (the
kprobe arguments, parsed once into :class:`~ptebench.engine.stream.KprobeRows`).  :meth:`EventStore.add`
keeps its chunks in narrow integer types when the file's statistics say the values fit (pids, stack ids
and cpus in 16 bits, pfns and gfp masks in 32; the four booleans in one byte: 18 bytes an event), and
:meth:`EventStore.chunks` gives them back one at a time, as views in those types (the jitted passes compile
for them: no chunk is widened).  The values are the same integers: the replay sees exactly what it would have
decoded.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
from numba import njit

from ptebench.engine.arrowcols import arrow_values
from ptebench.engine.stream import Chunk, KprobeRows, LazyChunk, _RowGroupColumns, kprobe_arrays, no_kprobes

#: the columns the replay's pass uses, beyond ``ts_ns``/``line`` (lazy) and ``fields`` (``KprobeRows``)
COLUMNS = ["event", "cpu", "pid", "pfn", "order", "gfp_mask", "failed", "stack_id", "migratetype", "percpu_refill",
           "fragmenting", "change_ownership"]
#: the booleans packed in one byte, bit k for the k-th
FLAGS = ("failed", "percpu_refill", "fragmenting", "change_ownership")
#: Chunk field -> (its type, a narrower type to keep it in when its values fit)
NARROW = {"cpu": (np.int32, np.int16), "pid": (np.int32, np.int16), "pfn": (np.int64, np.int32),
          "stack": (np.int32, np.int16)}
#: the columns that may go wide, and their wide type
WIDE = {**{k: w for k, (w, _) in NARROW.items()}, "gfp": np.uint64}
#: Parquet column -> its Chunk field, for the integer columns the store keeps (:meth:`EventStore.put`)
PUT = {"cpu": "cpu", "pid": "pid", "pfn": "pfn", "stack_id": "stack", "gfp_mask": "gfp", "order": "order",
       "migratetype": "mt"}
I16, I32 = np.iinfo(np.int16), np.iinfo(np.int32)


@njit(cache=True, _nrt=False, inline="always")
def _lohi(a):
    """min and max of a non-empty array, in one loop of its own (which the compiler vectorizes)."""
    lo = hi = a[0]
    for i in range(a.shape[0]):
        lo = min(lo, a[i])
        hi = max(hi, a[i])
    return lo, hi


@njit(cache=True, _nrt=False)
def lohi(a):
    """min and max of a non-empty array (reference: numpy's min/max in the tests), in a loop the compiler
    vectorizes (2.8 -> 0.33 ns an event for the five columns, against one loop over all of them)."""
    return _lohi(a)


@njit(cache=True, _nrt=False)
def pack_flags(failed, percpu_refill, fragmenting, change_ownership, out):
    """The four booleans of each row as bits 0-3 of one byte (the inverse of :func:`unpack_flags`)."""
    for i in range(out.shape[0]):
        out[i] = (np.uint8(failed[i]) | (np.uint8(percpu_refill[i]) << 1) | (np.uint8(fragmenting[i]) << 2)
                  | (np.uint8(change_ownership[i]) << 3))


@njit(cache=True, _nrt=False)
def unpack_flags(flags, failed, percpu_refill, fragmenting, change_ownership):
    """Bits 0-3 of each byte as the four booleans (the inverse of :func:`pack_flags`)."""
    for i in range(flags.shape[0]):
        f = flags[i]
        failed[i] = (f & 1) != 0
        percpu_refill[i] = (f & 2) != 0
        fragmenting[i] = (f & 4) != 0
        change_ownership[i] = (f & 8) != 0


def _empty(n: int, dtype) -> np.ndarray:
    """A zero array in a private anonymous mapping of its own (unmapped when the array goes), its pages
    mapped at once: written once, front to back, it does not need the transparent huge pages numpy asks the
    kernel for on large arrays, whose allocation may compact memory first (measured: several times the cost
    of the 4K pages on the benchmark machine)."""
    size = max(1, n * np.dtype(dtype).itemsize)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)  # its pages in one call
    return np.frombuffer(mmap.mmap(-1, size, flags=flags), dtype=dtype, count=n)


class EventStore:
    """The first pass's chunks, compact (see the module doc), in one array per column for the whole trace
    (``rows`` events: the file's row count), each in the narrow type when the file's column statistics say
    its values fit (else, or when a chunk proves them wrong, the wide one); consumed once by :meth:`chunks`."""

    COLUMNS = COLUMNS
    PUT = PUT
    #: bytes an event at most (every column wide)
    MAX_BYTES_PER_EVENT = 4 + 3 * 4 + 8 + 8

    def __init__(self, rows: int, narrow: dict[str, bool] | None = None, known: set[str] | None = None) -> None:
        narrow = narrow or {}
        self.rows = rows
        #: the columns whose every value the file's statistics bound: no chunk needs checking
        self.known = set(known or ())
        types = dict.fromkeys(("kind", "order", "mt"), np.int8)
        types["flags"] = np.uint8
        for name, (wide, small) in NARROW.items():
            types[name] = small if narrow.get(name) else wide
        types["gfp"] = np.uint32 if narrow.get("gfp") else np.uint64
        self.cols = {name: _empty(rows, t) for name, t in types.items()}
        self.bounds: list[tuple[int, int]] = []

    @classmethod
    def for_trace(cls, trace) -> EventStore:
        """A store sized to the trace, narrow where every row group's statistics (and the column's none
        value, which fills its nulls) fit the narrow type, and where the file has no statistics (``ptebench
        ingest`` writes them for these columns since format 2): :meth:`add` and :meth:`put` check the values
        and widen a column that proves too wide, unless every row group's statistics bound the column."""
        md = trace._file.metadata
        names = {field: col for col, field in PUT.items() if field in WIDE}
        limits = {"cpu": I16, "pid": I16, "pfn": I32, "stack": I16}
        narrow = {}
        known = set()
        index = {md.schema.column(i).path: i for i in range(md.num_columns)}
        for name, col in names.items():
            lo, hi = (0, 0) if name == "gfp" else (-1, -1)  # the none value of the column
            bounded = col in index
            for g in range(md.num_row_groups):
                if col not in index:
                    break
                rg = md.row_group(g)
                st = rg.column(index[col]).statistics
                if st is not None and st.null_count == rg.num_rows:
                    continue
                if st is None or not st.has_min_max:
                    bounded = False
                    continue  # unknown: narrow until a chunk proves otherwise
                lo, hi = min(lo, int(st.min)), max(hi, int(st.max))
            if name == "gfp":
                narrow[name] = 0 <= lo and hi <= 0xFFFFFFFF
            else:
                narrow[name] = limits[name].min <= lo and hi <= limits[name].max
            if bounded:
                known.add(name)
        return cls(md.num_rows, narrow, known)

    def add(self, ch: Chunk) -> None:
        """Keep one chunk (chunks in trace order, from a pass that read :data:`COLUMNS`); a column the chunk has
        from :meth:`put` (a view of the store) is there already."""
        n = len(ch)
        a, b = ch.start, ch.start + n
        if b > self.rows:
            raise ValueError(f"rows {a}-{b} beyond the store's {self.rows}")
        cols = self.cols
        for name in ("kind", "order", "mt", "cpu", "pid", "pfn", "stack", "gfp"):
            src = getattr(ch, name)
            if n and not np.may_share_memory(src, cols[name]):
                np.copyto(self._fit(name, src)[a:b], src, casting="unsafe")  # values checked to fit
        pack_flags(ch.failed, ch.percpu_refill, ch.fragmenting, ch.change_ownership, cols["flags"][a:b])
        self.bounds.append((a, n))

    def put(self, column: str, arr, value, dtype, start: int) -> np.ndarray:
        """The rows ``start...`` of a stored column (Parquet name, :data:`PUT`) written from the chunk's Arrow
        array ``arr`` (nulls as ``value``, into ``dtype`` first where there are any), and returned as the
        chunk's own array: the first pass's chunks take
        their integer columns straight from the file's buffers into the store (one copy, not two: the conversions
        and the store of mixed_small tiled to 10 M events, 0.080 -> 0.071 CPU-s, best of 6)."""
        name = PUT[column]
        src = arrow_values(arr, value, dtype)
        dst = self._fit(name, src)[start: start + len(src)]
        np.copyto(dst, src, casting="unsafe")  # values checked to fit
        return dst

    def _fit(self, name: str, src: np.ndarray) -> np.ndarray:
        """The column ``name``, widened first (for good) if ``src`` holds a value its narrow type cannot."""
        col = self.cols[name]
        if len(src) and name in WIDE and name not in self.known and not np.can_cast(src.dtype, col.dtype, "safe"):
            lo, hi = lohi(src)
            info = np.iinfo(col.dtype)
            if not info.min <= lo <= hi <= info.max:  # the statistics were wrong: wide from now on
                col = self.cols[name] = col.astype(WIDE[name])
        return col

    def admit_pfns(self, pfns: np.ndarray) -> None:
        """pfns the replay will write into the ``pfn`` column (the direct-map kprobes' pages, which the faithful
        engine maps from their ``struct page`` pointers): the column goes wide if they do not fit its type."""
        col = self.cols["pfn"]
        if len(pfns) and col.dtype != np.int64 and int(pfns.max()) > np.iinfo(col.dtype).max:
            self.cols["pfn"] = col.astype(np.int64)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.cols.values())

    def chunks(self, trace, kprobes: KprobeRows) -> Iterator[Chunk]:
        """The stored chunks as the replay's :class:`LazyChunk` s (``ts``/``line`` read from the file when
        used; the kprobe rows' kind, api and arguments from ``kprobes``), cut as they were added.  Their integer
        columns are views of the store, in its types (``cpu``, ``pid``, ``stack`` maybe 16-bit, ``pfn`` and
        ``gfp`` 32-bit: the same values; the jitted passes compile for them, and no chunk is widened); the
        booleans and kprobe arguments are scratch that the next chunk reuses: consume each chunk before asking
        for the next.  The store is emptied at the end."""
        m = max((n for _, n in self.bounds), default=0)
        source = _RowGroupColumns(trace._file, m)
        api_s, page_s, addr_s, npages_s = kprobe_arrays(m)
        bits_s = [np.empty(m, bool) for _ in FLAGS]
        cols = self.cols
        for start, n in self.bounds:
            a, b = start, start + n
            kind = cols["kind"][a:b]
            probes = kprobes.count(start, n)
            if probes:
                api, page, addr, npages = api_s[:n], page_s[:n], addr_s[:n], npages_s[:n]
                kprobes.fill(start, kind, api, page, addr, npages)
            else:
                api, page, addr, npages = no_kprobes(n)
            failed, percpu_refill, fragmenting, change_ownership = (x[:n] for x in bits_s)
            unpack_flags(cols["flags"][a:b], failed, percpu_refill, fragmenting, change_ownership)
            ch = LazyChunk(start=start, kind=kind, api=api, ts=None, cpu=cols["cpu"][a:b], pid=cols["pid"][a:b],
                           line=None, pfn=cols["pfn"][a:b], order=cols["order"][a:b], gfp=cols["gfp"][a:b],
                           failed=failed, stack=cols["stack"][a:b], page=page, addr=addr, npages=npages,
                           mt=cols["mt"][a:b], percpu_refill=percpu_refill, fragmenting=fragmenting,
                           change_ownership=change_ownership, fallback_mt=np.broadcast_to(np.int8(-1), (n,)))
            ch._source = source
            yield ch
            if probes:  # the scratch rows back to their none values
                lo = int(np.searchsorted(kprobes.rows, start))
                r = kprobes.rows[lo: lo + probes] - start
                api[r], page[r], addr[r], npages[r] = -1, 0, 0, 0
        self.cols = {}
        self.bounds = []
