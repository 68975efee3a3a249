"""The admin app: routes, the token and Host rules, and error mapping.

Changing anything (requeue, pause, resume) needs ``Authorization: Bearer
<token>``. Without a token the app is read-only: every mutating endpoint
answers 403 and the dashboard hides its buttons. Reading is open on a
loopback bind only: a *public* app (bound to a non-loopback address, or
accepting a non-loopback ``Host``) needs a token, and then every endpoint but
``/healthz`` and ``/readyz`` asks for it (``Bearer``, or ``Basic`` with the
token as the password, so a browser can sign in to the dashboard). Every
endpoint but the probes answers only a ``Host`` it serves (421 otherwise),
which defeats DNS rebinding. The rules live in :mod:`scheduler.asgi.access`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import BacklogError, ConfigError, SchedulerClosed, SchedulerError, UnknownJob
from ..jobs import JobState
from ..scheduler import Scheduler
from .access import HostPolicy, check_token, token_matches
from .dashboard import DASHBOARD_HTML
from .history import History, history_for
from .prometheus import SchedulerCollector
from .status import job_json, status_json

__all__ = ["admin_app"]

Handler = Callable[[Request], Awaitable[Response]]

#: seconds /readyz waits for the backlog before calling it unreachable
_READY_TIMEOUT = 2.0
_MAX_LIMIT = 1000
#: answered to anyone, whatever the Host: orchestrators probe by pod IP, and they hold no job data
_PROBES = frozenset({"/healthz", "/readyz"})
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
)


def admin_app(
    sched: Scheduler,
    *,
    token: str | None = None,
    read_only: bool | None = None,
    bind: str | tuple[str, int] | None = None,
    allowed_hosts: Iterable[str] = (),
    history: History | None = None,
) -> Starlette:
    """The admin ASGI app for ``sched``; mount it anywhere (``app.mount("/admin", ...)``).

    Args:
        token: the bearer token that mutating endpoints require: at least 16
            printable ASCII characters without spaces (else ``ConfigError``).
        read_only: refuse every mutation (403). Defaults to ``token is None``;
            ``read_only=False`` needs a token.
        bind: where the app is served, ``"HOST:PORT"`` or ``(host, port)``
            (``floodgate worker --admin`` passes its own). A non-loopback bind
            needs a token, and then reads need it too. ``None`` (mounted in
            another app): requests must name ``localhost``, ``127.0.0.1`` or
            ``[::1]`` (any port) unless ``allowed_hosts`` says otherwise.
        allowed_hosts: ``Host`` values served besides the bind's own:
            ``"name"`` (any port) or ``"name:port"``; ``"*"`` accepts any (only
            behind a proxy that checks ``Host``). A non-loopback entry makes the
            app public, so it needs a token.
        history: where the dashboard's charts come from; defaults to the
            scheduler's own :class:`~scheduler.asgi.history.History` (the last
            15 minutes at 1 s, sampled on its clock from now on, or from the
            first request when no event loop runs yet).

    Endpoints: ``GET /`` dashboard, ``/healthz``, ``/readyz``, ``/metrics``,
    ``/api/status``, ``/api/history?since=``, ``/api/jobs?state=&lane=&limit=&offset=``,
    ``/api/jobs/{id}``;
    ``POST /api/jobs/{id}/requeue``, ``/api/jobs/{id}/cancel``, ``/api/jobs/requeue-dead``,
    ``/api/jobs/cancel`` (JSON ``{"task": ..., "tenant": ...}``, one or both),
    ``/api/gate/pause`` (JSON ``{"reason": ..., "fleet": false}``), ``/api/gate/resume``
    (JSON ``{"fleet": false}``; ``fleet: true`` reaches every process on the backlog).
    """
    if not isinstance(sched, Scheduler):
        raise TypeError(f"admin_app() needs a Scheduler, got {type(sched).__name__}")
    if token is not None:
        check_token(token)
    if read_only is None:
        read_only = token is None
    elif not read_only and token is None:
        raise ConfigError("read_only=False needs a token: mutations are never unauthenticated")
    hosts = HostPolicy.build(bind, allowed_hosts)
    if hosts.public and token is None:
        raise ConfigError(
            f"a public admin app needs a token ({hosts.reason}): without one it serves "
            "loopback only"
        )
    history = history if history is not None else history_for(sched)
    with contextlib.suppress(RuntimeError):  # no running loop yet: the first request starts it
        asyncio.get_running_loop()
        history.start()
    admin = _Admin(sched, token, read_only, history)
    guard = Middleware(
        _Guard, hosts=hosts, token=token if hosts.public else None, on_request=history.start
    )
    return Starlette(routes=admin.routes(), middleware=[guard])


class _Guard:
    """Refuses a ``Host`` the app does not serve (421) and, on a public app, requests
    without the token (401), before any route runs; the probes pass."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: HostPolicy,
        token: str | None,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.on_request()
        if scope["type"] != "http" or _route_path(scope) in _PROBES:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        default_port = 443 if scope.get("scheme") == "https" else 80
        refusal = self.hosts.refusal(headers.get("host"), default_port)
        if refusal is not None:
            await _error(*refusal)(scope, receive, send)
            return
        if self.token is not None and not token_matches(
            headers.get("authorization", ""), self.token, basic=True
        ):
            # the page gets a Basic challenge, so a browser asks for the token (as the password)
            page = _route_path(scope) in ("", "/")
            message = "this admin API is public: every endpoint but the probes needs the token"
            await _error(401, message, auth="Basic" if page else "Bearer")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path inside this app, wherever it is mounted."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class _Admin:
    def __init__(
        self, sched: Scheduler, token: str | None, read_only: bool, history: History
    ) -> None:
        self.sched = sched
        self.history = history
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
            Route("/api/history", self.show_history, methods=["GET"]),
            Route("/api/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/jobs/requeue-dead", mutate(self.requeue_dead), methods=["POST"]),
            Route("/api/jobs/cancel", mutate(self.cancel_matching), methods=["POST"]),
            Route("/api/jobs/{job_id}", self.show_job, methods=["GET"]),
            Route("/api/jobs/{job_id}/requeue", mutate(self.requeue_job), methods=["POST"]),
            Route("/api/jobs/{job_id}/cancel", mutate(self.cancel_job), methods=["POST"]),
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
            # Bearer only: a browser sends Basic credentials on its own, even cross-site
            if not token_matches(request.headers.get("authorization", ""), self.token, basic=False):
                return _error(401, "missing or wrong bearer token", auth="Bearer")
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

    async def show_history(self, request: Request) -> Response:
        raw = request.query_params.get("since")
        try:
            since = float(raw) if raw else None
        except ValueError:
            return _error(400, "since is a number (epoch seconds)")
        return JSONResponse(self.history.json(since))

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

    async def cancel_job(self, request: Request) -> Response:
        """``{"cancelled": true}`` if the job was queued or running (a running one
        stops within about a second), ``false`` with its ``state`` if it had finished."""
        job_id = request.path_params["job_id"]
        cancelled = await self.sched.cancel(job_id)
        job = await self.sched.job(job_id)
        return JSONResponse({"cancelled": cancelled, "state": job.state.value})

    async def cancel_matching(self, request: Request) -> Response:
        """``{"cancelled": n}``: every queued and running job of the body's ``task``, of
        its ``tenant``, or of both (that task's jobs of that tenant); ``n`` counts the
        jobs cancelled or newly asked to stop (see :meth:`Scheduler.cancel_task`)."""
        usage = 'the body must be JSON: {"task": "...", "tenant": "..."} (one or both)'
        if not await request.body():
            return _error(400, usage)
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, usage)
        if not isinstance(body, dict):
            return _error(400, usage)
        unknown = sorted(set(body) - {"task", "tenant"})
        if unknown:
            return _error(400, f"unknown field(s) {', '.join(unknown)}: {usage}")
        task, tenant = body.get("task"), body.get("tenant")
        for name, value in (("task", task), ("tenant", tenant)):
            if value is not None and (not isinstance(value, str) or not value):
                return _error(400, f"{name} must be a non-empty string")
        if task is None and tenant is None:
            return _error(400, f"which jobs? {usage}")
        try:
            count = await self.sched.cancel_task(task, tenant=tenant)
        except (TypeError, ValueError) as exc:  # e.g. a tenant name over the length limit
            return _error(400, str(exc))
        return JSONResponse({"cancelled": count})

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
        fleet = await _fleet_flag(request)
        if isinstance(fleet, Response):
            return fleet
        try:
            self.sched.gate.pause(reason, fleet=fleet)
        except ConfigError as exc:
            return _error(409, str(exc))
        return JSONResponse(self._gate())

    async def resume(self, request: Request) -> Response:
        fleet = await _fleet_flag(request)
        if isinstance(fleet, Response):
            return fleet
        try:
            self.sched.gate.resume(fleet=fleet)
        except ConfigError as exc:
            return _error(409, str(exc))
        return JSONResponse(self._gate())

    def _gate(self) -> dict[str, Any]:
        gate = self.sched.gate
        body: dict[str, Any] = {"gate": {"open": gate.is_open, "reason": gate.reason}}
        if gate.fleet is not None:
            stats = gate.fleet.stats()
            body["fleet"] = {
                "paused": stats.paused_reason is not None,
                "reason": stats.paused_reason,
                "by": stats.paused_by,
                "members": dict(stats.members),
                "reachable": stats.reachable,
            }
        return body


async def _fleet_flag(request: Request) -> bool | Response:
    """The body's ``"fleet"`` (default false), or a 400 answer."""
    if not await request.body():
        return False
    try:
        body: Any = await request.json()
    except ValueError:
        return _error(400, 'the body must be JSON: {"reason": "...", "fleet": true}')
    fleet = body.get("fleet", False) if isinstance(body, dict) else False
    if not isinstance(fleet, bool):
        return _error(400, "fleet must be true or false")
    return fleet


def _error(status: int, message: str, *, auth: str | None = None) -> JSONResponse:
    headers = None
    if auth == "Basic":
        headers = {"WWW-Authenticate": 'Basic realm="floodgate", charset="UTF-8"'}
    elif auth:
        headers = {"WWW-Authenticate": f'{auth} realm="floodgate"'}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _scheduler_error(exc: SchedulerError) -> JSONResponse:
    if isinstance(exc, UnknownJob):
        return _error(404, str(exc))
    if isinstance(exc, SchedulerClosed | BacklogError):
        return _error(503, str(exc))
    if isinstance(exc, ConfigError):
        return _error(400, str(exc))
    return _error(500, f"{type(exc).__name__}: {exc}")
