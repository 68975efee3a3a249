"""The admin app: routes, the token rule and error mapping.

Reading is open to whoever reaches the app; changing anything (requeue,
pause, resume) needs ``Authorization: Bearer <token>``. Without a token the
app is read-only: every mutating endpoint answers 403 and the dashboard hides
its buttons. (The worker refuses to bind a non-loopback address without a
token, so "no auth" only ever means "read-only, this machine only".)
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import BacklogError, ConfigError, SchedulerClosed, SchedulerError, UnknownJob
from ..jobs import JobState
from ..scheduler import Scheduler
from .dashboard import DASHBOARD_HTML
from .prometheus import SchedulerCollector
from .status import job_json, status_json

__all__ = ["admin_app"]

Handler = Callable[[Request], Awaitable[Response]]

#: seconds /readyz waits for the backlog before calling it unreachable
_READY_TIMEOUT = 2.0
_MAX_LIMIT = 1000
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
)


def admin_app(
    sched: Scheduler, *, token: str | None = None, read_only: bool | None = None
) -> Starlette:
    """The admin ASGI app for ``sched``; mount it anywhere (``app.mount("/admin", ...)``).

    Args:
        token: the bearer token that mutating endpoints require.
        read_only: refuse every mutation (403). Defaults to ``token is None``;
            ``read_only=False`` needs a token.

    Endpoints: ``GET /`` dashboard, ``/healthz``, ``/readyz``, ``/metrics``,
    ``/api/status``, ``/api/jobs?state=&lane=&limit=&offset=``, ``/api/jobs/{id}``;
    ``POST /api/jobs/{id}/requeue``, ``/api/jobs/requeue-dead``,
    ``/api/gate/pause`` (JSON ``{"reason": ...}``), ``/api/gate/resume``.
    """
    if not isinstance(sched, Scheduler):
        raise TypeError(f"admin_app() needs a Scheduler, got {type(sched).__name__}")
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError("token must be a non-empty str or None")
    if read_only is None:
        read_only = token is None
    elif not read_only and token is None:
        raise ConfigError("read_only=False needs a token: mutations are never unauthenticated")
    admin = _Admin(sched, token, read_only)
    return Starlette(routes=admin.routes())


class _Admin:
    def __init__(self, sched: Scheduler, token: str | None, read_only: bool) -> None:
        self.sched = sched
        self.token = token
        self.read_only = read_only
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SchedulerCollector(sched)
        self.registry.register(self.collector)

    def routes(self) -> list[Route]:
        mutate = self._mutation
        return [
            Route("/", self.dashboard, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/api/status", self.status, methods=["GET"]),
            Route("/api/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/jobs/requeue-dead", mutate(self.requeue_dead), methods=["POST"]),
            Route("/api/jobs/{job_id}", self.show_job, methods=["GET"]),
            Route("/api/jobs/{job_id}/requeue", mutate(self.requeue_job), methods=["POST"]),
            Route("/api/gate/pause", mutate(self.pause), methods=["POST"]),
            Route("/api/gate/resume", mutate(self.resume), methods=["POST"]),
        ]

    # -- auth -----------------------------------------------------------------------

    def _mutation(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if self.read_only or self.token is None:
                return _error(
                    403, "the admin API is read-only: start it with a token to allow changes"
                )
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return _error(401, "missing or wrong bearer token", auth=True)
            try:
                return await handler(request)
            except SchedulerError as exc:
                return _scheduler_error(exc)

        return guarded

    # -- pages and probes -----------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        return HTMLResponse(
            DASHBOARD_HTML,
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"},
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        stats = self.sched.stats()
        problems = []
        if stats.state != "running":
            problems.append(f"scheduler is {stats.state}")
        backlog = "none"
        if stats.state == "running" and any(ln.durable for ln in stats.lanes.values()):
            try:
                async with asyncio.timeout(_READY_TIMEOUT):
                    await self.sched.backlog_counts()
                backlog = "ok"
            except TimeoutError:
                backlog = f"no answer within {_READY_TIMEOUT:g}s"
                problems.append(f"backlog: {backlog}")
            except SchedulerError as exc:
                backlog = str(exc)
                problems.append(f"backlog: {backlog}")
        body = {
            "ready": not problems,
            "state": stats.state,
            "backlog": backlog,
            "gate": {"open": stats.gate_open, "reason": stats.gate_reason},
            "problems": problems,
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    async def metrics(self, request: Request) -> Response:
        await self.collector.refresh()
        # text format 0.0.4 by default; OpenMetrics when the scraper asks for it
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(self.registry), headers={"Content-Type": content_type})

    # -- reading --------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        stats = self.sched.stats()
        backlog: dict[str, dict[str, int]] | None = None
        error = None
        if any(ln.durable for ln in stats.lanes.values()):
            try:
                backlog = await self.sched.backlog_counts()
            except SchedulerError as exc:
                error = str(exc)
        body = status_json(stats, backlog, backlog_error=error, read_only=self.read_only)
        return JSONResponse(body)

    async def list_jobs(self, request: Request) -> Response:
        query = request.query_params
        try:
            state = JobState(query["state"]) if query.get("state") else None
            limit = int(query.get("limit", "100"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            states = ", ".join(s.value for s in JobState)
            return _error(400, f"state is one of {states}; limit and offset are integers")
        if not 1 <= limit <= _MAX_LIMIT or offset < 0:
            return _error(400, f"limit must be 1..{_MAX_LIMIT} and offset >= 0")
        lane = query.get("lane") or None
        try:
            jobs = await self.sched.jobs(state, lane=lane, limit=limit, offset=offset)
        except SchedulerError as exc:
            return _scheduler_error(exc)
        return JSONResponse({"jobs": [job_json(job) for job in jobs]})

    async def show_job(self, request: Request) -> Response:
        try:
            job = await self.sched.job(request.path_params["job_id"])
            result = await job.result() if job.state is JobState.DONE else None
        except SchedulerError as exc:
            return _scheduler_error(exc)
        return JSONResponse(job_json(job, result=result, with_traceback=True))

    # -- changing -------------------------------------------------------------------

    async def requeue_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await self.sched.job(job_id)
        if job.state is not JobState.DEAD:
            return _error(409, f"job {job_id} is {job.state.value}; only dead jobs are requeued")
        return JSONResponse({"requeued": await self.sched.requeue(job_id)})

    async def requeue_dead(self, request: Request) -> Response:
        lane = request.query_params.get("lane") or None
        return JSONResponse({"requeued": await self.sched.requeue(all_dead=True, lane=lane)})

    async def pause(self, request: Request) -> Response:
        reason = "paused from the admin API"
        if await request.body():
            try:
                body: Any = await request.json()
            except ValueError:
                return _error(400, 'the body must be JSON: {"reason": "..."}')
            given = body.get("reason") if isinstance(body, dict) else None
            if given is not None and (not isinstance(given, str) or not given.strip()):
                return _error(400, "reason must be a non-empty string")
            reason = given.strip() if given else reason
        self.sched.gate.pause(reason)
        return JSONResponse(self._gate())

    async def resume(self, request: Request) -> Response:
        self.sched.gate.resume()
        return JSONResponse(self._gate())

    def _gate(self) -> dict[str, Any]:
        gate = self.sched.gate
        return {"gate": {"open": gate.is_open, "reason": gate.reason}}


def _error(status: int, message: str, *, auth: bool = False) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="floodgate"'} if auth else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _scheduler_error(exc: SchedulerError) -> JSONResponse:
    if isinstance(exc, UnknownJob):
        return _error(404, str(exc))
    if isinstance(exc, SchedulerClosed | BacklogError):
        return _error(503, str(exc))
    if isinstance(exc, ConfigError):
        return _error(400, str(exc))
    return _error(500, f"{type(exc).__name__}: {exc}")
