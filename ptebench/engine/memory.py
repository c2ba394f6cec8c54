"""The replay's process memory settings (Linux, glibc): transparent huge pages off while it runs, and malloc's
thresholds at their dynamic maxima from the start.

**Huge pages** (``prctl(PR_SET_THP_DISABLE)``).
numpy asks for huge pages on every array of 4 MiB or more (``madvise(MADV_HUGEPAGE)``), and glibc's heap then
serves later, smaller allocations from those ranges too.  A replay streams its chunks through such memory: the
Parquet decoder's buffers, the converted columns, the temporaries of each chunk.  Each time the heap gives a
range back and takes it again, the kernel faults it in as a 2 MiB page, zeroed whole (``clear_page_erms``
under ``do_huge_pmd_anonymous_page``: 8.8 % of the replay's CPU in ``perf`` on mixed_small tiled to 10 M
events).  With 4 KiB pages only the bytes touched are zeroed: the replay's system time went from 0.14–0.36 to
0.14–0.18 CPU-s in 18 interleaved runs, the model loop (random access over per-pfn arrays) no slower.

The previous setting is put back when the replay ends (a notebook's other work keeps its huge pages); where
``prctl`` is not there (not Linux) nothing changes.

**malloc thresholds** (``mallopt(M_MMAP_THRESHOLD, 32 MiB)``, ``mallopt(M_TRIM_THRESHOLD, 64 MiB)``).  glibc
serves a block above ``M_MMAP_THRESHOLD`` (128 KiB at first) with an ``mmap`` of its own, and raises the threshold
to the size of each such block freed, up to 32 MiB (``DEFAULT_MMAP_THRESHOLD_MAX``), the trim threshold with it
(twice as much).  A replay's per-chunk arrays (2 to 16 MiB) meet that climb chunk after chunk: a block a little
larger than the last one freed is mapped and faulted in afresh.  Set at the maxima from the start, they come from
the heap and reuse its pages: 78-84 k page faults became 63-67 k on mixed_small tiled to 10 M events, 0.02-0.04
CPU-s of system time.  The values are those a long-running numpy process reaches by itself, and they stay (glibc
has no way to return to the dynamic mode): the heap keeps at most 64 MiB of free pages at its top.
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
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD_MAX = 32 << 20  # glibc malloc.c DEFAULT_MMAP_THRESHOLD_MAX (64-bit)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _fn(lib, name: str, argtypes: list):
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None:
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return fn


_LIBC = _libc()
_PRCTL = _fn(_LIBC, "prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong])
_MALLOPT = _fn(_LIBC, "mallopt", [ctypes.c_int, ctypes.c_int])  # glibc only (musl has none)


def thp_disabled_now() -> bool | None:
    """Whether this process has huge pages off (None: cannot tell)."""
    if _PRCTL is None:
        return None
    r = _PRCTL(PR_GET_THP_DISABLE, 0, 0, 0, 0)
    return None if r < 0 else bool(r)


def malloc_at_maxima() -> bool:
    """glibc's mmap and trim thresholds at their dynamic maxima (see the module doc); False where there is no
    ``mallopt``."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) & bool(_MALLOPT(M_TRIM_THRESHOLD,
                                                                               2 * MMAP_THRESHOLD_MAX))


@contextlib.contextmanager
def replay_memory() -> Iterator[None]:
    """The replay's settings for the ``with`` block: huge pages off (then as they were), malloc at its maxima."""
    malloc_at_maxima()
    with no_thp():
        yield


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


def replay_settings(fn: F) -> F:
    """``fn`` run under :func:`replay_memory`."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with replay_memory():
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]
