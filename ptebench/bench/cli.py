"""``ptebench bench ...``: the benchmark commands (registered in ``ptebench/cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ptebench.bench import ingest as bench_ingest

GB = bench_ingest.GB

bench_app = typer.Typer(
    help="Benchmarks: ptebench against reference programs measured in the same run, printed as ratios.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


@bench_app.callback()
def _bench() -> None:
    """Benchmarks that print ratios against baselines measured in the same run (a group even with one command)."""


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def _rate(r: float) -> str:
    return f"{r / 1e6:,.2f} M"


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.3f}" if x < 1 else f"{x:,.2f}"


def throughput_table(result: dict[str, Any]) -> Table:
    """Contender, lines, CPU s, lines per CPU-second, ratios to both baselines, peak RSS, check."""
    inp = result["input"]
    table = Table(title=f"ingest, one core (CPU {result['machine']['pinned_cpu']}): {inp['lines']:,} generated lines, "
                        f"{inp['bytes'] / GB:.2f} GB", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("contender", "lines", "CPU s", "lines/CPU-s", "x naive", "x scan", "peak RSS", "check"):
        table.add_column(name, justify="left" if name in ("contender", "check") else "right")
    for c in result["contenders"]:
        star = "*" if c["sampled"] else ""
        table.add_row(c["label"] + star, f"{c['lines']:,}", f"{c['cpu_s']:,.2f}", _rate(c["lines_per_cpu_s"]) + star,
                      _ratio(c["x_naive"]), _ratio(c["x_scan"]), _mib(c["peak_rss_bytes"]), c["check"])
    return table


def throughput_notes(result: dict[str, Any]) -> list[str]:
    out = []
    for c in result["contenders"]:
        note = f"{c['label']}: {c['note']}"
        if c["sampled"]:
            note = (f"* {note} (~{c['extrapolated_cpu_s']:,.1f} CPU s for {c['extrapolated_lines']:,} lines; "
                    "'x naive' ratios use this extrapolated rate)")
        out.append(note)
    return out


def rss_table(result: dict[str, Any]) -> Table:
    """Peak RSS of ptebench (and of the tight scan, for reference) against input size."""
    table = Table(title="peak RSS against input size (the tight scan, for reference, holds the whole file)",
                  title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("input", "lines", "ptebench RSS", "lines/CPU-s", "scan RSS", "lines/CPU-s"):
        table.add_column(name, justify="right")
    for r in result["rss_runs"]:
        p, s = r["ptebench"], r["scan"]
        table.add_row(f"{r['input']['bytes'] / GB:.3g} GB", f"{r['input']['lines']:,}",
                      _mib(p["peak_rss_bytes"]), _rate(p["lines_per_cpu_s"]), _mib(s["peak_rss_bytes"]),
                      _rate(s["lines_per_cpu_s"]))
    return table


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """One line per target: met / not met / not measured, with the numbers."""
    out = []
    for v in result["verdicts"]:
        word = {True: "[bold green]met[/]", False: "[bold red]NOT MET[/]", None: "[yellow]not measured[/]"}[v["met"]]
        out.append(f"{word}  {v['target']}: {v['detail']}")
    return out


def print_result(result: dict[str, Any]) -> None:
    console.print(throughput_table(result))
    for line in throughput_notes(result):
        console.print(f"  {line}", highlight=False)
    if result["rss_runs"]:
        console.print(rss_table(result))
    console.print("[bold]targets (issue #3)[/]")
    for line in verdict_lines(result):
        console.print("  " + line, highlight=False)
    m, mach = result["method"], result["machine"]
    console.print(f"[dim]CPU time: {m['cpu_time']}. {m['warmup']}. Naive parser: {m['naive']}. "
                  f"Tight scan: {m['scan']}. Peak RSS: {m['peak_rss']}. RSS inputs: {m['rss_sizes']}. "
                  f"Load average at start {mach['loadavg_start']}, at end {mach['loadavg_end']} "
                  f"({mach['cpus_online']} CPUs).[/]")


@bench_app.command("ingest")
def ingest_cmd(
    lines: Annotated[int, typer.Option("--lines", help="Generated lines for the throughput run.")] = bench_ingest.DEFAULT_LINES,
    size_gb: Annotated[list[float] | None, typer.Option("--size-gb", help="Input size in GB (10^9 bytes) for a peak-RSS run; repeat for several. Default: 1 and 4.")] = None,
    no_rss: Annotated[bool, typer.Option("--no-rss", help="Skip the peak-RSS runs.")] = False,
    skip_naive: Annotated[bool, typer.Option("--skip-naive", help="Do not run the naive regex parser at all (no ratios to it).")] = False,
    naive_sample: Annotated[int | None, typer.Option("--naive-sample", help=f"Run the naive parser on the first N lines only and extrapolate its per-line rate (labelled). Default: the whole input up to {bench_ingest.NAIVE_FULL_MAX:,} lines, else a {bench_ingest.NAIVE_AUTO_SAMPLE:,}-line sample.")] = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Where generated inputs are cached (keyed by generator hash and line count) and Parquet is written.")] = bench_ingest.DEFAULT_WORK_DIR,
    baselines: Annotated[Path, typer.Option("--baselines", help="Directory of gen_lines.py, parse_re.py and scan_ref.py.")] = bench_ingest.DEFAULT_BASELINES,
    cpu: Annotated[int | None, typer.Option("--cpu", help="The CPU every contender is pinned to (default: the highest one available).")] = None,
    keep_parquet: Annotated[bool, typer.Option("--keep-parquet", help="Keep ptebench's verified Parquet files in the work dir.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure (with wall-clock times) as JSON.")] = None,
) -> None:
    """Time ptebench end to end (text to a verified Parquet) against the naive regex parser and the tight
    numba scan in the same run, in lines per CPU-second on one core; peak RSS against input size."""
    opts = bench_ingest.BenchOptions(
        lines=lines, sizes_gb=tuple(size_gb) if size_gb else bench_ingest.DEFAULT_SIZES_GB, rss=not no_rss,
        naive=not skip_naive, naive_sample=naive_sample, work_dir=work_dir, baselines=baselines, cpu=cpu,
        keep_parquet=keep_parquet)
    opts.check()  # bad options fail before anything runs
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        result = bench_ingest.run_ingest_bench(opts, progress)
    print_result(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        console.print(f"wrote {json_out}")
