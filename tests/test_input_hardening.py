"""Bad input to the library gets a clear error and stores nothing (issue 14).

- job arguments (and results) nested past ``MAX_JSON_DEPTH`` raise ``TypeError``
  naming the limit, however deep they go, instead of ``RecursionError``;
- ``shutdown_grace`` must be a finite number >= 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import ConfigError, JobFailed, JobState, Lane, Scheduler
from scheduler.tasks import MAX_JSON_DEPTH, encode_args, encode_result


def nested_list(depth: int) -> Any:
    """``depth`` lists inside each other: ``[[...[]...]]`` (built without recursion)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dict(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, list | dict) and value:
        value = value[0] if isinstance(value, list) else value["k"]
        depth += 1
    return depth + 1


def durable(db: Path) -> Scheduler:
    return Scheduler(str(db), lanes=[Lane("batch", 2, durable=True)], shutdown_grace=0)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 100_000])
@pytest.mark.parametrize("make", [nested_list, nested_dict])
async def test_args_nested_too_deep_raise_type_error_and_store_nothing(
    tmp_path: Path, depth: int, make: Any
) -> None:
    sched = durable(tmp_path / "deep.db")

    @sched.task(lane="batch", name="t.echo")
    async def echo(*args: Any) -> int:
        return len(args)

    deep = make(depth)
    limit = f"{MAX_JSON_DEPTH:,}"
    async with sched:
        with pytest.raises(TypeError, match=rf"argument 1 .*nested deeper than {limit} levels"):
            await echo.submit("fine", deep)
        with pytest.raises(TypeError, match=rf"nested deeper than {limit} levels"):
            await sched.submit("t.echo", deep, key="deep")
        assert await sched.jobs() == []
        assert (await sched.backlog_counts()) == {}


async def test_args_at_the_depth_limit_round_trip(tmp_path: Path) -> None:
    sched = durable(tmp_path / "limit.db")

    @sched.task(lane="batch", name="t.depth")
    async def depth(value: Any) -> int:
        return depth_of(value)

    async with sched:
        # the array of positional arguments counts as one level
        job = await depth.submit(nested_list(MAX_JSON_DEPTH - 1))
        assert await job.result(timeout=10) == MAX_JSON_DEPTH - 1


async def test_a_result_nested_too_deep_ends_the_job_dead_with_a_clear_error(
    tmp_path: Path,
) -> None:
    sched = durable(tmp_path / "result.db")

    @sched.task(lane="batch", name="t.deep")
    async def deep(depth: int) -> Any:
        return nested_list(depth)

    async with sched:
        job = await deep.submit(100_000)
        with pytest.raises(JobFailed, match=rf"nested deeper than {MAX_JSON_DEPTH:,} levels"):
            await job.result(timeout=10)
        assert (await sched.job(job.id)).state is JobState.DEAD


def test_encoders_check_depth_without_recursion() -> None:
    for depth in (MAX_JSON_DEPTH + 1, 1_000, 100_000):
        with pytest.raises(TypeError, match=r"argument 0 .*nested deeper"):
            encode_args((nested_dict(depth),))
        with pytest.raises(TypeError, match="nested deeper"):
            encode_result(nested_list(depth))
    assert encode_args((nested_list(MAX_JSON_DEPTH - 1),)).count("[") == MAX_JSON_DEPTH
    assert encode_result(nested_list(MAX_JSON_DEPTH)).count("[") == MAX_JSON_DEPTH
    # brackets inside strings are text, not nesting
    assert encode_args(("[" * 10_000,)) == '["' + "[" * 10_000 + '"]'
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(TypeError, match=r"argument 0 .*not JSON-serializable"):
        encode_args((cyclic,))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**90), max_value=2**90)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON, max_size=4), JSON)
def test_encoders_write_what_the_standard_encoder_writes(args: list[Any], result: Any) -> None:
    """The encoders call CPython's C encoder directly: the text is the one
    ``json.dumps(..., allow_nan=False, separators=(",", ":"))`` gives."""
    standard = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
    assert encode_args(args) == standard(args)
    assert encode_args(tuple(args)) == standard(args)
    assert encode_result(result) == standard(result)


@pytest.mark.parametrize("bad", [math.nan, math.inf, {1j: 1}, {"k": object()}, b"bytes"])
def test_encoders_refuse_what_is_not_json(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"argument 1 .*not JSON-serializable"):
        encode_args([1, [bad]] if isinstance(bad, float) else [1, bad])
    with pytest.raises(TypeError, match="not JSON"):
        encode_result(bad)


@pytest.mark.parametrize("grace", [math.nan, math.inf, -math.inf, -1, -0.5])
def test_shutdown_grace_must_be_finite_and_not_negative(grace: float) -> None:
    with pytest.raises(ConfigError, match="shutdown_grace"):
        Scheduler(":memory:", shutdown_grace=grace)


@pytest.mark.parametrize("grace", ["3", None, True])
def test_shutdown_grace_must_be_a_number(grace: Any) -> None:
    with pytest.raises(TypeError, match="shutdown_grace must be a number"):
        Scheduler(":memory:", shutdown_grace=grace)


def test_shutdown_grace_accepts_zero_and_ints() -> None:
    assert Scheduler(":memory:", shutdown_grace=0).shutdown_grace == 0.0
    assert Scheduler(":memory:", shutdown_grace=5).shutdown_grace == 5.0
