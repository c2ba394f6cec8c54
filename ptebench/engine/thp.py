"""Transparent huge pages off for the replay's own process while it runs (Linux ``prctl(PR_SET_THP_DISABLE)``).

numpy asks for huge pages on every array of 4 MiB or more (``madvise(MADV_HUGEPAGE)``), and glibc's heap then
serves later, smaller allocations from those ranges too.  A replay streams its chunks through such memory: the
Parquet decoder's buffers, the converted columns, the temporaries of each chunk.  Each time the heap gives a
range back and takes it again, the kernel faults it in as a 2 MiB page, zeroed whole (``clear_page_erms``
under ``do_huge_pmd_anonymous_page``: 8.8 % of the replay's CPU in ``perf`` on mixed_small tiled to 10 M
events).  With 4 KiB pages only the bytes touched are zeroed: the replay's system time went from 0.14–0.36 to
0.14–0.18 CPU-s in 18 interleaved runs, the model loop (random access over per-pfn arrays) no slower.

The previous setting is put back when the replay ends (a notebook's other work keeps its huge pages); where
``prctl`` is not there (not Linux) nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)

PR_SET_THP_DISABLE = 41  # include/uapi/linux/prctl.h
PR_GET_THP_DISABLE = 42


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_PRCTL = _prctl()


def thp_disabled_now() -> bool | None:
    """Whether this process has huge pages off (None: cannot tell)."""
    if _PRCTL is None:
        return None
    r = _PRCTL(PR_GET_THP_DISABLE, 0, 0, 0, 0)
    return None if r < 0 else bool(r)


@contextlib.contextmanager
def no_thp() -> Iterator[None]:
    """Huge pages off for the ``with`` block, then as they were."""
    before = thp_disabled_now()
    if before is None or before:
        yield
        return
    changed = _PRCTL(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if changed:
            _PRCTL(PR_SET_THP_DISABLE, 0, 0, 0, 0)


def without_thp(fn: F) -> F:
    """``fn`` run under :func:`no_thp`."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with no_thp():
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]
