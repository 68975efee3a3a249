"""Durable job storage: the :class:`Backlog` protocol and its backends.

The backends subclass :class:`BacklogBase` (``CombinedBacklogBase`` when they can
complete and claim in one transaction): its public methods do the open check,
the argument checks and the :class:`BacklogStats` counters, then call the
backend's ``_``-prefixed primitives (see :mod:`scheduler.backlog._template`).

- :class:`SQLiteBacklog`: one SQLite file in WAL mode (the default).
- :class:`MemoryBacklog`: plain Python, for ``":memory:"`` and tests.
- ``PostgresBacklog`` (:mod:`scheduler.backlog.postgres`): PostgreSQL shared by
  many machines; needs ``pip install 'floodgate[postgres]'`` (asyncpg), so it is
  imported only when a DSN asks for it.

:func:`make_backlog` picks one from the ``backlog=`` string a Scheduler gets.
"""

from __future__ import annotations

from typing import Literal

from ..errors import ConfigError
from ._template import BacklogBase, ClaimArgs, CombinedBacklogBase
from .base import (
    Backlog,
    BacklogFull,
    BacklogLocked,
    BacklogStats,
    BacklogUnavailable,
    JobRecord,
    NewJob,
    Outcome,
    OutcomeKind,
    WaitsForWork,
)
from .memory import MemoryBacklog
from .sqlite import SQLiteBacklog

__all__ = [
    "Backlog",
    "BacklogBase",
    "BacklogFull",
    "BacklogLocked",
    "BacklogStats",
    "BacklogUnavailable",
    "ClaimArgs",
    "CombinedBacklogBase",
    "JobRecord",
    "MemoryBacklog",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "SQLiteBacklog",
    "WaitsForWork",
    "make_backlog",
]


def make_backlog(
    target: str,
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    busy_timeout: float = 5.0,
    batch_max: int = 512,
    inline_writes: bool = True,
) -> Backlog:
    """The backlog for a ``Scheduler(backlog=...)`` string.

    ``":memory:"``: :class:`MemoryBacklog`. ``"postgresql://..."`` or
    ``"postgres://..."``: ``PostgresBacklog`` (``batch_max`` applies; the SQLite
    options do not). Anything else is a SQLite path for :class:`SQLiteBacklog`,
    which takes all the keyword options.

    Raises:
        ConfigError: a DSN was given but asyncpg is not installed.
    """
    if target == ":memory:":
        return MemoryBacklog()
    if target.startswith(("postgres://", "postgresql://")):
        try:
            import asyncpg  # type: ignore[import-untyped]  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "a PostgreSQL backlog needs asyncpg: pip install 'floodgate[postgres]'"
            ) from exc
        from .postgres import PostgresBacklog

        return PostgresBacklog(target, batch_max=batch_max)
    return SQLiteBacklog(
        target,
        synchronous=synchronous,
        busy_timeout=busy_timeout,
        batch_max=batch_max,
        inline_writes=inline_writes,
    )
