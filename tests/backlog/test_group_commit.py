"""The group committer on its own, with a fake transaction."""

from __future__ import annotations

import asyncio

import pytest

from scheduler import BacklogError
from scheduler.backlog._group_commit import GroupCommitter


class FakeStore:
    """Records each batch; can be told to fail the next one, or to hold it until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_next = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, items: list[str]) -> list[str]:
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise BacklogError("disk on fire")
        self.batches.append(items)
        return [item.upper() for item in items]


async def test_concurrent_puts_share_one_write_and_get_their_own_result() -> None:
    store = FakeStore()
    committer = GroupCommitter(store.write, batch_max=100)
    results = await asyncio.gather(*(committer.put(f"j{i}") for i in range(50)))
    assert results == [f"J{i}" for i in range(50)]
    assert len(store.batches) == 1
    assert committer.flushes == 1
    assert committer.items == 50


async def test_items_arriving_during_a_write_go_in_the_next_one() -> None:
    store = FakeStore()
    store.gate.clear()
    committer = GroupCommitter(store.write, batch_max=100)
    first = asyncio.ensure_future(committer.put("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the flusher has taken "a" and is writing
    rest = [asyncio.ensure_future(committer.put(x)) for x in "bcd"]
    await asyncio.sleep(0)
    assert committer.pending == 3
    store.gate.set()
    assert await first == "A"
    assert [await t for t in rest] == ["B", "C", "D"]
    assert store.batches == [["a"], ["b", "c", "d"]]


async def test_batch_max_splits_by_size_but_never_splits_an_item() -> None:
    store = FakeStore()
    committer = GroupCommitter(store.write, batch_max=4)
    sizes = {"a": 3, "b": 2, "c": 9, "d": 1}
    await asyncio.gather(*(committer.put(k, size) for k, size in sizes.items()))
    assert store.batches == [["a"], ["b"], ["c"], ["d"]]


async def test_a_failed_write_fails_its_callers_only() -> None:
    store = FakeStore()
    store.gate.clear()
    store.fail_next = True
    committer = GroupCommitter(store.write, batch_max=100)
    doomed = [asyncio.ensure_future(committer.put(x)) for x in "ab"]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = asyncio.ensure_future(committer.put("c"))
    store.gate.set()
    for task in doomed:
        with pytest.raises(BacklogError, match="fire"):
            await task
    assert await later == "C"
    assert store.batches == [["c"]]


async def test_a_caller_cancelled_before_the_write_is_not_written() -> None:
    store = FakeStore()
    committer = GroupCommitter(store.write, batch_max=100)
    gone = asyncio.ensure_future(committer.put("gone"))
    kept = asyncio.ensure_future(committer.put("kept"))
    gone.cancel()  # both queued; the flusher has not run yet
    assert await kept == "KEPT"
    assert gone.cancelled()
    await committer.drain()
    assert store.batches == [["kept"]]
