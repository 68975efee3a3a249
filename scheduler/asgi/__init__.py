"""The admin ASGI app: health, Prometheus metrics, status JSON, jobs, gate, dashboard.

Mount it in any ASGI app, or let ``floodgate worker --admin HOST:PORT`` serve it::

    from scheduler.asgi import admin_app
    app.mount("/admin", admin_app(sched, token=os.environ.get("FLOODGATE_ADMIN_TOKEN")))

A token is 16+ printable ASCII characters. On a public bind (``bind=`` not
loopback, or a non-loopback ``allowed_hosts`` entry) every endpoint but the
probes needs it; every endpoint but the probes answers only a ``Host`` it
serves (421 otherwise). See :mod:`scheduler.asgi.access`.

=========================================  =====================================
``GET /``                                  the dashboard (one self-contained page)
``GET /healthz``                           200 while the process is alive
``GET /readyz``                            200 when running and the backlog answers, else 503
``GET /metrics``                           Prometheus text exposition
``GET /api/status``                        stats, gate, upstreams, backlog counts (JSON)
``GET /api/history?since=``                the last 15 min at 1 s, for the charts (JSON)
``GET /api/jobs?state=dead&lane=&limit=``  durable jobs, oldest first
``GET /api/jobs/{id}``                     one job, with its traceback and result
``POST /api/jobs/{id}/requeue``            a dead job back to the queue (token)
``POST /api/jobs/requeue-dead?lane=``      every dead job back to the queue (token)
``POST /api/gate/pause`` ``{"reason"}``    close the gate for gated lanes (token)
``POST /api/gate/resume``                  reopen it (token)
=========================================  =====================================
"""

from .app import admin_app
from .history import History, history_for
from .prometheus import SchedulerCollector

__all__ = ["History", "SchedulerCollector", "admin_app", "history_for"]
