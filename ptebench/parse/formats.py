"""Input formats: detection, and the adapters that turn every format into text lines for :class:`TextParser`.

=============  ============================================================================================
``ftrace``     the kernel's own text: ``/sys/kernel/tracing/trace``, ``trace_pipe``, ``per_cpu/cpuN/trace``
``trace-cmd``  ``trace-cmd report`` text (``version = 6`` / ``cpus=N`` preamble, event names padded,
               ``kernel_stack`` stacks, ``[EVENTS DROPPED]``, ``[FAILED TO PARSE]``)
``perf-script`` ``perf script`` text of tracepoints, with or without callchains
``systrace``   Android systrace/atrace HTML: the kernel text inside ``<script class="trace-data">`` blocks
               or the legacy ``var linuxPerfData = "\\`` string; every other line is blanked, so line
               numbers stay those of the HTML file
``trace-dat``  a trace-cmd ``trace.dat`` (magic ``\\x17\\x08Dtracing``), read through ``trace-cmd report``
               when that program is installed; line numbers are then those of the report
=============  ============================================================================================

Detection looks at the first 64 KiB of the decompressed input: magic bytes, HTML, trace-cmd's
preamble lines, the tracefs header, then the layout of the first entry lines (perf's
``comm tid [cpu] time: system:event:``, trace-cmd's padded event names).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ptebench.errors import PtebenchError
from ptebench.parse.source import CHUNK_BYTES, Source

FORMATS = ("ftrace", "trace-cmd", "perf-script", "systrace", "trace-dat")

#: trace-cmd.dat(5): "\x17\x08D" then "tracing" then the version string ("6", "7")
TRACE_DAT_MAGIC = b"\x17\x08Dtracing"
TRACE_CMD = "trace-cmd"

SNIFF_BYTES = _SNIFF_BYTES = 1 << 16
#: formats whose input is turned into text lines first (the rest is parsed as read)
TRANSFORMED = ("systrace", "trace-dat")
_PREAMBLE = re.compile(r"^(?:version = \d+|cpus=\d+|CPU \d+ is empty)\s*$")
# builtin-script.c perf_sample__fprintf_start(): "%16s %5d[/%-5d] [%03d] %5lu.%06lu: " then "%*s: " for
# the event name, which is "system:event" for tracepoints; "-F +period" adds the period before it
_PERF_LINE = re.compile(r"^\s*(?:\S.*?\s+)?\d+(?:/\d+)?\s+\[\d+\]\s+\d+\.\d+:\s+(?:\d+\s+)?[\w-]+:[\w.-]+:(?:\s|$)")
# trace_print_context() / trace-read.c: "comm-pid (tgid) [cpu] flags time: event:" -- trace-cmd pads the
# event name (libtraceevent prints it left-aligned in a fixed width), the kernel prints one space
_ENTRY_LINE = re.compile(r"-\d+\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[\d+\]\s+(?:\S+\s+)?\d+(?:\.\d+)?:\s+(?P<ev>[^\s:]+):(?P<pad> *)")


def sniff(head: bytes) -> tuple[str, str]:
    """(format, the evidence) for the first bytes of a decompressed input."""
    if head.startswith(TRACE_DAT_MAGIC):
        return "trace-dat", "trace.dat magic bytes"
    text = head[:_SNIFF_BYTES].decode("utf-8", "replace")
    start = text.lstrip()[:256].lower()
    if start.startswith(("<!doctype html", "<html")) or '<script class="trace-data"' in text \
            or "var linuxPerfData" in text:
        return "systrace", "HTML with systrace trace data"
    lines = text.split("\n")
    if len(head) > _SNIFF_BYTES:
        lines = lines[:-1]  # the last line may be cut
    for line in lines:
        if _PREAMBLE.match(line):
            return "trace-cmd", f"preamble line {line.strip()!r}"
        if line.startswith(("# tracer:", "# entries-in-buffer")):
            return "ftrace", f"tracefs header {line.strip()!r}"
    entries = 0
    for line in lines:
        if _PERF_LINE.match(line):
            return "perf-script", "perf script line layout (comm tid [cpu] time: system:event:)"
        m = _ENTRY_LINE.search(line)
        if m is None:
            continue
        if len(m["pad"]) >= 2 or m["ev"] == "kernel_stack":
            return "trace-cmd", "trace-cmd report line layout (event name padded)"
        entries += 1
    if entries:
        return "ftrace", "ftrace line layout (comm-pid [cpu] time: event: fields)"
    return "ftrace", "no known layout recognised; assuming ftrace text"


def detect(head: bytes, name: str, fmt: str | None) -> tuple[str, str]:
    """(format, evidence): ``fmt`` when given (checked), else sniffed from the first bytes."""
    if fmt is None:
        return sniff(head)
    if fmt not in FORMATS:
        raise PtebenchError(f"unknown input format {fmt!r}", expected=f"one of {', '.join(FORMATS)}")
    return fmt, "--format"


def text_chunks(chunks: Iterable[tuple[bytes, bool]], name: str, source: Source,
                fmt: str | None) -> tuple[str, str, Iterator[tuple[bytes, bool]]]:
    """Detect (unless ``fmt`` is given) and adapt one input: (format, evidence, text chunks)."""
    it = iter(chunks)
    first, at_eof = next(it)
    fmt, why = detect(first, name, fmt)

    def rest() -> Iterator[tuple[bytes, bool]]:
        yield first, at_eof
        yield from it

    if fmt == "systrace":
        return fmt, why, _systrace(rest())
    if fmt == "trace-dat":
        if not first.startswith(TRACE_DAT_MAGIC):
            raise PtebenchError("not a trace.dat file (no trace-cmd magic bytes)", file=name,
                                expected="a file starting with b'\\x17\\x08Dtracing'")
        return fmt, why, _trace_dat(rest(), name, source)
    return fmt, why, rest()


# ---------------------------------------------------------------------------------------- systrace

_SYSTRACE_START = (b'<script class="trace-data"', b"var linuxPerfData")
_SYSTRACE_END = b"</script>"
_JS_LINE_END = re.compile(rb"\\n\\$", re.M)  # legacy systrace: every line of the JS string ends in \n\


def _systrace(chunks: Iterable[tuple[bytes, bool]]) -> Iterator[tuple[bytes, bool]]:
    """Keep the trace text of systrace HTML, blank every other line (line numbers are kept).

    Blocks whose first line starts with '{' or '[' (JSON: Chrome trace events, metadata) are blanked too.
    """
    inside = False
    block_kind = ""  # "" undecided, "text", "json"
    for data, at_eof in chunks:
        if at_eof and data and not data.endswith(b"\n"):
            data += b"\n"  # an unterminated last line is still a line of the file
        out = []
        pos, n = 0, len(data)
        while pos < n:
            if not inside:
                hits = [i for i in (data.find(m, pos) for m in _SYSTRACE_START) if i >= 0]
                if not hits:
                    out.append(b"\n" * data.count(b"\n", pos))
                    break
                eol = data.find(b"\n", min(hits))
                eol = n - 1 if eol < 0 else eol
                out.append(b"\n" * data.count(b"\n", pos, eol + 1))
                pos, inside, block_kind = eol + 1, True, ""
                continue
            j = data.find(_SYSTRACE_END, pos)
            stop = n if j < 0 else data.rfind(b"\n", pos, j) + 1 or pos
            block = data[pos:stop]
            if not block_kind:
                body = block.lstrip()
                if body:
                    block_kind = "json" if body[:1] in (b"{", b"[") else "text"
            out.append(b"\n" * block.count(b"\n") if block_kind == "json" else _JS_LINE_END.sub(b"", block))
            pos = stop
            if j >= 0:
                eol = data.find(b"\n", j)
                eol = n - 1 if eol < 0 else eol
                out.append(b"\n" * data.count(b"\n", pos, eol + 1))
                pos, inside = eol + 1, False
        yield b"".join(out), at_eof


# ---------------------------------------------------------------------------------------- trace.dat


def _trace_dat(chunks: Iterable[tuple[bytes, bool]], name: str, source: Source) -> Iterator[tuple[bytes, bool]]:
    """``trace-cmd report -t`` (nanosecond timestamps) of a trace.dat, as line-aligned chunks."""
    exe = shutil.which(TRACE_CMD)
    if exe is None:
        raise PtebenchError(
            "reading a trace.dat needs the 'trace-cmd' program, which is not installed", file=name,
            expected="trace-cmd on PATH (Debian/Ubuntu package 'trace-cmd'), or the text of "
                     "'trace-cmd report -t -i FILE > trace.txt' as input")
    source.extra["converted_with"] = "trace-cmd report -t"
    with tempfile.TemporaryDirectory(prefix="ptebench-dat-") as tmp:
        path = Path(name)
        if source.compression != "none" or name == "-" or not path.is_file():
            path = Path(tmp) / "trace.dat"
            with path.open("wb") as f:
                for data, _ in chunks:
                    f.write(data)
        else:
            for _ in chunks:  # read through once for the size and sha256 of the input
                pass
        errfile = Path(tmp) / "stderr.txt"
        with errfile.open("wb") as err_out:  # a file, not a pipe: many warnings must not block the report
            proc = subprocess.Popen([exe, "report", "-t", "-i", str(path)], stdout=subprocess.PIPE, stderr=err_out)
        assert proc.stdout is not None
        carry = b""
        try:
            while True:
                block = proc.stdout.read(CHUNK_BYTES)
                if not block:
                    break
                data = carry + block
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    yield data[:cut], False
        finally:
            proc.stdout.close()
            code = proc.wait()
        err = errfile.read_bytes()
        if code != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise PtebenchError(f"'trace-cmd report' failed with exit code {code}: {' / '.join(tail)}", file=name,
                                expected="a trace.dat that trace-cmd can read")
        yield carry, True
