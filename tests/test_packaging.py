"""What the library needs installed, and what only the worker does (``floodgate[worker]``)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_importing_the_library_does_not_import_uvicorn() -> None:
    done = run_python(
        "import sys, scheduler, scheduler.asgi, scheduler.testing; "
        "assert 'uvicorn' not in sys.modules, 'uvicorn was imported'"
    )
    assert done.returncode == 0, done.stderr


def test_the_command_line_without_uvicorn_says_which_extra_to_install() -> None:
    done = run_python("import sys; sys.modules['uvicorn'] = None; import workers.cli")
    assert done.returncode == 1
    assert "pip install 'floodgate[worker]'" in done.stderr.splitlines()[-1]


def test_uvicorn_is_an_extra_that_every_extra_running_the_cli_brings() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("uvicorn") for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(dep.startswith("uvicorn") for dep in extras["worker"])

    def brings_worker(name: str) -> bool:
        for dep in extras[name]:
            if dep.startswith("floodgate["):
                inner = dep.removeprefix("floodgate[").removesuffix("]").split(",")
                if "worker" in inner or any(brings_worker(extra) for extra in inner):
                    return True
        return False

    for extra in ("drill", "examples", "test", "bench", "dev"):
        assert brings_worker(extra), extra
