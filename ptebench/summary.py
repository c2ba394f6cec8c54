"""Summaries of an ingested trace, in the spirit of ``perf kmem stat --page``.

Each function takes a :class:`~ptebench.trace.Trace` and returns plain data
(pandas frames, dicts) so the CLI, notebooks and tests share one computation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ptebench.parse.events import MIGRATETYPES_4_4
from ptebench.trace import Trace

ALLOC = "mm_page_alloc"
FREE_EVENTS = ("mm_page_free", "mm_page_free_batched")


def overview(trace: Trace) -> dict[str, Any]:
    """Rows, time span, CPUs, sources, stacks and data-quality counters."""
    meta = trace.meta
    ts = trace.table.column("ts_ns")
    first = ts[0].as_py() if len(ts) else None
    last = ts[len(ts) - 1].as_py() if len(ts) else None
    return {
        "rows": meta["rows"],
        "first_ts_ns": first,
        "last_ts_ns": last,
        "span_ns": (last - first) if first is not None else 0,
        "ts_resolution_ns": meta.get("ts_resolution_ns"),
        "cpus": meta["cpus"],
        "kernel_release": meta.get("kernel_release"),
        "sources": [s["name"] for s in meta["sources"]],
        "stacks": meta["stacks"],
        "format": meta.get("format"),
        "kernel_era": meta.get("kernel_era"),
        "gfp_table": meta.get("gfp_table"),
        "gfp_table_from": meta.get("gfp_table_from", ""),
        "migratetype_table": meta.get("migratetype_table"),
        "source_formats": meta.get("source_formats", []),
        "losses": meta["losses"],
        "skipped": meta["skipped"],
        "warnings": meta["warnings"],
        "inversions_per_cpu": meta["inversions_per_cpu"],
    }


def loss_table(trace: Trace) -> pd.DataFrame:
    """Lost-data records in input order: where each one is and the time window it leaves empty.

    ``from_ts_ns`` / ``to_ts_ns`` bound the missing data on that CPU (the last event on the CPU
    before the marker and the first after it; null when the trace has none).  An overwritten
    buffer (``entries-in-buffer`` below ``entries-written``) names no CPU: its window ends at the
    first surviving event of the trace.
    """
    rows = []
    for loss in trace.meta.get("losses", []):
        to = loss.get("next_ts_ns")
        if loss["kind"] == "overwritten":
            firsts = list(loss.get("next_ts_ns_per_cpu", {}).values())
            to = min(firsts) if firsts else None
        rows.append({"kind": loss["kind"], "cpu": loss["cpu"], "count": loss["count"], "src": loss["src"],
                     "line": loss["line"], "from_ts_ns": loss.get("prev_cpu_ts_ns"), "to_ts_ns": to})
    columns = ["kind", "cpu", "count", "src", "line", "from_ts_ns", "to_ts_ns"]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("cpu", "count", "src", "line", "from_ts_ns", "to_ts_ns"):
        df[col] = df[col].astype("Int64")
    return df


def loss_windows(trace: Trace) -> dict[int, list[tuple[int | None, int | None, str, int | None]]]:
    """Per CPU, the time windows in which events are missing: ``(from_ts_ns, to_ts_ns, kind, count)``.

    ``None`` bounds are open (the start or the end of the trace).  An overwritten buffer lost the
    oldest events of every CPU: a window from the start to that CPU's first surviving event.
    """
    out: dict[int, list[tuple[int | None, int | None, str, int | None]]] = {}
    for loss in trace.meta.get("losses", []):
        if loss["kind"] == "overwritten":
            for cpu, first in loss.get("next_ts_ns_per_cpu", {}).items():
                out.setdefault(int(cpu), []).append((None, first, loss["kind"], None))
            continue
        out.setdefault(int(loss["cpu"]), []).append(
            (loss.get("prev_cpu_ts_ns"), loss.get("next_ts_ns"), loss["kind"], loss["count"]))
    return {cpu: out[cpu] for cpu in sorted(out)}


def event_counts(trace: Trace) -> pd.DataFrame:
    """Events by type, most frequent first."""
    counts = trace.meta["events"]
    df = pd.DataFrame({"event": list(counts), "count": list(counts.values())})
    return df.sort_values(["count", "event"], ascending=[False, True], ignore_index=True)


def order_by_migratetype(trace: Trace) -> pd.DataFrame:
    """Successful allocations: rows = order, columns = migratetype name (perf kmem's matrix), named
    with the trace's own numbering (``migratetype_names`` in the metadata: it changed in 4.4)."""
    ev = trace.events
    allocs = ev[(ev["event"] == ALLOC) & (ev["failed"] == False)]  # noqa: E712 - nullable boolean
    if allocs.empty:
        return pd.DataFrame()
    names = {int(k): v for k, v in trace.meta.get("migratetype_names", {}).items()} or MIGRATETYPES_4_4
    mt = allocs["migratetype"].astype("Int64").map(lambda m: names.get(int(m), str(m)))
    table = pd.crosstab(allocs["order"].astype("Int64"), mt)
    table.index.name = "order"
    table.columns.name = "migratetype"
    return table


def gfp_table(trace: Trace, top: int = 15) -> pd.DataFrame:
    """Allocation requests and pages per printed gfp string."""
    ev = trace.events
    allocs = ev[ev["event"] == ALLOC]
    if allocs.empty:
        return pd.DataFrame(columns=["gfp", "requests", "pages", "failed"])
    pages = np.left_shift(1, allocs["order"].astype("Int64").fillna(0).astype(np.int64))
    df = pd.DataFrame({"gfp": allocs["gfp"].astype(str), "pages": pages, "failed": allocs["failed"].astype(bool)})
    out = df.groupby("gfp", observed=True).agg(requests=("pages", "size"), pages=("pages", "sum"),
                                               failed=("failed", "sum"))
    out = out.sort_values(["requests", "pages"], ascending=False).head(top).reset_index()
    return out


def alloc_free_summary(trace: Trace) -> dict[str, int]:
    """The counts perf kmem prints under SUMMARY (page allocator), by pfn within the trace."""
    ev = trace.events
    allocs = ev[ev["event"] == ALLOC]
    frees = ev[ev["event"] == "mm_page_free"]  # batched frees also emit mm_page_free
    ok = allocs[allocs["failed"] == False]  # noqa: E712
    alloc_pfns = set(ok["pfn"].dropna().astype(np.int64).tolist())
    free_pfns = set(frees["pfn"].dropna().astype(np.int64).tolist())
    return {
        "allocation_requests": len(allocs),
        "allocation_failures": int((allocs["failed"] == True).sum()),  # noqa: E712
        "free_requests": len(frees),
        "alloc_pages": int(np.left_shift(1, ok["order"].astype(np.int64)).sum()),
        "free_pages": int(np.left_shift(1, frees["order"].astype(np.int64)).sum()),
        "pfns_alloc_and_freed": len(alloc_pfns & free_pfns),
        "pfns_alloc_only": len(alloc_pfns - free_pfns),
        "pfns_free_only": len(free_pfns - alloc_pfns),
    }


def top_frames(trace: Trace, event: str = ALLOC, top: int = 15, skip: tuple[str, ...] = ("__alloc_pages",)) -> pd.DataFrame:
    """The most common callers in ``event``'s stacks: first frame outside the allocator core."""
    ev = trace.events
    sids = ev.loc[ev["event"] == event, "stack_id"].dropna().astype(np.int64)
    if sids.empty:
        return pd.DataFrame(columns=["frame", "events"])
    per_stack = sids.value_counts()
    index = trace.stack_index
    counter: Counter[str] = Counter()
    for sid, n in per_stack.items():
        frames = [f for f in index.frames(int(sid)) if f not in skip]
        counter[frames[0] if frames else "(empty)"] += int(n)
    rows = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return pd.DataFrame(rows, columns=["frame", "events"])


def kernel_counters(trace: Trace) -> pd.DataFrame:
    """The capture's own direct-map counters per snapshot (vmstat splits, dmdump totals)."""
    bundle = trace.bundle
    if not bundle:
        return pd.DataFrame()
    rows = []
    snaps = bundle.get("snapshots", {})
    order = sorted(snaps, key=lambda s: (0 if s == "before" else 2 if s.startswith("after") else 1, s))
    for snap in order:
        kinds = snaps[snap]
        row: dict[str, Any] = {"snapshot": snap}
        vm = kinds.get("vmstat", {})
        for key in ("direct_map_level2_splits", "direct_map_level3_splits"):
            if key in vm:
                row[key] = vm[key]
        dump = kinds.get("dmdump")
        if dump:
            row.update({f"dump_{k}": v for k, v in dump["totals_kB"].items()})
            row["dump_2M_regions_on_4K"] = len(dump["regions_2m_on_4k"])
        rows.append(row)
    return pd.DataFrame(rows)
