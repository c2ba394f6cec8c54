"""The trace file's format 2 (dense columns and ``absent``) against format 1 (nulls): the same events, the same
replay; the round trip through :func:`to_disk` and :func:`logical` on generated batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptebench
from ptebench.errors import PtebenchError
from ptebench.parse.events import SCHEMA
from ptebench.parse.schema import (
    ABSENT,
    DENSE,
    DISK_SCHEMA,
    FORMAT_VERSION,
    META_KEY,
    disk_columns,
    logical,
    read_metadata,
    stored_dense,
    to_disk,
)
from ptebench.results import results_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("format") / "secretmem_64.parquet"
    ptebench.ingest([str(ROOT / "traces" / "secretmem_64")], out)
    return out


def _as_format_1(src: Path, out: Path) -> Path:
    """The file as format 1 wrote it: nulls in place, no ``absent``, no ``dense_columns``."""
    table = pq.read_table(src)
    meta = read_metadata(table.schema, str(src))
    table = logical(table, meta)
    meta = {k: v for k, v in meta.items() if k != "dense_columns"}
    meta["format_version"] = 1
    md = {**table.schema.metadata, META_KEY: json.dumps(meta, sort_keys=True).encode()}
    pq.write_table(table.cast(SCHEMA.with_metadata(md)), out, compression="lz4")
    return out


def test_dense_columns_are_stored_without_nulls(v2):
    pf = pq.ParquetFile(v2)
    meta = read_metadata(pf.schema_arrow, str(v2))
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert stored_dense(meta) == DENSE  # in bit order
    raw = pf.read()
    for name in DENSE:
        col = pf.schema.column(pf.schema_arrow.get_field_index(name))
        assert col.max_definition_level == 0, name  # required: no definition levels to decode
        assert raw.column(name).null_count == 0
    absent = raw.column(ABSENT).to_numpy()
    # a free has a pfn and an order, and no gfp mask: its bits say so
    ev = raw.column("event").to_pylist()
    free = np.array([e == "mm_page_free" for e in ev])
    bit = {name: 1 << i for i, name in enumerate(DENSE)}
    assert free.any() and not (absent[free] & (bit["pfn"] | bit["order"])).any()
    assert ((absent[free] & bit["gfp_mask"]) != 0).all()


def test_format_1_and_2_read_and_replay_the_same(v2, tmp_path):
    v1 = _as_format_1(v2, tmp_path / "v1.parquet")
    a, b = ptebench.load(v1), ptebench.load(v2)
    assert a.meta["format_version"] == 1 and b.meta["format_version"] == 2
    assert a.table.schema.remove_metadata().equals(b.table.schema.remove_metadata())
    assert a.table.replace_schema_metadata(None).equals(b.table.replace_schema_metadata(None))
    assert a.events.equals(b.events)
    assert b.table.column("pfn").null_count > 0 and ABSENT not in b.table.column_names
    for mode in ("faithful", "simulate"):
        ra, rb = (results_json([ptebench.replay(p, mode=mode)])["runs"][0] for p in (v1, v2))
        ra.pop("timing"), rb.pop("timing")
        assert ra == rb, mode


def test_other_none_values_are_refused(v2, tmp_path):
    table = pq.read_table(v2)
    meta = read_metadata(table.schema, str(v2))
    meta["dense_columns"] = [{**d, "null_as": 0} if d["column"] == "pfn" else d
                             for d in meta["dense_columns"]]
    md = {**table.schema.metadata, META_KEY: json.dumps(meta).encode()}
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.replace_schema_metadata(md), bad)
    with pytest.raises(PtebenchError, match="pfn") as e:
        ptebench.replay(bad)
    assert e.value.file == str(bad)


def test_disk_columns_add_absent_for_dense_ones():
    meta = {"dense_columns": [{"column": k, "null_as": v} for k, v in DENSE.items()]}
    assert disk_columns(["event", "pfn"], meta) == ["event", "pfn", ABSENT]
    assert disk_columns(["event", "fields"], meta) == ["event", "fields"]
    assert disk_columns(["event", "pfn"], {}) == ["event", "pfn"]  # format 1


def _value(name: str, t: pa.DataType):
    if pa.types.is_boolean(t):
        return st.booleans()
    if name == "gfp_mask":
        return st.sampled_from([0, 1, 0xCC0, (1 << 64) - 1])
    lo, hi = {8: (-128, 127), 32: (-(1 << 31), (1 << 31) - 1), 64: (-(1 << 63), (1 << 63) - 1)}[t.bit_width]
    return st.one_of(st.sampled_from([-1, 0, 1]), st.integers(lo, hi))  # the none values among real ones


@st.composite
def _batches(draw):
    n = draw(st.integers(0, 40))
    offset = draw(st.integers(0, 9))  # a slice: arrays that do not start at bit 0
    cols = {}
    for f in SCHEMA:
        if f.name in DENSE:
            vals = draw(st.lists(st.one_of(st.none(), _value(f.name, f.type)), min_size=n + offset,
                                 max_size=n + offset))
            cols[f.name] = pa.array(vals, f.type)
        else:
            cols[f.name] = pa.nulls(n + offset, f.type) if f.nullable else pa.array(
                [0] * (n + offset), f.type) if not pa.types.is_dictionary(f.type) else pa.DictionaryArray.from_arrays(
                pa.array([0] * (n + offset), pa.int32()), pa.array(["e"]))
    return pa.RecordBatch.from_arrays([cols[f.name] for f in SCHEMA], schema=SCHEMA).slice(offset, n)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_batches())
def test_to_disk_and_back(batch):
    disk = to_disk(batch)
    assert disk.schema.equals(DISK_SCHEMA)
    assert all(disk.column(name).null_count == 0 for name in DENSE)
    for name, none in DENSE.items():  # a null is stored as the none value
        col, stored = batch.column(name), disk.column(name).to_pylist()
        assert [s for s, v in zip(stored, col.to_pylist(), strict=True) if v is None] == [none] * col.null_count
    meta = {"dense_columns": [{"column": k, "null_as": v} for k, v in DENSE.items()]}
    back = logical(disk, meta)
    assert back.schema.equals(SCHEMA)
    assert back.equals(batch)
    assert logical(batch, meta) is batch  # no absent column: as it is (format 1)
