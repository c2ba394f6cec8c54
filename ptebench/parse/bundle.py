"""Capture bundles: a trace plus the kernel's own accounting around it.

A bundle is a directory holding one trace file (one of :data:`TRACE_NAMES`) and
snapshots named ``KIND-SNAP.txt`` (KIND is vmstat, meminfo, buddyinfo or dmdump;
SNAP is ``before``, ``after``, ``phase1-forkexec``, ``after-dmdump-insmod``, ...),
plus context files (``meta.json``, ``uname.txt``, ``dmesg.txt``, ``iomem.txt``, ...).
:func:`read_bundle` parses everything except the trace into plain JSON-able data.

Every parser is strict: a line it does not understand raises :class:`PtebenchError`
naming the file, the 1-based line, the text and what was expected there.  All
numbers are parsed as ints.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ptebench.errors import PtebenchError

TRACE_NAMES = (
    "trace.txt",
    "trace.txt.xz",
    "trace.txt.gz",
    "trace.txt.zst",
    "trace",
    "trace.xz",
    "trace.gz",
    "trace.zst",
)

#: Bytes per entry of each direct-map level.  "none" is an unmapped hole (dmdump prints
#: it as ``--`` and steps it in 2M units; ptdump holes at pgd/p4d level are counted the same way).
LEVEL_SIZE = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30, "none": 1 << 21}
_TOTAL_KEY = {"4K": "DirectMap4k", "2M": "DirectMap2M", "1G": "DirectMap1G"}
_REGIONS_KEY = "2M-regions-mapped-by-4K"

_VMSTAT = re.compile(r"([A-Za-z0-9_]+)\s+(-?\d+)\s*")
_MEMINFO = re.compile(r"([^\s:][^:]*?):\s+(-?\d+)(?: kB)?\s*")
_BUDDY = re.compile(r"Node\s+(\d+),\s+zone\s+(\S+)((?:\s+\d+)+)\s*")
_IOMEM = re.compile(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)")
_FWMAP = re.compile(r"0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*?)\s*")
_DMESG_INIT = re.compile(r"\[\s*(\d+)\.(\d{1,9})\].*\bRun \S+ as init process")
_DM_HEADER = re.compile(r"# dmdump PAGE_OFFSET=0x([0-9a-f]+) high_memory=0x([0-9a-f]+)\s*")
_DM_TOTAL = re.compile(r"# (DirectMap4k|DirectMap2M|DirectMap1G): (\d+) kB\s*|# (2M-regions-mapped-by-4K): (\d+)\s*")
_DM_RUN = re.compile(
    r"0x(?P<vs>[0-9a-f]+)-0x(?P<ve>[0-9a-f]+)\s+phys\s+0x(?P<ps>[0-9a-f]+)-0x(?P<pe>[0-9a-f]+)\s+"
    r"(?P<n>\d+) x (?P<lvl>4K|2M|1G|--)\s+(?P<p>P|np)\s+(?P<rw>RW|ro)\s+(?P<nx>NX|x)(?:\s+(?P<g>GLB))?\s*"
)
_PT_MARKER = re.compile(r"---\[ (.*) \]---\s*")
_PT_RUN = re.compile(
    r"0x(?P<s>[0-9a-f]+)-0x(?P<e>[0-9a-f]+)\s+(?P<size>\d+)(?P<unit>[BKMGTPE])\s+"
    r"(?P<flags>(?:[A-Za-z]+\s+)*?)(?P<lvl>pgd|p4d|pud|pmd|pte)\s*"
)
_PT_UNIT = {u: 1 << (10 * i) for i, u in enumerate("BKMGTPE")}
_PT_LEVEL = {"pte": "4K", "pmd": "2M", "pud": "1G", "p4d": "none", "pgd": "none"}
_PT_FLAGS = frozenset({"USR", "RW", "ro", "PWT", "PCD", "PSE", "PAT", "pat", "GLB", "NX", "x"})
_SNAPSHOT_NAME = re.compile(r"(vmstat|meminfo|buddyinfo|dmdump)-(.+)\.txt")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) for every non-blank line, numbering as an editor would."""
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _bad(file: str, number: int, line: str, expected: str, message: str = "malformed line") -> PtebenchError:
    return PtebenchError(message, file=file, line=number, text=line, expected=expected)


def parse_vmstat(text: str, *, file: str = "vmstat") -> dict[str, int]:
    """Parse ``/proc/vmstat`` (``name value`` per line) into ``{name: value}``."""
    out: dict[str, int] = {}
    for number, line in _lines(text):
        m = _VMSTAT.fullmatch(line)
        if m is None:
            raise _bad(file, number, line, "'<counter> <integer>'")
        if m[1] in out:
            raise _bad(file, number, line, "each counter once", f"duplicate counter {m[1]!r}")
        out[m[1]] = int(m[2])
    return out


def parse_meminfo(text: str, *, file: str = "meminfo") -> dict[str, int]:
    """Parse ``/proc/meminfo`` into ``{key: number as printed}`` (kB where the line says kB)."""
    out: dict[str, int] = {}
    for number, line in _lines(text):
        m = _MEMINFO.fullmatch(line)
        if m is None:
            raise _bad(file, number, line, "'<Key>: <integer> [kB]'")
        if m[1] in out:
            raise _bad(file, number, line, "each key once", f"duplicate key {m[1]!r}")
        out[m[1]] = int(m[2])
    return out


def parse_buddyinfo(text: str, *, file: str = "buddyinfo") -> list[dict]:
    """Parse ``/proc/buddyinfo`` into ``[{"node", "zone", "free": [count per order, from 0]}]`` in file order."""
    out: list[dict] = []
    for number, line in _lines(text):
        m = _BUDDY.fullmatch(line)
        if m is None:
            raise _bad(file, number, line, "'Node <n>, zone <name> <count per order>...'")
        out.append({"node": int(m[1]), "zone": m[2], "free": [int(v) for v in m[3].split()]})
    return out


def _run(
    file: str, number: int, line: str, start: int, end: int, level: str, count: int, flags: dict[str, bool]
) -> dict:
    """Build one direct-map run after checking that its range, level and count agree."""
    if end <= start:
        raise _bad(file, number, line, "start < end", "empty or reversed range")
    if (end - start) != count * LEVEL_SIZE[level]:
        raise _bad(file, number, line, f"count x {level} == end - start ({end - start:#x} bytes)", "count mismatch")
    if level == "none" and flags["present"]:
        raise _bad(file, number, line, "a present run to have a 4K/2M/1G level", "present run without a level")
    return {"phys_start": start, "phys_end": end, "level": level, "count": count, **flags}


def _summarise(
    fmt: str, page_offset: int | None, high_memory: int | None, runs: list[dict], declared: dict[str, int], file: str
) -> dict:
    """Compute totals and 4K-mapped 2M regions from the runs; check them against a dmdump's '#' lines."""
    totals = dict.fromkeys(_TOTAL_KEY.values(), 0)
    regions: set[int] = set()
    for run in runs:
        if run["level"] == "4K":  # a 4K run, present or not, means the region has a page table
            regions.update(range(run["phys_start"] >> 21, ((run["phys_end"] - 1) >> 21) + 1))
        if run["present"]:
            totals[_TOTAL_KEY[run["level"]]] += (run["phys_end"] - run["phys_start"]) >> 10
    if fmt == "dmdump":
        for key, value in [*totals.items(), (_REGIONS_KEY, len(regions))]:
            if key not in declared:
                raise PtebenchError(f"dmdump has no '# {key}' total line (truncated?)", file=file)
            if declared[key] != value:
                raise PtebenchError(
                    f"declared '# {key}: {declared[key]}' disagrees with the runs, which give {value}", file=file
                )
    return {
        "format": fmt,
        "page_offset": page_offset,
        "high_memory": high_memory,
        "runs": runs,
        "totals_kB": totals,
        "declared": declared,
        "regions_2m_on_4k": sorted(regions),
    }


def parse_dmdump(text: str, *, file: str = "dmdump") -> dict:
    """Parse the tracegen ``dmdump`` module's walk of the direct map (format in traces/README.md).

    Unmapped holes (level ``--``) become runs with level ``"none"`` and ``present=False``.
    The '#' totals must match the runs, else :class:`PtebenchError`.
    """
    page_offset = high_memory = None
    runs: list[dict] = []
    declared: dict[str, int] = {}
    for number, line in _lines(text):
        if (m := _DM_HEADER.fullmatch(line)) is not None:
            page_offset, high_memory = int(m[1], 16), int(m[2], 16)
        elif (m := _DM_TOTAL.fullmatch(line)) is not None:
            declared[m[1] or m[3]] = int(m[2] or m[4])
        elif (m := _DM_RUN.fullmatch(line)) is not None:
            start, end = int(m["ps"], 16), int(m["pe"], 16)
            if page_offset is not None and int(m["vs"], 16) - page_offset != start:
                raise _bad(file, number, line, "virtual - PAGE_OFFSET == physical", "inconsistent addresses")
            level = "none" if m["lvl"] == "--" else m["lvl"]
            flags = {"present": m["p"] == "P", "rw": m["rw"] == "RW", "nx": m["nx"] == "NX", "global": bool(m["g"])}
            runs.append(_run(file, number, line, start, end, level, int(m["n"]), flags))
        else:
            raise _bad(
                file, number, line, "'0x<va>-0x<va> phys 0x<pa>-0x<pa> <n> x <4K|2M|1G|--> <P|np> ...' or '# ...'"
            )
    return _summarise("dmdump", page_offset, high_memory, runs, declared, file)


def parse_ptdump(text: str, *, file: str = "ptdump") -> dict:
    """Parse the direct-map section of ``/sys/kernel/debug/page_tables/kernel`` (x86, dump_pagetables.c).

    Only the ``---[ Low Kernel Mapping ]---`` section is read; other sections are skipped
    unparsed.  That section starts at PAGE_OFFSET, so its first address is taken as
    ``page_offset`` and physical = virtual - page_offset.  ``high_memory`` is unknown (None)
    and ``declared`` is empty.  A run with neither ``RW`` nor ``ro`` is not present: it is
    kept with ``present=False`` and left out of the totals.  Non-present holes at pgd/p4d
    level get level ``"none"`` with count = size / 2M.
    """
    page_offset: int | None = None
    runs: list[dict] = []
    inside = seen = False
    for number, line in _lines(text):
        if (m := _PT_MARKER.fullmatch(line)) is not None:
            inside = m[1] == "Low Kernel Mapping"
            seen = seen or inside
            continue
        if not inside:
            continue
        m = _PT_RUN.fullmatch(line)
        if m is None:
            raise _bad(file, number, line, "'0x<start>-0x<end> <size><unit> <flags> <pgd|p4d|pud|pmd|pte>'")
        start, end = int(m["s"], 16), int(m["e"], 16)
        tokens = m["flags"].split()
        if unknown := [t for t in tokens if t not in _PT_FLAGS]:
            raise _bad(file, number, line, f"flags among {sorted(_PT_FLAGS)}", f"unknown flags {unknown}")
        if int(m["size"]) * _PT_UNIT[m["unit"]] != end - start:
            raise _bad(file, number, line, f"size column == end - start ({end - start:#x} bytes)", "size mismatch")
        if page_offset is None:
            page_offset = start
        level = _PT_LEVEL[m["lvl"]]
        present = "RW" in tokens or "ro" in tokens
        flags = {"present": present, "rw": "RW" in tokens, "nx": "NX" in tokens, "global": "GLB" in tokens}
        count = (end - start) // LEVEL_SIZE[level]
        runs.append(_run(file, number, line, start - page_offset, end - page_offset, level, count, flags))
    if not seen:
        raise PtebenchError("no '---[ Low Kernel Mapping ]---' section", file=file, expected="an x86_64 kernel ptdump")
    return _summarise("ptdump", page_offset, None, runs, {}, file)


def parse_direct_map_dump(text: str, *, file: str = "dump") -> dict:
    """Parse a direct-map dump, telling a dmdump walk from a kernel ptdump by its content."""
    for _, line in _lines(text):
        if line.startswith("# dmdump") or _DM_RUN.fullmatch(line):
            return parse_dmdump(text, file=file)
        if _PT_MARKER.fullmatch(line):
            return parse_ptdump(text, file=file)
    raise PtebenchError(
        "not a direct-map dump",
        file=file,
        expected="a dmdump walk ('# dmdump ...') or a kernel ptdump ('---[ ... ]---')",
    )


def parse_iomem(text: str, *, file: str = "iomem") -> list[dict]:
    """Parse ``/proc/iomem`` into ``[{"start", "end" (inclusive), "name", "depth"}]``; depth is indent / 2."""
    out: list[dict] = []
    for number, line in _lines(text):
        m = _IOMEM.fullmatch(line)
        if m is None or len(m[1]) % 2:
            raise _bad(file, number, line, "'<2n spaces><hex>-<hex> : <name>'")
        out.append({"start": int(m[2], 16), "end": int(m[3], 16), "name": m[4], "depth": len(m[1]) // 2})
    return out


def parse_firmware_memmap(text: str, *, file: str = "firmware-memmap") -> list[dict]:
    """Parse ``0x<start> 0x<end> <type>`` lines (``/sys/firmware/memmap``; end inclusive as printed)."""
    out: list[dict] = []
    for number, line in _lines(text):
        m = _FWMAP.fullmatch(line)
        if m is None:
            raise _bad(file, number, line, "'0x<start> 0x<end> <type>'")
        out.append({"start": int(m[1], 16), "end": int(m[2], 16), "type": m[3]})
    return out


def parse_dmesg_running_ns(text: str) -> int | None:
    """Timestamp (ns) of dmesg's ``Run /init as init process`` line, just after SYSTEM_RUNNING.

    Any ``Run <path> as init process`` line counts (e.g. /sbin/init).  None when there is
    no such line or it carries no ``[seconds.fraction]`` timestamp.
    """
    for line in text.splitlines():
        if (m := _DMESG_INIT.search(line)) is not None:
            return int(m[1]) * 1_000_000_000 + int(m[2].ljust(9, "0"))
    return None


def is_bundle(path: Path) -> bool:
    """True when ``path`` is a directory holding one of :data:`TRACE_NAMES`."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in TRACE_NAMES)


def bundle_trace_file(path: Path) -> Path:
    """The trace file inside a bundle directory (first of :data:`TRACE_NAMES` found); PtebenchError if none."""
    path = Path(path)
    if not path.is_dir():
        raise PtebenchError("not a capture bundle directory", file=str(path))
    for name in TRACE_NAMES:
        if (path / name).is_file():
            return path / name
    raise PtebenchError("capture bundle holds no trace file", file=str(path), expected=" or ".join(TRACE_NAMES))


def _read_text(path: Path, *, lenient: bool = False) -> str:
    """Read a UTF-8 text file; unreadable or undecodable files raise PtebenchError (``lenient`` replaces bad bytes)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace" if lenient else "strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise PtebenchError(f"cannot read: {exc}", file=str(path)) from exc


def _file_info(path: Path) -> dict:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise PtebenchError(f"cannot read: {exc}", file=str(path)) from exc
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _parse_json(path: Path) -> object:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        line = text.split("\n")[exc.lineno - 1]
        raise PtebenchError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno, text=line) from exc


def _kernel_release(path: Path) -> str:
    text = _read_text(path)
    fields = text.split()
    if len(fields) < 3:
        raise PtebenchError("uname output too short", file=str(path), line=1, text=text.strip(), expected="'uname -a'")
    return fields[2]


_SNAPSHOT_PARSERS: dict[str, Callable[..., object]] = {
    "vmstat": parse_vmstat,
    "meminfo": parse_meminfo,
    "buddyinfo": parse_buddyinfo,
    "dmdump": parse_direct_map_dump,
}


def read_bundle(path: Path) -> dict:
    """Everything in the bundle except the trace, as a JSON-serialisable dict (ints, strs, lists, dicts only).

    Keys: name, meta, kernel_release, cmdline, snapshots {SNAP: {vmstat?, meminfo?, buddyinfo?,
    dmdump?}}, memmap {iomem, firmware}, system_running_ns, trace_stats, files {name: {size, sha256}}.
    Context files that are absent give None.
    """
    path = Path(path)
    trace = bundle_trace_file(path)
    files: dict[str, dict] = {}
    snapshots: dict[str, dict] = {}
    for entry in sorted(path.iterdir()):
        if entry == trace or not entry.is_file():
            continue
        files[entry.name] = _file_info(entry)
        if (m := _SNAPSHOT_NAME.fullmatch(entry.name)) is not None:
            snapshots.setdefault(m[2], {})[m[1]] = _SNAPSHOT_PARSERS[m[1]](_read_text(entry), file=str(entry))

    def optional(name: str, parse: Callable[[Path], object]) -> object:
        return parse(path / name) if (path / name).is_file() else None

    return {
        "name": path.resolve().name,
        "meta": optional("meta.json", _parse_json),
        "kernel_release": optional("uname.txt", _kernel_release),
        "cmdline": optional("cmdline.txt", lambda p: _read_text(p).strip()),
        "snapshots": snapshots,
        "memmap": {
            "iomem": optional("iomem.txt", lambda p: parse_iomem(_read_text(p), file=str(p))),
            "firmware": optional("firmware-memmap.txt", lambda p: parse_firmware_memmap(_read_text(p), file=str(p))),
        },
        "system_running_ns": optional("dmesg.txt", lambda p: parse_dmesg_running_ns(_read_text(p, lenient=True))),
        "trace_stats": optional("trace-stats.txt", _read_text),
        "files": files,
    }
