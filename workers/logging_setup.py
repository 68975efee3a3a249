"""Log set-up of the ``floodgate`` process (never done by the library).

The library emits structlog events on the stdlib logger ``floodgate`` through
``ProcessorFormatter.wrap_for_formatter``. The process owns its logging, so
one stderr handler on the root logger, with a ``structlog.stdlib.ProcessorFormatter``,
renders them together with plain stdlib records (uvicorn, httpx, the user's
tasks) and structlog events from anywhere in the process: JSON lines when
stderr is not a terminal (collectors parse them), readable colored lines on
one (with control characters in text shown as escapes, so a task name or an
error cannot drive the terminal).
``--log-level`` applies to ``floodgate``; everything else (the user's code,
aiosqlite, asyncio) logs at INFO or above, uvicorn at WARNING or above (its
per-request lines are noise here).

:func:`logging_configured` undoes everything on exit, so running a command
in-process (tests) leaves logging as it found it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import ExcInfo

from .textsafe import printable

__all__ = ["LEVELS", "get_logger", "logging_configured"]

LEVELS = ("debug", "info", "warning", "error")
_LIBRARY = "floodgate"
_QUIET = ("uvicorn", "uvicorn.access", "uvicorn.error")

_TIMESTAMP = structlog.processors.TimeStamper(fmt="iso")


def get_logger(name: str = "floodgate.worker") -> Any:
    """A structlog logger on the stdlib logger ``name`` (below ``floodgate``)."""
    return structlog.stdlib.get_logger(name)


def _escape_text(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Terminal lines: control characters in text values shown as escapes."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = printable(value, multiline=key in ("exception", "stack"))
    return event


def _escaped_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(printable(buffer.getvalue(), multiline=True))


def _formatter(json_lines: bool) -> logging.Formatter:
    renderer: Any
    if json_lines:
        tail: list[Any] = [structlog.processors.format_exc_info]
        renderer = structlog.processors.JSONRenderer()
    else:
        tail = [_escape_text]
        renderer = structlog.dev.ConsoleRenderer(
            colors=True, exception_formatter=_escaped_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, _TIMESTAMP],
        processors=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            renderer,
        ],
    )


@contextlib.contextmanager
def logging_configured(
    level: str = "info", *, stream: TextIO | None = None, json_lines: bool | None = None
) -> Iterator[logging.Handler]:
    """Send the process's logs to ``stream`` (stderr) at ``level``.

    ``json_lines=None`` picks JSON unless the stream is a terminal. structlog's
    own ``get_logger()`` (the worker's, and the user's tasks') goes the same way.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        json_lines = not _isatty(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(json_lines))
    numeric = logging.getLevelName(level.upper())
    was_configured, saved_config = structlog.is_configured(), structlog.get_config()
    root = logging.getLogger()
    levels = {root: max(numeric, logging.INFO), logging.getLogger(_LIBRARY): numeric}
    levels.update((logging.getLogger(n), max(numeric, logging.WARNING)) for n in _QUIET)
    saved = {lg: lg.level for lg in levels}
    root.addHandler(handler)
    for lg, lvl in levels.items():
        lg.setLevel(lvl)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            _TIMESTAMP,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        yield handler
    finally:
        if was_configured:
            structlog.configure(**saved_config)
        else:
            structlog.reset_defaults()
        root.removeHandler(handler)
        for lg, old_level in saved.items():
            lg.setLevel(old_level)
        handler.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
