"""Helpers for tests that run ``python -m workers`` as a real subprocess.

A reader task drains the child's stderr as it comes (JSON log lines, parsed
when they parse), so the child never blocks on a full pipe and a test can
wait for an event without sleeping more than a few ms at a time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A ``python -m workers ...`` child with its stderr collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._read(proc.stderr))

    @classmethod
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers",
            *args,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                self.events.append(event)
            self._changed.set()
        self._changed.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first log event called ``name`` (fails if the process ends first)."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event.get("event") == name:
                        return event
                if self._reader.done():
                    raise AssertionError(f"worker ended before {name!r}:\n{self.stderr}")
                self._changed.clear()
                await self._changed.wait()

    async def wait(self, timeout: float = 20.0) -> int:
        """The exit code, once the process and its stderr are done."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def run_log(path: Path) -> list[tuple[str, ...]]:
    """The ``start``/``end`` lines the test tasks wrote, split into fields."""
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def starts(path: Path) -> collections.Counter[str]:
    return collections.Counter(f[1] for f in run_log(path) if f[0] == "start")


def ends(path: Path) -> collections.Counter[str]:
    return collections.Counter(f[1] for f in run_log(path) if f[0] == "end")
