"""A plain-text progress line for long drains: done/total, rate and ETA, on stderr.

On a terminal the line is redrawn in place (``\\r``) at most ten times a second;
otherwise (a log file, CI) one line is written every ``every`` seconds, so
the output stays readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_progress"]

_WIDTH = 24


def format_progress(done: int, total: int, elapsed: float) -> str:
    """``[#####-----]  40/100  12.5 jobs/s  ETA 0:05`` (rate and ETA once measurable)."""
    total = max(total, done)
    filled = _WIDTH if total == 0 else round(_WIDTH * done / total)
    bar = "#" * filled + "-" * (_WIDTH - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    left = total - done
    if left == 0:
        eta = "done"
    elif rate > 0:
        eta = "ETA " + _clock(left / rate)
    else:
        eta = "ETA --:--"
    return f"[{bar}] {done}/{total}  {rate:.1f} jobs/s  {eta}"


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Writes :func:`format_progress` lines to ``stream``, throttled."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._every = 0.1 if self._tty else every
        self._clock = clock
        self._started = clock()
        self._last_write = -float("inf")
        self._last_line = ""

    def update(self, done: int, total: int, *, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._last_write < self._every:
            return
        line = format_progress(done, total, now - self._started)
        if not final and line == self._last_line:
            return
        self._last_write, self._last_line = now, line
        if self._tty:
            self._stream.write("\r" + line + "\x1b[K" + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
