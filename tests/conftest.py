"""Shared fixtures, and the skip summary: one line per reason, not one per test."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler import FakeClock
from tests.admin_fixtures import busy_scheduler
from tests.backlog import pg

#: the browsers the dashboard tests drive headless, first found on PATH wins
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


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


@pytest.fixture
def busy_db(tmp_path: Path) -> Path:
    """A backlog with 2 dead ``t.fail`` jobs and 3 queued ``t.ok`` jobs."""
    db = tmp_path / "busy.db"

    async def fill() -> None:
        async with busy_scheduler(db):
            pass

    asyncio.run(fill())
    return db


def find_chromium() -> str | None:
    """The first of ``CHROMIUM_NAMES`` on PATH."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@pytest.fixture
def chromium() -> str:
    """A headless-capable Chromium on PATH; the test is skipped without one (failed
    instead when ``CI`` is set)."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("CI is set but no Chromium is on PATH: apt-get install -y chromium")
        pytest.skip(f"no Chromium on PATH ({', '.join(CHROMIUM_NAMES)}): apt-get install chromium")
    return path


# ---------------------------------------------------------------- skip summary


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest's own summary lists skips per test location; ours groups them by reason."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and hasattr(reporter, "reportchars"):
        reporter.reportchars = reporter.reportchars.replace("s", "")


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    if not skipped:
        return
    reasons = Counter(skip_reason(r) for r in skipped)
    terminalreporter.section("skipped, by reason")
    for reason, count in reasons.most_common():
        terminalreporter.line(f"SKIPPED {count} test{'s' if count != 1 else ''}: {reason}")
