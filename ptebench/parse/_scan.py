"""Jitted byte scanners for the ingest hot path (no input checks: see ``text.py``).

The kernel prints each ftrace entry through ``trace_print_context()``
(kernel/trace/trace_output.c): ``"%16s-%-7d "`` comm and pid, an optional
``"(%7d) "`` TGID, ``"[%03d] "`` CPU, optional irq-info flags (4, 5 or more
characters), the timestamp ``"%5lu.%06lu: "`` (or an integer counter for non-ns
clocks) and then ``"event_name: "`` and the TP_printk text.  A ``<stack trace>``
entry (``options/stacktrace`` or the ``stacktrace`` trigger) is its own entry on
the same CPU and pid, followed by ``" => symbol"`` lines.

The prefix is anchored on the ``[CPU]`` field, never on columns: comm may contain
spaces, ``-``, ``:`` and ``[``.  Everything here works on a ``uint8`` view of the
decompressed text plus line start/end offsets and writes into a flat ``int64``
matrix ``out[line, column]`` whose columns are named by the ``C_*`` constants.

Three line layouts share the scanner (``mode``): the kernel's own text (``M_FTRACE``),
``trace-cmd report`` (``M_TRACECMD``: the same prefix, the event name padded to 20
columns by trace-read.c's ``"%-20s"``-style alignment, stacks as a ``kernel_stack:``
event) and ``perf script`` (``M_PERF``: builtin-script.c's ``perf_sample__fprintf_start``,
``"%16s %5d/%-5d [%03d] %5lu.%06lu: "`` with a space instead of ``-`` before the tid,
the event as ``system:name:``, callchain frames as tab-indented ``addr sym+off (dso)``
lines after the sample).

Bytes are widened with ``int()`` before arithmetic: numba promotes uint8 to int64 by
itself, but with ``NUMBA_DISABLE_JIT=1`` numpy keeps uint8 and would wrap around.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# line kinds
K_EVENT = 0
K_STACK = 1  # "<stack trace>" entry header
K_FRAME = 2  # " => sym" line of a stack block
K_COMMENT = 3  # "#..." header line
K_BLANK = 4
K_MARKER = 5  # "CPU:N [LOST M EVENTS]" and similar, parsed in Python
K_USTACK = 6  # "<user stack trace>" entry header
K_BAD = 7

# columns of the scan matrix
C_KIND = 0
C_COMM_S = 1
C_COMM_E = 2
C_PID = 3
C_TGID = 4  # -2 absent, -1 printed as "(-------)"
C_CPU = 5
C_FLG_S = 6
C_FLG_E = 7
C_SEC = 8
C_FRAC = 9
C_FDIG = 10  # number of fraction digits, -1 when the timestamp has no fraction
C_EV_S = 11
C_EV_E = 12
C_REST_S = 13  # for K_FRAME: the symbol
C_REST_E = 14
C_ERR = 15  # for K_BAD: what was expected (an E_* code)
NCOL = 16

# line layouts (scan_lines ``mode``)
M_FTRACE = 0
M_TRACECMD = 1
M_PERF = 2

# K_BAD reasons
E_PREFIX = 1  # no "comm-pid [cpu]" prefix
E_TIMESTAMP = 2  # no "sec.frac:" timestamp after the CPU/flags
E_EVENT = 3  # no "event_name:" after the timestamp

_SP = 32
_TAB = 9
_MAX_CPU_DIGITS = 4  # cpu is an int16 column (NR_CPUS <= 8192)
_MAX_PID_DIGITS = 9  # pid/tgid are int32 columns (PID_MAX_LIMIT is 4194304)
_MAX_SEC = 9_000_000_000  # "sec.frac" beyond this does not fit int64 nanoseconds


@njit(cache=True, inline="always")
def _isdigit(c: int) -> bool:
    return 48 <= c <= 57


@njit(cache=True)
def _prefix(buf, p, e, row, j):
    """Parse "comm-pid (tgid) [cpu]" for a line starting at p, trying '[' from j on;
    return the index after ']' or -1."""
    while j < e:
        if buf[j] == 91 and j > p and buf[j - 1] == _SP:  # '['
            k = j + 1
            cpu = 0
            while k < e and _isdigit(buf[k]) and k - j <= _MAX_CPU_DIGITS:
                cpu = cpu * 10 + (int(buf[k]) - 48)
                k += 1
            if k > j + 1 and k < e and buf[k] == 93:  # ']'
                q = j - 1
                while q > p and buf[q] == _SP:
                    q -= 1
                tgid = -2
                ok = True
                if buf[q] == 41:  # ')': optional TGID column
                    r = q - 1
                    while r > p and buf[r] != 40:
                        r -= 1
                    if buf[r] != 40:
                        ok = False
                    else:
                        t = r + 1
                        while t < q and buf[t] == _SP:
                            t += 1
                        if t < q and buf[t] == 45:  # "(-------)"
                            tgid = -1
                        else:
                            tgid = 0
                            if t == q:
                                ok = False
                            if q - t > _MAX_PID_DIGITS:
                                ok = False
                            while ok and t < q:
                                if not _isdigit(buf[t]):
                                    ok = False
                                    break
                                tgid = tgid * 10 + (int(buf[t]) - 48)
                                t += 1
                        q = r - 1
                        while q > p and buf[q] == _SP:
                            q -= 1
                if ok:
                    r = q
                    while r >= p and _isdigit(buf[r]):
                        r -= 1
                    if r < q and r >= p and buf[r] == 45 and q - r <= _MAX_PID_DIGITS:  # '-' before the pid
                        pid = 0
                        for t in range(r + 1, q + 1):
                            pid = pid * 10 + (int(buf[t]) - 48)
                        row[C_COMM_S] = p
                        row[C_COMM_E] = r
                        row[C_PID] = pid
                        row[C_TGID] = tgid
                        row[C_CPU] = cpu
                        return k + 1
        j += 1
    return -1


@njit(cache=True)
def _timestamp(buf, a, b, row):
    """Parse "sec[.frac]:" in buf[a:b] (b is one past the ':'); True when it is one."""
    if b - a < 2 or buf[b - 1] != 58:
        return False
    sec = 0
    k = a
    nd = 0
    while k < b - 1 and _isdigit(buf[k]):
        if nd >= 18:
            return False
        sec = sec * 10 + (int(buf[k]) - 48)
        k += 1
        nd += 1
    if nd == 0:
        return False
    frac = 0
    fdig = -1
    if buf[k] == 46:  # '.'
        k += 1
        fdig = 0
        while k < b - 1 and _isdigit(buf[k]):
            if fdig >= 9:
                return False
            frac = frac * 10 + (int(buf[k]) - 48)
            k += 1
            fdig += 1
        if fdig == 0:
            return False
    if k != b - 1 or (fdig >= 0 and sec > _MAX_SEC):
        return False
    row[C_SEC] = sec
    row[C_FRAC] = frac
    row[C_FDIG] = fdig
    return True


@njit(cache=True)
def _token_end(buf, a, e):
    while a < e and buf[a] != _SP and buf[a] != _TAB:
        a += 1
    return a


@njit(cache=True)
def _skip_spaces(buf, a, e):
    while a < e and (buf[a] == _SP or buf[a] == _TAB):
        a += 1
    return a


@njit(cache=True)
def _flags_timestamp(buf, k, e, row):
    """After "[cpu]": optional irq-info flags, then "sec[.frac]:"; index after it or -1."""
    row[C_FLG_S] = 0
    row[C_FLG_E] = 0
    a = _skip_spaces(buf, k, e)
    b = _token_end(buf, a, e)
    if _timestamp(buf, a, b, row):
        return b
    row[C_FLG_S] = a
    row[C_FLG_E] = b
    a = _skip_spaces(buf, b, e)
    b = _token_end(buf, a, e)
    if _timestamp(buf, a, b, row):
        return b
    return -1


@njit(cache=True)
def _is_stack_name(buf, a, e, user):
    name = b"<user stack trace>" if user else b"<stack trace>"
    n = len(name)
    if e - a < n:
        return False
    for t in range(n):
        if buf[a + t] != name[t]:
            return False
    k = _skip_spaces(buf, a + n, e)
    return k == e


@njit(cache=True)
def _perf_prefix(buf, p, e, row, j):
    """perf script: "comm tid [cpu]" or "comm pid/tid [cpu]" (builtin-script.c prints
    ``"%16s "``, ``"%5d "`` or ``"%5d/%-5d "`` -- 7 wide since perf 6.5 -- then ``"[%03d] "``);
    trying '[' from j on; return the index after ']' or -1."""
    while j < e:
        if buf[j] == 91 and j > p and buf[j - 1] == _SP:  # '['
            k = j + 1
            cpu = 0
            while k < e and _isdigit(buf[k]) and k - j <= _MAX_CPU_DIGITS:
                cpu = cpu * 10 + (int(buf[k]) - 48)
                k += 1
            if k > j + 1 and k < e and buf[k] == 93:  # ']'
                q = j - 1
                while q > p and buf[q] == _SP:
                    q -= 1
                r = q  # the tid is buf[r+1 : q+1]
                while r >= p and _isdigit(buf[r]):
                    r -= 1
                ok = r < q and q - r <= _MAX_PID_DIGITS
                tid = 0
                for t in range(r + 1, q + 1):
                    tid = tid * 10 + (int(buf[t]) - 48)
                pid = -2
                if ok and r >= p and buf[r] == 47:  # '/': "pid/tid"
                    r2 = r - 1
                    while r2 >= p and _isdigit(buf[r2]):
                        r2 -= 1
                    ok = r2 < r - 1 and r - 1 - r2 <= _MAX_PID_DIGITS
                    pid = 0
                    for t in range(r2 + 1, r):
                        pid = pid * 10 + (int(buf[t]) - 48)
                    r = r2
                if ok and (r < p or buf[r] == _SP or buf[r] == _TAB):
                    c = r
                    while c >= p and (buf[c] == _SP or buf[c] == _TAB):
                        c -= 1
                    row[C_COMM_S] = p
                    row[C_COMM_E] = c + 1 if c >= p else p
                    row[C_PID] = tid
                    row[C_TGID] = pid
                    row[C_CPU] = cpu
                    return k + 1
        j += 1
    return -1


@njit(cache=True)
def _perf_frame(buf, s, p, e, row):
    """A perf callchain line: indented ``"\t%16lx sym+off (dso)"``; True (and the symbol in REST) when it is one."""
    if p == s:
        return False
    a = p
    while a < e and (_isdigit(buf[a]) or 97 <= buf[a] <= 102):
        a += 1
    if a == p or a >= e or buf[a] != _SP:
        return False
    a = _skip_spaces(buf, a, e)
    b = a
    while b < e and buf[b] != _SP and buf[b] != 43:  # up to ' ' or '+' (sym+0xoff)
        b += 1
    if b == a:
        return False
    row[C_KIND] = K_FRAME
    row[C_REST_S] = a
    row[C_REST_E] = b
    return True


@njit(cache=True)
def _is_word(buf, a, e, word):
    n = len(word)
    if e - a != n:
        return False
    for t in range(n):
        if buf[a + t] != word[t]:
            return False
    return True


@njit(cache=True)
def scan_lines(buf, starts, ends, out, mode):
    """Classify every line and cut event lines into their prefix fields (``mode``: an M_* layout)."""
    for i in range(starts.shape[0]):
        row = out[i]
        for c in range(NCOL):
            row[c] = 0
        s = starts[i]
        e = ends[i]
        if e > s and buf[e - 1] == 13:  # CRLF
            e -= 1
        p = _skip_spaces(buf, s, e)
        if p == e:
            row[C_KIND] = K_BLANK
            continue
        c = buf[p]
        if c == 35:  # '#'
            row[C_KIND] = K_COMMENT
            continue
        if c == 61 and p + 1 < e and buf[p + 1] == 62:  # "=>"
            a = _skip_spaces(buf, p + 2, e)
            b = a
            while b < e and buf[b] != _SP and buf[b] != 43:  # up to ' ' or '+' (sym+off/size)
                b += 1
            row[C_KIND] = K_FRAME
            row[C_REST_S] = a
            row[C_REST_E] = b
            continue
        if e - p >= 4 and buf[p] == 67 and buf[p + 1] == 80 and buf[p + 2] == 85 and buf[p + 3] == 58:  # "CPU:"
            row[C_KIND] = K_MARKER
            continue
        # a comm may itself contain "-12 [3]": try each "[cpu]" until a timestamp follows
        b = -1
        err = E_PREFIX
        j = p
        while True:
            if mode == M_PERF:
                k = _perf_prefix(buf, p, e, row, j)
            else:
                k = _prefix(buf, p, e, row, j)
            if k < 0:
                break
            err = E_TIMESTAMP
            b = _flags_timestamp(buf, k, e, row)
            if b >= 0:
                break
            j = k
        if b < 0:
            if mode == M_PERF and _perf_frame(buf, s, p, e, row):
                continue
            row[C_KIND] = K_BAD
            row[C_ERR] = err
            continue
        a = _skip_spaces(buf, b, e)
        if mode == M_PERF:
            # "-F +period" prints the sample period between the time and the event
            t = a
            while t < e and _isdigit(buf[t]):
                t += 1
            if t > a and t < e and buf[t] == _SP:
                a = _skip_spaces(buf, t, e)
            n = _token_end(buf, a, e)
            if n - a < 2 or buf[n - 1] != 58:
                row[C_KIND] = K_BAD
                row[C_ERR] = E_EVENT
                continue
            row[C_KIND] = K_EVENT
            row[C_EV_S] = a
            row[C_EV_E] = n - 1
            row[C_REST_S] = _skip_spaces(buf, n, e)
            row[C_REST_E] = e
            continue
        if _is_stack_name(buf, a, e, False):
            row[C_KIND] = K_STACK
            continue
        if _is_stack_name(buf, a, e, True):
            row[C_KIND] = K_USTACK
            continue
        n = a
        while n < e and buf[n] != 58 and buf[n] != _SP:
            n += 1
        if n == a or n == e or buf[n] != 58:
            row[C_KIND] = K_BAD
            row[C_ERR] = E_EVENT
            continue
        r = n + 1
        if mode == M_TRACECMD:
            # trace-cmd pads the event name; "-T" stacks are "kernel_stack:  <stack trace>"
            r = _skip_spaces(buf, r, e)
            if _is_word(buf, a, n, b"kernel_stack") and _is_stack_name(buf, r, e, False):
                row[C_KIND] = K_STACK
                continue
            if _is_word(buf, a, n, b"user_stack") and _is_stack_name(buf, r, e, True):
                row[C_KIND] = K_USTACK
                continue
        elif r < e and buf[r] == _SP:
            r += 1
        row[C_KIND] = K_EVENT
        row[C_EV_S] = a
        row[C_EV_E] = n
        row[C_REST_S] = r
        row[C_REST_E] = e


# value kinds of the key=value field scanner
V_PTR = 0  # %p: skipped, but "(null)" / all zeros marks a NULL page
V_INT = 1  # %d, %u, %lu, 0x%lx
V_STR = 2  # %s without spaces (gfp flag strings)


_I64_MAX_DIV10 = 922337203685477580  # (2**63 - 1) // 10


@njit(cache=True)
def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@njit(cache=True)
def _parse_int(buf, p, e, res):
    """Parse "-?(0x[0-9a-f]{1,16}|[0-9]+)" at p; res[0] = value, res[1] = index after it.

    Returns False when there is no number or it does not fit 64 bits.  A 16-digit hex value
    with the top bit set (``-1UL`` printed by ``trace-cmd report -R`` as 0xffffffffffffffff)
    becomes the negative int64 with the same bits; no arithmetic ever overflows int64.
    """
    neg = False
    if p < e and buf[p] == 45:
        neg = True
        p += 1
    v = 0
    nd = 0
    if p + 1 < e and buf[p] == 48 and (buf[p + 1] == 120 or buf[p + 1] == 88):  # 0x
        p += 2
        top = 0
        while p < e:
            d = _hexval(int(buf[p]))
            if d < 0:
                break
            if nd == 0:
                top = d
            if nd == 15:  # 16th digit: take the top digit out before shifting
                low = v - top * (1 << 56)
                hi = top - 16 if top >= 8 else top
                v = hi * (1 << 60) + low * 16 + d
            elif nd >= 16:
                return False
            else:
                v = v * 16 + d
            nd += 1
            p += 1
    else:
        while p < e and _isdigit(buf[p]):
            d = int(buf[p]) - 48
            if nd >= 18 and (v > _I64_MAX_DIV10 or (v == _I64_MAX_DIV10 and d > 7)):
                return False
            v = v * 10 + d
            nd += 1
            p += 1
    if nd == 0:
        return False
    res[0] = -v if neg else v
    res[1] = p
    return True


@njit(cache=True)
def _ptr_value(buf, p, e, isnull, r):
    """A %p value (hashed, raw, "0x..." from user-space tools, "(null)" right-aligned as
    "page= (null)"); sets isnull[r] for NULL; returns the index after it or -1."""
    a = _skip_spaces(buf, p, e)
    b = _token_end(buf, a, e)
    if b == a:
        return -1
    allzero = True
    t0 = a
    if b - a > 2 and buf[a] == 48 and buf[a + 1] == 120:  # "0x0"
        t0 = a + 2
    for t in range(t0, b):
        if buf[t] != 48:
            allzero = False
            break
    if (b - a == 6 and buf[a] == 40 and buf[a + 1] == 110) or allzero:  # "(null)" or 000...
        isnull[r] = True
    return b


@njit(cache=True)
def scan_fields(buf, rows, rest_s, rest_e, keys, key_offs, kinds, vals, str_s, str_e, isnull, err):
    """Parse "k1=v1 k2=v2 ..." in the kernel's TP_printk order for each row.

    ``err[r]`` is -1 on success, else the index of the first key that did not fit
    (``len(kinds)`` when unexpected text follows the last field).
    """
    nk = kinds.shape[0]
    res = np.zeros(2, np.int64)
    for r in range(rows.shape[0]):
        i = rows[r]
        p = rest_s[i]
        e = rest_e[i]
        while e > p and (buf[e - 1] == _SP or buf[e - 1] == _TAB):
            e -= 1
        err[r] = -1
        isnull[r] = False
        for k in range(nk):
            ks = key_offs[k]
            kl = key_offs[k + 1] - ks
            if k > 0:
                if p >= e or buf[p] != _SP:
                    err[r] = k
                    break
                p += 1
            if p + kl + 1 > e:
                err[r] = k
                break
            same = True
            for t in range(kl):
                if buf[p + t] != keys[ks + t]:
                    same = False
                    break
            if not same or buf[p + kl] != 61:  # '='
                err[r] = k
                break
            p += kl + 1
            kind = kinds[k]
            if kind == V_PTR:
                b = _ptr_value(buf, p, e, isnull, r)
                if b < 0:
                    err[r] = k
                    break
                p = b
            elif kind == V_INT:
                if not _parse_int(buf, p, e, res) or (res[1] < e and buf[res[1]] != _SP):
                    err[r] = k
                    break
                vals[r, k] = res[0]
                p = res[1]
            else:
                b = _token_end(buf, p, e)
                if b == p:
                    err[r] = k
                    break
                str_s[r] = p
                str_e[r] = b
                p = b
        if err[r] == -1 and p != e:
            err[r] = nk


_FAILED = b"[FAILED TO PARSE]"


@njit(cache=True)
def scan_fields_keyed(buf, rows, rest_s, rest_e, keys, key_offs, kinds, required, vals, str_s, str_e, isnull,
                      present, extra, err):
    """Parse "key=value" fields in any order, for field lists other than the current TP_printk one.

    Covers older kernels (``cold=`` in batched frees before 4.15, vendor fields such as
    ``nr_free=``), ``trace-cmd report -R`` and libtraceevent's ``[FAILED TO PARSE]`` raw
    fields (struct order: ``pfn order gfp_flags migratetype``, no ``page``).  Unknown keys
    are skipped and counted in ``extra[r]``.  ``err[r]``: -1 on success; the index of a key
    whose value is malformed or repeated, or of the first ``required`` key that is absent;
    ``len(kinds)`` for text that is not ``key=value``.
    """
    nk = kinds.shape[0]
    res = np.zeros(2, np.int64)
    nf = len(_FAILED)
    for r in range(rows.shape[0]):
        i = rows[r]
        p = rest_s[i]
        e = rest_e[i]
        err[r] = -1
        isnull[r] = False
        extra[r] = 0
        for k in range(nk):
            present[r, k] = False
        if e - p >= nf:
            same = True
            for t in range(nf):
                if buf[p + t] != _FAILED[t]:
                    same = False
                    break
            if same:
                p += nf
        while True:
            p = _skip_spaces(buf, p, e)
            if p >= e:
                break
            ks = p
            while p < e and buf[p] != 61 and buf[p] != _SP and buf[p] != _TAB:
                p += 1
            if p >= e or buf[p] != 61 or p == ks:
                err[r] = nk
                break
            kl = p - ks
            p += 1
            found = -1
            for k in range(nk):
                if key_offs[k + 1] - key_offs[k] != kl:
                    continue
                same = True
                for t in range(kl):
                    if buf[ks + t] != keys[key_offs[k] + t]:
                        same = False
                        break
                if same:
                    found = k
                    break
            if found < 0:
                extra[r] += 1
                p = _token_end(buf, p, e)
                continue
            if present[r, found]:
                err[r] = found
                break
            kind = kinds[found]
            if kind == V_PTR:
                b = _ptr_value(buf, p, e, isnull, r)
            elif kind == V_INT:
                b = -1
                if _parse_int(buf, p, e, res) and (res[1] == e or buf[res[1]] == _SP or buf[res[1]] == _TAB):
                    vals[r, found] = res[0]
                    b = res[1]
            else:
                b = _token_end(buf, p, e)
                if b > p:
                    str_s[r] = p
                    str_e[r] = b
                else:
                    b = -1
            if b < 0:
                err[r] = found
                break
            present[r, found] = True
            p = b
        if err[r] == -1:
            for k in range(nk):
                if required[k] and not present[r, k]:
                    err[r] = k
                    break


@njit(cache=True)
def gather(buf, s, e):
    """Copy the byte slices buf[s[i]:e[i]] into one buffer; return (data, offsets) for an Arrow array."""
    n = s.shape[0]
    offs = np.empty(n + 1, np.int64)
    offs[0] = 0
    for i in range(n):
        offs[i + 1] = offs[i] + (e[i] - s[i])
    data = np.empty(offs[n], np.uint8)
    for i in range(n):
        a = s[i]
        o = offs[i]
        for t in range(e[i] - a):
            data[o + t] = buf[a + t]
    return data, offs
