"""The old name of :mod:`scheduler.upstream` (``Upstream``, ``UpstreamHealth``,
``Permit``, ...), kept so existing imports work; new code imports ``scheduler.upstream``."""

from __future__ import annotations

from typing import Any

from . import upstream as _renamed


def __getattr__(name: str) -> Any:
    return getattr(_renamed, name)
