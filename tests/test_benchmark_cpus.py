"""``benchmarks._cpus``: a block run on one CPU (and the threads it starts), put back
afterwards; the thread round trip each benchmark report prints."""

from __future__ import annotations

import math
import os
import threading

import pytest

from benchmarks import _cpus
from benchmarks._cpus import one_cpu, python_loop_seconds, round_trip

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs sched_setaffinity and two usable CPUs",
)


@needs_affinity
def test_one_cpu_holds_the_thread_and_those_it_starts_then_puts_it_back() -> None:
    before = os.sched_getaffinity(0)
    seen: list[set[int]] = []
    with one_cpu() as cpu:
        assert cpu == min(before)
        assert os.sched_getaffinity(0) == {cpu}
        child = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        child.start()
        child.join()
    assert seen == [{cpu}]
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_one_cpu_puts_the_thread_back_when_the_block_raises() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), one_cpu():
        raise RuntimeError("the phase fell over")
    assert os.sched_getaffinity(0) == before


def test_one_cpu_says_none_with_a_single_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[set[int]] = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(
        os, "sched_setaffinity", lambda pid, cpus: calls.append(cpus), raising=False
    )
    with one_cpu() as cpu:
        assert cpu is None
    assert calls == []  # nothing to choose: the thread is left alone
    assert math.isnan(round_trip(pinned=True))


def test_round_trip_is_a_positive_time_and_leaves_no_thread_behind() -> None:
    threads = threading.active_count()
    seconds = round_trip()
    assert 0.0 < seconds < 1.0
    assert threading.active_count() == threads


def test_the_python_loop_is_scaled_to_ten_million_additions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three batches timed, their median scaled from the batch to 10,000,000."""
    ticks = iter([0.0, 0.4, 1.0, 1.1, 2.0, 2.3])  # batches of 0.4, 0.1 and 0.3 s
    monkeypatch.setattr(_cpus.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(_cpus, "LOOP_BATCH", 1_000)
    assert python_loop_seconds() == pytest.approx(0.3 * 10_000)
