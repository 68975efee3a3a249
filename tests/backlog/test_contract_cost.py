"""The Backlog contract for a job's own ``cost``, run against every backend."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from scheduler.backlog import Backlog, NewJob
from tests.backlog.helpers import new_job


def costing(cost: float | None, *args: object) -> NewJob:
    return replace(new_job(*args), cost=cost)


async def test_cost_round_trips_through_submit_claim_get_and_list(backlog: Backlog) -> None:
    a, b, c = await backlog.submit([costing(12.5, 1), costing(None, 2), costing(0, 3)], now=0)
    assert (a.cost, b.cost, c.cost) == (12.5, None, 0.0)
    claimed = await backlog.claim("batch", 10, owner="w", lease_seconds=10, now=1)
    assert [(r.id, r.cost) for r in claimed] == [(a.id, 12.5), (b.id, None), (c.id, 0.0)]
    got = await backlog.get(a.id)
    assert got is not None
    assert got.cost == 12.5
    assert [r.cost for r in await backlog.list_jobs()] == [12.5, None, 0.0]


async def test_an_existing_key_keeps_its_cost(backlog: Backlog) -> None:
    [first] = await backlog.submit([replace(costing(7, 1), key="k")], now=0)
    [again] = await backlog.submit([replace(costing(99, 2), key="k")], now=1)
    assert again.id == first.id
    assert again.cost == 7


@pytest.mark.parametrize("cost", [-1, -0.5, math.inf, math.nan, "3", True])
async def test_a_bad_cost_is_refused(backlog: Backlog, cost: object) -> None:
    job = NewJob(task="t", lane="batch", args_json=json.dumps([]), cost=cost)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cost"):
        await backlog.submit([job], now=0)
    assert await backlog.list_jobs() == []
