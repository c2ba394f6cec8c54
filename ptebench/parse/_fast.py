"""The jitted fast path of ``TextParser``: one pass over a chunk of ordinary kmem event lines.

:func:`parse_chunk` cuts each line as ``_scan.scan_lines`` does (same rules: the first
``" [cpu]"`` after a ``comm-pid``, optional irq-info flags, ``sec[.frac]:``, ``event:``),
interns the event name, comm, flags and gfp string in the name table (``_names.py``, looked up
by :func:`intern` here), parses
the kmem fields in their printk order as ``_scan.scan_fields`` does, and writes each row's
columns into preallocated matrices ``o64``, ``o32``, ``o16``, ``o8`` (``[column, row]``, each as
narrow as its columns: the rows are written once and read once, memory traffic counts).  The byte
helpers here are word-at-a-time versions of ``_scan``'s (and deliberately not imported from
there: numba's cache would not notice a change in another module).

Any line it does not take -- blank, comment, marker, stack, frame, malformed, a TGID column,
a prefix the first ``[cpu]`` does not settle, an event without a printk field list, fields
that do not fit it, a value out of range or printed in 16 hex digits, an unterminated last
line -- ends the run with ``ST_REJECT``: the caller then parses the whole chunk the general
way (``fastpath.py``), which also reports the errors.  Per-chunk counters (``st``, per CPU,
per name-table entry) are committed by the caller only when the whole chunk went through.
The plain-Python reference of this kernel is the general parser itself:
``tests/test_ingest_fast.py`` compares both on generated traces.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

# name spaces of the name table
NS_EVENT = 0  # event names as printed
NS_COMM = 1
NS_FLAGS = 2
NS_GFP = 3

# kernel statuses (st[P_STATUS])
ST_OK = 0
ST_REJECT = 1  # a line the fast path does not take: parse the chunk the general way
ST_NEW_EVENT = 2  # an event name without a field list yet (st[P_ARG]: its entry): map it, run again
ST_FULL = 3  # the name table is full: grow it, run again
ST_ROOM = 4  # the ``o*`` matrices have no room for more rows: grow them, run again

# st[]: status and per-chunk counters
P_STATUS = 0
P_ARG = 1
P_ROWS = 2  # rows written (one per line)
P_STOP = 3  # bytes parsed (the rest is carried to the next chunk)
P_FDIG = 4  # bit (fdig + 1) per number of fraction digits seen
P_FLAGLEN = 5  # bit per irq-info flag length seen (0: none)
P_NONASCII = 6  # a byte >= 0x80 was seen
P_NNEW = 7  # entries in ``new`` (first used in this chunk and not yet mapped to an interner code)
N_ST = 8

# rows of the output matrix
Q_TS = 0  # o64
Q_PFN = 1  # (NULL_INT: null)
N_64 = 2
W_PID = 0  # o32
W_COMM = 1  # name-table entries (-1: null)
W_FLAGS = 2
W_EVENT = 3
W_GFP = 4
N_32 = 5
H_CPU = 0  # o16, then the int8 columns of INT_COLUMNS (after pfn) in order (NULL16: null)
N_SMALL = 7
N_16 = 1 + N_SMALL
B_FAILED = 0  # o8 (-1 null, 0/1), then BOOL_COLUMNS in order
N_BOOL = 3
N_8 = 1 + N_BOOL
# the column a kmem field fills (``cols``): 0 pfn, 1..7 INT_COLUMNS[1:] (o16 row), 8..10 BOOL_COLUMNS
COL_PFN = 0
COL_BOOL = 1 + N_SMALL
NULL16 = -32768

# field kinds (as _scan.V_*) and the columns of ``cols``
V_PTR = 0
V_INT = 1
COL_NONE = -1
COL_GFP = -2

MAX_CPU = 10000  # "[cpu]" has at most 4 digits
MAX_FLAGLEN = 62

NULL_INT = np.iinfo(np.int64).min
PFN_MAX = (1 << 52) - 1
_MAX_SEC = 9_000_000_000  # as _scan: "sec.frac" beyond this does not fit int64 nanoseconds
_POW10 = np.array([10**k for k in range(10)], dtype=np.int64)

_ONES = 0x0101010101010101
_HIGH = 0x8080808080808080
_SP8 = 0x2020202020202020
_ZERO8 = 0x3030303030303030


# ------------------------------------------------------------------ name table (see _names.py)


@njit(cache=True, inline="always")
def load8(buf, a):
    """The 8 bytes at buf[a] as a little-endian word (one load once compiled)."""
    i = uint64(a)
    return (uint64(buf[i]) | (uint64(buf[i + uint64(1)]) << uint64(8)) | (uint64(buf[i + uint64(2)]) << uint64(16))
            | (uint64(buf[i + uint64(3)]) << uint64(24)) | (uint64(buf[i + uint64(4)]) << uint64(32))
            | (uint64(buf[i + uint64(5)]) << uint64(40)) | (uint64(buf[i + uint64(6)]) << uint64(48))
            | (uint64(buf[i + uint64(7)]) << uint64(56)))


@njit(cache=True, inline="always")
def word(buf, a, n, limit):
    """buf[a:a+n] (n <= 8) as a little-endian word, zero above; never reads at or past ``limit``."""
    if n <= 0:
        return uint64(0)
    if a + 8 <= limit:
        w = load8(buf, a)
        return w if n == 8 else w & ((uint64(1) << uint64(8 * n)) - uint64(1))
    w = uint64(0)
    for t in range(n):
        w |= uint64(buf[a + t]) << uint64(8 * t)
    return w


@njit(cache=True, inline="always")
def _hash(ns, n, w0, w1):
    h = (w0 ^ (uint64(n) << uint64(48)) ^ uint64(ns)) * uint64(0x9E3779B97F4A7C15)
    h ^= h >> uint64(31)
    h = (h ^ w1) * uint64(0xFF51AFD7ED558CCD)
    return h ^ (h >> uint64(29))


@njit(cache=True)
def rehash(slots, e_ns, e_len, e_w0, e_w1, n):
    mask = slots.shape[0] - 1
    for ent in range(n):
        i = np.int64(_hash(e_ns[ent], e_len[ent], e_w0[ent], e_w1[ent]) & uint64(mask))
        while slots[i] >= 0:
            i = (i + 1) & mask
        slots[i] = ent


@njit(cache=True, inline="always")
def intern(buf, a, b, limit, ns, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta):
    """The entry of buf[a:b] in name space ``ns``, added when absent; -1 when the table is full."""
    n = b - a
    w0 = word(buf, a, min(n, 8), limit)
    w1 = word(buf, b - 8, 8, limit) if n > 8 else uint64(0)
    mask = slots.shape[0] - 1
    i = np.int64(_hash(ns, n, w0, w1) & uint64(mask))
    while True:
        ent = slots[i]
        if ent < 0:
            return _add(buf, a, n, ns, i, w0, w1, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta)
        if e_w0[ent] == w0 and e_w1[ent] == w1 and e_len[ent] == n and e_ns[ent] == ns:
            off = e_off[ent]
            t = 8
            while t < n - 8 and load8(store, off + t) == load8(buf, a + t):  # (overlapping w1: equal)
                t += 8
            if t >= n - 8:
                return ent
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def _add(buf, a, n, ns, i, w0, w1, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta):
    """Append buf[a:a+n] at free slot i.  Inlined like everything ``parse_chunk`` calls: a call
    that takes arrays would cost the inlined callers their refcount pruning (atomic increments
    and decrements of every array on every line)."""
    ne = meta[0]
    if ne >= e_ns.shape[0] or (ne + 1) * 2 > slots.shape[0] or meta[1] + n > store.shape[0]:
        return -1
    off = meta[1]
    for t in range(n):
        store[off + t] = buf[a + t]
    e_ns[ne] = ns
    e_off[ne] = off
    e_len[ne] = n
    e_w0[ne] = w0
    e_w1[ne] = w1
    slots[i] = ne
    meta[0] = ne + 1
    meta[1] = off + n
    return ne


# ------------------------------------------------------------------ bytes


def _ctz(x):
    """The number of trailing zero bits of a nonzero word (plain Python; jitted: one ``tzcnt``)."""
    v = int(x)
    return (v & -v).bit_length() - 1


@overload(_ctz, inline="always")
def _ctz_jit(x):
    def impl(x):
        return np.int64(trailing_zeros(x))
    return impl


@njit(cache=True, inline="always")
def _zmask(x, b8):
    """A word whose high bit is set in (at least) the lowest byte of x equal to the byte whose 8
    copies are b8: bytes above the first such byte may be marked wrongly, the lowest never is."""
    v = x ^ uint64(b8)
    return (v - uint64(_ONES)) & ~v & uint64(_HIGH)


@njit(cache=True, inline="always")
def _find2(buf, a, e, c, d):
    """Index of the first byte c or d in buf[a:e], or e (``_find2(buf, a, e, 32, 9)``: end of a token)."""
    c8 = uint64(_ONES * c)
    d8 = uint64(_ONES * d)
    while a + 8 <= e:
        x = load8(buf, a)
        m = _zmask(x, c8) | _zmask(x, d8)
        if m != uint64(0):
            return a + (_ctz(m) >> 3)
        a += 8
    while a < e and buf[a] != c and buf[a] != d:
        a += 1
    return a


@njit(cache=True, inline="always")
def _skip_spaces(buf, a, e):
    """Index of the first byte in buf[a:e] that is not a space or tab, or e.  A word's leading
    spaces are counted with one trailing-zero count (a byte loop would mispredict its exit)."""
    while a + 8 <= e:
        x = load8(buf, a) ^ uint64(_SP8)
        if x != uint64(0):
            a += _ctz(x) >> 3
            if buf[a] != 9:
                return a
            break
        a += 8
    while a < e and (buf[a] == 32 or buf[a] == 9):
        a += 1
    return a


@njit(cache=True, inline="always")
def _digit(c):
    return 48 <= c <= 57


@njit(cache=True, inline="always")
def _timestamp(buf, a, b):
    """_scan._timestamp: "sec[.frac]:" in buf[a:b]? (ok, ns or raw count, fraction digits or -1)"""
    if b - a < 2 or buf[b - 1] != 58:
        return False, 0, 0
    sec = 0
    k = a
    while k < b - 1 and _digit(buf[k]):
        if k - a >= 18:
            return False, 0, 0
        sec = sec * 10 + (int(buf[k]) - 48)
        k += 1
    if k == a:
        return False, 0, 0
    fdig = -1
    frac = 0
    if buf[k] == 46:
        k += 1
        f0 = k
        while k < b - 1 and _digit(buf[k]):
            if k - f0 >= 9:
                return False, 0, 0
            frac = frac * 10 + (int(buf[k]) - 48)
            k += 1
        fdig = k - f0
        if fdig == 0:
            return False, 0, 0
    if k != b - 1 or (fdig >= 0 and sec > _MAX_SEC):
        return False, 0, 0
    return True, (sec if fdig < 0 else sec * 1_000_000_000 + frac * _POW10[9 - fdig]), fdig


@njit(cache=True, inline="always")
def _prefix(buf, p, e):
    """_scan._prefix without a TGID column: (index after ']', comm end, pid, cpu); the index is -1
    for no prefix, -2 for a TGID column (not taken here)."""
    j = p
    while True:
        j = _find2(buf, j, e, 91, 91)  # '['
        if j >= e:
            return -1, 0, 0, 0
        if j > p and buf[j - 1] == 32:
            k = j + 1
            cpu = 0
            while k < e and _digit(buf[k]) and k - j <= 4:
                cpu = cpu * 10 + (int(buf[k]) - 48)
                k += 1
            if k > j + 1 and k < e and buf[k] == 93:  # ']'
                q = j - 1
                while q > p and buf[q] == 32:
                    q -= 1
                if buf[q] == 41:  # ')'
                    return -2, 0, 0, 0
                r = q
                while r >= p and _digit(buf[r]):
                    r -= 1
                if r < q and r >= p and buf[r] == 45 and q - r <= 9:  # '-' before the pid
                    pid = 0
                    for t in range(r + 1, q + 1):
                        pid = pid * 10 + (int(buf[t]) - 48)
                    return k + 1, r, pid, cpu
        j += 1


_HEX = np.full(256, -1, dtype=np.int64)  # byte -> hex digit value, -1 (a table: no branches on random digits)
for _c, _ch in enumerate(b"0123456789abcdef"):
    _HEX[_ch] = _c
for _c, _ch in enumerate(b"ABCDEF"):
    _HEX[_ch] = _c + 10


@njit(cache=True, inline="always")
def _int(buf, p, e):
    """_scan._parse_int for up to 15 hex or 18 decimal digits (more: not ok, the general path's):
    (ok, value, index after it)."""
    neg = False
    if p < e and buf[p] == 45:
        neg = True
        p += 1
    v = 0
    a = p
    if p + 1 < e and buf[p] == 48 and (buf[p + 1] == 120 or buf[p + 1] == 88):
        p += 2
        a = p
        while p < e:
            d = _HEX[buf[p]]
            if d < 0:
                break
            v = v * 16 + d
            p += 1
        if p - a > 15:
            return False, 0, 0
    else:
        while p < e and _digit(buf[p]):
            v = v * 10 + (int(buf[p]) - 48)
            p += 1
        if p - a > 18:
            return False, 0, 0
    if p == a:
        return False, 0, 0
    return True, (-v if neg else v), p


@njit(cache=True, inline="always")
def _ptr(buf, p, e):
    """_scan._ptr_value: (index after the value or -1, is it a NULL page)."""
    a = _skip_spaces(buf, p, e)
    b = _find2(buf, a, e, 32, 9)
    if b == a:
        return -1, False
    t = a + 2 if b - a > 2 and buf[a] == 48 and buf[a + 1] == 120 else a
    while t + 8 <= b:  # (b - a >= 8 here: not "(null)")
        if load8(buf, t) != uint64(_ZERO8):
            return b, False
        t += 8
    while t < b and buf[t] == 48:
        t += 1
    return b, t == b or (b - a == 6 and buf[a] == 40 and buf[a + 1] == 110)


@njit(cache=True, inline="always")
def _use(ent, code, stamp, chunk_id, new, st):
    """Note an entry's first use in this chunk when it has no interner code yet."""
    if code[ent] < 0 and stamp[ent] != chunk_id:
        stamp[ent] = chunk_id
        new[st[P_NNEW]] = ent
        st[P_NNEW] += 1


@njit(cache=True, inline="always")
def _line_end(buf, s, n, acc):
    """(index of the '\\n' ending the line at s, acc OR'ed with every byte up to it)."""
    a = s
    while a + 8 <= n:
        x = load8(buf, a)
        acc |= x
        m = _zmask(x, _ONES * 10)
        if m != uint64(0):
            return a + (_ctz(m) >> 3), acc
        a += 8
    while buf[a] != 10:
        acc |= uint64(buf[a])
        a += 1
    return a, acc


# Compiled without numba's reference counting: the kernel allocates nothing, and the inlined
# helpers would otherwise increment and decrement every array they take, atomically, on every
# line (the refcount pruning pass does not remove all of them): ~40 ns per name-table lookup.
@njit(cache=True, _nrt=False)
def parse_chunk(buf, n, at_eof, table, code, spec, unmapped, stamp, chunk_id, new,
                keys, key_offs, key_w, kinds, cols, spec_info, o64, o32, o16, o8, st, cpu_last, cpu_has, cpu_first, cpu_seen, cpu_inv,
                ev_count, ev_first_row, ev_first_rest):
    """Parse the lines of buf[:n] (all but the last one unless ``at_eof``) into ``o*``; see the module doc.

    ``spec_info[s]`` = (first key index, number of keys, is mm_page_alloc) of field list ``s``;
    key k is ``keys[key_offs[k]:key_offs[k + 1]]`` with its '=' (``key_w[k]``: its first and last 8
    bytes as words, see :func:`word`, and the mask of the first), of value kind ``kinds[k]`` stored
    in output row ``cols[k]`` (COL_NONE: not stored, COL_GFP: the gfp string).  ``unmapped``: are
    there entries without an interner code (only then are first uses noted in ``new``)?
    """
    slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta = table
    ne0 = meta[0]
    st[P_STATUS] = ST_OK
    fdigs = 0
    flens = 0
    if n == 0 or (at_eof and buf[n - 1] != 10):
        st[P_STATUS] = ST_REJECT  # nothing, or an unterminated last line
        return
    stop = n
    if not at_eof:  # carry the last line over, as the general path does (unless it is the only one)
        j = n - 2
        while j >= 0 and buf[j] != 10:
            j -= 1
        if j >= 0:
            stop = j + 1
    cap = o64.shape[1]
    s = 0
    r = 0
    acc = uint64(0)  # every byte of the parsed lines OR'ed: any >= 0x80?
    while s < stop:
        if r == cap:
            st[P_STATUS] = ST_ROOM
            return
        e, acc = _line_end(buf, s, stop, acc)
        nxt = e + 1
        if e > s and buf[e - 1] == 13:  # CRLF
            e -= 1
        p = _skip_spaces(buf, s, e)
        if p == e:
            st[P_STATUS] = ST_REJECT
            return
        c0 = buf[p]
        if c0 == 35 or c0 == 61 or (e - p >= 4 and c0 == 67 and buf[p + 1] == 80 and buf[p + 2] == 85
                                    and buf[p + 3] == 58):  # '#', "=>", "CPU:"
            st[P_STATUS] = ST_REJECT
            return
        k, comm_e, pid, cpu = _prefix(buf, p, e)
        if k < 0:
            st[P_STATUS] = ST_REJECT
            return
        # optional irq-info flags, then the timestamp (_scan._flags_timestamp)
        fa = _skip_spaces(buf, k, e)
        fb = _find2(buf, fa, e, 32, 9)
        flen = 0
        b = fb
        ok, ts, fdig = _timestamp(buf, fa, fb)
        if not ok:
            flen = fb - fa
            a2 = _skip_spaces(buf, fb, e)
            b = _find2(buf, a2, e, 32, 9)
            ok, ts, fdig = _timestamp(buf, a2, b)
            if not ok:  # the general path would try a later "[cpu]"
                st[P_STATUS] = ST_REJECT
                return
        a = _skip_spaces(buf, b, e)
        if a < e and buf[a] == 60:  # '<': "<stack trace>" and "<user stack trace>" entries
            st[P_STATUS] = ST_REJECT
            return
        ne = _find2(buf, a, e, 58, 32)  # ":" or " "
        if ne == a or ne == e or buf[ne] != 58:
            st[P_STATUS] = ST_REJECT
            return
        rest = ne + 1
        if rest < e and buf[rest] == 32:
            rest += 1
        # ---- strings (no flags printed: null, as in the general path)
        ev = intern(buf, a, ne, n, NS_EVENT, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta)
        cm = intern(buf, p, comm_e, n, NS_COMM, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta)
        fl = -2
        if flen:
            if flen > MAX_FLAGLEN:
                st[P_STATUS] = ST_REJECT
                return
            fl = intern(buf, fa, fb, n, NS_FLAGS, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta)
        if ev < 0 or cm < 0 or fl == -1:
            st[P_STATUS] = ST_FULL
            return
        sp = spec[ev]
        if sp == -2:
            st[P_STATUS] = ST_NEW_EVENT
            st[P_ARG] = ev
            return
        if sp < 0:
            st[P_STATUS] = ST_REJECT
            return
        # ---- kmem fields in printk order (_scan.scan_fields)
        o64[Q_PFN, r] = NULL_INT
        for o in range(1, N_16):
            o16[o, r] = NULL16
        for o in range(N_8):
            o8[o, r] = -1
        o32[W_GFP, r] = -1
        fe = e
        while fe > rest and (buf[fe - 1] == 32 or buf[fe - 1] == 9):
            fe -= 1
        q = rest
        isnull = 0
        pfn = NULL_INT
        k0 = spec_info[sp, 0]
        for kk in range(k0, k0 + spec_info[sp, 1]):
            ks = key_offs[kk]
            kl = key_offs[kk + 1] - ks  # with the '='
            if kk > k0:
                if q >= fe or buf[q] != 32:
                    st[P_STATUS] = ST_REJECT
                    return
                q += 1
            if q + kl > fe:
                st[P_STATUS] = ST_REJECT
                return
            if q + 8 <= n:  # one load and a mask for the first 8 bytes
                same = (load8(buf, q) & key_w[kk, 2]) == key_w[kk, 0]
            else:
                same = word(buf, q, min(kl, 8), n) == key_w[kk, 0]
            if not same or (kl > 8 and load8(buf, q + kl - 8) != key_w[kk, 1]):
                st[P_STATUS] = ST_REJECT
                return
            for t in range(8, kl - 8):  # keys over 16 bytes
                if buf[q + t] != keys[ks + t]:
                    st[P_STATUS] = ST_REJECT
                    return
            q += kl
            kind = kinds[kk]
            col = cols[kk]
            if kind == V_PTR:
                q, null = _ptr(buf, q, fe)
                if q < 0:
                    st[P_STATUS] = ST_REJECT
                    return
                if null:
                    isnull = 1
            elif kind == V_INT:
                ok, v, q = _int(buf, q, fe)
                if not ok or (q < fe and buf[q] != 32):
                    st[P_STATUS] = ST_REJECT
                    return
                if col == COL_PFN:
                    if v < -1 or v > PFN_MAX:
                        st[P_STATUS] = ST_REJECT
                        return
                    pfn = v
                    o64[Q_PFN, r] = v
                elif col > COL_PFN and col < COL_BOOL:
                    if v < -128 or v > 127:
                        st[P_STATUS] = ST_REJECT
                        return
                    o16[col, r] = v
                elif col >= COL_BOOL:
                    o8[col - COL_BOOL + 1, r] = 1 if v != 0 else 0
            else:
                g = q
                q = _find2(buf, q, fe, 32, 9)
                if q == g:
                    st[P_STATUS] = ST_REJECT
                    return
                gf = intern(buf, g, q, n, NS_GFP, slots, e_ns, e_off, e_len, e_w0, e_w1, store, meta)
                if gf < 0:
                    st[P_STATUS] = ST_FULL
                    return
                o32[W_GFP, r] = gf
        if q != fe:
            st[P_STATUS] = ST_REJECT
            return
        if spec_info[sp, 2] == 1:  # mm_page_alloc: page NULL, pfn 0 or -1UL is a failed allocation
            failed = isnull == 1 or pfn == 0 or pfn == -1
            o8[B_FAILED, r] = 1 if failed else 0
            if failed:
                o64[Q_PFN, r] = NULL_INT
        # ---- the common columns
        o64[Q_TS, r] = ts
        o16[H_CPU, r] = cpu
        o32[W_PID, r] = pid
        o32[W_COMM, r] = cm
        o32[W_FLAGS, r] = fl if fl >= 0 else -1
        o32[W_EVENT, r] = ev
        fdigs |= 1 << (fdig + 1)
        flens |= 1 << flen
        if cpu_has[cpu] and ts < cpu_last[cpu]:
            cpu_inv[cpu] += 1
        cpu_last[cpu] = ts
        cpu_has[cpu] = True
        if not cpu_seen[cpu]:
            cpu_seen[cpu] = True
            cpu_first[cpu] = ts
        if ev_count[ev] == 0:
            ev_first_row[ev] = r
            ev_first_rest[ev] = rest
        ev_count[ev] += 1
        r += 1
        s = nxt
    # strings first used here, in the order the general path interns them (per name space, by row)
    if unmapped or meta[0] > ne0:
        for o in (W_EVENT, W_COMM, W_FLAGS, W_GFP):
            for i in range(r):
                g = o32[o, i]
                if g >= 0:
                    _use(g, code, stamp, chunk_id, new, st)
    st[P_ROWS] = r
    st[P_STOP] = stop
    st[P_FDIG] = fdigs
    st[P_FLAGLEN] = flens
    st[P_NONASCII] = 1 if acc & uint64(_HIGH) else 0
