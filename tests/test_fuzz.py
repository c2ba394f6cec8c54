"""Property tests: real trace lines mutated by class must fail cleanly or parse, never crash.

A window of consecutive lines is cut from the real ``secretmem_64`` capture (the kernel's text) or from
its trace-cmd and perf script re-printings (``tests/fixtures/formats``); one line of it is mutated by
truncation, a bit flip, a swap of two fields, inserted binary noise, or replaced by a line of another
format.  Then, with the window's own format given:

* strict mode either succeeds or raises :class:`PtebenchError` naming the file, a line at or after the
  mutated one whose text is quoted exactly, and what was expected -- never another exception, and no
  output file is left behind;
* lenient mode always succeeds, every line lands in exactly one ``line_kinds`` bucket, the skipped
  counts by reason add up to the skipped lines, and every event line that was not mutated is still a row.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ptebench
from ptebench import PtebenchError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "formats"
SOURCES = {
    "ftrace": REPO / "traces" / "secretmem_64" / "trace.txt.xz",
    "trace-cmd": FIXTURES / "secretmem_64.trace-cmd-ns.txt.xz",
    "perf-script": FIXTURES / "secretmem_64.perf-script.txt.xz",
}
WINDOW = 24
SETTINGS = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _lines(fmt: str) -> list[bytes]:
    path = SOURCES[fmt]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return lzma.decompress(path.read_bytes()).split(b"\n")[:-1]


BASE: dict[str, list[bytes]] = {}


def base(fmt: str) -> list[bytes]:
    if fmt not in BASE:
        BASE[fmt] = _lines(fmt)
    return BASE[fmt]


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, list[bytes], int]:
    fmt = draw(st.sampled_from(sorted(SOURCES)))
    lines = base(fmt)
    start = draw(st.integers(0, len(lines) - WINDOW))
    return fmt, lines[start : start + WINDOW], draw(st.integers(0, WINDOW - 1))


def _truncate(draw: st.DrawFn, line: bytes, fmt: str) -> bytes:
    return line[: draw(st.integers(0, max(len(line) - 1, 0)))]


def _bitflip(draw: st.DrawFn, line: bytes, fmt: str) -> bytes:
    if not line:
        return b"\x80"
    k = draw(st.integers(0, len(line) - 1))
    return line[:k] + bytes([line[k] ^ (1 << draw(st.integers(0, 7)))]) + line[k + 1 :]


def _swap(draw: st.DrawFn, line: bytes, fmt: str) -> bytes:
    tokens = line.split(b" ")
    if len(tokens) < 2:
        return line + line
    a = draw(st.integers(0, len(tokens) - 1))
    b = draw(st.integers(0, len(tokens) - 1))
    if draw(st.booleans()) and b"=" in tokens[a] and b"=" in tokens[b]:  # swap values, keep keys
        ka, _, va = tokens[a].partition(b"=")
        kb, _, vb = tokens[b].partition(b"=")
        tokens[a], tokens[b] = ka + b"=" + vb, kb + b"=" + va
    else:
        tokens[a], tokens[b] = tokens[b], tokens[a]
    return b" ".join(tokens)


def _noise(draw: st.DrawFn, line: bytes, fmt: str) -> bytes:
    k = draw(st.integers(0, len(line)))
    return line[:k] + draw(st.binary(min_size=1, max_size=6)) + line[k:]


def _mixed(draw: st.DrawFn, line: bytes, fmt: str) -> bytes:
    other = draw(st.sampled_from(sorted(set(SOURCES) - {fmt})))
    lines = base(other)
    return lines[draw(st.integers(0, len(lines) - 1))]


MUTATIONS = {"truncate": _truncate, "bitflip": _bitflip, "swap": _swap, "noise": _noise, "mixed": _mixed}


@st.composite
def cases(draw: st.DrawFn, kind: str) -> tuple[str, list[bytes], int, bytes]:
    fmt, window, i = draw(windows())
    return fmt, window, i, MUTATIONS[kind](draw, window[i], fmt)


def _ingest(tmp_path: Path, name: str, data: bytes, fmt: str, lenient: bool) -> tuple[ptebench.IngestSummary, dict]:
    path = tmp_path / name
    path.write_bytes(data)
    (tmp_path / (name + ".parquet")).unlink(missing_ok=True)  # hypothesis reuses the directory
    summary = ptebench.ingest(path, tmp_path / (name + ".parquet"), fmt=fmt, lenient=lenient)
    trace = ptebench.load(tmp_path / (name + ".parquet"))
    return summary, trace.meta | {"lines_of_rows": trace.table.column("line").to_pylist()}


_CLEAN: dict[tuple[str, bytes], list[int]] = {}


def _clean_event_lines(tmp_path: Path, fmt: str, window: list[bytes]) -> list[int]:
    key = (fmt, b"\n".join(window))
    if key not in _CLEAN:
        _, meta = _ingest(tmp_path, "clean.txt", key[1] + b"\n", fmt, lenient=False)
        _CLEAN[key] = meta["lines_of_rows"]
    return _CLEAN[key]


def check(tmp_path: Path, case: tuple[str, list[bytes], int, bytes]) -> None:
    fmt, window, i, new = case
    lines = [*window[:i], new, *window[i + 1 :]]
    data = b"\n".join(lines) + b"\n"
    text_lines = data.split(b"\n")[:-1]
    extra = new.count(b"\n")  # noise may split the mutated line
    clean = _clean_event_lines(tmp_path, fmt, window)

    # strict: success, or the project error pointing at a line at or after the mutated one
    try:
        _, meta = _ingest(tmp_path, "strict.txt", data, fmt, lenient=False)
    except PtebenchError as err:
        assert err.file == str(tmp_path / "strict.txt")
        assert err.line is not None and i + 1 <= err.line <= len(text_lines), (err.line, i)
        assert err.text == text_lines[err.line - 1].decode("utf-8", "replace").rstrip("\r")
        assert err.expected
        assert not (tmp_path / "strict.txt.parquet").exists()
    else:
        assert meta["skipped"] == {}

    # lenient: never fails, and the line accounting adds up
    summary, meta = _ingest(tmp_path, "lenient.txt", data, fmt, lenient=True)
    kinds = meta["line_kinds"]
    assert sum(kinds.values()) == len(text_lines)
    assert kinds.get("event", 0) == summary.rows == len(meta["lines_of_rows"])
    assert kinds.get("skipped", 0) == sum(summary.skipped.values())
    moved = {line if line <= i else line + extra for line in clean if line != i + 1}
    rows = set(meta["lines_of_rows"])
    assert moved <= rows
    assert rows - moved <= set(range(i + 1, i + 2 + extra))


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_mutated_real_lines(kind: str, tmp_path: Path) -> None:
    @SETTINGS
    @given(cases(kind))
    def run(case: tuple[str, list[bytes], int, bytes]) -> None:
        check(tmp_path, case)

    run()


@SETTINGS
@given(st.binary(max_size=300))
def test_binary_noise_files(tmp_path_factory: pytest.TempPathFactory, noise: bytes) -> None:
    """Any bytes at all, with the format detected: a result or the project error, nothing else."""
    tmp = tmp_path_factory.mktemp("noise")
    path = tmp / "noise.bin"
    path.write_bytes(noise)
    try:
        ptebench.ingest(path, tmp / "o.parquet")
    except PtebenchError as err:
        assert err.file == str(path) and err.expected
        if err.line is not None:
            assert err.text is not None
    # a corrupt or truncated compressed stream is an error in lenient mode too (README: "Bad input"): the noise
    # may start with a compressor's magic bytes
    compressed = noise.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"))
    try:
        summary = ptebench.ingest(path, tmp / "l.parquet", lenient=True) if not noise.startswith(b"\x17\x08D") else None
    except PtebenchError as err:
        assert compressed and err.file == str(path), err
        summary = None
    if summary is not None:
        meta = ptebench.load(tmp / "l.parquet").meta
        assert sum(meta["line_kinds"].values()) == noise.count(b"\n") + (0 if noise.endswith(b"\n") or not noise else 1)


# values at the edges of the columns' types: each is the project error in strict mode, a skip in lenient
_PREFIX = "              sh-10      [000] .....   100.000001: "
EDGES = [
    (_PREFIX + "mm_page_free: page=0000000011112222 pfn=99999999999999999999 order=0", "bad_fields:mm_page_free",
     "'pfn=<integer>'"),
    (_PREFIX + "mm_page_free: page=0000000011112222 pfn=0x1ffffffffffffffff order=0", "bad_fields:mm_page_free",
     "'pfn=<integer>'"),
    (_PREFIX + "mm_page_free: page=0000000011112222 pfn=0x10 order=300", "bad_fields:mm_page_free",
     "'order=<integer -128..127>'"),
    (_PREFIX + "mm_page_free: page=0000000011112222 pfn=-2 order=0", "bad_fields:mm_page_free",
     "'pfn=<integer -1..4503599627370495>'"),
    ("              sh-10      [000] .....   9223372036.000001: mm_page_free: page=0 pfn=0x1 order=0",
     "malformed_line", "timestamp"),
    ("              sh-1234567890 [000] .....   100.000001: mm_page_free: page=0 pfn=0x1 order=0", "malformed_line",
     "ftrace line"),
    ("              sh-10      [12345] .....   100.000001: mm_page_free: page=0 pfn=0x1 order=0", "malformed_line",
     "ftrace line"),
]


@pytest.mark.parametrize(("line", "reason", "expected"), EDGES)
def test_numeric_edges(line: str, reason: str, expected: str, tmp_path: Path) -> None:
    good = _PREFIX + "mm_page_free: page=0000000011112222 pfn=0x7 order=1"
    data = f"{good}\n{line}\n{good}\n".encode()
    with pytest.raises(PtebenchError) as info:
        _ingest(tmp_path, "edge.txt", data, "ftrace", lenient=False)
    assert (info.value.line, info.value.text) == (2, line)
    assert expected in info.value.expected
    summary, meta = _ingest(tmp_path, "edge.txt", data, "ftrace", lenient=True)
    assert (summary.rows, summary.skipped) == (2, {reason: 1})
    assert meta["lines_of_rows"] == [1, 3]


def test_raw_minus_one_pfn_is_a_failed_allocation(tmp_path: Path) -> None:
    line = _PREFIX + "mm_page_alloc: pfn=0xffffffffffffffff order=0 gfp_flags=0xcc0 migratetype=0"
    summary, _ = _ingest(tmp_path, "raw.txt", (line + "\n").encode(), "ftrace", lenient=False)
    trace = ptebench.load(tmp_path / "raw.txt.parquet")
    assert trace.table.select(["pfn", "failed", "gfp_mask"]).to_pylist() == [
        {"pfn": None, "failed": True, "gfp_mask": 0xCC0}]
