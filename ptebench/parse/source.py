"""Opening inputs: plain or compressed files and stdin, read in line-aligned chunks.

Compression is recognised by its magic bytes (xz, gzip, zstd), not by the file name.
A truncated compressed stream is an error; an unterminated last line is handed back
to the caller, which counts it as a partial line (``trace_pipe`` cut off mid-line).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import zstandard

from ptebench.errors import PtebenchError

CHUNK_BYTES = 16 << 20

_MAGIC = {
    b"\xfd7zXZ\x00": "xz",
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
}


class _Hashing:
    """A raw byte stream that hashes and counts what is read through it."""

    def __init__(self, raw: BinaryIO, head: bytes) -> None:
        self.raw = raw
        self.head = head
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if 0 <= n < len(self.head):
                data, self.head = self.head[:n], self.head[n:]
            else:
                data, self.head = self.head, b""
                data += self.raw.read() if n < 0 else self.raw.read(n - len(data))
        else:
            data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, b: memoryview) -> int:
        n = len(b)
        k = 0
        if self.head:
            k = min(n, len(self.head))
            b[:k] = self.head[:k]
            self.head = self.head[k:]
        if k < n:
            got = self.raw.readinto(b[k:])  # type: ignore[attr-defined]
            k += got or 0
        self.sha.update(b[:k])
        self.size += k
        return k

    def readable(self) -> bool:
        return True


@dataclass
class Source:
    """One input: its display name, compression, and (after reading) size and sha256."""

    name: str
    compression: str = "none"
    size: int = 0
    sha256: str = ""
    decompressed_size: int = 0
    lines: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "compression": self.compression,
            "size": self.size,
            "sha256": self.sha256,
            "decompressed_size": self.decompressed_size,
            "lines": self.lines,
            **self.extra,
        }


def _decompressor(kind: str, raw: _Hashing) -> BinaryIO:
    if kind == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[arg-type]
    if kind == "zstd":
        return _ZstdReader(raw)  # type: ignore[return-value]
    return raw  # type: ignore[return-value]


class _ZstdReader:
    """Multi-frame zstd decoding that notices a truncated last frame.

    ``zstandard``'s stream_reader ends quietly at a cut frame, so the frames are
    decoded here with ``decompressobj`` and ``eof`` is checked at the end of input.
    """

    def __init__(self, raw: _Hashing) -> None:
        self.raw = raw
        self.dobj = zstandard.ZstdDecompressor().decompressobj()
        self.pending = b""

    def read(self, n: int) -> bytes:
        while len(self.pending) < n:
            block = self.raw.read(1 << 20)
            if not block:
                if not self.dobj.eof:
                    raise EOFError("zstd stream ended inside a frame")
                break
            while block:
                if self.dobj.eof:
                    self.dobj = zstandard.ZstdDecompressor().decompressobj()
                self.pending += self.dobj.decompress(block)
                block = self.dobj.unused_data if self.dobj.eof else b""
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def readinto(self, b: memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _open(path: str | Path, source: Source) -> tuple[BinaryIO, BinaryIO, _Hashing, bool]:
    """(raw stream, decompressed stream, hashing layer, close the raw stream when done)."""
    if str(path) == "-":
        return sys.stdin.buffer, *_layers(sys.stdin.buffer, source), False
    try:
        raw_stream = Path(path).open("rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise PtebenchError(f"cannot open input: {exc.strerror}", file=str(path)) from exc
    return raw_stream, *_layers(raw_stream, source), True


def _layers(raw_stream: BinaryIO, source: Source) -> tuple[BinaryIO, _Hashing]:
    head = raw_stream.read(6)
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), "none")
    source.compression = kind
    raw = _Hashing(raw_stream, head)
    return _decompressor(kind, raw), raw


class ChunkReader:
    """Decompressed text in line-aligned chunks, all in one reused buffer (no copies, no fresh pages).

    :meth:`next` hands out a view ``buf[:n]``: the bytes the caller did not consume from the
    previous view, then up to ``chunk_bytes`` newly read bytes, cut after the last newline.  With
    ``at_eof`` the input is exhausted and the view holds everything left (it may end without a
    newline).  ``new_bytes`` is the number of decompressed bytes read for the last view.  The
    source's size and sha256 are filled in at the end, as :func:`read_chunks` does.
    """

    def __init__(self, path: str | Path, source: Source, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.source = source
        self.chunk_bytes = chunk_bytes
        self._raw_stream, self._stream, self._raw, self._close = _open(path, source)
        self._alloc(chunk_bytes + (1 << 16))
        self.filled = 0  # bytes in the buffer
        self.new_bytes = 0

    def _alloc(self, size: int) -> None:
        self.ba = bytearray(size)
        self.mv = memoryview(self.ba)
        self.arr = np.frombuffer(self.ba, dtype=np.uint8)

    def close(self) -> None:
        if self._close:
            self._raw_stream.close()

    def __enter__(self) -> ChunkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, at: int) -> int:
        """Read up to chunk_bytes into the buffer at ``at``; 0 at the end of the input."""
        kind = self.source.compression
        end = at + self.chunk_bytes
        k = at
        try:
            while k < end:
                got = self._stream.readinto(self.mv[k:end])  # type: ignore[attr-defined]
                if not got:
                    break
                k += got
        except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as exc:
            raise PtebenchError(
                f"the {kind} stream is corrupt or truncated ({exc})",
                file=self.source.name,
                expected=f"a complete {kind} stream",
            ) from exc
        return k - at

    def next(self, consumed: int) -> tuple[np.ndarray, bool]:
        """Drop the first ``consumed`` bytes of the last view; return (the next view, at_eof)."""
        rest = self.filled - consumed
        if consumed and rest:
            self.arr[:rest] = self.arr[consumed : self.filled]
        self.filled = rest
        self.new_bytes = 0
        while True:
            if self.filled + self.chunk_bytes > len(self.ba):
                old = self.arr[: self.filled].copy()
                self._alloc(2 * (self.filled + self.chunk_bytes))
                self.arr[: self.filled] = old
            start = self.filled
            got = self._read(start)
            self.new_bytes += got
            self.source.decompressed_size += got
            self.filled += got
            if not got:
                self.source.size = self._raw.size
                self.source.sha256 = self._raw.sha.hexdigest()
                return self.arr[: self.filled], True
            cut = self.ba.rfind(b"\n", start, self.filled) + 1
            if cut:
                return self.arr[:cut], False

    def byte_chunks(self, view: np.ndarray, at_eof: bool) -> Iterator[tuple[bytes, bool]]:
        """The chunks as :func:`read_chunks` yields them, from ``view`` (this reader's last) on."""
        while True:
            yield view.tobytes(), at_eof
            if at_eof:
                return
            view, at_eof = self.next(len(view))


def read_chunks(path: str | Path, source: Source, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bool]]:
    """Yield (bytes, at_eof) pieces of the decompressed text, each ending at a line end.

    The final piece (at_eof=True) may end without a newline.  ``source`` is filled with
    the compressed size, sha256 and decompressed size once the input is exhausted.
    """
    if str(path) == "-":
        raw_stream: BinaryIO = sys.stdin.buffer
        close = False
    else:
        try:
            raw_stream = Path(path).open("rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise PtebenchError(f"cannot open input: {exc.strerror}", file=str(path)) from exc
        close = True
    try:
        head = raw_stream.read(6)
        kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), "none")
        source.compression = kind
        raw = _Hashing(raw_stream, head)
        stream = _decompressor(kind, raw)
        carry = b""
        while True:
            try:
                block = stream.read(chunk_bytes)
            except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as exc:
                raise PtebenchError(
                    f"the {kind} stream is corrupt or truncated ({exc})",
                    file=source.name,
                    expected=f"a complete {kind} stream",
                ) from exc
            if not block:
                source.size = raw.size
                source.sha256 = raw.sha.hexdigest()
                if carry:
                    yield carry, True
                else:
                    yield b"", True
                return
            source.decompressed_size += len(block)
            data = carry + block if carry else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            carry = data[cut:]
            yield data[:cut], False
    finally:
        if close:
            raw_stream.close()

