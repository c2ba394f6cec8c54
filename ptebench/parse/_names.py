"""The fast path's name table (byte strings -> entry ids, open addressing) and ``last_index``.

:class:`NameTable` holds the arrays; its lookups run inside ``_fast.parse_chunk`` (``_fast.intern``:
a jitted function's numba cache does not notice changes to the functions it calls in other
modules, so everything the kernel calls lives in ``_fast.py``).  It is a cache in front of the
parser's ``Interner`` s: ``fastpath.py`` maps each entry to its interner code when a chunk is
committed.  :func:`last_index` is the hash-table version of ``TextParser._last_index``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ptebench.parse._fast import rehash


class NameTable:
    """Byte strings -> entry ids with open addressing; ``code[entry]`` is the parser interner's
    code for it once the string was first used in a committed chunk (-1 before).

    An entry is keyed by its name space, length and first and last 8 bytes (``e_w0``, ``e_w1``,
    little-endian words): strings of up to 16 bytes compare in four word compares, longer ones
    compare their middle bytes too."""

    def __init__(self, slots: int = 1 << 12, entries: int = 1 << 10, store: int = 1 << 16) -> None:
        self.slots = np.full(slots, -1, dtype=np.int64)
        self.e_ns = np.zeros(entries, dtype=np.int64)
        self.e_off = np.zeros(entries, dtype=np.int64)
        self.e_len = np.zeros(entries, dtype=np.int64)
        self.e_w0 = np.zeros(entries, dtype=np.uint64)
        self.e_w1 = np.zeros(entries, dtype=np.uint64)
        self.code = np.full(entries, -1, dtype=np.int64)
        self.spec = np.full(entries, -2, dtype=np.int64)  # event entries: field list index, -1 none, -2 unknown
        self.store = np.zeros(store, dtype=np.uint8)
        self.meta = np.zeros(2, dtype=np.int64)  # entries, store bytes used

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.slots, self.e_ns, self.e_off, self.e_len, self.e_w0, self.e_w1, self.store, self.meta

    def value(self, entry: int) -> bytes:
        a = int(self.e_off[entry])
        return self.store[a : a + int(self.e_len[entry])].tobytes()

    def grow(self) -> None:
        """Double everything and re-insert every entry."""
        n = int(self.meta[0])
        for name, fill in (("e_ns", 0), ("e_off", 0), ("e_len", 0), ("e_w0", 0), ("e_w1", 0), ("code", -1),
                           ("spec", -2)):
            old = getattr(self, name)
            new = np.full(len(old) * 2, fill, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        store = np.zeros(len(self.store) * 2, dtype=np.uint8)
        store[: len(self.store)] = self.store
        self.store = store
        self.slots = np.full(len(self.slots) * 2, -1, dtype=np.int64)
        with np.errstate(over="ignore"):
            rehash(self.slots, self.e_ns, self.e_len, self.e_w0, self.e_w1, n)


@njit(cache=True)
def last_index(key, slots):
    """(distinct keys, index of each one's last occurrence), in order of first occurrence.

    Reference: ``TextParser._last_index`` (the same pairs, in key order).  ``slots`` is scratch
    space, a power of two above twice the number of distinct keys (-1 filled; left -1 filled).
    """
    mask = slots.shape[0] - 1
    uniq = np.empty(key.shape[0], np.int64)
    last = np.empty(key.shape[0], np.int64)
    m = 0
    for i in range(key.shape[0]):
        k = key[i]
        h = np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)
        j = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(mask))
        while True:
            u = slots[j]
            if u < 0:
                slots[j] = m
                uniq[m] = k
                last[m] = i
                m += 1
                break
            if uniq[u] == k:
                last[u] = i
                break
            j = (j + 1) & mask
    for i in range(m):  # leave the scratch clean
        k = uniq[i]
        h = np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)
        j = np.int64((h ^ (h >> np.uint64(31))) & np.uint64(mask))
        while slots[j] >= 0:
            slots[j] = -1
            j = (j + 1) & mask
    return uniq[:m], last[:m]
