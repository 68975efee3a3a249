"""``python -m benchmarks``: what a run is called (PASS/FAIL, SMOKE, SKIPPED, BROKEN,
CRASHED), its exit status, and where its reports go (untracked unless ``--record``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import _common
from benchmarks._common import OUT_DIR, RESULTS_DIR, Options, Outcome, run_benchmarks, verdict

ROOT = Path(__file__).resolve().parent.parent


def fixed(outcome: Outcome) -> Callable[[Options], Outcome]:
    return lambda options: outcome


def crash(options: Options) -> Outcome:
    raise RuntimeError("the benchmark fell over")


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines()]


def test_a_full_run_is_judged_and_a_skip_is_no_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = tmp_path / "a.md"
    full = Options(results_dir=tmp_path)
    assert run_benchmarks({"a": fixed(Outcome("a", True, "fast", report))}, full) == 0
    assert lines(capsys)[0] == f"PASS a: fast -> {report}"
    skipped = Outcome("pg", True, "", None, skipped="no PostgreSQL at 127.0.0.1:5432")
    assert run_benchmarks({"pg": fixed(skipped)}, full) == 0
    assert lines(capsys)[0] == "SKIPPED pg: no PostgreSQL at 127.0.0.1:5432"
    slow = Outcome("a", False, "slow", report)
    assert run_benchmarks({"a": fixed(slow), "pg": fixed(skipped)}, full) == 1
    assert [line.split()[0] for line in lines(capsys)[:2]] == ["FAIL", "SKIPPED"]


def test_a_quick_run_is_a_smoke_run_failing_only_on_crashes_and_broken_invariants(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    quick = Options(quick=True, results_dir=tmp_path)
    below = Outcome("a", False, "small N", tmp_path / "a.md")
    assert run_benchmarks({"a": fixed(below)}, quick) == 0
    out = lines(capsys)
    assert out[0].startswith("SMOKE a: small N")
    assert any("not judged against the targets" in line for line in out)

    broken = Outcome("b", True, "", tmp_path / "b.md", broken="12 jobs never finished")
    assert run_benchmarks({"b": fixed(broken)}, quick) == 1
    assert lines(capsys)[0].startswith("BROKEN b: 12 jobs never finished")

    assert run_benchmarks({"c": crash, "a": fixed(below)}, quick) == 1
    captured = capsys.readouterr()
    assert "RuntimeError: the benchmark fell over" in captured.err  # the traceback
    words = [line.split("] ", 1)[1].split()[0] for line in captured.out.splitlines()]
    assert words[:2] == ["CRASHED", "SMOKE"]  # the next benchmark still ran


def test_report_verdicts_inside_a_smoke_run_say_smoke(tmp_path: Path) -> None:
    seen: list[str] = []

    def bench(options: Options) -> Outcome:
        seen.extend([verdict(True), verdict(False)])
        return Outcome("a", True, "", None)

    run_benchmarks({"a": bench}, Options(quick=True, results_dir=tmp_path))
    run_benchmarks({"a": bench}, Options(results_dir=tmp_path))
    assert seen == ["smoke: met", "smoke: missed", "PASS", "FAIL"]
    assert verdict(True) == "PASS"  # outside a run, as before


def test_reports_go_to_the_untracked_folder_unless_recorded() -> None:
    parser = argparse.ArgumentParser()
    _common.add_common_arguments(parser)

    def options(*argv: str) -> Options:
        return _common.options_from(parser.parse_args(list(argv)), parser)

    assert options().results_dir == OUT_DIR
    assert options("--quick").results_dir == OUT_DIR
    assert options("--record").results_dir == RESULTS_DIR
    assert options("--record").record
    assert options("--results-dir", "/tmp/x").results_dir == Path("/tmp/x")
    for argv in (["--record", "--quick"], ["--record", "--results-dir", "/tmp/x"]):
        with pytest.raises(SystemExit) as usage:
            options(*argv)
        assert usage.value.code == 2
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "benchmarks/out/" in ignored


def test_a_missing_bench_extra_is_named_with_the_command_that_installs_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bench_main.BENCH_MODULES, "overhead", {"no_such_peer": "no-such-peer"})
    assert bench_main.main(["--quick", "--only", "overhead"]) == 2
    err = capsys.readouterr().err
    assert "missing: no-such-peer)" in err
    assert ".venv/bin/pip install -e '.[bench]'" in err


@pytest.mark.slow
def test_a_quick_run_of_one_benchmark_in_a_real_process(tmp_path: Path) -> None:
    tracked = sorted((p.name, p.stat().st_mtime_ns) for p in RESULTS_DIR.glob("*.md"))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "head_of_line",
         "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    words = {line.split("] ", 1)[1].split()[0] for line in done.stdout.splitlines()}
    assert "SMOKE" in words
    assert not words & {"PASS", "FAIL"}
    assert "SMOKE head_of_line:" in done.stdout
    report = (tmp_path / "head_of_line.md").read_text(encoding="utf-8")
    assert "smoke (`--quick`" in report
    assert "smoke: met" in report or "smoke: missed" in report
    assert sorted((p.name, p.stat().st_mtime_ns) for p in RESULTS_DIR.glob("*.md")) == tracked


def test_help_says_how_long_runs_take_and_where_reports_go() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "--record" in text
    assert "benchmarks/out/" in text
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    docs = " ".join(" ".join(p.read_text(encoding="utf-8").split()) for p in pages)
    for claim in (_common.FULL_RUN_TIME, _common.QUICK_RUN_TIME):
        assert claim in text
        assert claim in docs  # the README (or a docs page) says the same
