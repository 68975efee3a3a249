"""Floodgate's structured logger: structlog on top of the stdlib logger ``floodgate``.

A library must be quiet until asked, so events go to the standard ``logging``
logger named ``floodgate`` (no handler of ours: nothing is printed below
WARNING unless the application configures logging). The worker process and
applications that use structlog render them with ``structlog.stdlib``'s
``ProcessorFormatter``. Event names are stable API: ``job.admitted``,
``job.shed``, ``job.started``, ``job.finished``, ``job.expired``,
``job.cancelled``, ``scheduler.started``, ``scheduler.draining``,
``scheduler.stopped``, ``gate.paused``, ``gate.resumed``.

Hot paths check :func:`debug_enabled` first, so a quiet logger costs one
cached level lookup per event.
"""

from __future__ import annotations

import logging

import structlog

__all__ = ["LOGGER_NAME", "debug_enabled", "get_logger"]

LOGGER_NAME = "floodgate"
_stdlib = logging.getLogger(LOGGER_NAME)


def get_logger(**initial: object) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to the stdlib ``floodgate`` logger."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        _stdlib,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger.bind(**initial) if initial else logger


def debug_enabled() -> bool:
    """True when ``floodgate`` debug events would be emitted (cheap, cached)."""
    return _stdlib.isEnabledFor(logging.DEBUG)
