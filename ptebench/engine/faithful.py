"""Faithful replay: every page stays where the kernel put it; splits come only from the CPA model.

For each event of the stream (in chunks, with persistent state):

- a consumer with direct-map actions (``consumers.toml``: secretmem) applies them at the
  pfns of its allocation and of its frees (found by the pairing);
- ``set_direct_map_*_noflush`` kprobes apply their change at the page they name, unless
  the page belongs to a live allocation whose consumer already made that change (then the
  kprobe only confirms it): this covers module and vmalloc pages, which the trace never
  shows being allocated;
- ``set_memory_*`` kprobes apply the change the kernel makes to the direct map
  (arch/x86/mm/pat/set_memory.c): on a direct-map address, the change itself; on a
  kernel-image or module address, the direct-map alias (``cpa_process_alias()``), which is
  skipped for NX-only changes (``checkalias`` is off for ``_PAGE_NX``).  Module pages come
  from the area binding (``areas.py``).
- the page-table allocations under ``__change_page_attr_set_clr`` are *witnesses*: each is
  bound to a split the model made in the same CPA call (``witness_bound``); a witness in a
  call the model could place but did not split is ``witness_unexplained``; a witness in a
  call on an address whose pages the trace never reveals (a module never unloaded, a
  set_memory_* call with no kprobe, the kernel image's own high mapping) is counted as a
  split of unknown region (``witness_driven``) so that counts still match the kernel.
  Two such witnesses in one call at the same depth are a level-3 then a level-2 split.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptebench.engine import addresses as A
from ptebench.engine.areas import AreaBinding
from ptebench.engine.consumers import Consumers
from ptebench.engine.faithful_rows import chunk_rows, classify_rows
from ptebench.engine.pairing import Pairing
from ptebench.engine.placement import MIGRATE_UNMOVABLE, Placement
from ptebench.engine.scratch import Reused
from ptebench.engine.stream import CPA_APIS, K_ALLOC, K_CPA, K_DM_DEFAULT, K_DM_INVALID, Chunk
from ptebench.sim import directmap as D
from ptebench.sim.dmap import DirectMap, Ops

#: kprobe API -> (set, clr) on the direct map, and whether cpa_process_alias() runs for it
CPA_MASKS = {
    "set_memory_ro": (0, D.ATTR_RW, True), "set_memory_rw": (D.ATTR_RW, 0, True),
    "set_memory_x": (0, D.ATTR_NX, False), "set_memory_nx": (D.ATTR_NX, 0, False),
    "set_memory_np": (0, D.ATTR_P, True), "set_memory_4k": (0, 0, True),
    "set_memory_rox": (0, D.ATTR_RW, True),
}
#: CPA_MASKS as arrays by CPA_APIS index (set, clear, alias), and each API's own op flags: set_memory_4k forces
#: 4K pages, set_memory_rox may collapse
_CPA_SET, _CPA_CLR = (np.array([CPA_MASKS[api][i] for api in CPA_APIS], np.int64) for i in (0, 1))
_CPA_ALIAS = np.array([CPA_MASKS[api][2] for api in CPA_APIS], dtype=bool)
_CPA_FLAGS = np.array([(D.F_FORCE_SPLIT | D.F_KERNEL_4K if api == "set_memory_4k" else 0)
                       | (D.F_COLLAPSE if api == "set_memory_rox" else 0) for api in CPA_APIS], np.int64)
_DIRECT, _KERNEL, _MODULE, _UNKNOWN = (A.WHERE.index(w) for w in (A.DIRECT, A.KERNEL, A.MODULE, A.UNKNOWN))
DM_MASKS = {K_DM_INVALID: (0, D.ATTR_P | D.ATTR_RW), K_DM_DEFAULT: (D.ATTR_P | D.ATTR_RW, 0)}
DM_API = {K_DM_INVALID: "set_direct_map_invalid_noflush", K_DM_DEFAULT: "set_direct_map_default_noflush"}
#: frames that name the API a CPA call entered by (innermost match wins)
ENTRY_APIS = tuple(CPA_APIS) + ("set_direct_map_invalid_noflush", "set_direct_map_default_noflush",
                                "set_pages_array_wb", "set_pages_ro", "set_pages_rw", "set_memory_encrypted",
                                "set_memory_decrypted", "set_memory_uc", "set_memory_wb", "set_memory_wc")
CPA_FRAME = "__change_page_attr_set_clr"


@dataclass
class Options:
    use_kprobes: bool = True
    running_from_ns: int | None = None  # None: running throughout
    # count witnesses of unplaceable calls as splits of unknown region (the default), or report them
    # as witness_unexplained and leave the counters to the model alone
    witness_driven: bool = True
    events: int | None = None  # the trace's events, when known (a bound on event indices: smaller state)


@dataclass
class SplitRecord:
    event: int  # global index of the event that caused the CPA call
    ts_ns: int
    line: int
    pfn: int  # base pfn of the region, -1 for witness_driven
    level: int  # 2: a 2M leaf, 3: a 1G leaf
    kind: str  # split / collapse
    source: str  # consumer / kprobe / witness_driven
    consumer: str
    stack: int
    running: bool
    witness: int = -1  # global index of the bound witness
    witness_line: int = -1  # its trace line
    group: tuple = ()  # witness_driven: the CPA call it belongs to


@dataclass
class WitnessState:
    bound: int = 0
    unexplained: int = 0
    driven: int = 0
    driven_running_l2: int = 0
    driven_running_l3: int = 0
    driven_l2: int = 0
    driven_l3: int = 0
    reconciled: int = 0
    unexplained_events: list[int] = field(default_factory=list)


class FaithfulEngine:
    def __init__(self, dmap: DirectMap, consumers: Consumers, stack_index, amap: A.AddressMap,
                 binding: AreaBinding, options: Options) -> None:
        self.dmap = dmap
        self.consumers = consumers
        self.amap = amap
        self.binding = binding
        self.opt = options
        self.pairing = Pairing(len(dmap.state["attr4k"]), options.events, reuse=True)
        self.placement = Placement(len(dmap.state["attr4k"]))
        self.stack_cons = consumers.classify_stacks(stack_index)
        self.stack_cons_none = np.append(self.stack_cons, np.int16(-1)).astype(np.int16)
        self.alloc_act, self.free_act = consumers.action_table()
        self.witness_ids = set(consumers.witness_ids().tolist())
        # per consumer id, a witness (page-table pages of a CPA call); the extra last entry is id -1
        self.is_witness = np.zeros(len(consumers.items) + 1, dtype=bool)
        self.is_witness[sorted(self.witness_ids)] = True
        self.has_a = self.alloc_act[:, 3] != 0  # per consumer id: it acts on allocation / on free
        self.has_f = self.free_act[:, 3] != 0
        self.stack_info = _StackInfo(stack_index)
        self.records: list[SplitRecord] = []
        self.w = WitnessState()
        self.stats: dict[str, int] = defaultdict(int)
        self.last_call: dict[int, tuple[str, int, bool, str]] = {}  # pid -> (api, call, placeable, address class)
        self.split_of_call: dict[int, list[int]] = defaultdict(list)  # call -> indices into records, unbound
        self.noprobe_prev: dict[int, tuple[int, tuple]] = {}
        self.vmstat_fix: dict[str, int] = defaultdict(int)
        self.consumer_allocs = np.zeros(len(consumers.items), dtype=np.int64)
        self._run = _RunScratch()
        # the latest chunk's kprobe ops as _ops() decoded them (the simulate engine places the same ones):
        # (direct-map kprobe rows, their set and clear masks, the ops of _cpa_ops(), the set_memory_* kprobe
        # rows), or None
        self.last_kprobes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ per chunk
    def feed(self, ch: Chunk) -> None:
        n = len(ch)
        reused = self._run.reused  # scratch until the next chunk (the simulate engine reads it in between)
        cons_in = reused.get("cons_in", n, self.stack_cons_none.dtype)
        nostack, dm, cpa = (reused.get(name, n, np.int64) for name in ("nostack", "dm", "cpa"))
        nn, nd, nc = classify_rows(ch.kind, ch.stack, self.stack_cons_none, cons_in, nostack, dm, cpa)
        nostack, dm, cpa = nostack[:nn], dm[:nd], cpa[:nc]
        if nn:  # allocations without a stack: their consumer by gfp flags
            cons_in[nostack] = self.consumers.classify_gfp(ch.gfp[nostack], ch.order[nostack])
            self.stats["classified_by_gfp"] += nn
        if nd:
            pfns = self.amap.page_pfns(ch.page[dm])
            self.stats["bad_page_pointers"] += int((pfns < 0).sum())
            ch.pfn[dm] = pfns
        pair, cons = self.pairing.feed(ch.kind, ch.pfn, ch.order, ch.failed, cons_in, ch.start, ch.mt)
        self.last_classification = (cons_in, pair, cons)
        run = self._running(ch)
        self.placement.feed(ch)
        sel, sel_alloc, walk, walk_call = self._run.rows(len(ch))
        ns, nw = chunk_rows(ch.kind, ch.failed, ch.pfn, cons_in, cons, pair, self.has_a, self.has_f, self.is_witness,
                            self.opt.use_kprobes, self.consumer_allocs, sel, sel_alloc, walk, walk_call)
        ops, origin, placeable_calls = self._ops(ch, cons, pair, sel[:ns], sel_alloc[:ns], run, dm, cpa)
        first_log = int(self.dmap.log_n[0])
        first_op = self.dmap.ops_applied
        if len(ops):
            self.dmap.apply(ops)
        for row in self.dmap.log[first_log: int(self.dmap.log_n[0])]:
            op = int(row[D.L_OP]) - first_op
            ev = int(origin[op])
            j = ev - ch.start
            src = "kprobe" if ch.kind[j] in (K_DM_INVALID, K_DM_DEFAULT, K_CPA) else "consumer"
            c = int(cons[j]) if ch.kind[j] != K_ALLOC else int(cons_in[j])
            self.records.append(SplitRecord(
                event=ev, ts_ns=int(ch.ts[j]), line=int(ch.line[j]), pfn=int(row[D.L_PFN]), level=int(row[D.L_LEVEL]),
                kind="collapse" if row[D.L_KIND] else "split", source=src,
                consumer=self._origin_name(ch, j, c), stack=int(ch.stack[j]),
                running=bool(ops.flags[op] & D.F_RUNNING)))
            if not row[D.L_KIND]:
                self.split_of_call[int(placeable_calls.of(np.array([ev]))[0])].append(len(self.records) - 1)
        self._witnesses(ch, cons_in, walk[:nw], walk_call[:nw], placeable_calls, run)

    def _running(self, ch: Chunk) -> np.ndarray:
        """F_RUNNING per event of the chunk (its timestamps are read only when there is a moment to compare);
        the same array until the next chunk (``last_run``, which the simulate engine reads; not to be written)."""
        scr = self._run
        if self.opt.running_from_ns is None:
            if len(scr.all) < len(ch):
                scr.all = np.full(len(ch), D.F_RUNNING, dtype=np.int64)
            scr.last = scr.all[: len(ch)]
        else:
            scr.last = np.where(ch.ts >= self.opt.running_from_ns, D.F_RUNNING, 0).astype(np.int64)
        return scr.last

    @property
    def last_run(self) -> np.ndarray:
        """:meth:`_running` of the latest chunk."""
        return self._run.last

    def _origin_name(self, ch: Chunk, j: int, c: int) -> str:
        if ch.kind[j] == K_CPA:
            return f"kprobe:{CPA_APIS[ch.api[j]]}"
        if c >= 0 and ch.kind[j] not in (K_DM_INVALID, K_DM_DEFAULT):
            return self.consumers.names[c]
        if ch.kind[j] in (K_DM_INVALID, K_DM_DEFAULT):
            return f"kprobe:{DM_API[int(ch.kind[j])]}"
        return "?"

    def _ops(self, ch: Chunk, cons: np.ndarray, pair: np.ndarray, sel: np.ndarray, sel_alloc: np.ndarray,
             run: np.ndarray, dm: np.ndarray, cpa: np.ndarray):
        """The CPA calls of this chunk, in event order, with the event each came from (``sel``: the rows of
        consumer actions, ``sel_alloc``: on allocation, else on free; :func:`chunk_rows`; ``dm``/``cpa``: the
        rows of direct-map and set_memory_* kprobes, :func:`classify_rows`)."""
        calls = _NO_CALLS  # event index -> call id (confirming kprobes map to the consumer's op)
        # consumer actions on allocation and on free, as arrays in event order (their consumers are >= 0)
        c_sel = cons[sel].astype(np.int64)
        act = np.where(sel_alloc[:, None], self.alloc_act[c_sel], self.free_act[c_sel])
        cols = [sel, ch.pfn[sel], np.int64(1) << ch.order[sel].astype(np.int64), act[:, 0], act[:, 1],
                act[:, 2] | run[sel]]
        if self.opt.use_kprobes:
            c = cons[dm].astype(np.int64)
            confirms = (c >= 0) & (self.alloc_act[np.where(c >= 0, c, 0), 3] != 0)
            if confirms.any():  # the consumer made this change: the kprobe belongs to its call
                self.stats["kprobe_confirmations"] += int(confirms.sum())
                calls = _CallIds(ch.start + dm[confirms], pair[dm[confirms]].astype(np.int64))
            dm = dm[~confirms & (ch.pfn[dm] >= 0)]
            inv = ch.kind[dm] == K_DM_INVALID
            (si, ci), (sd, cd) = DM_MASKS[K_DM_INVALID], DM_MASKS[K_DM_DEFAULT]
            dm_set, dm_clr = np.where(inv, si, sd), np.where(inv, ci, cd)
            extra = np.stack([dm, ch.pfn[dm], np.ones(len(dm), np.int64), dm_set, dm_clr, D.F_NOFLUSH | run[dm]],
                             axis=1).astype(np.int64)
            rows = self._cpa_ops(ch, cpa, run)  # the set_memory_* kprobes' ops
            self.last_kprobes = (dm, dm_set, dm_clr, rows, cpa)
            if len(rows):  # by event (stable: the ops of one call keep their order)
                extra = np.concatenate([extra, rows[:, :6]])
                extra = extra[np.argsort(extra[:, 0], kind="stable")]
        else:
            extra = np.zeros((0, 6), np.int64)
            self.last_kprobes = None
        if len(extra):  # merged by event
            is_extra = np.zeros(len(sel) + len(extra), dtype=bool)
            is_extra[np.searchsorted(sel, extra[:, 0]) + np.arange(len(extra))] = True
            merged = []
            for k, col in enumerate(cols):
                out = np.empty(len(is_extra), dtype=np.int64)
                out[~is_extra] = col
                out[is_extra] = extra[:, k]
                merged.append(out)
            cols = merged
        j, pfn, n, setm, clrm, flags = cols
        ops = Ops(np.asarray(pfn, np.int64), np.asarray(n, np.int64), np.asarray(setm).astype(np.uint8),
                  np.asarray(clrm).astype(np.uint8), np.asarray(flags, np.int64))
        return ops, ch.start + np.asarray(j, np.int64), calls

    def _cpa_ops(self, ch: Chunk, cpa: np.ndarray, run: np.ndarray) -> np.ndarray:
        """The ops of the set_memory_* calls at rows ``cpa``, call by call: rows of (j, pfn, npages, set, clr,
        flags, k), ``k`` the page's index in a module area, -1 for a call at a physical address (direct map or
        kernel image).  Per call (the per-call rules, ``cpa_rows_reference`` in the tests): none for
        ``npages <= 0``; a direct-map address is one op (``__change_page_attr_set_clr()`` on the range); past
        it, an API that runs no alias pass (NX only) changes nothing on the direct map; a kernel-image
        address is one op through the alias (``__pa_symbol``); a module/vmalloc address is one op per
        backing page the area binding found (``cpa_process_alias()`` per 4K page, one flush for the call)."""
        out = np.zeros((0, 7), np.int64)
        if not len(cpa):
            return out
        api = ch.api[cpa].astype(np.int64)
        n = ch.npages[cpa].astype(np.int64)
        where = self.amap.classify_many(ch.addr[cpa])
        setm, clrm, alias = _CPA_SET[api], _CPA_CLR[api], _CPA_ALIAS[api]
        flags = run[cpa] | _CPA_FLAGS[api]
        live = n > 0
        direct = live & (where == _DIRECT)
        kernel = live & ~direct & alias & (where == _KERNEL)
        module = live & ~direct & alias & (where == _MODULE)
        for key, count in (("cpa_nx_only_no_alias", live & ~direct & ~alias),
                           ("cpa_calls_unknown_address", live & alias & (where == _UNKNOWN))):
            if count.any():
                self.stats[key] += int(count.sum())
        counts = (direct | kernel).astype(np.int64)
        mods = np.flatnonzero(module)
        bound = [self.binding.call_pfns.get(g) for g in (ch.start + cpa[mods]).tolist()]
        placed = np.array([p is not None for p in bound], dtype=bool)
        if not placed.all():
            self.stats["cpa_calls_unplaced"] += int((~placed).sum())
        pages = [p for p in bound if p is not None]
        counts[mods[placed]] = [len(p) for p in pages]
        call = np.repeat(np.arange(len(cpa)), counts)
        if not len(call):
            return out
        k = np.arange(len(call)) - np.repeat(np.cumsum(counts) - counts, counts)  # the page's index in its call
        on_module = module[call]
        pfn = self.amap.pfn_of_many(ch.addr[cpa], where)[call]
        if pages:
            pfn[on_module] = np.concatenate(pages)
        out = np.empty((len(call), 7), np.int64)
        out[:, 0] = cpa[call]
        out[:, 1] = pfn
        out[:, 2] = np.where(on_module, 1, n[call])
        out[:, 3] = setm[call]
        out[:, 4] = clrm[call]
        out[:, 5] = flags[call] | np.where(kernel[call] | (on_module & (k == 0)), D.F_ALIAS,
                                           np.where(on_module, D.F_NOFLUSH, 0))
        out[:, 6] = np.where(on_module, k, -1)
        return out

    # ------------------------------------------------------------------ witnesses
    def _witnesses(self, ch: Chunk, cons_in: np.ndarray, rows: np.ndarray, is_call: np.ndarray,
                   calls: _CallIds, run: np.ndarray) -> None:
        """Walk the chunk's call events and witnesses in order (``rows``, ``is_call``: :func:`chunk_rows`'
        walk), binding witnesses to splits."""
        rows, is_call = _walk_rows(ch.pid, rows, is_call)
        call_ids = calls.of(ch.start + rows).tolist()
        for j, call, call_id in zip(rows.tolist(), is_call.tolist(), call_ids, strict=True):
            g = ch.start + j
            pid = int(ch.pid[j])
            if call:
                self.noprobe_prev.pop(pid, None)
                api, placeable, where = self._call_api(ch, j, cons_in)
                self.last_call[pid] = (api, call_id, placeable, where)
                continue
            api, depth = self.stack_info.entry(int(ch.stack[j]))
            hit = self.last_call.get(pid)
            if hit is not None and api is not None and hit[0] == api:  # the pid's latest CPA call is this one
                _, call, placeable, where = hit
                if where == A.KERNEL and depth == 1:
                    self._drive(g, ch, j, run[j], ("highmap", call, depth))
                    continue
                pending = self.split_of_call.get(call)
                if pending:
                    rec = self.records[pending.pop(0)]
                    rec.witness = g
                    rec.witness_line = int(ch.line[j])
                    self.w.bound += 1
                    continue
                if not placeable:
                    self._drive(g, ch, j, run[j], ("unplaced", call, depth))
                    continue
            elif api is None or api.startswith("set_memory"):
                # an address-based CPA call with no kprobe to say where: nothing to place
                self._drive(g, ch, j, run[j], self._noprobe_group(pid, int(ch.stack[j]), g))
                continue
            self.w.unexplained += 1
            self.w.unexplained_events.append(g)

    def _noprobe_group(self, pid: int, stack: int, g: int) -> tuple:
        """Consecutive call-less witnesses of one pid with the same stack form one group (one CPA call)."""
        prev = self.noprobe_prev.get(pid)
        group = prev[1] if prev is not None and prev[0] == stack else g
        self.noprobe_prev[pid] = (stack, group)
        return ("noprobe", pid, group)

    def _call_api(self, ch: Chunk, j: int, cons_in: np.ndarray) -> tuple[str, bool, str]:
        k = int(ch.kind[j])
        if k == K_ALLOC:
            return self.consumers.items[int(cons_in[j])].on_alloc[0], True, A.DIRECT
        if k in DM_API:
            return DM_API[k], True, A.DIRECT
        api = CPA_APIS[ch.api[j]]
        where = self.amap.classify(int(ch.addr[j]))
        placeable = where != A.MODULE or (ch.start + j) in self.binding.call_pfns
        return api, placeable, where

    def _drive(self, g: int, ch: Chunk, j: int, running: int, group: tuple) -> None:
        """A witness the model cannot place: count it as a split of unknown region (level fixed in finish())."""
        if not self.opt.witness_driven:
            self.w.unexplained += 1
            self.w.unexplained_events.append(g)
            self.stats[f"unplaceable_witnesses_{group[0]}"] += 1
            return
        self.records.append(SplitRecord(event=g, ts_ns=int(ch.ts[j]), line=int(ch.line[j]), pfn=-1, level=2,
                                        kind="split", source="witness_driven", consumer=str(group[0]),
                                        stack=int(ch.stack[j]), running=bool(running), witness=g,
                                        witness_line=int(ch.line[j]), group=group))

    def finish(self, reconcile: bool = True) -> None:
        """Settle the witness-driven splits once the whole trace has been seen.

        1. Levels: exactly two driven witnesses in one call are a 1G then a 2M split; others 2M.
        2. Reconciliation: a model split that no witness explains means the kernel had split
           that region already, in a call the model could not place.  When an earlier
           direct-map witness_driven split is outstanding, they are the same split: the
           split keeps the region the model found and takes the witness (and its
           SYSTEM_RUNNING state, which decides whether vmstat counted it).  Unwitnessed
           splits are taken in time order, 2M before 1G within one call (the 1G split came
           first in the kernel), each matched with the latest outstanding witness before it.
        """
        groups: dict[tuple, list[SplitRecord]] = defaultdict(list)
        for r in self.records:
            if r.source == "witness_driven":
                groups[r.group].append(r)
        for recs in groups.values():
            for k, r in enumerate(recs):
                r.level = 3 if len(recs) == 2 and k == 0 else 2
        if reconcile:
            self._reconcile()
        w = self.w
        w.driven = w.driven_l2 = w.driven_l3 = w.driven_running_l2 = w.driven_running_l3 = 0
        for r in self.records:
            if r.source != "witness_driven":
                continue
            w.driven += 1
            if r.level == 3:
                w.driven_l3 += 1
                w.driven_running_l3 += r.running
            else:
                w.driven_l2 += 1
                w.driven_running_l2 += r.running

    def _reconcile(self) -> None:
        lonely = sorted((r for r in self.records if r.kind == "split" and r.source != "witness_driven"
                         and r.witness < 0), key=lambda r: (r.ts_ns, r.level))
        outstanding = [r for r in self.records if r.source == "witness_driven" and r.consumer != "highmap"]
        merged: set[int] = set()
        for r in lonely:
            cands = [c for c in outstanding if id(c) not in merged and c.ts_ns <= r.ts_ns]
            if not cands:
                continue
            c = max(cands, key=lambda c: (c.ts_ns, c.event))
            merged.add(id(c))
            if r.running != c.running:  # the model counted it at its own time; the kernel at the witness's
                key = "direct_map_level3_splits" if r.level == 3 else "direct_map_level2_splits"
                self.vmstat_fix[key] += 1 if c.running else -1
            r.running, r.witness, r.witness_line = c.running, c.witness, c.witness_line
            r.source = f"{r.source}+reconciled"
            self.w.reconciled += 1
        self.records = [r for r in self.records if id(r) not in merged]

    # ------------------------------------------------------------------ results
    def counters(self, dmap: DirectMap | None = None) -> dict[str, int]:
        """A model's counters plus the splits of unknown region (witness_driven), as the kernel counts them.

        ``dmap``: another model of the same trace (simulate mode); the reconciliation fix-ups
        belong to this engine's own splits and apply only without it.
        """
        out = dict((dmap or self.dmap).counters)
        w = self.w
        fix = self.vmstat_fix if dmap is None else {"direct_map_level2_splits": 0, "direct_map_level3_splits": 0}
        out["direct_map_level2_splits"] += w.driven_running_l2 + fix["direct_map_level2_splits"]
        out["direct_map_level3_splits"] += w.driven_running_l3 + fix["direct_map_level3_splits"]
        # split_page_count(): a 1G split moves 1 -> 512 2M, a 2M split 1 -> 512 4K
        out["DirectMap1G"] -= w.driven_l3 << 20
        out["DirectMap2M"] += (w.driven_l3 * 512 - w.driven_l2) << 11
        out["DirectMap4k"] += (w.driven_l2 * 512) << 2
        out["splits_all"] += w.driven_l2 + w.driven_l3
        out["pt_pages_alloc"] += w.driven_l2 + w.driven_l3
        out["flush_tlb_all"] += w.driven_l2 + w.driven_l3
        return out

    def witness(self) -> dict[str, Any]:
        model_splits = [r for r in self.records if r.kind == "split" and r.source != "witness_driven"]
        return {
            "witness_bound": self.w.bound,
            "witness_unexplained": self.w.unexplained,
            "witness_driven": self.w.driven,
            "witness_reconciled": self.w.reconciled,
            "split_without_witness": sum(1 for r in model_splits if r.witness < 0),
            "witness_total": self.w.bound + self.w.unexplained + self.w.driven + self.w.reconciled,
        }

    def placement_result(self) -> dict[str, int]:
        return self.placement.result(self.pairing.live_with_migratetype(MIGRATE_UNMOVABLE))

    def public_stats(self) -> dict[str, int]:
        return {k: v for k, v in sorted(self.stats.items()) if not k.startswith("_")}


class _RunScratch:
    """:meth:`FaithfulEngine._running`'s arrays and :func:`chunk_rows`' outputs: scratch sized by the chunk,
    reused by the next, not state (``__slots__``: the bench's state census does not count it)."""

    __slots__ = ("all", "last", "reused")

    def __init__(self) -> None:
        self.all = np.zeros(0, np.int64)
        self.last = self.all
        self.reused = Reused()  # feed()'s per-row consumer and row lists, chunk_rows()' outputs

    def rows(self, n: int) -> tuple[np.ndarray, ...]:
        """(sel, sel_alloc, walk, walk_call) for ``n`` rows."""
        r = self.reused
        return (r.get("sel", n, np.int64), r.get("sel_alloc", n, np.bool_), r.get("walk", n, np.int64),
                r.get("walk_call", n, np.bool_))


class _CallIds:
    """The CPA call each confirming direct-map kprobe of a chunk belongs to: its global row -> the consumer's
    op (the allocation the kprobe's page pairs with); sorted rows, looked up a batch at a time."""

    __slots__ = ("rows", "ids")

    def __init__(self, rows: np.ndarray, ids: np.ndarray) -> None:
        self.rows, self.ids = rows, ids  # rows ascending (the chunk's kprobes in row order)

    def of(self, g: np.ndarray) -> np.ndarray:
        """The call id of each global row ``g``: the consumer's op where the row confirms one, else the row."""
        if not len(self.rows):
            return g
        at = np.minimum(np.searchsorted(self.rows, g), len(self.rows) - 1)
        return np.where(self.rows[at] == g, self.ids[at], g)


_NO_CALLS = _CallIds(np.zeros(0, np.int64), np.zeros(0, np.int64))


def _witness_walk(pid: np.ndarray, wmask: np.ndarray, call_mask: np.ndarray) -> np.ndarray:
    """The rows of the witness walk, in order: witnesses and calls, without the calls that the next call of
    the same pid overrides before any witness of that pid (a call only sets its pid's latest call)."""
    rows = np.flatnonzero(wmask | call_mask)
    return _walk_rows(pid, rows, call_mask[rows])[0]


def _walk_rows(pid: np.ndarray, rows: np.ndarray, is_call: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_witness_walk` of the walk's candidate ``rows`` (ascending) and which are calls: the rows kept
    and theirs."""
    if len(rows) < 2:
        return rows, is_call
    o = np.argsort(pid[rows], kind="stable")
    p, c = pid[rows][o], is_call[o]
    overridden = np.zeros(len(rows), dtype=bool)
    overridden[o[:-1]] = c[:-1] & c[1:] & (p[:-1] == p[1:])
    return rows[~overridden], is_call[~overridden]


class _StackInfo:
    """Per stack: the API its CPA call entered by, and how deep the CPA recursion is (2 = alias)."""

    def __init__(self, stack_index) -> None:
        self.index = stack_index
        self.cache: dict[int, tuple[str | None, int]] = {}

    def entry(self, stack: int) -> tuple[str | None, int]:
        if stack < 0:
            return None, 0
        hit = self.cache.get(stack)
        if hit is None:
            frames = self.index.frames(stack)
            depth = sum(1 for f in frames if f == CPA_FRAME)
            api = next((f for f in frames if f in ENTRY_APIS), None)
            hit = (api, depth)
            self.cache[stack] = hit
        return hit
