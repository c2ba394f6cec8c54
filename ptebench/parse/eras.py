"""Kernel eras: event ``format`` files, gfp flag tables, migratetype numbering, pfn radix.

What a kmem line means depends on the kernel that printed it:

* **pfn radix**: ``pfn=%lu`` before 5.14, ``pfn=0x%lx`` since ("mm, tracing: Unify PFN format
  strings", Vincent Whitchurch, 2021).  The scanner reads both (``0x`` says which).
* **gfp names and bits**: ``show_gfp_flags()`` prints the names of a table in order
  (include/trace/events/gfpflags.h until 4.5, names without ``__`` and ``GFP_NOWAIT`` for a zero
  mask; include/trace/events/mmflags.h since 4.6, ``__GFP_*`` bits and ``none``).  Bit values
  moved many times (4.4 ``__GFP_WAIT`` -> ``__GFP_RECLAIM``, 4.15 ``__GFP_COLD``/``__GFP_NOTRACK``
  removed, 6.3 ``__GFP_ATOMIC`` removed, 6.10 bits generated from an enum), so a printed name is
  decoded with the table of the kernel that printed it.
* **migratetype numbers**: before 4.4 ``0 Unmovable, 1 Reclaimable, 2 Movable, 3 Reserve``; since
  4.4 ``0 Unmovable, 1 Movable, 2 Reclaimable, 3 HighAtomic`` (Mel Gorman, "mm, page_alloc: Use
  masks and shifts when converting GFP flags to migrate types", include/linux/mmzone.h).

The kernel's own ``events/kmem/<event>/format`` files settle all three: the ``print fmt`` gives the
printed field list and the pfn conversion, its ``__print_flags`` list is the gfp table (each value an
expression of constants, evaluated here without ``eval``), and a table with ``GFP_WAIT`` is from
before 4.4.  Without them a ``--kernel-version`` (or the bundle's ``uname``) picks a built-in table;
failing that the era is inferred from what the text shows, and the metadata says so.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

from ptebench.errors import PtebenchError
from ptebench.parse._scan import V_INT, V_PTR, V_STR
from ptebench.parse.events import BOOL_COLUMNS, INT_COLUMNS, KMEM_EVENTS, Field
from ptebench.parse.gfp import GFP_TABLE_6_1

# ---------------------------------------------------------------------------------------- gfp tables


class GfpTable:
    """A ``__print_flags`` table: (name, mask) in print order, and the word printed for a zero mask."""

    def __init__(self, table_id: str, entries: list[tuple[str, int]] | tuple[tuple[str, int], ...], zero: str,
                 source: str) -> None:
        self.id = table_id
        self.entries = tuple(entries)
        self.zero = zero
        self.source = source
        self._where: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(self.entries):
            self._where.setdefault(name, []).append(i)

    def render(self, mask: int) -> str:
        """The string the kernel prints (kernel/trace/trace_output.c ``trace_print_flags_seq()``):
        every entry whose bits are all still set is printed and its bits cleared -- a zero-valued
        entry prints whenever bits remain -- and leftover bits follow as ``0x%lx``."""
        if mask == 0:
            return self.zero
        parts = []
        for name, value in self.entries:
            if not mask:
                break
            if mask & value == value:
                parts.append(name)
                mask &= ~value
        if mask:
            parts.append(f"{mask:#x}")
        return "|".join(parts)

    def mask(self, text: str) -> int | None:
        """The mask of a printed string; None when a name is not in the table.

        Names are matched in table order (the kernel prints them that way), so a name listed twice
        (4.4 prints ``GFP_ATOMIC`` for the composite and for ``__GFP_ATOMIC``) resolves to the entry
        whose rendering gives back ``text``.  A trailing ``0x...`` holds leftover bits; a whole
        numeric mask (user-space tools on 6.10-6.12, or a decimal raw field) is taken as is.
        """
        if text == self.zero:
            return 0
        if _DECIMAL.match(text):
            value = int(text)
            return value if value < 1 << 64 else None
        parts = text.split("|")
        leftover = 0
        if parts[-1].startswith("0x"):
            if not _HEX.match(parts[-1]):
                return None
            leftover = int(parts.pop(), 16)
        if any(p not in self._where for p in parts):
            return None
        first: int | None = None
        stack: list[tuple[int, int, int]] = [(0, 0, 0)]  # (part index, next table index, mask so far)
        while stack:
            i, start, acc = stack.pop()
            if i == len(parts):
                if self.render(acc | leftover) == text:
                    return acc | leftover
                first = acc | leftover if first is None else first
                continue
            for j in reversed(self._where[parts[i]]):
                if j >= start:
                    stack.append((i + 1, j + 1, acc | self.entries[j][1]))
        return first

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "zero": self.zero, "source": self.source,
                "entries": [[name, value] for name, value in self.entries]}


_HEX = re.compile(r"^0x[0-9a-fA-F]{1,16}$")
_DECIMAL = re.compile(r"^[0-9]{1,20}$")


def _old_bits(names: str, values: str) -> list[tuple[str, int]]:
    return [(n, int(v, 16)) for n, v in zip(names.split(), values.split(), strict=True)]


#: include/trace/events/gfpflags.h of 3.6-4.3 (3.10 values): as printed in the 3.10.40 kernel's own
#: mm_page_alloc format file (google/perfetto test data android_flounder_lte_LRX16F_3.10.40)
GFP_TABLE_3_10 = GfpTable("linux-3.10", _old_bits(
    "GFP_TRANSHUGE GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_TEMPORARY GFP_KERNEL GFP_NOFS GFP_ATOMIC GFP_NOIO "
    "GFP_HIGH GFP_WAIT GFP_IO GFP_COLD GFP_NOWARN GFP_REPEAT GFP_NOFAIL GFP_NORETRY GFP_COMP GFP_ZERO GFP_NOMEMALLOC "
    "GFP_MEMALLOC GFP_HARDWALL GFP_THISNODE GFP_RECLAIMABLE GFP_KMEMCG GFP_MOVABLE GFP_NOTRACK GFP_NO_KSWAPD "
    "GFP_OTHER_NODE",
    "4352da 200da 200d2 200d0 800d0 d0 50 20 10 20 10 40 100 200 400 800 1000 4000 8000 10000 2000 20000 40000 "
    "80000 100000 8 200000 400000 800000"), "GFP_NOWAIT", "include/trace/events/gfpflags.h, Linux 3.10")

#: include/trace/events/gfpflags.h of 4.4-4.5 (after "rename __GFP_WAIT to __GFP_RECLAIM"): as printed in
#: the 4.4.88 kernel's format file (android_walleye_OPM5.171019.017.A1_4.4.88); GFP_ATOMIC is listed twice
GFP_TABLE_4_4 = GfpTable("linux-4.4", _old_bits(
    "GFP_TRANSHUGE GFP_HIGHUSER_MOVABLE GFP_HIGHUSER GFP_USER GFP_TEMPORARY GFP_KERNEL GFP_NOFS GFP_ATOMIC GFP_NOIO "
    "GFP_HIGH GFP_ATOMIC GFP_IO GFP_COLD GFP_NOWARN GFP_REPEAT GFP_NOFAIL GFP_NORETRY GFP_COMP GFP_ZERO "
    "GFP_NOMEMALLOC GFP_MEMALLOC GFP_HARDWALL GFP_THISNODE GFP_RECLAIMABLE GFP_MOVABLE GFP_NOTRACK "
    "GFP_DIRECT_RECLAIM GFP_KSWAPD_RECLAIM GFP_OTHER_NODE",
    "4352ca 24200ca 24200c2 24200c0 24000d0 24000c0 2400040 2080020 2400000 20 80000 40 100 200 400 800 1000 4000 "
    "8000 10000 2000 20000 40000 10 8 200000 400000 2000000 800000"), "GFP_NOWAIT",
    "include/trace/events/gfpflags.h, Linux 4.4")

#: include/trace/events/mmflags.h with include/linux/gfp_types.h, Linux 6.1 (ptebench.parse.gfp)
GFP_TABLE_6_1_ERA = GfpTable("linux-6.1", GFP_TABLE_6_1, "none", "include/trace/events/mmflags.h, Linux 6.1")

BUILTIN_TABLES = {t.id: t for t in (GFP_TABLE_3_10, GFP_TABLE_4_4, GFP_TABLE_6_1_ERA)}

#: include/linux/mmzone.h: enum migratetype before and since 4.4 (values >= 4 depend on CONFIG_CMA)
MIGRATETYPE_TABLES = {
    "linux<4.4": {0: "Unmovable", 1: "Reclaimable", 2: "Movable", 3: "Reserve"},
    "linux-4.4+": {0: "Unmovable", 1: "Movable", 2: "Reclaimable", 3: "HighAtomic", 4: "Isolate"},
}

# names that only the pre-4.6 table prints (a bit flag without the "__" prefix)
_OLD_SPELLING = {name for name, _ in GFP_TABLE_3_10.entries + GFP_TABLE_4_4.entries} - {
    name for name, _ in GFP_TABLE_6_1}
_PRE_4_4_NAMES = {"GFP_WAIT", "GFP_NO_KSWAPD", "GFP_KMEMCG"}
_4_4_NAMES = {"GFP_DIRECT_RECLAIM", "GFP_KSWAPD_RECLAIM"}


# ---------------------------------------------------------------------------------------- versions


def version_tuple(release: str) -> tuple[int, int]:
    """``"6.1.0-56-amd64"`` -> (6, 1); PtebenchError when it does not start with a version."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)", release)
    if m is None:
        raise PtebenchError(f"not a kernel version: {release!r}", expected="a release such as 6.1.0-56-amd64 or 4.4")
    return int(m[1]), int(m[2])


def gfp_table_for(version: tuple[int, int]) -> GfpTable | None:
    """The built-in table whose bit values hold for a kernel version, or None when none does.

    3.x-4.3 share gfpflags.h's bits (flags were only added); 4.4-4.5 is the 4.4 table; 4.15-6.2
    keep the 6.1 bits (4.15 removed __GFP_COLD/__GFP_NOTRACK, 6.3 removed __GFP_ATOMIC).
    """
    if version < (4, 4):
        return GFP_TABLE_3_10
    if version < (4, 6):
        return GFP_TABLE_4_4
    if (4, 15) <= version < (6, 3):
        return GFP_TABLE_6_1_ERA
    return None


def migratetypes_for(version: tuple[int, int]) -> str:
    return "linux<4.4" if version < (4, 4) else "linux-4.4+"


# ---------------------------------------------------------------------------------------- format files


@dataclass
class EventFormat:
    """One tracefs ``format`` file."""

    name: str
    fields: list[tuple[str, str]]  # (C type, field name), common_* fields left out
    fmt: str  # the print fmt's format string
    args: str  # the print fmt's arguments
    path: str

    def printed(self) -> list[tuple[str, str]]:
        """(key, conversion) in print order: ``[("page", "%p"), ("pfn", "0x%lx"), ("order", "0"), ...]``."""
        out = []
        for token in self.fmt.split():
            key, eq, conv = token.partition("=")
            if not eq:
                raise PtebenchError(f"print fmt of {self.name} has a field that is not key=value: {token!r}",
                                    file=self.path, expected='a print fmt such as "page=%p pfn=0x%lx order=%d"')
            out.append((key, conv))
        return out


_FIELD_RE = re.compile(r"^\s*field:(.+?)\s+(\w+)(?:\[\d*\])?;\s*offset:\d+;\s*size:\d+;\s*signed:\d+;", re.M)
_PRINT_RE = re.compile(r'^print fmt: "((?:[^"\\]|\\.)*)"\s*(?:,\s*(.*))?$', re.M | re.S)
_NAME_RE = re.compile(r"^name: (\S+)", re.M)


def parse_format(text: str, path: str = "") -> EventFormat:
    name = _NAME_RE.search(text)
    pf = _PRINT_RE.search(text)
    if name is None or pf is None:
        raise PtebenchError("not a tracefs event format file", file=path,
                            expected='"name: ...", "format:" field lines and a "print fmt: ..." line')
    fields = [(m[1].strip(), m[2]) for m in _FIELD_RE.finditer(text) if not m[2].startswith("common_")]
    return EventFormat(name[1], fields, pf[1], (pf[2] or "").strip(), path)


_CAST = re.compile(r"\(\s*(?:__force\s+)?(?:gfp_t|unsigned\s+long\s+long|unsigned\s+long|unsigned\s+int|unsigned|"
                   r"long\s+long|long|int|u32|u64)\s*\)")
_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b")
_OPS = {ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor, ast.LShift: operator.lshift,
        ast.RShift: operator.rshift, ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def eval_constant(expr: str) -> int | None:
    """A C constant expression of integers, casts and | & ^ ~ << >> + - *; None when it names anything
    else (an enum such as ``___GFP_DMA_BIT`` in 6.10+ print fmts cannot be evaluated from the file)."""
    text = _SUFFIX.sub(r"\1", _CAST.sub("", expr)).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            return ~value(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(ast.dump(node))

    try:
        return value(tree.body) & ((1 << 64) - 1)
    except (ValueError, ZeroDivisionError):
        return None


def _matching_paren(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


_FLAG_ENTRY = re.compile(r'\{\s*\(unsigned long\)\s*(.*?),\s*"([^"]*)"\s*\}', re.S)


def gfp_table_from_format(ev: EventFormat) -> GfpTable | None:
    """The ``__print_flags`` table of a print fmt's gfp_flags argument; None when there is none or a
    value cannot be evaluated (kernels 6.10-6.12 before 60295b944ff6 name enum constants)."""
    at = ev.args.find("__print_flags(")
    if at < 0:
        return None
    end = _matching_paren(ev.args, at + len("__print_flags"))
    if end < 0:
        return None
    entries = []
    for m in _FLAG_ENTRY.finditer(ev.args, at, end):
        value = eval_constant(m[1])
        if value is None:
            return None
        entries.append((m[2], value))
    zero = re.match(r'\s*:\s*"([^"]*)"', ev.args[end + 1 :])
    return GfpTable(f"format:{ev.path}", entries, zero[1] if zero else "", f"__print_flags of {ev.path}")


_CONV = re.compile(r"^(0x)?%[-0-9.]*(?:hh|h|ll|l|z)?([dipsuxX])$")


def printed_spec(ev: EventFormat) -> tuple[Field, ...]:
    """The ordered field list a kernel prints for one kmem event, from its print fmt."""
    out = []
    for key, conv in ev.printed():
        m = _CONV.match(conv)
        if m is None and not conv.isdigit():
            raise PtebenchError(f"print fmt of {ev.name}: unsupported conversion {key}={conv}", file=ev.path,
                                expected="%p, %d, %u, %lu, 0x%lx, %s or a literal number")
        kind = V_INT if m is None else {"p": V_PTR, "s": V_STR}.get(m[2], V_INT)
        if key == "pfn" and m is not None and m[2] in "xX" and not m[1]:
            raise PtebenchError(f"print fmt of {ev.name}: pfn printed as {conv} without 0x is not supported",
                                file=ev.path, expected="pfn=%lu or pfn=0x%lx")
        column = "gfp" if kind == V_STR else key if key in INT_COLUMNS or key in BOOL_COLUMNS else ""
        out.append(Field(key, kind, None if kind == V_PTR else column))
    return tuple(out)


#: where format files sit in a directory given to --event-formats (or a bundle)
_FORMAT_GLOBS = ("{e}/format", "kmem/{e}/format", "events/kmem/{e}/format", "{e}.format")


def find_format_dir(bundle: Path) -> Path | None:
    """A capture bundle's own format files: ``events/kmem/<event>/format`` or ``formats/<event>/format``."""
    for sub in ("events", "formats", "event-formats"):
        d = bundle / sub
        if d.is_dir() and load_event_formats(d, required=False):
            return d
    return None


def load_event_formats(directory: str | Path, *, required: bool = True) -> dict[str, EventFormat]:
    """The kmem event formats found under ``directory`` (event name -> format)."""
    root = Path(directory)
    if required and not root.is_dir():
        raise PtebenchError("--event-formats needs a directory", file=str(root),
                            expected="a directory holding <event>/format files (a copy of events/kmem)")
    out: dict[str, EventFormat] = {}
    for event in KMEM_EVENTS:
        for pattern in _FORMAT_GLOBS:
            path = root / pattern.format(e=event)
            if path.is_file():
                out[event] = parse_format(path.read_text(encoding="utf-8", errors="replace"), str(path))
                break
    if required and not out:
        raise PtebenchError("no kmem event format files found", file=str(root),
                            expected=" or ".join(p.format(e="mm_page_alloc") for p in _FORMAT_GLOBS))
    return out


# ---------------------------------------------------------------------------------------- the era


@dataclass
class Era:
    """How to read the kmem events of one trace, and where each choice came from."""

    gfp_table: GfpTable | None = None
    gfp_table_from: str = ""
    migratetypes: str = "linux-4.4+"
    migratetypes_from: str = ""
    pfn_radix: str | None = None  # "dec" / "hex" from format files; None: as printed
    specs: dict[str, tuple[Field, ...]] = field(default_factory=dict)  # printed field lists from format files
    formats_dir: str | None = None
    kernel: dict[str, object] = field(default_factory=dict)  # inferred kernel version range and evidence

    def metadata(self) -> dict[str, object]:
        return {
            "gfp_table": self.gfp_table.id if self.gfp_table else None,
            "gfp_table_from": self.gfp_table_from,
            "gfp_table_entries": self.gfp_table.as_json() if self.gfp_table and self.formats_dir else None,
            "migratetype_table": self.migratetypes,
            "migratetype_names": {str(k): v for k, v in MIGRATETYPE_TABLES[self.migratetypes].items()},
            "migratetype_table_from": self.migratetypes_from,
            "event_formats": self.formats_dir,
            "kernel_era": self.kernel,
        }


def era_from_formats(formats: dict[str, EventFormat], where: str) -> Era:
    era = Era(formats_dir=where)
    era.specs = {name: printed_spec(ev) for name, ev in formats.items()}
    alloc = formats.get("mm_page_alloc")
    if alloc is not None:
        table = gfp_table_from_format(alloc)
        if table is not None:
            table.id = f"format:{Path(where).name}"
            era.gfp_table, era.gfp_table_from = table, f"__print_flags of {alloc.path}"
            names = {n for n, _ in table.entries}
            old = bool(names & _PRE_4_4_NAMES)
            era.migratetypes = "linux<4.4" if old else "linux-4.4+"
            era.migratetypes_from = (f"{alloc.path}: the gfp table {'has' if old else 'has no'} GFP_WAIT/GFP_NO_KSWAPD "
                                     "(removed in 4.4 with the migratetype renumbering)")
        else:
            era.gfp_table_from = f"{alloc.path}: its __print_flags values cannot be evaluated (6.10-6.12 enums)"
        conv = dict(alloc.printed()).get("pfn", "")
        era.pfn_radix = "hex" if conv.startswith("0x") else "dec"
    return era


def era_from_version(release: str, where: str) -> Era:
    v = version_tuple(release)
    table = gfp_table_for(v)
    era = Era(gfp_table=table, migratetypes=migratetypes_for(v))
    era.gfp_table_from = f"kernel {release} ({where})" if table else \
        f"no built-in gfp table holds the bit values of kernel {release} ({where}); pass --event-formats"
    era.migratetypes_from = f"kernel {release} ({where})"
    era.kernel = {"min": f"{v[0]}.{v[1]}", "before": f"{v[0]}.{v[1] + 1}", "from": where}
    return era


# evidence -> (min version, max version exclusive); sources in each message
_HEADER_EVIDENCE = (
    ("irqs-off/BH-disabled", (5, 18), None, "header: 'irqs-off/BH-disabled' legend (trace_output.c, 5.18+)"),
    ("migrate-disable", (5, 15), None, "header: migrate-disable column (5 irq-info flags, 5.15+)"),
)


def infer_era(gfp_strings: list[str], *, flag_lengths: set[int], headers: list[str], pfn_radix: set[str],
              pages: set[str], renamed: dict[str, str]) -> Era:
    """The era a trace shows without format files or a version: a version range with its evidence,
    the gfp table its names point to, and the migratetype numbering of that table."""
    lo: tuple[int, int] = (2, 6)
    hi: tuple[int, int] | None = None
    evidence: list[str] = []

    def bound(low: tuple[int, int] | None, high: tuple[int, int] | None, why: str) -> None:
        nonlocal lo, hi
        if low and low > lo:
            lo = low
        if high and (hi is None or high < hi):
            hi = high
        evidence.append(why)

    for text, low, high, why in _HEADER_EVIDENCE:
        if any(text in h for h in headers):
            bound(low, high, why)
            break
    if flag_lengths == {5}:
        bound((5, 15), None, "prefix: 5 irq-info flag characters (migrate-disable, 5.15+)")
    elif flag_lengths == {4}:
        bound(None, (5, 15), "prefix: 4 irq-info flag characters (before 5.15)")
    if pfn_radix == {"hex"}:
        bound((5, 14), None, "radix: pfn=0x%lx (5.14+, 'mm, tracing: Unify PFN format strings')")
    elif pfn_radix == {"dec"}:
        bound(None, (5, 14), "radix: pfn=%lu (before 5.14)")
    if pages == {"hashed"}:
        bound((4, 15), None, "page=%p hashed (4.15+)")
    if any(name in ("mm_page_free_direct", "mm_pagevec_free") for name in renamed):
        bound(None, (3, 3), "event names mm_page_free_direct/mm_pagevec_free (before 3.3)")
    names = {part for s in gfp_strings for part in s.split("|") if not part.startswith("0x") and part}
    old = names & _OLD_SPELLING
    new = {n for n in names if n.startswith("__GFP_")} | ({"none"} & names)
    if old and not new:
        if names & _4_4_NAMES:
            bound((4, 4), (4, 6), f"gfp names {sorted(names & _4_4_NAMES)} (gfpflags.h 4.4-4.5)")
            candidates = [GFP_TABLE_4_4]
        elif names & _PRE_4_4_NAMES:
            bound(None, (4, 4), f"gfp names {sorted(names & _PRE_4_4_NAMES)} (gfpflags.h before 4.4)")
            candidates = [GFP_TABLE_3_10]
        else:
            bound(None, (4, 6), f"gfp names {sorted(old)[:3]} without '__' (gfpflags.h, before 4.6)")
            candidates = [GFP_TABLE_3_10, GFP_TABLE_4_4]
    elif new:
        bound((4, 6), None, f"gfp names {sorted(new)[:3]} (mmflags.h, 4.6+)")
        candidates = [GFP_TABLE_6_1_ERA]
    else:
        candidates = [GFP_TABLE_6_1_ERA, GFP_TABLE_3_10, GFP_TABLE_4_4]
    era = Era()
    conflict = hi is not None and lo >= hi
    said = "; ".join(evidence)
    if conflict:  # pasted or edited text: trust the gfp spelling alone
        era.gfp_table = candidates[0]
        era.gfp_table_from = f"gfp spelling only (the other evidence conflicts: {said})"
    else:
        fits = [t for t in candidates if _overlaps(_VALID[t.id], (lo, hi))]
        if len(fits) > 1 and gfp_strings:
            # the kernel prints names in table order: strings that only one table can print settle it
            scores = [sum(1 for g in gfp_strings if (m := t.mask(g)) is not None and t.render(m) == g) for t in fits]
            best = max(range(len(fits)), key=lambda i: (scores[i], -i))
            if scores[best] > scores[0]:
                bound(*_VALID[fits[best].id], f"gfp strings that print in {fits[best].id}'s table order only "
                      f"({scores[best]} of {len(gfp_strings)} against {scores[0]} for {fits[0].id})")
                fits = [fits[best]]
                said = "; ".join(evidence)
        era.gfp_table = fits[0] if fits else None
        if era.gfp_table is None:
            era.gfp_table_from = f"unknown: no built-in table holds the bits of the inferred era ({said})"
        elif not evidence:
            era.gfp_table_from = "default (nothing in the trace tells the era)"
        else:
            exact = _contains(_VALID[era.gfp_table.id], (lo, hi))
            era.gfp_table_from = "inferred from " + said + ("" if exact else
                                 f"; assumes the bit values of {_span(_VALID[era.gfp_table.id])}")
    old_mt = not conflict and hi is not None and hi <= (4, 4)
    era.migratetypes = "linux<4.4" if old_mt or era.gfp_table is GFP_TABLE_3_10 else "linux-4.4+"
    era.migratetypes_from = ("inferred from " + said) if evidence else "default (4.4+ numbering)"
    era.kernel = {"min": None if conflict else f"{lo[0]}.{lo[1]}",
                  "before": None if conflict or hi is None else f"{hi[0]}.{hi[1]}",
                  "from": ("conflicting evidence: " if conflict else "inferred from ") + (said or "nothing"),
                  "evidence": evidence}
    return era


#: kernel versions whose gfp bits each built-in table describes: [first, last) (see gfp_table_for)
_VALID = {"linux-3.10": ((2, 6), (4, 4)), "linux-4.4": ((4, 4), (4, 6)), "linux-6.1": ((4, 15), (6, 3))}


def _overlaps(a: tuple[tuple[int, int], tuple[int, int]], b: tuple[tuple[int, int], tuple[int, int] | None]) -> bool:
    return a[0] < (b[1] or (99, 0)) and b[0] < a[1]


def _contains(a: tuple[tuple[int, int], tuple[int, int]], b: tuple[tuple[int, int], tuple[int, int] | None]) -> bool:
    return a[0] <= b[0] and b[1] is not None and b[1] <= a[1]


def _span(a: tuple[tuple[int, int], tuple[int, int]]) -> str:
    return f"{a[0][0]}.{a[0][1]}-{a[1][0]}.{a[1][1] - 1}"
