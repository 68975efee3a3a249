"""What an upstream's answers mean: outcome classes, Retry-After, rate-limit headers.

Tasks need no wrapper: Floodgate classifies what a job returns or raises.

=====================================  ===============  =========  ==============
raised by the job                      class            retried    counts against
=====================================  ===============  =========  ==============
(nothing: it returned)                 success          -          -
``httpx.HTTPStatusError`` 429          rate_limited     yes        the upstream
``httpx.HTTPStatusError`` 5xx          server_error     yes        the upstream
``httpx.TimeoutException``, JobTimeout timeout          yes        the upstream
``httpx.TransportError``               transport        yes        the upstream
``httpx.HTTPStatusError`` other 4xx    client_error     no         nobody (caller)
:class:`RetryableError`                rate_limited     yes        the upstream
anything else                          other            yes        nobody
=====================================  ===============  =========  ==============

A ``Retry-After`` header (seconds or an HTTP-date) on the failed response is
honored. On a 429, ``retry-after-ms`` (OpenAI, Azure) is read first, and a
whole-second Retry-After gives way to the 429's own rate-limit headers when
they say which budget ran out and that it is full again sooner (see
:func:`throttle_wait`). Malformed values are ignored and absurd ones clamped,
with a ``upstream.bad_header`` warning: a header never crashes a dispatcher.

:func:`httpx_event_hooks` feeds every response's rate-limit headers
(``x-ratelimit-remaining-requests`` / ``-tokens`` and their resets) to the
scheduler, so batch work keeps a reserve for interactive traffic.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from .errors import JobTimeout, RetryableError
from .logs import get_logger


class _ObservesHeaders(Protocol):
    def observe_headers(self, upstream: str, headers: Mapping[str, str]) -> None: ...


class _HasGate(Protocol):
    """A scheduler, as far as the httpx hooks go: its gate hears the headers."""

    @property
    def gate(self) -> _ObservesHeaders: ...


__all__ = [
    "Classified",
    "FailureKind",
    "RateLimitInfo",
    "RetryableError",
    "classify",
    "httpx_event_hooks",
    "parse_duration",
    "parse_rate_limit_headers",
    "parse_retry_after",
    "throttle_wait",
]

_log = get_logger()

#: longest Retry-After honored (seconds); longer values are clamped with a warning
MAX_RETRY_AFTER = 3600.0
#: longest rate-limit reset honored: no header holds an upstream longer than a
#: Retry-After may (a daily budget's reset is clamped too, with a warning)
_MAX_RESET = MAX_RETRY_AFTER


class FailureKind(enum.Enum):
    """Why an attempt failed, as far as upstream health is concerned."""

    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    TRANSPORT = "transport"
    CLIENT_ERROR = "client_error"
    OTHER = "other"


_UPSTREAM_FAULTS = frozenset(
    {FailureKind.RATE_LIMITED, FailureKind.SERVER_ERROR, FailureKind.TIMEOUT, FailureKind.TRANSPORT}
)


@dataclass(frozen=True, slots=True)
class Classified:
    """One attempt's outcome: ``kind`` is ``None`` for a success."""

    kind: FailureKind | None
    retry_after: float | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.kind is None

    @property
    def retryable(self) -> bool:
        return self.kind is not None and self.kind is not FailureKind.CLIENT_ERROR

    @property
    def upstream_fault(self) -> bool:
        """Whether the failure says something bad about the upstream's health."""
        return self.kind in _UPSTREAM_FAULTS


SUCCESS = Classified(None)


def classify(exc: BaseException | None, *, now: float) -> Classified:
    """Classify what a job raised (``None``: it returned). ``now`` is wall time."""
    if exc is None:
        return SUCCESS
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        headers = exc.response.headers
        retry_after = parse_retry_after(headers.get("retry-after"), now=now)
        if status == 429:
            kind = FailureKind.RATE_LIMITED
            retry_after = throttle_wait(headers, retry_after)
        elif status >= 500:
            kind = FailureKind.SERVER_ERROR
        elif status == 408:
            kind = FailureKind.TIMEOUT
        else:
            kind = FailureKind.CLIENT_ERROR
        return Classified(kind, retry_after, status)
    if isinstance(exc, httpx.TimeoutException | JobTimeout):
        return Classified(FailureKind.TIMEOUT)
    if isinstance(exc, httpx.TransportError):
        return Classified(FailureKind.TRANSPORT)
    if isinstance(exc, RetryableError):
        return Classified(FailureKind.RATE_LIMITED, _clamp(exc.retry_after, "retry_after"))
    return Classified(FailureKind.OTHER)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    ``None`` for a missing or malformed value; negative becomes 0, and more
    than :data:`MAX_RETRY_AFTER` is clamped (both with a warning).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            _warn("retry-after", value, "neither seconds nor an HTTP-date; ignored")
            return None
        if when.tzinfo is None:
            _warn("retry-after", value, "HTTP-date without a zone; ignored")
            return None
        seconds = when.timestamp() - now
    return _clamp(seconds, "retry-after")


def _clamp(seconds: float | None, header: str, cap: float = MAX_RETRY_AFTER) -> float | None:
    if seconds is None:
        return None
    if math.isnan(seconds):
        _warn(header, str(seconds), "not a number; ignored")
        return None
    if seconds < 0:
        return 0.0
    if seconds > cap:
        _warn(header, str(seconds), f"clamped to {cap:g}s")
        return cap
    return float(seconds)


def _warn(header: str, value: str, what: str) -> None:
    _log.warning("upstream.bad_header", header=header, value=value[:80], problem=what)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?")  # fmt: skip


def parse_duration(value: str | None) -> float | None:
    """Seconds from a rate-limit reset value: ``"20"``, ``"1s"``, ``"6m0s"``, ``"250ms"``."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    try:
        return _clamp(float(text), "x-ratelimit-reset", _MAX_RESET)
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        _warn("x-ratelimit-reset", value, "not a duration; ignored")
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds + millis / 1000
    return _clamp(total, "x-ratelimit-reset", _MAX_RESET)


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_LAST_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?(h|ms|m|s)?$")


def duration_resolution(value: str | None) -> float | None:
    """The unit of a reset value's last digit, in seconds: ``"250ms"`` -> 0.001,
    ``"1.25s"`` -> 0.01, ``"6m0s"`` -> 1, ``"20"`` -> 1 (``None``: unreadable)."""
    if value is None:
        return None
    match = _LAST_NUMBER.search(value.strip().lower())
    if match is None:
        return None
    decimals = len(match.group(2) or "")
    return _UNITS[match.group(3) or "s"] * 10.0**-decimals


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What an upstream's ``x-ratelimit-*`` headers said (``None``: not sent)."""

    remaining_requests: float | None = None
    limit_requests: float | None = None
    reset_requests: float | None = None  # seconds until the request budget resets
    reset_requests_resolution: float | None = None  # the unit of its last digit (s)
    remaining_tokens: float | None = None
    limit_tokens: float | None = None
    reset_tokens: float | None = None
    reset_tokens_resolution: float | None = None  # the unit of its last digit (s)

    @property
    def empty(self) -> bool:
        return self.remaining_requests is None and self.remaining_tokens is None


def _count(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        _warn(name, raw, "not a number; ignored")
        return None
    if not math.isfinite(value) or value < 0:
        _warn(name, raw, "negative or not a finite number; ignored")
        return None
    return value


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read ``x-ratelimit-{remaining,limit,reset}-{requests,tokens}`` (malformed: ignored)."""
    return RateLimitInfo(
        remaining_requests=_count(headers, "x-ratelimit-remaining-requests"),
        limit_requests=_count(headers, "x-ratelimit-limit-requests"),
        reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
        reset_requests_resolution=duration_resolution(headers.get("x-ratelimit-reset-requests")),
        remaining_tokens=_count(headers, "x-ratelimit-remaining-tokens"),
        limit_tokens=_count(headers, "x-ratelimit-limit-tokens"),
        reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        reset_tokens_resolution=duration_resolution(headers.get("x-ratelimit-reset-tokens")),
    )


def throttle_wait(headers: Mapping[str, str], retry_after: float | None) -> float | None:
    """Seconds a 429 asks for (``None``: it does not say).

    - ``retry-after-ms`` (OpenAI, Azure), when readable, is the wait to the millisecond.
    - Otherwise ``retry_after`` (the parsed ``Retry-After``), except when it is only
      the time until an exhausted budget is full again, rounded up to a whole
      second: the 429's own ``x-ratelimit-remaining-requests`` / ``-tokens`` say
      ``0`` and their resets say that budget is full in ``r`` s, with
      ``Retry-After <= max(1, ceil(r))``. Then the wait is ``r`` (at least its
      last digit's unit): ``Retry-After: 1`` for a bucket full again in 120 ms
      holds work for 120 ms, not a second. A Retry-After longer than the budget's
      reset says something else (an overloaded upstream) and is honored as is, and
      so is one on a 429 whose headers show no exhausted budget (a concurrency cap).
    """
    precise = headers.get("retry-after-ms")
    if precise is not None:
        try:
            millis = float(precise.strip())
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return _clamp(millis / 1000.0, "retry-after-ms")
        _warn("retry-after-ms", precise, "not a number of milliseconds; ignored")
    if retry_after is None:
        return None
    refill = _refill_time(headers)
    if refill is None or retry_after > max(1.0, math.ceil(refill)):
        return retry_after
    return min(retry_after, refill)


def _refill_time(headers: Mapping[str, str]) -> float | None:
    """Seconds until every budget the headers show exhausted is full again
    (``None``: none shown exhausted, or one's reset unknown)."""
    info = parse_rate_limit_headers(headers)
    waits: list[float] = []
    for remaining, reset, unit in (
        (info.remaining_requests, info.reset_requests, info.reset_requests_resolution),
        (info.remaining_tokens, info.reset_tokens, info.reset_tokens_resolution),
    ):
        if remaining is None or remaining > 0:
            continue
        if reset is None or unit is None:
            return None
        waits.append(max(reset, unit))
    return max(waits) if waits else None


def httpx_event_hooks(
    sched: _HasGate, upstream: str
) -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
    """Event hooks for ``httpx.AsyncClient(event_hooks=...)`` that feed ``upstream``'s
    rate-limit headers (and any ``Retry-After``) to the scheduler's gate."""

    async def on_response(response: httpx.Response) -> None:
        sched.gate.observe_headers(upstream, response.headers)

    return {"response": [on_response]}
