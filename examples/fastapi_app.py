"""Floodgate inside a FastAPI app, with a separate worker process draining batch work.

The web process runs only the ``interactive`` lane (``sched.open(run=("interactive",))``
in the lifespan); it *submits* batch jobs to the SQLite backlog, and a
``floodgate worker`` process sharing that file runs them::

    export FLOODGATE_BACKLOG=/tmp/floodgate-demo.db
    uvicorn examples.fastapi_app:app --port 8000                       # the web app
    floodgate worker --app examples.fastapi_app:sched --admin 127.0.0.1:8765  # the worker

    curl -X POST localhost:8000/ask -H 'content-type: application/json' -d '{"prompt": "hi"}'
    curl -X POST localhost:8000/summaries -H 'content-type: application/json' \
         -d '{"text": "a long document"}'                 # 202 {"job_id": ...}
    curl localhost:8000/jobs/JOB_ID                         # queued -> done, with the result
    open http://127.0.0.1:8000/admin/                       # the web process's dashboard

Endpoints: ``POST /ask`` (interactive: 429 + ``Retry-After`` when the lane is
full, 503 when it cannot start within its deadline or the upstream is down),
``POST /summaries`` (batch: 202 with the job id), ``GET /jobs/{id}``, and the
admin app at ``/admin`` (read-only unless ``FLOODGATE_ADMIN_TOKEN`` is set).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler import (
    DeadlineExceeded,
    JobState,
    Lane,
    Overloaded,
    RetryPolicy,
    Scheduler,
    UnknownJob,
    UpstreamUnavailable,
)
from scheduler.asgi import admin_app

sched = Scheduler(
    os.environ.get("FLOODGATE_BACKLOG", "floodgate.db"),
    lanes=[
        Lane("interactive", max_concurrency=4, max_queued=8),
        Lane("batch", max_concurrency=4, durable=True, gated=True),
    ],
)


async def ask_llm(prompt: str) -> str:
    """Stands in for the upstream call (an LLM API behind httpx, typically)."""
    await asyncio.sleep(0.05)
    return f"echo: {prompt}"


# An explicit name: the web app and the worker agree on it however each imports this module.
@sched.task(name="summarize", lane="batch", retry=RetryPolicy(max_attempts=3))
async def summarize(text: str) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"words": len(text.split()), "summary": text[:60]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with sched.open(run=("interactive",)):  # batch: a floodgate worker drains it
        yield


app = FastAPI(title="Floodgate example", lifespan=lifespan)
app.mount("/admin", admin_app(sched, token=os.environ.get("FLOODGATE_ADMIN_TOKEN")))


class Ask(BaseModel):
    prompt: str


class Summary(BaseModel):
    text: str
    key: str | None = None


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


@app.post("/ask", response_model=None)
async def ask(body: Ask) -> dict[str, str] | JSONResponse:
    try:
        answer = await sched.call(ask_llm, body.prompt, deadline=2.0, timeout=30.0)
    except Overloaded as exc:  # the lane is full: come back later
        return JSONResponse(
            {"error": "busy", "retry_after": exc.retry_after},
            status_code=429,
            headers=_retry_after(exc.retry_after),
        )
    except DeadlineExceeded:  # could not start within 2 s
        return JSONResponse({"error": "timed out waiting for capacity"}, status_code=503)
    except UpstreamUnavailable as exc:  # the upstream's breaker is open
        return JSONResponse(
            {"error": str(exc)}, status_code=503, headers=_retry_after(exc.retry_after)
        )
    return {"answer": answer}


@app.post("/summaries", status_code=202, response_model=None)
async def submit_summary(body: Summary) -> dict[str, str] | JSONResponse:
    try:
        job = await summarize.submit(body.text, key=body.key)
    except Overloaded as exc:  # the batch backlog holds max_queued jobs already
        return JSONResponse(
            {"error": "backlog full"}, status_code=429, headers=_retry_after(exc.retry_after)
        )
    return {"job_id": job.id, "state": job.state.value, "status_url": f"/jobs/{job.id}"}


@app.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, Any]:
    try:
        job = await sched.job(job_id)
    except UnknownJob:
        raise HTTPException(status_code=404, detail=f"no job {job_id}") from None
    answer: dict[str, Any] = {"job_id": job.id, "state": job.state.value}
    if job.state is JobState.DONE:
        answer["result"] = await job.result()
    elif job.state is JobState.DEAD:
        answer["error"] = job.error
    return answer
