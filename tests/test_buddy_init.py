"""The buddy's start state: exactly buddyinfo-before, aligned and fully merged, never on a page in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ptebench
from ptebench.sim.buddy_init import (
    MAX_ORDER,
    buddyinfo_distance,
    choose_free_blocks,
    first_events,
    initial_state,
    zones_from_ram,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["secretmem_1024", "modules"])
def capture(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("bi") / "t.parquet"
    ptebench.ingest([str(ROOT / "traces" / request.param)], out)
    return ptebench.load(out)


def _check(state, buddyinfo, first):
    counts: dict[str, list[int]] = {}
    seen = np.zeros(max(e for _, _, e in state.zones), dtype=bool)
    zone_of = {}
    for name, s, e in state.zones:
        zone_of[name] = (s, e)
    free_set = set(state.blocks)
    for pfn, order in state.blocks:
        size = 1 << order
        assert pfn % size == 0
        name = next(n for n, (s, e) in zone_of.items() if s <= pfn < e)
        assert pfn + size <= zone_of[name][1]
        assert not seen[pfn: pfn + size].any()
        seen[pfn: pfn + size] = True
        assert not (first[pfn: pfn + size] == 2).any()  # never a page the trace frees before allocating it
        if order < MAX_ORDER - 1:
            assert (pfn ^ size, order) not in free_set  # fully merged: no free buddy of the same order
        counts.setdefault(name, [0] * MAX_ORDER)[order] += 1
    for a, b in state.absent:
        assert not seen[a: min(b, len(seen))].any()
    assert buddyinfo_distance(counts, buddyinfo) == {"blocks": 0, "pages": 0}


def test_initial_state_matches_buddyinfo_exactly(capture):
    bi = capture.bundle["snapshots"]["before"]["buddyinfo"]
    state = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    first, _ = first_events(capture, max(e for _, _, e in state.zones))
    _check(state, bi, first)
    assert state.stats["blocks_short"] == {}
    assert [z[0] for z in state.zones] == ["DMA", "DMA32", "Normal"]
    again = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    assert again.blocks == state.blocks and (again.pageblock_mt == state.pageblock_mt).all()


GOLDEN = {"secretmem_1024": (9, 1054, 1030), "modules": (None, 2038, 1373)}


def test_likely_free_pages_are_preferred(capture):
    """Golden: pages in use before the trace, pages the trace allocates first, and how many of those start free
    (the rest sit in blocks that also hold pages in use, or were on per-CPU lists, which buddyinfo omits)."""
    bi = capture.bundle["snapshots"]["before"]["buddyinfo"]
    state = initial_state(capture, memmap=capture.bundle["memmap"]["firmware"], buddyinfo=bi)
    s = state.stats
    before, first, placed = GOLDEN[capture.bundle["name"]]
    assert (s["pages_first_allocated"], s["likely_free_pages_placed_free"]) == (first, placed)
    if before is not None:
        assert s["pages_allocated_before_trace"] == before


def test_constructed_zone_choice():
    ram = [(0x1000, 0x9F000), (0x100000, 0x1000000)]  # 4K..636K, 1M..16M: DMA only
    zones, absent, npfn = zones_from_ram(ram)
    assert zones == [("DMA", 0, 4096)] and absent[0] == (0, 1) and (159, 256) in absent
    first = np.zeros(npfn, dtype=np.int8)
    first[2048] = 2  # in use before the trace: no free block may hold it
    first[1024:1030] = 1  # allocated by the trace first: preferred
    blocks, short = choose_free_blocks(zones, absent, npfn, {"DMA": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]}, first)
    assert short == {}
    assert (1024, 10) in blocks  # the 4M block [4M, 8M) holds the likely-free pages
    assert all(not (p <= 2048 < p + (1 << o)) for p, o in blocks)
    assert len(blocks) == 3
    blocks, short = choose_free_blocks(zones, absent, npfn, {"DMA": [0] * 10 + [4]}, first)
    assert short == {"DMA": [0] * 10 + [2]}  # only [4M,8M) and [12M,16M) are whole and free of used pages
