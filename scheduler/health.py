"""What gated lanes wait on.

``HealthGate`` is the switch in front of every gated lane: jobs there start
only while the gate is open. In this release the gate holds the operator's
manual switch (``pause(reason)`` / ``resume()``); the scheduler listens to it
and starts waiting work the moment it reopens. Every change is logged
(``gate.paused`` / ``gate.resumed``) and counted with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .logs import get_logger

__all__ = ["GateStats", "HealthGate"]

_log = get_logger()


@dataclass(frozen=True, slots=True)
class GateStats:
    """A snapshot of the gate: open or not, why, and how often it changed."""

    open: bool
    reason: str | None
    pauses: int
    resumes: int


class HealthGate:
    """The switch in front of gated lanes; open unless paused."""

    def __init__(self) -> None:
        self._paused_reason: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._pauses = 0
        self._resumes = 0

    @property
    def is_open(self) -> bool:
        return self._paused_reason is None

    @property
    def reason(self) -> str | None:
        """Why the gate is closed, or ``None`` while it is open."""
        return self._paused_reason

    def pause(self, reason: str = "paused by operator") -> None:
        """Close the gate: gated lanes start nothing new until :meth:`resume`."""
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"pause() needs a non-empty str reason, got {reason!r}")
        was_open = self._paused_reason is None
        self._paused_reason = reason
        if was_open:
            self._pauses += 1
            _log.info("gate.paused", reason=reason)
            self._notify()

    def resume(self) -> None:
        """Reopen the gate; waiting gated work starts at once."""
        if self._paused_reason is None:
            return
        self._paused_reason = None
        self._resumes += 1
        _log.info("gate.resumed")
        self._notify()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change; returns an unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def stats(self) -> GateStats:
        return GateStats(self.is_open, self._paused_reason, self._pauses, self._resumes)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def __repr__(self) -> str:
        state = "open" if self.is_open else f"paused: {self._paused_reason}"
        return f"HealthGate({state})"
