"""The jitted Linux 6.1 buddy model against its plain-Python oracle: constructed cases with exact pfns,
differential runs on generated and real streams (full state compared after every op), and
Hypothesis state machines for the invariants."""

from __future__ import annotations

import lzma
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ptebench.errors import PtebenchError
from ptebench.parse.gfp import GFP_NAMES, gfp_mask
from ptebench.sim import buddy as B
from ptebench.sim.buddy_reference import RefBuddy

G = GFP_NAMES
KERNEL = G["GFP_KERNEL"]
MOVABLE = G["GFP_HIGHUSER_MOVABLE"]
ATOMIC = G["GFP_ATOMIC"]
NOWAIT = G["GFP_NOWAIT"]
RECLAIMABLE = G["GFP_KERNEL"] | G["__GFP_RECLAIMABLE"]
KERNEL_DMA32 = G["GFP_KERNEL"] | G["GFP_DMA32"]
MOVABLE_DMA32 = G["GFP_USER"] | G["__GFP_MOVABLE"] | G["GFP_DMA32"]
UNM, MOV, REC, HA = B.MT_UNMOVABLE, B.MT_MOVABLE, B.MT_RECLAIMABLE, B.MT_HIGHATOMIC
SMALL = [("DMA", 0, 1024), ("DMA32", 1024, 4096), ("Normal", 4096, 8192)]
NOPCP = {"pcp_batch": 1, "pcp_high": 0}  # the boot pageset: every pcp free goes straight to the buddy
QUIET = {"min_free_kbytes": 128}  # watermarks out of the way (32 pages over the whole machine)
REPO_TRACES = Path(__file__).resolve().parents[1] / "traces"


# ----------------------------------------------------------------------------- helpers
def pair(zones=SMALL, ncpus=1, blocks=None, mts=MOV, absent=(), **kw):
    """The same seeded machine in both models."""
    b = B.Buddy.from_zones(zones, ncpus, **kw)
    r = RefBuddy(list(zones), ncpus, **kw)
    if blocks is None:
        blocks = [(p, 10) for p in range(0, max(z[2] for z in zones), 1024)]
    if isinstance(mts, dict):
        arr = np.full(len(b.state["pbmt"]), MOV, np.int8)
        for pb, mt in mts.items():
            arr[pb] = mt
        mts = arr
    b.set_free_blocks(blocks, mts, absent=absent)
    r.seed(blocks, [int(x) for x in np.broadcast_to(np.asarray(mts), b.state["pbmt"].shape)], absent)
    same(b, r)
    return b, r


def same(b: B.Buddy, r: RefBuddy) -> None:
    sb, sr = b.snapshot(), r.snapshot()
    for key in sb:
        assert sb[key] == sr[key], f"{key} differs"


def A(b, r, order, gfp, cpu=0):
    """Allocate in both; the pfns must agree."""
    p = b.alloc(order, gfp, cpu)
    assert r.alloc(order, gfp, cpu) == p
    return p


def F(b, r, pfn, order, cpu=0, **kw):
    b.free(pfn, order, cpu, **kw)
    assert r.free(pfn, order, cpu, tail=kw.get("to_tail", False), bypass_pcp=kw.get("bypass_pcp", False))


def free_pfns(b: B.Buddy, zone: str, order: int, mt: int) -> list[int]:
    return b.free_lists().get((zone, order, mt), [])


# ----------------------------------------------------------------------------- boot-time sizing and gfp
def test_min_free_kbytes_and_batch_follow_the_kernel_tables():
    # calculate_min_free_kbytes()'s own table: 4096 MB -> 8192k, 16384 MB -> 16384k; clamped to [128, 262144]
    assert B.calculate_min_free_kbytes(1 << 20) == 8192
    assert B.calculate_min_free_kbytes(1 << 22) == 16384
    assert B.calculate_min_free_kbytes(10) == 128
    assert B.calculate_min_free_kbytes(1 << 40) == 262144
    # zone_batchsize(): 1 MiB / 4 -> 64 -> 96 -> 63 on big zones, 1 on tiny ones (after max(1, .))
    assert B.zone_batchsize(1 << 21) == 63
    assert B.zone_batchsize(16384) == 3
    assert B.zone_batchsize(3840) == 0
    assert B.zone_highsize(20000, 1 << 21, 63, 2, 2) == 10000
    assert B.zone_highsize(100, 1 << 21, 63, 2, 2) == 252  # at least 4 * batch
    assert B.zone_highsize(100, 1 << 21, 63, 0, 4) == 252


def test_zone_sizing_of_an_8g_guest_matches_the_reference():
    zones = [("DMA", 1, 4096), ("DMA32", 4096, 1 << 20), ("Normal", 1 << 20, 0x240000)]
    managed = [3840, 740000, 1310000]
    b = B.Buddy.from_zones(zones, 2, managed=managed)
    r = RefBuddy(zones, 2, managed=managed)
    # boot: int_sqrt(4 * 2053840 * 16) = 11465 kB, then THP raises it to 2 * 3 + 9 * 3 pageblocks
    assert b.min_free_kbytes == r.min_free_kbytes == 16896 * 4
    zi = b.zone_info()
    for name, want in r.zone_params().items():
        for k, v in want.items():
            assert zi[name][k] == v, (name, k)
    normal = zi["Normal"]
    assert normal["min"] == 16896 * 1310000 // sum(managed)
    assert normal["low"] - normal["min"] == max(normal["min"] // 4, 1310000 * 10 // 10000)
    assert normal["pcp_batch"] == 63 and normal["pcp_high"] == normal["low"] // 2
    assert zi["DMA"]["pcp_batch"] == 1
    assert zi["DMA"]["lowmem_reserve"] == [0, 740000 // 256, (740000 + 1310000) // 256]
    assert zi["DMA32"]["lowmem_reserve"] == [0, 0, 1310000 // 256]
    assert zi["Normal"]["lowmem_reserve"] == [0, 0, 0]
    # a sysctl value replaces the boot computation; watermark_scale_factor widens the gaps
    b2 = B.Buddy.from_zones(zones, 2, managed=managed, min_free_kbytes=8192, watermark_scale_factor=100)
    n2 = b2.zone_info()["Normal"]
    assert n2["min"] == 2048 * 1310000 // sum(managed)
    assert n2["low"] - n2["min"] == 1310000 * 100 // 10000


def test_gfp_helpers():
    assert [B.gfp_zone(g) for g in (KERNEL, MOVABLE, G["GFP_DMA"] | KERNEL, KERNEL_DMA32, MOVABLE_DMA32)] == [
        B.ZONE_NORMAL, B.ZONE_NORMAL, B.ZONE_DMA, B.ZONE_DMA32, B.ZONE_DMA32]
    assert [B.gfp_migratetype(g) for g in (KERNEL, MOVABLE, RECLAIMABLE, ATOMIC)] == [UNM, MOV, REC, UNM]
    assert B.gfp_to_alloc_flags(KERNEL, 0) == B.ALLOC_WMARK_MIN | B.ALLOC_CPUSET | B.ALLOC_KSWAPD
    atomic = B.ALLOC_WMARK_MIN | B.ALLOC_MIN_RESERVE | B.ALLOC_KSWAPD | B.ALLOC_NON_BLOCK
    assert B.gfp_to_alloc_flags(ATOMIC, 0) == atomic
    assert B.gfp_to_alloc_flags(ATOMIC, 2) == atomic | B.ALLOC_HIGHATOMIC
    assert B.gfp_to_alloc_flags(NOWAIT, 1) == (B.ALLOC_CPUSET | B.ALLOC_KSWAPD | B.ALLOC_NON_BLOCK
                                               | B.ALLOC_HIGHATOMIC)
    assert B.gfp_to_alloc_flags(G["GFP_TRANSHUGE_LIGHT"], 9) == B.ALLOC_CPUSET  # NOMEMALLOC: no reserves
    assert B.alloc_flags_nofragment(B.ZONE_NORMAL, KERNEL) == B.ALLOC_KSWAPD | B.ALLOC_NOFRAGMENT
    assert B.alloc_flags_nofragment(B.ZONE_DMA32, KERNEL) == B.ALLOC_KSWAPD
    assert B.alloc_flags_nofragment(B.ZONE_NORMAL, KERNEL, dma32_populated=False, nr_nodes=2) == B.ALLOC_KSWAPD
    assert B.gfp_pfmemalloc_flags(ATOMIC | G["__GFP_MEMALLOC"]) == B.ALLOC_NO_WATERMARKS
    assert B.gfp_pfmemalloc_flags(ATOMIC | G["__GFP_MEMALLOC"] | G["__GFP_NOMEMALLOC"]) == 0
    req = B.request(KERNEL_DMA32, 3)
    assert (req >> B.R_ZONE_SHIFT) & 3 == B.ZONE_DMA32 and (req >> B.R_MT_SHIFT) & 3 == UNM
    assert req & B.R_DIRECT_RECLAIM and req & B.R_RETRY
    assert not B.request(KERNEL | G["__GFP_NORETRY"], 0) & B.R_RETRY
    assert not B.request(KERNEL, 4) & B.R_RETRY  # costly order without RETRY_MAYFAIL
    assert B.request(KERNEL | G["__GFP_THISNODE"], 0) & B.R_THISNODE
    words = B.requests(np.array([KERNEL, MOVABLE, KERNEL]), np.array([0, 9, 0]))
    assert words.tolist() == [B.request(KERNEL, 0), B.request(MOVABLE, 9), B.request(KERNEL, 0)]
    with pytest.raises(PtebenchError):
        B.gfp_zone(G["GFP_DMA"] | G["GFP_DMA32"])
    with pytest.raises(PtebenchError):
        B.gfp_migratetype(G["__GFP_MOVABLE"] | G["__GFP_RECLAIMABLE"])
    with pytest.raises(PtebenchError):
        B.request(KERNEL, 11)


def test_from_zones_validates():
    with pytest.raises(PtebenchError):
        B.Buddy.from_zones([("HighMem", 0, 100)])
    with pytest.raises(PtebenchError):
        B.Buddy.from_zones([("DMA", 0, 2048), ("DMA32", 1024, 4096)])
    with pytest.raises(PtebenchError):
        B.Buddy.from_zones([("DMA", 0, 1024)], 2, cpu_nodes=[0, 1])
    with pytest.raises(PtebenchError):
        B.Buddy.from_zones([("DMA", 0, 1024)], managed=[2000])
    b = B.Buddy.from_zones(SMALL)
    with pytest.raises(PtebenchError):
        b.set_free_blocks([(4097, 1)])  # misaligned
    b = B.Buddy.from_zones(SMALL)
    b.set_free_blocks([(0, 10)])
    with pytest.raises(PtebenchError):
        b.set_free_blocks([(1024, 10)])  # only a fresh allocator is seeded


# ----------------------------------------------------------------------------- splitting and merging
def test_split_smallest_order_first_and_expand_puts_upper_halves_back():
    b, r = pair(blocks=[(4096, 10)], **NOPCP, **QUIET)
    assert A(b, r, 0, MOVABLE) == 4096  # the order-10 block is split: halves 4608/9, 4352/8, ..., 4097/0
    assert b.buddyinfo()["Normal"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    assert free_pfns(b, "Normal", 9, MOV) == [4608] and free_pfns(b, "Normal", 0, MOV) == [4097]
    assert A(b, r, 0, MOVABLE) == 4097  # the smallest free order first
    assert A(b, r, 1, MOVABLE) == 4098
    assert A(b, r, 0, MOVABLE) == 4100  # order 2 split: 4101 stays free
    assert free_pfns(b, "Normal", 0, MOV) == [4101] and free_pfns(b, "Normal", 1, MOV) == [4102]
    assert A(b, r, 3, MOVABLE) == 4104
    assert b.counters["alloc_zone_locked"] == 5 and b.counters["alloc_zone_locked_percpu_refill"] == 5
    same(b, r)
    b.check()


def test_free_merges_buddies_back_to_order_10_and_buddy_merge_likely_goes_to_tail():
    b, r = pair(blocks=[(4096, 10)], **NOPCP, **QUIET)
    pages = [A(b, r, 0, MOVABLE) for _ in range(4)]
    assert pages == [4096, 4097, 4098, 4099]
    F(b, r, 4099, 0)  # buddy 4098 allocated; its order-1 buddy 4096 is not free: head of the list
    F(b, r, 4097, 0)  # buddy 4096 allocated, order-1 buddy 4098 allocated: head
    assert free_pfns(b, "Normal", 0, MOV) == [4097, 4099]
    F(b, r, 4096, 0)  # merges with 4097 into 4096/1; 4098/1 is not free: head of order 1
    F(b, r, 4098, 0)  # merges with 4099, then with 4096/1, ... up to the original order-10 block
    assert b.buddyinfo()["Normal"] == [0] * 10 + [1]
    assert free_pfns(b, "Normal", 10, MOV) == [4096]
    same(b, r)
    # buddy_merge_likely(): the order-0 page whose order-1 buddy is free goes to the tail
    b, r = pair(blocks=[(4096, 10)], **NOPCP, **QUIET)
    p = [A(b, r, 0, MOVABLE) for _ in range(8)]  # 4096..4103
    F(b, r, p[5], 0)  # 4101: its order-1 buddy 4102/1 is allocated -> head
    F(b, r, p[2], 0)  # 4098: 4099 allocated; order-1 buddy 4096/1 allocated -> head
    F(b, r, p[7], 0)  # 4103: 4102 allocated; order-1 buddy 4100/1 allocated -> head
    F(b, r, p[0], 0)  # 4096: 4097 allocated; order-1 buddy 4098/1: 4098 alone is order 0 -> head
    F(b, r, p[6], 0)  # 4102: merges with 4103 into 4102/1 -> order-1 buddy 4100/1 allocated -> head
    F(b, r, p[1], 0)  # 4097: merges with 4096 -> 4096/1; order-1 buddy... its order-2 buddy 4100/2 no -> head
    F(b, r, p[3], 0)  # 4099: merges 4098 -> 4098/1 -> with 4096/1 -> 4096/2; order-3 buddy 4104/3 is free -> tail
    assert b.free_lists()[("Normal", 2, MOV)][-1] == 4096 or b.free_lists()[("Normal", 2, MOV)] == [4096]
    same(b, r)
    b.check()


def test_merge_below_pageblock_order_ignores_the_list_migratetype():
    b, r = pair(blocks=[], mts={8: UNM}, **NOPCP, **QUIET)
    F(b, r, 4096, 0)  # pageblock 8 UNMOVABLE: on the unmovable list
    assert free_pfns(b, "Normal", 0, UNM) == [4096]
    b.state["pbmt"][8] = MOV  # the pageblock changes owner (as a steal would)
    r.pageblock[8] = MOV
    F(b, r, 4097, 0)  # merges with the unmovable 4096 into a movable order-1 block
    assert free_pfns(b, "Normal", 1, MOV) == [4096] and not free_pfns(b, "Normal", 0, UNM)
    same(b, r)


def test_highatomic_pageblocks_do_not_merge_with_normal_ones_at_pageblock_order():
    b, r = pair(blocks=[(4096, 9), (4608, 9), (5120, 9), (5632, 9)], mts={8: HA, 10: UNM}, **NOPCP, **QUIET)
    # 4096 (HIGHATOMIC) stays apart from 4608; 5120 (UNMOVABLE) merges with 5632 (MOVABLE), and the
    # merged block goes on the list of the freed page's type (movable)
    assert free_pfns(b, "Normal", 9, HA) == [4096] and free_pfns(b, "Normal", 9, MOV) == [4608]
    assert free_pfns(b, "Normal", 10, MOV) == [5120]
    assert b.zone_info()["Normal"]["nr_reserved_highatomic"] == 512
    same(b, r)
    b.check()


def test_bad_frees_are_rejected_and_change_nothing():
    b, r = pair(blocks=[(4096, 10)], absent=[(0, 1024)], **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL)
    assert p == 4096
    before = b.snapshot()
    # a free page, a block half free, a free block, misaligned, outside every zone, an absent page
    for pfn, order in ((4097, 0), (4096, 1), (4098, 1), (4097, 1), (9000, 0), (100, 0)):
        with pytest.raises(PtebenchError):
            b.free(pfn, order)
        assert not r.free(pfn, order)
    assert b.counters["bad_free"] == 6
    after = b.snapshot()
    assert {k: v for k, v in after.items() if k != "counters"} == {k: v for k, v in before.items() if k != "counters"}
    F(b, r, p, 0)
    with pytest.raises(PtebenchError):
        b.free(p, 0)  # double free
    assert not r.free(p, 0)
    # a part of an allocated block may be freed on its own (split_page() users do)
    q = A(b, r, 2, KERNEL)
    F(b, r, q + 2, 1)
    F(b, r, q, 0)
    same(b, r)
    b.check()


# ----------------------------------------------------------------------------- fallbacks and stealing
def test_fallback_prefers_reclaimable_for_unmovable_and_takes_the_largest_block():
    # DMA32 is the preferred zone of a DMA32 request: no ALLOC_NOFRAGMENT
    blocks = [(1024, 3), (1536, 3), (2048, 9)]
    b, r = pair(blocks=blocks, mts={2: REC, 3: MOV, 4: MOV}, **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL_DMA32)
    # largest first: the order-9 movable block (a whole pageblock: ownership taken) beats the order-3 ones
    assert p == 2048 and b.state["pbmt"][4] == UNM
    ev = b.extfrag_events()
    assert ev.tolist() == [[0, 2048, 0, 9, UNM, MOV, 1]]
    assert b.counters["extfrag_fragmenting"] == 0 and b.counters["extfrag_change_ownership"] == 1
    same(b, r)
    # same order in both fallback types: fallbacks[UNMOVABLE] = {RECLAIMABLE, MOVABLE}
    b, r = pair(blocks=[(1024, 3), (1536, 3)], mts={2: REC, 3: MOV}, **NOPCP, **QUIET)
    assert A(b, r, 0, KERNEL_DMA32) == 1024
    assert b.extfrag_events()[0, B.L_FALLBACK_MT] == REC
    assert b.counters["extfrag_fragmenting"] == 1
    same(b, r)
    b.check()


def test_movable_request_that_cannot_steal_takes_the_smallest_block():
    blocks = [(1024, 2), (1032, 1), (1536, 3)]
    b, r = pair(blocks=blocks, mts={2: UNM, 3: REC}, **NOPCP, **QUIET)
    # largest found is order 3 (reclaimable), but order < pageblock_order / 2 and movable: find_smallest
    p = A(b, r, 0, MOVABLE_DMA32)
    assert p == 1032
    ev = b.extfrag_events()[0]
    assert (ev[B.L_ALLOC_ORDER], ev[B.L_FALLBACK_ORDER], ev[B.L_FALLBACK_MT], ev[B.L_CHANGE_OWNERSHIP]) == (0, 1, UNM, 0)
    assert b.state["pbmt"][2] == UNM  # single block moved, no ownership change
    assert free_pfns(b, "DMA32", 0, MOV) == [1033]
    same(b, r)


@pytest.mark.parametrize(("free_blocks", "owned"), [([(1536, 8)], True), ([(1536, 7), (1664, 6)], False)])
def test_steal_takes_ownership_at_half_a_pageblock(free_blocks, owned):
    # pageblock 3 (1536..2047) is movable and its allocated pages are movable (PageLRU): for an
    # unmovable request alike = 512 - free - movable, so ownership needs 256 free pages here
    b, r = pair(blocks=free_blocks, mts={3: MOV}, **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL_DMA32)
    assert 1536 <= p < 2048
    assert bool(b.state["pbmt"][3] == UNM) is owned
    assert b.counters["extfrag_change_ownership"] == int(owned)
    # every free block of the pageblock moved to the unmovable lists
    fl = b.free_lists()
    assert all(mt == UNM for (zone, _o, mt) in fl if zone == "DMA32")
    same(b, r)
    b.check()


def test_reclaimable_pageblock_needs_half_free_for_an_unmovable_steal():
    b, r = pair(blocks=[(1536, 7), (1664, 6)], mts={3: REC}, **NOPCP, **QUIET)
    A(b, r, 0, KERNEL_DMA32)  # 192 free + alike 0 < 256: pages stolen, the block stays reclaimable
    assert b.state["pbmt"][3] == REC
    same(b, r)


def test_nofragment_spreads_to_dma32_before_fragmenting_normal():
    # Normal has 1024 free pages in half pageblocks (movable), DMA32 a whole free pageblock
    halves = [(4096, 8), (4608, 8), (5120, 8), (5632, 8)]
    b, r = pair(blocks=halves + [(2048, 9)], **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL)
    assert 2048 <= p < 2560, "the unmovable page comes from DMA32's whole pageblock"
    assert b.counters["extfrag_fragmenting"] == 0 and b.counters["nofragment_retry"] == 0
    assert b.state["pbmt"][4] == UNM and (b.state["pbmt"][8:12] == MOV).all()
    same(b, r)
    # no whole pageblock anywhere: ALLOC_NOFRAGMENT is dropped and Normal is fragmented; half a
    # pageblock free (256) + alike (512 - 256 free - 256 movable) reaches the ownership threshold
    b, r = pair(blocks=halves + [(2048, 8)], **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL)
    assert 4096 <= p < 8192
    assert b.counters["nofragment_retry"] == 1 and b.counters["extfrag_fragmenting"] == 1
    assert b.counters["extfrag_change_ownership"] == 1 and b.state["pbmt"][p >> 9] == UNM
    same(b, r)
    b.check()


# ----------------------------------------------------------------------------- per-cpu lists
def test_pcp_refill_takes_batch_blocks_in_physical_order():
    b, r = pair(blocks=[(4096, 10)], pcp_batch=7, pcp_high=100, **QUIET)
    assert A(b, r, 0, MOVABLE) == 4096
    assert b.pcp_lists() == {(0, "Normal", 1): [(p, MOV) for p in range(4097, 4103)]}  # pindex 1: order 0 movable
    c = b.counters
    assert (c["pcp_refill"], c["pcp_refill_pages"], c["alloc_zone_locked_percpu_refill"]) == (1, 7, 7)
    assert b.snapshot()["pcp_state"][(0, "Normal")] == (6, 0)
    # buddyinfo does not count pcp pages
    assert sum(n << o for o, n in enumerate(b.buddyinfo()["Normal"])) == 1024 - 7
    assert b.zone_info()["Normal"]["nr_free_pages"] == 1024 - 7
    # order 1: batch >> 1 = 3 blocks; order 9 (THP): max(7 >> 9, 2) = 2 blocks, on the movable THP list
    assert A(b, r, 1, MOVABLE) == 4104
    assert [p for p, _ in b.pcp_lists()[(0, "Normal", 4)]] == [4106, 4108]
    F(b, r, 4104, 1)  # to the pcp list head
    assert [p for p, _ in b.pcp_lists()[(0, "Normal", 4)]] == [4104, 4106, 4108]
    same(b, r)
    b.check()


def test_pcp_drains_when_count_reaches_high_with_growing_batches():
    b, r = pair(blocks=[(4096, 10)], pcp_batch=4, pcp_high=10, **QUIET)
    pages = [A(b, r, 0, MOVABLE) for _ in range(24)]  # six refills of 4: the list is empty again
    state = lambda: b.snapshot()["pcp_state"][(0, "Normal")]  # noqa: E731
    assert state() == (0, 0) and b.counters["pcp_refill"] == 6
    for p in pages[:10]:
        F(b, r, p, 0)
    # count reached high: nr_pcp_free() = clamp(batch << 0, batch, high - batch) = 4 blocks, from the tail
    # (the oldest frees), and free_factor grows
    assert state() == (6, 1) and b.counters["pcp_drain"] == 4
    assert [p for p, _ in b.pcp_lists()[(0, "Normal", 1)]] == pages[9:3:-1]
    for p in pages[10:14]:
        F(b, r, p, 0)
    assert state() == (4, 1) and b.counters["pcp_drain"] == 10  # batch << 1 = 8 clamped to high - batch = 6
    q = A(b, r, 1, MOVABLE)  # an allocation halves free_factor; the order-1 list refills max(4 >> 1, 2) blocks
    assert state() == (6, 0)
    for p in pages[14:18]:
        F(b, r, p, 0)
    assert state() == (6, 1)
    F(b, r, q, 1)  # free_high: free_factor set and order 1..3: nr_pcp_high() is 0, everything is drained
    assert state() == (0, 1)
    same(b, r)
    b.check()


def test_frees_go_to_the_freeing_cpu_and_drain_all_empties_every_list():
    b, r = pair(blocks=[(4096, 10)], ncpus=2, pcp_batch=4, pcp_high=100, **QUIET)
    p0 = A(b, r, 0, MOVABLE, cpu=0)
    p1 = A(b, r, 0, KERNEL, cpu=1)
    F(b, r, p0, 0, cpu=1)
    assert (1, "Normal", MOV) in b.pcp_lists() and p0 in [p for p, _ in b.pcp_lists()[(1, "Normal", MOV)]]
    F(b, r, p1, 0, cpu=0, bypass_pcp=True)
    b.drain_all()
    r.drain_all()
    assert b.pcp_lists() == {}
    assert b.buddyinfo()["Normal"] == [0] * 10 + [1]
    same(b, r)
    b.check()


# ----------------------------------------------------------------------------- watermarks and reserves
def test_low_watermark_sends_allocations_to_the_next_zone_and_lowmem_reserve_protects_it():
    zones = [("DMA32", 0, 4096), ("Normal", 4096, 8192)]
    # min_free_kbytes 2048 -> 512 pages min, 256 per zone; low = min + max(min / 4, managed / 1000) = 320
    b, r = pair(zones=zones, blocks=[(0, 10), (1024, 10), (4096, 8)], min_free_kbytes=2048, **NOPCP)
    zi = b.zone_info()
    assert (zi["Normal"]["min"], zi["Normal"]["low"], zi["Normal"]["high"]) == (256, 320, 384)
    assert zi["DMA32"]["lowmem_reserve"][B.ZONE_NORMAL] == 4096 // 256
    p = A(b, r, 0, MOVABLE)  # Normal holds 256 free pages, below its low watermark: DMA32
    assert p < 4096
    assert b.counters["slowpath"] == 0
    same(b, r)
    # DMA32 with 264 free: above its min (256) but not above min + lowmem_reserve[Normal] (272); Normal
    # at its min: a Normal-capable request fails (the model has no reclaim)...
    b, r = pair(zones=zones, blocks=[(0, 8), (256, 3), (4096, 8)], min_free_kbytes=2048, **NOPCP)
    assert A(b, r, 0, MOVABLE) == -1
    assert b.counters["slowpath"] == 1 and b.counters["alloc_fail"] == 1
    # ... while a DMA32 request, whose highest zone is DMA32, has no reserve to respect
    assert 0 <= A(b, r, 0, KERNEL_DMA32) < 4096
    # GFP_ATOMIC may go below min (min / 2 for __GFP_HIGH, a further quarter for non-blocking): Normal
    assert A(b, r, 0, ATOMIC) >= 4096
    same(b, r)
    b.check()


def test_highatomic_reserve_is_made_used_and_given_back():
    zones = [("Normal", 0, 4096)]
    # 1024 free pages, low watermark 1280: every allocation takes the slow path
    b, r = pair(zones=zones, blocks=[(0, 10)], min_free_kbytes=4096, **NOPCP)
    p = A(b, r, 1, ATOMIC)  # slow path with ALLOC_HIGHATOMIC: the block's pageblock becomes a reserve
    assert p == 0
    assert b.state["pbmt"][0] == HA and b.zone_info()["Normal"]["nr_reserved_highatomic"] == 512
    assert b.counters["highatomic_reserve"] == 1
    ha_free = sum(1 << o for (z, o, mt), v in b.free_lists().items() if mt == HA for _ in v)
    assert ha_free == 510  # the rest of pageblock 0 moved to the highatomic lists
    # an order-1 request goes to the pcp lists first, whose refill (__rmqueue()) never takes highatomic
    # blocks; an order-4 one goes to rmqueue_buddy(), which tries MIGRATE_HIGHATOMIC first
    assert A(b, r, 1, ATOMIC) == 512
    # that one reserves pageblock 1 too: the limit is 1% of the zone + one pageblock (40 + 512 pages)
    assert b.counters["highatomic_reserve"] == 2 and b.zone_info()["Normal"]["nr_reserved_highatomic"] == 1024
    assert A(b, r, 4, ATOMIC) == 16
    assert b.counters["highatomic_reserve"] == 2  # already highatomic: nothing more to reserve
    # an ordinary request cannot see the reserve: the watermark subtracts it, the lists skip it. Before
    # failing, the direct-reclaim stub gives back one pageblock (more than one reserved) and
    # should_reclaim_retry() the last one (force); the model has no OOM killer
    assert A(b, r, 0, KERNEL) == -1
    assert b.counters["highatomic_unreserve"] == 2 and (b.state["pbmt"][:2] == UNM).all()
    assert b.zone_info()["Normal"]["nr_reserved_highatomic"] == 0
    same(b, r)
    b.check()


def test_reserve_flags_and_reclaim_drain_switch():
    zones = [("Normal", 0, 4096)]
    b, r = pair(zones=zones, blocks=[(0, 9)], min_free_kbytes=4096, pcp_batch=7, pcp_high=100)
    assert A(b, r, 0, KERNEL) == -1  # below min: fails after the direct-reclaim stub drained the pcp lists
    assert b.counters["drain_all_pages"] == 1
    assert A(b, r, 0, ATOMIC | G["__GFP_MEMALLOC"]) == 0  # ALLOC_NO_WATERMARKS
    same(b, r)
    b, r = pair(zones=zones, blocks=[(0, 9)], min_free_kbytes=4096, reclaim_drain=False, **NOPCP)
    assert A(b, r, 0, KERNEL) == -1
    assert b.counters["drain_all_pages"] == 0
    same(b, r)


def test_two_nodes_local_first_thisnode_and_nofragment_never_leaves_the_node():
    zones = [("DMA32", 0, 2048, 0), ("Normal", 2048, 4096, 0), ("Normal", 4096, 8192, 1)]
    b, r = pair(zones=zones, ncpus=2, cpu_nodes=[0, 1], blocks=[(0, 10), (1024, 10), (4096, 10)], **NOPCP, **QUIET)
    assert b.names == ["DMA32@0", "Normal@0", "Normal@1"]
    assert A(b, r, 0, MOVABLE, cpu=1) >= 4096  # cpu 1 is on node 1
    assert 2048 > A(b, r, 0, MOVABLE, cpu=0)  # node 0: Normal@0 is empty, DMA32@0 next
    assert A(b, r, 0, MOVABLE | G["__GFP_THISNODE"], cpu=1) >= 4096
    same(b, r)
    b.check()
    # node 0 has only half pageblocks free, node 1 a whole one: ALLOC_NOFRAGMENT is dropped on reaching
    # node 1 (locality before fragmentation avoidance) and node 0's Normal is fragmented
    b, r = pair(zones=zones, ncpus=2, cpu_nodes=[0, 1], blocks=[(0, 8), (2048, 8), (4096, 10)], **NOPCP, **QUIET)
    p = A(b, r, 0, KERNEL, cpu=0)
    assert 2048 <= p < 4096
    assert b.counters["extfrag_fragmenting"] == 1 and b.counters["nofragment_retry"] == 0
    same(b, r)
    b.check()


def test_check_catches_corrupted_states():
    def fresh():
        b, r = pair(blocks=[(4096, 10)], pcp_batch=7, pcp_high=100, **QUIET)
        A(b, r, 0, MOVABLE)
        b.check()
        return b

    corruptions = [
        lambda b: b.state["pst"].__setitem__(5000, B.PS_USED),  # an allocated page inside a free block
        lambda b: b.state["zi"].__setitem__((2, B.Z_NRFREE + 3), 5),  # nr_free off
        lambda b: b.state["zi"].__setitem__((2, B.Z_FREE), 1),  # NR_FREE_PAGES off
        lambda b: b.state["pcp"].__setitem__((2, B.P_COUNT), 3),  # pcp count off
        lambda b: b.state["pst"].__setitem__(4097, B.PS_BUDDY + 0),  # a pcp page marked PageBuddy
        lambda b: b.state["zi"].__setitem__((2, B.Z_HIGHATOMIC), 100),  # reserve not in pageblocks
        lambda b: b.state["pst"].__setitem__(100, B.PS_MOVABLE) or b.state["zi"].__setitem__((0, B.Z_START), 200),
    ]
    for corrupt in corruptions:
        b = fresh()
        corrupt(b)
        with pytest.raises(AssertionError):
            b.check()
    # two free buddies left unmerged
    b = fresh()
    b.free(4096, 0, bypass_pcp=True)
    lk, pst = b.state["lk"], b.state["pst"]
    head = int(b.state["cfg"][B.CF_NPFN]) + (2 * B.MAX_ORDER + 0) * B.NMT + MOV
    assert int(lk[2 * head]) == 4096  # the freed page went back on its own (its buddy is on the pcp list)
    pcp_head = int(b.state["cfg"][B.CF_NPFN]) + int(b.state["cfg"][B.CF_NB]) + 2 * B.NR_PCP_LISTS + 1
    q = int(lk[2 * pcp_head])
    assert q == 4097
    B._list_del(lk, q)  # move 4097 from the pcp list to the free list by hand, unmerged
    b.state["pcp"][2, B.P_COUNT] -= 1
    B._list_add(lk, q, head)
    pst[q] = B.PS_BUDDY
    b.state["zi"][2, B.Z_NRFREE] += 1
    b.state["zi"][2, B.Z_FREE] += 1
    with pytest.raises(AssertionError, match="free buddies"):
        b.check()


# ----------------------------------------------------------------------------- batches
def test_run_matches_single_calls_and_log_indices_are_global():
    rng = random.Random(5)
    b1, _ = pair(blocks=None, ncpus=2, pcp_batch=7, **QUIET)
    b2, _ = pair(blocks=None, ncpus=2, pcp_batch=7, **QUIET)
    b1.alloc(0, KERNEL)
    b2.alloc(0, KERNEL)
    kinds, orders, reqs, cpus, pfns = [], [], [], [], []
    live = []
    for i in range(300):
        if live and rng.random() < 0.4:
            j = live.pop(rng.randrange(len(live)))
            kinds.append(B.K_FREE_REF)
            orders.append(orders[j])
            reqs.append(0)
            pfns.append(j)
        elif i % 97 == 50:
            kinds.append(B.K_DRAIN_ALL)
            orders.append(0)
            reqs.append(0)
            pfns.append(0)
        else:
            o, g = rng.choice([0, 0, 1, 3, 9]), rng.choice([KERNEL, MOVABLE, RECLAIMABLE, ATOMIC])
            kinds.append(B.K_ALLOC)
            orders.append(o)
            reqs.append(B.request(g, o))
            pfns.append(0)
            live.append(i)
        cpus.append(rng.randrange(2))
    b1.state["log"] = b1.state["log"][:2]  # force the log to grow mid-batch
    out = b1.run(kinds, orders, reqs, cpus, pfns)
    for i, k in enumerate(kinds):
        if k == B.K_ALLOC:
            assert b2.alloc(orders[i], req=reqs[i], cpu=cpus[i]) == out[i]
        elif k == B.K_FREE_REF:
            if out[pfns[i]] >= 0:
                b2.free(int(out[pfns[i]]), orders[i], cpus[i])
            else:
                b2.ops_applied += 1
        else:
            b2.drain_all()
            b2.ops_applied += 1
    assert b1.snapshot() == b2.snapshot()
    assert len(b1.extfrag_events()) > 2
    b1.check()
    with pytest.raises(PtebenchError):
        b1.run([0], [0], [0], [5], [0])


# ----------------------------------------------------------------------------- differential: generated streams
GFPS = [KERNEL, MOVABLE, ATOMIC, NOWAIT, RECLAIMABLE, KERNEL_DMA32, KERNEL | G["GFP_DMA"], G["GFP_TRANSHUGE_LIGHT"],
        G["GFP_TRANSHUGE"], ATOMIC | G["__GFP_MEMALLOC"], KERNEL | G["__GFP_NORETRY"], MOVABLE_DMA32]


def drive(b, r, rng, n, ncpus, orders, fill=7000, check_every=1):
    """Random allocations and frees, compared after every op; memory is filled before the churn."""
    live = []
    for i in range(n):
        used = sum(1 << o for _, o in live)
        if live and rng.random() < (0.1 if used < fill else 0.55):
            p, o = live.pop(rng.randrange(len(live)))
            F(b, r, p, o, cpu=rng.randrange(ncpus))
        else:
            o = rng.choice(orders)
            p = A(b, r, o, rng.choice(GFPS), cpu=rng.randrange(ncpus))
            if p >= 0:
                live.append((p, o))
        same(b, r)
        if i % check_every == 0:
            b.check()
    return live


TWO_NODES = [("DMA", 0, 1024, 0), ("DMA32", 1024, 3072, 0), ("Normal", 3072, 4096, 0), ("Normal", 4096, 8192, 1)]
CONFIGS = [
    {"min_free_kbytes": None},
    {"min_free_kbytes": 512, "pcp_batch": 7, "zones": TWO_NODES, "cpu_nodes": [0, 1]},
    {"min_free_kbytes": 128, "pcp_batch": 7},
    {"min_free_kbytes": 512, "pcp_batch": 31, "pcp_high": 200},
    {"min_free_kbytes": 256, "thp": False, "reclaim_drain": False},
]


@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_generated_streams_match_the_reference_after_every_op(cfg):
    rng = random.Random(cfg)
    pbt = {pb: rng.choice([UNM, MOV, MOV, MOV, REC]) for pb in range(16)}
    b, r = pair(ncpus=2, mts=pbt, **CONFIGS[cfg])
    drive(b, r, rng, 700, 2, (0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 9), check_every=25)
    c = b.counters
    assert c["alloc"] > 200 and c["extfrag"] > 0
    b.check()


def test_generated_streams_reach_every_rule():
    """Across a few streams every counted rule fires at least once (so the differential runs test them)."""
    total = dict.fromkeys(B.COUNTER_NAMES, 0)
    for seed in range(3):
        rng = random.Random(100 + seed)
        b, r = pair(zones=[("DMA32", 0, 2048), ("Normal", 2048, 4096)], ncpus=2,
                    mts={pb: rng.choice([UNM, MOV, REC]) for pb in range(8)}, min_free_kbytes=4096, pcp_batch=7)
        drive(b, r, rng, 400, 2, (0, 0, 0, 1, 1, 2, 3, 4, 9), fill=3600, check_every=50)
        for k, v in b.counters.items():
            total[k] += v
    for k in ("extfrag", "extfrag_fragmenting", "extfrag_change_ownership", "pcp_refill", "pcp_drain", "slowpath",
              "highatomic_reserve", "highatomic_unreserve", "watermark_boost", "nofragment_retry", "drain_all_pages", "alloc_fail"):
        assert total[k] > 0, k


# ----------------------------------------------------------------------------- differential: a real stream
def real_events(limit: int) -> list[tuple]:
    path = REPO_TRACES / "mixed_small" / "trace.txt.xz"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    pat = re.compile(r"\[(\d+)\].*? (mm_page_alloc|mm_page_free|mm_page_free_batched): \S+ pfn=0x([0-9a-f]+) "
                     r"order=(\d+)(?: migratetype=\d+ gfp_flags=(\S+))?")
    out = []
    with lzma.open(path, "rt") as f:
        for line in f:
            m = pat.search(line)
            if m is None:
                continue
            cpu, ev, pfn, order, gfp = int(m[1]), m[2], int(m[3], 16), int(m[4]), m[5]
            if ev == "mm_page_alloc":
                mask = gfp_mask(gfp)
                if mask is None or pfn == 0:
                    continue
                out.append(("a", cpu, pfn, order, mask))
            else:
                out.append(("f", cpu, pfn, order, 0))
            if len(out) >= limit:
                break
    return out


def test_real_stream_matches_the_reference_after_every_op():
    """The kmem events of a real capture (Debian 6.1, 2 cpus): its allocations with their gfp masks
    and cpus, and the frees of the pages they got, on a 128 MiB machine (model pfns, not the trace's)."""
    events = real_events(6000)
    zones = [("DMA", 0, 1024), ("DMA32", 1024, 8192), ("Normal", 8192, 32768)]
    b, r = pair(zones=zones, ncpus=2, min_free_kbytes=1024)
    where: dict[int, tuple[int, int]] = {}  # trace pfn -> (model pfn, order)
    n_alloc = n_free = 0
    for kind, cpu, pfn, order, mask in events:
        if kind == "a":
            p = A(b, r, order, mask, cpu)
            n_alloc += 1
            if p >= 0:
                where[pfn] = (p, order)
        elif pfn in where and where[pfn][1] == order:
            F(b, r, where.pop(pfn)[0], order, cpu)
            n_free += 1
        else:
            continue
        same(b, r)
    assert n_alloc > 1500 and n_free > 1500
    c = b.counters
    assert c["pcp_refill"] > 0 and c["pcp_drain"] > 0 and c["alloc_fail"] == 0
    b.check()


# ----------------------------------------------------------------------------- Hypothesis state machines
class BuddyMachine(RuleBasedStateMachine):
    """Invariants after every step (``Buddy.check()``: pages conserved, no overlap, free blocks aligned
    and fully merged, pageblock ownership and reserves consistent, pcp counts exact and bounded),
    and the same state as the reference."""

    @initialize(seed=st.integers(0, 2**16), cfg=st.sampled_from([
        {"min_free_kbytes": 128, "pcp_batch": 7},
        {"min_free_kbytes": 1024, "pcp_batch": 15, "pcp_high": 120},
        dict(min_free_kbytes=512, thp=False, **NOPCP),
    ]))
    def setup(self, seed, cfg):
        rng = random.Random(seed)
        zones = [("DMA", 0, 512), ("DMA32", 512, 2048), ("Normal", 2048, 4096)]
        blocks = [(p, 9) for p in range(0, 4096, 512) if rng.random() < 0.8]
        self.b, self.r = pair(zones=zones, ncpus=2, blocks=blocks,
                              mts={pb: rng.choice([UNM, MOV, MOV, REC]) for pb in range(8)}, **cfg)
        self.live: list[tuple[int, int]] = []
        self.total = self.pages()
        self.base_used = len(self.b.snapshot()["used"])

    def pages(self):
        zi = self.b.zone_info()
        used = len(self.b.snapshot()["used"])
        pcp = sum(c for c, _ in self.b.snapshot()["pcp_state"].values())
        return sum(z["nr_free_pages"] for z in zi.values()) + used + pcp

    @rule(order=st.sampled_from([0, 0, 0, 1, 2, 3, 5, 9, 10]), gfp=st.sampled_from(GFPS), cpu=st.integers(0, 1))
    def alloc(self, order, gfp, cpu):
        p = A(self.b, self.r, order, gfp, cpu)
        if p >= 0:
            assert p % (1 << order) == 0
            self.live.append((p, order))

    @precondition(lambda self: self.live)
    @rule(i=st.integers(0, 10**6), cpu=st.integers(0, 1), bypass=st.booleans())
    def free(self, i, cpu, bypass):
        p, o = self.live.pop(i % len(self.live))
        F(self.b, self.r, p, o, cpu, bypass_pcp=bypass)

    @rule()
    def drain(self):
        self.b.drain_all()
        self.r.drain_all()

    @invariant()
    def invariants_hold(self):
        self.b.check()
        assert self.pages() == self.total, "pages are conserved"
        assert len(self.b.snapshot()["used"]) == self.base_used + sum(1 << o for _, o in self.live)

    @invariant()
    def matches_reference(self):
        same(self.b, self.r)


BuddyMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None, derandomize=True,
                                          suppress_health_check=[HealthCheck.too_slow])
TestBuddyMachine = BuddyMachine.TestCase


class RunOpsMachine(RuleBasedStateMachine):
    """Batches through ``run_ops`` keep the invariants and equal the same ops one at a time."""

    @initialize()
    def setup(self):
        self.b, _ = pair(ncpus=2, min_free_kbytes=256, pcp_batch=7)
        self.one, _ = pair(ncpus=2, min_free_kbytes=256, pcp_batch=7)
        self.live: list[tuple[int, int]] = []

    @rule(ops=st.lists(st.tuples(st.sampled_from([0, 1, 3, 9]), st.sampled_from(GFPS[:6]), st.integers(0, 1),
                                 st.booleans()), min_size=1, max_size=20))
    def batch(self, ops):
        kinds, orders, reqs, cpus, pfns = [], [], [], [], []
        for order, gfp, cpu, want_free in ops:
            if want_free and self.live:
                p, o = self.live.pop()
                kinds.append(B.K_FREE)
                orders.append(o)
                reqs.append(0)
                pfns.append(p)
            else:
                kinds.append(B.K_ALLOC)
                orders.append(order)
                reqs.append(B.request(gfp, order))
                pfns.append(0)
            cpus.append(cpu)
        out = self.b.run(kinds, orders, reqs, cpus, pfns)
        for i, k in enumerate(kinds):
            if k == B.K_ALLOC:
                assert self.one.alloc(orders[i], req=reqs[i], cpu=cpus[i]) == out[i]
                if out[i] >= 0:
                    self.live.append((int(out[i]), orders[i]))
            else:
                assert out[i] == 1
                self.one.free(pfns[i], orders[i], cpus[i])

    @invariant()
    def same_state(self):
        self.b.check()
        assert self.b.snapshot() == self.one.snapshot()


RunOpsMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=10, deadline=None, derandomize=True,
                                           suppress_health_check=[HealthCheck.too_slow])
TestRunOpsMachine = RunOpsMachine.TestCase
