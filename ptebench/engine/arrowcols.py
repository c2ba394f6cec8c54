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


@njit(cache=True, _nrt=False, inline="always")
def _true_bit(data, valid, has_valid, j):
    """Bit ``j`` of a boolean array's values (0 or 1), and of its validity bitmap when it has one (an integer,
    inlined: a bool here, or a call, keeps the compiler from merging :func:`_bool_bits`' byte stores)."""
    b = (data[j >> 3] >> (j & 7)) & 1
    if has_valid:
        b &= (valid[j >> 3] >> (j & 7)) & 1
    return b


#: per byte of a bitmap, its 8 bits as 8 bytes of 0 or 1 (bit k in byte k, little-endian)
_BYTE_BITS = np.array([sum(((b >> k) & 1) << (8 * k) for k in range(8)) for b in range(256)], dtype=np.uint64)


@njit(cache=True, _nrt=False)
def _bool_bits(data, valid, has_valid, offset, out):
    """An Arrow boolean array's values (bitmap ``data``) as bools (``out``: their bytes, ``uint8``), False where
    null (reference: :func:`_fill_reference`); once aligned, a byte of both bitmaps at a time through
    :data:`_BYTE_BITS` (its 8 output bytes in one store: 0.12 ns a value, against 0.55 a bit at a time)."""
    n = out.shape[0]
    i = 0
    while i < n and (offset + i) & 7:
        out[i] = _true_bit(data, valid, has_valid, offset + i)
        i += 1
    while i + 8 <= n:
        j = (offset + i) >> 3
        byte = data[j] & valid[j] if has_valid else data[j]
        v = _BYTE_BITS[byte]
        for k in range(8):
            out[i + k] = np.uint8((v >> np.uint64(8 * k)) & np.uint64(0xFF))
        i += 8
    while i < n:
        out[i] = _true_bit(data, valid, has_valid, offset + i)
        i += 1


def _signed(a: np.ndarray) -> np.ndarray:
    return a.view(a.dtype.str.replace("u", "i")) if a.dtype.kind == "u" else a


def _array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow array (a table's column may come in chunks)."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr


def _u8(buf: pa.Buffer | None) -> np.ndarray:
    return np.zeros(1, np.uint8) if buf is None else np.frombuffer(buf, np.uint8)


def _fill(arr: pa.Array, value, dtype, *, writable: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """The column as numpy with nulls as ``value``: booleans and columns with nulls in one jitted pass over
    the Arrow buffers; others as they are (zero-copy) unless the caller writes to them or the type differs.
    ``out``: an array of the column's length and ``dtype`` to convert into where a conversion is needed."""
    arr = _array(arr)
    t, n = arr.type, len(arr)
    if pa.types.is_boolean(t) and value is False:
        valid, data = arr.buffers()[:2]
        bits = np.empty(n, bool) if out is None or dtype is not bool else out
        _bool_bits(_u8(data), _u8(valid), arr.null_count > 0, arr.offset, bits.view(np.uint8))
        return bits if bits.dtype == dtype else bits.astype(dtype)
    if pa.types.is_integer(t) and arr.null_count:
        valid, data = arr.buffers()[:2]
        vals = np.frombuffer(data, dtype=t.to_pandas_dtype(), count=arr.offset + n)[arr.offset:]
        res = np.empty(n, dtype) if out is None else out
        # unsigned values through their signed views (the same bits): the kernel's masks are signed
        _fill_valid(_signed(vals), _u8(valid), arr.offset, value, _signed(res))
        return res
    if out is not None and pa.types.is_integer(t) and not arr.null_count and (
            writable or np.dtype(t.to_pandas_dtype()) != dtype):  # a copy or a conversion: into ``out``
        data = arr.buffers()[1]
        np.copyto(out, np.frombuffer(data, dtype=t.to_pandas_dtype(), count=arr.offset + n)[arr.offset:],
                  casting="unsafe")
        return out
    return _fill_reference(arr, value, dtype, writable=writable)


def arrow_values(arr: pa.Array, value, dtype) -> np.ndarray:
    """An integer column's values as numpy, read-only: a view of the Arrow buffer in its own type when it has no
    nulls (format 2's dense columns), else :func:`_fill` into ``dtype``."""
    arr = _array(arr)
    if arr.null_count or not pa.types.is_integer(arr.type):
        return _fill(arr, value, dtype)
    n = len(arr)
    return np.frombuffer(arr.buffers()[1], dtype=arr.type.to_pandas_dtype(), count=arr.offset + n)[arr.offset:]


def _fill_reference(arr: pa.Array, value, dtype, *, writable: bool = False) -> np.ndarray:
    """:func:`_fill` through Arrow's and numpy's own functions (its differential tests' reference)."""
    arr = _array(arr)
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
def _same(data, p, pat, lo, hi):
    """``data[p:p + hi - lo] == pat[lo:hi]`` (the caller checked that ``data`` is long enough)."""
    for q in range(hi - lo):
        if data[p + q] != pat[lo + q]:
            return False
    return True


@njit(cache=True, _nrt=False, inline="always")
def _digits(data, q, e, value, base, limit):
    """The number whose digits (``value``: per byte its digit, -1 for none) start at ``data[q]`` in ``base``:
    (value, True), or (0, False) at more than ``limit`` significant digits."""
    v = np.uint64(0)
    digits = 0
    while q < e and value[data[q]] >= 0:
        d = value[data[q]]
        if digits or d:
            digits += 1
        if digits > limit:
            return np.uint64(0), False
        v = v * np.uint64(base) + np.uint64(d)
        q += 1
    return v, True


@njit(cache=True, _nrt=False)
def _find_hex(data, s, e, key, hexv, word):
    """The first match of ``\\bKEY([0-9a-fA-F]+)`` in ``data[s:e]`` (``key``: the bytes of ``name=0x``, a word
    character first): (value, 1), (0, 0) for none, or (0, -1) at a value of more than 16 significant digits."""
    kl = key.shape[0]
    p = s
    while p + kl < e:  # the key and one digit at least
        if (p == s or not word[data[p - 1]]) and hexv[data[p + kl]] >= 0 and _same(data, p, key, 0, kl):
            v, ok = _digits(data, p + kl, e, hexv, 16, 16)
            return (v, 1) if ok else (np.uint64(0), -1)
        p += 1
    return np.uint64(0), 0


@njit(cache=True, _nrt=False)
def _scan_hex(offsets, data, valid, has_valid, offset, key, hexv, word, out):
    """The first match of ``\\bKEY([0-9a-fA-F]+)`` (:func:`_find_hex`) in each string of an Arrow string array
    (``offsets``/``data``/``valid`` buffers, rows from ``offset``), its value into ``out`` (0: null or no
    match).  Returns -1, leaving the rest, at a value of more than 16 significant digits (the caller's
    reference parses those).  Reference: :func:`_hex_arg_reference`."""
    for r in range(out.shape[0]):
        out[r] = 0
        j = offset + r
        if has_valid and not (valid[j >> 3] >> (j & 7)) & 1:
            continue
        v, found = _find_hex(data, offsets[j], offsets[j + 1], key, hexv, word)
        if found < 0:
            return -1
        out[r] = v
    return 0


def _hex_arg(fields: pa.Array, name: str) -> np.ndarray:
    """The ``name=0x...`` argument of each row as uint64 (0 where absent): the first match of
    ``\\bname=0x([0-9a-fA-F]+)``, in one jitted pass over the string buffers."""
    fields = _array(fields)
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
    v = _array(v)  # a table's column
    otype = np.int64 if pa.types.is_large_string(v.type) else np.int32
    offsets = np.frombuffer(v.buffers()[1], otype, count=v.offset + len(v) + 1)[v.offset:]
    digits = np.frombuffer(v.buffers()[2], np.uint8)[offsets[0]: offsets[0] + 16 * len(v)].reshape(-1, 16)
    return np.bitwise_or.reduce(_HEX[digits] << _NIBBLE_SHIFTS, axis=1)


_DIGIT = np.full(256, -1, dtype=np.int8)
_DIGIT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_PROBE_MARK = np.frombuffer(b"+0x0/", np.uint8)
_UMPAGES = np.frombuffer(b"umpages", np.uint8)


@njit(cache=True, _nrt=False)
def _find_n(data, s, e, word):
    """The first match of ``\\bn(?:umpages)?=(-?[0-9]+)`` in ``data[s:e]``: (value, 1), (0, 0) for none, or
    (0, -1) at a value of more than 18 significant digits."""
    for p in range(s, e):
        if data[p] != 110 or (p > s and word[data[p - 1]]):  # "n" at a word boundary
            continue
        q = p + 1
        if q + 7 <= e and _same(data, q, _UMPAGES, 0, 7):
            q += 7
        if q >= e or data[q] != 61:  # "="
            continue
        q += 1
        neg = q < e and data[q] == 45  # "-"
        if neg:
            q += 1
        if q >= e or _DIGIT[data[q]] < 0:
            continue
        v, ok = _digits(data, q, e, _DIGIT, 10, 18)
        if not ok:
            return np.int64(0), -1
        return (-np.int64(v) if neg else np.int64(v)), 1
    return np.int64(0), 0


@njit(cache=True, _nrt=False)
def _scan_probes(offsets, data, valid, has_valid, offset, rows, names, name_offs, ndm, page_key, addr_key, hexv,
                 word, code, arg, npages):
    """The kprobe events among ``rows`` of an Arrow string array of event fields: a field text
    ``(NAME+0x0/...) args`` whose NAME is probed function ``c`` (``names``/``name_offs``: the probed names'
    bytes; the first ``ndm`` are the direct-map ones) gets ``code[k] = c``, its ``page=0x`` (direct map) or
    ``addr=0x`` argument in ``arg[k]`` and its ``n=``/``numpages=`` one in ``npages[k]`` (:func:`_find_hex`,
    :func:`_find_n`; 0 when absent); others get -1, 0, 0.  Returns -1 at a value too long for 64 bits (the
    caller's reference, ``_probe_fields_reference`` in ``engine/stream.py``, parses those), else 0."""
    nn = name_offs.shape[0] - 1
    for k in range(rows.shape[0]):
        code[k] = -1
        arg[k] = 0
        npages[k] = 0
        j = offset + rows[k]
        if has_valid and not (valid[j >> 3] >> (j & 7)) & 1:
            continue
        s, e = offsets[j], offsets[j + 1]
        if s >= e or data[s] != 40:  # "("
            continue
        m = -1  # the first "+0x0/": the name ends there
        for p in range(s + 1, e - 4):
            if _same(data, p, _PROBE_MARK, 0, 5):
                m = p
                break
        if m < 0:
            continue
        c = -1
        for i in range(nn):
            a, b = name_offs[i], name_offs[i + 1]
            if b - a == m - (s + 1) and _same(data, s + 1, names, a, b):
                c = i
                break
        if c < 0:
            continue
        code[k] = c
        # the arguments are searched from the mark on (the string's first match is the same): a match starting
        # before it would have its "=" inside the probed name or on the mark ("+0x0/"), which hold none
        v, found = _find_hex(data, m, e, page_key if c < ndm else addr_key, hexv, word)
        if found < 0:
            return -1
        arg[k] = v
        if c >= ndm:
            n, found = _find_n(data, m, e, word)
            if found < 0:
                return -1
            npages[k] = n
    return 0


def probe_fields(fields: pa.Array, rows: np.ndarray, probed: list[str], ndm: int):
    """:func:`_scan_probes` of an Arrow string array at ``rows``: (code, arg, npages) arrays, or None when
    a value is too long for the jitted scan."""
    fields = _array(fields)
    valid, offs, data = fields.buffers()[:3]
    n = len(fields)
    otype = np.int64 if pa.types.is_large_string(fields.type) else np.int32
    offsets = np.frombuffer(offs, otype, count=fields.offset + n + 1) if n else np.zeros(1, otype)
    enc = [p.encode() for p in probed]
    names = np.frombuffer(b"".join(enc), np.uint8)
    name_offs = np.cumsum([0] + [len(b) for b in enc]).astype(np.int64)
    code = np.empty(len(rows), np.int64)
    arg = np.empty(len(rows), np.uint64)
    npages = np.empty(len(rows), np.int64)
    if _scan_probes(offsets, _u8(data), _u8(valid), fields.null_count > 0, fields.offset,
                    np.ascontiguousarray(rows, np.int64), names, name_offs, ndm,
                    np.frombuffer(b"page=0x", np.uint8), np.frombuffer(b"addr=0x", np.uint8), _HEXV, _WORD, code, arg,
                    npages) < 0:
        return None
    return code, arg, npages
