"""``Lane(aging=)`` on durable lanes, end to end on a fake clock (memory, SQLite,
PostgreSQL): a low-priority job that waited long enough runs before newer urgent ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler import BacklogOptions, FakeClock, Lane, Scheduler
from tests.test_durable import until


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return ":memory:"
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("dsn"))


def one_seat(target: str, clock: FakeClock, aging: float | None) -> Scheduler:
    return Scheduler(
        target,
        lanes=[Lane("batch", 1, durable=True, gated=True, aging=aging)],
        clock=clock,
        backlog_options=BacklogOptions(lease=30.0, poll_interval=0.5),
        shutdown_grace=0,
    )


@pytest.mark.parametrize(("aging", "waited", "expected"), [
    (10.0, 60.0, ["old", "new0", "new1", "new2"]),  # 60 s = 6 levels: 5 -> -1 beats 0
    (10.0, 40.0, ["new0", "new1", "new2", "old"]),  # 40 s = 4 levels: 5 -> 1, still after 0
    (None, 3600.0, ["new0", "new1", "new2", "old"]),  # no aging: priority alone
])  # fmt: skip
async def test_an_old_low_priority_job_overtakes_newer_urgent_ones(
    target: str, aging: float | None, waited: float, expected: list[str]
) -> None:
    clock = FakeClock()
    sched = one_seat(target, clock, aging)
    ran: list[str] = []

    @sched.task(lane="batch", name="tests.aging.work")
    async def work(name: str) -> None:
        ran.append(name)

    sched.gate.pause("nothing runs while the jobs are submitted")
    async with sched:
        await work.submit("old", priority=5)
        await clock.advance_and_settle(waited)
        for i in range(3):
            await work.submit(f"new{i}", priority=0)
        assert ran == []
        sched.gate.resume()  # one seat: the jobs run one by one in claim order
        await until(lambda: len(ran) == 4, clock)
    assert ran == expected
