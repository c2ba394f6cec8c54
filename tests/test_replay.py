"""Faithful replay against the kernel's own counters, pairing oracle, consumers, areas, JSON contract, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ptebench
from ptebench.cli import app
from ptebench.engine.areas import bind_areas, resolve_call
from ptebench.engine.consumers import Consumers
from ptebench.engine.pairing import STAT_NAMES, Pairing, pair_reference
from ptebench.engine.stream import K_ALLOC, K_DM_INVALID, K_FREE, K_FREE_BATCHED, K_PCPU_DRAIN, K_ZONE_LOCKED
from ptebench.errors import PtebenchError
from ptebench.results import read_json, results_json, write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"

#: capture -> (level-2 delta, level-3 delta, the 2M regions (phys >> 21) the replay splits, in order)
GOLDEN = {
    "secretmem_64": (1, 0, None),
    "secretmem_1024": (2, 0, None),
    "modules": (3, 0, [2461, 2462, 2463]),
    "mixed_small": (6, 1, [2305, 2058, 2560, 2584, 2585, 2586, 2587]),
    "secretmem_16384": (33, 0, None),
    "memload": (0, 0, []),
    "forkexec": (0, 0, []),
}
SLOW = {"mixed_small", "secretmem_16384", "memload", "forkexec"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            src = ROOT / "traces" / name if (ROOT / "traces" / name).is_dir() else SHARED / name
            if not src.is_dir():
                pytest.skip(f"capture {name} not available")
            out = tmp_path_factory.mktemp("replay") / f"{name}.parquet"
            ptebench.ingest([str(src)], out)
            cache[name] = out
        return cache[name]

    return get


def _params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in GOLDEN]


@pytest.mark.parametrize("name", _params())
def test_faithful_replay_matches_the_kernel(ingested, name):
    result, checks = ptebench.validate(ingested(name))
    failed = [c for c in checks if not c[1]]
    assert not failed, failed
    l2, l3, regions = GOLDEN[name]
    d = result.counters["delta"]
    assert (d["direct_map_level2_splits"], d["direct_map_level3_splits"]) == (l2, l3)
    assert result.kernel["delta"]["direct_map_level2_splits"] == l2
    assert result.witness["witness_bound"] == l2 + l3
    assert result.witness["witness_driven"] == result.witness["witness_unexplained"] == 0
    assert result.regions["match"] and not result.regions["missing"] and not result.regions["extra"]
    if regions is not None:
        assert result.splits["region_2m"].tolist() == regions
    assert (result.splits["witness_line"] > result.splits["line"]).all()


@pytest.mark.slow
def test_boot_replay_from_the_boot_rules(ingested):
    """boot: no dump before, so the layout is rule-built; vmstat counts only after 'Run /init'."""
    result, checks = ptebench.validate(ingested("boot"))
    assert all(ok for _, ok, _ in checks), checks
    assert result.engine["layout_from"].startswith("boot rules")
    assert result.engine["running_from"].startswith("dmesg")
    d = result.counters["delta"]
    assert (d["direct_map_level2_splits"], d["direct_map_level3_splits"]) == (1, 0)
    assert result.kernel["delta"]["direct_map_level2_splits"] == 1
    assert {k: result.witness[k] for k in ("witness_bound", "witness_driven", "witness_reconciled",
                                           "witness_unexplained", "split_without_witness")} == {
        "witness_bound": 2, "witness_driven": 11, "witness_reconciled": 2, "witness_unexplained": 0,
        "split_without_witness": 0}
    # the dump after the trace holds, beyond the model's: the IDT alias (t=0), the BPF pack (3) and the ftrace
    # trampoline, all before tracepoint-less kprobes existed, and dmdump.ko's own untraced split
    assert result.regions["missing"] == [25, 2311, 2312, 2313, 2323, 4541] and not result.regions["extra"]
    placed = result.splits[result.splits["pfn"] >= 0]
    assert placed["region_2m"].tolist() == [15, 20, 2048, 2326]
    assert placed["running"].tolist() == [False, False, False, True]


@pytest.mark.parametrize("name", ["secretmem_64", "secretmem_1024", pytest.param("secretmem_16384",
                                                                                   marks=pytest.mark.slow)])
def test_secretmem_without_witnesses(ingested, name, tmp_path):
    """Splits come from the CPA model, not from the witnesses: delete them and the counts stay."""
    tr = ptebench.load(ingested(name))
    witness_stacks = pa.array(tr.stack_index.with_frame("__change_page_attr_set_clr"))
    drop = pc.and_(pc.equal(tr.table.column("event"), "mm_page_alloc"),
                   pc.fill_null(pc.is_in(tr.table.column("stack_id"), witness_stacks), False))
    n_dropped = pc.sum(drop).as_py()
    assert n_dropped == GOLDEN[name][0]
    out = tmp_path / "nowitness.parquet"
    pq.write_table(tr.table.filter(pc.invert(drop)), out)
    result, checks = ptebench.validate(out)
    by_name = {c[0]: c[1] for c in checks}
    assert by_name["vmstat/meminfo direct_map_level2_splits delta"]
    assert by_name["2M regions mapped by 4K after the trace"]
    assert result.witness["split_without_witness"] == n_dropped
    assert result.witness["witness_bound"] == 0


def test_modules_without_kprobes_are_witness_driven(ingested):
    """Without the kprobes, module pages cannot be placed: their witnesses are counted as splits of unknown region."""
    result = ptebench.replay(ingested("modules"), use_kprobes=False)
    assert result.counters["delta"]["direct_map_level2_splits"] == 3
    assert result.witness == {"witness_bound": 0, "witness_unexplained": 0, "witness_driven": 3,
                              "witness_reconciled": 0, "split_without_witness": 0, "witness_total": 3}
    assert result.regions["unplaced_splits"] == 3 and result.regions["match"]
    assert (result.splits["source"] == "witness_driven").all() and (result.splits["pfn"] == -1).all()
    strict = ptebench.replay(ingested("modules"), use_kprobes=False, witness_driven=False)
    assert strict.counters["delta"]["direct_map_level2_splits"] == 0
    assert strict.witness["witness_unexplained"] == 3 and strict.witness["witness_driven"] == 0
    assert strict.engine["unplaceable_witnesses_noprobe"] == 3
    assert any("did not explain" in w for w in strict.warnings)


def test_module_areas_are_bound_at_unload(ingested):
    result = ptebench.replay(ingested("modules"))
    e = result.engine
    assert (e["areas"], e["areas_resolved"], e["areas_unresolved"], e["vfree_runs"]) == (24, 24, 0, 24)
    assert e["vmemmap_base"] == "0xffd4000000000000"


def test_secretmem_vmemmap_base_is_confirmed_by_pairs(ingested):
    result = ptebench.replay(ingested("secretmem_1024"))
    assert result.engine["vmemmap_pairs_agreeing"] == 1024
    assert result.engine["kprobe_confirmations"] == 2048
    assert result.consumers["secretmem"] == 1024 and result.consumers["slab"] == 1


def test_replay_json_contract_and_determinism(ingested, tmp_path):
    a = ptebench.replay(ingested("secretmem_64"))
    b = ptebench.replay(ingested("secretmem_64"))
    write_json([a], tmp_path / "a.json")
    write_json([b], tmp_path / "b.json")
    da, db = read_json(tmp_path / "a.json"), read_json(tmp_path / "b.json")
    assert set(da) == {"ptebench", "runs"} and set(da["ptebench"]) == {"version", "format_version"}
    run = da["runs"][0]
    for key in ("trace", "variant", "mode", "scenario", "counters", "kernel", "witness", "timing"):
        assert key in run
    assert set(run["trace"]) == {"name", "sha256"} and run["trace"]["name"] == "secretmem_64"
    assert set(run["counters"]) == {"end", "delta"}
    for key in ("direct_map_level2_splits", "direct_map_level3_splits", "DirectMap4k", "DirectMap2M", "DirectMap1G"):
        assert key in run["counters"]["end"] and key in run["counters"]["delta"] and key in run["kernel"]["delta"]
    da["runs"][0].pop("timing")
    db["runs"][0].pop("timing")
    assert da == db
    assert results_json([a])["runs"][0]["counters"]["end"]["direct_map_level2_splits"] == 5


def test_bad_options_raise_project_error(ingested):
    with pytest.raises(PtebenchError, match="unknown variant"):
        ptebench.replay(ingested("secretmem_64"), variant="nope")
    with pytest.raises(PtebenchError, match="unknown mode"):
        ptebench.replay(ingested("secretmem_64"), mode="nope")
    with pytest.raises(PtebenchError, match="running-from"):
        ptebench.replay(ingested("secretmem_64"), running_from="soon")


# ---------------------------------------------------------------------------------------- consumers
def test_consumer_rules_validate(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[[consumer]]\nname = "x"\non_alloc = ["set_memory_bogus"]\n')
    with pytest.raises(PtebenchError, match="unknown kernel API"):
        Consumers.load(bad)
    bad.write_text('[[consumer]]\nname = "x"\nframez = ["a"]\n')
    with pytest.raises(PtebenchError, match="unknown keys"):
        Consumers.load(bad)
    bad.write_text('[[consumer]]\nname = "x"\n[[consumer]]\nname = "x"\n')
    with pytest.raises(PtebenchError, match="duplicate"):
        Consumers.load(bad)
    bad.write_text("consumer = [")
    with pytest.raises(PtebenchError, match="bad TOML"):
        Consumers.load(bad)
    rules = Consumers.load()
    assert rules.names[0] == "dmap_pagetable" and rules.names[-1] == "other"


def test_user_rules_change_the_result(ingested, tmp_path):
    """A rule file where secretmem touches nothing: the kprobes alone still place the changes."""
    text = (ROOT / "ptebench" / "consumers.toml").read_text()
    text = text.replace('on_alloc = ["set_direct_map_invalid_noflush", "flush_tlb_kernel_range"]\n', "")
    text = text.replace('on_free = ["set_direct_map_default_noflush"]\n', "")
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    result = ptebench.replay(ingested("secretmem_1024"), consumers=rules)
    assert result.counters["delta"]["direct_map_level2_splits"] == 2
    assert set(result.splits["source"]) == {"kprobe"}
    none = ptebench.replay(ingested("secretmem_1024"), consumers=rules, use_kprobes=False)
    assert none.counters["delta"]["direct_map_level2_splits"] == 0
    assert none.witness["witness_unexplained"] == 2


def test_gfp_fallback_classifies_pagetables():
    rules = Consumers.load()
    from ptebench.parse.gfp import gfp_mask

    masks = np.array([gfp_mask("GFP_KERNEL_ACCOUNT|__GFP_ZERO"), gfp_mask("GFP_KERNEL")], dtype=np.uint64)
    got = rules.classify_gfp(masks, np.array([0, 0], dtype=np.int8))
    assert [rules.names[i] for i in got] == ["pagetable", "other"]


# ---------------------------------------------------------------------------------------- areas
def test_area_binding_prefers_exact_size_then_latest():
    base = 0xFFFFFFFFC0000000
    calls = [(1, 7, base, 4), (2, 7, base + 0x4000, 2), (3, 7, base + 0x8000, 1), (4, 7, base + 0x9000, 2)]
    runs = [(10, np.array([100, 101, 102])), (20, np.array([200, 201, 202, 203, 204, 205]))]
    b = bind_areas(calls, runs)
    assert b.stats["areas"] == 2 and b.stats["areas_resolved"] == 2
    resolve_call(b, {i: (a, n) for i, _, a, n in calls})
    assert b.call_pfns[1].tolist() == [200, 201, 202, 203] and b.call_pfns[2].tolist() == [204, 205]
    assert b.call_pfns[3].tolist() == [100] and b.call_pfns[4].tolist() == [101, 102]


def test_area_never_freed_stays_unresolved():
    base = 0xFFFFFFFFC0000000
    b = bind_areas([(1, 7, base, 2), (5, 7, base + 0x10000, 0)], [])
    assert b.unresolved_calls == {1} and b.stats["areas_unresolved"] == 1


# ---------------------------------------------------------------------------------------- pairing
def _run_jit(events, npfn=64):
    arr = np.array(events, dtype=np.int64).reshape(-1, 5)
    p = Pairing(npfn)
    pair, cons = p.feed(arr[:, 0].astype(np.int8), arr[:, 1].copy(), arr[:, 2].astype(np.int8),
                        arr[:, 3].astype(bool), arr[:, 4].astype(np.int16), 0, (arr[:, 4] % 3).astype(np.int8))
    return pair.tolist(), cons.tolist(), p.stats


event = st.tuples(st.sampled_from([K_ALLOC, K_ALLOC, K_FREE, K_FREE, K_FREE_BATCHED, K_ZONE_LOCKED, K_PCPU_DRAIN,
                                   K_DM_INVALID]),
                  st.integers(0, 15), st.integers(0, 2), st.booleans(), st.integers(0, 3))


@settings(deadline=None, max_examples=200, derandomize=True)
@given(st.lists(event, max_size=60))
def test_pairing_matches_reference(events):
    events = [(k, p * 4, o, f and k == K_ALLOC, c) for k, p, o, f, c in events]
    pair, cons, stats = _run_jit(events)
    rpair, rcons, rstats = pair_reference(events)
    assert pair == rpair and cons == rcons
    assert stats == {k: rstats[k] for k in STAT_NAMES}
    assert stats["frees"] == stats["paired_frees"] + stats["unpaired_frees"]


def test_pairing_rules_on_a_constructed_stream():
    ev = [
        (K_ALLOC, 8, 2, False, 1),  # order-2 at 8..11
        (K_FREE, 8, 0, False, 0), (K_FREE, 9, 0, False, 0),  # freed in order-0 pieces
        (K_FREE, 20, 0, False, 0),  # allocated before the trace
        (K_ALLOC, 4, 0, False, 2), (K_FREE, 4, 0, False, 0), (K_FREE_BATCHED, 4, 0, False, 0),  # batched duplicate
        (K_FREE_BATCHED, 30, 0, False, 0),  # batched free alone
        (K_ALLOC, 0, 0, True, 1),  # failed
    ]
    pair, cons, stats = _run_jit(ev)
    assert pair[:6] == [-1, 0, 0, -1, -1, 4] and cons[1] == 1 and cons[5] == 2
    assert stats["piece_frees"] == 2 and stats["unpaired_frees"] == 2 and stats["batched_duplicates"] == 1
    assert stats["batched_alone"] == 1 and stats["failed_allocs"] == 1 and stats["paired_frees"] == 3


def test_pairing_real_stream_matches_reference(ingested):
    tr = ptebench.load(ingested("secretmem_1024"))
    from ptebench.engine.stream import chunk_from_table

    ch = chunk_from_table(tr.table)
    npfn = int(ch.pfn.max()) + 1024
    cons_in = (ch.stack % 5).astype(np.int16)
    p = Pairing(npfn)
    pair, cons = p.feed(ch.kind, ch.pfn, ch.order, ch.failed, cons_in, 0)
    events = list(zip(ch.kind.tolist(), ch.pfn.tolist(), ch.order.tolist(), ch.failed.tolist(), cons_in.tolist(),
                      strict=True))
    rpair, rcons, rstats = pair_reference(events)
    assert pair.tolist() == rpair and cons.tolist() == rcons and p.stats == rstats
    assert p.stats["unpaired_frees"] > 0 and p.stats["batched_duplicates"] > 0


# ---------------------------------------------------------------------------------------- CLI
def test_cli_replay_and_validate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["replay", str(ROOT / "traces" / "secretmem_64"), "--json", str(out),
                              "--splits", str(tmp_path / "s.parquet")])
    assert res.exit_code == 0, res.output
    assert "direct_map_level2_splits" in res.output and "secretmem" in res.output
    assert json.loads(out.read_text())["runs"][0]["counters"]["delta"]["direct_map_level2_splits"] == 1
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 1
    res = runner.invoke(app, ["validate", str(ROOT / "traces" / "secretmem_64")])
    assert res.exit_code == 0, res.output
    assert res.output.count("PASS") >= 5 and "FAIL" not in res.output


def test_cli_validate_fails_when_a_check_fails(tmp_path):
    text = (ROOT / "ptebench" / "consumers.toml").read_text()
    text = text.replace('on_alloc = ["set_direct_map_invalid_noflush", "flush_tlb_kernel_range"]\n', "")
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    res = CliRunner().invoke(app, ["validate", str(ROOT / "traces" / "secretmem_64"), "--consumers", str(rules),
                                   "--no-kprobes"])
    assert res.exit_code == 1
    assert "FAIL" in res.output


@pytest.mark.parametrize("name", ["secretmem_1024", "modules"])
def test_chunking_does_not_change_the_result(ingested, name):
    """The engine streams: cutting the trace into small chunks gives the same result, byte for byte."""
    whole = results_json([ptebench.replay(ingested(name))])
    small = results_json([ptebench.replay(ingested(name), chunk_rows=97)])
    for d in (whole, small):
        d["runs"][0].pop("timing")
    assert whole == small


from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402


class PairingMachine(RuleBasedStateMachine):
    """Invariants of the streaming pairing: pages conserved, stats monotone, every free accounted for."""

    NPFN = 256

    @initialize()
    def setup(self):
        self.p = Pairing(self.NPFN)
        self.live: dict[int, tuple[int, int]] = {}  # head pfn -> (order, consumer)
        self.n = 0
        self.prev = dict.fromkeys(STAT_NAMES, 0)

    def _feed(self, kind, pfn, order, cons=0, failed=False):
        pair, c = self.p.feed(np.array([kind], np.int8), np.array([pfn], np.int64), np.array([order], np.int8),
                              np.array([failed]), np.array([cons], np.int16), self.n)
        self.n += 1
        return int(pair[0]), int(c[0])

    def _free_range(self, head, order):
        return all(not (h <= q < h + (1 << o)) for h, (o, _) in self.live.items()
                   for q in range(head, head + (1 << order)))

    @rule(slot=st.integers(0, 63), order=st.integers(0, 2), cons=st.integers(0, 5))
    def alloc(self, slot, order, cons):
        head = (slot * 4) & ~((1 << order) - 1)
        if not self._free_range(head, order):
            return
        self._feed(K_ALLOC, head, order, cons)
        self.live[head] = (order, cons)

    @rule(data=st.data())
    def free_whole(self, data):
        if not self.live:
            return
        head = data.draw(st.sampled_from(sorted(self.live)))
        order, cons = self.live.pop(head)
        _, c = self._feed(K_FREE, head, order)
        assert c == cons
        self._feed(K_FREE_BATCHED, head, 0)  # the duplicate free_unref_page_list() traces

    @rule(data=st.data())
    def free_in_pieces(self, data):
        if not self.live:
            return
        head = data.draw(st.sampled_from(sorted(self.live)))
        order, cons = self.live.pop(head)
        for q in range(head, head + (1 << order)):
            _, c = self._feed(K_FREE, q, 0)
            assert c == cons

    @rule(slot=st.integers(0, 63))
    def free_unknown(self, slot):
        head = slot * 4 + 3
        if self._free_range(head, 0):
            pair, c = self._feed(K_FREE, head, 0)
            assert pair == -1 and c == -1

    @invariant()
    def pages_conserved(self):
        assert self.p.live_pages() == sum(1 << o for o, _ in self.live.values())

    @invariant()
    def stats_monotone_and_accounted(self):
        s = self.p.stats
        assert all(s[k] >= self.prev[k] for k in STAT_NAMES)
        assert s["frees"] == s["paired_frees"] + s["unpaired_frees"]
        assert s["mixed_owner_frees"] == 0 and s["alloc_over_live"] == 0
        self.prev = s


TestPairingMachine = PairingMachine.TestCase
TestPairingMachine.settings = settings(deadline=None, max_examples=60, stateful_step_count=40, derandomize=True)


def _plain_trace_with_loss(tmp_path) -> Path:
    import lzma

    lines = lzma.open(ROOT / "traces" / "secretmem_64" / "trace.txt.xz", "rt").read().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if i > 300 and "mm_page_free:" in line)
    text = "".join(lines[:at]) + "CPU:1 [LOST 17 EVENTS]\n" + "".join(lines[at:])
    path = tmp_path / "lost.txt"
    path.write_text(text)
    return path


def test_trace_without_bundle_replays_on_a_memory_map(tmp_path):
    """A user's trace: no dump, no counters. The layout comes from --memmap or, failing that, a synthetic map."""
    out = tmp_path / "t.parquet"
    ptebench.ingest([str(_plain_trace_with_loss(tmp_path))], out)
    synthetic = ptebench.replay(out)
    assert "synthetic memory map" in synthetic.engine["layout_from"]
    assert synthetic.kernel["delta"] is None and synthetic.regions == {}
    assert any("17 events on CPU 1" in w and "missing from this replay" in w for w in synthetic.warnings)
    for name in ("iomem.txt", "firmware-memmap.txt", "dmesg.txt"):
        r = ptebench.replay(out, memmap=ROOT / "traces" / "secretmem_64" / name)
        assert name in r.engine["layout_from"]
        # the boot rules map 4G-5G as a 1G leaf (the BPF pack split it on the real machine, docs/layout.md):
        # the first secretmem page there splits it, then its 2M region
        assert (r.counters["delta"]["direct_map_level3_splits"], r.witness["witness_bound"]) == (1, 1)
    with pytest.raises(PtebenchError, match="cannot read memory map"):
        ptebench.replay(out, memmap=tmp_path / "nope.txt")


@pytest.mark.parametrize("name, want", [
    ("secretmem_1024", {"distinct_2m_blocks_unmovable": 7, "polluted_pageblocks": 3, "extfrag_steals": 1,
                        "extfrag_fragmenting": 0, "extfrag_change_ownership": 1, "pcp_refills": 16,
                        "pcp_refill_pages": 944, "pcp_drain_pages": 0}),
    ("modules", {"distinct_2m_blocks_unmovable": 10, "polluted_pageblocks": 9, "extfrag_steals": 2,
                 "extfrag_fragmenting": 0, "extfrag_change_ownership": 2, "pcp_refills": 15,
                 "pcp_refill_pages": 923, "pcp_drain_pages": 0}),
])
def test_placement_of_the_kernel(ingested, name, want):
    """Where the kernel put unmovable pages, and its own fallback steals and per-CPU list traffic."""
    result = ptebench.replay(ingested(name))
    assert result.placement == want
    ev = ptebench.load(ingested(name)).events
    assert want["extfrag_steals"] == int((ev["event"] == "mm_page_alloc_extfrag").sum())
    refill = (ev["event"] == "mm_page_alloc_zone_locked") & ev["percpu_refill"].fillna(False)
    assert want["pcp_refill_pages"] == int((2 ** ev["order"][refill].astype("int64")).sum())  # pages, not events
    assert results_json([result])["runs"][0]["placement"] == want


def cpa_rows_reference(amap, call_pfns, stats, api_name, npages, addr, j, run, start):
    """The ops of one set_memory_* call, call by call in plain Python (the per-call rules ``FaithfulEngine.
    _cpa_ops()`` applies to a chunk's calls at once): (j, pfn, n, set, clr, flags, k)."""
    from ptebench.engine import addresses as A
    from ptebench.engine.faithful import CPA_MASKS
    from ptebench.sim import directmap as D

    if npages <= 0:
        return []
    s, c, alias = CPA_MASKS[api_name]
    force = D.F_FORCE_SPLIT | D.F_KERNEL_4K if api_name == "set_memory_4k" else 0
    collapse = D.F_COLLAPSE if api_name == "set_memory_rox" else 0
    where = amap.classify(addr)
    if where == A.DIRECT:
        return [(j, amap.pfn_of(addr), npages, s, c, run | force | collapse, -1)]
    if not alias:
        stats["cpa_nx_only_no_alias"] += 1
        return []
    if where == A.KERNEL:
        return [(j, amap.pfn_of(addr), npages, s, c, run | force | collapse | D.F_ALIAS, -1)]
    if where == A.MODULE:
        pfns = call_pfns.get(start + j)
        if pfns is None:
            stats["cpa_calls_unplaced"] += 1
            return []
        return [(j, int(p), 1, s, c, run | force | collapse | (D.F_ALIAS if k == 0 else D.F_NOFLUSH), k)
                for k, p in enumerate(pfns.tolist())]
    stats["cpa_calls_unknown_address"] += 1
    return []


_ADDRESS_CLASSES = ("direct", "kernel", "module", "vmalloc", "user", "vmemmap")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 4), st.sampled_from(_ADDRESS_CLASSES),
                          st.integers(0, 1 << 20), st.booleans(), st.integers(0, 3), st.sampled_from([0, 1 << 6])),
                max_size=12), st.integers(0, 1 << 30), st.sampled_from([4, 5]))
def test_cpa_ops_against_the_per_call_rules(calls, start, levels):
    """The set_memory_* calls of a chunk turned into ops at once (``FaithfulEngine._cpa_ops``: address classes,
    kernel-image aliases, module pages the binding found or not, NX-only APIs, empty calls) equal the per-call
    rules, op for op and in the same order, with the same counters."""
    from collections import defaultdict
    from types import SimpleNamespace

    from ptebench.engine import addresses as A
    from ptebench.engine.faithful import FaithfulEngine
    from ptebench.engine.stream import CPA_APIS

    lay = A.LAYOUTS[levels]
    amap = A.AddressMap(levels, lay["page_offset"], lay["vmemmap"])
    base = {"direct": lay["page_offset"], "kernel": A.START_KERNEL_MAP, "module": A.MODULES_VADDR,
            "vmalloc": lay["vmalloc"], "user": 0x7F0000000000, "vmemmap": lay["vmemmap"]}
    n = 2 * len(calls) + 1
    rows = np.arange(len(calls), dtype=np.int64) * 2 + 1  # calls between other rows
    api, npages, addr = np.full(n, -1, np.int8), np.zeros(n, np.int64), np.zeros(n, np.uint64)
    call_pfns = {}
    for j, (a, pages, where, off, bound, nb, _run) in zip(rows.tolist(), calls, strict=True):
        api[j], npages[j], addr[j] = a, pages, (base[where] + (off << 12)) % (1 << 64)  # past the top: wraps
        if bound:
            call_pfns[start + j] = np.arange(off, off + nb, dtype=np.int64)
    run = np.zeros(n, np.int64)
    run[rows] = [c[6] for c in calls]
    ch = SimpleNamespace(start=start, api=api, npages=npages, addr=addr)
    got_stats, want_stats = defaultdict(int), defaultdict(int)
    eng = SimpleNamespace(amap=amap, binding=SimpleNamespace(call_pfns=call_pfns), stats=got_stats)
    got = FaithfulEngine._cpa_ops(eng, ch, rows, run)
    want = [r for j in rows.tolist() for r in cpa_rows_reference(
        amap, call_pfns, want_stats, CPA_APIS[api[j]], int(npages[j]), int(addr[j]), j, int(run[j]), start)]
    assert got.dtype == np.int64 and got.shape == (len(want), 7)
    assert [tuple(r) for r in got.tolist()] == want
    assert dict(got_stats) == dict(want_stats)
    assert [A.WHERE[w] for w in amap.classify_many(addr).tolist()] == [amap.classify(int(a)) for a in addr.tolist()]
