"""Durable job storage: the :class:`Backlog` protocol and its backends.

- :class:`SQLiteBacklog`: one SQLite file in WAL mode (the default).
- :class:`MemoryBacklog`: plain Python, for ``":memory:"`` and tests.

:func:`make_backlog` picks one from the ``backlog=`` string a Scheduler gets.
"""

from __future__ import annotations

from typing import Literal

from ..errors import ConfigError
from .base import Backlog, BacklogFull, BacklogLocked, JobRecord, NewJob, Outcome, OutcomeKind
from .memory import MemoryBacklog
from .sqlite import SQLiteBacklog

__all__ = [
    "Backlog",
    "BacklogFull",
    "BacklogLocked",
    "JobRecord",
    "MemoryBacklog",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "SQLiteBacklog",
    "make_backlog",
]


def make_backlog(
    target: str,
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    busy_timeout: float = 5.0,
    batch_max: int = 512,
) -> Backlog:
    """The backlog for a ``Scheduler(backlog=...)`` string: ``":memory:"`` or a SQLite path.

    The keyword options go to :class:`SQLiteBacklog` (the memory backlog needs
    none). PostgreSQL DSNs are not supported yet and raise ``ConfigError``.
    """
    if target == ":memory:":
        return MemoryBacklog()
    if target.startswith(("postgres://", "postgresql://")):
        raise ConfigError("the PostgreSQL backlog is not implemented yet")
    return SQLiteBacklog(
        target, synchronous=synchronous, busy_timeout=busy_timeout, batch_max=batch_max
    )
