"""``ptebench bench replay``: the tiling of a real capture and the harness on a small run; no timing assertions.

The baseline (``../shared/bench/buddy_ref.py``) is run as it is; the harness tests skip when it is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import ptebench
from ptebench import PtebenchError, cli
from ptebench.bench import replay as br
from ptebench.engine import addresses as A
from ptebench.parse.schema import META_KEY, STACKS_KEY

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "traces" / "secretmem_1024"
EVENTS = 200_000
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_replay")


@pytest.fixture(scope="module")
def base(work_dir) -> Path:
    """secretmem_1024 ingested (6,199 events, 2,048 direct-map kprobes)."""
    return br.ingest_capture(CAPTURE, work_dir)


@pytest.fixture(scope="module")
def tiled(base, work_dir) -> br.Tiling:
    return br.tile(base, work_dir / "tiled.parquet", EVENTS)


def run(*args: str) -> tuple[int, str]:
    """Invoke the app the way the console script does (PtebenchError -> exit 1)."""
    try:
        res = runner.invoke(cli.app, list(args), catch_exceptions=False)
    except PtebenchError as exc:
        return 1, str(exc)
    return res.exit_code, " ".join(res.output.split())


# --------------------------------------------------------------------------------------------
# tiling


def test_tiling_counts_and_order(base, tiled):
    n0 = pq.ParquetFile(base).metadata.num_rows
    assert tiled.base_rows == n0 and tiled.tiles >= 2 and tiled.tiles * n0 >= EVENTS > (tiled.tiles - 1) * n0
    table = pq.read_table(tiled.path)
    assert table.num_rows == tiled.rows == tiled.tiles * n0
    ts = table.column("ts_ns").to_numpy()
    assert np.all(np.diff(ts) >= 0) and np.all(np.diff(table.column("seq").to_numpy()) > 0)
    # tile t is the capture shifted by t periods in time
    base_ts = pq.read_table(base, columns=["ts_ns"]).column(0).to_numpy()
    assert np.array_equal(ts[n0: 2 * n0], base_ts + tiled.period_ns)
    assert tiled.period_ns > tiled.span_ns == base_ts.max() - base_ts.min()


def test_tiling_pfns_stay_in_the_zone_and_below_the_dump(base, tiled):
    table = pq.read_table(tiled.path, columns=["pfn", "order", "fields"])
    n0 = tiled.base_rows
    lo, hi = tiled.region["lo"], tiled.region["hi"]
    assert tiled.region["name"] == "zone Normal" and hi <= tiled.npfn
    pfn = pc.fill_null(table.column("pfn"), -1).to_numpy()
    order = pc.fill_null(table.column("order"), 0).to_numpy().astype(np.int64)
    has = pfn >= 0
    assert pfn[has].min() >= lo and (pfn[has] + (1 << order[has])).max() <= hi
    # offsets: 0 first, whole multiples of the window (1024-page aligned), rotated; consecutive tiles differ
    offs = tiled.pfn_offsets
    assert offs[0] == 0 and len(offs) >= 2 and all(d % br.PFN_ALIGN == 0 for d in offs)
    assert tiled.pfn_step >= tiled.pfn_window[1] - tiled.pfn_window[0]
    base_pfn = pc.fill_null(pq.read_table(base, columns=["pfn"]).column(0), -1).to_numpy()
    for t in range(tiled.tiles):
        got = pfn[t * n0: (t + 1) * n0]
        assert np.array_equal(got[got >= 0], base_pfn[base_pfn >= 0] + offs[t % len(offs)])
    # the kprobes' struct page pointers move with their pages
    amap = A.AddressMap.for_page_offset(A.LAYOUTS[5]["page_offset"])
    fields = table.column("fields").to_pylist()
    pages = [(i, int(f.split("page=0x")[1], 16)) for i, f in enumerate(fields) if f and "page=0x" in f]
    assert len(pages) == tiled.kprobe_rows * tiled.tiles
    first = {i: p for i, p in pages if i < n0}
    for i, p in pages:
        t, j = divmod(i, n0)
        assert p == first[j] + offs[t % len(offs)] * A.STRUCT_PAGE
        assert lo <= int(amap.page_pfns(np.array([p], np.uint64))[0]) < hi


def test_tiling_keeps_the_metadata(base, tiled):
    b, t = pq.ParquetFile(base).schema_arrow.metadata, pq.ParquetFile(tiled.path).schema_arrow.metadata
    assert t[STACKS_KEY] == b[STACKS_KEY]
    mb, mt = json.loads(b[META_KEY]), json.loads(t[META_KEY])
    assert mt["rows"] == tiled.rows
    assert mt["events"] == {k: v * tiled.tiles for k, v in mb["events"].items()}
    assert mt["tiled"]["tiles"] == tiled.tiles and mt["tiled"]["pfn_offsets"] == tiled.pfn_offsets
    assert "mean nothing" in mt["tiled"]["note"]
    assert mt["bundle"]["name"] == f"secretmem_1024-tiled{tiled.tiles}"
    assert {**mt["bundle"], "name": 0} == {**mb["bundle"], "name": 0}  # snapshots, memory map, dumps as they were
    trace = ptebench.load(tiled.path)  # and the public reader takes it
    assert trace.meta["rows"] == tiled.rows and trace.bundle["snapshots"]["before"]["buddyinfo"]


def test_tiling_pairs_the_frees(tiled):
    p = tiled.pairing
    assert tiled.paired_fraction == p["paired_frees"] / p["frees"] >= br.MIN_PAIRED
    assert p["frees"] == 1080 * tiled.tiles and p["pfn_out_of_range"] == 0


def test_tiled_trace_replays_in_simulate_mode(base, work_dir):
    small = br.tile(base, work_dir / "small.parquet", 12_000)
    r = ptebench.replay(small.path, mode="simulate")
    assert r.engine["events"] == small.rows == 2 * small.base_rows
    assert r.pairing == small.pairing  # the harness's own pass and the engine's agree
    assert r.simulate["alloc_failed"] == 0 and r.counters["delta"]["pt_pages_alloc"] >= 1
    assert r.trace["name"] == "secretmem_1024-tiled2"


def test_cached_tiled_input_is_reused(tiled, work_dir):
    opts = br.ReplayBenchOptions(capture=CAPTURE, events=EVENTS, work_dir=work_dir)
    first = br.tiled_input(opts, work_dir)
    again = br.tiled_input(opts, work_dir)
    assert again.cached and again.path == first.path and again.pairing == first.pairing


def _rewrite(base: Path, out: Path, table: pa.Table) -> Path:
    pq.write_table(table.replace_schema_metadata(pq.ParquetFile(base).schema_arrow.metadata), out)
    return out


def test_tiling_refuses_a_trace_whose_frees_do_not_pair(base, tmp_path):
    table = pq.read_table(base)
    ev = pc.cast(table.column("event"), pa.string())
    no_allocs = _rewrite(base, tmp_path / "frees_only.parquet", table.filter(pc.not_equal(ev, "mm_page_alloc")))
    with pytest.raises(PtebenchError, match="pair with an allocation") as exc:
        br.tile(no_allocs, tmp_path / "t.parquet", 20_000)
    assert "at least 95%" in str(exc.value) and not (tmp_path / "t.parquet").exists()


def test_tiling_refuses_a_capture_too_wide_to_shift(base, tmp_path):
    table = pq.read_table(base)
    pfn = pc.fill_null(table.column("pfn"), -1).to_numpy().copy()
    pfn[np.flatnonzero(pfn >= 0)[0]] = 0x240000 - 1  # one page at the top of the Normal zone
    i = table.schema.get_field_index("pfn")
    wide = _rewrite(base, tmp_path / "wide.parquet",
                    table.set_column(i, table.schema.field("pfn"), pa.array(pfn, pa.int64())))  # dense: -1 where none
    with pytest.raises(PtebenchError, match="no room to tile"):
        br.tile(wide, tmp_path / "t.parquet", 20_000)


def test_peak_pages_of_an_op_stream():
    order = np.array([0, 9, 0, 9, 0], np.int8)
    kind = np.array([0, 0, 1, 1, 0], np.int8)  # alloc 1, alloc 512, free 1, free 512, alloc 1
    assert br.peak_pages(order, kind) == 513


# --------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize(("args", "message"), [
    (("--events", "5"), "--events 5 is too small"),
    (("--ref-npages", "1000"), "not a whole number of order-10 blocks"),
    (("--ref-live", "3"), "--ref-live 3 is too small"),
    (("--capture", "/nonexistent/bundle"), "neither a capture bundle"),
    (("--cpu", "4096"), "--cpu 4096 is not available"),
    (("--repeats", "0"), "--repeats 0 is out of range"),
    (("--baselines", "/nonexistent"), "buddy_ref.py not found"),
])
def test_bad_options_fail_before_running(args, message):
    code, out = run("bench", "replay", *args)
    assert code == 1 and message in out


def test_bad_option_exit_code_of_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ptebench", "bench", "replay", "--events", "5", "--work-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "too small" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing ran


def test_an_overfilling_reference_stream_is_refused(tmp_path):
    if not (br.DEFAULT_BASELINES / br.BUDDY_REF).is_file():
        pytest.skip(f"benchmark baselines not found at {br.DEFAULT_BASELINES}")
    if numba.config.DISABLE_JIT:
        pytest.skip("the benchmark needs numba's JIT")
    opts = br.ReplayBenchOptions(capture=CAPTURE, events=20_000, ref_ops=20_000, ref_live=5_000, ref_npages=1 << 12,
                                 work_dir=tmp_path)
    with pytest.raises(PtebenchError, match="overfills its machine"):
        br.run_replay_bench(opts)


# --------------------------------------------------------------------------------------------
# the whole harness (two pinned children)


@pytest.fixture(scope="module")
def harness(work_dir) -> tuple[dict, str]:
    if numba.config.DISABLE_JIT:
        pytest.skip("the benchmark needs numba's JIT")
    if not (br.DEFAULT_BASELINES / br.BUDDY_REF).is_file():
        pytest.skip(f"benchmark baselines not found at {br.DEFAULT_BASELINES}")
    out = work_dir / "result.json"
    code, text = run("bench", "replay", "--capture", str(CAPTURE), "--events", str(EVENTS), "--ref-ops", "200000",
                     "--ref-live", "2000", "--ref-npages", str(1 << 20), "--work-dir", str(work_dir), "--repeats", "2",
                     "--json", str(out))
    assert code == 0, text
    return json.loads(out.read_text()), text


@pytest.mark.slow  # two child processes, each importing numba and warming up
def test_harness_result_structure(harness, tiled):
    result, text = harness
    c = {row["name"]: row for row in result["contenders"]}
    assert list(c) == ["ptebench", "buddy_ref"]
    pte, ref = c["ptebench"], c["buddy_ref"]
    assert pte["count"] == result["input"]["rows"] == tiled.rows and ref["count"] == 200_000
    for row in c.values():
        assert row["cpu_s"] > 0 and row["rate"] > 0 and row["peak_rss_bytes"] > 0
        assert row["affinity"] == [result["machine"]["pinned_cpu"]]  # each child pinned to one CPU
        assert row["x_ref"] == pytest.approx(row["rate"] / ref["rate"])
        assert row["mem_per_event"] is not None and row["mem_per_page"] > 0
    assert pte["paired_fraction"] == pytest.approx(tiled.paired_fraction) and pte["paired_fraction"] >= 0.95
    assert set(pte["state_parts"]) == {"buddy", "direct_maps", "faithful_engine", "simulate_engine"}
    assert all(v > 0 for v in pte["state_parts"].values())
    assert pte["npages"] == tiled.npfn and pte["mem_per_page"] == pytest.approx(pte["state_bytes"] / tiled.npfn)
    assert set(pte["timing"]) >= {"prepare_s", "replay_s", "model_cpu_s"}
    assert 0 < pte["model_loop_cpu_s"] <= pte["cpu_s"]  # the jitted loop is a part of the whole replay
    assert pte["model_loop_rate"] == pytest.approx(pte["count"] / pte["model_loop_cpu_s"])
    assert pte["model_loop_x_ref"] == pytest.approx(pte["model_loop_rate"] / ref["rate"])
    assert pte["head_events"] == br.head_rows(tiled.rows) and pte["head_grown_rss_bytes"] > 0  # the marginal's base
    assert pte["mem_per_event_marginal"] is not None and ref["mem_per_event_marginal"] is not None
    assert pte["model"]["alloc_failed"] == 0
    assert ref["failed_allocs"] == 0 and ref["mem_per_page"] == br.REF_BYTES_PER_PAGE
    assert len(ref["repeats"]) == br.REF_REPEATS and len(pte["repeats"]) == 2  # --repeats 2: the median of two
    # a buddy_ref child beside each ptebench run: a ratio per adjacent pair, their median judged by the target
    assert len(ref["children_rates"]) == len(pte["x_ref_pairs"]) == len(pte["model_loop_x_ref_pairs"]) == 2
    p_rates = [pte["count"] / (r["user_s"] + r["sys_s"]) for r in pte["repeats"]]
    assert pte["x_ref_pairs"] == pytest.approx([a / b for a, b in zip(p_rates, ref["children_rates"], strict=True)])
    assert pte["x_ref_paired"] == pytest.approx(sum(pte["x_ref_pairs"]) / 2)  # the median of two
    assert result["verdicts"][1]["value"] == pytest.approx(pte["x_ref_paired"])
    assert ref["rate"] == pytest.approx(min(ref["children_rates"]))  # of two, the median by CPU time: the slower
    assert pte["cpu_s"] == pytest.approx(max(r["user_s"] + r["sys_s"] for r in pte["repeats"]))
    assert result["buddy_ref_ops"]["peak_pages"] <= 1 << 20  # the stream never fills the machine
    assert [type(v["met"]) for v in result["verdicts"]] == [bool, bool]
    assert "JIT excluded" in result["method"]["warmup"] and "mean nothing" in result["method"]["caveat"]
    # the printed report
    for part in ("replay, simulate mode, one core", "ptebench simulate", "buddy_ref.run", "x buddy_ref",
                 "mem/event", "mem/page", "targets (issue #5)", "frees paired", "mean nothing", "model loop alone"):
        assert part in text
    json.dumps(result)
