"""Shared fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scheduler import FakeClock
from tests.backlog import pg


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Subprocesses started by the test; any still running at the end are killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema (dropped after)."""
    base = pg.dsn_or_skip()
    schema = pg.new_schema()
    await pg.create_schema(base, schema)
    try:
        yield pg.with_settings(base, search_path=schema)
    finally:
        await pg.drop_schema(base, schema)
