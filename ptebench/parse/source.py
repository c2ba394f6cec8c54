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

import zstandard

from ptebench.errors import PtebenchError

CHUNK_BYTES = 32 << 20

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

