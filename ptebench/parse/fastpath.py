"""``TextParser``'s fast path: chunks made only of ordinary kmem event lines, parsed by ``_fast.parse_chunk``.

The chunk's columns come out of the kernel in four narrow matrices; what the general path would
note about such a chunk -- event counts, CPUs, fraction digits, flag lengths, timestamp
decreases, each CPU's first and last timestamp, the pfn radix and page pointer style, pending
loss windows, the last event of each (CPU, pid) for stacks in later chunks, the line count --
is noted here from the kernel's counters once the whole chunk went through.  Strings reach the
parser's interners in the order the general path would intern them (per name space, by first
row).  Any other chunk is handed back untouched: :meth:`FastPath.parse` returns None and the
general path parses it, so errors, lenient counts and warnings are exactly the general path's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ptebench.parse import _fast as F
from ptebench.parse import _names as N
from ptebench.parse import _scan as S
from ptebench.parse.events import BOOL_COLUMNS, INT_COLUMNS, KMEM_EVENTS, LEGACY_EVENT_NAMES
from ptebench.parse.schema import RUN_SCHEMA, arrow_array

if TYPE_CHECKING:
    from ptebench.parse.text import TextParser

_INT_NAMES = tuple(INT_COLUMNS)
ENABLED = True  # tests switch the fast path off to compare it with the general path


def last_index(key: np.ndarray, slots: np.ndarray | None = None) -> dict[int, int]:
    """key -> index of its last occurrence (the jitted ``_names.last_index``)."""
    n = len(key)
    if slots is None or len(slots) < 2 * n:
        slots = np.full(1 << max(4, int(2 * n).bit_length()), -1, dtype=np.int64)
    with np.errstate(over="ignore"):  # the hash wraps around (JIT off: numpy scalars)
        uniq, last = N.last_index(np.ascontiguousarray(key, dtype=np.int64), slots)
    return dict(zip(uniq.tolist(), last.tolist(), strict=True))


def _bools(v: np.ndarray) -> pa.Array:
    """An ``o8`` row (-1 null, 0, 1) as a boolean Arrow array."""
    return arrow_array(pa.bool_(), np.packbits(v == 1, bitorder="little"), v >= 0)


def _codes(codes: np.ndarray, ent: np.ndarray) -> pa.Array:
    """Interner codes of name-table entries ``ent`` (-1: null) as an int32 Arrow array; ``codes``
    ends with an extra 0, so null rows hold 0."""
    return arrow_array(pa.int32(), codes[ent], ent >= 0)


class FastPath:
    """The fast-path state of one parser: name table, field lists, output and scratch arrays."""

    def __init__(self, parser: TextParser) -> None:
        self.p = parser
        self.table = N.NameTable()
        self.interners = {F.NS_EVENT: parser.raw_events, F.NS_COMM: parser.names["comm"],
                          F.NS_FLAGS: parser.names["lat_flags"], F.NS_GFP: parser.names["gfp"]}
        keys = b""
        offs = [0]
        kinds: list[int] = []
        cols: list[int] = []
        info: list[tuple[int, int, int]] = []
        self.spec_index: dict[str, int] = {}
        for name, (fields, _) in parser.specs.items():
            if name not in KMEM_EVENTS:
                continue
            out_cols = [self._column(f.kind, f.column) for f in fields]
            if None in out_cols:
                continue
            self.spec_index[name] = len(info)
            has_pfn = any(f.column == "pfn" for f in fields)
            info.append((len(kinds), len(fields), int(name == "mm_page_alloc" and has_pfn)))
            for f, c in zip(fields, out_cols, strict=True):
                keys += f.key.encode() + b"="
                offs.append(len(keys))
                kinds.append(f.kind)
                cols.append(c)  # type: ignore[arg-type]
        self.keys = np.frombuffer(keys + b"\0", dtype=np.uint8).copy()
        self.key_w = np.zeros((max(1, len(kinds)), 3), dtype=np.uint64)
        for k in range(len(kinds)):
            a, b = offs[k], offs[k + 1]
            self.key_w[k, 0] = int.from_bytes(keys[a : min(b, a + 8)], "little")
            self.key_w[k, 1] = int.from_bytes(keys[max(a, b - 8) : b], "little") if b - a > 8 else 0
            self.key_w[k, 2] = (1 << 8 * min(b - a, 8)) - 1
        self.key_offs = np.array(offs, dtype=np.int64)
        self.kinds = np.array(kinds or [0], dtype=np.int64)
        self.cols = np.array(cols or [-1], dtype=np.int64)
        self.spec_info = np.array(info or [(0, 0, 0)], dtype=np.int64)
        self._room(1 << 12)
        self.st = np.zeros(F.N_ST, dtype=np.int64)
        self.cpu_last = np.zeros(F.MAX_CPU, dtype=np.int64)
        self.cpu_has = np.zeros(F.MAX_CPU, dtype=np.bool_)
        self.cpu_first = np.zeros(F.MAX_CPU, dtype=np.int64)
        self.cpu_seen = np.zeros(F.MAX_CPU, dtype=np.bool_)
        self.cpu_inv = np.zeros(F.MAX_CPU, dtype=np.int64)
        self._entry_arrays()
        self.chunk_id = 0
        self.slots = np.full(1 << 10, -1, dtype=np.int64)  # scratch of last_index

    @staticmethod
    def _column(kind: int, column: str | None) -> int | None:
        if kind == S.V_STR:
            return -2
        if not column:
            return -1
        if column in INT_COLUMNS:
            return F.COL_PFN + _INT_NAMES.index(column)  # pfn first, then the int8 columns
        if column in BOOL_COLUMNS:
            return F.COL_BOOL + BOOL_COLUMNS.index(column)
        return None

    def _room(self, rows: int) -> None:
        self.o64 = np.empty((F.N_64, rows), dtype=np.int64)
        self.o32 = np.empty((F.N_32, rows), dtype=np.int32)
        self.o16 = np.empty((F.N_16, rows), dtype=np.int16)
        self.o8 = np.empty((F.N_8, rows), dtype=np.int8)

    def _entry_arrays(self) -> None:
        size = len(self.table.e_ns)
        self.stamp = np.zeros(size, dtype=np.int64)
        self.new = np.zeros(size, dtype=np.int64)
        self.ev_count = np.zeros(size, dtype=np.int64)
        self.ev_first_row = np.zeros(size, dtype=np.int64)
        self.ev_first_rest = np.zeros(size, dtype=np.int64)

    def _map_event(self, ent: int) -> None:
        """A new event name: find its field list by its stored name (as ``TextParser._canonical``
        names it).  It is interned only when a chunk using it is committed, in row order."""
        try:
            raw = self.table.value(ent).decode()
        except UnicodeDecodeError:
            self.table.spec[ent] = -1
            return
        stored = raw.removeprefix("kmem:")
        self.table.spec[ent] = self.spec_index.get(LEGACY_EVENT_NAMES.get(stored, stored), -1)

    # ------------------------------------------------------------------ one chunk
    def _run(self, buf: np.ndarray, at_eof: bool) -> bool:
        p = self.p
        t = self.table
        if self.o64.shape[1] < len(buf) // 96:  # room for lines of 96 bytes on average
            self._room(len(buf) // 64)
        while True:
            self.chunk_id += 1
            self.st[:] = 0
            self.cpu_has[:] = False
            for c, ts in p.last_ts_cpu.items():
                self.cpu_last[c] = ts
                self.cpu_has[c] = True
            self.cpu_seen[:] = False
            self.cpu_inv[:] = 0
            self.ev_count[:] = 0
            with np.errstate(over="ignore"):  # the name table's hash wraps around (JIT off: numpy scalars)
                unmapped = bool((t.code[: int(t.meta[0])] < 0).any())
                F.parse_chunk(buf, len(buf), at_eof, t.arrays(), t.code, t.spec, unmapped, self.stamp, self.chunk_id,
                              self.new, self.keys, self.key_offs, self.key_w, self.kinds, self.cols, self.spec_info,
                              self.o64, self.o32, self.o16, self.o8, self.st, self.cpu_last, self.cpu_has, self.cpu_first, self.cpu_seen,
                              self.cpu_inv, self.ev_count, self.ev_first_row, self.ev_first_rest)
            status = int(self.st[F.P_STATUS])
            if status == F.ST_OK:
                return True
            if status == F.ST_NEW_EVENT:
                self._map_event(int(self.st[F.P_ARG]))
            elif status == F.ST_FULL:
                t.grow()
                self._entry_arrays()
            elif status == F.ST_ROOM:
                self._room(self.o64.shape[1] * 2)
            else:
                return False

    def parse(self, buf: np.ndarray, at_eof: bool) -> tuple[dict[str, np.ndarray | pa.Array] | None, int] | None:
        """(columns, bytes consumed) of the chunk ``buf``, or None: the general path must take it."""
        p = self.p
        if not ENABLED or p.mode != S.M_FTRACE or not self._run(buf, at_eof):
            return None
        st = self.st
        stop = int(st[F.P_STOP])
        if st[F.P_NONASCII]:
            try:
                buf[:stop].tobytes().decode("utf-8")
            except UnicodeDecodeError:
                return None
        t = self.table
        for ent in self.new[: int(st[F.P_NNEW])].tolist():
            t.code[ent] = self.interners[int(t.e_ns[ent])]._code(t.value(ent).decode())
        n = int(st[F.P_ROWS])
        o64, o32, o16, o8 = self.o64[:, :n], self.o32[:, :n], self.o16[:, :n], self.o8[:, :n]
        ents = np.flatnonzero(self.ev_count)  # the chunk's event names: one gather through a small map
        ev_map = np.zeros(len(t.code), dtype=np.int32)
        ev_map[ents] = p._canonical(t.code[ents])
        ev_code = ev_map[o32[F.W_EVENT]]
        seq = p.seq + np.arange(n, dtype=np.int64)
        p.seq += n
        cpu = o16[F.H_CPU]
        ts = o64[F.Q_TS]
        self._note(buf, cpu, ts, seq, ev_code)
        cols: dict[str, np.ndarray | pa.Array] = {}
        # columns no field list of the chunk's events fills are all null: Arrow arrays right away
        used = np.zeros(F.COL_BOOL + F.N_BOOL, dtype=bool)
        alloc = False
        for sp in {int(t.spec[ent]) for ent in np.flatnonzero(self.ev_count).tolist()}:
            k0, nk, is_alloc = self.spec_info[sp]
            used[self.cols[k0 : k0 + nk][self.cols[k0 : k0 + nk] >= 0]] = True
            alloc |= bool(is_alloc)
        for c, name in enumerate((*_INT_NAMES, *BOOL_COLUMNS)):
            if not used[c]:
                cols[name] = pa.nulls(n, RUN_SCHEMA.field(name).type)
            elif c == F.COL_PFN:
                cols[name] = o64[F.Q_PFN]
            elif c < F.COL_BOOL:
                v = o16[c]
                cols[name] = arrow_array(pa.int8(), v.astype(np.int8), v != F.NULL16)
            else:
                cols[name] = _bools(o8[c - F.COL_BOOL + 1])
        cols["failed"] = _bools(o8[F.B_FAILED]) if alloc else pa.nulls(n, pa.bool_())
        codes = np.append(t.code, 0).astype(np.int32)  # entry -1 (null): 0
        cols.update({
            "ts_ns": ts,
            "seq": seq,
            "src": np.full(n, p.src, dtype=np.int16),
            "line": np.arange(p.line0 + 1, p.line0 + n + 1, dtype=np.int64),
            "cpu": cpu,
            "pid": o32[F.W_PID],
            "tgid": pa.nulls(n, pa.int32()),  # lines with a TGID column go the general way
            "comm": arrow_array(pa.int32(), codes[o32[F.W_COMM]]),  # never null
            "lat_flags": _codes(codes, o32[F.W_FLAGS]),
            "event": arrow_array(pa.int32(), ev_code),
            "gfp": _codes(codes, o32[F.W_GFP]),
            "fields": pa.nulls(n, pa.string()),
            "stack_id": pa.nulls(n, pa.int32()),
        })
        p.line0 += n
        return (cols if n else None), stop

    def _note(self, buf: np.ndarray, cpu: np.ndarray, ts: np.ndarray, seq: np.ndarray, ev_code: np.ndarray) -> None:
        """The general path's bookkeeping (``TextParser._events``) from the kernel's counters."""
        p = self.p
        st = self.st
        stats = p.stats
        n = len(ts)
        p._chunk_losses = []
        stats.line_kinds["event"] += n
        stats.line_kinds["skipped"] += 0  # the general path's Counter gets the key, so the metadata shows it
        stats.frac_digits.update(d - 1 for d in range(11) if st[F.P_FDIG] >> d & 1)
        stats.flag_lengths.update(d for d in range(F.MAX_FLAGLEN + 1) if st[F.P_FLAGLEN] >> d & 1)
        # kmem events: counts and how the first row of each prints its pfn and page
        t = self.table
        names = p.names["event"].values
        first: dict[int, tuple[int, int]] = {}
        for ent in np.flatnonzero(self.ev_count).tolist():
            code = int(p.canon[t.code[ent]])
            stats.events[names[code]] += int(self.ev_count[ent])
            here = (int(self.ev_first_row[ent]), int(self.ev_first_rest[ent]))
            first[code] = min(first.get(code, here), here)
        for _, rest in first.values():
            p._note_radix(buf, np.array([rest], dtype=np.int64))
        # stacks in later chunks find their owners here
        if n:
            self._carry_out(cpu, self.o32[F.W_PID, :n], seq, ev_code)
        p._place_losses(np.arange(n, dtype=np.int64), cpu, ts, seq)
        if n == 0:
            return
        seen = np.flatnonzero(self.cpu_seen).tolist()
        stats.cpus.update(seen)
        first_ts = stats.first_ts_cpu.setdefault(p.src, {})
        for c in seen:
            first_ts.setdefault(c, int(self.cpu_first[c]))
            if self.cpu_inv[c]:
                stats.inversions[c] += int(self.cpu_inv[c])
            p.last_ts_cpu[c] = int(self.cpu_last[c])
        p.last_ts = int(ts[-1])

    def _carry_out(self, cpu: np.ndarray, pid: np.ndarray, seq: np.ndarray, ev_code: np.ndarray) -> None:
        """``TextParser._carry_out`` for rows without stacks."""
        key = (cpu.astype(np.int64) << 32) | pid
        ncodes = len(self.p.names["event"].values)
        if len(self.slots) < 2 * len(key):
            self.slots = np.full(1 << int(2 * len(key)).bit_length(), -1, dtype=np.int64)
        records: dict[int, list[int]] = {}
        last = self.p.last_event
        by_event = last_index(key * ncodes + ev_code, self.slots)
        by_key: dict[int, int] = {}  # a key's last row: the last of its (key, event) last rows
        for kc, i in by_event.items():
            if by_key.get(kc // ncodes, -1) < i:
                by_key[kc // ncodes] = i
        for k, i in by_key.items():
            last[(k, None)] = records.setdefault(i, [int(seq[i]), 0, int(ev_code[i])])
        for kc, i in by_event.items():
            last[(kc // ncodes, kc % ncodes)] = records.setdefault(i, [int(seq[i]), 0, int(ev_code[i])])
