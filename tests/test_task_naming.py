"""Task names agree across processes: ``python -m app``, an importing test, nested tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import ConfigError, Scheduler

REPO = Path(__file__).resolve().parent.parent


def test_main_module_name_is_resolved_through_its_spec() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.procs.naming"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    from tests.procs import naming

    assert out == naming.summarize.name == "tests.procs.naming.summarize"


def test_tasks_defined_inside_functions_and_explicit_names() -> None:
    sched = Scheduler(":memory:")

    @sched.task
    async def inner() -> None:
        return None

    @sched.task(name="reports.build")
    async def build() -> None:
        return None

    assert inner.name.endswith(
        "test_tasks_defined_inside_functions_and_explicit_names.<locals>.inner"
    )
    assert build.name == "reports.build"
    assert set(sched.tasks) == {inner.name, "reports.build"}

    async def impostor() -> None:
        return None

    with pytest.raises(ConfigError, match="already registered"):
        sched.task(name="reports.build")(impostor)
