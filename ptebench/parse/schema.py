"""The Parquet layout: run tables, the final events schema and the ``ptebench`` metadata.

One Parquet file per trace.  Its schema-level metadata holds one key, ``ptebench``,
whose value is versioned JSON (:data:`FORMAT_VERSION`), and ``ptebench.stacks``,
the deduplicated stack table as a zstd-compressed Arrow IPC stream.  Readers check
``format_version`` and refuse files from a newer ptebench.

Format 2 stores the typed integer and boolean columns, which are null outside their events, without nulls
(:data:`DENSE`): a null is written as the column's none value and bit ``i`` of the ``absent`` column says that
the ``i``-th of them was null (not printed).  Parquet's definition levels of those columns cost a replay
12.7 ns an event to decode (10 M events of mixed_small); :func:`logical` puts the nulls back for every
reader but the replay's own passes, which read the none values as they are.  Format 1 files read as before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ptebench.errors import PtebenchError
from ptebench.parse.events import BOOL_COLUMNS, INT_COLUMNS, SCHEMA
from ptebench.parse.gfp import GFP_TABLE_ID, gfp_mask

FORMAT_VERSION = 2
META_KEY = b"ptebench"
STACKS_KEY = b"ptebench.stacks"

DICT_COLUMNS = ("comm", "lat_flags", "event", "gfp")
NULL_INT = np.iinfo(np.int64).min

#: the spill format: dictionary columns as int32 codes into the parser's interners
RUN_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.int32()) if f.name in DICT_COLUMNS else f
        for f in SCHEMA
        if f.name != "gfp_mask"
    ]
)


#: format 2: column -> the value its nulls are stored as: for the columns the replay reads, its none values
#: (``engine/stream.py``, which refuses a file whose ``dense_columns`` say otherwise); -1 for the other integers
DENSE: dict[str, int | bool] = {
    "tgid": -1, "pfn": -1, "order": 0, "migratetype": -1, "alloc_order": -1, "fallback_order": -1,
    "pageblock_order": -1, "alloc_migratetype": -1, "fallback_migratetype": -1, "gfp_mask": 0,
    "percpu_refill": False, "fragmenting": False, "change_ownership": False, "failed": False, "stack_id": -1,
}
ABSENT = "absent"  # uint16: bit i set where DENSE's i-th column is null
_BIT = {name: np.uint16(i) for i, name in enumerate(DENSE)}
#: the schema on disk (format 2): the DENSE columns required, and ``absent``
DISK_SCHEMA = pa.schema([f.with_nullable(False) if f.name in DENSE else f for f in SCHEMA]
                        + [pa.field(ABSENT, pa.uint16(), nullable=False)])


def dense_columns() -> list[dict[str, Any]]:
    """The metadata's ``dense_columns``: in bit order of ``absent``, each column and the value its nulls are
    stored as."""
    return [{"column": k, "null_as": v} for k, v in DENSE.items()]


def stored_dense(meta: dict[str, Any]) -> dict[str, int | bool]:
    """A file's dense columns (in bit order) and the values of their nulls; none in a format 1 file."""
    return {d["column"]: d["null_as"] for d in meta.get("dense_columns") or []}


def _valid_bits(arr: pa.Array) -> np.ndarray:
    """An array's validity as bools (all True without nulls)."""
    if not arr.null_count:
        return np.ones(len(arr), bool)
    bits = np.frombuffer(arr.buffers()[0], np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].view(bool)


def to_disk(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A :data:`SCHEMA` batch as :data:`DISK_SCHEMA` stores it: the DENSE columns' nulls as their none values,
    recorded in ``absent``."""
    absent = np.zeros(batch.num_rows, np.uint16)
    cols = []
    for f in SCHEMA:
        col = batch.column(f.name)
        if f.name in DENSE and col.null_count:
            absent |= (~_valid_bits(col)).astype(np.uint16) << _BIT[f.name]
            col = pc.fill_null(col, pa.scalar(DENSE[f.name], f.type))
        cols.append(col)
    cols.append(pa.array(absent, pa.uint16()))
    return pa.RecordBatch.from_arrays(cols, schema=DISK_SCHEMA)


def logical(data: pa.Table | pa.RecordBatch, meta: dict[str, Any]) -> pa.Table | pa.RecordBatch:
    """Columns as read from a trace file (any subset, with ``absent`` for format 2's DENSE ones) -> the same
    columns with their nulls (the file's ``meta`` names its dense columns, bit by bit); ``absent`` dropped."""
    dense = list(stored_dense(meta))
    if not dense or ABSENT not in data.schema.names:
        return data
    absent = np.asarray(data.column(ABSENT).to_numpy(), np.uint16)
    names, cols = [], []
    for f in data.schema:
        if f.name == ABSENT:
            continue
        col = data.column(f.name)
        if f.name in dense:
            null = ((absent >> np.uint16(dense.index(f.name))) & 1).astype(bool)
            if null.any():
                if isinstance(col, pa.ChunkedArray):
                    col = col.combine_chunks()
                col = pc.if_else(pa.array(null), pa.scalar(None, f.type), col)
            f = f.with_nullable(True)
        names.append(f)
        cols.append(col)
    schema = pa.schema(names, metadata=data.schema.metadata)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(cols, schema=schema)
    return pa.Table.from_arrays(cols, schema=schema)


def disk_columns(columns: list[str], meta: dict[str, Any]) -> list[str]:
    """The columns to read for ``columns``: with ``absent`` when the file stores some of them dense."""
    dense = stored_dense(meta)
    return columns + [ABSENT] if any(c in dense for c in columns) and ABSENT not in columns else columns


def run_table(cols: dict[str, Any]) -> pa.Table:
    """A chunk's column dict (numpy with sentinels) -> a RUN_SCHEMA table with real nulls."""
    arrays = []
    for f in RUN_SCHEMA:
        v = cols[f.name]
        if isinstance(v, pa.Array):
            arrays.append(v)
        elif f.name in INT_COLUMNS:
            null = v == NULL_INT
            arrays.append(pa.array(v, type=f.type, mask=null) if null.any() else
                          pa.array(v.astype(f.type.to_pandas_dtype(), copy=False), type=f.type))
        elif f.name in (*BOOL_COLUMNS, "failed"):
            arrays.append(pa.array(v == 1, type=pa.bool_(), mask=v < 0))
        elif f.name in (*DICT_COLUMNS, "tgid", "stack_id"):
            arrays.append(pa.array(v, type=f.type, mask=v < 0))
        else:
            arrays.append(pa.array(v, type=f.type))
    return pa.Table.from_arrays(arrays, schema=RUN_SCHEMA)


def arrow_array(type_: pa.DataType, data: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """An Arrow array over ``data`` (values, or packed bits for booleans) with validity ``valid``
    (bools; None: all valid), built from buffers: ``pa.array(..., mask=)`` costs ~3.5 ns a row more."""
    bits = None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    n = len(valid) if valid is not None else len(data)
    return pa.Array.from_buffers(type_, n, [bits, pa.py_buffer(data)], null_count=-1 if bits else 0)


class Finisher:
    """Turn merged run batches into final SCHEMA batches: dictionaries, gfp masks, late stack ids."""

    def __init__(self, dictionaries: dict[str, list[str]], patches: list[tuple[int, int]]) -> None:
        self.dicts = {k: pa.array(v, type=pa.string()) for k, v in dictionaries.items()}
        self.gfp_masks = pa.array([gfp_mask(s) for s in dictionaries["gfp"]], type=pa.uint64())
        patches = sorted(patches)
        self.patch_seq = np.array([p[0] for p in patches], dtype=np.int64)
        self.patch_sid = np.array([p[1] for p in patches], dtype=np.int32)

    @property
    def gfp_masks(self) -> pa.Array:
        """The gfp mask of each gfp string (by interner code; null: no mask)."""
        return self._gfp_masks

    @gfp_masks.setter
    def gfp_masks(self, masks: pa.Array) -> None:
        self._gfp_masks = masks
        self._mask_values = masks.fill_null(0).to_numpy().astype(np.uint64)
        self._mask_valid = masks.is_valid().to_numpy(zero_copy_only=False)

    def _gfp_mask(self, gfp: pa.Array) -> pa.Array:
        """``gfp_masks.take(gfp)`` as numpy gathers (Arrow's take costs ~6 ns a row more here).
        The codes under null rows may be anything: they are clipped into range, their rows stay null."""
        n = len(gfp)
        if gfp.null_count == n or not len(self._mask_values):
            return pa.nulls(n, pa.uint64())
        off = gfp.offset
        codes = np.frombuffer(gfp.buffers()[1], dtype=np.int32, count=off + n)[off:]
        codes = np.clip(codes, 0, len(self._mask_values) - 1)
        valid = self._mask_valid[codes] & _valid_bits(gfp)
        return arrow_array(pa.uint64(), self._mask_values[codes], valid)

    def finish(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        cols = dict(zip(batch.schema.names, batch.columns, strict=True))
        cols["gfp_mask"] = self._gfp_mask(cols["gfp"])
        for name in DICT_COLUMNS:
            cols[name] = pa.DictionaryArray.from_arrays(cols[name], self.dicts[name], safe=False)  # codes are ours
        if len(self.patch_seq):
            seq = cols["seq"].to_numpy()
            pos = np.searchsorted(self.patch_seq, seq)
            pos = np.minimum(pos, len(self.patch_seq) - 1)
            hit = self.patch_seq[pos] == seq
            if hit.any():
                sid = cols["stack_id"].fill_null(-1).to_numpy(zero_copy_only=False).copy()
                sid[hit] = self.patch_sid[pos[hit]]
                cols["stack_id"] = pa.array(sid, type=pa.int32(), mask=sid < 0)
        return pa.RecordBatch.from_arrays([cols[f.name] for f in SCHEMA], schema=SCHEMA)


def build_metadata(**fields: Any) -> dict[str, Any]:
    from ptebench._version import __version__

    return {
        "format_version": FORMAT_VERSION,
        "ptebench_version": __version__,
        "dense_columns": dense_columns(),
        "time_unit": "ns",
        "gfp_table": GFP_TABLE_ID,
        "migratetype_table": "linux-4.4+",
        **fields,
    }


def read_metadata(schema: pa.Schema, path: str) -> dict[str, Any]:
    meta = schema.metadata or {}
    if META_KEY not in meta:
        raise PtebenchError("not a ptebench trace file (no 'ptebench' metadata key)", file=path,
                            expected="a Parquet file written by 'ptebench ingest'")
    doc = json.loads(meta[META_KEY])
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PtebenchError(f"trace file format_version {version!r} is newer than this ptebench reads",
                            file=path, expected=f"format_version <= {FORMAT_VERSION}")
    return doc
