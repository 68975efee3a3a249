"""Shared fixtures."""

from __future__ import annotations

import pytest

from scheduler import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
