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

COLUMNS = ["ts_ns", "cpu", "pid", "line", "event", "pfn", "order", "gfp_mask", "failed", "fields", "stack_id",
           "migratetype", "percpu_refill", "fragmenting", "change_ownership", "fallback_migratetype"]


@dataclass
class Chunk:
    """One slice of the event stream, as numpy arrays; ``start`` is the global index of row 0."""

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


def _fill(arr: pa.Array, value, dtype, *, writable: bool = False) -> np.ndarray:
    if arr.null_count:
        arr = pc.fill_null(arr, value)
    out = arr.to_numpy(zero_copy_only=False)
    return np.array(out, dtype=dtype) if writable or out.dtype != dtype else out


def _event_kinds(col: pa.Array) -> np.ndarray:
    """Kind code per row; through the dictionary when the column is dictionary-encoded (one lookup per name)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, pa.DictionaryArray):
        lut = np.array([KMEM_KINDS.get(v, K_OTHER) for v in col.dictionary.to_pylist()] + [K_OTHER], dtype=np.int8)
        idx = col.indices.fill_null(len(lut) - 1).to_numpy(zero_copy_only=False)
        return lut[idx]
    ev = pc.cast(col, pa.string())
    kind = np.zeros(len(col), dtype=np.int8)
    for name, code in KMEM_KINDS.items():
        kind[np.asarray(pc.fill_null(pc.equal(ev, name), False).to_numpy(zero_copy_only=False), dtype=bool)] = code
    return kind


def _hex_arg(fields: pa.Array, name: str) -> np.ndarray:
    m = pc.extract_regex(fields, rf"\b{name}=0x(?P<v>[0-9a-fA-F]+)")
    vals = pc.struct_field(m, "v").to_pylist() if len(m) else []
    return np.array([int(v, 16) if v else 0 for v in vals], dtype=np.uint64)


_DEFAULTS = {"ts_ns": (0, np.int64), "cpu": (-1, np.int32), "pid": (-1, np.int32), "line": (-1, np.int64),
             "pfn": (-1, np.int64), "order": (0, np.int8), "gfp_mask": (0, np.uint64), "failed": (False, bool),
             "stack_id": (-1, np.int32), "migratetype": (-1, np.int8), "percpu_refill": (False, bool),
             "fragmenting": (False, bool), "change_ownership": (False, bool), "fallback_migratetype": (-1, np.int8)}


def _col(batch, name: str, *, writable: bool = False) -> np.ndarray:
    value, dtype = _DEFAULTS[name]
    if name not in batch.schema.names:  # a pass that did not read this column
        return np.full(batch.num_rows, value, dtype=dtype)
    return _fill(batch.column(name), value, dtype, writable=writable)


def chunk_from_batch(batch: pa.RecordBatch | pa.Table, start: int) -> Chunk:
    """Classify one batch of the Parquet ``events`` schema into flat arrays (columns not read get defaults)."""
    n = batch.num_rows
    kind = _event_kinds(batch.column("event"))
    api = np.full(n, -1, dtype=np.int8)
    page = np.zeros(n, dtype=np.uint64)
    addr = np.zeros(n, dtype=np.uint64)
    npages = np.zeros(n, dtype=np.int64)
    other = np.flatnonzero(kind == K_OTHER) if "fields" in batch.schema.names else np.zeros(0, np.int64)
    # kprobes are among the events that are not kmem ones
    probe = other
    if len(other):
        fields = pc.take(batch.column("fields"), pa.array(other))
        is_probe = np.asarray(pc.fill_null(pc.starts_with(fields, "("), False).to_numpy(zero_copy_only=False), bool)
        probe = other[is_probe]
        f = pc.filter(fields, pa.array(is_probe))
        func = pc.struct_field(pc.extract_regex(f, r"^\((?P<f>[A-Za-z0-9_.]+)\+0x0/"), "f")
        funcs = func.to_pylist()
        pages = _hex_arg(f, "page")
        addrs = _hex_arg(f, "addr")
        nm = pc.struct_field(pc.extract_regex(f, r"\bn(?:umpages)?=(?P<n>-?[0-9]+)"), "n").to_pylist()
        for j, row in enumerate(probe):
            fn = funcs[j]
            if fn in DM_PROBES:
                kind[row] = DM_PROBES[fn]
                page[row] = pages[j]
            elif fn in CPA_APIS:
                kind[row] = K_CPA
                api[row] = CPA_APIS.index(fn)
                addr[row] = addrs[j]
                npages[row] = int(nm[j]) if nm[j] else 0
    return Chunk(
        start=start, kind=kind, api=api,
        ts=_col(batch, "ts_ns"), cpu=_col(batch, "cpu"), pid=_col(batch, "pid"), line=_col(batch, "line"),
        pfn=_col(batch, "pfn", writable=True), order=_col(batch, "order"), gfp=_col(batch, "gfp_mask"),
        failed=_col(batch, "failed"), stack=_col(batch, "stack_id"), page=page, addr=addr, npages=npages,
        mt=_col(batch, "migratetype"), percpu_refill=_col(batch, "percpu_refill"),
        fragmenting=_col(batch, "fragmenting"), change_ownership=_col(batch, "change_ownership"),
        fallback_mt=_col(batch, "fallback_migratetype"),
    )


def iter_chunks(trace, rows: int = 1 << 20, columns: list[str] | None = None) -> Iterator[Chunk]:
    """The trace's events in (ts, seq) order, ``rows`` at a time; ``columns`` limits what is read."""
    start = 0
    for batch in trace._file.iter_batches(batch_size=rows, columns=columns or COLUMNS):
        yield chunk_from_batch(batch, start)
        start += batch.num_rows


def chunk_from_table(table: pa.Table, start: int = 0) -> Chunk:
    """A whole (possibly filtered) events table as one chunk, for tests and small traces."""
    return chunk_from_batch(table.select(COLUMNS), start)


def first_ts(trace) -> int:
    """Timestamp of the trace's first event (0 for an empty trace), reading one row."""
    for batch in trace._file.iter_batches(batch_size=1, columns=["ts_ns"]):
        if batch.num_rows:
            return int(batch.column(0)[0].as_py())
    return 0
