"""``ingest()``: trace text or capture bundles into one Parquet file per trace."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import pyarrow as pa
import pyarrow.parquet as pq

from ptebench.errors import PtebenchError
from ptebench.parse import bundle as bundle_mod
from ptebench.parse import eras
from ptebench.parse import formats as formats_mod
from ptebench.parse.runs import RunWriter, merge_runs
from ptebench.parse.schema import (
    ABSENT,
    DICT_COLUMNS,
    DISK_SCHEMA,
    META_KEY,
    RUN_SCHEMA,
    STACKS_KEY,
    Finisher,
    build_metadata,
    run_table,
    to_disk,
)
from ptebench.parse.source import ChunkReader, Source
from ptebench.parse.stacks import stacks_to_ipc
from ptebench.parse.text import TextParser

FORMATS = formats_mod.FORMATS
ROW_GROUP_ROWS = 1 << 20
open_chunks = ChunkReader  # tests give it a smaller chunk size
#: LZ4 (Parquet's LZ4_RAW); dictionaries only where they pay (the dictionary columns, gfp masks, pids),
#: delta-coded time, sequence, line and CPU numbers, byte-split pfns and migratetypes, statistics on the
#: sort key and on the columns the replay keeps narrow when they fit (``engine/store.py``), version 2 data
#: pages (levels stay uncompressed): about 40% less CPU than the writer's defaults, for a smaller file.  LZ4 rather than zstd: measured on a 10 M-event trace, 15 % less CPU
#: to write and 20 % less to decode the replay's columns (25 vs 31 ns an event), for a file 37 % larger
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": [*DICT_COLUMNS, "gfp_mask", "pid", ABSENT],
    "column_encoding": {"ts_ns": "DELTA_BINARY_PACKED", "seq": "DELTA_BINARY_PACKED", "line": "DELTA_BINARY_PACKED",
                        "cpu": "DELTA_BINARY_PACKED", "pfn": "BYTE_STREAM_SPLIT", "migratetype": "BYTE_STREAM_SPLIT"},
    "write_statistics": ["ts_ns", "seq", "cpu", "pid", "pfn", "stack_id", "gfp_mask"],
    "data_page_version": "2.0",
}


@dataclass
class IngestSummary:
    """What ``ingest()`` wrote and what it had to say about the input."""

    out: Path
    rows: int
    events: dict[str, int]
    stacks: int
    unique_stacks: int
    sources: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    losses: list[dict[str, Any]] = field(default_factory=list)
    inversions: dict[int, int] = field(default_factory=dict)
    bundle: str | None = None
    formats: list[dict[str, str]] = field(default_factory=list)  # per input: format and how it was recognised
    gfp_table: str | None = None
    gfp_table_from: str = ""


def _expand(inputs: str | Path | Sequence[str | Path]) -> tuple[list[str], Path | None]:
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not items:
        raise PtebenchError("no input given", expected="a trace file, '-' for stdin, or a capture bundle directory")
    traces: list[str] = []
    bundle: Path | None = None
    for item in items:
        p = Path(item)
        if str(item) != "-" and p.is_dir():
            if not bundle_mod.is_bundle(p):
                raise PtebenchError("directory holds no trace file", file=str(p),
                                    expected=f"a capture bundle with one of {', '.join(bundle_mod.TRACE_NAMES)}")
            if bundle is not None:
                raise PtebenchError("only one capture bundle per output file", file=str(p))
            bundle = p
            traces.append(str(bundle_mod.bundle_trace_file(p)))
        elif str(item) == "-" or p.is_file():
            traces.append(str(item))
        else:
            raise PtebenchError("no such input", file=str(item), expected="an existing file, '-' or a bundle directory")
    if traces.count("-") > 1:
        raise PtebenchError("stdin ('-') can be read only once")
    return traces, bundle


def ingest(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str | None = None,
    lenient: bool = False,
    kernel_version: str | None = None,
    event_formats: str | Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Parse a trace (or a capture bundle) into ``out`` (Parquet) and return a summary.

    ``fmt`` is one of :data:`FORMATS` (``ftrace``, ``trace-cmd``, ``perf-script``, ``systrace``,
    ``trace-dat``); by default each input's format is detected from its first bytes.
    Several inputs are parts of one trace (per-CPU files) and are merged by time.
    ``lenient`` skips malformed lines and counts them by reason instead of failing.
    ``event_formats`` is a directory of the kernel's ``events/kmem/<event>/format`` files (a bundle's
    ``events/`` directory is used by default): they fix the printed field lists, the pfn radix, the
    gfp table and the migratetype numbering.  Otherwise ``kernel_version`` (or the bundle's uname)
    picks built-in tables, and failing that the era is inferred from the text (see ``eras.py``).
    The output appears only when everything succeeded (written to a temporary file
    in the same directory, then renamed).
    """
    if fmt is not None and fmt not in FORMATS:
        raise PtebenchError(f"unknown input format {fmt!r}", expected=f"one of {', '.join(FORMATS)}")
    traces, bundle_dir = _expand(inputs)
    out = Path(out)
    bundle = bundle_mod.read_bundle(bundle_dir) if bundle_dir is not None else None
    formats_dir = Path(event_formats) if event_formats is not None else (
        eras.find_format_dir(bundle_dir) if bundle_dir is not None else None)
    era0 = eras.era_from_formats(eras.load_event_formats(formats_dir), str(formats_dir)) if formats_dir else None
    parser = TextParser(lenient=lenient, specs=era0.specs if era0 else None)
    runs = RunWriter(RUN_SCHEMA)
    sources: list[Source] = []
    detected: list[dict[str, str]] = []
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        for src, name in enumerate(traces):
            source = Source(name=name)
            sources.append(source)
            with open_chunks(name, source) as reader:
                view, at_eof = reader.next(0)
                fmt_i, why = formats_mod.detect(view[: formats_mod.SNIFF_BYTES + 1].tobytes(), name, fmt)
                detected.append({"format": fmt_i, "detected_from": why})
                parser.start_source(src, name, fmt_i)
                if fmt_i in formats_mod.TRANSFORMED:
                    _, _, chunks = formats_mod.text_chunks(reader.byte_chunks(view, at_eof), name, source, fmt_i)
                    _parse_bytes(parser, runs, chunks, on_bytes)
                else:  # the text itself: parsed in the reader's buffer
                    while True:
                        cols, consumed = parser.parse_view(view, at_eof)
                        if cols is not None:
                            runs.add(run_table(cols))
                        if on_bytes is not None:
                            on_bytes(reader.new_bytes)
                        if at_eof:
                            break
                        view, at_eof = reader.next(consumed)
            source.lines = parser.line0
        parser.finish()
        finisher = Finisher({k: v.values for k, v in parser.names.items()}, parser.patches)
        release, release_from = _release(kernel_version, bundle)
        era = _era(era0, parser, release, release_from)
        finisher.gfp_masks = pa.array([_gfp_mask(era.gfp_table, g) for g in parser.names["gfp"].values],
                                      type=pa.uint64())
        stacks = parser.stacks.to_arrow()
        meta = _metadata(parser, sources, detected, bundle, release, release_from, era, runs.rows)
        schema = DISK_SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True), STACKS_KEY: stacks_to_ipc(stacks)})
        with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in merge_runs(runs.paths, RUN_SCHEMA, runs.in_order):
                pending.append(to_disk(finisher.finish(batch)))
                rows += batch.num_rows
                if rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
                    pending, rows = [], 0
            if pending or runs.rows == 0:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
        tmp.replace(out)
    finally:
        runs.close()
        if tmp.exists():
            tmp.unlink()
    st = parser.stats
    return IngestSummary(
        out=out,
        rows=runs.rows,
        events=dict(sorted(st.events.items())),
        stacks=sum(st.stacks_by_event.values()),
        unique_stacks=stacks.num_rows,
        sources=[s.as_json() for s in sources],
        skipped=dict(st.skipped),
        warnings=dict(st.warnings),
        losses=st.losses,
        inversions=dict(st.inversions),
        bundle=str(bundle_dir) if bundle_dir is not None else None,
        formats=detected,
        gfp_table=era.gfp_table.id if era.gfp_table else None,
        gfp_table_from=era.gfp_table_from,
    )


def _parse_bytes(parser: TextParser, runs: RunWriter, chunks: Iterator[tuple[bytes, bool]],
                 on_bytes: Callable[[int], None] | None) -> None:
    carry = b""
    for data, at_eof in chunks:
        cols, carry = parser.parse(carry + data if carry else data, at_eof)
        if cols is not None:
            runs.add(run_table(cols))
        if on_bytes is not None:
            on_bytes(len(data))


def _release(kernel_version: str | None, bundle: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if kernel_version is not None:
        return kernel_version, "--kernel-version"
    if bundle is not None and bundle.get("kernel_release"):
        return bundle["kernel_release"], "bundle uname.txt"
    return None, None


def _era(era0: eras.Era | None, parser: TextParser, release: str | None, release_from: str | None) -> eras.Era:
    """Format files first, then the kernel version, then what the text shows."""
    st = parser.stats
    by_version = None
    if release is not None:
        try:
            by_version = eras.era_from_version(release, release_from or "")
        except PtebenchError:
            if release_from == "--kernel-version":
                raise
    if era0 is not None:
        if era0.gfp_table is None and by_version is not None:
            era0.gfp_table, era0.gfp_table_from = by_version.gfp_table, by_version.gfp_table_from
        if by_version is not None:
            era0.kernel = by_version.kernel
        if era0.pfn_radix and st.pfn_radix - {era0.pfn_radix}:
            st.warnings["pfn_radix_differs_from_event_formats"] += 1
        return era0
    if by_version is not None:
        return by_version
    return eras.infer_era(parser.names["gfp"].values, flag_lengths=st.flag_lengths - {0}, headers=st.header_lines,
                          pfn_radix=st.pfn_radix, pages=st.pages - {"null"}, renamed=st.renamed)


def _gfp_mask(table: eras.GfpTable | None, text: str) -> int | None:
    if table is not None:
        return table.mask(text)
    # no table for this era: only a number printed as such is a mask
    value = eras.GFP_TABLE_6_1_ERA.mask(text) if text.startswith("0x") or text.isdigit() else None
    return value if value is not None and "|" not in text else None


def _metadata(parser: TextParser, sources: list[Source], detected: list[dict[str, str]],
              bundle: dict[str, Any] | None, release: str | None, release_from: str | None, era: eras.Era,
              rows: int) -> dict[str, Any]:
    st = parser.stats
    digits = sorted(d for d in st.frac_digits if d >= 0)
    if st.frac_digits and -1 in st.frac_digits and not digits:
        resolution: int | str | None = "counter"
    else:
        resolution = 10 ** (9 - max(digits)) if digits else None
    kinds = {d["format"] for d in detected}
    return build_metadata(
        format=kinds.pop() if len(kinds) == 1 else "mixed",
        source_formats=detected,
        sources=[s.as_json() for s in sources],
        kernel_release=release,
        kernel_release_from=release_from,
        ts_resolution_ns=resolution,
        pfn_radix=sorted(st.pfn_radix),
        pfn_radix_from=f"print fmt in {era.formats_dir}" if era.pfn_radix else "as printed (0x means hex)",
        **era.metadata(),
        rows=rows,
        events=dict(sorted(st.events.items())),
        event_total=sum(st.events.values()),
        cpus=sorted(st.cpus),
        stacks={
            "attached": sum(st.stacks_by_event.values()),
            "by_event": dict(sorted(st.stacks_by_event.items())),
            "unique": len(parser.stacks.stacks),
            "frames": len(parser.stacks.frames.values),
        },
        trace_headers=st.headers,
        tool_preamble={str(k): v for k, v in sorted(st.preamble.items())},
        line_kinds=dict(sorted(st.line_kinds.items())),
        kmem_keyed_rows=dict(sorted(st.keyed_rows.items())),
        event_renames=dict(sorted(st.renamed.items())),
        losses=st.losses,
        skipped=dict(sorted(st.skipped.items())),
        warnings=dict(sorted(st.warnings.items())),
        inversions_per_cpu={str(k): v for k, v in sorted(st.inversions.items())},
        bundle=bundle,
        libraries={"pyarrow": pa.__version__, "numba": numba.__version__},
    )
