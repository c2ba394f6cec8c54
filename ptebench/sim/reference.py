"""Plain-Python oracles for differential tests, written independently of the jitted code.

``RefDirectMap`` keeps the direct map as a dict of large leaves ``{base_pfn: (npages,
attr)}`` plus a dict of 4K entries ``{pfn: attr}``, and follows the same kernel rules
as ``directmap.py`` (arch/x86/mm/pat/set_memory.c) without sharing any helper with it.
"""

from __future__ import annotations

G = 1 << 18  # pfns in a 1G leaf
M = 1 << 9  # pfns in a 2M leaf
P_BIT = 1


class RefDirectMap:
    def __init__(self, *, collapse_rules: bool = False, gbpages: bool = True) -> None:
        self.large: dict[int, tuple[int, int]] = {}  # base pfn -> (size in pfns, attr)
        self.pte: dict[int, int] = {}  # pfn -> attr, for every entry of every PTE table
        self.k4k: set[int] = set()
        self.collapse_rules = collapse_rules
        self.gbpages = gbpages
        self.c = {"l2_split": 0, "l3_split": 0, "l2_collapse": 0, "l3_collapse": 0, "n4k": 0, "n2m": 0, "n1g": 0,
                  "flush_all": 0, "flush_pages": 0, "pt_alloc": 0, "pt_free": 0, "calls": 0, "splits_all": 0,
                  "unmapped": 0}
        self.log: list[tuple[int, int, int, int]] = []

    # construction ------------------------------------------------------------
    def map_1g(self, g: int, attr: int) -> None:
        self.large[g * G] = (G, attr)
        self.c["n1g"] += 1

    def map_2m(self, m: int, attr: int) -> None:
        self.large[m * M] = (M, attr)
        self.c["n2m"] += 1

    def map_4k_table(self, m: int, attrs: list[int]) -> None:
        for i, a in enumerate(attrs):
            self.pte[m * M + i] = a
            if a:
                self.c["n4k"] += 1

    # lookup ------------------------------------------------------------------
    def leaf(self, pfn: int) -> tuple[str, int, int, int] | None:
        """(level, base, size, attr) of the mapping of pfn, or None."""
        b = pfn - pfn % G
        if b in self.large and self.large[b][0] == G:
            return ("1G", b, G, self.large[b][1])
        b = pfn - pfn % M
        if b in self.large and self.large[b][0] == M:
            return ("2M", b, M, self.large[b][1])
        if self.pte.get(pfn, 0):
            return ("4K", pfn, 1, self.pte[pfn])
        return None

    # CPA ---------------------------------------------------------------------
    def cpa(self, op: int, pfn: int, n: int, set_mask: int, clr_mask: int, *, force: bool = False,
            collapse: bool = False, noflush: bool = False, alias: bool = False, running: bool = True,
            kernel_4k: bool = False) -> None:
        self.c["calls"] += 1
        changed = False
        addr, end = pfn, pfn + n
        while addr < end:
            hit = self.leaf(addr)
            if hit is None:
                self.c["unmapped"] += 1
                addr += 1
                continue
            level, base, size, old = hit
            new = (old & ~clr_mask) | set_mask
            if level == "4K":
                if new != old:
                    self.pte[addr] = new
                    changed = True
                if kernel_4k and self.collapse_rules:
                    self.k4k.add(addr)
                addr += 1
                continue
            span = min(end, base + size) - addr
            if not force and new == old:
                addr += span
                continue
            if not force and addr == base and span == size:
                self.large[base] = (size, new)
                changed = True
                addr += span
                continue
            del self.large[base]
            if level == "1G":
                for i in range(512):
                    self.large[base + i * M] = (M, old)
                self.c["n1g"] -= 1
                self.c["n2m"] += 512
                self.c["l3_split"] += running
                self.log.append((op, base, 3, 0))
            else:
                for i in range(512):
                    self.pte[base + i] = old
                self.c["n2m"] -= 1
                self.c["n4k"] += 512
                self.c["l2_split"] += running
                self.log.append((op, base, 2, 0))
            self.c["splits_all"] += 1
            self.c["pt_alloc"] += 1
            self.c["flush_all"] += 1
        if changed and not noflush:
            if alias or n > 33:
                self.c["flush_all"] += 1
            else:
                self.c["flush_pages"] += n
        if changed and collapse and self.collapse_rules:
            done = False
            start = pfn - pfn % M
            for base in range(start, end, M):
                done |= self._collapse(op, base, running)
            if done:
                self.c["flush_all"] += 1

    def _collapse(self, op: int, base: int, running: bool) -> bool:
        if base not in self.pte:
            return False
        attrs = [self.pte.get(base + i, 0) for i in range(512)]
        if not attrs[0] & P_BIT or any(a != attrs[0] for a in attrs) or any(base + i in self.k4k for i in range(512)):
            return False
        for i in range(512):
            del self.pte[base + i]
        self.large[base] = (M, attrs[0])
        self.c["n4k"] -= 512
        self.c["n2m"] += 1
        self.c["pt_free"] += 1
        self.c["l2_collapse"] += running
        self.log.append((op, base, 2, 1))
        if not self.gbpages:
            return True
        g = base - base % G
        pieces = [self.large.get(g + i * M) for i in range(512)]
        if any(p is None or p != (M, attrs[0]) for p in pieces):
            return True
        for i in range(512):
            del self.large[g + i * M]
        self.large[g] = (G, attrs[0])
        self.c["n2m"] -= 512
        self.c["n1g"] += 1
        self.c["pt_free"] += 1
        self.c["l3_collapse"] += running
        self.log.append((op, g, 3, 1))
        return True
