"""The CLI: ingest and info on a real capture, and the project error as exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ptebench import cli, summary
from ptebench.trace import load

REPO_TRACES = Path(__file__).resolve().parents[1] / "traces"
runner = CliRunner(env={"COLUMNS": "200"})


def run(*args: str) -> tuple[int, str]:
    """Invoke the app the way the console script does (PtebenchError -> exit 1)."""
    try:
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
    except cli.PtebenchError as exc:
        return 1, str(exc)
    return result.exit_code, " ".join(result.output.split())  # rich wraps to the terminal width


def test_ingest_then_info(tmp_path):
    out = tmp_path / "s.parquet"
    code, text = run("ingest", str(REPO_TRACES / "secretmem_64"), "-o", str(out))
    assert code == 0, text
    assert "477 events" in text and "244 stacks" in text
    code, text = run("info", str(out))
    assert code == 0, text
    assert "6.1.0-56-amd64" in text and "secretmem_fault" in text
    assert "lost-event records: 0" in text


def test_summaries_of_a_real_capture(tmp_path):
    out = tmp_path / "s.parquet"
    run("ingest", str(REPO_TRACES / "secretmem_64"), "-o", str(out))
    trace = load(out)
    counts = summary.event_counts(trace)
    assert dict(zip(counts["event"], counts["count"], strict=True))["mm_page_alloc"] == 116
    s = summary.alloc_free_summary(trace)
    assert s["allocation_requests"] == 116 and s["allocation_failures"] == 0 and s["free_requests"] == 118
    callers = summary.top_frames(trace)
    assert dict(zip(callers["frame"], callers["events"], strict=True))["secretmem_fault"] == 64
    omt = summary.order_by_migratetype(trace)
    assert int(omt.to_numpy().sum()) == 116
    kc = summary.kernel_counters(trace)
    assert list(kc["snapshot"]) == ["before", "after"]
    assert list(kc["direct_map_level2_splits"]) == [4, 5]
    assert summary.gfp_table(trace)["requests"].sum() == 116


def test_bad_input_is_exit_code_1_and_no_output(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a trace line\n")
    out = tmp_path / "o.parquet"
    code, text = run("ingest", str(bad), "-o", str(out))
    assert code == 1
    assert f"{bad}:1:" in text and "expected" in text
    assert not out.exists()


def test_main_turns_the_project_error_into_exit_1(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("garbage\n")
    monkeypatch.setattr("sys.argv", ["ptebench", "ingest", str(bad), "-o", str(tmp_path / "o.parquet")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    assert "malformed trace line" in capsys.readouterr().err


def test_version():
    code, text = run("--version")
    assert code == 0 and text.startswith("ptebench ")
