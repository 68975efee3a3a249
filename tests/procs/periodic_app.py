"""An app with a periodic task, for ``floodgate status --app`` (tests/test_periodic.py)."""

from __future__ import annotations

from scheduler import Lane, Scheduler

sched = Scheduler("periodic.db", lanes=[Lane("batch", 2, durable=True)])


@sched.periodic("0 3 * * *", name="app.nightly")
async def nightly() -> None:
    return None
