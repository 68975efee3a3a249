"""``scheduler._frozen.quick_init``: a faster ``__init__`` that changes nothing else."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler._frozen import quick_init
from scheduler.backlog.base import JobRecord, NewJob, Outcome
from scheduler.jobs import Job, JobState


def _sample_class() -> Any:
    """A frozen slots dataclass with defaults and a ``__post_init__`` (a new one per call)."""

    @dataclass(frozen=True, slots=True)
    class Sample:
        a: int
        b: str
        c: float | None = None
        d: list[Any] | None = None
        e: str = "e"

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a must be >= 0")

    return Sample


Plain = _sample_class()
Quick = quick_init(_sample_class())


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeywordOnly:
    x: int
    y: int = 2


values = st.tuples(
    st.integers(min_value=0),
    st.text(max_size=5),
    st.none() | st.floats(allow_nan=False),
    st.none() | st.lists(st.integers(), max_size=3),
)


@given(values, st.booleans())
def test_same_fields_as_the_generated_init(args: tuple[Any, ...], by_name: bool) -> None:
    a, b, c, d = args
    if by_name:
        quick, plain = Quick(a=a, b=b, c=c, d=d), Plain(a=a, b=b, c=c, d=d)
    else:
        quick, plain = Quick(a, b, c, d), Plain(a, b, c, d)
    assert type(quick) is Quick
    assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
    assert quick == Quick(a, b, c, d)
    assert repr(quick) == repr(plain)


def test_same_signature_for_help_and_the_docs() -> None:
    assert inspect.signature(Quick) == inspect.signature(Plain)
    assert inspect.signature(JobRecord).parameters["trace"].default is None


def test_still_frozen_comparable_copyable_and_replaceable() -> None:
    q = Quick(1, "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.a = 2  # type: ignore[misc]
    assert hash(q) == hash(Quick(1, "b"))
    assert copy.copy(q) == q
    assert copy.deepcopy(q) == q
    r = dataclasses.replace(q, a=5)
    assert (type(r), r.a, r.b, r.e) == (Quick, 5, "b", "e")


def test_post_init_runs_and_argument_errors_are_python_s() -> None:
    with pytest.raises(ValueError, match="a must be >= 0"):
        Quick(-1, "b")
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'b'"):
        Quick(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Quick(1, "b", z=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        KeywordOnly(1)  # type: ignore[misc]
    assert (KeywordOnly(x=1).x, KeywordOnly(x=1).y) == (1, 2)


def test_refuses_what_it_cannot_keep_equal() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Mutable, Factory, NoSlots):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)


def test_the_per_job_classes_use_it() -> None:
    for cls in (NewJob, JobRecord, Outcome, Job):
        assert cls.__init__.__module__ == cls.__module__
        assert "_set" in cls.__init__.__globals__, cls
    record = JobRecord("i", "t", "l", [1], 0.0, JobState.QUEUED, 0, 1, 1.0, 1.0, 1.0)
    assert record.order == (0.0, 1.0)
    assert record.key is None
    with pytest.raises(ValueError, match="outcome kind"):
        Outcome("j", "o", "bogus")  # type: ignore[arg-type]


def test_the_positional_constructions_match_the_field_order() -> None:
    """``new_record``, ``JobStore.job_from`` and ``JobStore._queued_job`` build by
    position (a keyword call costs about 3x); with a distinct value in every field,
    each equals the same object built by keyword, so a reordered field fails here."""
    from scheduler.backlog.base import new_record
    from scheduler.job_store import JobStore

    job = NewJob(
        task="t", lane="l", args_json="[1]", priority=2.0, run_at=3.0, key="k",
        max_attempts=4, deadline_at=5.0, cost=6.0, max_queued=7, args=[1], rank=8.0,
        tenant="acme", tenant_max_queued=9, trace="{}",
    )  # fmt: skip
    assert new_record(job, [1], 10.0, "id1") == JobRecord(
        id="id1", task="t", lane="l", args=[1], priority=2.0, state=JobState.QUEUED,
        attempts=0, max_attempts=4, run_at=3.0, created_at=10.0, updated_at=10.0, key="k",
        deadline_at=5.0, cost=6.0, rank=8.0, tenant="acme", trace="{}",
    )  # fmt: skip
    record = JobRecord(
        id="id2", task="t", lane="l", args=[1], priority=2.0, state=JobState.DONE,
        attempts=3, max_attempts=4, run_at=5.0, created_at=6.0, updated_at=7.0, key="k",
        lease_owner="o", lease_until=8.0, result={"r": 1}, error="e", traceback="tb",
        deadline_at=9.0, cost=10.0, cancel_requested_at=11.0, rank=12.0, tenant="acme",
        trace="{}",
    )  # fmt: skip
    owner: Any = object()
    store: Any = JobStore.__new__(JobStore)
    store._owner = owner
    keyword = Job(
        id="id2", task="t", lane="l", state=JobState.DONE, attempts=3, max_attempts=4,
        priority=2.0, run_at=5.0, created_at=6.0, updated_at=7.0, key="k", error="e",
        traceback="tb", _value={"r": 1}, _owner=owner, cost=10.0, tenant="acme",
    )  # fmt: skip
    fields = [f.name for f in dataclasses.fields(Job)]
    built = store.job_from(record)
    assert [getattr(built, f) for f in fields] == [getattr(keyword, f) for f in fields]
    from scheduler.backlog.base import with_args

    assert with_args(job, "[2]", [2]) == dataclasses.replace(job, args_json="[2]", args=[2])
    moved = with_args(job, "[2]", [2])
    assert [getattr(moved, f.name) for f in dataclasses.fields(NewJob)] == [
        "t",
        "l",
        "[2]",
        2.0,
        3.0,
        "k",
        4,
        5.0,
        6.0,
        7,
        [2],
        8.0,
        "acme",
        9,
        "{}",
    ]
    queued = store._queued_job(job, "id3", 10.0)
    assert [getattr(queued, f) for f in fields] == [
        "id3", "t", "l", JobState.QUEUED, 0, 4, 2.0, 3.0, 10.0, 10.0, None, None, None,
        None, owner, 6.0, "acme",
    ]  # fmt: skip
