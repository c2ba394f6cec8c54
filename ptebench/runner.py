"""``replay()`` and ``validate()``: an ingested trace through the direct-map model, compared with the kernel."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ptebench import policies
from ptebench.engine import addresses as A
from ptebench.engine.consumers import Consumers
from ptebench.engine.faithful import FaithfulEngine, Options
from ptebench.engine.memory import replay_settings
from ptebench.engine.prepass import VFREE_FRAMES, prepass  # noqa: F401  (re-exported)
from ptebench.engine.simulate import SimulateEngine
from ptebench.engine.store import EventStore
from ptebench.engine.stream import CPA_APIS, K_CPA, REPLAY_COLUMNS, KprobeRows, first_ts, iter_chunks
from ptebench.errors import PtebenchError
from ptebench.results import KERNEL_KEYS, SPLIT_COLUMNS, Result
from ptebench.sim.dmap import DirectMap
from ptebench.trace import Trace, load

MODES = ("faithful", "simulate")
#: the most memory the replay's column store (``engine/store.py``) may take (worst case ~32 B an event: about
#: 33 M events); longer traces are decoded twice instead, so the replay's memory stays bounded
STORE_MAX_BYTES = 1 << 30
TRACING_PREFIXES = ("trace_", "__trace_", "ftrace_", "kprobe", "perf_", "__ftrace", "stack_trace", "arch_stack_walk")


@dataclass
class Setup:
    """Everything a replay starts from, with where each piece came from."""

    dmap: DirectMap
    layout_from: str
    vmstat_before: dict[str, int]
    running_from_ns: int | None
    running_from: str


def _trace(trace: str | Path | Trace) -> Trace:
    return trace if isinstance(trace, Trace) else load(trace)


def trace_identity(trace: Trace) -> dict[str, str]:
    bundle = trace.bundle
    sources = trace.meta.get("sources") or []
    name = bundle["name"] if bundle else Path(sources[0]["name"]).name if sources else trace.path.stem
    shas = [s.get("sha256", "") for s in sources]
    sha = shas[0] if len(shas) == 1 else hashlib.sha256("".join(shas).encode()).hexdigest()
    return {"name": name, "sha256": sha}


def setup(trace: Trace, *, initial: str = "auto", gbpages: bool = True, kernel: tuple[int, int] = (6, 1),
          running_from: str | int | None = "auto", memmap: str | Path | None = None) -> Setup:
    """The initial direct map, vmstat counters and SYSTEM_RUNNING moment for one trace.

    Layout: the bundle's dmdump-before; else the boot rules on a memory map (``memmap``: a
    ``/proc/iomem``, ``/sys/firmware/memmap`` listing or dmesg's ``BIOS-e820`` lines; else the
    bundle's; else one RAM range up to the highest pfn the trace names, said so in the result).
    """
    bundle = trace.bundle or {}
    snaps = bundle.get("snapshots") or {}
    before = snaps.get("before") or {}
    if initial not in ("auto", "dump", "rules"):
        raise PtebenchError(f"unknown initial layout {initial!r}", expected="auto, dump or rules")
    if memmap is not None:
        if initial == "dump":
            raise PtebenchError("--initial dump and --memmap exclude each other", expected="one of them")
        dmap, layout_from = _memmap_file_layout(Path(memmap), gbpages=gbpages, kernel=kernel)
    elif initial in ("auto", "dump") and before.get("dmdump"):
        dmap = DirectMap.from_dump(before["dmdump"], kernel=kernel, gbpages=gbpages)
        layout_from = "dmdump-before.txt"
    elif initial == "dump":
        raise PtebenchError("the capture has no direct-map dump before the trace", file=str(trace.path),
                            expected="a bundle with dmdump-before.txt, or --initial rules")
    else:
        dmap, layout_from = _rule_layout(trace, bundle, gbpages=gbpages, kernel=kernel)
    vmstat = before.get("vmstat") or {}
    dmap.set_vmstat(vmstat)
    ts0 = first_ts(trace)
    if running_from == "auto":
        ns = bundle.get("system_running_ns")
        if ns is not None and ts0 < ns:
            run_ns, run_from = int(ns), f"dmesg 'Run /init as init process' at {ns / 1e9:.6f} s"
        else:
            run_ns, run_from = None, "running throughout (trace starts after SYSTEM_RUNNING)"
    elif running_from is None or running_from == "start":
        run_ns, run_from = None, "running throughout (--running-from start)"
    else:
        try:
            run_ns = int(running_from)
        except (TypeError, ValueError) as exc:
            raise PtebenchError(f"bad --running-from {running_from!r}", expected="auto, start or nanoseconds") from exc
        run_from = f"--running-from {run_ns} ns"
    return Setup(dmap, layout_from, {k: int(v) for k, v in vmstat.items()}, run_ns, run_from)


def _rule_layout(trace: Trace, bundle: dict[str, Any], *, gbpages: bool, kernel: tuple[int, int]):
    """The direct map ``init_mem_mapping()`` builds from the capture's memory map (``sim/layout.py``)."""
    from ptebench.sim import layout

    memmap = bundle.get("memmap") or {}
    if memmap.get("firmware"):
        mm, src = memmap["firmware"], "firmware-memmap.txt"
    elif memmap.get("iomem"):
        mm, src = layout.memmap_from_iomem(memmap["iomem"]), "iomem.txt"
    else:
        top = pc.max(trace.table.column("pfn")).as_py()
        if top is None:
            raise PtebenchError("no initial direct-map layout: no dump, no memory map and no pfn in the trace",
                                file=str(trace.path), expected="a capture bundle, or --memmap FILE")
        end = ((int(top) >> 18) + 1) << 30  # whole GiBs up to the highest pfn the trace names
        mm = [{"start": 0, "end": 0x9FBFF, "type": "System RAM"}, {"start": 0x100000, "end": end - 1,
                                                                    "type": "System RAM"}]
        src = f"a synthetic memory map (RAM 1 MiB-{end >> 30} GiB: no bundle, pass --memmap for the real one)"
    dm = layout.layout_from_memmap(mm, gbpages=gbpages, kernel=kernel)
    return dm, f"boot rules ({'gbpages' if gbpages else 'nogbpages'}) from {src}"


def _memmap_file_layout(path: Path, *, gbpages: bool, kernel: tuple[int, int]):
    """Boot rules on a memory-map file: dmesg BIOS-e820 lines, /proc/iomem or a firmware memmap listing."""
    from ptebench.parse import bundle as B
    from ptebench.sim import layout

    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PtebenchError(f"cannot read memory map ({exc.strerror})", file=str(path)) from exc
    if "BIOS-e820" in text:
        mm, kind = layout.parse_dmesg_e820(text, file=str(path)), "dmesg BIOS-e820"
    elif " : " in text:
        mm, kind = layout.memmap_from_iomem(B.parse_iomem(text, file=str(path))), "/proc/iomem"
    else:
        mm, kind = B.parse_firmware_memmap(text, file=str(path)), "firmware memmap"
    dm = layout.layout_from_memmap(mm, gbpages=gbpages, kernel=kernel)
    return dm, f"boot rules ({'gbpages' if gbpages else 'nogbpages'}) from {path} ({kind})"


@replay_settings  # huge pages off, malloc thresholds at their maxima (engine/memory.py)
def replay(trace: str | Path | Trace, *, variant: str = "none", mode: str = "faithful", consumers: str | Path |
           None = None, use_kprobes: bool = True, initial: str = "auto", gbpages: bool = True,
           kernel: tuple[int, int] = (6, 1), running_from: str | int | None = "auto",
           witness_driven: bool = True, memmap: str | Path | None = None, chunk_rows: int = 1 << 18,
           unseen_reuse: bool = True) -> Result:
    """Replay an ingested trace through the direct-map model and return the kernel-named counters.

    ``mode="faithful"`` keeps every page where the kernel put it and applies each consumer's
    direct-map changes there; splits come only from the CPA model (see ``engine/faithful.py``).
    ``mode="simulate"`` lets the modeled buddy allocator (``sim/buddy.py``, started from
    buddyinfo-before, ``sim/buddy_init.py``) choose every pfn (``engine/simulate.py``); the
    result carries the model's ``placement`` beside the kernel's (``placement_kernel``).
    ``witness_driven=False`` reports the witnesses of calls the model cannot place as
    unexplained instead of counting them as splits of unknown region.
    ``unseen_reuse`` (simulate): a page the trace frees twice with no ``mm_page_alloc`` between was
    reallocated by ``__alloc_pages_bulk()``, which fires no event; the model keeps it allocated
    from the first free on (the bulk allocator takes the pcp head that free just filled).  Off:
    the model frees it and ignores the second free.
    """
    policy = policies.get(variant)
    if mode not in MODES:
        raise PtebenchError(f"unknown mode {mode!r}", expected=f"one of {', '.join(MODES)}")
    if mode == "faithful" and policy.intercepts:
        raise PtebenchError(f"variant {variant!r} changes where pages land: it needs --mode simulate",
                            expected="--mode simulate, or --variant none for a faithful replay")
    t0 = time.perf_counter()
    tr = _trace(trace)
    rules = Consumers.load(consumers)
    st = setup(tr, initial=initial, gbpages=gbpages, kernel=kernel, running_from=running_from, memmap=memmap)
    bundle = tr.bundle or {}
    dumps = [s.get("dmdump") for s in (bundle.get("snapshots") or {}).values() if s and s.get("dmdump")]
    amap = A.AddressMap.for_page_offset(dumps[0]["page_offset"] if dumps else None)
    # simulate mode's initial-state scan shares the prepass's read
    scan = _first_event_scan(bundle, tr._file.metadata.num_rows) if mode == "simulate" else None
    kprobes = KprobeRows()  # parsed once, in the prepass
    # the replay's columns, decoded once, in the prepass (a trace too long to keep them is decoded again)
    rows = tr._file.metadata.num_rows
    store = EventStore.for_trace(tr) if rows * EventStore.MAX_BYTES_PER_EVENT <= STORE_MAX_BYTES else None
    binding, pre = prepass(tr, amap, chunk_rows, scan, kprobes, store)
    t1 = time.perf_counter()
    start_counters = st.dmap.counters
    engine = FaithfulEngine(st.dmap, rules, tr.stack_index, amap, binding,
                            Options(use_kprobes=use_kprobes, running_from_ns=st.running_from_ns,
                                    witness_driven=witness_driven, events=tr._file.metadata.num_rows))
    sim = None
    if mode == "simulate":
        sim = _simulate_engine(tr, bundle, st, engine, policy, unseen_reuse, scan)
        scan = None  # its per-pfn arrays are not needed past the initial state
    events = 0
    kprobes.finish()
    chunks = (store.chunks(tr, kprobes) if store is not None
              else iter_chunks(tr, chunk_rows, columns=REPLAY_COLUMNS, kprobes=kprobes, lazy=True, reuse=True))
    for ch in chunks:
        engine.feed(ch)
        if sim is not None:
            sim.feed(ch)
        events += len(ch)
    engine.finish()
    t2 = time.perf_counter()
    end = engine.counters() if sim is None else engine.counters(sim.dmap)
    delta = {k: end[k] - start_counters[k] for k in end}
    result = Result(
        trace=trace_identity(tr), variant=variant, mode=mode,
        scenario=str((bundle.get("meta") or {}).get("workload") or "trace"),
        counters={"end": end, "delta": delta}, kernel=kernel_counters(bundle), witness=engine.witness(),
        timing={"prepare_s": round(t1 - t0, 6), "replay_s": round(t2 - t1, 6),
                "events_per_s": round(events / max(t2 - t1, 1e-9), 1),
                **({} if sim is None else {"model_cpu_s": round(sim.model_cpu_s, 6)})},
        pairing=engine.pairing.stats,
        placement=engine.placement_result() if sim is None else sim.placement(),
        consumers={rules.names[i]: int(n) for i, n in enumerate(engine.consumer_allocs) if n},
        engine={"events": events, "layout_from": st.layout_from, "running_from": st.running_from,
                "consumer_rules": rules.source, "use_kprobes": use_kprobes, "witness_driven": witness_driven,
                "kernel": ".".join(map(str, kernel)),
                "gbpages": gbpages, **pre, **engine.public_stats()},
        warnings=_warnings(tr, engine),
        splits=_split_table(engine, tr) if sim is None else _sim_split_table(sim, engine, tr),
    )
    if sim is None:
        result.regions = region_check(result, st.dmap, bundle, engine)
    else:
        result.placement_kernel = engine.placement_result()
        result.simulate = {**sim.stats(), **sim.init_stats, "buddy": sim.buddy.counters, "policy": policy.stats(),
                           "buddyinfo_end": sim.buddy.buddyinfo(), "buddyinfo_distance_after": sim.distance_after}
        faithful_end = engine.counters()
        result.faithful = {"delta": {k: faithful_end[k] - start_counters[k] for k in KERNEL_KEYS}}
    return result


def _first_event_scan(bundle: dict[str, Any], events: int | None = None) -> Any:
    """The initial-state scan of simulate mode (``sim/buddy_init.py``), when the bundle has what it needs."""
    from ptebench.sim.buddy_init import FirstEventScan, memmap_zones

    before = ((bundle.get("snapshots") or {}).get("before") or {}).get("buddyinfo")
    memmap = (bundle.get("memmap") or {}).get("firmware")
    if not before or not memmap:
        return None  # _simulate_engine() says what is missing
    return FirstEventScan(memmap_zones(memmap)[2], events=events)


def _simulate_engine(tr: Trace, bundle: dict[str, Any], st: Setup, engine: FaithfulEngine,
                     policy: policies.Policy, unseen_reuse: bool = True, scan: Any = None) -> SimulateEngine:
    """The modeled buddy at the trace's start (buddyinfo-before) and a copy of the initial direct map."""
    from ptebench.sim import buddy as B
    from ptebench.sim.buddy_init import buddyinfo_distance, initial_state

    snaps = bundle.get("snapshots") or {}
    before = (snaps.get("before") or {}).get("buddyinfo")
    memmap = (bundle.get("memmap") or {}).get("firmware")
    if not before or not memmap:
        raise PtebenchError("simulate mode needs the capture's buddyinfo before the trace and its memory map",
                            file=str(tr.path), expected="a capture bundle with buddyinfo-before.txt and "
                            "firmware-memmap.txt")
    init = initial_state(tr, memmap=memmap, buddyinfo=before, first=scan.result() if scan else None)
    ncpus = max(int(c) for c in (tr.meta.get("cpus") or [0])) + 1
    buddy = B.Buddy.from_zones(init.zones, ncpus)
    buddy.set_free_blocks(init.blocks, init.pageblock_mt[: len(buddy.state["pbmt"])], absent=init.absent)
    init.stats["pcp_blocks_above_high"] = buddy.set_pcp_blocks(init.pcp)
    sim_dmap = DirectMap(len(st.dmap.state["attr4k"]), kernel=st.dmap.kernel, gbpages=st.dmap.gbpages)
    for key, arr in st.dmap.state.items():
        sim_dmap.state[key][:] = arr
    sim = SimulateEngine(engine, sim_dmap, buddy, policy)
    # __alloc_pages_bulk() allocates without an event: a page freed and freed again stays allocated in
    # the model, one taken off the buddy and then freed is allocated there (engine/simulate.py), unless
    # the allocation is a module/vmalloc area that the kprobes recreate
    areas = [(a.created, a.pfns) for a in engine.binding.areas if a.pfns is not None]
    rf, un = _not_in_later_area(init.refreed, areas), _not_in_later_area(init.unseen, areas)
    init.stats["unseen_by_area"] = len(init.refreed) - len(rf) + len(init.unseen) - len(un)
    sim.refreed = rf[:, 0].copy() if unseen_reuse else np.zeros(0, np.int64)
    sim.unseen = np.unique(un[:, 0]) if unseen_reuse else np.zeros(0, np.int64)
    sim.init_stats = {f"init_{k}": v for k, v in init.stats.items() if k != "blocks_short"}
    after = (snaps.get("after") or {}).get("buddyinfo")
    sim.distance_after = None
    if after:
        sim.after_buddyinfo = after
        sim.distance_fn = buddyinfo_distance
    return sim


def _not_in_later_area(rows: np.ndarray, areas: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """The [row, pfn, next free row] triples whose page no module/vmalloc area created between the row and
    the page's next free holds (that area's recreation is the unseen allocation)."""
    if not areas or not len(rows):
        return rows
    created = np.repeat(np.array([c for c, _ in areas], np.int64), [len(p) for _, p in areas])
    pfns = np.concatenate([p for _, p in areas])
    o = np.lexsort((created, pfns))
    pfns, created = pfns[o], created[o]
    key = pfns * (1 << 40) + created  # the page's first area created after the row: before its next free?
    at = np.searchsorted(key, rows[:, 1] * (1 << 40) + rows[:, 0], side="right")
    found = at < len(key)
    at = np.minimum(at, len(key) - 1)
    recreated = found & (pfns[at] == rows[:, 1]) & (created[at] < rows[:, 2])
    return rows[~recreated]


def _sim_split_table(sim: SimulateEngine, engine: FaithfulEngine, tr: Trace) -> pd.DataFrame:
    """Splits of the simulate model (at the model's pfns) plus the unplaceable ones."""
    sim.finish()
    rows = []
    for op, pfn, level, kind in sim.dmap.events().tolist():
        name, ts, line, stack = sim.origin_info(op)
        rows.append({"ts_ns": ts, "line": line, "kind": "collapse" if kind else "split",
                     "level": level, "pfn": pfn, "region_2m": pfn >> 9, "phys": f"{pfn << 12:#x}",
                     "consumer": name, "source": "simulate",
                     "running": engine.opt.running_from_ns is None or ts >= engine.opt.running_from_ns,
                     "witness_line": -1, "frames": _frames_of(tr, stack)})
    for r in engine.records:
        if r.source == "witness_driven":
            rows.append({"ts_ns": r.ts_ns, "line": r.line, "kind": r.kind, "level": r.level, "pfn": -1,
                         "region_2m": -1, "phys": "", "consumer": r.consumer, "source": r.source, "running": r.running,
                         "witness_line": r.line, "frames": _frames_of(tr, r.stack)})
    df = pd.DataFrame(rows, columns=SPLIT_COLUMNS).sort_values(["ts_ns", "line"], kind="stable")
    return df.reset_index(drop=True).astype({"ts_ns": "int64", "line": "int64", "level": "int8", "pfn": "int64",
                                             "region_2m": "int64", "running": "bool", "witness_line": "int64"})


def _frames_of(tr: Trace, stack: int) -> str:
    if stack < 0:
        return ""
    fr = [f for f in tr.stack_index.frames(stack) if not f.startswith(TRACING_PREFIXES)]
    return " < ".join(fr[:8])


def kernel_counters(bundle: dict[str, Any]) -> dict[str, Any]:
    """The kernel's own deltas from the bundle's before/after snapshots (vmstat before = 0 for a boot capture)."""
    snaps = bundle.get("snapshots") or {}
    after, before = snaps.get("after") or {}, snaps.get("before") or {}
    if not after.get("vmstat"):
        return {"delta": None, "source": "no kernel counters (not a capture bundle)"}
    delta: dict[str, int | None] = {}
    vb = before.get("vmstat") or {}
    for key in KERNEL_KEYS[:4]:
        if key in after["vmstat"]:
            delta[key] = int(after["vmstat"][key]) - int(vb.get(key, 0))
    mb, ma = before.get("meminfo") or {}, after.get("meminfo") or {}
    for key in KERNEL_KEYS[4:]:
        delta[key] = int(ma[key]) - int(mb[key]) if key in ma and key in mb else None
    src = "vmstat/meminfo after - before" if before else "vmstat-after (boot: counters start at 0); no meminfo before"
    return {"delta": delta, "source": src}


def _sec(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / 1e9:.6f} s"


def _warnings(tr: Trace, engine: FaithfulEngine) -> list[str]:
    out = []
    for loss in tr.meta.get("losses") or []:
        count = loss.get("count") or "an unknown number of"
        cpu = "all CPUs" if loss.get("cpu") is None else f"CPU {loss.get('cpu')}"
        window = f"between {_sec(loss.get('prev_cpu_ts_ns'))} and {_sec(loss.get('next_ts_ns'))}"
        out.append(f"lost events ({loss.get('kind')}, line {loss.get('line')}): {count} events on {cpu} {window} "
                   "are missing from this replay")
    if engine.stats.get("classified_by_gfp"):
        out.append(f"{engine.stats['classified_by_gfp']} allocations had no stack: consumers guessed from gfp flags")
    if engine.w.unexplained:
        out.append(f"{engine.w.unexplained} split page-table allocations (witnesses) the model did not explain")
    return out


def _split_table(engine: FaithfulEngine, tr: Trace) -> pd.DataFrame:
    idx = tr.stack_index
    cache: dict[int, str] = {}

    def frames(stack: int) -> str:
        if stack < 0:
            return ""
        if stack not in cache:
            fr = [f for f in idx.frames(stack) if not f.startswith(TRACING_PREFIXES)]
            cache[stack] = " < ".join(fr[:8])
        return cache[stack]

    rows = []
    for r in sorted(engine.records, key=lambda r: (r.ts_ns, r.line)):
        rows.append({"ts_ns": r.ts_ns, "line": r.line, "kind": r.kind, "level": r.level, "pfn": r.pfn,
                     "region_2m": r.pfn >> 9 if r.pfn >= 0 else -1, "phys": f"{r.pfn << 12:#x}" if r.pfn >= 0 else "",
                     "consumer": r.consumer, "source": r.source, "running": r.running,
                     "witness_line": r.witness_line, "frames": frames(r.stack)})
    df = pd.DataFrame(rows, columns=SPLIT_COLUMNS)
    return df.astype({"ts_ns": "int64", "line": "int64", "level": "int8", "pfn": "int64", "region_2m": "int64",
                      "running": "bool", "witness_line": "int64"})


def region_check(result: Result, dmap: DirectMap, bundle: dict[str, Any], engine: FaithfulEngine) -> dict[str, Any]:
    """The 2M regions the model leaves 4K-mapped against the dump after the trace.

    Splits the model could not place (witness_driven, on the direct map) and splits the
    bundle records as untraced (the dump module's own load in ``boot``) are allowed to be
    missing from the model, in that number exactly.
    """
    snaps = bundle.get("snapshots") or {}
    dump = (snaps.get("after") or {}).get("dmdump")
    if not dump:
        return {}
    model = set(dmap.regions_on_4k())
    kernel = set(dump["regions_2m_on_4k"])
    untraced = 0
    post = snaps.get("after-dmdump-insmod") or {}
    if post.get("vmstat") and (snaps.get("after") or {}).get("vmstat"):
        untraced = int(post["vmstat"].get("direct_map_level2_splits", 0)) - int(
            snaps["after"]["vmstat"].get("direct_map_level2_splits", 0))
    unplaced = sum(1 for r in engine.records if r.source == "witness_driven" and r.level == 2
                   and r.consumer != "highmap")
    missing = sorted(kernel - model)
    extra = sorted(model - kernel)
    # the region of an unplaced split is unknown, and so (beyond the two-witness rule) is its
    # level: it may be a 1G split or the primary split of a kernel mapping, so it bounds the
    # missing regions from above; with nothing unplaced the sets must be equal
    return {"model": len(model), "kernel": len(kernel), "missing": missing, "extra": extra,
            "unplaced_splits": unplaced, "untraced_splits": untraced,
            "match": not extra and len(missing) <= unplaced + untraced
            and (unplaced > 0 or len(missing) == untraced)}


def validate(bundle_or_trace: str | Path | Trace, **kw: Any) -> tuple[Result, list[tuple[str, bool, str]]]:
    """Replay a capture faithfully and check it against the kernel's own counters and dumps."""
    result = replay(bundle_or_trace, **kw)
    checks: list[tuple[str, bool, str]] = []
    kd = result.kernel.get("delta") or {}
    for key in KERNEL_KEYS:
        if kd.get(key) is None:
            continue
        model = result.counters["delta"][key]
        checks.append((f"vmstat/meminfo {key} delta", model == kd[key], f"model {model:+d}, kernel {kd[key]:+d}"))
    reg = result.regions
    if reg:
        checks.append(("2M regions mapped by 4K after the trace", bool(reg["match"]),
                       f"model {reg['model']}, dump {reg['kernel']}; extra {reg['extra'][:8]}, missing "
                       f"{reg['missing'][:8]} (allowed missing: {reg['unplaced_splits']} unplaced + "
                       f"{reg['untraced_splits']} untraced)"))
    w = result.witness
    checks.append(("witnesses: every split page-table allocation explained", w["witness_unexplained"] == 0,
                   f"bound {w['witness_bound']}, driven {w['witness_driven']}, unexplained {w['witness_unexplained']}"))
    checks.append(("witnesses: every model split has its witness", w["split_without_witness"] == 0,
                   f"split_without_witness {w['split_without_witness']}"))
    return result, checks


__all__ = ["replay", "validate", "Result", "CPA_APIS", "K_CPA"]
