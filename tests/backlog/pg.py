"""PostgreSQL helpers for the tests: the DSN, throwaway schemas, raw SQL behind the backlog.

The PostgreSQL tests use the server ``FLOODGATE_TEST_POSTGRES_DSN`` names, else
``postgresql://postgres@127.0.0.1:5432/test`` when it answers (one quick
connection, once per test session); without either they are skipped, all with
one reason. Each test gets its own schema ``floodgate_test_<random>``, dropped
afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

T = TypeVar("T")

DSN_ENV = "FLOODGATE_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PROBE_TIMEOUT = 2.0  # seconds for the one connection that looks for the default server

_found: tuple[str | None, str] | None = None


def find_dsn() -> tuple[str | None, str]:
    """``(dsn, "")``, or ``(None, why the PostgreSQL tests are skipped)``; looked up once.

    ``$FLOODGATE_TEST_POSTGRES_DSN`` is used as given (a server it names but that does not
    answer fails the tests: CI sets it); otherwise the local default is tried once."""
    global _found
    if _found is None:
        _found = _find()
    return _found


def _find() -> tuple[str | None, str]:
    dsn = os.environ.get(DSN_ENV, "")
    if dsn:
        return dsn, ""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        return None, "PostgreSQL tests need asyncpg (pip install -e '.[dev]')"

    async def probe() -> None:
        conn = await asyncpg.connect(DEFAULT_DSN, timeout=PROBE_TIMEOUT)
        await conn.close()

    try:
        run_blocking(probe)
    except Exception as exc:
        return None, (
            f"no PostgreSQL at {DEFAULT_DSN} ({type(exc).__name__}); "
            f"set {DSN_ENV} to use another server"
        )
    return DEFAULT_DSN, ""


def dsn_or_skip() -> str:
    dsn, why = find_dsn()
    if dsn is None:
        pytest.skip(why)
    return dsn


def new_schema() -> str:
    return f"floodgate_test_{uuid.uuid4().hex[:12]}"


def with_settings(dsn: str, **settings: str) -> str:
    """``dsn`` with server settings (``search_path``, ``application_name``) in its query."""
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, urlencode(settings)) if q)
    return urlunsplit(parts._replace(query=query))


async def execute(dsn: str, query: str, *params: Any) -> list[Any]:
    """Run one statement on a fresh connection (not through any backlog)."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *params))
    finally:
        await conn.close()


async def create_schema(dsn: str, schema: str) -> None:
    await execute(dsn, f'CREATE SCHEMA IF NOT EXISTS "{_checked(schema)}"')


async def drop_schema(dsn: str, schema: str) -> None:
    await execute(dsn, f'DROP SCHEMA IF EXISTS "{_checked(schema)}" CASCADE')


def _checked(schema: str) -> str:
    """Only our own throwaway names reach SQL text."""
    if not re.fullmatch(r"floodgate_test_[0-9a-f]{12}", schema):
        raise ValueError(f"not a test schema name: {schema!r}")
    return schema


async def terminate(dsn: str, application_name: str) -> int:
    """``pg_terminate_backend`` every connection of ``application_name``; how many."""
    rows = await execute(
        dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND pid <> pg_backend_pid()",
        application_name,
    )
    return int(rows[0][0])


def run_blocking(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from sync code called inside a running loop (own thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(_wrap(make))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def _wrap(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
