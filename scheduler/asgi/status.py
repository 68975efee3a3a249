"""Statistics and jobs as JSON-ready values (``/api/status``, ``/api/jobs``).

Frozen stats dataclasses are converted field by field, whatever fields they
hold, so a field added to ``LaneStats`` or ``UpstreamStats`` shows up in the
JSON (and the dashboard's raw view) without a change here. Private fields
(leading ``_``) are left out; NaN and infinities become ``null``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Mapping
from typing import Any

from ..jobs import Job, JobState
from ..metrics import SchedulerStats

__all__ = ["job_json", "jsonable", "status_json"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dataclasses, mappings, enums, sequences)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def status_json(
    stats: SchedulerStats,
    backlog: Mapping[str, Mapping[str, int]] | None,
    *,
    backlog_error: str | None = None,
    read_only: bool = True,
) -> dict[str, Any]:
    """What ``/api/status`` answers: the scheduler, its lanes in order, upstreams,
    backlog counts ``{lane: {state: n}}`` (``null`` without a durable lane or
    when it could not be read, then ``backlog_error`` says why)."""
    lanes = []
    for lane in stats.lanes.values():
        entry = jsonable(lane)
        entry["shed_total"] = lane.shed_total
        lanes.append(entry)
    return {
        "time": time.time(),
        "scheduler": {
            "state": stats.state,
            "running": stats.running,
            "max_concurrency": stats.max_concurrency,
        },
        "gate": {"open": stats.gate_open, "reason": stats.gate_reason},
        "lanes": lanes,
        "upstreams": [jsonable(u) for u in stats.upstreams.values()],
        "fleet": None if stats.fleet is None else jsonable(stats.fleet),
        "periodic": [jsonable(p) for p in stats.periodic],
        "backlog": None if backlog is None else jsonable(backlog),
        "backlog_error": backlog_error,
        "admin": {"read_only": read_only},
    }


def job_json(job: Job, *, result: Any = None, with_traceback: bool = False) -> dict[str, Any]:
    """One job; ``result`` is added for a ``DONE`` job, ``traceback`` on request."""
    data: dict[str, Any] = jsonable(job)
    if not with_traceback:
        data.pop("traceback", None)
    if job.state is JobState.DONE:
        data["result"] = jsonable(result)
    return data
