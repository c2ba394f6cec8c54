"""Deduplicated stacks: frames and stacks interned to ids shared by all chunks.

A stack is stored once as a tuple of frame ids (innermost first, as ftrace prints
it, with the tracer's own leading frames stripped); events point at it through
``stack_id``.  The table travels in the Parquet file as a compressed Arrow IPC
stream under the ``ptebench.stacks`` metadata key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Interner:
    """Strings to stable int32 codes, shared by all chunks (dictionary columns)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.values: list[str] = []

    def encode(self, arr: pa.Array) -> np.ndarray:
        """Codes of a string/binary array; nulls become -1."""
        enc = pc.dictionary_encode(arr)
        mapping = np.asarray([self._code(v) for v in enc.dictionary.to_pylist()] or [0], dtype=np.int32)
        valid = enc.indices.is_valid().to_numpy(zero_copy_only=False)
        idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return np.where(valid, mapping[idx], -1).astype(np.int32)

    def _code(self, value: str | bytes) -> int:
        if isinstance(value, bytes):
            value = value.decode()
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code


class StackTable:
    """Frames and stacks seen so far."""

    def __init__(self) -> None:
        self.frames = Interner()
        self.ids: dict[tuple[int, ...], int] = {}
        self.stacks: list[tuple[int, ...]] = []
        self._tracing: list[bool] = []

    def intern(self, frames: tuple[int, ...]) -> int:
        sid = self.ids.get(frames)
        if sid is None:
            sid = self.ids[frames] = len(self.stacks)
            self.stacks.append(frames)
        return sid

    def tracing_mask(self, is_tracing: Callable[[str], bool]) -> list[bool]:
        """Per frame id: is it one of the tracer's own frames?"""
        values = self.frames.values
        self._tracing.extend(is_tracing(v) for v in values[len(self._tracing) :])
        return self._tracing

    def to_arrow(self) -> pa.Table:
        """stack_id, frames (list of frame strings, innermost first)."""
        offsets = np.zeros(len(self.stacks) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum([len(s) for s in self.stacks])
        flat = np.fromiter((f for s in self.stacks for f in s), dtype=np.int32, count=int(offsets[-1]))
        dictionary = pa.array(self.frames.values, type=pa.string())
        values = pa.DictionaryArray.from_arrays(pa.array(flat, type=pa.int32()), dictionary)
        frames = pa.ListArray.from_arrays(pa.array(offsets), values)
        return pa.table({"stack_id": pa.array(np.arange(len(self.stacks), dtype=np.int32)), "frames": frames})


def stacks_to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def stacks_from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
