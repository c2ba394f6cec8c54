"""Simulate mode: the modeled buddy chooses the pfns; policies plug in through the seam."""

from __future__ import annotations

from pathlib import Path

import pytest

import ptebench
from ptebench import policies
from ptebench.errors import PtebenchError
from ptebench.results import results_json
from ptebench.sim import buddy as B
from ptebench.sim import directmap as D

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def secretmem(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "secretmem_1024.parquet"
    ptebench.ingest([str(ROOT / "traces" / "secretmem_1024")], out)
    return out


def test_simulate_none_reports_model_beside_kernel(secretmem):
    r = ptebench.replay(secretmem, mode="simulate")
    run = results_json([r])["runs"][0]
    assert run["mode"] == "simulate"
    for key in ("placement", "placement_kernel", "simulate", "faithful"):
        assert key in run
    assert set(run["placement"]) == set(run["placement_kernel"])
    sim = r.simulate
    assert sim["alloc_failed"] == 0 and sim["free_rejected"] == 0 and sim["free_unmapped"] == 0
    assert sim["split_pt_pages"] == r.counters["delta"]["splits_all"]
    assert r.faithful["delta"]["direct_map_level2_splits"] == 2  # the faithful replay of the same trace
    assert r.placement_kernel["distinct_2m_blocks_unmovable"] == 7
    # golden: the model's own placement and splits on this trace (deterministic)
    assert r.counters["delta"]["direct_map_level2_splits"] == 1
    assert r.placement["distinct_2m_blocks_unmovable"] == 4
    assert set(r.splits["source"]) == {"simulate"}
    again = results_json([ptebench.replay(secretmem, mode="simulate")])["runs"][0]
    run.pop("timing")
    again.pop("timing")
    assert run == again


@policies.register
class Pool2M(policies.Policy):
    """A test-only design: secretmem pages from 2M blocks unmapped whole (like unmapped_alloc's order-9 refill)."""

    name = "test_pool2m"
    intercepts = frozenset({"secretmem"})

    def __init__(self) -> None:
        self.pool: list[int] = []
        self.refills = 0

    def refill(self, ctx, consumer):
        pfn = ctx.buddy_alloc(9, B.request(B.GFP_KERNEL, 9), 0)
        if pfn < 0:
            return 0
        ctx.cpa(pfn, 512, 0, D.ATTR_P | D.ATTR_RW, D.F_NOFLUSH)  # one aligned 2M request: no split
        self.pool.extend(range(pfn + 511, pfn - 1, -1))
        self.refills += 1
        return 512

    def alloc(self, ctx, order, req, cpu, consumer):
        assert order == 0
        if not self.pool and not self.refill(ctx, consumer):
            return -1
        return self.pool.pop()

    def free(self, ctx, pfn, order, cpu, consumer):
        self.pool.append(pfn)  # stays unmapped in the pool

    def stats(self):
        return {"refills": self.refills, "pooled": len(self.pool)}


def test_a_policy_defined_here_replays_without_touching_the_engine(secretmem):
    r = ptebench.replay(secretmem, variant="test_pool2m", mode="simulate")
    assert r.variant == "test_pool2m"
    assert r.simulate["policy"] == {"refills": 2, "pooled": 1024}
    assert r.counters["delta"]["direct_map_level2_splits"] == 0  # whole 2M leaves change in place
    none = ptebench.replay(secretmem, mode="simulate")
    assert r.counters["delta"]["DirectMap4k"] < none.counters["delta"]["DirectMap4k"]


def test_intercepting_variant_needs_simulate(secretmem):
    with pytest.raises(PtebenchError, match="needs --mode simulate"):
        ptebench.replay(secretmem, variant="test_pool2m")
    with pytest.raises(PtebenchError, match="unknown variant"):
        ptebench.replay(secretmem, variant="nope", mode="simulate")
