"""The test suite itself on a fresh machine: it finds PostgreSQL and Chromium without
environment variables, and reports what it skipped in one line per reason."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest
from tests.backlog import pg

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_postgres_is_looked_for_at_the_local_default_without_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(pg.DSN_ENV, raising=False)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    monkeypatch.setattr(pg, "DEFAULT_DSN", nowhere)
    dsn, why = pg._find()
    assert dsn is None
    assert why == (
        f"no PostgreSQL at {nowhere} (ConnectionRefusedError); set {pg.DSN_ENV} to use another "
        "server"
    )


def test_the_variable_is_used_as_given_without_a_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg.DSN_ENV, "postgresql://ci@db.invalid:5432/test")
    assert pg._find() == ("postgresql://ci@db.invalid:5432/test", "")


def test_chromium_is_found_on_path_under_its_other_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = tmp_path / "chromium-browser"
    browser.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    browser.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert conftest.find_chromium() == str(browser)
    browser.unlink()
    assert conftest.find_chromium() is None


SKIPPING = """
import pytest

@pytest.mark.parametrize("n", range(3))
def test_needs_a_server(n):
    pytest.skip("no server here")

@pytest.mark.skipif(True, reason="not on this platform")
def test_platform():
    pass

def test_needs_another():
    pytest.skip("no server here")

def test_runs():
    assert True
"""


def test_skips_are_summarised_one_line_per_reason(tmp_path: Path) -> None:
    tests = tmp_path / "test_skipping.py"
    tests.write_text(SKIPPING, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c",
         str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), "-p", "no:cacheprovider",
         str(tests)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "SKIPPED 4 tests: no server here" in out
    assert "SKIPPED 1 test: not on this platform" in out
    assert sum("SKIPPED" in line for line in out.splitlines()) == 2
    assert "1 passed, 5 skipped" in out


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of every ```sh block (a line ending in a backslash goes on)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line.strip() == "```sh":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None and line.strip():
            if current and current[-1].endswith("\\"):
                current[-1] = current[-1][:-1] + line.strip()
            else:
                current.append(line.strip())
    return blocks


def test_readme_commands_run_as_written_after_its_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = sh_blocks(readme)
    set_up = [b[0] for b in blocks if len(b) == 1 and b[0].startswith("python3 -m venv .venv")]
    assert len(set_up) == 2, set_up  # one runs the drill, one the tests
    drill, tests = set_up
    assert drill.endswith(".venv/bin/floodgate drill")
    assert tests == (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && "
        ".venv/bin/python -m pytest -q"
    )
    for line in (line for block in blocks for line in block):
        first = line.split()[0]
        assert first in ("python3", "export", "curl") or first.startswith(".venv/bin/"), line
    assert "install 'floodgate[" not in readme  # nothing from a package index


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-m pip install --quiet -e '.[dev]'" in ci
    assert ci.rstrip().endswith('"$VENV/bin/python" -m pytest -q')
