"""``_insert_alike``: rows of concurrent submits go in as multi-row ``INSERT``s
(``sql.insert_rows``), the columns they share bound once. Whatever the rows, the
table must end up exactly as ``executemany`` of the one-row ``INSERT`` leaves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backlog import _sqlite_ops as ops
from scheduler.backlog import _sqlite_schema as sql

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: each column from a few values, so stretches of alike rows form and break
ROW = st.tuples(
    st.sampled_from(["t", "t", "t", "u"]),  # task
    st.sampled_from(["batch", "batch", "batch", "other"]),  # lane
    st.sampled_from(["[1]", '["é🙂"]', '[{"a": null}]', "[]"]),  # args text, as given
    st.sampled_from([0.0, 0.0, 0.0, -2.5]),  # priority
    st.sampled_from([3, 3, 3, 1]),  # max_attempts
    st.floats(min_value=0, max_value=2e9, allow_nan=False),  # run_at
    st.floats(min_value=0, max_value=2e9, allow_nan=False),  # now
    st.one_of(st.none(), st.none(), st.text(min_size=1, max_size=4)),  # key
    st.one_of(st.none(), st.none(), st.floats(min_value=0, max_value=2e9)),  # deadline_at
    st.one_of(st.none(), st.none(), st.sampled_from([0.0, 12.5])),  # cost
    st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)),  # rank
    st.one_of(st.none(), st.none(), st.sampled_from(["acme", "zed"])),  # tenant
    st.one_of(st.none(), st.none(), st.just('{"traceparent": "00-1-2-01"}')),  # trace
)


def _params(spec: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``sql.INSERT``'s parameters, one tuple per row (unique ids and keys)."""
    rows = []
    for i, (task, lane, args, prio, attempts, run_at, now, key, deadline, cost, rank, tenant,
            trace) in enumerate(spec):  # fmt: skip
        key = None if key is None else f"{key}-{i}"
        rows.append(
            (f"id-{i:04d}", task, lane, args, prio, "queued", attempts, run_at, now, now, key,
             deadline, cost, rank, tenant, trace)
        )  # fmt: skip
    return rows


def _table(path: Path, insert: Any, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        ops.migrate(db, str(path))
        db.execute("BEGIN IMMEDIATE")
        insert(db, rows)
        db.execute("COMMIT")
        return db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
    finally:
        db.close()


def _one_by_one(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    db.executemany(sql.INSERT, rows)


@PROPERTY
@given(st.lists(ROW, max_size=150))
def test_rows_are_stored_as_executemany_would_store_them(spec: list[tuple[Any, ...]]) -> None:
    import tempfile

    rows = _params(spec)
    with tempfile.TemporaryDirectory() as directory:
        expected = _table(Path(directory) / "a.db", _one_by_one, rows)
        got = _table(Path(directory) / "b.db", ops._insert_alike, rows)
    assert got == expected  # every column, every row, in order (seq included)


def test_a_full_group_commit_takes_a_few_statements_not_one_per_row(tmp_path: Path) -> None:
    rows = _params([("t", "batch", "[1]", 0.0, 3, float(i), float(i), None, None, None, None,
                     None, None) for i in range(100)])  # fmt: skip
    db = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    ops.migrate(db, str(tmp_path / "b.db"))
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    db.execute("BEGIN IMMEDIATE")
    ops._insert_alike(db, rows)
    db.execute("COMMIT")
    db.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 3  # 64 + 32 + 4 rows
    assert db.execute("SELECT COUNT(*), MIN(run_at), MAX(run_at) FROM jobs").fetchone() == (
        100, 0.0, 99.0,
    )  # fmt: skip
    db.close()


def test_insert_rows_refuses_a_size_it_does_not_make() -> None:
    for n in (0, sql.INSERT_ROWS_MAX + 1):
        with pytest.raises(ValueError, match="insert_rows takes"):
            sql.insert_rows(n)
    assert sql.insert_rows(3).count("(?") == 3
