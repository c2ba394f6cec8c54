"""The jitted direct-map/CPA model against its plain-Python oracle, constructed cases and real captures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import ptebench
from ptebench.parse import bundle as B
from ptebench.sim import directmap as D
from ptebench.sim.dmap import DirectMap, Ops
from ptebench.sim.reference import RefDirectMap

G, M = 1 << 18, 1 << 9
RW, P, NX, GLB = D.ATTR_RW, D.ATTR_P, D.ATTR_NX, D.ATTR_GLB
DEF = D.ATTR_DEFAULT
REPO_TRACES = Path(__file__).resolve().parents[1] / "traces"
SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def pair(kernel=(6, 1)):
    """The same 2 GiB layout in both models: 1G leaf, then 2M leaves with a PTE table, a hole and pte_none entries."""
    dm = DirectMap(2 * G, kernel=kernel)
    ref = RefDirectMap(collapse_rules=kernel >= (6, 15))
    st_ = dm.state
    st_["pud"][0] = D.LEAF
    st_["attr1g"][0] = DEF
    ref.map_1g(0, DEF)
    st_["pud"][1] = D.TABLE
    for m in range(512, 1024):
        if m == 600:  # hole
            continue
        if m == 700:  # a PTE table with 41 pte_none entries at its end
            st_["pmd"][m] = D.TABLE
            attrs = [DEF] * 471 + [0] * 41
            st_["attr4k"][m * M : (m + 1) * M] = attrs
            ref.map_4k_table(m, attrs)
            continue
        st_["pmd"][m] = D.LEAF
        st_["attr2m"][m] = DEF
        ref.map_2m(m, DEF)
    dm._recount()
    return dm, ref


def as_ref(dm: DirectMap) -> tuple[dict, dict, set]:
    st_ = dm.state
    large, pte = {}, {}
    for g in np.flatnonzero(st_["pud"] == D.LEAF):
        large[int(g) * G] = (G, int(st_["attr1g"][g]))
    for g in np.flatnonzero(st_["pud"] == D.TABLE):
        for m in range(int(g) * 512, int(g) * 512 + 512):
            if st_["pmd"][m] == D.LEAF:
                large[m * M] = (M, int(st_["attr2m"][m]))
            elif st_["pmd"][m] == D.TABLE:
                for p in range(m * M, m * M + M):
                    pte[p] = int(st_["attr4k"][p])
    return large, pte, set(np.flatnonzero(st_["kernel4k"]).tolist())


def same(dm: DirectMap, ref: RefDirectMap) -> None:
    large, pte, k4k = as_ref(dm)
    assert large == ref.large
    assert pte == ref.pte
    assert k4k == ref.k4k
    c = dm.counters
    r = ref.c
    assert (c["direct_map_level2_splits"], c["direct_map_level3_splits"]) == (r["l2_split"], r["l3_split"])
    assert (c["direct_map_level2_collapses"], c["direct_map_level3_collapses"]) == (r["l2_collapse"], r["l3_collapse"])
    assert (c["DirectMap4k"], c["DirectMap2M"], c["DirectMap1G"]) == (r["n4k"] * 4, r["n2m"] * 2048, r["n1g"] << 20)
    assert (c["flush_tlb_all"], c["flush_tlb_pages"]) == (r["flush_all"], r["flush_pages"])
    assert (c["pt_pages_alloc"], c["pt_pages_free"], c["cpa_calls"]) == (r["pt_alloc"], r["pt_free"], r["calls"])
    assert c["unmapped_pages"] == r["unmapped"]
    assert [tuple(x) for x in dm.events().tolist()] == ref.log


def apply_both(dm, ref, i, pfn, n, setm, clrm, flags):
    dm.apply(Ops.from_rows([(pfn, n, setm, clrm, flags)]))
    ref.cpa(i, pfn, n, setm, clrm, force=bool(flags & D.F_FORCE_SPLIT), collapse=bool(flags & D.F_COLLAPSE),
            noflush=bool(flags & D.F_NOFLUSH), alias=bool(flags & D.F_ALIAS), running=bool(flags & D.F_RUNNING),
            kernel_4k=bool(flags & D.F_KERNEL_4K))


# ----------------------------------------------------------------------------- constructed cases
def test_4k_change_inside_1g_leaf_splits_twice():
    dm, ref = pair()
    apply_both(dm, ref, 0, 12345, 1, 0, RW, D.F_RUNNING)  # set_memory_ro on one page of the 1G leaf
    c = dm.counters
    assert c["direct_map_level3_splits"] == 1 and c["direct_map_level2_splits"] == 1
    assert c["pt_pages_alloc"] == 2
    assert c["flush_tlb_all"] == 2 and c["flush_tlb_pages"] == 1  # two split flushes, then one INVLPG
    assert c["DirectMap1G"] == 0 and c["DirectMap2M"] == (511 + 510) * 2048 and c["DirectMap4k"] == (512 + 471) * 4
    assert dm.state["attr4k"][12345] == DEF & ~RW
    same(dm, ref)


def test_sameprot_and_whole_leaf_requests_do_not_split():
    dm, ref = pair()
    apply_both(dm, ref, 0, 5, 3, RW, 0, D.F_RUNNING)  # already RW: no write, no split
    apply_both(dm, ref, 1, 520 * M, M, 0, RW, D.F_RUNNING)  # a whole aligned 2M leaf: rewritten in place
    assert dm.counters["splits_all"] == 0
    assert dm.counters["flush_tlb_all"] == 1  # 512 pages > tlb_single_page_flush_ceiling
    same(dm, ref)


def test_splits_before_running_change_directmap_but_not_vmstat():
    dm, ref = pair()
    apply_both(dm, ref, 0, 530 * M + 7, 1, 0, RW, 0)
    c = dm.counters
    assert c["direct_map_level2_splits"] == 0 and c["splits_all"] == 1 and c["DirectMap4k"] == (512 + 471) * 4
    same(dm, ref)


def test_force_split_set_memory_4k():
    dm, ref = pair(kernel=(6, 15))
    apply_both(dm, ref, 0, 540 * M, M, 0, 0, D.F_FORCE_SPLIT | D.F_KERNEL_4K | D.F_RUNNING)
    assert dm.counters["direct_map_level2_splits"] == 1
    assert dm.state["kernel4k"][540 * M : 541 * M].all()
    same(dm, ref)


@pytest.mark.parametrize("kernel", [(6, 1), (6, 14), (6, 15), (6, 18)])
def test_rox_collapse_only_from_6_15(kernel):
    dm, ref = pair(kernel=kernel)
    apply_both(dm, ref, 0, 550 * M + 3, 1, 0, RW, D.F_RUNNING)  # set_memory_ro: split
    apply_both(dm, ref, 1, 550 * M, M, 0, RW, D.F_COLLAPSE | D.F_ALIAS | D.F_RUNNING)  # set_memory_rox
    collapsed = kernel >= (6, 15)
    assert dm.counters["direct_map_level2_collapses"] == int(collapsed)
    assert (550 in dm.regions_on_4k()) is not collapsed
    same(dm, ref)


def test_rox_never_collapses_a_kernel_4k_block():
    dm, ref = pair(kernel=(6, 15))
    apply_both(dm, ref, 0, 560 * M + 9, 1, 0, 0, D.F_FORCE_SPLIT | D.F_KERNEL_4K | D.F_RUNNING)
    apply_both(dm, ref, 1, 560 * M, M, 0, RW, D.F_COLLAPSE | D.F_ALIAS | D.F_RUNNING)
    assert dm.counters["direct_map_level2_collapses"] == 0
    same(dm, ref)


def test_1g_collapses_back_after_its_2m_leaves():
    dm, ref = pair(kernel=(6, 15))
    apply_both(dm, ref, 0, 77, 1, 0, RW, D.F_RUNNING)  # 1G -> 2M -> 4K
    apply_both(dm, ref, 1, 0, G, 0, RW, D.F_COLLAPSE | D.F_ALIAS | D.F_RUNNING)  # set_memory_rox over the 1G
    c = dm.counters
    assert (c["direct_map_level2_collapses"], c["direct_map_level3_collapses"]) == (1, 1)
    assert dm.state["pud"][0] == D.LEAF and c["pt_pages_free"] == 2
    assert c["DirectMap1G"] == 1 << 20
    same(dm, ref)


def test_holes_and_pte_none_entries_are_skipped():
    dm, ref = pair()
    apply_both(dm, ref, 0, 600 * M + 10, 4, 0, RW, D.F_RUNNING)  # the hole
    apply_both(dm, ref, 1, 700 * M + 500, 4, 0, RW, D.F_RUNNING)  # pte_none entries
    assert dm.counters["unmapped_pages"] == 8 and dm.counters["splits_all"] == 0
    same(dm, ref)


def test_log_grows_and_resumes():
    dm, ref = pair()
    rows = [(512 * M + k * M + 1, 1, 0, RW, D.F_RUNNING) for k in range(0, 500) if 512 + k not in (600, 700)]
    dm.apply(Ops.from_rows(rows))
    for i, r in enumerate(rows):
        ref.cpa(i, r[0], r[1], r[2], r[3], running=True)
    assert len(dm.events()) == 498
    same(dm, ref)


# ----------------------------------------------------------------------------- differential, random streams
FLAG_CHOICES = [D.F_RUNNING, 0, D.F_NOFLUSH | D.F_RUNNING, D.F_ALIAS | D.F_RUNNING, D.F_FORCE_SPLIT | D.F_RUNNING,
                D.F_COLLAPSE | D.F_ALIAS | D.F_RUNNING, D.F_FORCE_SPLIT | D.F_KERNEL_4K | D.F_RUNNING]
MASKS = [(0, RW), (RW, 0), (0, P | RW), (P | RW, 0), (0, NX), (NX, 0)]


@pytest.mark.parametrize("kernel", [(6, 1), (6, 15)])
@pytest.mark.parametrize("seed", range(4))
def test_random_streams_match_reference_after_every_op(kernel, seed):
    rng = np.random.default_rng(seed)
    dm, ref = pair(kernel=kernel)
    for i in range(150):
        kind = rng.integers(4)
        if kind == 0:
            pfn, n = int(rng.integers(0, 2 * G)), 1
        elif kind == 1:
            pfn, n = int(rng.integers(0, 2 * G)), int(rng.integers(1, 2000))
        elif kind == 2:
            pfn, n = int(rng.integers(0, 4 * 512)) * M, M * int(rng.integers(1, 3))
        else:
            pfn, n = int(rng.integers(512, 1024)) * M + int(rng.integers(0, 3)), M
        setm, clrm = MASKS[int(rng.integers(len(MASKS)))]
        flags = FLAG_CHOICES[int(rng.integers(len(FLAG_CHOICES)))]
        apply_both(dm, ref, i, pfn, n, setm, clrm, flags)
        same(dm, ref)


class CpaMachine(RuleBasedStateMachine):
    """Invariants: DirectMap totals constant, counters monotone, every pfn at exactly one level."""

    @initialize(kernel=st.sampled_from([(6, 1), (6, 15)]))
    def setup(self, kernel):
        self.dm, self.ref = pair(kernel=kernel)
        self.total_kb = sum(self.dm.direct_map_kb().values())
        self.prev = dict(self.dm.counters)
        self.i = 0

    @rule(pfn=st.integers(0, 2 * G - 1), n=st.sampled_from([1, 2, 33, 34, 511, 512, 1024]),
          mask=st.sampled_from(MASKS), flags=st.sampled_from(FLAG_CHOICES), align=st.booleans())
    def cpa(self, pfn, n, mask, flags, align):
        if align:
            pfn -= pfn % M
        apply_both(self.dm, self.ref, self.i, pfn, n, mask[0], mask[1], flags)
        self.i += 1

    @invariant()
    def totals_constant(self):
        assert sum(self.dm.direct_map_kb().values()) == self.total_kb

    @invariant()
    def counters_monotone(self):
        now = self.dm.counters
        for k in ("direct_map_level2_splits", "direct_map_level3_splits", "direct_map_level2_collapses",
                  "direct_map_level3_collapses", "flush_tlb_all", "pt_pages_alloc", "cpa_calls"):
            assert now[k] >= self.prev[k]
        self.prev = dict(now)

    @invariant()
    def one_level_per_pfn_and_counts_agree(self):
        st_ = self.dm.state
        before = self.dm.direct_map_kb()
        self.dm._recount()
        assert self.dm.direct_map_kb() == before
        # a 2M region is exactly one of: under a 1G leaf, a 2M leaf, a PTE table, unmapped
        under_1g = np.repeat(st_["pud"] == D.LEAF, 512)
        table = np.repeat(st_["pud"] == D.TABLE, 512)
        assert not (under_1g & table).any()
        same(self.dm, self.ref)


CpaMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None, derandomize=True,
                                        suppress_health_check=[HealthCheck.too_slow])
TestCpaMachine = CpaMachine.TestCase


# ----------------------------------------------------------------------------- real captures
def _bundle_dir(name: str) -> Path:
    for root in (REPO_TRACES, SHARED_TRACES):
        if (root / name).is_dir():
            return root / name
    pytest.skip(f"capture {name} not available")


def vmemmap_base(ev) -> int:
    """struct page * of the dm_* kprobes -> pfn: each secretmem page's dm_invalid follows its
    allocation on the same CPU and pid; page - 64 * pfn is the vmemmap base (sizeof(struct page) == 64)."""
    bases = set()
    last_alloc: dict[tuple[int, int], int] = {}
    for row in ev.itertuples(index=False):
        if row.event == "mm_page_alloc" and pd.notna(row.pfn):
            last_alloc[(row.cpu, row.pid)] = int(row.pfn)
        elif row.event == "dm_invalid" and (row.cpu, row.pid) in last_alloc:
            page = int(row.fields.split("page=")[1], 16)
            bases.add(page - 64 * last_alloc[(row.cpu, row.pid)])
    assert len(bases) == 1, bases
    return bases.pop()


@pytest.mark.parametrize("name", ["secretmem_64", "secretmem_1024"])
def test_secretmem_kprobe_pfns_reproduce_the_kernels_splits(tmp_path, name):
    """CPA at the pfns the dm_* kprobes name, on the layout of dmdump-before, gives the kernel's own
    vmstat split counts, DirectMap totals and the exact set of 4K-mapped 2M regions of dmdump-after."""
    bdir = _bundle_dir(name)
    out = tmp_path / "t.parquet"
    ptebench.ingest(bdir, out)
    trace = ptebench.load(out)
    ev = trace.events
    base = vmemmap_base(ev)
    assert base == 0xFFD4000000000000  # LA57 vmemmap base of this nokaslr guest
    snaps = trace.bundle["snapshots"]
    dm = DirectMap.from_dump(snaps["before"]["dmdump"])
    dm.set_vmstat(snaps["before"]["vmstat"])
    k = ev[ev["event"].isin(["dm_invalid", "dm_default"])]
    rows = []
    for e, f in zip(k["event"].astype(str), k["fields"], strict=True):
        pfn = (int(f.split("page=")[1], 16) - base) // 64
        if e == "dm_invalid":  # set_direct_map_invalid_noflush(): clear _PAGE_PRESENT | _PAGE_RW
            rows.append((pfn, 1, 0, P | RW, D.F_NOFLUSH | D.F_RUNNING))
        else:  # set_direct_map_default_noflush()
            rows.append((pfn, 1, P | RW, 0, D.F_NOFLUSH | D.F_RUNNING))
    dm.apply(Ops.from_rows(rows))
    after = snaps["after"]
    c = dm.counters
    for key in ("direct_map_level2_splits", "direct_map_level3_splits"):
        assert c[key] == after["vmstat"][key]
    assert dm.direct_map_kb() == after["dmdump"]["totals_kB"]
    assert dm.regions_on_4k() == after["dmdump"]["regions_2m_on_4k"]


def test_from_dump_matches_every_dump_total():
    for bdir in sorted(p for p in (SHARED_TRACES if SHARED_TRACES.is_dir() else REPO_TRACES).iterdir() if p.is_dir()):
        for dump_file in sorted(bdir.glob("dmdump-*.txt")):
            dump = B.parse_direct_map_dump(dump_file.read_text(), file=str(dump_file))
            dm = DirectMap.from_dump(dump)
            assert dm.regions_on_4k() == dump["regions_2m_on_4k"], dump_file


def ref_from(dm: DirectMap) -> RefDirectMap:
    """An oracle holding the same layout as ``dm`` (built through the oracle's own mapping calls)."""
    ref = RefDirectMap(collapse_rules=dm.kernel >= (6, 15), gbpages=dm.gbpages)
    st_ = dm.state
    for g in range(len(st_["pud"])):
        if st_["pud"][g] == D.LEAF:
            ref.map_1g(g, int(st_["attr1g"][g]))
        elif st_["pud"][g] == D.TABLE:
            for m in range(g * 512, g * 512 + 512):
                if st_["pmd"][m] == D.LEAF:
                    ref.map_2m(m, int(st_["attr2m"][m]))
                elif st_["pmd"][m] == D.TABLE:
                    ref.map_4k_table(m, [int(a) for a in st_["attr4k"][m * M: (m + 1) * M]])
    ref.c["l2_split"], ref.c["l3_split"] = (dm.counters["direct_map_level2_splits"],
                                            dm.counters["direct_map_level3_splits"])
    return ref


@pytest.mark.parametrize("name", ["secretmem_64", "modules"])
def test_real_replay_streams_match_reference_after_every_op(tmp_path, name, monkeypatch):
    """The CPA calls a faithful replay of a real capture makes, through both models, state compared after each."""
    out = tmp_path / "t.parquet"
    ptebench.ingest(_bundle_dir(name), out)
    recorded: list = []
    initial: list = []
    real_apply = DirectMap.apply

    def spy(self, ops):
        if not initial:
            initial.append(DirectMap.from_dump(ptebench.load(out).bundle["snapshots"]["before"]["dmdump"]))
            initial[0].set_vmstat(ptebench.load(out).bundle["snapshots"]["before"]["vmstat"])
        recorded.extend(zip(ops.pfn.tolist(), ops.npages.tolist(), ops.set_mask.tolist(), ops.clr_mask.tolist(),
                            ops.flags.tolist(), strict=True))
        return real_apply(self, ops)

    monkeypatch.setattr(DirectMap, "apply", spy)
    result = ptebench.replay(out)
    monkeypatch.undo()
    assert recorded and result.counters["delta"]["direct_map_level2_splits"] >= 1
    dm = initial[0]
    ref = ref_from(dm)
    base_log = len(ref.log)
    for i, (pfn, n, setm, clrm, flags) in enumerate(recorded):
        apply_both(dm, ref, i, pfn, n, setm, clrm, flags)
        same(dm, ref)
    assert len(ref.log) - base_log == result.counters["delta"]["splits_all"]
