"""Registered tasks: coroutine functions that durable jobs name.

A durable job stores its task's *name*, not the function, so every process
sharing a backlog must agree on names. By default a task is called
``module.qualname``, with ``__main__`` resolved through the module's
``__spec__`` so ``python -m app``, ``--app app:sched`` and an importing test
all say ``app.summarize``. ``@sched.task(name=...)`` sets it explicitly.

Arguments and results are JSON only (no pickle anywhere): :func:`encode_args`
rejects anything else with a ``TypeError`` at submit time, before a row is
written, and so it does with JSON nested more than :data:`MAX_JSON_DEPTH`
arrays/objects deep (checked without recursion, however deep the input).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from .errors import ConfigError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .jobs import Job

__all__ = ["MAX_JSON_DEPTH", "Task", "TaskOwner", "encode_args", "encode_result", "task_name"]

P = ParamSpec("P")
R = TypeVar("R")

#: the default for durable tasks: 5 attempts, capped exponential backoff, full jitter
DEFAULT_RETRY = RetryPolicy()


def task_name(fn: Callable[..., object]) -> str:
    """``module.qualname`` of ``fn``, with ``__main__`` resolved to the real module name."""
    module = getattr(fn, "__module__", None) or "unknown"
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and getattr(spec, "name", None):
            module = spec.name.removesuffix(".__main__")
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not qualname:
        raise ConfigError(f"cannot name task {fn!r}: give it one with @sched.task(name=...)")
    return f"{module}.{qualname}"


#: the deepest nesting of arrays/objects a stored args array or result may have;
#: well below where Python's JSON encoder and decoder run out of stack
MAX_JSON_DEPTH = 500
_CONTAINERS = (list, tuple, dict)


def _nested_deeper(value: object, limit: int) -> bool:
    """Whether lists/tuples/dicts in ``value`` nest more than ``limit`` deep
    (``[]`` is 1 deep). Iterative, and stops past ``limit``: cycles end too."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False


def _check_depth(value: object, what: str, limit: int) -> None:
    if _nested_deeper(value, limit):
        raise TypeError(
            f"{what} is nested deeper than {MAX_JSON_DEPTH:,} levels: durable job arguments "
            f"and results are stored as JSON at most {MAX_JSON_DEPTH:,} arrays/objects deep "
            "(the array of arguments counts as one)"
        )


def _may_be_too_deep(text: str) -> bool:
    """A cheap upper bound on the nesting of JSON ``text``: its bracket count."""
    return text.count("[") + text.count("{") > MAX_JSON_DEPTH


#: compact JSON, NaN and infinities refused; built once (``json.dumps`` with options
#: builds an encoder per call)
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _compact_encoder() -> Callable[[object], str]:
    """``_ENCODER.encode``, calling CPython's C encoder directly where there is one:
    ``encode`` builds a new C encoder on every call, about half the cost of encoding a
    short argument list. Without the circular-reference markers: a cycle ends in the
    ``RecursionError`` that :func:`encode_args` already turns into a ``TypeError``."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (e.g. PyPy)
        return _ENCODER.encode
    ascii_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
    encoder = make(None, _ENCODER.default, ascii_str, None, ":", ",", False, False, False)

    def encode(value: object) -> str:
        if isinstance(value, str):
            return ascii_str(value)
        chunks = encoder(value, 0)
        return str(chunks[0]) if len(chunks) == 1 else "".join(chunks)

    return encode


_encode = _compact_encoder()


def encode_args(args: tuple[Any, ...] | list[Any]) -> str:
    """JSON text of positional args; ``TypeError`` naming the culprit otherwise (not
    JSON, or nested deeper than :data:`MAX_JSON_DEPTH` counting the args array)."""
    try:
        text = _encode(args if args.__class__ is list else list(args))
    except (TypeError, ValueError, RecursionError) as exc:
        for i, arg in enumerate(args):
            what = f"argument {i} ({type(arg).__name__})"
            try:
                json.dumps(arg, allow_nan=False)
            except RecursionError:
                _check_depth(arg, what, MAX_JSON_DEPTH - 1)
            except (TypeError, ValueError):
                raise TypeError(
                    f"{what} is not JSON-serializable: durable job arguments must be JSON "
                    "(str, int, float, bool, None, list, dict)"
                ) from None
        raise TypeError(f"job arguments are not JSON-serializable: {exc}") from None
    if _may_be_too_deep(text):
        for i, arg in enumerate(args):
            _check_depth(arg, f"argument {i} ({type(arg).__name__})", MAX_JSON_DEPTH - 1)
    return text


def encode_result(result: object) -> str:
    """JSON text of a job's result; ``TypeError`` if it is not JSON (or too deep)."""
    if result is None:  # most jobs return nothing
        return "null"
    try:
        text = _encode(result)
    except (TypeError, ValueError, RecursionError) as exc:
        what = f"the job's result ({type(result).__name__})"
        if isinstance(exc, RecursionError):
            _check_depth(result, what, MAX_JSON_DEPTH)
        raise TypeError(
            f"the job returned {type(result).__name__}, which is not JSON-serializable "
            f"(durable results are stored as JSON): {exc}"
        ) from None
    if _may_be_too_deep(text):
        _check_depth(result, f"the job's result ({type(result).__name__})", MAX_JSON_DEPTH)
    return text


class TaskOwner(Protocol):
    """What a task asks of the scheduler it is registered with (a
    :class:`~scheduler.Scheduler`): its ``submit``, ``submit_many`` and ``call``."""

    @property
    def submit(self) -> Callable[..., Awaitable[Job]]: ...

    @property
    def submit_many(self) -> Callable[..., Awaitable[list[Job]]]: ...

    @property
    def call(self) -> Callable[..., Awaitable[Any]]: ...


@dataclass(frozen=True, slots=True, eq=False)
class Task(Generic[P, R]):
    """A coroutine function registered with a scheduler under a stable name.

    Calling the task runs the function directly; :meth:`submit` stores a
    durable job for it in the backlog; :meth:`call` runs it in memory under
    its lane's ceiling.
    """

    fn: Callable[P, Awaitable[R]]
    name: str
    lane: str
    retry: RetryPolicy
    upstream: str | None
    timeout: float | None
    scheduler: TaskOwner
    fallback: Callable[..., Awaitable[Any]] | None = None
    cost: float | Callable[..., float] = 0

    def cost_of(self, args: tuple[Any, ...]) -> float:
        """Tokens one job with ``args`` draws from its upstream's token-rate limit."""
        if callable(self.cost):
            return float(self.cost(*args))
        return float(self.cost)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(*args, **kwargs)

    async def submit(
        self,
        *args: Any,
        priority: float = 0,
        key: str | None = None,
        run_at: float | None = None,
        delay: float | None = None,
        deadline: float | None = None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> Job:
        """Store a durable job running this task with ``args``; see :meth:`Scheduler.submit`.

        ``cost``: tokens this job draws from the upstream's token-rate limit
        (``None``: the task's ``cost``).
        """
        return await self.scheduler.submit(
            self,
            *args,
            priority=priority,
            key=key,
            run_at=run_at,
            delay=delay,
            deadline=deadline,
            cost=cost,
            tenant=tenant,
        )

    async def submit_many(
        self,
        args_list: Sequence[Sequence[Any]],
        *,
        keys: Sequence[str | None] | None = None,
        priority: float = 0,
        run_at: float | None = None,
        delay: float | None = None,
        deadline: float | None = None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """Store one durable job per item of ``args_list``, all in one transaction;
        see :meth:`Scheduler.submit_many`."""
        return await self.scheduler.submit_many(
            self,
            args_list,
            keys=keys,
            priority=priority,
            run_at=run_at,
            delay=delay,
            deadline=deadline,
            cost=cost,
            tenant=tenant,
        )

    async def call(
        self,
        *args: Any,
        priority: float = 0,
        deadline: float | None = None,
        tenant: str | None = None,
    ) -> R:
        """Run the task now, in memory, in its lane (no backlog row)."""
        result: R = await self.scheduler.call(
            self.fn,
            *args,
            lane=self.lane,
            priority=priority,
            deadline=deadline,
            timeout=self.timeout,
            upstream=self.upstream,
            tenant=tenant,
        )
        return result

    def __repr__(self) -> str:
        return f"<Task {self.name} lane={self.lane!r}>"


def check_task_function(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"@sched.task needs a coroutine function, got {type(fn).__name__}")
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"@sched.task needs a coroutine function (async def); "
            f"{getattr(fn, '__qualname__', fn)!r} is not one"
        )
