"""The Backlog protocol: where durable jobs live between ``submit`` and their end.

The life of a durable job::

    submit ─► QUEUED ──claim──► RUNNING ──complete(done)──► DONE ──purge──► (deleted)
               ▲  ▲ │             │ │ │
               │  └─┼─release─────┘ │ └──complete(dead)──► DEAD ──requeue──┐
               │    │               └──complete(retry, run_at)──┐          │
               └────┼───────────────────────────────────────────┴──────────┘
                    └─cancel──► CANCELLED ◄──complete(cancelled)── RUNNING (cancel requested)

Rules every implementation keeps (the contract suite in ``tests/backlog``
checks them against each backend):

- **Time is an argument.** Every method that needs the time takes ``now``
  (epoch seconds); a backlog never reads a clock, so tests control time and
  several processes share one time base.
- **Order.** ``claim`` takes the lane's due jobs (``QUEUED`` with
  ``run_at <= now``) by ``rank`` (lower first), then ``run_at``, then
  insertion order. ``rank`` is fixed at submit (:attr:`NewJob.rank`): the
  job's ``priority``, or on a lane with aging ``priority + run_at / aging``,
  the key under which every waiting job ages at the same rate (see
  :mod:`scheduler.lanes`). Retries, releases and requeues keep it, so a job
  never loses the age it has. A scheduled retry is just ``QUEUED`` with a
  future ``run_at``.
- **Leases.** A claim sets ``RUNNING``, adds one to ``attempts`` and lends the
  job to ``owner`` until ``lease_until``; ``heartbeat`` extends it. Once the
  lease has passed, the next ``claim`` on the lane may take the job over
  (another attempt), or, if its attempts are spent, moves it to ``DEAD``
  ("lease expired"), so a job that kills its worker cannot loop forever.
  A lease is *held* while the job is ``RUNNING`` with ``lease_owner == owner``
  (an expired lease nobody took over yet is still held); ``heartbeat``,
  ``complete`` and ``release`` from anyone else are ignored, not errors.
- **Lane ceilings across processes.** ``claim(..., max_running=n)`` takes at
  most ``n`` minus the lane's jobs ``RUNNING`` under a live lease
  (``lease_until > now``) of any *other* owner, counted and claimed
  atomically. The caller's own leases are left out because the caller knows
  better which of its jobs still run (one whose outcome is not written yet
  still holds its lease in the backlog): a caller running ``r`` jobs of the
  lane passes ``n = ceiling - r``, and every process doing so keeps the whole
  fleet at or under ``ceiling`` running jobs of that lane.
- **Idempotent submit.** A job with a ``key`` already in the backlog is not
  inserted again: ``submit`` returns the existing job, whatever its state.
- **Queue bounds.** A :class:`NewJob` with ``max_queued=n`` is stored only if
  its lane then holds fewer than ``n`` ``QUEUED`` jobs (scheduled retries
  included), counted atomically with the insert for the whole backlog (every
  process). Otherwise its ``submit`` call raises
  :class:`~scheduler.errors.Overloaded` and stores none of its jobs; other
  calls group-committed with it are unaffected. A job whose key is already
  stored needs no room.
- **Dead owners.** A backend that can tell a lease owner's process is gone
  (SQLite: same host, the pid is not that process any more; PostgreSQL: the
  owner's session advisory lock is free) ends that owner's leases at once when
  a claim finds them, as if they had expired (``backlog.dead_owner_reclaimed``
  is logged); anything it cannot judge waits for the lease.
- **Durability.** ``submit`` returns only once its jobs are stored.
- **Cancellation.** ``cancel(id)`` ends a ``QUEUED`` job ``CANCELLED`` at once,
  in one atomic step: a claim racing it either took the job first (then it is
  ``RUNNING``) or never sees it. On a ``RUNNING`` job it only records the
  request (``cancel_requested_at``); the lease holder learns of it
  (:meth:`Backlog.cancel_requested`, or a ``NOTIFY`` on PostgreSQL), cancels
  the job's task and writes ``Outcome.cancelled``. While a cancel is
  requested, a ``retry`` outcome, a ``release`` and a claim taking over an
  expired lease all end the job ``CANCELLED`` instead: it never runs again.
  ``done`` and ``dead`` outcomes still apply (the job ended first). A
  finished job (``DONE``, ``DEAD``, ``CANCELLED``) is left as it is.
- **Corrupt rows** (args/result not JSON, unknown state, ...) never crash a
  call: ``claim`` moves such a job to ``DEAD`` with ``error="corrupt row: ..."``
  and goes on; ``get``/``list_jobs`` return it with ``error`` set.
- **Bounded reads.** Nothing loads the whole backlog: reads are ``LIMIT``-ed.
- **Errors.** Every failure is a :class:`~scheduler.errors.BacklogError`; a lost
  or refused database connection is :class:`BacklogUnavailable` (retry later:
  the backend reconnects on its own).

Optional: a backend that can be told about new work (PostgreSQL ``LISTEN``;
SQLite watches ``PRAGMA data_version`` for other connections' commits)
also has ``async def wait_for_work(self, lane: str, timeout: float) -> None``
(see :class:`WaitsForWork`): it returns as soon as work may have become due
in ``lane`` (a submit, requeue, release or due retry in any process), or after
``timeout`` seconds at the latest. Callers still poll: a wake-up is a hint.

Optional: a backend that can write outcomes and claim in one transaction also
has ``complete_and_claim`` (see :class:`CompletesAndClaims`): exactly
``complete(outcomes, now=now)`` followed by ``claim(...)``, applied atomically
(one commit), so a worker that drains a lane pays one commit per cycle instead
of two. Callers fall back to the two calls when a backend lacks it.

Optional: ``submit_run(template, args_json, args, now=)`` (see
:class:`SubmitsRuns`) stores many jobs alike but for their args, as ``submit``
would store them one ``NewJob`` each, and returns their ids: ``submit_many``
without keys uses it. The built-in backends get it from ``BacklogBase``; the
SQLite one writes the run as one ``INSERT`` with no record per job. The SQLite
backlog also has ``open_run(template, count, now=)`` (see :class:`StreamsRuns`):
a big run is inserted, inside one transaction, while the caller is still
encoding it.

``stats()`` (plain, not async) returns the object's :class:`BacklogStats`. The
built-in backends get it, the open check and the argument checks from
:class:`~scheduler.backlog._template.BacklogBase` and implement its ``_``-prefixed
primitives; another backend may do the same or implement this protocol directly.
"""

from __future__ import annotations

import json
import json.scanner
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType, TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

from .._frozen import quick_init
from ..errors import (  # the backlog's errors, importable from here as before
    BacklogFull,
    BacklogLocked,
    BacklogUnavailable,
    Overloaded,
)
from ..jobs import JobState
from ._fair import FairPolicy

__all__ = [
    "CANCELLED_ERROR",
    "CANCEL_POLL",
    "DURABLE_STATES",
    "LEASE_LOST_FMT",
    "AsyncContext",
    "Backlog",
    "BacklogFull",
    "BacklogLocked",
    "BacklogStats",
    "BacklogUnavailable",
    "CompletesAndClaims",
    "JobRecord",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "PushesCancels",
    "RunWriter",
    "StreamsRuns",
    "SubmitsRuns",
    "WaitsForWork",
]

#: The states a durable job can be in.
DURABLE_STATES = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.DONE,
    JobState.DEAD,
    JobState.CANCELLED,
)

OutcomeKind = Literal["done", "retry", "dead", "cancelled"]

#: the ``error`` of a job ended by a cancel request
CANCELLED_ERROR = "cancelled on request"
#: seconds between a claimer's looks for cancel requests of the jobs it runs, on a
#: backend that cannot push them (SQLite, memory)
CANCEL_POLL = 0.25


@dataclass(frozen=True, slots=True)
class BacklogStats:
    """What one backlog object did, counted since it was made (this process's calls
    through it, not the whole shared backlog): ``backlog.stats()``, and
    ``Scheduler.stats().backlog``.

    Every backend counts ``submitted``, ``claimed``, ``applied`` and ``ignored`` the
    same way; a counter a backend has no use for stays 0 (the memory backlog has no
    commits, only PostgreSQL listens).
    """

    #: jobs handed back by ``submit`` calls (a job whose key was stored already counts:
    #: its record came back)
    submitted: int = 0
    #: jobs leased by ``claim`` and ``complete_and_claim``
    claimed: int = 0
    #: outcomes written (their lease was still held)
    applied: int = 0
    #: outcomes left unwritten (the lease was lost, or held by another attempt)
    ignored: int = 0
    #: write transactions (SQLite) or write statements (PostgreSQL)
    commits: int = 0
    #: group commits: transactions that wrote concurrent ``submit`` calls together
    submit_flushes: int = 0
    #: jobs of ``submit`` calls waiting for the next group commit (a gauge)
    pending_submits: int = 0
    #: wake-ups heard (PostgreSQL ``NOTIFY``)
    notified: int = 0
    #: times the listening connection was connected again (PostgreSQL)
    reconnects: int = 0
    #: a connection listens for wake-ups now (PostgreSQL)
    listening: bool = False
    #: jobs a claim took whose answer was lost with the connection, given back by the
    #: next claim (PostgreSQL)
    unheard_released: int = 0
    #: of ``commits``, the small writes run on the event loop's own thread, not the
    #: connection's (SQLite ``synchronous="NORMAL"``; see ``_sqlite_thread``)
    inline_commits: int = 0
    #: small writes that would have run inline but found the write lock held, and
    #: went to the connection's thread to wait for it (SQLite)
    inline_busy: int = 0

    def __getitem__(self, name: str) -> int:
        """``stats()["claimed"]``: the counters by name, as when ``stats()`` was a dict."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return int(getattr(self, name))


@quick_init
@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to store. ``args_json`` is a JSON array (the task's positional args).

    ``cost``: tokens the job draws from its upstream's token-rate limit when it
    starts; ``None`` means the task's default cost. ``max_queued``: refuse the
    job (``Overloaded``) if its lane already holds this many ``QUEUED`` jobs;
    ``None``: no bound. ``rank``: see :func:`job_rank`. ``args``: the decoded
    ``args_json`` when the caller has it (a submitter that encoded it), so the backlog
    need not decode it again; it is trusted to be ``json.loads(args_json)``.
    """

    task: str
    lane: str
    args_json: str
    priority: float = 0.0
    run_at: float = 0.0
    key: str | None = None
    max_attempts: int = 1
    deadline_at: float | None = None
    cost: float | None = None
    max_queued: int | None = None
    args: list[Any] | None = field(default=None, compare=False, repr=False)
    #: the claim-order key (lower first); ``None``: ``priority`` (a lane without aging)
    rank: float | None = None
    #: whose job it is (a customer, an API key): tenants share a lane fairly at claim
    tenant: str | None = None
    #: refuse the job (``Overloaded`` naming the tenant) if its tenant already has this
    #: many ``QUEUED`` jobs in the lane; ``None``: no bound
    tenant_max_queued: int | None = None
    #: the submitter's trace context (W3C ``traceparent``/``tracestate`` as a JSON object),
    #: restored around the job's attempts so one trace runs through the backlog
    trace: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class JobRecord:
    """A stored job as read back. ``args`` and ``result`` are decoded JSON."""

    id: str
    task: str
    lane: str
    args: list[Any]
    priority: float
    state: JobState
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    key: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    deadline_at: float | None = None
    #: tokens drawn from the upstream's token-rate limit; ``None``: the task's default
    cost: float | None = None
    #: when a cancel of the job was requested while it ran (``None``: never)
    cancel_requested_at: float | None = None
    #: the claim-order key (``priority``, or with aging ``priority + run_at / aging``);
    #: ``None`` reads as ``priority``
    rank: float | None = None
    #: whose job it is (``None``: nobody's; such jobs share a lane as one tenant)
    tenant: str | None = None
    #: the submitter's trace context (a JSON object of W3C headers), or ``None``
    trace: str | None = None

    @property
    def order(self) -> tuple[float, float]:
        """``(rank, run_at)``: the claim order (ties: insertion order)."""
        return (self.priority if self.rank is None else self.rank, self.run_at)


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """How one claimed attempt ended; build with :meth:`done`, :meth:`retry`, :meth:`dead`.

    ``done`` stores ``result_json`` (and clears any earlier error); ``retry``
    queues the job again at ``run_at`` keeping ``error``; ``dead`` ends it
    with ``error`` and ``traceback``; ``cancelled`` ends it ``CANCELLED`` (its
    task was cancelled on request).
    """

    job_id: str
    owner: str
    kind: OutcomeKind
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    run_at: float | None = None
    #: the claim this outcome belongs to (the job's ``attempts`` after that
    #: claim); when set, an outcome of an earlier attempt is ignored even if
    #: the same owner claimed the job again since
    attempt: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("done", "retry", "dead", "cancelled"):
            raise ValueError(
                f"outcome kind must be done, retry, dead or cancelled, not {self.kind!r}"
            )
        if self.kind == "retry" and self.run_at is None:
            raise ValueError("a retry outcome needs run_at")
        text = self.result_json
        if text is not None and text != "null":  # "null": the common no-result case
            decode_json(text, "result_json")

    @classmethod
    def done(
        cls, job_id: str, owner: str, result_json: str = "null", *, attempt: int | None = None
    ) -> Outcome:
        return cls(job_id, owner, "done", result_json=result_json, attempt=attempt)

    @classmethod
    def retry(
        cls,
        job_id: str,
        owner: str,
        *,
        run_at: float,
        error: str,
        traceback: str | None = None,
        attempt: int | None = None,
    ) -> Outcome:
        return cls(
            job_id, owner, "retry", error=error, traceback=traceback, run_at=run_at, attempt=attempt
        )

    @classmethod
    def dead(
        cls,
        job_id: str,
        owner: str,
        *,
        error: str,
        traceback: str | None = None,
        attempt: int | None = None,
    ) -> Outcome:
        return cls(job_id, owner, "dead", error=error, traceback=traceback, attempt=attempt)

    @classmethod
    def cancelled(cls, job_id: str, owner: str, *, attempt: int | None = None) -> Outcome:
        return cls(job_id, owner, "cancelled", error=CANCELLED_ERROR, attempt=attempt)


def _fast_loads() -> Callable[[str], Any]:
    """``json.loads`` for text a Floodgate encoder wrote: CPython's C scanner called
    directly when the text starts with a value and ends with it (what ``loads``
    checks with two regular-expression matches and two Python calls); anything
    else (whitespace around, extra data, invalid) goes to ``json.loads`` itself, so
    the answer, and every error, is ``json.loads``'s."""
    make = getattr(json.scanner, "c_make_scanner", None)
    if make is None:  # no C accelerator (e.g. PyPy)
        return json.loads
    scan = make(json.JSONDecoder())
    loads = json.loads

    def fast(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except (StopIteration, ValueError, TypeError):
            return loads(text)
        return value if end == len(text) else loads(text)

    return fast


#: ``json.loads``, faster on compact text (args and results are stored compact)
loads_json: Callable[[str], Any] = _fast_loads()


def decode_json(text: str, what: str) -> Any:
    """``json.loads`` with a ``ValueError`` that names the field."""
    try:
        return loads_json(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def decode_args(text: str) -> list[Any]:
    """Decode a stored ``args`` column; ``ValueError`` unless it is a JSON array."""
    args = decode_json(text, "args")
    if not isinstance(args, list):
        raise ValueError(f"args is not a JSON array: {text[:80]!r}")
    return args


def validate_new_job(job: NewJob) -> list[Any]:
    """Reject a malformed :class:`NewJob` before it is stored; return its decoded args."""
    check_new_job(job)
    return decode_args(job.args_json) if job.args is None else job.args


def check_new_job(job: NewJob) -> None:
    """Reject a malformed :class:`NewJob` before it is stored (its args aside)."""
    if not job.task or not job.lane:
        raise ValueError(f"a job needs a task and a lane, got {job.task!r}/{job.lane!r}")
    if math.isnan(job.priority) or math.isnan(job.run_at):
        raise ValueError("priority and run_at must be numbers, not NaN")
    if job.rank is not None and not math.isfinite(job.rank):
        raise ValueError(f"rank must be a finite number or None, got {job.rank!r}")
    if job.max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {job.max_attempts}")
    if job.cost is not None:
        if isinstance(job.cost, bool) or not isinstance(job.cost, int | float):
            raise ValueError(f"cost must be a number or None, got {job.cost!r}")
        if not math.isfinite(job.cost) or job.cost < 0:
            raise ValueError(f"cost must be a finite number >= 0, got {job.cost!r}")
    for name, bound in (
        ("max_queued", job.max_queued),
        ("tenant_max_queued", job.tenant_max_queued),
    ):
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, int) or bound < 0
        ):
            raise ValueError(f"{name} must be an int >= 0 or None, got {bound!r}")
    if job.tenant is not None and (not isinstance(job.tenant, str) or not job.tenant):
        raise ValueError(f"tenant must be a non-empty str or None, got {job.tenant!r}")
    if job.trace is not None and not isinstance(job.trace, str):
        raise ValueError(f"trace must be a JSON object text or None, got {job.trace!r}")


#: ``retry_after`` of an ``Overloaded`` raised by a backlog (the scheduler re-raises it
#: with the lane's own estimate)
FULL_RETRY_AFTER = 1.0


def admit(
    calls: Sequence[Sequence[NewJob]],
    queued: Mapping[str, int],
    stored_keys: Collection[str],
    tenant_queued: Mapping[tuple[str, str], int] | None = None,
) -> list[Overloaded | None]:
    """Which submit calls of a batch fit their lanes' ``max_queued``, in order.

    ``queued``: each bounded lane's ``QUEUED`` count before the batch (read
    under the lock that the insert is made under); ``tenant_queued``: the
    same per ``(lane, tenant)`` for jobs with a ``tenant_max_queued``;
    ``stored_keys``: the batch's keys already stored. A call is admitted whole
    (``None``) or refused whole (its ``Overloaded``); an admitted call's new
    jobs count against the calls after it. A key stored already, or by an
    admitted call earlier in the batch, needs no room.
    """
    counts = dict(queued)
    tenants = dict(tenant_queued or {})
    keys = set(stored_keys)
    verdicts: list[Overloaded | None] = []
    for jobs in calls:
        added: dict[str, int] = {}
        added_t: dict[tuple[str, str], int] = {}
        new_keys: set[str] = set()
        refused: Overloaded | None = None
        for job in jobs:
            if job.key is not None:
                if job.key in keys or job.key in new_keys:
                    continue
                new_keys.add(job.key)
            n = counts.get(job.lane, 0) + added.get(job.lane, 0)
            if job.max_queued is not None and n >= job.max_queued:
                refused = Overloaded(job.lane, FULL_RETRY_AFTER, queued=counts.get(job.lane, 0))
                break
            if job.tenant is not None:
                flow = (job.lane, job.tenant)
                t = tenants.get(flow, 0) + added_t.get(flow, 0)
                if job.tenant_max_queued is not None and t >= job.tenant_max_queued:
                    refused = Overloaded(
                        job.lane, FULL_RETRY_AFTER, queued=tenants.get(flow, 0), tenant=job.tenant
                    )
                    break
                added_t[flow] = added_t.get(flow, 0) + 1
            added[job.lane] = added.get(job.lane, 0) + 1
        if refused is None:
            for lane, n in added.items():
                counts[lane] = counts.get(lane, 0) + n
            for flow, n in added_t.items():
                tenants[flow] = tenants.get(flow, 0) + n
            keys |= new_keys
        verdicts.append(refused)
    return verdicts


def bounded_tenants(calls: Iterable[Sequence[NewJob]]) -> list[tuple[str, str]]:
    """The ``(lane, tenant)`` pairs (sorted) that some job of ``calls`` has a
    ``tenant_max_queued`` for."""
    return sorted(
        {
            (job.lane, job.tenant)
            for jobs in calls
            for job in jobs
            if job.tenant is not None and job.tenant_max_queued is not None
        }
    )


def bounded_lanes(calls: Iterable[Sequence[NewJob]]) -> list[str]:
    """The lanes (sorted) that some job of ``calls`` has a ``max_queued`` for."""
    return sorted({job.lane for jobs in calls for job in jobs if job.max_queued is not None})


def job_rank(priority: float, run_at: float, aging: float | None) -> float:
    """The claim-order key of a job due at ``run_at`` (epoch s) in a lane with
    ``aging`` (seconds per priority level; ``None``: no aging).

    Waiting ``aging`` seconds is worth one priority level: at time ``t`` a job's
    effective priority is ``priority - (t - run_at) / aging``, which differs from
    this fixed key by ``t / aging``, the same for every job of the lane, so the
    order by key is the order by effective priority, without re-sorting.
    """
    return float(priority) if aging is None else float(priority) + float(run_at) / aging


def new_job_id() -> str:
    """A fresh job id: 32 hex digits, milliseconds since the epoch (12) then 80 random
    bits (20). Time-ordered, so inserts land at the end of the id index (uuid4's land
    anywhere in it), and as hard to guess as before: ids may be handed to users."""
    return new_job_ids(1)[0]


def new_job_ids(n: int) -> list[str]:
    """``n`` fresh job ids (see :func:`new_job_id`), with one clock read and one
    ``os.urandom`` call for all of them."""
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    noise = os.urandom(10 * n).hex()
    return [stamp + noise[i : i + 20] for i in range(0, 20 * n, 20)]


def new_record(job: NewJob, args: list[Any], now: float, job_id: str | None = None) -> JobRecord:
    """The record of a job about to be stored: ``QUEUED``, no attempts, ``job_id`` (a
    fresh one if ``None``). Positional, in ``JobRecord``'s field order (a call by
    keyword costs more than the rest of this; tests pin the order)."""
    priority = float(job.priority)
    return JobRecord(
        new_job_id() if job_id is None else job_id, job.task, job.lane, args, priority,
        JobState.QUEUED, 0, job.max_attempts, float(job.run_at), now, now, job.key,
        None, None, None, None, None, job.deadline_at,
        None if job.cost is None else float(job.cost), None,
        priority if job.rank is None else float(job.rank), job.tenant, job.trace,
    )  # fmt: skip


def corrupt(detail: str) -> str:
    """The ``error`` text of a job whose stored row could not be decoded."""
    return f"corrupt row: {detail}"


#: printf-style ``error`` of a job whose last attempt's lease expired (attempts, max_attempts).
LEASE_LOST_FMT = "lease expired on attempt %d of %d (worker lost or stuck)"


def lease_lost_error(attempts: int, max_attempts: int) -> str:
    """The ``error`` of a job whose last attempt's lease expired."""
    return LEASE_LOST_FMT % (attempts, max_attempts)


@runtime_checkable
class Backlog(Protocol):
    """Durable job storage shared by every process that opens the same backlog."""

    async def open(self) -> None:
        """Connect and create or migrate the schema. Call once before anything else."""
        ...

    async def close(self) -> None:
        """Finish pending writes and disconnect. Idempotent."""
        ...

    async def submit(self, jobs: Sequence[NewJob], *, now: float) -> list[JobRecord]:
        """Store ``jobs`` (one record back per job, same order) once committed.

        A job whose ``key`` is already stored (or earlier in ``jobs``) is not
        inserted: its existing record comes back instead.
        """
        ...

    async def claim(
        self,
        lane: str,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        now: float,
        max_running: int | None = None,
        tenants: FairPolicy | None = None,
    ) -> list[JobRecord]:
        """Lease up to ``limit`` due jobs of ``lane`` to ``owner``, in claim order.

        With ``max_running``, take at most ``max_running`` minus the lane's jobs
        ``RUNNING`` under a live lease (``lease_until > now``) of any owner but
        ``owner``, counted and claimed atomically: the room left under the lane's
        fleet-wide ceiling once the caller's own running jobs are subtracted
        from ``max_running`` by the caller.

        While the lane's ``QUEUED`` jobs name tenants, expired leases are taken
        over first and the other slots go to the tenants in fair turns
        (:mod:`scheduler.backlog._fair`), weighted and bounded by ``tenants``
        (``None``: equal weights, no bound); a tenant's ``max_in_flight`` counts
        its live leases of every owner.
        """
        ...

    async def heartbeat(
        self, job_ids: Sequence[str], *, owner: str, lease_seconds: float, now: float
    ) -> int:
        """Extend leases still held by ``owner`` to ``now + lease_seconds``; count them."""
        ...

    async def complete(self, outcomes: Sequence[Outcome], *, now: float) -> int:
        """Apply outcomes whose lease is still held; return how many applied."""
        ...

    async def release(self, job_ids: Sequence[str], *, owner: str, now: float) -> int:
        """Give leases back unrun (shutdown): RUNNING -> QUEUED, ``attempts - 1``."""
        ...

    async def get(self, job_id: str) -> JobRecord | None:
        """The job, or ``None`` if there is no such id (or it was purged)."""
        ...

    async def list_jobs(
        self,
        state: JobState | None = None,
        lane: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Jobs in insertion order, optionally filtered; at most ``limit``."""
        ...

    async def requeue(
        self,
        job_id: str | None = None,
        *,
        all_dead: bool = False,
        lane: str | None = None,
        now: float,
    ) -> int:
        """DEAD -> QUEUED (attempts 0, ``run_at = now``, error kept); count them.

        Either one ``job_id`` or ``all_dead=True`` (optionally only ``lane``).
        """
        ...

    async def cancel(self, job_id: str, *, now: float) -> JobState | None:
        """Cancel one job; the state it was in when the request landed (``None``: no such job).

        ``QUEUED``: it is ``CANCELLED`` now. ``RUNNING``: the request is recorded
        for its lease holder (see the module docstring). Anything else: it had
        finished already and is left as it is.
        """
        ...

    async def cancel_task(self, task: str | None, *, now: float, tenant: str | None = None) -> int:
        """:meth:`cancel` every ``QUEUED`` and ``RUNNING`` job of ``task`` (``None``: any
        task) of ``tenant`` (``None``: any tenant, with or without one); count them.
        At least one of the two is needed."""
        ...

    async def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        """Those of ``job_ids`` that are ``RUNNING`` with a cancel requested."""
        ...

    async def counts(self) -> dict[str, dict[str, int]]:
        """``{lane: {state value: n}}``; states with no jobs are left out."""
        ...

    async def purge(self, finished_before: float) -> int:
        """Delete DONE and CANCELLED jobs last updated before ``finished_before``; count them."""
        ...

    async def queued_count(self, lane: str, *, limit: int | None = None) -> int:
        """QUEUED jobs in ``lane`` (scheduled retries included), counting at most ``limit``."""
        ...

    async def queued_by_tenant(self, lane: str, *, limit: int = 10) -> list[tuple[str, int]]:
        """The ``limit`` tenants with the most ``QUEUED`` jobs in ``lane``: ``(tenant, n)``,
        most first (jobs without a tenant are left out)."""
        ...

    def stats(self) -> BacklogStats:
        """This object's counters (plain, not async; readable open or closed)."""
        ...


@runtime_checkable
class WaitsForWork(Protocol):
    """A backlog that can wake idle claimers when work arrives (optional)."""

    async def wait_for_work(self, lane: str, timeout: float) -> None:
        """Return when work may have become due in ``lane``, or after ``timeout`` s."""
        ...


@runtime_checkable
class CompletesAndClaims(Protocol):
    """A backlog that can write outcomes and claim in one transaction (optional)."""

    async def complete_and_claim(
        self,
        outcomes: Sequence[Outcome],
        lane: str,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        now: float,
        max_running: int | None = None,
        tenants: FairPolicy | None = None,
    ) -> tuple[int, list[JobRecord]]:
        """``complete(outcomes, now=now)`` then ``claim(lane, limit, ...)``, atomically.

        Returns how many outcomes applied and the claimed records (in claim
        order). A failure stores neither the outcomes nor the claim.
        """
        ...


@runtime_checkable
class SubmitsRuns(Protocol):
    """A backlog that stores many jobs alike but for their args at once (optional)."""

    async def submit_run(
        self,
        template: NewJob,
        args_json: Sequence[str],
        args: Sequence[list[Any]],
        *,
        now: float,
    ) -> list[str]:
        """Store one job per item of ``args_json``, each ``template`` but for its args
        (``args``: each one decoded; ``template`` has no key), all or none as
        :meth:`Backlog.submit`; the new jobs' ids, in order."""
        ...


class RunWriter(Protocol):
    """A run being stored while it is encoded (:meth:`StreamsRuns.open_run`)."""

    def add(self, args_json: list[str]) -> list[str]:
        """The next jobs' args texts, in order; their new ids."""
        ...

    async def started(self) -> None:
        """Wait until the backlog has begun storing the run (or failed to)."""
        ...

    async def finish(self) -> None:
        """All jobs were added: store them, all or none, as :meth:`Backlog.submit`
        (raises as it does: ``Overloaded``, ``BacklogError``)."""
        ...

    def abort(self, why: str) -> None:
        """Store none of them (a bad item, a cancelled caller)."""
        ...


@runtime_checkable
class StreamsRuns(Protocol):
    """A backlog that starts storing a big run before all of it is encoded (optional)."""

    def open_run(self, template: NewJob, count: int, *, now: float) -> RunWriter:
        """Start storing ``count`` jobs, each ``template`` but for its args (no key),
        added to the returned writer in order; nothing is stored unless all ``count``
        are added and :meth:`RunWriter.finish` is awaited."""
        ...


def with_args(
    template: NewJob,
    args_json: str,
    args: list[Any] | None,
    key: str | EllipsisType | None = ...,
) -> NewJob:
    """``template`` with a job's own args (and ``key``, if given: the template's
    otherwise). Positional, in ``NewJob``'s field order (tests pin it)."""
    t = template
    own_key = t.key if isinstance(key, EllipsisType) else key
    return NewJob(
        t.task, t.lane, args_json, t.priority, t.run_at, own_key, t.max_attempts,
        t.deadline_at, t.cost, t.max_queued, args, t.rank, t.tenant, t.tenant_max_queued,
        t.trace,
    )  # fmt: skip


@runtime_checkable
class PushesCancels(Protocol):
    """A backlog that tells its claimers of cancel requests as they land (optional)."""

    def on_cancel(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(job_id)`` for each cancel request of a running job heard
        from any process; returns the call that stops it. A hint: claimers still look
        now and then (:meth:`Backlog.cancel_requested`)."""
        ...


def claim_room(limit: int, max_running: int | None, running: int) -> int:
    """How many jobs a claim may take: ``limit``, capped by a lane ceiling's free room."""
    if max_running is None:
        return max(0, limit)
    return max(0, min(limit, max_running - running))


def may_claim(limit: int, max_running: int | None) -> bool:
    """Whether a claim could take anything at all (before counting other owners)."""
    return limit > 0 and (max_running is None or max_running > 0)


def check_cancel_match(task: str | None, tenant: str | None) -> None:
    """``cancel_task`` needs a task, a tenant, or both (never "every job")."""
    if task is None and tenant is None:
        raise ValueError("cancel_task needs task= or tenant= (or both)")


def check_requeue_args(job_id: str | None, all_dead: bool) -> None:
    if (job_id is not None) != all_dead:
        return
    raise ValueError("requeue takes either a job_id or all_dead=True, not both or neither")


class AsyncContext:
    """``async with backlog:`` opens it and closes it again (for the backends to inherit)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
