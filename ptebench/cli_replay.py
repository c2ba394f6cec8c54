"""``ptebench replay`` and ``ptebench validate``: registered on the main typer app (see cli.py)."""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ptebench.api import ingest as api_ingest
from ptebench.cli import app, console, err_console, frame_table
from ptebench.engine.consumers import ALLOCATOR_FRAMES
from ptebench.errors import PtebenchError
from ptebench.policies import REGISTRY
from ptebench.results import Result, write_json, write_splits
from ptebench.runner import MODES, replay, validate
from ptebench.trace import Trace, load

TraceArg = Annotated[Path, typer.Argument(help="An ingested trace (.parquet), or a capture bundle / trace text file "
                                                "(ingested on the fly into a temporary file).")]


@contextmanager
def _open(path: Path):
    """A Trace for a Parquet file, or for anything ``ingest`` reads (ingested into a temporary file)."""
    if path.is_file() and path.suffix == ".parquet":
        yield load(path)
        return
    if not path.exists():
        raise PtebenchError("no such file or directory", file=str(path))
    with tempfile.TemporaryDirectory(prefix="ptebench-") as tmp:
        out = Path(tmp) / "trace.parquet"
        with Progress(SpinnerColumn(), TextColumn(f"ingesting {path}"), TimeElapsedColumn(), console=err_console,
                      transient=True) as progress:
            progress.add_task("ingest", total=None)
            api_ingest([str(path)], out)
        yield load(out)


def _replay_kw(consumers, no_kprobes, initial, running_from, nogbpages, kernel, no_driven=False, memmap=None,
               no_unseen_reuse=False) -> dict:
    try:
        major, minor = (int(x) for x in kernel.split(".")[:2])
    except ValueError as exc:
        raise PtebenchError(f"bad --kernel {kernel!r}", expected="MAJOR.MINOR, e.g. 6.1 or 6.15") from exc
    return {"consumers": consumers, "use_kprobes": not no_kprobes, "initial": initial, "running_from": running_from,
            "gbpages": not nogbpages, "kernel": (major, minor), "witness_driven": not no_driven,
            "memmap": memmap, "unseen_reuse": not no_unseen_reuse}


ConsumersOpt = Annotated[Path | None, typer.Option("--consumers", help="Consumer rules TOML (default: the bundled "
                                                                       "ptebench/consumers.toml).")]
NoKprobesOpt = Annotated[bool, typer.Option("--no-kprobes", help="Ignore dm_*/cpa_* kprobe events, as for a trace "
                                                                 "recorded without them.")]
InitialOpt = Annotated[str, typer.Option("--initial", help="Initial direct map: auto (dump, else boot rules), dump, "
                                                          "rules.")]
RunningOpt = Annotated[str, typer.Option("--running-from", help="SYSTEM_RUNNING moment, before which vmstat does not "
                                                               "count splits: auto (dmesg 'Run /init'), start, or ns.")]
NoGbOpt = Annotated[bool, typer.Option("--nogbpages", help="Rule-built layouts without 1G pages (nogbpages).")]
NoDrivenOpt = Annotated[bool, typer.Option("--no-witness-driven", help="Report witnesses of calls the model cannot "
                                         "place as unexplained instead of counting them as splits of unknown region.")]
KernelOpt = Annotated[str, typer.Option("--kernel", help="Kernel version whose CPA rules apply (collapse from 6.15).")]


def _print_result(result: Result, top: int) -> None:
    console.print(f"[bold]{result.trace['name']}[/]  variant {result.variant}  mode {result.mode}  "
                  f"scenario {result.scenario}  ({result.engine['events']:,} events, layout from "
                  f"{result.engine['layout_from']}; {result.engine['running_from']})")
    comp = result.comparison()
    console.print(frame_table(comp, "direct-map counters: model vs kernel"))
    w = result.witness
    console.print(f"witnesses: bound {w['witness_bound']}, driven {w['witness_driven']}, unexplained "
                  f"{w['witness_unexplained']}, splits without witness {w['split_without_witness']}")
    p = result.pairing
    console.print(f"pairing: {p['paired_frees']:,} frees paired, {p['unpaired_frees']:,} unpaired (allocated before "
                  f"the trace or by the bulk allocator), {p['piece_frees']:,} order-0 pieces, "
                  f"{p['batched_duplicates']:,} batched duplicates, {p['failed_allocs']:,} failed allocations")
    _print_placement(result)
    if len(result.splits):
        df = result.splits.head(top)
        show = pd.DataFrame({
            "time_s": (df["ts_ns"] / 1e9).map(lambda v: f"{v:.6f}"), "line": df["line"], "kind": df["kind"],
            "level": df["level"].map({2: "2M", 3: "1G"}), "phys": df["phys"], "consumer": df["consumer"],
            "source": df["source"], "counted": df["running"].map({True: "yes", False: "boot"}),
            "caller": df["frames"].map(_caller)})
        console.print(frame_table(show, f"who split the direct map ({len(df)} of {len(result.splits)})"))
        by = result.splits.groupby(["consumer", "kind", "level"]).size().rename("count").reset_index()
        console.print(frame_table(by, "splits and collapses by consumer"))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def _print_placement(result: Result) -> None:
    """Where unmovable pages landed (engine/placement.py): the model's beside the kernel's in simulate mode."""
    if not result.placement:
        return
    keys = list(result.placement)
    table = pd.DataFrame({"measure": keys, "model": [result.placement[k] for k in keys]})
    kern = result.placement_kernel
    if kern:
        table["kernel"] = [kern.get(k) for k in keys]
        table["error"] = [f"{(m - k) / k:+.1%}" if k else ("0" if m == k else "") for m, k in
                          zip(table["model"], table["kernel"], strict=True)]
    console.print(frame_table(table, "placement: model vs kernel" if kern else "placement (the kernel's pfns)"))
    sim = result.simulate
    if sim:
        dist = sim.get("buddyinfo_distance_after") or {}
        console.print(f"start state: {sim.get('init_free_pages', 0):,} free pages as buddyinfo-before, "
                      f"{sim.get('init_pcp_blocks_at_start', 0):,} blocks on per-CPU lists; unseen bulk allocations "
                      f"{sim.get('init_allocations_unseen', 0):,}, re-frees kept {sim.get('init_frees_reallocated_unseen', 0):,}; "
                      f"frees rejected {sim.get('free_rejected', 0):,}, unmapped {sim.get('free_unmapped', 0):,}; "
                      f"buddyinfo-after distance {dist.get('blocks', '?')} blocks")


def _caller(frames: str) -> str:
    parts = [f for f in frames.split(" < ") if f and f not in ALLOCATOR_FRAMES]
    return " < ".join(parts[:3])


@app.command("replay")
def replay_cmd(
    trace: TraceArg,
    variant: Annotated[str, typer.Option(help=f"Allocator design: {', '.join(sorted(REGISTRY))}.")] = "none",
    mode: Annotated[str, typer.Option(help=f"Replay mode: {', '.join(MODES)}.")] = "faithful",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results JSON here.")] = None,
    splits_out: Annotated[Path | None, typer.Option("--splits", help="Write the split attribution table "
                                                                     "(Parquet) here.")] = None,
    consumers: ConsumersOpt = None, no_kprobes: NoKprobesOpt = False, initial: InitialOpt = "auto",
    running_from: RunningOpt = "auto", nogbpages: NoGbOpt = False, kernel: KernelOpt = "6.1",
    no_witness_driven: NoDrivenOpt = False,
    memmap: Annotated[Path | None, typer.Option("--memmap", help="Memory map for a trace without a capture bundle: "
                                                "dmesg (BIOS-e820 lines), /proc/iomem or a firmware memmap listing; "
                                                "the initial direct map is built from it by the boot rules.")] = None,
    top: Annotated[int, typer.Option(help="Rows of the split table to print.")] = 20,
    no_unseen_reuse: Annotated[bool, typer.Option("--no-unseen-reuse", help="Simulate: free a page the trace frees "
                                                  "twice with no allocation between (default: keep it allocated, as "
                                                  "__alloc_pages_bulk() reallocated it without an event).")] = False,
) -> None:
    """Replay a trace through the direct-map model: split counts, direct-map composition, who split it."""
    kw = _replay_kw(consumers, no_kprobes, initial, running_from, nogbpages, kernel, no_witness_driven, memmap,
                    no_unseen_reuse)
    with _open(trace) as tr:
        result = replay(tr, variant=variant, mode=mode, **kw)
    _print_result(result, top)
    if json_out is not None:
        write_json([result], json_out)
        console.print(f"wrote {json_out}")
    if splits_out is not None:
        write_splits(result, splits_out)
        console.print(f"wrote {splits_out}")


@app.command("validate")
def validate_cmd(
    bundle: Annotated[Path, typer.Argument(help="A capture bundle directory, or its ingested .parquet.")],
    consumers: ConsumersOpt = None, no_kprobes: NoKprobesOpt = False, initial: InitialOpt = "auto",
    running_from: RunningOpt = "auto", nogbpages: NoGbOpt = False, kernel: KernelOpt = "6.1",
) -> None:
    """Replay a capture faithfully and print one verdict per check against the kernel's own counters and dumps."""
    kw = _replay_kw(consumers, no_kprobes, initial, running_from, nogbpages, kernel)
    with _open(bundle) as tr:
        if not isinstance(tr, Trace) or tr.bundle is None:
            raise PtebenchError("not a capture bundle: nothing to validate against", file=str(bundle),
                                expected="a directory with trace.txt.xz, vmstat-*.txt, dmdump-*.txt")
        result, checks = validate(tr, **kw)
    console.print(f"[bold]{result.trace['name']}[/]: faithful replay, layout from {result.engine['layout_from']}")
    for name, ok, detail in checks:
        mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
        console.print(f"{mark} {name}: {detail}")
    failed = sum(1 for _, ok, _ in checks if not ok)
    if failed:
        err_console.print(f"{failed} of {len(checks)} checks failed", style="bold red")
        raise typer.Exit(1)
    console.print(f"all {len(checks)} checks passed")


__all__ = ["replay_cmd", "validate_cmd", "pd"]
