"""``ingest()``: trace text or capture bundles into one Parquet file per trace."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import pyarrow as pa
import pyarrow.parquet as pq

from ptebench.errors import PtebenchError
from ptebench.parse import bundle as bundle_mod
from ptebench.parse.events import SCHEMA
from ptebench.parse.runs import RunWriter, merge_runs
from ptebench.parse.schema import META_KEY, RUN_SCHEMA, STACKS_KEY, Finisher, build_metadata, run_table
from ptebench.parse.source import Source, read_chunks
from ptebench.parse.stacks import stacks_to_ipc
from ptebench.parse.text import TextParser

FORMATS = ("ftrace",)
ROW_GROUP_ROWS = 1 << 20


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
    on_bytes: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Parse trace text (or a capture bundle) into ``out`` (Parquet) and return a summary.

    Several inputs are parts of one trace (per-CPU files) and are merged by time.
    ``lenient`` skips malformed lines and counts them by reason instead of failing.
    The output appears only when everything succeeded (written to a temporary file
    in the same directory, then renamed).
    """
    if fmt is not None and fmt not in FORMATS:
        raise PtebenchError(f"unknown or not yet supported format {fmt!r}", expected=f"one of {', '.join(FORMATS)}")
    traces, bundle_dir = _expand(inputs)
    out = Path(out)
    bundle = bundle_mod.read_bundle(bundle_dir) if bundle_dir is not None else None
    parser = TextParser(lenient=lenient)
    runs = RunWriter(RUN_SCHEMA)
    sources: list[Source] = []
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        for src, name in enumerate(traces):
            source = Source(name=name)
            sources.append(source)
            parser.start_source(src, name)
            carry = b""
            for data, at_eof in read_chunks(name, source):
                cols, carry = parser.parse(carry + data if carry else data, at_eof)
                if cols is not None:
                    runs.add(run_table(cols))
                if on_bytes is not None:
                    on_bytes(len(data))
            source.lines = parser.line0
        finisher = Finisher({k: v.values for k, v in parser.names.items()}, parser.patches)
        stacks = parser.stacks.to_arrow()
        meta = _metadata(parser, sources, bundle, kernel_version, runs.rows)
        schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta, sort_keys=True), STACKS_KEY: stacks_to_ipc(stacks)})
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in merge_runs(runs.paths, RUN_SCHEMA):
                pending.append(finisher.finish(batch))
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
    )


def _metadata(parser: TextParser, sources: list[Source], bundle: dict[str, Any] | None,
              kernel_version: str | None, rows: int) -> dict[str, Any]:
    st = parser.stats
    release, release_from = None, None
    if kernel_version is not None:
        release, release_from = kernel_version, "--kernel-version"
    elif bundle is not None and bundle.get("kernel_release"):
        release, release_from = bundle["kernel_release"], "bundle uname.txt"
    digits = sorted(d for d in st.frac_digits if d >= 0)
    if st.frac_digits and -1 in st.frac_digits and not digits:
        resolution: int | str | None = "counter"
    else:
        resolution = 10 ** (9 - max(digits)) if digits else None
    return build_metadata(
        format="ftrace-text",
        sources=[s.as_json() for s in sources],
        kernel_release=release,
        kernel_release_from=release_from,
        ts_resolution_ns=resolution,
        pfn_radix=sorted(st.pfn_radix),
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
        losses=st.losses,
        skipped=dict(sorted(st.skipped.items())),
        warnings=dict(sorted(st.warnings.items())),
        inversions_per_cpu={str(k): v for k, v in sorted(st.inversions.items())},
        bundle=bundle,
        libraries={"pyarrow": pa.__version__, "numba": numba.__version__},
    )
