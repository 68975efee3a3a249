"""The durable tenants benchmarks (``tenants_durable``, ``tenants_postgres``) run end to
end at tiny sizes and report every figure; no wall-clock assertions."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import postgres as postgres_bench
from benchmarks import tenants_durable, tenants_postgres
from benchmarks._common import Options, run_benchmarks, status
from benchmarks.tenants_durable import Sizes
from tests.backlog import pg

TINY = Sizes(flood=120, cost_jobs=40, repeats=1)

FIGURES = (
    "the nine alone (90 jobs)",
    "the nine behind 120 of tenant `big`, with `tenant=`",
    "... as a multiple of alone",
    "the same without `tenant=` (one FIFO queue; first repetition only)",
    "drain, per job, no tenants",
    "drain, per job, 10 tenants",
    "drain, per job, 1,000 tenants",
    "**fairness's cost per job, 10 tenants**",
    "**fairness's cost per job, 1,000 tenants**",
)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenants_durable, "QUICK", TINY)
    monkeypatch.setattr(tenants_durable, "ROUNDS", 1)


def run_smoke(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``name`` run as ``python -m benchmarks --quick --only name`` runs it: its report."""
    run = bench_main.load([name])
    assert run_benchmarks(run, Options(quick=True, results_dir=tmp_path)) == 0  # not BROKEN
    out = capsys.readouterr().out
    assert f"SMOKE {name}: the nine behind 120: " in out
    assert "fairness costs" in out
    return (tmp_path / f"{name}.md").read_text(encoding="utf-8")


def check_report(text: str, backend: str) -> None:
    assert f"({backend})" in text.splitlines()[0]
    assert "smoke (`--quick`" in text
    for figure in FIGURES:
        assert figure in text
    # the 2x target's verdict, as a smoke run says it (whichever it is: no timing asserted)
    assert "| <= 2x | smoke: met |" in text or "| <= 2x | smoke: missed |" in text


@pytest.mark.usefixtures("tiny")
def test_the_sqlite_benchmark_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = run_smoke("tenants_durable", tmp_path, capsys)
    check_report(text, "SQLite")
    assert "`Scheduler(path)`" in text


@pytest.mark.usefixtures("tiny")
def test_the_postgres_benchmark_reports_every_figure_and_drops_its_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = pg.dsn_or_skip()
    made: list[str] = []

    def schema_name() -> str:
        made.append(postgres_bench._schema_name())
        return made[-1]

    monkeypatch.setattr(tenants_postgres, "_schema_name", schema_name)
    check_report(run_smoke("tenants_postgres", tmp_path, capsys), "PostgreSQL")
    assert len(made) == 6  # a fresh schema per run: alone, the flood twice, three drains
    left = pg.run_blocking(
        lambda: pg.execute(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)", made)
    )
    assert left[0][0] == 0


def test_without_a_server_the_postgres_benchmark_is_skipped_not_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        tenants_postgres, "postgres_dsn", lambda: (None, "no PostgreSQL at 127.0.0.1:5432")
    )
    options = Options(results_dir=tmp_path)
    outcome = tenants_postgres.run(options)
    assert status(outcome, options) == "SKIPPED"
    assert outcome.report is None
    assert not list(tmp_path.iterdir())


def test_both_are_registered_with_the_runner() -> None:
    assert {"tenants_durable", "tenants_postgres"} <= set(bench_main.BENCHMARKS)
    runs = bench_main.load(["tenants_durable", "tenants_postgres"])
    assert runs == {
        "tenants_durable": tenants_durable.run,
        "tenants_postgres": tenants_postgres.run,
    }
