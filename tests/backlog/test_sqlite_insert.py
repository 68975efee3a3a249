"""The SQLite backlog's insert: runs of alike jobs go in as one JSON array
(``INSERT_RUN``), the rest row by row; either way every job is stored as given,
in order, its ``args`` text byte for byte."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backlog import JobRecord, NewJob, SQLiteBacklog
from scheduler.backlog import _sqlite_ops as ops
from scheduler.backlog.base import new_job_ids

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: JSON values with what JSON text must escape, non-ASCII and big numbers
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from(['"', "\\", "\x00", "\n", "é", "🙂", "a", "["])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
#: one job: its args, key (mostly none, so runs form), priority and lane
JOBS = st.lists(
    st.tuples(
        st.lists(VALUES, max_size=3),
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["k1", "k2", "k3"])),
        st.sampled_from([0.0, 0.0, 0.0, 1.5]),
        st.sampled_from(["batch", "batch", "batch", "other"]),
    ),
    max_size=40,
)


def _new(args: list[Any], key: str | None, priority: float, lane: str) -> NewJob:
    # ensure_ascii=False: text that is not the submitter's encoder's, stored as given
    text = json.dumps(args, ensure_ascii=False)
    return NewJob(task="t", lane=lane, args_json=text, priority=priority, run_at=0.0, key=key)


def _stored(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, args, priority, lane, key, state FROM jobs ORDER BY seq")\
            .fetchall()  # fmt: skip


def _submit_all(calls: list[list[NewJob]]) -> tuple[list[list[JobRecord]], list[tuple[Any, ...]]]:
    """Submit ``calls`` at once (one group commit); the records and the rows stored."""

    async def main(path: Path) -> list[list[JobRecord]]:
        async with SQLiteBacklog(path) as backlog:
            return list(await asyncio.gather(*(backlog.submit(c, now=1.0) for c in calls)))

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "b.db"
        records = asyncio.run(main(path))
        return records, _stored(path)


@PROPERTY
@given(JOBS, st.integers(min_value=1, max_value=4))
def test_every_job_is_stored_as_given_in_order(spec: list[Any], calls: int) -> None:
    jobs = [_new(*job) for job in spec]
    split = [jobs[i::calls] for i in range(calls)]  # interleaved: calls alike and not
    records, rows = _submit_all(split)
    # a key seen before gives back the first job with it; each other job is a new row
    first: dict[str, JobRecord] = {}
    expected: list[tuple[Any, ...]] = []
    for call, got in zip(split, records, strict=True):
        assert len(got) == len(call)
        for job, record in zip(call, got, strict=True):
            if job.key is not None and job.key in first:
                assert record == first[job.key]
                continue
            if job.key is not None:
                first[job.key] = record
            assert record.args == json.loads(job.args_json)
            expected.append((record.id, job.args_json, job.priority, job.lane, job.key, "queued"))
    assert rows == expected  # the args text byte for byte, in submit order


def _row(args: str, priority: float = 0.0, key: str | None = None) -> tuple[Any, ...]:
    """``sql.INSERT``'s parameters for a fresh job of task ``t`` in ``batch``."""
    return (new_job_ids(1)[0], "t", "batch", args, priority, "queued", 3, 0.0, 1.0, 1.0, key,
            None, None, priority, None, None)  # fmt: skip


def test_a_run_and_single_rows_keep_their_order(tmp_path: Path) -> None:
    """Alike rows (one INSERT_RUN) between rows that differ (executemany), on one
    plain connection: the stored order is the given order."""
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    ops.migrate(conn, "b.db")

    rows = [_row("[0]", 1.0), _row("[1]", 2.0)]
    rows += [_row(f"[{i}]") for i in range(2, 8)]  # a run of six
    rows += [_row("[8]", key="k"), _row("[9]"), _row("[10]"), _row("[11]", 3.0)]
    conn.execute("BEGIN IMMEDIATE")
    ops._insert_rows(conn, rows)
    conn.execute("COMMIT")
    stored = conn.execute("SELECT id, args, priority, key FROM jobs ORDER BY seq").fetchall()
    assert stored == [(r[0], r[3], r[4], r[10]) for r in rows]


def test_text_that_is_not_ascii_is_stored_as_bound(tmp_path: Path) -> None:
    """Args text with characters beyond ASCII (a caller's own encoder) is bound row by
    row, stored as given; a lone surrogate is refused as before, storing nothing."""
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    ops.migrate(conn, "b.db")

    rows = [_row('["é"]'), *(_row(f'["{i}🙂"]') for i in range(5)), _row("[1]")]
    conn.execute("BEGIN IMMEDIATE")
    ops._insert_rows(conn, rows)
    conn.execute("COMMIT")
    assert [r[0] for r in conn.execute("SELECT args FROM jobs ORDER BY seq")] == [
        r[3] for r in rows
    ]
    bad = [_row(f"[{i}]") for i in range(5)] + [_row('["' + chr(0xD800) + '"]')]
    conn.execute("BEGIN IMMEDIATE")
    try:
        ops._insert_rows(conn, bad)
    except UnicodeEncodeError:
        conn.execute("ROLLBACK")
    else:
        raise AssertionError("a lone surrogate was stored")
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (len(rows),)


def test_new_job_ids_are_fresh_time_ordered_hex() -> None:
    ids = new_job_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    later = new_job_ids(1)[0]
    assert later[:12] >= ids[-1][:12]  # the millisecond prefix never goes back
