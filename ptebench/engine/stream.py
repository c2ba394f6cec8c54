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


def _fill(arr: pa.Array, value, dtype) -> np.ndarray:
    return np.array(pc.fill_null(arr, value).to_numpy(zero_copy_only=False), dtype=dtype)  # writable copy


def _hex_arg(fields: pa.Array, name: str) -> np.ndarray:
    m = pc.extract_regex(fields, rf"\b{name}=0x(?P<v>[0-9a-fA-F]+)")
    vals = pc.struct_field(m, "v").to_pylist() if len(m) else []
    return np.array([int(v, 16) if v else 0 for v in vals], dtype=np.uint64)


def chunk_from_batch(batch: pa.RecordBatch | pa.Table, start: int) -> Chunk:
    """Classify one batch of the Parquet ``events`` schema into flat arrays."""
    n = batch.num_rows
    ev = pc.cast(batch.column("event"), pa.string())
    kind = np.zeros(n, dtype=np.int8)
    for name, code in KMEM_KINDS.items():
        kind[np.asarray(pc.equal(ev, name).to_numpy(zero_copy_only=False), dtype=bool)] = code
    api = np.full(n, -1, dtype=np.int8)
    page = np.zeros(n, dtype=np.uint64)
    addr = np.zeros(n, dtype=np.uint64)
    npages = np.zeros(n, dtype=np.int64)
    fields = batch.column("fields")
    probe = np.flatnonzero(np.asarray(pc.fill_null(pc.starts_with(fields, "("), False).to_numpy(zero_copy_only=False),
                                      dtype=bool) & (kind == 0))
    if len(probe):
        f = pc.take(fields, pa.array(probe))
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
        ts=_fill(batch.column("ts_ns"), 0, np.int64), cpu=_fill(batch.column("cpu"), -1, np.int32),
        pid=_fill(batch.column("pid"), -1, np.int32), line=_fill(batch.column("line"), -1, np.int64),
        pfn=_fill(batch.column("pfn"), -1, np.int64), order=_fill(batch.column("order"), 0, np.int8),
        gfp=_fill(batch.column("gfp_mask"), 0, np.uint64), failed=_fill(batch.column("failed"), False, bool),
        stack=_fill(batch.column("stack_id"), -1, np.int32), page=page, addr=addr, npages=npages,
        mt=_fill(batch.column("migratetype"), -1, np.int8),
        percpu_refill=_fill(batch.column("percpu_refill"), False, bool),
        fragmenting=_fill(batch.column("fragmenting"), False, bool),
        change_ownership=_fill(batch.column("change_ownership"), False, bool),
        fallback_mt=_fill(batch.column("fallback_migratetype"), -1, np.int8),
    )


def iter_chunks(trace, rows: int = 1 << 20) -> Iterator[Chunk]:
    """The trace's events in (ts, seq) order, ``rows`` at a time."""
    start = 0
    for batch in trace._file.iter_batches(batch_size=rows, columns=COLUMNS):
        yield chunk_from_batch(batch, start)
        start += batch.num_rows


def chunk_from_table(table: pa.Table, start: int = 0) -> Chunk:
    """A whole (possibly filtered) events table as one chunk, for tests and small traces."""
    return chunk_from_batch(table.select(COLUMNS), start)
