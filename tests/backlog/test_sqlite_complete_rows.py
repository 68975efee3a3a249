"""``complete_statements``: outcomes are written by one ``UPDATE ... FROM (VALUES ...)``
per 2**k of them. Whatever the outcomes (stale owners, wrong attempts, cancels
requested, unknown or repeated jobs), the table and the count of outcomes applied
must be exactly what ``executemany`` of the one-row ``COMPLETE`` gives."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backlog import Outcome
from scheduler.backlog import _sqlite_ops as ops
from scheduler.backlog import _sqlite_schema as sql
from scheduler.backlog.sqlite import _outcome_rows, complete_statements, run_statements

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JOBS = 12
NOW = 50.0

#: each stored job: its state, lease owner, attempts and whether a cancel was requested
ROWS = st.lists(
    st.tuples(
        st.sampled_from(["running", "running", "running", "queued", "done"]),
        st.sampled_from(["o1", "o1", "o2"]),
        st.sampled_from([1, 2]),
        st.booleans(),
    ),
    min_size=JOBS,
    max_size=JOBS,
)
#: one outcome: which job (index JOBS: one never stored), kind, owner, attempt
OUTCOMES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=JOBS),
        st.sampled_from(["done", "retry", "dead", "cancelled"]),
        st.sampled_from(["o1", "o1", "o2"]),
        st.sampled_from([None, 1, 1, 2]),
    ),
    max_size=80,
)


def _outcome(job: int, kind: str, owner: str, attempt: int | None) -> Outcome:
    job_id = f"job-{job:02d}"
    if kind == "done":
        return Outcome.done(job_id, owner, f'{{"n": {job}}}', attempt=attempt)
    if kind == "retry":
        return Outcome.retry(job_id, owner, run_at=90.0 + job, error="boom", attempt=attempt)
    if kind == "dead":
        return Outcome.dead(job_id, owner, error="dead", traceback="tb", attempt=attempt)
    return Outcome.cancelled(job_id, owner, attempt=attempt)


def _apply(path: Path, rows: list[tuple[Any, ...]], write: Any) -> tuple[int, list[Any]]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        ops.migrate(db, str(path))
        for i, (state, owner, attempts, cancel) in enumerate(rows):
            db.execute(
                "INSERT INTO jobs (id, task, lane, args, priority, state, attempts, max_attempts,"
                " run_at, created_at, updated_at, lease_owner, lease_until, cancel_requested_at)"
                " VALUES (?, 't', 'batch', '[]', 0, ?, ?, 3, 1.0, 1.0, 1.0, ?, 99.0, ?)",
                (f"job-{i:02d}", state, attempts, owner, 5.0 if cancel else None),
            )
        db.execute("BEGIN IMMEDIATE")
        applied = write(db)
        db.execute("COMMIT")
        return applied, db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


@PROPERTY
@given(ROWS, OUTCOMES)
def test_outcomes_are_written_as_complete_one_by_one_writes_them(
    rows: list[tuple[Any, ...]], spec: list[tuple[Any, ...]]
) -> None:
    outcomes = [_outcome(*o) for o in spec]
    with tempfile.TemporaryDirectory() as directory:
        expected = _apply(
            Path(directory) / "a.db",
            rows,
            lambda db: db.executemany(sql.COMPLETE, _outcome_rows(outcomes, NOW)).rowcount,
        )
        got = _apply(
            Path(directory) / "b.db",
            rows,
            lambda db: run_statements(db, complete_statements(outcomes, NOW)),
        )
    assert got == expected  # the count applied, and every column of every row


def test_distinct_jobs_take_one_statement_per_power_of_two() -> None:
    outcomes = [Outcome.done(f"job-{i:02d}", "o1") for i in range(11)]
    statements = complete_statements(outcomes, NOW)
    assert [len(params) for _, params, many in statements] == [1 + 8 * 8, 1 + 2 * 8, 1 + 8]
    assert not any(many for _, _, many in statements)
    repeated = complete_statements([*outcomes, outcomes[0]], NOW)
    assert [(query, many) for query, _, many in repeated] == [(sql.COMPLETE, True)]


def test_complete_rows_refuses_a_size_it_does_not_make() -> None:
    for n in (0, sql.COMPLETE_ROWS_MAX + 1):
        with pytest.raises(ValueError, match="complete_rows takes"):
            sql.complete_rows(n)
