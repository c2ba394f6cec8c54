"""The ``ptebench`` command line: arguments in, one API call, rich rendering out.

Every command calls the public API only; :class:`PtebenchError` becomes a red
message on stderr and exit code 1, anything else keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from ptebench import summary
from ptebench._version import __version__
from ptebench.api import ingest as api_ingest
from ptebench.bench.cli import bench_app
from ptebench.errors import PtebenchError
from ptebench.trace import load

app = typer.Typer(
    name="ptebench",
    help="Replay real kmem page-allocator traces through direct-map cache designs and count the splits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"ptebench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """ptebench: how badly would another page-cache design fragment the x86 direct map?"""


def frame_table(df: pd.DataFrame, title: str, *, index: bool = False) -> Table:
    """A pandas frame as a rich table (numbers right-aligned)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    frame = df.reset_index() if index else df
    for col in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[col])
        table.add_column(str(col), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*["" if v is pd.NA else f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    return table


@app.command("ingest")
def ingest_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Trace files (plain, .gz, .xz, .zst), '-' for stdin, or one capture bundle directory. Several files are parts of one trace, merged by time.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The Parquet file to write.")],
    fmt: Annotated[str | None, typer.Option("--format", help="Input format (default: detected per input): ftrace, trace-cmd (report text), perf-script, systrace (HTML), trace-dat (through 'trace-cmd report').")] = None,
    lenient: Annotated[bool, typer.Option("--lenient", help="Skip malformed lines and count them by reason instead of failing.")] = False,
    kernel_version: Annotated[str | None, typer.Option("--kernel-version", help="Kernel release the trace came from, when no bundle says it (picks the gfp table and migratetype numbering).")] = None,
    event_formats: Annotated[Path | None, typer.Option("--event-formats", help="Directory of the kernel's events/kmem/<event>/format files: fixes printed fields, pfn radix, gfp table and migratetype numbering.")] = None,
) -> None:
    """Parse trace text or a capture bundle into one Parquet file with versioned metadata."""
    with Progress(TextColumn("[bold]ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("ingest", total=None)
        result = api_ingest(inputs, out, fmt=fmt, lenient=lenient, kernel_version=kernel_version,
                            event_formats=event_formats, on_bytes=lambda n: progress.advance(task, n))
    console.print(f"wrote [bold]{result.out}[/]: {result.rows:,} events, {result.stacks:,} stacks "
                  f"({result.unique_stacks:,} unique)")
    console.print("format: " + ", ".join(f"{d['format']} ({d['detected_from']})" for d in result.formats)
                  + f"; gfp table {result.gfp_table or 'none'} ({result.gfp_table_from})", highlight=False, markup=False)
    events = pd.DataFrame({"event": list(result.events), "count": list(result.events.values())})
    console.print(frame_table(events.sort_values("count", ascending=False), "events"))
    for label, counts in (("skipped lines (lenient)", result.skipped), ("warnings", result.warnings)):
        if counts:
            console.print(f"[yellow]{label}:[/] " + ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items())))
    if result.losses:
        console.print(f"[red]lost-event records: {len(result.losses)}[/] (see 'ptebench info')")


@app.command("info")
def info_cmd(
    trace_file: Annotated[Path, typer.Argument(help="A Parquet file written by 'ptebench ingest'.")],
    top: Annotated[int, typer.Option(help="Rows in the gfp and frame tables.")] = 15,
) -> None:
    """Summarise an ingested trace: events, time span, orders, migratetypes, gfp, callers, kernel counters."""
    trace = load(trace_file)
    ov = summary.overview(trace)
    span = ov["span_ns"] / 1e9
    console.print(f"[bold]{trace_file}[/]  kernel {ov['kernel_release'] or 'unknown'}  "
                  f"{ov['rows']:,} events over {span:.6f} s on CPUs {ov['cpus']}  "
                  f"(timestamp resolution {ov['ts_resolution_ns']} ns)")
    console.print("format: " + ", ".join(f"{d['format']} ({d['detected_from']})" for d in ov["source_formats"]),
                  highlight=False, markup=False)
    era = ov["kernel_era"] or {}
    console.print(f"kernel era: >= {era.get('min') or '?'}, < {era.get('before') or '?'} ({era.get('from', '')}); "
                  f"gfp table {ov['gfp_table'] or 'none'} ({ov['gfp_table_from']}); "
                  f"migratetypes {ov['migratetype_table']}", highlight=False, markup=False)
    console.print(f"stacks: {ov['stacks']['attached']:,} attached, {ov['stacks']['unique']:,} unique, "
                  f"{ov['stacks']['frames']:,} distinct frames")
    console.print(frame_table(summary.event_counts(trace), "events by type"))
    console.print(frame_table(pd.DataFrame([summary.alloc_free_summary(trace)]).T.reset_index()
                              .set_axis(["summary (page allocator)", "value"], axis=1), ""))
    omt = summary.order_by_migratetype(trace)
    if not omt.empty:
        console.print(frame_table(omt, "allocations: order x migratetype", index=True))
    console.print(frame_table(summary.gfp_table(trace, top), "allocations by gfp_flags"))
    console.print(frame_table(summary.top_frames(trace, top=top), "most common callers of __alloc_pages"))
    losses = ov["losses"]
    style = "red" if losses else "green"
    console.print(f"[{style}]lost-event records: {len(losses)}[/]")
    if losses:
        lt = summary.loss_table(trace).head(20)
        for col in ("from_ts_ns", "to_ts_ns"):
            lt[col] = [("start" if col == "from_ts_ns" else "end") if pd.isna(v) else f"{v / 1e9:.6f}" for v in lt[col]]
        lt = lt.astype(object).where(lt.notna(), "-")
        console.print(frame_table(lt.rename(columns={"from_ts_ns": "missing from (s)", "to_ts_ns": "to (s)"}),
                                  "lost data (per CPU: events between the two times are missing)"))
    for label in ("skipped", "warnings", "inversions_per_cpu"):
        if ov[label]:
            console.print(f"[yellow]{label}:[/] {ov[label]}")
    counters = summary.kernel_counters(trace)
    if not counters.empty:
        short = {"direct_map_level2_splits": "l2 splits", "direct_map_level3_splits": "l3 splits",
                 "dump_DirectMap4k": "4k kB", "dump_DirectMap2M": "2M kB", "dump_DirectMap1G": "1G kB",
                 "dump_2M_regions_on_4K": "2M on 4K"}
        console.print(frame_table(counters.rename(columns=short),
                                  "kernel counters from the capture bundle (DirectMap from the dump walk)"))


app.add_typer(bench_app, name="bench")

# replay and validate live in their own module; importing it registers them on ``app``
from ptebench import cli_replay  # noqa: E402,F401


def main() -> None:
    """Console-script entry point: the project error becomes exit code 1."""
    try:
        app()
    except PtebenchError as exc:
        err_console.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
        raise SystemExit(1) from None
