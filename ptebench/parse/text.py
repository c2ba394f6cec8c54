"""The kernel's ftrace text (``trace``, ``trace_pipe``, per-CPU files) into event columns.

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
from ptebench.parse.events import BOOL_COLUMNS, INT_COLUMNS, KMEM_EVENTS, is_tracing_frame
from ptebench.parse.stacks import Interner, StackTable

NULL_INT = np.iinfo(np.int64).min  # "no value" in int columns until they become Arrow arrays
_POW10 = np.array([10**k for k in range(10)], dtype=np.int64)

_LOST_RE = re.compile(r"^CPU:(\d+) \[LOST (?:(\d+) )?EVENTS\]\s*$")
_DROPPED_RE = re.compile(r"^CPU:(\d+) \[(?:(\d+) )?EVENTS DROPPED\]\s*$")
_STARTED_RE = re.compile(r"^#{5} CPU (\d+) buffer started #{4}\s*$")
_LOSS_MARKERS = (("lost", _LOST_RE), ("dropped", _DROPPED_RE), ("buffer_started", _STARTED_RE))
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: (\d+)/(\d+)\s+#P:(\d+)")

_EXPECT_PREFIX = {
    S.E_PREFIX: 'an ftrace line "comm-pid [cpu] flags timestamp: event: fields"',
    S.E_TIMESTAMP: 'a timestamp "seconds.fraction:" after "[cpu]" and the optional irq-info flags',
    S.E_EVENT: 'an event name followed by ":" after the timestamp',
}

#: first stack frames that name the event the stack was recorded for
_NAMING_FRAMES = ("trace_event_raw_event_", "perf_trace_")

_PROBE = "probe:"
_PROBE_RE = re.compile(rb"^\((\w+)\+0x[0-9a-f]+/0x[0-9a-f]+\)")

_KIND_NAMES = {S.V_PTR: "<pointer>", S.V_INT: "<integer>", S.V_STR: "<flags>"}


def _field_spec(event: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fields = KMEM_EVENTS[event]
    keys = b"".join(f.key.encode() for f in fields)
    offs = np.cumsum([0] + [len(f.key) for f in fields]).astype(np.int64)
    kinds = np.array([f.kind for f in fields], dtype=np.int64)
    return np.frombuffer(keys, dtype=np.uint8), offs, kinds


_SPECS = {name: _field_spec(name) for name in KMEM_EVENTS}


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
    cpus: set[int] = field(default_factory=set)


class TextParser:
    """Parse ftrace text chunk by chunk into column dicts ready for a run file."""

    def __init__(self, *, lenient: bool = False) -> None:
        self.lenient = lenient
        self.seq = 0
        self.stats = ParseStats()
        self.names = {"comm": Interner(), "lat_flags": Interner(), "event": Interner(), "gfp": Interner()}
        self.stacks = StackTable()
        self.last_event: dict[tuple[int, int | None], list[int]] = {}  # ((cpu<<32|pid), event|None) -> [seq, has_stack, event]
        self.last_ts_cpu: dict[int, int] = {}
        self.probe_code: dict[str, int] = {}  # probed function -> event code
        self.probe_seen: set[int] = set()
        self.last_ts = 0
        self.patches: list[tuple[int, int]] = []  # (seq, stack_id) for owners in earlier chunks
        self.src = 0
        self.file = ""
        self.line0 = 0  # lines of the current source consumed so far

    # ------------------------------------------------------------------ per source
    def start_source(self, src: int, name: str) -> None:
        self.src, self.file, self.line0 = src, name, 0

    def _fail(self, line: int, text: str, message: str, expected: str) -> None:
        raise PtebenchError(message, file=self.file, line=line, text=text, expected=expected)

    # ------------------------------------------------------------------ per chunk
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
        S.scan_lines(buf, starts, ends, out)
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
            kind[-1] = S.K_BLANK
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
                out[i, S.C_KIND] = S.K_BLANK
                pos = int(ends[i]) + 1

    def _text(self, data: bytes, starts: np.ndarray, ends: np.ndarray, i: int) -> str:
        return data[starts[i] : ends[i]].decode("utf-8", "replace").rstrip("\r")

    def _bad_line(self, data, starts, ends, i: int, message: str, expected: str, reason: str) -> None:
        if not self.lenient:
            self._fail(self.line0 + i + 1, self._text(data, starts, ends, i), message, expected)
        self.stats.skipped[reason] += 1

    def _rare_lines(self, data: bytes, out: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Headers, markers and malformed lines: few, so handled one by one."""
        kind = out[:, S.C_KIND]
        for i in np.flatnonzero((kind == S.K_COMMENT) | (kind == S.K_MARKER) | (kind == S.K_BAD)):
            text = self._text(data, starts, ends, int(i))
            k = kind[i]
            line = self.line0 + int(i) + 1
            if k == S.K_BAD:
                self._bad_line(data, starts, ends, int(i), "malformed trace line", _EXPECT_PREFIX[int(out[i, S.C_ERR])],
                               "malformed_line")
                out[i, S.C_KIND] = S.K_BLANK
                continue
            kind_name, m = next(((name, m) for name, rx in _LOSS_MARKERS if (m := rx.match(text))), ("", None))
            if m:
                count = m.group(2) if m.re.groups > 1 else None
                self.stats.losses.append({
                    "kind": kind_name, "cpu": int(m.group(1)), "count": int(count) if count else None,
                    "src": self.src, "line": line, "after_ts_ns": self.last_ts, "after_seq": self.seq - 1,
                })
                self._chunk_losses.append((len(self.stats.losses) - 1, int(i)))
                continue
            if k == S.K_MARKER:
                self._bad_line(data, starts, ends, int(i), "unknown marker line",
                               '"CPU:N [LOST M EVENTS]" or "CPU:N [M EVENTS DROPPED]"', "unknown_marker")
                continue
            m = _ENTRIES_RE.match(text)
            if m:
                in_buf, written, ncpu = (int(g) for g in m.groups())
                self.stats.headers.append({"src": self.src, "entries_in_buffer": in_buf,
                                           "entries_written": written, "cpus": ncpu})
                if in_buf < written:
                    self.stats.losses.append({"kind": "overwritten", "cpu": None, "count": written - in_buf,
                                              "src": self.src, "line": line, "after_ts_ns": None, "after_seq": None})

    def _events(self, data, buf, out, starts, ends) -> dict[str, np.ndarray | pa.Array] | None:
        self._chunk_losses: list[tuple[int, int]] = []
        self._rare_lines(data, out, starts, ends)
        kind = out[:, S.C_KIND]
        ev_lines = np.flatnonzero(kind == S.K_EVENT)
        n = len(ev_lines)
        rows = out[ev_lines]
        seq = self.seq + np.arange(n, dtype=np.int64)  # skipped lines keep their place: gaps in lenient mode
        self.seq += n
        keep = np.ones(n, dtype=bool)
        # -------- names
        ev_code = self.names["event"].encode(self._slices(buf, rows, S.C_EV_S, S.C_EV_E))
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
            spec = KMEM_EVENTS.get(name)
            if spec is None:
                continue
            sel = np.flatnonzero(ev_code == code)
            generic[sel] = False
            self._kmem_fields(data, buf, name, spec, sel, rows, ev_lines, starts, ends, cols, keep,
                              gfp_s, gfp_e, has_gfp)
        self._learn_probes(data, rows, ev_code, generic)
        # -------- stacks (before dropping skipped rows, so a skipped event still owns its stack)
        stack_id = self._attach_stacks(buf, out, ev_lines, rows, seq, ev_code)
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
        if n == 0:
            return None
        for li, local in self._chunk_losses:  # position: the last event before the marker line
            k = int(np.searchsorted(ev_lines, local)) - 1
            if k >= 0:
                self.stats.losses[li]["after_ts_ns"] = int(ts[k])
                self.stats.losses[li]["after_seq"] = int(seq[k])
        cpu = rows[:, S.C_CPU]
        self._count_inversions(cpu, ts)
        self.last_ts = int(ts[-1])
        tgid = rows[:, S.C_TGID]
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

    def _kmem_fields(self, data, buf, name, spec, sel, rows, ev_lines, starts, ends, cols, keep,
                     gfp_s, gfp_e, has_gfp) -> None:
        keys, offs, kinds = _SPECS[name]
        m = len(sel)
        vals = np.zeros((m, len(kinds)), dtype=np.int64)
        str_s = np.zeros(m, dtype=np.int64)
        str_e = np.zeros(m, dtype=np.int64)
        isnull = np.zeros(m, dtype=np.bool_)
        err = np.zeros(m, dtype=np.int64)
        S.scan_fields(buf, np.ascontiguousarray(sel), np.ascontiguousarray(rows[:, S.C_REST_S]),
                      np.ascontiguousarray(rows[:, S.C_REST_E]), keys, offs, kinds, vals, str_s, str_e, isnull, err)
        bad = np.flatnonzero(err >= 0)
        if len(bad):
            if not self.lenient:
                r = int(bad[0])
                k = int(err[r])
                want = " ".join(f"{f.key}={_KIND_NAMES[f.kind]}" for f in spec)
                where = f"'{spec[k].key}={_KIND_NAMES[spec[k].kind]}'" if k < len(spec) else "end of line"
                line = int(ev_lines[sel[r]])
                self._fail(self.line0 + line + 1, self._text(data, starts, ends, line),
                           f"{name} fields do not fit its format", f"{where} in '{want}'")
            self.stats.skipped[f"bad_fields:{name}"] += len(bad)
            keep[sel[bad]] = False
        for k, f in enumerate(spec):
            if f.column is None:
                continue
            if f.kind == S.V_STR:
                gfp_s[sel], gfp_e[sel], has_gfp[sel] = str_s, str_e, True
            elif f.column in INT_COLUMNS:
                cols[f.column][sel] = vals[:, k]
            else:
                cols[f.column][sel] = vals[:, k] != 0
        self._note_radix(buf, rows[sel, S.C_REST_S])
        if name == "mm_page_alloc":
            pfn = vals[:, 1]
            failed = isnull | (pfn == 0)
            cols["failed"][sel] = failed
            cols["pfn"][sel] = np.where(failed, NULL_INT, pfn)

    def _note_radix(self, buf: np.ndarray, rest_s: np.ndarray) -> None:
        """Record how pfns are printed ("pfn=0x%lx" since 5.14, "pfn=%lu" before); first row per chunk."""
        text = bytes(buf[rest_s[0] : rest_s[0] + 64])
        m = re.search(rb"pfn=(0x)?", text)
        if m:
            self.stats.pfn_radix.add("hex" if m.group(1) else "dec")

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

        for k, i in self._last_index(key).items():
            self.last_event[(k, None)] = record(i)
        for kc, i in self._last_index(key * ncodes + ev_code).items():
            self.last_event[(kc // ncodes, kc % ncodes)] = record(i)

    @staticmethod
    def _last_index(key: np.ndarray) -> dict[int, int]:
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
        stray = ~orphan & ~user & (head_kind != S.K_STACK)
        if stray.any():
            i = int(fr[np.flatnonzero(stray)[0]])
            self.stats.warnings["frames_after_non_stack_entry"] += int(stray.sum())
            if not self.lenient:
                raise PtebenchError("a stack frame follows a line that is not a <stack trace> entry",
                                    file=self.file, line=self.line0 + i + 1,
                                    expected="' => frame' lines only after a '<stack trace>' entry")
        use = fr[head_kind == S.K_STACK]
        owners = head[head_kind == S.K_STACK]
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
