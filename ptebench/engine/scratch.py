"""Arrays reused from one chunk to the next: the per-chunk outputs of the replay's passes.

A fresh array per chunk and column costs its page faults every time (the allocator gives the memory
back to the kernel between chunks, and numpy asks for transparent huge pages on large arrays, which the
kernel zeroes 2 MiB at a time); reusing one costs them once.  What a :class:`Reused` hands out lives
until the same name is asked for again: a consumer that keeps it across chunks copies it.
"""

from __future__ import annotations

import numpy as np


class Reused:
    """Named arrays that grow to the largest size asked for and are then handed out as views.

    Scratch sized by the chunk, not state: ``__slots__`` keeps it out of the bench's state census
    (``bench/replay.py``, which walks ``__dict__``)."""

    __slots__ = ("_arrays",)

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int, dtype, width: int = 0) -> np.ndarray:
        """An uninitialised array of ``n`` rows (``n`` x ``width`` when ``width``) of ``dtype`` under ``name``."""
        a = self._arrays.get(name)
        if a is None or len(a) < n or a.dtype != dtype:
            a = np.empty((max(n, 1), width) if width else max(n, 1), dtype)
            self._arrays[name] = a
        return a[:n]
