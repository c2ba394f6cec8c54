"""Replay results: the :class:`Result` type, the versioned JSON layout and the split table.

JSON layout (a contract other tools read: later versions add keys, never rename them)::

    {"ptebench": {"version", "format_version"},
     "runs": [{"trace": {"name", "sha256"}, "variant", "mode", "scenario",
               "counters": {"end": {...}, "delta": {...}}, "kernel": {"delta": {...}},
               "witness": {...}, "timing": {...}, ...}]}

``counters.end``/``counters.delta``/``kernel.delta`` use the kernel's names
(``direct_map_level2_splits``, ``DirectMap4k`` ...).  Wall-clock figures appear only under
``timing``, so two runs of the same input give identical JSON outside it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ptebench._version import __version__
from ptebench.errors import PtebenchError

RESULT_FORMAT_VERSION = 1
KERNEL_KEYS = ("direct_map_level2_splits", "direct_map_level3_splits", "direct_map_level2_collapses",
               "direct_map_level3_collapses", "DirectMap4k", "DirectMap2M", "DirectMap1G")
SPLIT_COLUMNS = ["ts_ns", "line", "kind", "level", "pfn", "region_2m", "phys", "consumer", "source", "running",
                 "witness_line", "frames"]


@dataclass
class Result:
    """One replay of one trace under one variant and mode."""

    trace: dict[str, str]
    variant: str
    mode: str
    scenario: str
    counters: dict[str, dict[str, int]]
    kernel: dict[str, Any]
    witness: dict[str, int]
    timing: dict[str, float]
    pairing: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    regions: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, int] = field(default_factory=dict)
    placement_kernel: dict[str, int] | None = None  # simulate mode: the kernel's own placement of the same trace
    simulate: dict[str, Any] | None = None  # simulate mode: the buddy model's own figures
    faithful: dict[str, Any] | None = None  # simulate mode: the faithful replay's deltas of the same trace
    warnings: list[str] = field(default_factory=list)
    splits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SPLIT_COLUMNS))

    def run_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace, "variant": self.variant, "mode": self.mode, "scenario": self.scenario,
            "counters": self.counters, "kernel": self.kernel, "witness": self.witness, "timing": self.timing,
            "pairing": self.pairing, "consumers": self.consumers, "engine": self.engine, "regions": self.regions,
            "placement": self.placement,
            **({"placement_kernel": self.placement_kernel, "simulate": self.simulate, "faithful": self.faithful}
               if self.mode == "simulate" else {}),
            "warnings": self.warnings,
        }

    def comparison(self) -> pd.DataFrame:
        """model delta beside kernel delta for each kernel-named counter."""
        rows = []
        kd = self.kernel.get("delta") or {}
        for key in KERNEL_KEYS:
            model = self.counters["delta"].get(key)
            kern = kd.get(key)
            rows.append({"counter": key, "model_delta": model, "kernel_delta": kern,
                         "match": "" if kern is None else "yes" if model == kern else "NO",
                         "model_end": self.counters["end"].get(key)})
        return pd.DataFrame(rows).astype({"model_delta": "Int64", "kernel_delta": "Int64", "model_end": "Int64"})


def results_json(results: list[Result]) -> dict[str, Any]:
    return {"ptebench": {"version": __version__, "format_version": RESULT_FORMAT_VERSION},
            "runs": [r.run_dict() for r in results]}


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path()
    if not directory.is_dir():
        raise PtebenchError("output directory does not exist", file=str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(Path(tmp))
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(results: list[Result], path: str | Path) -> None:
    """The results as JSON (sorted keys, so identical inputs give identical bytes), atomically."""
    text = json.dumps(results_json(results), indent=2, sort_keys=True) + "\n"
    _atomic_write(Path(path), lambda p: p.write_text(text))


def write_splits(result: Result, path: str | Path) -> None:
    """The split/collapse attribution table as Parquet, atomically."""
    table = pa.Table.from_pandas(result.splits, preserve_index=False)
    meta = {b"ptebench.splits": json.dumps({"trace": result.trace, "variant": result.variant,
                                             "mode": result.mode, "version": __version__}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    _atomic_write(Path(path), lambda p: pq.write_table(table, p))


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PtebenchError(f"cannot read results ({exc})", file=str(path), expected="a ptebench replay JSON") from exc
    if not isinstance(data, dict) or "ptebench" not in data or "runs" not in data:
        raise PtebenchError("not a ptebench result", file=str(path), expected='keys "ptebench" and "runs"')
    return data
