"""``load()``: a ptebench Parquet file as a :class:`Trace` (Arrow and pandas views)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ptebench.errors import PtebenchError
from ptebench.parse.schema import STACKS_KEY, logical, read_metadata
from ptebench.parse.stacks import stacks_from_ipc

#: Arrow -> pandas nullable dtypes, so that pfn and order stay integers where a value is missing
_PANDAS_TYPES = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


class StackIndex:
    """The deduplicated stacks of one trace; travels in ``DataFrame.attrs`` (never copied)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __deepcopy__(self, memo: dict[int, Any]) -> StackIndex:
        return self

    def frames(self, stack_id: int) -> list[str]:
        """Frames of one stack, innermost first."""
        return [str(f) for f in self.table.column("frames")[stack_id].values.to_pylist()]

    def with_frame(self, frame: str) -> np.ndarray:
        """Ids of the stacks that contain ``frame`` (exact symbol match)."""
        lists = self.table.column("frames").combine_chunks()
        values = lists.values  # DictionaryArray of frame strings
        hit = pc.equal(values.dictionary, frame).to_numpy(zero_copy_only=False)
        if not hit.any():
            return np.empty(0, dtype=np.int32)
        rows = hit[values.indices.to_numpy(zero_copy_only=False)]
        parents = pc.list_parent_indices(lists).to_numpy()
        return np.unique(parents[rows]).astype(np.int32)


def open_parquet(path: str | Path) -> pq.ParquetFile:
    """A Parquet file whose reads allocate from Arrow's system (malloc) pool rather than the default one
    (mimalloc in the wheels; the reader takes the default pool at open).  A replay decodes a trace in chunks
    of the same few sizes, one after another: malloc keeps the memory of one chunk's columns for the next,
    where mimalloc gives it back to the kernel and takes it again, page faults and zeroing each time
    (measured on the bench's 10 M-event traces: 0.07-0.12 CPU-s of system time, 5-8 % of the replay)."""
    prev = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return pq.ParquetFile(path)
    finally:
        pa.set_memory_pool(prev)


class Trace:
    """One ingested trace: ``events`` (pandas), ``table`` (Arrow), ``stacks``, ``meta``, ``bundle``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = open_parquet(self.path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise PtebenchError(f"cannot read trace file ({exc})", file=str(self.path),
                                expected="a Parquet file written by 'ptebench ingest'") from exc
        schema = self._file.schema_arrow
        self.meta: dict[str, Any] = read_metadata(schema, str(self.path))
        self._stacks_blob = (schema.metadata or {}).get(STACKS_KEY, b"")

    @property
    def bundle(self) -> dict[str, Any] | None:
        """The capture bundle's kernel counters, snapshots and memory map, when ingested from one."""
        return self.meta.get("bundle")

    @cached_property
    def table(self) -> pa.Table:
        """The events as Arrow, with their nulls (format 2 stores some columns without: ``parse/schema.py``)."""
        return logical(self._file.read(), self.meta)

    @cached_property
    def stack_index(self) -> StackIndex:
        if not self._stacks_blob:
            return StackIndex(pa.table({"stack_id": pa.array([], pa.int32()),
                                        "frames": pa.array([], pa.list_(pa.string()))}))
        return StackIndex(stacks_from_ipc(self._stacks_blob))

    @property
    def stacks(self) -> pd.DataFrame:
        """stack_id -> frames (list of symbols, innermost first)."""
        return self.stack_index.table.to_pandas()

    @cached_property
    def events(self) -> pd.DataFrame:
        """All events, ordered by (ts_ns, seq); dictionary columns as categoricals, nullable ints."""
        df = self.table.to_pandas(types_mapper=_PANDAS_TYPES.get)
        df.attrs["ptebench.stacks"] = self.stack_index
        return df

    def frames(self, stack_id: int) -> list[str]:
        return self.stack_index.frames(stack_id)

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, rows={self.meta.get('rows')}, events={self.meta.get('events')})"


def load(path: str | Path) -> Trace:
    """Open a Parquet file written by :func:`ptebench.ingest`."""
    return Trace(path)


def has_frame(df: pd.DataFrame, frame: str, *, stacks: StackIndex | Trace | None = None) -> pd.Series:
    """Boolean mask of the rows whose stack contains ``frame`` (exact symbol match).

    ``df`` is ``Trace.events`` or any selection of it (the stacks travel in ``df.attrs``);
    pass ``stacks=`` for frames built some other way.
    """
    index = stacks.stack_index if isinstance(stacks, Trace) else stacks
    if index is None:
        index = df.attrs.get("ptebench.stacks")
    if index is None:
        raise PtebenchError("has_frame() needs the trace's stacks: use Trace.events or pass stacks=trace")
    return df["stack_id"].isin(index.with_frame(frame))
