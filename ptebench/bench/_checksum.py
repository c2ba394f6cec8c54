"""The checksum compared across contenders: numpy only, so that the naive parser's child can load it by
path without importing ptebench (whose imports would count in that child's peak RSS)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_MASK64 = (1 << 64) - 1
_BLOCK = 1 << 20


@dataclass
class Checksum:
    """Order-sensitive fingerprint of (event kind, pfn, order) rows; sums are modulo 2^64."""

    rows: int = 0
    alloc: int = 0
    pfn_sum: int = 0
    pfn_pos_sum: int = 0  # sum of pfn * (1-based row position): catches reordering
    order_sum: int = 0

    def add(self, is_alloc: np.ndarray, pfn: np.ndarray, order: np.ndarray) -> None:
        """Append rows (in order); worked through in blocks so that temporaries stay small."""
        for i in range(0, len(pfn), _BLOCK):
            self._add(is_alloc[i : i + _BLOCK], pfn[i : i + _BLOCK], order[i : i + _BLOCK])

    def _add(self, is_alloc: np.ndarray, pfn: np.ndarray, order: np.ndarray) -> None:
        n = len(pfn)
        p = np.asarray(pfn).astype(np.uint64)
        pos = np.arange(self.rows + 1, self.rows + n + 1, dtype=np.uint64)
        self.alloc += int(np.count_nonzero(is_alloc))
        self.pfn_sum = (self.pfn_sum + int(p.sum(dtype=np.uint64))) & _MASK64
        self.pfn_pos_sum = (self.pfn_pos_sum + int((p * pos).sum(dtype=np.uint64))) & _MASK64
        self.order_sum += int(np.asarray(order).astype(np.int64).sum())
        self.rows += n

    def diff(self, other: Checksum) -> list[str]:
        """Names and values of the fields that differ (self = found, other = expected)."""
        return [f"{k}: found {v:,}, expected {getattr(other, k):,}"
                for k, v in asdict(self).items() if v != getattr(other, k)]
