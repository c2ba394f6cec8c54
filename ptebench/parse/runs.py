"""Sorting events by (ts_ns, seq) in bounded memory.

Each parsed chunk is sorted on its own and spilled to a temporary Arrow IPC file (a
*run*).  :func:`merge_runs` then streams the runs back in global order holding one
batch per run: the *frontier* is the smallest last key among the runs' current
batches, and every buffered row at or below it is final, because each run is
sorted.  Input that is already in order (the kernel merges its per-CPU buffers by
time) streams through with no reordering work beyond a check, one run open at a time.
A chunk's all-null columns are not spilled (most kmem columns belong to a few events): reading
puts them back as slices of one shared null array per type.  Nor are ``seq`` and ``line`` when
they count up by one, or ``src`` when it is constant (a chunk of one input in order): the file's
schema metadata holds their first values and reading rebuilds them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

RUN_BATCH_ROWS = 1 << 17
DERIVED_KEY = b"ptebench.derived"
COUNTING = ("seq", "line")  # left out when they count up by one (first value kept)
CONSTANT = ("src",)  # left out when constant (value kept)


class RunWriter:
    """Spill sorted chunks to IPC files in a temporary directory."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._dir = tempfile.TemporaryDirectory(prefix="ptebench-runs-")
        self.paths: list[Path] = []
        self.rows = 0
        self.in_order = True  # does every run start after the previous one ends (sorted input)?
        self._last: tuple[int, int] | None = None

    def add(self, table: pa.Table) -> None:
        """Append one chunk's rows (any order); they are sorted by (ts_ns, seq) here."""
        ts = table.column("ts_ns").to_numpy()
        seq = table.column("seq").to_numpy()
        # a chunk's seq grows row by row: it is in (ts_ns, seq) order when ts_ns never decreases
        if not (np.all(ts[1:] >= ts[:-1]) and np.all(seq[1:] > seq[:-1])):
            order = np.lexsort((seq, ts))
            table = table.take(pa.array(order))
            ts, seq = ts[order], seq[order]
        if len(ts):
            first = (int(ts[0]), int(seq[0]))
            if self._last is not None and first < self._last:
                self.in_order = False
            self._last = (int(ts[-1]), int(seq[-1]))
        path = Path(self._dir.name) / f"run{len(self.paths):05d}.arrow"
        if table.num_rows:  # all-null and derived columns are not spilled: _batches puts them back
            derived = _derived(table)
            table = table.drop_columns([c for c, a in zip(table.column_names, table.columns, strict=True)
                                        if a.null_count == table.num_rows or c in derived])
            if derived:
                table = table.replace_schema_metadata({DERIVED_KEY: json.dumps(derived)})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=RUN_BATCH_ROWS)
        self.paths.append(path)
        self.rows += table.num_rows

    def close(self) -> None:
        self._dir.cleanup()


def _derived(table: pa.Table) -> dict[str, int]:
    """Columns of ``table`` that need not be spilled: name -> first value (COUNTING: counting up by
    one) or the value (CONSTANT)."""
    out: dict[str, int] = {}
    n = table.num_rows
    for name in (*COUNTING, *CONSTANT):
        if name not in table.column_names or table.column(name).null_count:
            continue
        v = table.column(name).to_numpy()
        first = int(v[0])
        if name in CONSTANT:
            if bool((v == first).all()):
                out[name] = first
        elif int(v[-1]) - first == n - 1 and bool((v[1:] > v[:-1]).all()):  # increasing integers: one apart
            out[name] = first
    return out


def _batches(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A run's batches in ``schema``, with the all-null and derived columns ``RunWriter.add`` left out."""
    with pa.memory_map(str(path)) as src:
        reader = pa.ipc.open_file(src)
        whole = reader.schema.names == schema.names
        derived = json.loads((reader.schema.metadata or {}).get(DERIVED_KEY, b"{}"))
        row = 0
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            if not whole:
                have = set(b.schema.names)
                b = pa.RecordBatch.from_arrays([b.column(f.name) if f.name in have else
                                                _rebuilt(derived[f.name], f, row, b.num_rows) if f.name in derived else
                                                _nulls(b.num_rows, f.type) for f in schema], schema=schema)
            row += b.num_rows
            yield b


def _rebuilt(first: int, field: pa.Field, row: int, n: int) -> pa.Array:
    """Rows row..row+n of a derived column (see ``_derived``)."""
    dtype = field.type.to_pandas_dtype()
    if field.name in CONSTANT:
        return pa.array(np.full(n, first, dtype=dtype), type=field.type)
    return pa.array(np.arange(first + row, first + row + n, dtype=dtype), type=field.type)


_NULLS: dict[pa.DataType, pa.Array] = {}


def _nulls(n: int, type_: pa.DataType) -> pa.Array:
    """n nulls: slices of one shared array per type (batches wait for their row group together)."""
    if n > RUN_BATCH_ROWS:
        return pa.nulls(n, type_)
    if type_ not in _NULLS:
        _NULLS[type_] = pa.nulls(RUN_BATCH_ROWS, type_)
    return _NULLS[type_].slice(0, n)


def _key(batch: pa.RecordBatch, i: int) -> tuple[int, int]:
    return int(batch.column(0)[i].as_py()), int(batch.column(1)[i].as_py())


def merge_runs(paths: list[Path], schema: pa.Schema, in_order: bool = False) -> Iterator[pa.RecordBatch]:
    """Yield record batches in (ts_ns, seq) order; columns 0 and 1 must be ts_ns and seq.

    ``in_order``: each run starts after the previous one ends (``RunWriter.in_order``), so the
    runs are read one after another, one open at a time (memory independent of their number).
    """
    if in_order:
        for p in paths:
            yield from _batches(p, schema)
        return
    iters = [_batches(p, schema) for p in paths]
    current: list[pa.RecordBatch | None] = [next(it, None) for it in iters]
    while True:
        live = [i for i, b in enumerate(current) if b is not None]
        if not live:
            return
        if len(live) == 1:
            i = live[0]
            while current[i] is not None:
                yield current[i]
                current[i] = next(iters[i], None)
            return
        lasts = {i: _key(current[i], current[i].num_rows - 1) for i in live}  # type: ignore[union-attr]
        frontier = min(lasts.values())
        firsts = {i: _key(current[i], 0) for i in live}  # type: ignore[union-attr]
        others = [firsts[i] for i in live if lasts[i] != frontier]
        owner = next(i for i in live if lasts[i] == frontier)
        if not others or frontier < min(others):
            # the frontier run's whole batch precedes everything else: pass it through
            yield current[owner]  # type: ignore[misc]
            current[owner] = next(iters[owner], None)
            continue
        parts = []
        for i in live:
            b = current[i]
            ts = b.column(0).to_numpy()  # type: ignore[union-attr]
            seq = b.column(1).to_numpy()  # type: ignore[union-attr]
            # rows with (ts, seq) <= frontier
            n = int(np.count_nonzero((ts < frontier[0]) | ((ts == frontier[0]) & (seq <= frontier[1]))))
            if n:
                parts.append(b.slice(0, n))  # type: ignore[union-attr]
                rest = b.slice(n)  # type: ignore[union-attr]
                current[i] = rest if rest.num_rows else next(iters[i], None)
        merged = pa.Table.from_batches(parts, schema=schema).combine_chunks()
        order = np.lexsort((merged.column(1).to_numpy(), merged.column(0).to_numpy()))
        yield from merged.take(pa.array(order)).to_batches(max_chunksize=RUN_BATCH_ROWS)
