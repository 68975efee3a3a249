"""``floodgate jobs list|show|requeue|cancel``: look at and repair durable jobs in the backlog."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from scheduler import JobState
from scheduler.backlog import Backlog, JobRecord
from scheduler.lanes import MAX_TENANT_LENGTH

from ..backlog_access import add_backlog_args, display, open_backlog, resolve_backlog
from ..errors import EXIT_USAGE, CommandError
from ..textsafe import printable

__all__ = ["format_job", "format_jobs", "register"]

#: the most rows one read of the backlog returns (``--all`` reads page after page)
_PAGE = 10_000
#: rows per read when matching a tenant here (the backlog lists by state and lane only)
_SCAN_PAGE = _PAGE
_DURABLE = [
    s.value
    for s in (JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.DEAD, JobState.CANCELLED)
]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list, show, requeue and cancel durable jobs",
        description="Read or repair jobs in the backlog (no running worker "
        "needed; a running worker picks requeued jobs up at its next poll).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(handler=lambda args: _help(parser))

    lister = actions.add_parser("list", help="jobs, oldest first")
    lister.add_argument("--state", choices=_DURABLE, help="only jobs in this state")
    lister.add_argument("--lane", help="only jobs of this lane")
    how_many = lister.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit", type=int, default=50, help=f"at most this many (1..{_PAGE:,}; default 50)"
    )
    how_many.add_argument("--all", action="store_true", help="every matching job")
    lister.add_argument("--offset", type=int, default=0, help="skip this many first")
    lister.add_argument(
        "--tenant",
        help="only jobs of this tenant (filtered here, not in the backlog: reads the "
        "jobs page by page until it has enough, so a rare tenant in a big backlog takes "
        "a while)",
    )
    add_backlog_args(lister)
    lister.set_defaults(handler=_list)

    shower = actions.add_parser("show", help="one job: args, result, error and traceback")
    shower.add_argument("job_id", metavar="ID")
    add_backlog_args(shower)
    shower.set_defaults(handler=_show)

    requeuer = actions.add_parser("requeue", help="put a dead job (or all) back in the queue")
    which = requeuer.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", metavar="ID", nargs="?", help="the dead job to requeue")
    which.add_argument("--all-dead", action="store_true", help="every dead job")
    requeuer.add_argument("--lane", help="with --all-dead: only this lane's")
    add_backlog_args(requeuer)
    requeuer.set_defaults(handler=_requeue)

    canceller = actions.add_parser(
        "cancel",
        usage="%(prog)s (ID | --task T | --tenant X | --task T --tenant X) [options]",
        help="cancel a queued or running job (or all of a task's or a tenant's)",
        description="A queued job is cancelled at once and never starts; a running one is "
        "cancelled by the worker running it within about a second (it ends cancelled, "
        "never retried). A job that had already finished is left as it is. Give one job "
        "ID, or --task, --tenant or both (both: that task's jobs of that tenant).",
    )
    canceller.add_argument("job_id", metavar="ID", nargs="?", help="the job to cancel")
    canceller.add_argument("--task", help="every queued and running job of this task")
    canceller.add_argument("--tenant", help="every queued and running job of this tenant")
    add_backlog_args(canceller)
    canceller.set_defaults(handler=_cancel)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _list(args: argparse.Namespace) -> int:
    if not (args.all or 1 <= args.limit <= _PAGE) or args.offset < 0:
        raise CommandError(f"--limit must be 1..{_PAGE} and --offset >= 0", exit_code=2)
    if args.tenant == "":
        raise CommandError("--tenant needs a tenant's name", exit_code=2)
    path, _ = resolve_backlog(args)
    state = JobState(args.state) if args.state else None

    async def read() -> tuple[list[JobRecord], int, bool]:
        async with open_backlog(path, read_only=True) as backlog:
            counts = await backlog.counts()
            total = sum(
                n
                for lane, by_state in counts.items()
                if args.lane in (None, lane)
                for name, n in by_state.items()
                if state is None or name == state.value
            )
            if args.tenant is not None:
                page, more = await _tenant_jobs(backlog, state, args, total)
                return page, total, more
            if not args.all:
                page = await backlog.list_jobs(
                    state, args.lane, limit=args.limit, offset=args.offset
                )
                return page, total, False
            records: list[JobRecord] = []
            for _ in range(total // _PAGE + 2):  # bounded: rows added meanwhile wait for a rerun
                page = await backlog.list_jobs(
                    state, args.lane, limit=_PAGE, offset=args.offset + len(records)
                )
                records += page
                if len(page) < _PAGE:
                    break
            return records, total, False

    records, total, more_of_tenant = asyncio.run(read())
    print(format_jobs(records))
    next_offset = args.offset + len(records)
    if more_of_tenant:
        print(
            f"... more of tenant {printable(args.tenant)}: --limit N, --offset {next_offset} "
            "or --all"
        )
        return 0
    more = total - next_offset
    if args.tenant is None and records and more > 0:
        print(f"... {more:,} more (of {total:,}): --limit N, --offset {next_offset} or --all")
    return 0


async def _tenant_jobs(
    backlog: Backlog, state: JobState | None, args: argparse.Namespace, total: int
) -> tuple[list[JobRecord], bool]:
    """The page of ``args.tenant``'s jobs that ``--offset``/``--limit``/``--all`` ask
    for, and whether more follow. The backlog lists jobs by state and lane only, so
    the tenant is matched here, reading the jobs page by page (oldest first) until
    the page is full."""
    limit = None if args.all else args.limit
    found: list[JobRecord] = []
    skipped = read = 0
    for _ in range(total // _SCAN_PAGE + 2):  # bounded: rows added meanwhile wait for a rerun
        page = await backlog.list_jobs(state, args.lane, limit=_SCAN_PAGE, offset=read)
        read += len(page)
        for record in page:
            if record.tenant != args.tenant:
                continue
            if skipped < args.offset:
                skipped += 1
            elif limit is not None and len(found) == limit:
                return found, True
            else:
                found.append(record)
        if len(page) < _SCAN_PAGE:
            break
    return found, False


def _show(args: argparse.Namespace) -> int:
    path, _ = resolve_backlog(args)

    async def read() -> JobRecord | None:
        async with open_backlog(path, read_only=True) as backlog:
            return await backlog.get(args.job_id)

    record = asyncio.run(read())
    if record is None:
        raise CommandError(
            f"no job {args.job_id!r} in {display(path)} (never submitted, or purged)"
        )
    print(format_job(record))
    return 0


def _requeue(args: argparse.Namespace) -> int:
    if args.lane and not args.all_dead:
        raise CommandError("--lane goes with --all-dead", exit_code=2)
    path, _ = resolve_backlog(args)

    async def requeue() -> int:
        async with open_backlog(path) as backlog:
            if args.all_dead:
                return await backlog.requeue(all_dead=True, lane=args.lane, now=time.time())
            record = await backlog.get(args.job_id)
            if record is None:
                raise CommandError(f"no job {args.job_id!r} in {display(path)}")
            if record.state is not JobState.DEAD:
                raise CommandError(
                    f"job {args.job_id} is {record.state.value}; only dead jobs are requeued"
                )
            return await backlog.requeue(args.job_id, now=time.time())

    count = asyncio.run(requeue())
    print(f"requeued {count} job{'s' if count != 1 else ''}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    by_match = args.task is not None or args.tenant is not None
    if args.job_id is not None and by_match:
        raise CommandError(
            "give a job ID, or --task/--tenant, not both (an ID names one job already)",
            exit_code=EXIT_USAGE,
        )
    if args.job_id is None and not by_match:
        raise CommandError(
            "which jobs? give a job ID, --task T, --tenant X, or --task T --tenant X",
            exit_code=EXIT_USAGE,
        )
    for flag, value in (("--task", args.task), ("--tenant", args.tenant)):
        if value == "":
            raise CommandError(f"{flag} needs a name", exit_code=EXIT_USAGE)
    if args.tenant is not None and len(args.tenant) > MAX_TENANT_LENGTH:
        raise CommandError(
            f"--tenant is {len(args.tenant)} characters; a tenant has at most {MAX_TENANT_LENGTH}",
            exit_code=EXIT_USAGE,
        )
    path, _ = resolve_backlog(args)

    async def cancel() -> str:
        async with open_backlog(path) as backlog:
            if by_match:
                count = await backlog.cancel_task(args.task, now=time.time(), tenant=args.tenant)
                return f"cancelled {count} job{'s' if count != 1 else ''} {_whose(args)}"
            was = await backlog.cancel(args.job_id, now=time.time())
            if was is None:
                raise CommandError(f"no job {args.job_id!r} in {display(path)}")
            if was is JobState.QUEUED:
                return f"cancelled {args.job_id} (it was queued: it will not start)"
            if was is JobState.RUNNING:
                return f"asked the worker running {args.job_id} to cancel it"
            return f"job {args.job_id} had already finished ({was.value}): nothing to cancel"

    print(asyncio.run(cancel()))
    return 0


def _whose(args: argparse.Namespace) -> str:
    """``of TASK``, ``of tenant X`` or ``of TASK of tenant X`` (escaped for the terminal)."""
    parts = []
    if args.task is not None:
        parts.append(f"of {printable(args.task)}")
    if args.tenant is not None:
        parts.append(f"of tenant {printable(args.tenant)}")
    return " ".join(parts)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def format_jobs(records: list[JobRecord]) -> str:
    """One line per job: id, task, lane, tenant (when any listed job has one), state,
    attempts, last update, first line of error (control characters escaped)."""
    if not records:
        return "(no jobs)"
    tenants = any(r.tenant is not None for r in records)
    tenant_head = f" {'tenant':<16}" if tenants else ""
    header = (
        f"{'id':<32}  {'task':<24} {'lane':<12}{tenant_head} {'state':<8} {'tries':>5}  "
        f"{'updated':<19}  error"
    )
    rows = [header, "-" * len(header)]
    for r in records:
        error = printable(r.error.split("\n")[0])[:60] if r.error else ""
        job_id, task, lane = printable(r.id), printable(r.task), printable(r.lane)
        tenant = f" {printable(r.tenant or '-')[:16]:<16}" if tenants else ""
        tries = f"{r.attempts}/{r.max_attempts}"
        rows.append(
            f"{job_id:<32}  {task[:24]:<24} {lane[:12]:<12}{tenant} {r.state.value:<8} "
            f"{tries:>5}  {_when(r.updated_at):<19}  {error}".rstrip()
        )
    return "\n".join(rows)


def format_job(r: JobRecord) -> str:
    """Every field of one job, traceback last (control characters escaped; args and
    result as JSON, which escapes them itself)."""
    lease = r.lease_owner
    fields = [
        ("id", printable(r.id)),
        ("task", printable(r.task)),
        ("lane", printable(r.lane)),
        ("tenant", printable(r.tenant) if r.tenant is not None else "-"),
        ("state", r.state.value),
        ("attempts", f"{r.attempts} of {r.max_attempts}"),
        ("priority", f"{r.priority:g}"),
        ("key", printable(r.key) if r.key else "-"),
        ("created", _when(r.created_at)),
        ("updated", _when(r.updated_at)),
        ("run at", _when(r.run_at)),
        ("deadline", _when(r.deadline_at)),
        ("lease", f"{printable(lease)} until {_when(r.lease_until)}" if lease else "-"),
        ("cancel", f"requested {_when(r.cancel_requested_at)}" if r.cancel_requested_at else "-"),
        ("args", json.dumps(r.args)),
        ("result", json.dumps(r.result) if r.state is JobState.DONE else "-"),
        ("error", printable(r.error, multiline=True) if r.error else "-"),
    ]
    lines = [f"{name + ':':<10} {value}" for name, value in fields]
    if r.traceback:
        lines += ["traceback:", printable(r.traceback.rstrip(), multiline=True)]
    return "\n".join(lines)
