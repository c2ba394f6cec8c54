"""Plain-Python oracle of the Linux 6.1 buddy allocator, for differential tests of ``buddy.py``.

Written independently of the jitted model and sharing no helper with it: free lists are Python
lists (index 0 is the list head), PageBuddy heads a dict ``{pfn: order}``, allocated pages a dict
``{pfn: movable}``, pageblock types a dict, pcp lists lists of ``(pfn, migratetype)``.  The gfp
decoding, watermarks, lowmem reserves and pcp batch/high are computed here again from the
kernel's formulas.  The rules are those of mm/page_alloc.c in the captured 6.1.y kernels
(see ``docs/buddy.md``); each method names the kernel function it follows.
"""

from __future__ import annotations

import math
from typing import Any

ORDERS = 11
PB_ORDER = 9
PB_PAGES = 512
UNMOVABLE, MOVABLE, RECLAIMABLE, HIGHATOMIC = 0, 1, 2, 3
FALLBACKS = {UNMOVABLE: (RECLAIMABLE, MOVABLE), MOVABLE: (RECLAIMABLE, UNMOVABLE),
             RECLAIMABLE: (UNMOVABLE, MOVABLE)}
KINDS = {"DMA": 0, "DMA32": 1, "Normal": 2}
RATIOS = {0: 256, 1: 256, 2: 32}

# __GFP_* bits, Linux 6.1
G_DMA, G_HIGHMEM, G_DMA32, G_MOVABLE, G_RECLAIMABLE, G_HIGH = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
G_DIRECT_RECLAIM, G_KSWAPD_RECLAIM = 0x400, 0x800
G_RETRY_MAYFAIL, G_NORETRY, G_MEMALLOC, G_NOMEMALLOC, G_THISNODE = 0x4000, 0x10000, 0x20000, 0x80000, 0x200000

# ALLOC_* flags, mm/internal.h
A_MIN, A_LOW, A_HIGH = 0, 1, 2
A_NO_WMARK, A_OOM, A_NON_BLOCK, A_MIN_RESERVE, A_CPUSET = 0x4, 0x8, 0x10, 0x20, 0x40
A_NOFRAG, A_HIGHATOMIC, A_KSWAPD = 0x100, 0x200, 0x800
A_RESERVES = A_NON_BLOCK | A_MIN_RESERVE | A_HIGHATOMIC | A_OOM

COUNTERS = ("alloc", "alloc_fail", "free", "bad_free", "slowpath", "extfrag", "extfrag_fragmenting",
            "extfrag_change_ownership", "alloc_zone_locked", "alloc_zone_locked_percpu_refill", "pcp_refill",
            "pcp_refill_pages", "pcp_drain", "pcp_drain_pages", "pcp_drain_calls", "highatomic_reserve",
            "highatomic_unreserve", "watermark_boost", "nofragment_retry", "drain_all_pages", "kswapd_wake")


class Zone:
    def __init__(self, idx: int, name: str, start: int, end: int, nid: int, managed: int) -> None:
        self.idx, self.name, self.start, self.end, self.nid, self.managed = idx, name, start, end, nid, managed
        self.kind = KINDS[name]
        self.lists: dict[tuple[int, int], list[int]] = {(o, m): [] for o in range(ORDERS) for m in range(4)}
        self.free_pages = 0
        self.highatomic = 0
        self.pgalloc = 0
        self.pgfree = 0
        self.wmark = [0, 0, 0]
        self.lowmem = [0, 0, 0]
        self.batch = 1
        self.high = 0

    def has(self, pfn: int) -> bool:
        return self.start <= pfn < self.end

    def nr_free(self, order: int) -> int:
        return sum(len(self.lists[(order, m)]) for m in range(4))


class Pcp:
    def __init__(self) -> None:
        self.count = 0
        self.free_factor = 0
        self.lists: list[list[tuple[int, int]]] = [[] for _ in range(14)]


class RefBuddy:
    def __init__(self, zones: list[tuple], ncpus: int = 1, *, cpu_nodes: list[int] | None = None,
                 managed: list[int] | None = None, min_free_kbytes: int | None = None,
                 watermark_scale_factor: int = 10, thp: bool = True, percpu_pagelist_high_fraction: int = 0,
                 pcp_batch: int | None = None, pcp_high: int | None = None, reclaim_drain: bool = True) -> None:
        given = [(z[0], z[1], z[2], z[3] if len(z) > 3 else 0, managed[i] if managed else z[2] - z[1])
                 for i, z in enumerate(zones)]
        given.sort(key=lambda g: (g[3], KINDS[g[0]]))
        self.zones = [Zone(i, *g) for i, g in enumerate(given)]
        self.nnodes = 1 + max(z.nid for z in self.zones)
        self.names = [z.name if self.nnodes == 1 else f"{z.name}@{z.nid}" for z in self.zones]
        self.ncpus = ncpus
        self.cpu_nodes = list(cpu_nodes) if cpu_nodes else [0] * ncpus
        self.thp = thp
        self.reclaim_drain = reclaim_drain
        self.npfn = max(z.end for z in self.zones)
        self.pageblock = dict.fromkeys(range((self.npfn + PB_PAGES - 1) // PB_PAGES), MOVABLE)
        self.buddy: dict[int, int] = {}  # PageBuddy heads -> order
        self.inuse: dict[int, int] = {}  # allocated pages -> 1 (other) or 2 (movable request)
        self.pcps = {(c, z.idx): Pcp() for c in range(ncpus) for z in self.zones}
        self.pcp_of: dict[int, int] = {}  # pfn on a pcp list -> its pcppage migratetype
        self.c = dict.fromkeys(COUNTERS, 0)
        self.extfrag: list[tuple[int, ...]] = []
        self.op = 0
        self.cur = 0
        self._sizing(min_free_kbytes, watermark_scale_factor, percpu_pagelist_high_fraction, pcp_batch, pcp_high)
        for z in self.zones:
            for p in range(z.start, z.end):
                self.inuse[p] = 2

    # ------------------------------------------------------------------ boot-time sizing
    def _wmarks(self, mfk: int, wsf: int) -> None:
        """__setup_per_zone_wmarks()"""
        total = sum(z.managed for z in self.zones)
        for z in self.zones:
            base = (mfk // 4) * z.managed // total
            gap = max(base // 4, (z.managed * wsf) // 10000)
            z.wmark = [base, base + gap, base + 2 * gap]

    def _buffer_pages(self) -> int:
        """nr_free_buffer_pages()"""
        return sum(max(z.managed - z.wmark[2], 0) for z in self.zones)

    def _sizing(self, mfk, wsf, fraction, pcp_batch, pcp_high) -> None:
        for z in self.zones:
            z.wmark = [0, 0, 0]
        if mfk is None:
            mfk = max(128, min(262144, math.isqrt(self._buffer_pages() * 64)))  # calculate_min_free_kbytes()
            self._wmarks(mfk, wsf)
            if self.thp:  # set_recommended_min_free_kbytes()
                n = len([z for z in self.zones if z.managed])
                want = min(n * 1024 + n * 512 * 9, self._buffer_pages() // 20) * 4
                if want > mfk:
                    mfk = want
                    self._wmarks(mfk, wsf)
        else:
            self._wmarks(mfk, wsf)
        self.min_free_kbytes = mfk
        for z in self.zones:
            # setup_per_zone_lowmem_reserve()
            for j in range(3):
                upper = [u.managed for u in self.zones if u.nid == z.nid and z.kind < u.kind <= j]
                z.lowmem[j] = sum(upper) // RATIOS[z.kind] if (j > z.kind and z.managed) else 0
            # zone_batchsize(), zone_highsize()
            b = max(1, min(z.managed // 1024, 256) // 4)
            b = b + b // 2
            p2 = 1
            while p2 * 2 <= b:
                p2 *= 2
            z.batch = max(1, p2 - 1) if pcp_batch is None else pcp_batch
            cpus = len([c for c in self.cpu_nodes if c == z.nid]) or self.ncpus
            total = z.managed // fraction if fraction else z.wmark[1]
            z.high = max(total // cpus, 4 * z.batch) if pcp_high is None else pcp_high

    # ------------------------------------------------------------------ helpers
    def zone_of(self, pfn: int) -> Zone | None:
        for z in self.zones:
            if z.has(pfn):
                return z
        return None

    def pcp_ok(self, order: int) -> bool:
        return order < 4 or (self.thp and order == 9)

    @staticmethod
    def pindex(mt: int, order: int) -> int:
        if order >= 4:
            return 13 if mt == MOVABLE else 12
        return order * 3 + mt

    def seed(self, blocks, pageblock_types=None, absent=()) -> None:
        """memmap_init + memblock_free_all(): __free_pages_core() of each block, to the tail."""
        if pageblock_types is not None:
            if isinstance(pageblock_types, dict):
                self.pageblock.update({int(k): int(v) for k, v in pageblock_types.items()})
            elif isinstance(pageblock_types, int):
                self.pageblock = dict.fromkeys(self.pageblock, pageblock_types)
            else:
                self.pageblock = {pb: int(v) for pb, v in enumerate(pageblock_types)}
        for z in self.zones:
            for p in range(z.start, z.end):
                self.inuse[p] = 2 if self.pageblock[p // PB_PAGES] == MOVABLE else 1
            z.highatomic = PB_PAGES * len({p // PB_PAGES for p in range(z.start, z.end)
                                           if self.pageblock[p // PB_PAGES] == HIGHATOMIC})
        for a, b in absent:
            for p in range(a, b):
                self.inuse.pop(p, None)
        for pfn, order in blocks:
            for p in range(pfn, pfn + (1 << order)):
                del self.inuse[p]
            z = self.zone_of(pfn)
            self.free_one(z, pfn, order, self.pageblock[pfn // PB_PAGES], tail=True)
        self.c = dict.fromkeys(COUNTERS, 0)
        for z in self.zones:
            z.pgfree = 0

    # ------------------------------------------------------------------ free
    def free_one(self, z: Zone, pfn: int, order: int, mt: int, tail: bool = False) -> None:
        """__free_one_page()"""
        z.free_pages += 1 << order
        buddy = None
        while order < ORDERS - 1:
            buddy = pfn ^ (1 << order)
            if not z.has(buddy) or self.buddy.get(buddy) != order:
                break
            if order >= PB_ORDER:
                bt = self.pageblock[buddy // PB_PAGES]
                if mt != bt and (mt == HIGHATOMIC or bt == HIGHATOMIC):
                    break
            for key, lst in z.lists.items():
                if key[0] == order and buddy in lst:
                    lst.remove(buddy)
                    break
            del self.buddy[buddy]
            pfn = min(pfn, buddy)
            order += 1
        self.buddy[pfn] = order
        if not tail and order < ORDERS - 2:  # buddy_merge_likely()
            parent = min(pfn, buddy)
            other = parent ^ (2 << order)
            tail = z.has(other) and self.buddy.get(other) == order + 1
        if tail:
            z.lists[(order, mt)].append(pfn)
        else:
            z.lists[(order, mt)].insert(0, pfn)

    def free(self, pfn: int, order: int, cpu: int = 0, *, tail: bool = False, bypass_pcp: bool = False) -> bool:
        """__free_pages() -> free_unref_page() or __free_pages_ok()"""
        self.op += 1
        z = self.zone_of(pfn)
        pages = range(pfn, pfn + (1 << order))
        if (z is None or pfn % (1 << order) or pfn + (1 << order) > z.end or not 0 <= order < ORDERS
                or any(p not in self.inuse for p in pages)):
            self.c["bad_free"] += 1
            return False
        for p in pages:
            del self.inuse[p]
        self.c["free"] += 1
        z.pgfree += 1 << order
        mt = self.pageblock[pfn // PB_PAGES]
        if self.pcp_ok(order) and not bypass_pcp:
            self.pcp_of[pfn] = mt
            self.commit(z, self.pcps[(cpu, z.idx)], pfn, MOVABLE if mt == HIGHATOMIC else mt, order)
        else:
            self.free_one(z, pfn, order, mt, tail)
        return True

    def commit(self, z: Zone, pcp: Pcp, pfn: int, mt: int, order: int) -> None:
        """free_unref_page_commit(), nr_pcp_high(), nr_pcp_free()"""
        idx = self.pindex(mt, order)
        pcp.lists[idx].insert(0, (pfn, self.pcp_of[pfn]))
        pcp.count += 1 << order
        free_high = bool(pcp.free_factor) and 1 <= order <= 3
        high = 0 if (free_high or not z.high) else z.high
        if pcp.count < high:
            return
        if free_high:
            n = pcp.count
        elif high < z.batch:
            n = 1
        else:
            want = z.batch << pcp.free_factor
            if want < high - z.batch and pcp.free_factor < 5:
                pcp.free_factor += 1
            n = min(max(want, z.batch), high - z.batch)
        self.bulk_free(z, pcp, n, idx)

    def bulk_free(self, z: Zone, pcp: Pcp, count: int, start: int) -> None:
        """free_pcppages_bulk()"""
        self.c["pcp_drain_calls"] += 1
        count = min(count, pcp.count)
        lo, hi, i = 0, 13, start - 1
        while count > 0:
            while True:
                i += 1
                if i > hi:
                    i = lo
                if pcp.lists[i]:
                    break
                if i == hi:
                    hi -= 1
                if i == lo:
                    lo += 1
            order = 9 if i >= 12 else i // 3
            lst = pcp.lists[i]
            while True:
                pfn, mt = lst.pop()
                del self.pcp_of[pfn]
                count -= 1 << order
                pcp.count -= 1 << order
                self.free_one(z, pfn, order, mt)
                self.c["pcp_drain"] += 1
                self.c["pcp_drain_pages"] += 1 << order
                if count <= 0 or not lst:
                    break

    def drain_all(self) -> None:
        """drain_all_pages(NULL) -> drain_pages_zone()"""
        self.c["drain_all_pages"] += 1
        for cpu in range(self.ncpus):
            if not any(self.pcps[(cpu, z.idx)].count for z in self.zones):
                continue
            for z in self.zones:
                pcp = self.pcps[(cpu, z.idx)]
                while pcp.count:
                    self.bulk_free(z, pcp, min(pcp.count, z.batch * 32), 0)

    # ------------------------------------------------------------------ alloc internals
    def smallest(self, z: Zone, order: int, mt: int) -> int | None:
        """__rmqueue_smallest() + expand()"""
        for o in range(order, ORDERS):
            lst = z.lists[(o, mt)]
            if not lst:
                continue
            pfn = lst.pop(0)
            del self.buddy[pfn]
            for h in range(o - 1, order - 1, -1):
                half = pfn + (1 << h)
                z.lists[(h, mt)].insert(0, half)
                self.buddy[half] = h
            self.c["alloc_zone_locked"] += 1
            if self.pcp_ok(order) and mt != HIGHATOMIC:
                self.c["alloc_zone_locked_percpu_refill"] += 1
            return pfn
        return None

    def move_block(self, z: Zone, pfn: int, mt: int) -> tuple[int, int]:
        """move_freepages_block() / move_freepages()"""
        first = pfn - pfn % PB_PAGES
        last = first + PB_PAGES - 1
        if first < z.start:
            first = pfn
        if last >= z.end:
            return 0, 0
        moved = movable = 0
        p = first
        while p <= last:
            if p in self.buddy:
                o = self.buddy[p]
                for key, lst in z.lists.items():
                    if key[0] == o and p in lst:
                        lst.remove(p)
                        break
                z.lists[(o, mt)].append(p)
                moved += 1 << o
                p += 1 << o
            else:
                if self.inuse.get(p) == 2:
                    movable += 1
                p += 1
        return moved, movable

    def find_fallback(self, z: Zone, order: int, mt: int) -> tuple[int, bool]:
        """find_suitable_fallback() + can_steal_fallback()"""
        if z.nr_free(order) == 0:
            return -1, False
        for f in FALLBACKS[mt]:
            if z.lists[(order, f)]:
                return f, order >= 4 or mt != MOVABLE
        return -1, False

    def fallback(self, z: Zone, order: int, mt: int, flags: int) -> bool:
        """__rmqueue_fallback() + steal_suitable_fallback()"""
        floor = 9 if (flags & A_NOFRAG and order < 9) else order
        found = None
        for o in range(10, floor - 1, -1):
            f, steal = self.find_fallback(z, o, mt)
            if f < 0:
                continue
            if not steal and mt == MOVABLE and o > order:
                for o2 in range(order, ORDERS):
                    f, steal = self.find_fallback(z, o2, mt)
                    if f >= 0:
                        o = o2
                        break
            found = (o, f, steal)
            break
        if found is None:
            return False
        o, f, steal = found
        page = z.lists[(o, f)][0]
        pb = page // PB_PAGES
        old = self.pageblock[pb]
        single = True
        if old != HIGHATOMIC:
            if o >= 9:
                for k in range(1 << (o - 9)):
                    self.pageblock[pb + k] = mt
            else:
                if z.managed >= 4 * PB_PAGES and z.wmark[2] * 3 // 2:
                    self.c["watermark_boost"] += 1
                if steal:
                    free_pages, movable = self.move_block(z, page, mt)
                    if mt == MOVABLE:
                        alike = movable
                    else:
                        alike = PB_PAGES - free_pages - movable if old == MOVABLE else 0
                    if free_pages:
                        single = False
                        if free_pages + alike >= PB_PAGES // 2:
                            self.pageblock[pb] = mt
        if single:
            z.lists[(o, f)].remove(page)
            z.lists[(o, mt)].append(page)
        owned = self.pageblock[pb] == mt
        self.c["extfrag"] += 1
        self.c["extfrag_fragmenting"] += o < 9
        self.c["extfrag_change_ownership"] += owned
        self.extfrag.append((self.cur, page, order, o, mt, f, int(owned)))
        return True

    def rmqueue_any(self, z: Zone, order: int, mt: int, flags: int) -> int | None:
        """__rmqueue()"""
        while True:
            page = self.smallest(z, order, mt)
            if page is not None:
                return page
            if not self.fallback(z, order, mt, flags):
                return None

    def from_pcp(self, z: Zone, cpu: int, order: int, mt: int, flags: int) -> int | None:
        """rmqueue_pcplist() -> __rmqueue_pcplist() -> rmqueue_bulk()"""
        pcp = self.pcps[(cpu, z.idx)]
        pcp.free_factor //= 2
        lst = pcp.lists[self.pindex(mt, order)]
        if not lst:
            want = max(z.batch >> order, 2) if z.batch > 1 else z.batch
            got = 0
            for _ in range(want):
                page = self.rmqueue_any(z, order, mt, flags)
                if page is None:
                    break
                lst.append((page, mt))
                self.pcp_of[page] = mt
                got += 1
            z.free_pages -= got << order
            pcp.count += got << order
            self.c["pcp_refill"] += 1
            self.c["pcp_refill_pages"] += got << order
            if not lst:
                return None
        page, _ = lst.pop(0)
        del self.pcp_of[page]
        pcp.count -= 1 << order
        z.pgalloc += 1 << order
        return page

    def from_buddy(self, z: Zone, order: int, mt: int, flags: int) -> int | None:
        """rmqueue_buddy()"""
        page = self.smallest(z, order, HIGHATOMIC) if flags & A_HIGHATOMIC else None
        if page is None:
            page = self.rmqueue_any(z, order, mt, flags)
            if page is None and flags & (A_OOM | A_NON_BLOCK):
                page = self.smallest(z, order, HIGHATOMIC)
        if page is None:
            return None
        z.free_pages -= 1 << order
        z.pgalloc += 1 << order
        return page

    def wmark_ok(self, z: Zone, order: int, mark: int, top: int, flags: int) -> bool:
        """zone_watermark_fast() + __zone_watermark_ok()"""
        reserves = flags & A_RESERVES
        free = z.free_pages
        if order == 0:
            hidden = 0 if reserves else z.highatomic
            if free - min(free, hidden) > mark + z.lowmem[top]:
                return True
        free -= (1 << order) - 1 + (0 if reserves else z.highatomic)
        floor = mark
        if flags & A_MIN_RESERVE:
            floor -= floor // 2
            if flags & A_NON_BLOCK:
                floor -= floor // 4
        if flags & A_OOM:
            floor -= floor // 2
        if free <= floor + z.lowmem[top]:
            return False
        if order == 0:
            return True
        types = [UNMOVABLE, MOVABLE, RECLAIMABLE] + ([HIGHATOMIC] if flags & (A_HIGHATOMIC | A_OOM) else [])
        return any(z.lists[(o, t)] for o in range(order, ORDERS) for t in types)

    def reserve_highatomic(self, z: Zone, page: int) -> None:
        """reserve_highatomic_pageblock()"""
        if z.highatomic >= z.managed // 100 + PB_PAGES:
            return
        pb = page // PB_PAGES
        if self.pageblock[pb] in (UNMOVABLE, MOVABLE, RECLAIMABLE):
            z.highatomic += PB_PAGES
            self.pageblock[pb] = HIGHATOMIC
            self.move_block(z, page, HIGHATOMIC)
            self.c["highatomic_reserve"] += 1

    def unreserve_highatomic(self, zones: list[Zone], top: int, mt: int, force: bool) -> bool:
        """unreserve_highatomic_pageblock()"""
        for z in zones:
            if z.kind > top or (not force and z.highatomic <= PB_PAGES):
                continue
            for o in range(ORDERS):
                if not z.lists[(o, HIGHATOMIC)]:
                    continue
                page = z.lists[(o, HIGHATOMIC)][0]
                pb = page // PB_PAGES
                if self.pageblock[pb] == HIGHATOMIC:
                    z.highatomic -= min(PB_PAGES, z.highatomic)
                self.pageblock[pb] = mt
                if self.move_block(z, page, mt)[0]:
                    self.c["highatomic_unreserve"] += 1
                    return True
        return False

    def zonelist(self, nid: int, thisnode: bool) -> list[Zone]:
        """build_zonelists(): own node high to low, then the following nodes in turn"""
        nodes = [nid] if thisnode else [(nid + k) % self.nnodes for k in range(self.nnodes)]
        out = []
        for n in nodes:
            out += sorted((z for z in self.zones if z.nid == n), key=lambda z: -z.kind)
        return out

    def from_freelist(self, zones: list[Zone], pref: Zone, order: int, mt: int, top: int, flags: int,
                      cpu: int) -> int | None:
        """get_page_from_freelist()"""
        while True:
            nofrag = bool(flags & A_NOFRAG)
            again = False
            for z in zones:
                if z.kind > top:
                    continue
                if nofrag and self.nnodes > 1 and z is not pref and z.nid != pref.nid:
                    flags &= ~A_NOFRAG
                    again = True
                    break
                if not self.wmark_ok(z, order, z.wmark[flags & 3], top, flags) and not flags & A_NO_WMARK:
                    continue
                page = self.from_pcp(z, cpu, order, mt, flags) if self.pcp_ok(order) else None
                if page is None:
                    page = self.from_buddy(z, order, mt, flags)
                if page is not None:
                    if flags & A_HIGHATOMIC:
                        self.reserve_highatomic(z, page)
                    return page
            if again:
                continue
            if nofrag:
                flags &= ~A_NOFRAG
                self.c["nofragment_retry"] += 1
                continue
            return None

    # ------------------------------------------------------------------ alloc
    def alloc(self, order: int, gfp: int, cpu: int = 0) -> int:
        """__alloc_pages(): fast path, then the slow path without reclaim/compaction/OOM"""
        self.cur = self.op
        self.op += 1
        zbits = gfp & (G_DMA | G_HIGHMEM | G_DMA32)
        top = {0: 2, G_HIGHMEM: 2, G_DMA: 0, G_DMA32: 1}[zbits]
        mt = {0: UNMOVABLE, G_MOVABLE: MOVABLE, G_RECLAIMABLE: RECLAIMABLE}[gfp & (G_MOVABLE | G_RECLAIMABLE)]
        zones = self.zonelist(self.cpu_nodes[cpu], bool(gfp & G_THISNODE))
        eligible = [z for z in zones if z.kind <= top]
        page = None
        if eligible:
            pref = eligible[0]
            flags = A_LOW | (gfp & G_KSWAPD_RECLAIM)
            if pref.kind == 2 and (self.nnodes == 1 or any(z.nid == pref.nid and z.kind == 1 for z in self.zones)):
                flags |= A_NOFRAG  # alloc_flags_nofragment()
            page = self.from_freelist(zones, pref, order, mt, top, flags, cpu)
            if page is None:
                self.c["slowpath"] += 1
                # gfp_to_alloc_flags()
                flags = A_MIN | A_CPUSET | (gfp & (G_HIGH | G_KSWAPD_RECLAIM))
                if not gfp & G_DIRECT_RECLAIM:
                    if not gfp & G_NOMEMALLOC:
                        flags |= A_NON_BLOCK | (A_HIGHATOMIC if order else 0)
                    if flags & A_MIN_RESERVE:
                        flags &= ~A_CPUSET
                if flags & A_KSWAPD:
                    self.c["kswapd_wake"] += 1
                page = self.from_freelist(zones, pref, order, mt, top, flags, cpu)
                if page is None and gfp & G_MEMALLOC and not gfp & G_NOMEMALLOC:
                    flags = A_NO_WMARK | (flags & A_KSWAPD)
                    page = self.from_freelist(zones, pref, order, mt, top, flags, cpu)
                if page is None and gfp & G_DIRECT_RECLAIM:
                    if self.reclaim_drain:
                        self.unreserve_highatomic(zones, top, mt, False)
                        self.drain_all()
                        page = self.from_freelist(zones, pref, order, mt, top, flags, cpu)
                    retry = not gfp & G_NORETRY and (order <= 3 or gfp & G_RETRY_MAYFAIL)
                    if page is None and retry and self.unreserve_highatomic(zones, top, mt, True):
                        page = self.from_freelist(zones, pref, order, mt, top, flags, cpu)
        if page is None:
            self.c["alloc_fail"] += 1
            return -1
        for p in range(page, page + (1 << order)):
            self.inuse[p] = 2 if mt == MOVABLE else 1
        self.c["alloc"] += 1
        return page

    # ------------------------------------------------------------------ views
    def snapshot(self) -> dict[str, Any]:
        free = {}
        for z, name in zip(self.zones, self.names, strict=True):
            for (o, m), lst in z.lists.items():
                if lst:
                    free[(name, o, m)] = list(lst)
        pcp = {}
        state = {}
        for (cpu, zi), p in self.pcps.items():
            name = self.names[zi]
            state[(cpu, name)] = (p.count, p.free_factor)
            for i, lst in enumerate(p.lists):
                if lst:
                    pcp[(cpu, name, i)] = list(lst)
        return {
            "free": dict(sorted(free.items(), key=lambda kv: (self.names.index(kv[0][0]), kv[0][1], kv[0][2]))),
            "pcp": pcp,
            "pcp_state": state,
            "pageblocks": [self.pageblock[pb] for pb in sorted(self.pageblock)],
            "used": dict(sorted(self.inuse.items())),
            "zones": {name: (z.free_pages, z.highatomic, z.pgalloc, z.pgfree)
                      for z, name in zip(self.zones, self.names, strict=True)},
            "buddyinfo": {name: [z.nr_free(o) for o in range(ORDERS)]
                          for z, name in zip(self.zones, self.names, strict=True)},
            "counters": dict(self.c),
            "extfrag": list(self.extfrag),
        }

    def zone_params(self) -> dict[str, dict[str, Any]]:
        return {name: {"min": z.wmark[0], "low": z.wmark[1], "high": z.wmark[2], "lowmem_reserve": list(z.lowmem),
                       "pcp_batch": z.batch, "pcp_high": z.high, "managed": z.managed}
                for z, name in zip(self.zones, self.names, strict=True)}
