"""Helpers for testing code that uses Floodgate (and Floodgate itself).

- :class:`FakeClock`: time stands still until the test moves it; pass it as
  ``Scheduler(..., clock=clock)``.
- :func:`wait_all_tasks_blocked`: let every task run until it waits on
  something, without sleeping. The tool for in-process, fake-clock tests.
- :func:`eventually`: poll a condition in real time, bounded. The tool for
  real I/O: a SQLite or PostgreSQL backlog, a subprocess, an HTTP server.
"""

from __future__ import annotations

import asyncio
import inspect
import linecache
import time
import types
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from ._quiet import wait_all_tasks_blocked
from .clock import FakeClock

__all__ = ["FakeClock", "eventually", "wait_all_tasks_blocked"]

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...
async def eventually(
    check: Callable[[], object],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str | None = None,
) -> object:
    """Poll ``check()`` until it returns something truthy, and return that.

    ``check`` is a plain or an async function. Between calls the test sleeps
    ``interval`` real seconds: this is for outcomes that arrive through real
    I/O (a thread, a database, another process), which
    ``wait_all_tasks_blocked()`` cannot see. Exceptions from ``check``
    propagate at once.

    Args:
        check: the condition; called at least once, and once more at the end.
        timeout: real seconds before giving up.
        interval: real seconds between calls.
        what: the condition in words, for the failure ("waiting until
            {what}"); by default the lambda's source text or the function's name.

    Raises:
        AssertionError: ``check()`` was still falsy after ``timeout`` seconds;
            the message names the condition, the time and the last result.
    """
    deadline = time.monotonic() + timeout
    calls = 0
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        calls += 1
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    raise AssertionError(
        f"timed out after {timeout:g} s waiting until {what or _describe(check)} "
        f"({calls} checks; the last returned {result!r})"
    )


def _describe(check: Callable[[], object]) -> str:
    """A lambda's source text, in backquotes; else the function's name."""
    qualname = getattr(check, "__qualname__", None)
    code = getattr(check, "__code__", None)
    if not isinstance(qualname, str) or not isinstance(code, types.CodeType):
        return repr(check)
    name = qualname.rpartition("<locals>.")[2]
    if name != "<lambda>":
        return f"{name}()"
    spans = [
        (line, end_line, col, end_col)
        for line, end_line, col, end_col in code.co_positions()
        if line is not None and end_line is not None and col is not None and end_col
    ]  # the lambda's body; (line, line, 0, 0) marks the code around it
    lines = linecache.getlines(code.co_filename)
    if not spans or not lines:
        return name
    first, start = min((span[0], span[2]) for span in spans)
    last, end = max((span[1], span[3]) for span in spans)
    text = [line.encode() for line in lines[first - 1 : last]]  # columns count bytes
    if len(text) != last - first + 1:  # the file changed since it was imported
        return name
    if len(text) == 1:
        raw = text[0][start:end]
    else:
        raw = text[0][start:] + b"".join(text[1:-1]) + text[-1][:end]
    body = " ".join(raw.decode(errors="replace").split())
    return f"`{body}`" if body else name
