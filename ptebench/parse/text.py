"""Trace text (the kernel's ``trace``/``trace_pipe``, ``trace-cmd report``, ``perf script``) into event columns.

:class:`TextParser` consumes line-aligned chunks (see ``source.py``) and keeps the
state that crosses chunk boundaries: the input order (``seq``), the last event of
each (CPU, pid) for stack ownership, the global dictionaries of names, frames and
stacks, and the counters that end up in the file's metadata.  Byte-level work is in
the jitted ``_scan`` kernels; per-chunk work here is numpy/Arrow, with Python
loops only over rare lines (headers, markers) and over stacks.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ptebench.errors import PtebenchError
from ptebench.parse import _scan as S
from ptebench.parse.events import (
    BOOL_COLUMNS,
    INT_COLUMNS,
    KMEM_EVENTS,
    KMEM_KEYED,
    LEGACY_EVENT_NAMES,
    Field,
    is_tracing_frame,
)
from ptebench.parse.fastpath import FastPath, last_index
from ptebench.parse.stacks import Interner, StackTable

NULL_INT = np.iinfo(np.int64).min  # "no value" in int columns until they become Arrow arrays
_POW10 = np.array([10**k for k in range(10)], dtype=np.int64)

# kernel/trace/trace.c print_trace_line(): "CPU:%d [LOST %lu EVENTS]" (or "[LOST EVENTS]", count unknown)
_LOST_RE = re.compile(r"^CPU:(\d+) \[LOST (?:(\d+) )?EVENTS\]\s*$")
# trace-cmd lib/trace-cmd/trace-input.c / tracecmd/trace-read.c: "CPU:%d [%lld EVENTS DROPPED]" or "[EVENTS DROPPED]"
_DROPPED_RE = re.compile(r"^CPU:(\d+) \[(?:(\d+) )?EVENTS DROPPED\]\s*$")
# kernel/trace/trace.c test_cpu_buff_start() (options/annotate): the CPU's buffer begins later than the others
_STARTED_RE = re.compile(r"^#{5} CPU (\d+) buffer started #{4}\s*$")
_LOSS_MARKERS = (("lost", _LOST_RE), ("dropped", _DROPPED_RE), ("buffer_started", _STARTED_RE))
# trace-cmd report --debug: a new sub-buffer page; no data is missing
_SUBBUFFER_RE = re.compile(r"^CPU:\d+ \[SUBBUFFER START\]")
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)\s+#P:(\d+)")
# trace-cmd report (tracecmd/trace-read.c): "version = %s" (older releases, on stdout), "cpus=%d",
# "CPU %d is empty"; Android atrace: a "TRACE:" line before the kernel's text
_PREAMBLE_RES = (
    ("version", re.compile(r"^version = (\d+)\s*$")),
    ("cpus", re.compile(r"^cpus=(\d+)\s*$")),
    ("empty_cpu", re.compile(r"^CPU (\d+) is empty\s*$")),
    ("atrace", re.compile(r"^TRACE:\s*$")),
)

#: the text layout of each input format (formats.py lists the formats)
FORMAT_MODES = {"ftrace": S.M_FTRACE, "trace-cmd": S.M_TRACECMD, "perf-script": S.M_PERF,
                "systrace": S.M_FTRACE, "trace-dat": S.M_TRACECMD}

_LAYOUT = {
    S.M_FTRACE: 'an ftrace line "comm-pid [cpu] flags timestamp: event: fields"',
    S.M_TRACECMD: 'a trace-cmd report line "comm-pid [cpu] timestamp: event: fields"',
    S.M_PERF: 'a perf script line "comm tid [cpu] timestamp: system:event: fields"',
}


def _expect(mode: int, err: int) -> str:
    if err == S.E_PREFIX:
        return _LAYOUT[mode]
    if err == S.E_TIMESTAMP:
        return 'a timestamp "seconds.fraction:" after "[cpu]"' + (
            "" if mode == S.M_PERF else " and the optional irq-info flags")
    return 'an event name followed by ":" after the timestamp'


#: lines a chunk is made of, as counted in the metadata's ``line_kinds``
K_SKIPPED = 8  # a bad line skipped in lenient mode
K_PARTIAL = 9  # an unterminated last line
_LINE_KIND_NAMES = {S.K_STACK: "stack", S.K_USTACK: "stack", S.K_FRAME: "frame", S.K_COMMENT: "comment",
                    S.K_BLANK: "blank", S.K_MARKER: "marker", K_SKIPPED: "skipped", K_PARTIAL: "partial"}

#: first stack frames that name the event the stack was recorded for
_NAMING_FRAMES = ("trace_event_raw_event_", "perf_trace_")

_PROBE = "probe:"
_PROBE_RE = re.compile(rb"^\((\w+)\+0x[0-9a-f]+/0x[0-9a-f]+\)")

_KIND_NAMES = {S.V_PTR: "<pointer>", S.V_INT: "<integer>", S.V_STR: "<flags>"}


def _field_spec(fields: tuple[Field, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keys = b"".join(f.key.encode() for f in fields)
    offs = np.cumsum([0] + [len(f.key) for f in fields]).astype(np.int64)
    kinds = np.array([f.kind for f in fields], dtype=np.int64)
    required = np.array([f.required for f in fields], dtype=np.bool_)
    return np.frombuffer(keys, dtype=np.uint8), offs, kinds, required


_KEYED_SPECS = {name: _field_spec(fields) for name, fields in KMEM_KEYED.items()}

#: value ranges of the typed columns: the Arrow type's, pfn non-negative or -1UL (failure, raw output)
_RANGES = {name: (-1, (1 << 52) - 1) if name == "pfn" else (-128, 127) for name in INT_COLUMNS}


@dataclass
class ParseStats:
    """Counters that travel into the file's metadata."""

    events: Counter[str] = field(default_factory=Counter)
    stacks_by_event: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # lenient mode: reason -> lines
    warnings: Counter[str] = field(default_factory=Counter)
    losses: list[dict[str, object]] = field(default_factory=list)
    headers: list[dict[str, object]] = field(default_factory=list)
    inversions: Counter[int] = field(default_factory=Counter)  # cpu -> ts decreases in input order
    frac_digits: set[int] = field(default_factory=set)
    pfn_radix: set[str] = field(default_factory=set)
    pages: set[str] = field(default_factory=set)  # how page=%p looks: hashed, raw, user-space, null
    flag_lengths: set[int] = field(default_factory=set)  # irq-info flag characters per line
    header_lines: list[str] = field(default_factory=list)  # the first comment lines (era evidence)
    cpus: set[int] = field(default_factory=set)
    first_ts_cpu: dict[int, dict[int, int]] = field(default_factory=dict)  # src -> cpu -> first ts (input order)
    line_kinds: Counter[str] = field(default_factory=Counter)
    keyed_rows: Counter[str] = field(default_factory=Counter)  # kmem events parsed by key, not in printk order
    renamed: dict[str, str] = field(default_factory=dict)  # event name as printed -> stored name
    preamble: dict[int, dict[str, object]] = field(default_factory=dict)  # src -> trace-cmd/atrace preamble


class TextParser:
    """Parse trace text chunk by chunk into column dicts ready for a run file."""

    def __init__(self, *, lenient: bool = False, specs: dict[str, tuple[Field, ...]] | None = None) -> None:
        self.lenient = lenient
        # the printed field list of each kmem event: the 6.1 TP_printk ones, or a kernel's own format files
        self.specs = {name: (fields, _field_spec(fields)) for name, fields in {**KMEM_EVENTS, **(specs or {})}.items()}
        self.seq = 0
        self.stats = ParseStats()
        self.names = {"comm": Interner(), "lat_flags": Interner(), "event": Interner(), "gfp": Interner()}
        self.raw_events = Interner()  # event names as printed ("kmem:mm_page_alloc", "mm_page_free_direct")
        self.canon = np.zeros(0, dtype=np.int32)  # raw event code -> stored event code
        self.stacks = StackTable()
        self.last_event: dict[tuple[int, int | None], list[int]] = {}  # ((cpu<<32|pid), event|None) -> [seq, has_stack, event]
        self.last_ts_cpu: dict[int, int] = {}
        self.probe_code: dict[str, int] = {}  # probed function -> event code
        self.probe_seen: set[int] = set()
        self.last_ts = 0
        self.pending_loss: list[int] = []  # losses still waiting for the next event on their CPU
        self.patches: list[tuple[int, int]] = []  # (seq, stack_id) for owners in earlier chunks
        self.src = 0
        self.file = ""
        self.mode = S.M_FTRACE
        self.line0 = 0  # lines of the current source consumed so far
        self.fast = FastPath(self)

    # ------------------------------------------------------------------ per source
    def start_source(self, src: int, name: str, fmt: str = "ftrace") -> None:
        self.src, self.file, self.line0 = src, name, 0
        self.mode = FORMAT_MODES[fmt]
        self.pending_loss = []

    def _fail(self, line: int, text: str, message: str, expected: str) -> None:
        raise PtebenchError(message, file=self.file, line=line, text=text, expected=expected)

    # ------------------------------------------------------------------ per chunk
    def parse_view(self, buf: np.ndarray, at_eof: bool) -> tuple[dict[str, np.ndarray | pa.Array] | None, int]:
        """Parse one chunk given as a uint8 array; return (columns, bytes consumed): the rest is
        the start of the next chunk.  The fast path takes chunks of ordinary kmem event lines."""
        res = self.fast.parse(buf, at_eof) if len(buf) else None
        if res is not None:
            return res
        data = buf.tobytes()
        cols, carry = self.parse(data, at_eof)
        return cols, len(data) - len(carry)

    def parse(self, data: bytes, at_eof: bool) -> tuple[dict[str, np.ndarray | pa.Array] | None, bytes]:
        """Parse one chunk; return (columns of its events in input order, bytes to carry over)."""
        if not data:
            return None, b""
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        partial = at_eof and (len(ends) == 0 or ends[-1] != len(buf) - 1)
        if partial:
            ends = np.append(ends, len(buf))
        starts = np.empty(len(ends), dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        out = np.empty((len(ends), S.NCOL), dtype=np.int64)
        S.scan_lines(buf, starts, ends, out, self.mode)
        kind = out[:, S.C_KIND]
        carry = b""
        if not at_eof:
            # keep a stack block whole: carry the last entry line and its frames over
            nonframe = np.flatnonzero(kind != S.K_FRAME)
            cut = int(nonframe[-1]) if len(nonframe) else len(kind)
            if cut == 0:
                cut = len(kind)
            carry = data[starts[cut] :] if cut < len(kind) else b""
            out, starts, ends, kind = out[:cut], starts[:cut], ends[:cut], kind[:cut]
        if partial:
            self.stats.warnings["partial_last_line"] += 1
            kind[-1] = K_PARTIAL
        self._check_utf8(data, out, starts, ends)
        cols = self._events(data, buf, out, starts, ends)
        self.line0 += len(kind)
        return cols, carry

    def _check_utf8(self, data: bytes, out: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        pos = 0
        end = int(ends[-1]) if len(ends) else 0
        while pos < end:
            try:
                data[pos:end].decode("utf-8")
                return
            except UnicodeDecodeError as exc:
                i = int(np.searchsorted(ends, pos + exc.start, side="left"))
                self._bad_line(data, starts, ends, i, "the line is not UTF-8 text", "UTF-8 text", "not_utf8")
                out[i, S.C_KIND] = K_SKIPPED
                pos = int(ends[i]) + 1

    def _text(self, data: bytes, starts: np.ndarray, ends: np.ndarray, i: int) -> str:
        return data[starts[i] : ends[i]].decode("utf-8", "replace").rstrip("\r")

    def _bad_line(self, data, starts, ends, i: int, message: str, expected: str, reason: str) -> None:
        if not self.lenient:
            self._fail(self.line0 + i + 1, self._text(data, starts, ends, i), message, expected)
        self.stats.skipped[reason] += 1

    def _preamble(self, text: str) -> bool:
        """trace-cmd's "version = 6" / "cpus=6" / "CPU 3 is empty" and atrace's "TRACE:" lines."""
        for key, rx in _PREAMBLE_RES:
            m = rx.match(text)
            if m is None:
                continue
            pre = self.stats.preamble.setdefault(self.src, {})
            if key == "empty_cpu":
                pre.setdefault("empty_cpus", []).append(int(m.group(1)))  # type: ignore[union-attr]
            elif key == "atrace":
                pre["atrace"] = True
            else:
                pre[key] = int(m.group(1))
            return True
        return False

    def _rare_lines(self, data: bytes, out: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Headers, markers and malformed lines: few, so handled one by one."""
        kind = out[:, S.C_KIND]
        for i in np.flatnonzero((kind == S.K_COMMENT) | (kind == S.K_MARKER) | (kind == S.K_BAD)):
            text = self._text(data, starts, ends, int(i))
            k = kind[i]
            line = self.line0 + int(i) + 1
            if k == S.K_BAD:
                if self._preamble(text):
                    kind[i] = S.K_COMMENT
                    continue
                self._bad_line(data, starts, ends, int(i), "malformed trace line",
                               _expect(self.mode, int(out[i, S.C_ERR])), "malformed_line")
                kind[i] = K_SKIPPED
                continue
            kind_name, m = next(((name, m) for name, rx in _LOSS_MARKERS if (m := rx.match(text))), ("", None))
            if m:
                count = m.group(2) if m.re.groups > 1 else None
                self.stats.losses.append({
                    "kind": kind_name, "cpu": int(m.group(1)), "count": int(count) if count else None,
                    "src": self.src, "line": line, "after_ts_ns": self.last_ts, "after_seq": self.seq - 1,
                    "prev_cpu_ts_ns": self.last_ts_cpu.get(int(m.group(1))), "next_ts_ns": None, "next_seq": None,
                })
                kind[i] = S.K_MARKER
                self._chunk_losses.append((len(self.stats.losses) - 1, int(i)))
                continue
            if k == S.K_MARKER:
                if _SUBBUFFER_RE.match(text):
                    continue
                self._bad_line(data, starts, ends, int(i), "unknown marker line",
                               '"CPU:N [LOST M EVENTS]" or "CPU:N [M EVENTS DROPPED]"', "unknown_marker")
                kind[i] = K_SKIPPED
                continue
            if len(self.stats.header_lines) < 40:
                self.stats.header_lines.append(text)
            m = _ENTRIES_RE.match(text)
            if m:
                in_buf, written, ncpu = (int(g) for g in m.groups())
                self.stats.headers.append({"src": self.src, "entries_in_buffer": in_buf,
                                           "entries_written": written, "cpus": ncpu})
                if in_buf < written:
                    # overwrite mode dropped the oldest written-in_buf events, on CPUs the header does not name
                    self.stats.losses.append({
                        "kind": "overwritten", "cpu": None, "count": written - in_buf, "src": self.src,
                        "line": line, "after_ts_ns": None, "after_seq": None, "prev_cpu_ts_ns": None,
                        "next_ts_ns": None, "next_seq": None,
                    })
                    self._chunk_losses.append((len(self.stats.losses) - 1, int(i)))

    def finish(self) -> None:
        """After the last chunk: an overwritten buffer lost data before each CPU's first surviving event."""
        for loss in self.stats.losses:
            if loss["kind"] == "overwritten":
                first = self.stats.first_ts_cpu.get(int(loss["src"]), {})  # type: ignore[call-overload]
                loss["next_ts_ns_per_cpu"] = {str(c): t for c, t in sorted(first.items())}

    def _canonical(self, raw: np.ndarray) -> np.ndarray:
        """Stored event codes: ``kmem:`` dropped from perf's names, pre-3.3 names renamed."""
        values = self.raw_events.values
        if len(self.canon) < len(values):
            names = []
            for name in values[len(self.canon) :]:
                stored = name.removeprefix("kmem:")
                stored = LEGACY_EVENT_NAMES.get(stored, stored)
                if stored != name:
                    self.stats.renamed[name] = stored
                names.append(stored)
            codes = self.names["event"].encode(pa.array(names, type=pa.string()))
            self.canon = np.concatenate([self.canon, codes]).astype(np.int32)
        return self.canon[raw] if len(raw) else raw.astype(np.int32)

    def _events(self, data, buf, out, starts, ends) -> dict[str, np.ndarray | pa.Array] | None:
        self._chunk_losses: list[tuple[int, int]] = []
        self._chunk = (data, starts, ends)
        self._rare_lines(data, out, starts, ends)
        kind = out[:, S.C_KIND]
        ev_lines = np.flatnonzero(kind == S.K_EVENT)
        n = len(ev_lines)
        rows = out[ev_lines]
        seq = self.seq + np.arange(n, dtype=np.int64)  # skipped lines keep their place: gaps in lenient mode
        self.seq += n
        keep = np.ones(n, dtype=bool)
        # -------- names
        ev_code = self._canonical(self.raw_events.encode(self._slices(buf, rows, S.C_EV_S, S.C_EV_E)))
        event_names = self.names["event"].values
        cols: dict[str, np.ndarray | pa.Array] = {}
        for name in INT_COLUMNS:
            cols[name] = np.full(n, NULL_INT, dtype=np.int64)
        for name in BOOL_COLUMNS:
            cols[name] = np.full(n, -1, dtype=np.int8)
        cols["failed"] = np.full(n, -1, dtype=np.int8)
        gfp_s = np.zeros(n, dtype=np.int64)
        gfp_e = np.zeros(n, dtype=np.int64)
        has_gfp = np.zeros(n, dtype=bool)
        generic = np.ones(n, dtype=bool)
        for code in np.unique(ev_code):
            name = event_names[code]
            if name not in KMEM_EVENTS:
                continue
            sel = np.flatnonzero(ev_code == code)
            generic[sel] = False
            self._kmem_fields(data, buf, name, sel, rows, ev_lines, starts, ends, cols, keep, gfp_s, gfp_e, has_gfp)
        self._learn_probes(data, rows, ev_code, generic)
        # -------- stacks (before dropping skipped rows, so a skipped event still owns its stack)
        stack_id = self._attach_stacks(buf, out, ev_lines, rows, seq, ev_code)
        self._count_lines(kind, n, int(keep.sum()))
        # -------- common columns
        fdig = rows[:, S.C_FDIG]
        self.stats.frac_digits.update(np.unique(fdig).tolist())
        ts = rows[:, S.C_SEC] * 1_000_000_000 + rows[:, S.C_FRAC] * _POW10[np.clip(9 - fdig, 0, 9)]
        ts = np.where(fdig < 0, rows[:, S.C_SEC], ts)
        if not keep.all():
            idx = np.flatnonzero(keep)
            ev_lines, rows, ev_code, ts, stack_id = ev_lines[idx], rows[idx], ev_code[idx], ts[idx], stack_id[idx]
            seq = seq[idx]
            cols = {k: v[idx] for k, v in cols.items()}
            gfp_s, gfp_e, has_gfp, generic = gfp_s[idx], gfp_e[idx], has_gfp[idx], generic[idx]
            n = len(idx)
        cpu = rows[:, S.C_CPU]
        self._place_losses(ev_lines, cpu, ts, seq)
        if n == 0:
            return None
        first = self.stats.first_ts_cpu.setdefault(self.src, {})
        for c, i in zip(*np.unique(cpu, return_index=True), strict=True):
            first.setdefault(int(c), int(ts[i]))
        self._count_inversions(cpu, ts)
        self.last_ts = int(ts[-1])
        tgid = rows[:, S.C_TGID]
        self.stats.flag_lengths.update(np.unique(rows[:, S.C_FLG_E] - rows[:, S.C_FLG_S]).tolist())
        flags = self._slices(buf, rows, S.C_FLG_S, S.C_FLG_E)
        flags = pc.if_else(pc.equal(pc.binary_length(flags), 0), pa.scalar(None, flags.type), flags)
        gfp = self._slices_se(buf, gfp_s, gfp_e, has_gfp)
        fields = self._slices_se(buf, rows[:, S.C_REST_S], rows[:, S.C_REST_E], generic)
        counts = np.bincount(ev_code, minlength=len(event_names))
        for code in np.flatnonzero(counts):
            self.stats.events[event_names[code]] += int(counts[code])
        self.stats.cpus.update(np.unique(cpu).tolist())
        cols.update({
            "ts_ns": ts,
            "seq": seq,
            "src": np.full(n, self.src, dtype=np.int16),
            "line": self.line0 + ev_lines + 1,
            "cpu": cpu.astype(np.int16),
            "pid": rows[:, S.C_PID].astype(np.int32),
            "tgid": np.where(tgid < 0, -1, tgid).astype(np.int32),
            "comm": self.names["comm"].encode(self._slices(buf, rows, S.C_COMM_S, S.C_COMM_E)),
            "lat_flags": self.names["lat_flags"].encode(flags),
            "event": ev_code.astype(np.int32),
            "gfp": self.names["gfp"].encode(gfp),
            "fields": pc.cast(fields, pa.string()),
            "stack_id": stack_id,
        })
        return cols

    def _count_lines(self, kind: np.ndarray, n_events: int, kept: int) -> None:
        """Every line lands in exactly one bucket of ``line_kinds``; lenient skips are under "skipped"."""
        counts = np.bincount(kind, minlength=K_PARTIAL + 1)
        lk = self.stats.line_kinds
        lk["event"] += kept
        lk["skipped"] += n_events - kept
        for k, name in _LINE_KIND_NAMES.items():
            if counts[k]:
                lk[name] += int(counts[k])

    def _place_losses(self, ev_lines: np.ndarray, cpu: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> None:
        """Where each loss sits in time: ``after_*`` is the event before its marker line (any CPU),
        ``prev_cpu_ts_ns`` / ``next_*`` the events on its CPU on either side, so the data missing on
        that CPU lies between them (the kernel prints the marker just before the CPU's next entry)."""
        losses = self.stats.losses
        for li, local in self._chunk_losses:
            k = int(np.searchsorted(ev_lines, local)) - 1
            loss = losses[li]
            if k >= 0 and loss["cpu"] is not None:
                loss["after_ts_ns"] = int(ts[k])
                loss["after_seq"] = int(seq[k])
                on = np.flatnonzero(cpu[: k + 1] == loss["cpu"])
                if len(on):
                    loss["prev_cpu_ts_ns"] = int(ts[on[-1]])
            self.pending_loss.append(li)
        if not self.pending_loss or len(ev_lines) == 0:
            return
        chunk_losses = dict(self._chunk_losses)
        still = []
        for li in self.pending_loss:
            loss = losses[li]
            after = int(np.searchsorted(ev_lines, chunk_losses[li])) if li in chunk_losses else 0
            later = np.arange(after, len(ev_lines))
            if loss["cpu"] is not None:
                later = later[cpu[after:] == loss["cpu"]]
            if len(later) and loss["src"] == self.src:
                loss["next_ts_ns"] = int(ts[later[0]])
                loss["next_seq"] = int(seq[later[0]])
            else:
                still.append(li)
        self.pending_loss = still

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _slices(buf: np.ndarray, rows: np.ndarray, cs: int, ce: int) -> pa.Array:
        data, offs = S.gather(buf, np.ascontiguousarray(rows[:, cs]), np.ascontiguousarray(rows[:, ce]))
        return pa.Array.from_buffers(pa.large_binary(), len(offs) - 1, [None, pa.py_buffer(offs), pa.py_buffer(data)])

    @staticmethod
    def _slices_se(buf: np.ndarray, s: np.ndarray, e: np.ndarray, valid: np.ndarray) -> pa.Array:
        s = np.where(valid, s, 0)
        e = np.where(valid, e, 0)
        data, offs = S.gather(buf, s, e)
        mask = pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.Array.from_buffers(pa.large_binary(), len(offs) - 1, [mask, pa.py_buffer(offs), pa.py_buffer(data)])

    def _kmem_fields(self, data, buf, name, sel, rows, ev_lines, starts, ends, cols, keep,
                     gfp_s, gfp_e, has_gfp) -> None:
        """Typed columns of one kmem event's rows: the 6.1 TP_printk layout first (fast path), then
        by key for rows with another field list (older kernels, vendor fields, raw tool output)."""
        spec, (keys, offs, kinds, _) = self.specs[name]
        m = len(sel)
        rest_s = np.ascontiguousarray(rows[:, S.C_REST_S])
        rest_e = np.ascontiguousarray(rows[:, S.C_REST_E])
        vals = np.zeros((m, len(kinds)), dtype=np.int64)
        str_s = np.zeros(m, dtype=np.int64)
        str_e = np.zeros(m, dtype=np.int64)
        isnull = np.zeros(m, dtype=np.bool_)
        err = np.zeros(m, dtype=np.int64)
        sel = np.ascontiguousarray(sel)
        S.scan_fields(buf, sel, rest_s, rest_e, keys, offs, kinds, vals, str_s, str_e, isnull, err)
        ok = np.flatnonzero(err < 0)
        bad_k = np.full(m, -1, dtype=np.int64)  # per row: index (in `spec`) of the field that failed, or -1
        bad_k[ok] = self._store(name, spec, sel[ok], vals[ok], np.ones((len(ok), len(spec)), bool), str_s[ok],
                                str_e[ok], isnull[ok], cols, gfp_s, gfp_e, has_gfp)
        redo = np.flatnonzero(err >= 0)
        keyed_k = np.full(m, -1, dtype=np.int64)  # rows that failed by key: the keyed field index
        if len(redo):
            kspec = KMEM_KEYED[name]
            kkeys, koffs, kkinds, kreq = _KEYED_SPECS[name]
            r = len(redo)
            kvals = np.zeros((r, len(kspec)), dtype=np.int64)
            ks, ke = np.zeros(r, dtype=np.int64), np.zeros(r, dtype=np.int64)
            kisnull = np.zeros(r, dtype=np.bool_)
            present = np.zeros((r, len(kspec)), dtype=np.bool_)
            extra = np.zeros(r, dtype=np.int64)
            kerr = np.zeros(r, dtype=np.int64)
            S.scan_fields_keyed(buf, np.ascontiguousarray(sel[redo]), rest_s, rest_e, kkeys, koffs, kkinds, kreq,
                                kvals, ks, ke, kisnull, present, extra, kerr)
            kok = np.flatnonzero(kerr < 0)
            stored = self._store(name, kspec, sel[redo[kok]], kvals[kok], present[kok], ks[kok], ke[kok], kisnull[kok],
                                 cols, gfp_s, gfp_e, has_gfp)
            keyed_k[redo[kok]] = stored
            good = kok[stored < 0]
            self.stats.keyed_rows[name] += len(good)
            if (extra[good] > 0).any():
                self.stats.warnings[f"unknown_fields:{name}"] += int((extra[good] > 0).sum())
            failed_rows = np.flatnonzero(kerr >= 0)
            keyed_k[redo[failed_rows]] = kerr[failed_rows]
            bad_keyed = np.zeros(m, dtype=bool)
            bad_keyed[redo] = keyed_k[redo] >= 0
        else:
            bad_keyed = np.zeros(m, dtype=bool)
        bad = np.flatnonzero((bad_k >= 0) | bad_keyed)
        if len(bad):
            if not self.lenient:
                self._field_error(data, name, int(bad[0]), err, bad_k, keyed_k, sel, ev_lines, starts, ends)
            self.stats.skipped[f"bad_fields:{name}"] += len(bad)
            keep[sel[bad]] = False
        self._note_radix(buf, rows[sel, S.C_REST_S])

    def _field_error(self, data, name, r, err, bad_k, keyed_k, sel, ev_lines, starts, ends) -> None:
        spec = self.specs[name][0]
        want = " ".join(f"{f.key}={_KIND_NAMES[f.kind]}" for f in spec)
        line = int(ev_lines[sel[r]])
        if bad_k[r] >= 0:  # printk layout, value out of range
            f = spec[int(bad_k[r])]
            lo, hi = _RANGES[f.column]
            where = f"'{f.key}=<integer {lo}..{hi}>'"
        else:
            kspec = KMEM_KEYED[name]
            k = int(keyed_k[r])
            if k < len(kspec):
                f = kspec[k]
                where = f"'{f.key}={_KIND_NAMES[f.kind]}'"
            else:  # not key=value text: say where the printk layout broke
                k = int(err[r])
                where = f"'{spec[k].key}={_KIND_NAMES[spec[k].kind]}'" if k < len(spec) else "end of line"
        self._fail(self.line0 + line + 1, self._text(data, starts, ends, line),
                   f"{name} fields do not fit its format", f"{where} in '{want}'")

    @staticmethod
    def _store(name, spec, idx, vals, present, str_s, str_e, isnull, cols, gfp_s, gfp_e, has_gfp) -> np.ndarray:
        """Write parsed fields into the chunk's columns at rows ``idx``; return per row the index of
        the first field whose value does not fit its column, or -1."""
        n = len(idx)
        bad_k = np.full(n, -1, dtype=np.int64)
        pfn = None
        for k, f in enumerate(spec):
            pres = present[:, k]
            if f.kind == S.V_STR:
                gfp_s[idx], gfp_e[idx], has_gfp[idx] = str_s, str_e, pres
                continue
            if not f.column:
                continue
            v = vals[:, k]
            if f.column in INT_COLUMNS:
                lo, hi = _RANGES[f.column]
                bad_k = np.where((bad_k < 0) & pres & ((v < lo) | (v > hi)), k, bad_k)
                absent = NULL_INT if f.default is None else f.default
                cols[f.column][idx] = np.where(pres, v, absent)
                if f.column == "pfn":
                    pfn = v
            else:
                absent = -1 if f.default is None else f.default
                cols[f.column][idx] = np.where(pres, v != 0, absent)
        if name == "mm_page_alloc" and pfn is not None:
            # a failed allocation: page NULL, pfn printed as 0 (kmem.h: "pfn != -1UL ? pfn : 0") or raw -1UL
            failed = isnull | (pfn == 0) | (pfn == -1)
            cols["failed"][idx] = failed
            cols["pfn"][idx] = np.where(failed, NULL_INT, pfn)
        return bad_k

    def _note_radix(self, buf: np.ndarray, rest_s: np.ndarray) -> None:
        """Record how pfns are printed ("pfn=0x%lx" since 5.14, "pfn=%lu" before) and how page=%p looks
        (hashed since 4.15, raw before or with hash-ptr off, "0x..." from user-space tools); first row per chunk."""
        text = bytes(buf[rest_s[0] : rest_s[0] + 64])
        m = re.search(rb"pfn=(0x)?", text)
        if m and text.startswith(b"page="):  # raw tool output (-R, FAILED TO PARSE) always prints 0x
            self.stats.pfn_radix.add("hex" if m.group(1) else "dec")
        m = re.match(rb"page=\s*(\S+)", text)
        if m:
            ptr = m.group(1)
            self.stats.pages.add("null" if ptr in (b"(null)", b"0000000000000000", b"00000000") else "user-space"
                                 if ptr.startswith(b"0x") else "hashed" if ptr.startswith(b"00000000") else "raw")

    def _count_inversions(self, cpu: np.ndarray, ts: np.ndarray) -> None:
        for c in np.unique(cpu):
            t = ts[cpu == c]
            prev = self.last_ts_cpu.get(int(c))
            inv = int(np.count_nonzero(t[1:] < t[:-1]))
            if prev is not None and t[0] < prev:
                inv += 1
            if inv:
                self.stats.inversions[int(c)] += inv
            self.last_ts_cpu[int(c)] = int(t[-1])

    def _attach_stacks(self, buf, out, ev_lines, rows, seq, ev_code) -> np.ndarray:
        """stack_id per event row (-1 none).

        A ``<stack trace>`` entry belongs to the most recent event on the same CPU and pid
        (merged tracefs output interleaves CPUs).  When the stack's first, tracer-owned frame
        names its event (``trace_event_raw_event_mm_page_alloc``), the owner is the most
        recent event *of that name* on the same CPU and pid: a softirq can log frees on the
        interrupted task's pid between an allocation and its stack.
        """
        kind = out[:, S.C_KIND]
        stack_id = np.full(len(ev_lines), -1, dtype=np.int32)
        st_lines = np.flatnonzero(kind == S.K_STACK)
        frames_of, named_of = self._frames(buf, out, kind)
        names = self.names["event"]
        event_names = names.values
        if len(st_lines):
            lines = np.concatenate([ev_lines, st_lines])
            is_ev = np.concatenate([np.ones(len(ev_lines), bool), np.zeros(len(st_lines), bool)])
            key = (out[lines, S.C_CPU] << 32) | out[lines, S.C_PID]
            order = np.lexsort((lines, key))
            k_sorted = key[order]
            ev_sorted = is_ev[order]
            owner_pos = np.maximum.accumulate(np.where(ev_sorted, np.arange(len(order)), -1))
            for j in np.flatnonzero(~ev_sorted).tolist():
                line = int(lines[order[j]])
                sid = self.stacks.intern(frames_of.get(line, ()))
                want = self._owner_code(named_of.get(line))
                o = int(owner_pos[j])
                while o >= 0 and k_sorted[o] == k_sorted[j] and (
                        not ev_sorted[o] or (want is not None and ev_code[order[o]] != want)):
                    o -= 1
                if o >= 0 and k_sorted[o] == k_sorted[j]:
                    e = int(order[o])
                    if stack_id[e] >= 0:
                        self.stats.warnings["extra_stacks"] += 1
                        continue
                    stack_id[e] = sid
                    self.stats.stacks_by_event[event_names[ev_code[e]]] += 1
                    continue
                # the owner is in an earlier chunk
                prev = self.last_event.get((int(k_sorted[j]), want))
                if prev is None or prev[1]:
                    self.stats.warnings["stacks_without_event" if prev is None else "extra_stacks"] += 1
                    continue
                prev[1] = 1
                self.patches.append((prev[0], sid))
                self.stats.stacks_by_event[event_names[prev[2]]] += 1
        if self.mode == S.M_PERF:
            for line, frames in frames_of.items():
                e = int(np.searchsorted(ev_lines, line))
                stack_id[e] = self.stacks.intern(frames)
                self.stats.stacks_by_event[event_names[ev_code[e]]] += 1
        self._carry_out(out, ev_lines, seq, stack_id, ev_code)
        return stack_id

    def _owner_code(self, named: str | None) -> int | None:
        if named is None:
            return None
        if named.startswith(_PROBE):
            return self.probe_code.get(named[len(_PROBE) :])
        return self.names["event"].codes.get(named)

    def _learn_probes(self, data: bytes, rows: np.ndarray, ev_code: np.ndarray, generic: np.ndarray) -> None:
        """kprobe events print their address first, ``(set_direct_map_invalid_noflush+0x0/0x90)``:
        remember which event probes which function, so a kprobe's stack finds its event."""
        for code in np.unique(ev_code[generic]).tolist():
            if code in self.probe_seen:
                continue
            self.probe_seen.add(code)
            i = int(np.flatnonzero(generic & (ev_code == code))[0])
            m = _PROBE_RE.match(data[rows[i, S.C_REST_S] : rows[i, S.C_REST_E]])
            if m:
                self.probe_code.setdefault(m.group(1).decode(), code)

    def _carry_out(self, out, ev_lines, seq, stack_id, ev_code) -> None:
        """Remember the last event per (CPU, pid) and per (CPU, pid, event) for the next chunk.

        Both views of one event share one record, so a stack attached through either marks it.
        """
        if len(ev_lines) == 0:
            return
        key = (out[ev_lines, S.C_CPU] << 32) | out[ev_lines, S.C_PID]
        ncodes = len(self.names["event"].values)
        records: dict[int, list[int]] = {}

        def record(i: int) -> list[int]:
            return records.setdefault(i, [int(seq[i]), int(stack_id[i] >= 0), int(ev_code[i])])

        for k, i in last_index(key).items():
            self.last_event[(k, None)] = record(i)
        for kc, i in last_index(key * ncodes + ev_code).items():
            self.last_event[(kc // ncodes, kc % ncodes)] = record(i)

    @staticmethod
    def _last_index(key: np.ndarray) -> dict[int, int]:
        """Plain reference of ``fastpath.last_index``."""
        rev = key[::-1]
        uniq, first = np.unique(rev, return_index=True)
        return dict(zip(uniq.tolist(), (len(key) - 1 - first).tolist(), strict=True))

    def _frames(self, buf, out, kind) -> tuple[dict[int, tuple[int, ...]], dict[int, str]]:
        """Frame ids of each <stack trace> line (leading tracing frames stripped), and the
        event named by its first frame (``trace_event_raw_event_<event>``) when there is one."""
        fr = np.flatnonzero(kind == S.K_FRAME)
        if len(fr) == 0:
            return {}, {}
        head = np.maximum.accumulate(np.where(kind != S.K_FRAME, np.arange(len(kind)), -1))[fr]
        orphan = head < 0
        if orphan.any():
            self.stats.warnings["frames_before_first_entry"] += int(orphan.sum())
        head_kind = np.where(orphan, -1, kind[np.maximum(head, 0)])
        user = head_kind == S.K_USTACK
        if user.any():
            self.stats.warnings["user_stack_frames"] += int(user.sum())
        # perf script prints a sample's callchain right under it: the event line heads its frames
        stackish = (head_kind == S.K_STACK) | ((head_kind == S.K_EVENT) & (self.mode == S.M_PERF))
        stray = ~orphan & ~user & ~stackish
        if stray.any():
            i = int(fr[np.flatnonzero(stray)[0]])
            self.stats.warnings["frames_after_non_stack_entry"] += int(stray.sum())
            if not self.lenient:
                data, starts, ends = self._chunk
                head_text = "a perf sample line" if self.mode == S.M_PERF else "a '<stack trace>' entry"
                raise PtebenchError("a stack frame follows a line that is not a <stack trace> entry",
                                    file=self.file, line=self.line0 + i + 1, text=self._text(data, starts, ends, i),
                                    expected=f"frame lines only after {head_text}")
        use = fr[stackish]
        owners = head[stackish]
        if len(use) == 0:
            return {}, {}
        syms = self._slices(buf, out[use], S.C_REST_S, S.C_REST_E)
        codes = self.stacks.frames.encode(syms)
        tracing = self.stacks.tracing_mask(is_tracing_frame)
        frame_names = self.stacks.frames.values
        result: dict[int, tuple[int, ...]] = {}
        named: dict[int, str] = {}
        bounds = np.flatnonzero(np.diff(owners)) + 1
        codes_list = codes.tolist()
        starts = [0, *bounds.tolist()]
        stops = [*bounds.tolist(), len(owners)]
        for a, b in zip(starts, stops, strict=True):
            owner = int(owners[a])
            first = frame_names[codes_list[a]]
            for prefix in _NAMING_FRAMES:
                if first.startswith(prefix):
                    named[owner] = first[len(prefix) :]
            while a < b and tracing[codes_list[a]]:
                a += 1
            if first.startswith("kprobe_") and a < b:
                named[owner] = _PROBE + frame_names[codes_list[a]]  # the probed function
            result[owner] = tuple(codes_list[a:b])
        return result, named
