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
from ptebench.bench import replay as bench_replay

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
    _run(opts, bench_ingest.run_ingest_bench, print_result, json_out)


# --------------------------------------------------------------------------------------------
# ptebench bench replay


def _bytes(b: float | None) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**20:,.0f} MiB" if b >= 2**20 else f"{b:,.1f} B"


def replay_table(result: dict[str, Any]) -> Table:
    """Contender, events/ops, CPU s, rate, ratio to buddy_ref, peak RSS, memory per event and per page."""
    inp = result["input"]
    table = Table(title=f"replay, simulate mode, one core (CPU {result['machine']['pinned_cpu']}): {inp['capture']} "
                        f"tiled x{inp['tiles']} = {inp['rows']:,} events", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("contender", "events/ops", "CPU s", "rate /CPU-s", "x buddy_ref", "peak RSS", "mem/event",
                 "mem/page"):
        table.add_column(name, justify="left" if name == "contender" else "right")
    for c in result["contenders"]:
        table.add_row(c["label"], f"{c['count']:,} {c['unit']}", f"{c['cpu_s']:,.2f}", _rate(c["rate"]),
                      _ratio(c["x_ref"]), _mib(c["peak_rss_bytes"]) if c["peak_rss_bytes"] else "n/a",
                      _bytes(c["mem_per_event"]), _bytes(c["mem_per_page"]))
    return table


def replay_notes(result: dict[str, Any]) -> list[str]:
    out = [f"{c['label']}: {c['note']}" for c in result["contenders"]]
    pte = result["contenders"][0]
    parts = pte.get("state_parts")
    if parts:
        out.append(f"ptebench state over {pte['npages']:,} pfns: " + ", ".join(
            f"{k.replace('_', ' ')} {v / 2**20:,.0f} MiB ({v / pte['npages']:.1f} B/page)" for k, v in parts.items())
            + " (allocated; zero pages never written are not resident)")
    out.append(f"ptebench RSS grew {_bytes(pte['grown_rss_bytes'])} over {pte['count']:,} events and "
               f"{_bytes(pte['head_grown_rss_bytes'])} over its first {pte['head_events']:,}: marginal "
               f"{_bytes(pte['mem_per_event_marginal'])} per event; the rest is fixed (state, one chunk's temporaries)")
    ref = result["contenders"][1]
    out.append(f"buddy_ref state: {ref['npages']:,} pages x {ref['mem_per_page']:.0f} B = {_bytes(ref['state_bytes'])}; "
               f"RSS grew {_bytes(ref['grown_rss_bytes'])}: the state, then "
               f"{_bytes(ref['mem_per_event_marginal'])} per op (its op arrays)")
    return out


def profile_table(profile: dict[str, Any], n: int = 20) -> Table:
    table = Table(title=f"profile of the replay (cProfile, {profile['total_s']:.1f} s; a jitted call counts once, "
                        f"its time is its own): top {n} by own time", title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("function", "calls", "own s", "cumulative s"):
        table.add_column(name, justify="left" if name == "function" else "right")
    for r in profile["by_tottime"][:n]:
        table.add_row(r["function"], f"{r['calls']:,}", f"{r['tottime_s']:.2f}", f"{r['cumtime_s']:.2f}")
    return table


def print_replay_result(result: dict[str, Any]) -> None:
    console.print(replay_table(result))
    for line in replay_notes(result):
        console.print(f"  {line}", highlight=False)
    console.print("[bold]targets (issue #5)[/]")
    for line in verdict_lines(result):
        console.print("  " + line, highlight=False)
    if result.get("profile"):
        console.print(profile_table(result["profile"]))
        console.print(f"  full profile: {result['profile']['path']} (python -m pstats)", highlight=False)
    m, mach = result["method"], result["machine"]
    console.print(f"[dim]Input: {m['input']}. {m['caveat'][0].upper() + m['caveat'][1:]}. CPU time: {m['cpu_time']}. "
                  f"{m['warmup']}. Memory: {m['peak_rss']}. Load average at start {mach['loadavg_start']}, at end "
                  f"{mach['loadavg_end']} ({mach['cpus_online']} CPUs).[/]")


@bench_app.command("replay")
def replay_cmd(
    capture: Annotated[Path, typer.Option("--capture", help="A capture bundle directory (ingested once, cached) or an ingested .parquet to tile.")] = bench_replay.DEFAULT_CAPTURE,
    events: Annotated[int, typer.Option("--events", help="At least this many events in the tiled trace (whole tiles of the capture).")] = bench_replay.DEFAULT_EVENTS,
    ref_ops: Annotated[int, typer.Option("--ref-ops", help="Operations in buddy_ref's make_ops() stream.")] = bench_replay.REF_OPS,
    ref_live: Annotated[int, typer.Option("--ref-live", help="make_ops()' cap on live allocations (memory must never be full).")] = bench_replay.REF_LIVE,
    ref_npages: Annotated[int, typer.Option("--ref-npages", help="Pages of buddy_ref's machine (a multiple of 1024).")] = bench_replay.REF_NPAGES,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Where the ingested capture, the tiled trace and buddy_ref's ops are cached.")] = bench_replay.DEFAULT_WORK_DIR,
    baselines: Annotated[Path, typer.Option("--baselines", help="Directory of buddy_ref.py.")] = bench_replay.DEFAULT_BASELINES,
    cpu: Annotated[int | None, typer.Option("--cpu", help="The CPU every contender is pinned to (default: the highest one available).")] = None,
    profile: Annotated[Path | None, typer.Option("--profile", help="Also run the replay once more under cProfile (same pinned child, warmed up) and write the stats here.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed replays, each in a fresh child; the median by CPU time is reported.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every figure (with wall-clock times) as JSON.")] = None,
) -> None:
    """Time ptebench's simulate-mode replay of a real capture tiled to 10 M events against buddy_ref.run, the
    minimal numba buddy loop, in the same run on one core; memory per event and per simulated page."""
    opts = bench_replay.ReplayBenchOptions(capture=capture, events=events, ref_ops=ref_ops, ref_live=ref_live,
                                           ref_npages=ref_npages, work_dir=work_dir, baselines=baselines, cpu=cpu,
                                           profile=profile, repeats=repeats)
    _run(opts, bench_replay.run_replay_bench, print_replay_result, json_out)


def _run(opts: Any, bench: Any, show: Any, json_out: Path | None) -> None:
    """Check the options, run one benchmark under a progress display, print it, write its JSON."""
    opts.check()  # bad options fail before anything runs
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        result = bench(opts, progress)
    show(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        console.print(f"wrote {json_out}")
