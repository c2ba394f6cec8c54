"""The replay runs with transparent huge pages off (engine/memory.py) and leaves the process as it found it."""

from __future__ import annotations

from pathlib import Path

import pytest

import ptebench
from ptebench import runner
from ptebench.engine import memory

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(memory.thp_disabled_now() is None, reason="no prctl(PR_GET_THP_DISABLE) here")


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("thp") / "secretmem_64.parquet"
    ptebench.ingest([str(ROOT / "traces" / "secretmem_64")], out)
    return out


def _watch(monkeypatch) -> list:
    seen = []
    setup = runner.setup
    monkeypatch.setattr(runner, "setup", lambda *a, **k: (seen.append(memory.thp_disabled_now()), setup(*a, **k))[1])
    return seen


def test_replay_runs_without_huge_pages_then_restores(trace, monkeypatch):
    seen = _watch(monkeypatch)
    assert memory.thp_disabled_now() is False
    ptebench.replay(trace)
    assert seen == [True] and memory.thp_disabled_now() is False
    with pytest.raises(ptebench.PtebenchError):  # restored on an error too
        ptebench.replay(trace, mode="nonsense")
    assert memory.thp_disabled_now() is False


def test_a_process_that_had_them_off_keeps_them_off(trace, monkeypatch):
    seen = _watch(monkeypatch)
    with memory.no_thp():
        ptebench.replay(trace)
        assert memory.thp_disabled_now() is True
    assert seen == [True] and memory.thp_disabled_now() is False


def test_malloc_thresholds_are_set_where_glibc_has_mallopt():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert memory.malloc_at_maxima() is True
