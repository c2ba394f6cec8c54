"""Arrow columns to numpy for the event stream (``engine/stream.py``), in jitted passes over the Arrow buffers:
numbers and booleans with their nulls filled, dictionary codes looked up, and the hex arguments of kprobe
events found in their text.  Each kernel's reference is the Arrow/numpy function beside it
(``*_reference``), which its differential tests compare it with."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit


def _bits(buf: pa.Buffer, offset: int, n: int) -> np.ndarray:
    """An Arrow bitmap (values of a boolean array, or validity) as a bool array of ``n`` from ``offset``."""
    return np.unpackbits(np.frombuffer(buf, np.uint8), count=offset + n, bitorder="little")[offset:].view(bool)


@njit(cache=True, _nrt=False)
def _fill_valid(vals, valid, offset, value, out):
    """``out[i] = vals[i]`` where bit ``offset + i`` of the Arrow validity bitmap ``valid`` is set, else
    ``value`` (integers; reference: :func:`_fill_reference`): a validity byte at a time once aligned, whole
    bytes of valid or null rows without a test per row, mixed ones without a branch."""
    n = out.shape[0]
    i = 0
    while i < n and (offset + i) & 7:
        j = offset + i
        out[i] = vals[i] if (valid[j >> 3] >> (j & 7)) & 1 else value
        i += 1
    while i + 8 <= n:
        byte = valid[(offset + i) >> 3]
        if byte == 0xFF:
            for k in range(8):
                out[i + k] = vals[i + k]
        elif byte == 0:
            for k in range(8):
                out[i + k] = value
        else:
            for k in range(8):
                m = -np.int64((byte >> k) & 1)  # all ones where valid
                out[i + k] = (np.int64(vals[i + k]) & m) | (np.int64(value) & ~m)
        i += 8
    while i < n:
        j = offset + i
        out[i] = vals[i] if (valid[j >> 3] >> (j & 7)) & 1 else value
        i += 1


@njit(cache=True, _nrt=False)
def _bool_bits(data, valid, has_valid, offset, out):
    """An Arrow boolean array's values (bitmap ``data``) as bools, False where null (reference:
    :func:`_fill_reference`); a byte of both bitmaps at a time once aligned."""
    n = out.shape[0]
    i = 0
    while i < n and (offset + i) & 7:
        j = offset + i
        b = (data[j >> 3] >> (j & 7)) & 1
        if has_valid:
            b &= (valid[j >> 3] >> (j & 7)) & 1
        out[i] = b != 0
        i += 1
    while i + 8 <= n:
        j = (offset + i) >> 3
        byte = data[j] & valid[j] if has_valid else data[j]
        for k in range(8):
            out[i + k] = (byte >> k) & 1 != 0
        i += 8
    while i < n:
        j = offset + i
        b = (data[j >> 3] >> (j & 7)) & 1
        if has_valid:
            b &= (valid[j >> 3] >> (j & 7)) & 1
        out[i] = b != 0
        i += 1


def _signed(a: np.ndarray) -> np.ndarray:
    return a.view(a.dtype.str.replace("u", "i")) if a.dtype.kind == "u" else a


def _u8(buf: pa.Buffer | None) -> np.ndarray:
    return np.zeros(1, np.uint8) if buf is None else np.frombuffer(buf, np.uint8)


def _fill(arr: pa.Array, value, dtype, *, writable: bool = False) -> np.ndarray:
    """The column as numpy with nulls as ``value``: booleans and columns with nulls in one jitted pass over
    the Arrow buffers; others as they are (zero-copy) unless the caller writes to them or the type differs."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    t, n = arr.type, len(arr)
    if pa.types.is_boolean(t) and value is False:
        valid, data = arr.buffers()[:2]
        out = np.empty(n, bool)
        _bool_bits(_u8(data), _u8(valid), arr.null_count > 0, arr.offset, out)
        return out if out.dtype == dtype else out.astype(dtype)
    if pa.types.is_integer(t) and arr.null_count:
        valid, data = arr.buffers()[:2]
        vals = np.frombuffer(data, dtype=t.to_pandas_dtype(), count=arr.offset + n)[arr.offset:]
        out = np.empty(n, dtype)
        # unsigned values through their signed views (the same bits): the kernel's masks are signed
        _fill_valid(_signed(vals), _u8(valid), arr.offset, value, _signed(out))
        return out
    return _fill_reference(arr, value, dtype, writable=writable)


def _fill_reference(arr: pa.Array, value, dtype, *, writable: bool = False) -> np.ndarray:
    """:func:`_fill` through Arrow's and numpy's own functions (its differential tests' reference)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    t, n = arr.type, len(arr)
    if pa.types.is_boolean(t) and value is False:
        valid, data = arr.buffers()[:2]
        out = _bits(data, arr.offset, n)
        if arr.null_count:
            out &= _bits(valid, arr.offset, n)
        return out if out.dtype == dtype else out.astype(dtype)
    if arr.null_count:
        arr = pc.fill_null(arr, value)
    out = arr.to_numpy(zero_copy_only=False)
    return np.array(out, dtype=dtype) if writable or out.dtype != dtype else out


@njit(cache=True, _nrt=False)
def _lookup(lut, idx, out):
    """``out[i] = lut[idx[i]]`` (reference: ``lut.take(idx)``)."""
    for i in range(idx.shape[0]):
        out[i] = lut[idx[i]]


#: ASCII hex digit -> value
_HEX = np.zeros(256, dtype=np.uint64)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint64)
_NIBBLE_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


#: ASCII byte -> hex digit value (-1: not one); -> a regex word character (``\\b``'s [0-9A-Za-z_])
_HEXV = np.full(256, -1, dtype=np.int8)
_HEXV[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEXV[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_WORD = np.zeros(256, dtype=np.bool_)
_WORD[np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", np.uint8)] = True


@njit(cache=True, _nrt=False)
def _scan_hex(offsets, data, valid, has_valid, offset, key, hexv, word, out):
    """The first match of ``\\bKEY([0-9a-fA-F]+)`` (``key``: the bytes of ``name=0x``, a word character first) in
    each string of an Arrow string array (``offsets``/``data``/``valid`` buffers, rows from ``offset``), its
    value into ``out`` (0: null or no match).  Returns -1, leaving the rest, at a value of more than 16
    significant digits (the caller's reference parses those).  Reference: :func:`_hex_arg_reference`."""
    kl = key.shape[0]
    for r in range(out.shape[0]):
        out[r] = 0
        j = offset + r
        if has_valid and not (valid[j >> 3] >> (j & 7)) & 1:
            continue
        s, e = offsets[j], offsets[j + 1]
        p = s
        while p + kl < e:  # the key and one digit at least
            if (p == s or not word[data[p - 1]]) and hexv[data[p + kl]] >= 0:
                same = True
                for q in range(kl):
                    if data[p + q] != key[q]:
                        same = False
                        break
                if same:
                    v = np.uint64(0)
                    digits = 0
                    q = p + kl
                    while q < e and hexv[data[q]] >= 0:
                        d = hexv[data[q]]
                        if digits or d:
                            digits += 1
                        if digits > 16:
                            return -1
                        v = (v << np.uint64(4)) | np.uint64(d)
                        q += 1
                    out[r] = v
                    break
            p += 1
    return 0


def _hex_arg(fields: pa.Array, name: str) -> np.ndarray:
    """The ``name=0x...`` argument of each row as uint64 (0 where absent): the first match of
    ``\\bname=0x([0-9a-fA-F]+)``, in one jitted pass over the string buffers."""
    if isinstance(fields, pa.ChunkedArray):
        fields = fields.combine_chunks()
    n = len(fields)
    valid, offs, data = fields.buffers()[:3]
    otype = np.int64 if pa.types.is_large_string(fields.type) else np.int32
    offsets = np.frombuffer(offs, otype, count=fields.offset + n + 1) if n else np.zeros(1, otype)
    out = np.empty(n, np.uint64)
    key = np.frombuffer(f"{name}=0x".encode(), np.uint8)
    if _scan_hex(offsets, _u8(data), _u8(valid), fields.null_count > 0, fields.offset, key, _HEXV, _WORD, out) < 0:
        return _hex_arg_reference(fields, name)
    return out


def _hex_arg_reference(fields: pa.Array, name: str) -> np.ndarray:
    """:func:`_hex_arg` through Arrow's regex engine (its reference, and its way with more than 16 digits)."""
    m = pc.extract_regex(fields, rf"\b{name}=0x(?P<v>[0-9a-fA-F]+)")
    if not len(m):
        return np.zeros(0, dtype=np.uint64)
    v = pc.struct_field(m, "v")
    if (pc.max(pc.utf8_length(v)).as_py() or 0) > 16:  # longer than 64 bits: one by one (as int() does)
        return np.array([int(x, 16) if x else 0 for x in v.to_pylist()], dtype=np.uint64)
    # every value as 16 hex digits, then digit by digit
    v = pc.utf8_lpad(pc.fill_null(v, "0"), width=16, padding="0")
    if isinstance(v, pa.ChunkedArray):  # a table's column
        v = v.combine_chunks()
    otype = np.int64 if pa.types.is_large_string(v.type) else np.int32
    offsets = np.frombuffer(v.buffers()[1], otype, count=v.offset + len(v) + 1)[v.offset:]
    digits = np.frombuffer(v.buffers()[2], np.uint8)[offsets[0]: offsets[0] + 16 * len(v)].reshape(-1, 16)
    return np.bitwise_or.reduce(_HEX[digits] << _NIBBLE_SHIFTS, axis=1)
