"""examples/fastapi_app.py over HTTP: 429 + Retry-After when the interactive lane is
full; a batch submit answers 202 and a real worker process runs the job."""

from __future__ import annotations

import asyncio
import importlib
import signal
from pathlib import Path

import httpx
import pytest

from scheduler.testing import eventually

from .http_helpers import serve
from .worker_helpers import WorkerProcess

pytestmark = pytest.mark.slow


async def test_shedding_and_a_batch_job_run_by_a_worker_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = importlib.import_module("examples.fastapi_app")
    db = tmp_path / "web.db"
    monkeypatch.setattr(example.sched, "backlog", str(db))
    release = asyncio.Event()

    async def held(prompt: str) -> str:
        await release.wait()
        return f"answer to {prompt}"

    monkeypatch.setattr(example, "ask_llm", held)
    async with serve(example.app, lifespan=True) as url, httpx.AsyncClient(base_url=url) as client:
        calls = [
            asyncio.create_task(client.post("/ask", json={"prompt": f"q{i}"}))
            for i in range(12)  # 4 seats + 8 queued: the lane is full
        ]
        lane = example.sched.stats

        await eventually(
            lambda: (lane()["interactive"].running, lane()["interactive"].queued) == (4, 8),
            timeout=15,
        )
        full = await client.post("/ask", json={"prompt": "one too many"})
        assert full.status_code == 429
        assert int(full.headers["retry-after"]) >= 1
        assert full.json()["error"] == "busy"
        release.set()
        answers = await asyncio.gather(*calls)
        assert [a.status_code for a in answers] == [200] * 12
        assert answers[0].json() == {"answer": "answer to q0"}

        submitted = await client.post("/summaries", json={"text": "the quick brown fox"})
        assert submitted.status_code == 202
        job_id = submitted.json()["job_id"]
        assert (await client.get(f"/jobs/{job_id}")).json()["state"] == "queued"
        assert (await client.get("/jobs/nope")).status_code == 404

        worker = await WorkerProcess.start(
            "worker", "--app", "examples.fastapi_app:sched", "--backlog", str(db),
            "--lanes", "batch",
        )  # fmt: skip
        try:
            status: dict[str, object] = {}
            for _ in range(1500):  # bounded: ~15 s at most
                status = (await client.get(f"/jobs/{job_id}")).json()
                if status["state"] == "done" or worker.proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
            assert status == {
                "job_id": job_id,
                "state": "done",
                "result": {"words": 4, "summary": "the quick brown fox"},
            }, worker.stderr
            admin = (await client.get("/admin/api/status")).json()
            assert admin["backlog"]["batch"] == {"done": 1}
            worker.proc.send_signal(signal.SIGTERM)
            assert await worker.wait() == 0, worker.stderr
        finally:
            worker.kill()
