"""One benchmark contender in its own process (started by :func:`ptebench.bench.ingest.run_child`).

The parent pins this process to one CPU before anything is imported, then runs this file by path
(not as ``ptebench.bench._child``: the naive parser's child must not import ptebench) with a JSON
spec as ``sys.argv[1]``.  Protocol on stdout: ``P <bytes>`` progress lines, then one
``R <json>`` result line with the CPU time of the timed part (``user_s``, ``sys_s``), its wall
time, the process's peak RSS (``VmHWM``; ``ru_maxrss`` too, see :func:`_vm_hwm`) and the
contender's own figures (rows, checksum).
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import resource
import runpy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _emit(tag: str, payload: str) -> None:
    sys.stdout.write(f"{tag} {payload}\n")
    sys.stdout.flush()


class _Timer:
    """User and system CPU seconds (all threads) and wall seconds of a block."""

    def __enter__(self) -> _Timer:
        gc.collect()
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        self.w0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.w0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.user_s = r1.ru_utime - self.r0.ru_utime
        self.sys_s = r1.ru_stime - self.r0.ru_stime

    def as_json(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}user_s": self.user_s, f"{prefix}sys_s": self.sys_s, f"{prefix}wall_s": self.wall_s}


def _ptebench(spec: dict[str, Any]) -> dict[str, Any]:
    import ptebench

    with tempfile.TemporaryDirectory(prefix="ptebench-bench-") as d:
        ptebench.ingest(spec["warmup"], Path(d) / "warmup.parquet")  # JIT compile / cache load, excluded

    def on_bytes(n: int) -> None:
        _emit("P", str(n))

    try:
        with _Timer() as t:
            summary = ptebench.ingest(spec["input"], spec["out"], on_bytes=on_bytes)
    except ptebench.PtebenchError as exc:
        return {"error": str(exc)}
    return {**t.as_json(), "rows": summary.rows, "events": summary.events}


def _load_checksum() -> type:
    """``Checksum`` from ``_checksum.py`` beside this file, without importing the ptebench package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ptebench_bench_checksum", Path(__file__).with_name("_checksum.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.Checksum


def _naive(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    script = spec["script"]
    sys.argv = [script, spec["input"]]
    printed = io.StringIO()
    with _Timer() as t, contextlib.redirect_stdout(printed):
        g = runpy.run_path(script, run_name="__main__")
    rows = g["rows"]
    n = len(rows)
    ck = _load_checksum()()
    for i in range(0, n, 1 << 20):  # in blocks: the rows already hold most of this child's memory
        block = rows[i : i + (1 << 20)]
        ck.add(np.fromiter((r[1] == "mm_page_alloc" for r in block), dtype=bool, count=len(block)),
               np.fromiter((r[2] for r in block), dtype=np.int64, count=len(block)),
               np.fromiter((r[3] for r in block), dtype=np.int64, count=len(block)))
    return {**t.as_json(), "rows": n, "checksum": ck.__dict__, "printed": printed.getvalue().strip()}


def _scan(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ptebench.bench._checksum import Checksum
    from ptebench.bench.ingest import load_scan

    scan = load_scan(Path(spec["script"]))
    cap = int(spec["lines"]) + 1  # scan() writes one row per event line and does not check bounds

    def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.empty(cap, np.int64), np.empty(cap, np.int8), np.empty(cap, np.int8)

    scan(np.fromfile(spec["warmup"], dtype=np.uint8), *outputs())  # JIT compile, excluded
    with _Timer() as read:
        data = np.fromfile(spec["input"], dtype=np.uint8)
    # a one-second figure is fragile on a shared machine: the median of a few runs, each with fresh
    # output arrays (allocated untimed, first-touch page faults timed, as in scan_ref.py)
    runs = []
    for _ in range(int(spec.get("repeats", 1))):
        pfn, order, kind = outputs()
        with _Timer() as t:
            k = scan(data, pfn, order, kind)
        runs.append(t.as_json())
        del pfn, order, kind
    pfn, order, kind = outputs()
    k = scan(data, pfn, order, kind)
    ck = Checksum()  # computed in blocks: its temporaries stay small next to the file in memory
    ck.add(kind[:k] == 0, pfn[:k], order[:k])
    runs.sort(key=lambda r: r["user_s"] + r["sys_s"])
    return {**runs[len(runs) // 2], **read.as_json("read_"), "repeats": runs, "rows": int(k),
            "checksum": ck.__dict__}


def _vm_hwm() -> int | None:
    """This process's peak RSS: ``VmHWM`` of its own memory map.

    ``ru_maxrss`` is not used for the figure: Linux carries the pre-exec memory map's high-water
    mark into it at exec, so a child of a parent holding 300 MB reports at least 300 MB.
    """
    try:
        with Path("/proc/self/status").open() as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_KINDS = {"ptebench": _ptebench, "naive": _naive, "scan": _scan}


def main() -> None:
    spec = json.loads(sys.argv[1])
    os.sched_setaffinity(0, {int(spec["cpu"])})  # already done by the bootstrap; harmless
    result = _KINDS[spec["kind"]](spec)
    result["kind"] = spec["kind"]
    result["affinity"] = sorted(os.sched_getaffinity(0))
    result["peak_rss_bytes"] = _vm_hwm()
    result["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _emit("R", json.dumps(result))


if __name__ == "__main__":
    main()
