"""Opening a SQLite backlog read-only (``SQLiteBacklog(path, read_only=True)``).

For the commands that only look (``floodgate status``, ``jobs list``, ``jobs
show``): the file is opened with ``mode=ro``, so nothing is created, migrated
or switched to WAL, and it works on a file (and in a directory) this process
may not write. A backlog in WAL mode with no ``-wal`` file beside it has every
commit in the main file (no connection has it open); it is then read with
``immutable=1``, which needs no ``-shm``/``-wal`` files either (a writer that
starts during that read may give one stale or failed read, never a write).
With a ``-wal`` file present (a worker has it open), the WAL is read as usual.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from urllib.parse import quote

import aiosqlite

from ..errors import BacklogError
from . import _sqlite_schema as sql
from ._sqlite_ops import rows

__all__ = ["open_read_only"]

_HEADER = b"SQLite format 3\x00"


def _in_wal_mode(path: str) -> bool:
    """Whether the file's header says WAL (byte 18, the write version, is 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False  # let SQLite say what is wrong
    return header.startswith(_HEADER) and len(header) == 20 and header[18] == 2


def read_only_uri(path: str) -> str:
    """The ``file:`` URI that opens ``path`` read-only (immutable when safe, see above)."""
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    if _in_wal_mode(path) and not os.path.exists(path + "-wal"):
        uri += "&immutable=1"
    return uri


def _probe(path: str, busy_timeout: float) -> str:
    """The URI to open, once plain sqlite3 could open it (a failing aiosqlite
    connect leaves its thread behind)."""
    if not os.path.exists(path):
        raise BacklogError(f"no backlog at {path!r} (a read-only open creates none)")
    uri = read_only_uri(path)
    sqlite3.connect(uri, uri=True, timeout=busy_timeout).close()
    return uri


async def open_read_only(path: str, busy_timeout: float) -> aiosqlite.Connection:
    """A read-only connection to the backlog at ``path``; ``BacklogError`` if it is
    missing, not a database, or not at this Floodgate's schema version."""
    try:
        uri = await asyncio.to_thread(_probe, path, busy_timeout)
        db = await aiosqlite.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise sql.translate_error(exc, path, busy_timeout) from exc
    try:
        version = int(rows(await db.execute_fetchall("PRAGMA user_version"))[0][0])
    except sqlite3.Error as exc:
        await db.close()
        raise sql.translate_error(exc, path, busy_timeout) from exc
    except BaseException:
        await db.close()
        raise
    if version != sql.SCHEMA_VERSION:
        await db.close()
        raise BacklogError(_schema_problem(path, version))
    return db


def _schema_problem(path: str, version: int) -> str:
    if version == 0:
        return f"{path!r} is not a Floodgate backlog (empty, or schema version 0)"
    if version > sql.SCHEMA_VERSION:
        return (
            f"backlog {path!r} has schema version {version}, newer than this Floodgate "
            f"knows ({sql.SCHEMA_VERSION}); upgrade Floodgate to read it"
        )
    return (
        f"backlog {path!r} has schema version {version}, older than this Floodgate's "
        f"({sql.SCHEMA_VERSION}); a read-only open does not migrate it: run "
        "'floodgate worker' (or any writable open) on it once"
    )
