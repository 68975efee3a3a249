"""The old name of :mod:`scheduler.gate` (``HealthGate``, ``GateStats``), kept so
existing imports work; new code imports ``scheduler.gate``."""

from __future__ import annotations

from typing import Any

from . import gate as _renamed


def __getattr__(name: str) -> Any:
    return getattr(_renamed, name)
