"""Argument checks shared by the config objects: TypeError for a wrong type,
ConfigError for a value out of range."""

from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["check_int", "check_number"]


def check_int(what: str, value: object, *, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``: TypeError for the wrong type, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_number(
    what: str, value: object, *, minimum: float, exclusive: bool = False, maximum: float = math.inf
) -> float:
    """A finite real (int or float, not bool) in range, returned as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    if number < minimum or (exclusive and number == minimum):
        raise ConfigError(f"{what} must be {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
    if number > maximum:
        raise ConfigError(f"{what} must be <= {maximum:g}, got {value!r}")
    return number
