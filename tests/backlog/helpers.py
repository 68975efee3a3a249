"""Small builders shared by the backlog tests."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.backlog import NewJob


def new_job(
    *args: Any,
    lane: str = "batch",
    task: str = "tests.work",
    priority: float = 0.0,
    run_at: float = 0.0,
    key: str | None = None,
    max_attempts: int = 3,
    deadline_at: float | None = None,
) -> NewJob:
    """A NewJob whose positional args are ``args`` (JSON-encoded here)."""
    return NewJob(
        task=task,
        lane=lane,
        args_json=json.dumps(list(args)),
        priority=priority,
        run_at=run_at,
        key=key,
        max_attempts=max_attempts,
        deadline_at=deadline_at,
    )


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the backlog file, in autocommit mode (another
    process's view of it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()
