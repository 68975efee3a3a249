"""The worker's log set-up: JSON lines off a terminal, colored lines on one, levels, undo."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from scheduler import HealthGate
from workers.logging_setup import get_logger, logging_configured


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_library_and_worker_events_become_json_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with logging_configured("info", stream=out):
        HealthGate().pause("maintenance")  # the library's own event
        get_logger().info("worker.ready", lanes=["batch"])
        logging.getLogger("uvicorn.error").info("uvicorn chatter is held back")
        logging.getLogger("some.lib").warning("plain %s record", "stdlib")
        structlog.get_logger("myapp").info("user.event", n=1)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    by_name = {e["event"]: e for e in events}
    assert by_name["gate.paused"]["reason"] == "maintenance"
    assert by_name["gate.paused"]["logger"] == "floodgate"
    assert by_name["gate.paused"]["level"] == "info"
    assert "timestamp" in by_name["gate.paused"]
    assert by_name["worker.ready"]["logger"] == "floodgate.worker"
    assert by_name["plain stdlib record"]["level"] == "warning"
    assert by_name["user.event"]["n"] == 1
    assert not any("uvicorn" in e["event"] for e in events)


def test_a_terminal_gets_colored_readable_lines() -> None:
    out = FakeTerminal()
    with logging_configured("info", stream=out):
        get_logger().info("worker.ready", lanes=["batch"])
    text = out.getvalue()
    assert "worker.ready" in text
    assert "\x1b[" in text
    with pytest.raises(ValueError, match=r"Expecting value|Extra data"):
        json.loads(text)


def test_log_level_filters_and_everything_is_undone_afterwards() -> None:
    library = logging.getLogger("floodgate")
    before = (library.level, list(logging.getLogger().handlers), structlog.is_configured())
    out = io.StringIO()
    with logging_configured("warning", stream=out):
        get_logger().info("hidden")
        get_logger().warning("shown")
        logging.getLogger("floodgate").debug("hidden too")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["shown"]
    assert (library.level, list(logging.getLogger().handlers), structlog.is_configured()) == before
    with pytest.raises(ValueError, match="log level"), logging_configured("loud"):
        pass
