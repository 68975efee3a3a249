"""The dashboard in headless Chromium: it loads without script errors, shows what
``/api/status`` reports, hides changes without a token, and a screenshot is saved.

Needs a Chromium on PATH (``chromium``, ``chromium-browser`` or ``google-chrome``; the
``chromium`` fixture in ``conftest.py``): skipped without one, unless ``CI`` is set,
where a missing browser fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler import FakeClock, JobState, Lane, Scheduler, SchedulerError
from scheduler.asgi import History, admin_app
from scheduler.testing import eventually

from .admin_fixtures import TOKEN, busy_scheduler
from .cdp import Browser
from .http_helpers import serve

pytestmark = pytest.mark.slow

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
)  # fmt: skip


async def browse(
    chromium: str, tmp: Path, url: str, *action: str, budget: int, height: int = 1000
) -> tuple[str, str]:
    """Run headless Chromium once; its stdout (``--dump-dom``) and stderr (console)."""
    profile = tmp / f"profile-{random.getrandbits(32):x}"
    proc = await asyncio.create_subprocess_exec(
        chromium, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget}",
        f"--window-size=1280,{height}", *action, url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(), err.decode(errors="replace")


class LaneCells(HTMLParser):
    """``{lane: {field: (data-value, text)}}`` from the lanes table, and element flags."""

    def __init__(self) -> None:
        super().__init__()
        self.lanes: dict[str, dict[str, tuple[str | None, str]]] = {}
        self.hidden: dict[str, bool] = {}
        self.body: dict[str, str | None] = {}
        self._lane: str | None = None
        self._open: list[tuple[str, str, str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if a.get("id"):
            self.hidden[a["id"]] = "hidden" in a
        if tag == "tr" and a.get("data-lane"):
            self._lane = a["data-lane"]
            self.lanes[self._lane] = {}
        field = a.get("data-field")
        if field and self._lane is not None:
            self._open.append((tag, field, a.get("data-value"), []))

    def handle_data(self, data: str) -> None:
        for _, _, _, parts in self._open:
            parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _, field, value, parts = self._open.pop()
            assert self._lane is not None
            self.lanes[self._lane][field] = (value, "".join(parts).strip())
        if tag == "tr":
            self._lane = None


def errors_box(dom: str) -> str:
    match = re.search(r'<pre id="errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert match, "the page has its #errors box"
    return match.group(1)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


async def check_page(chromium: str, tmp: Path, url: str, status: dict[str, Any]) -> LaneCells:
    dom, stderr = await browse(chromium, tmp, url, "--dump-dom", budget=3000)
    assert console_lines(stderr) == [], "no console messages (errors or otherwise)"
    assert errors_box(dom) == "", "no script errors"
    page = LaneCells()
    page.feed(dom)
    assert int(page.body.get("data-polls") or 0) >= 1, "the page polled /api/status"
    assert list(page.lanes) == [lane["name"] for lane in status["lanes"]]
    for lane in status["lanes"]:
        cells = page.lanes[lane["name"]]
        for field in ("queued", "running", "completed", "failed", "shed_total"):
            assert cells[field][0] == str(lane[field]), (lane["name"], field)
        assert cells["max_concurrency"][1] == str(lane["max_concurrency"])
        for field, summary, q in (("wait_p95", "wait", "p95"), ("run_p99", "run", "p99")):
            shown = cells[field][0]
            expected = lane[summary][q]
            assert (float(shown) if shown else None) == pytest.approx(expected), field
    assert cells["backlog"][1] == "3 / 0 / 2 / 0"  # batch: queued / running / dead / cancelled
    assert page.lanes["interactive"]["shed_total"][1] == "1"
    assert "gate closed: maintenance" in dom
    assert dom.count('<tr data-job="') == 2, "the dead jobs are listed"
    return page


async def test_dashboard_shows_the_status_and_hides_changes_without_a_token(
    chromium: str, tmp_path: Path
) -> None:
    async with busy_scheduler(tmp_path / "d.db") as sched:
        async with serve(admin_app(sched, token=TOKEN)) as url:
            async with httpx.AsyncClient() as client:
                status = (await client.get(f"{url}/api/status")).json()
            page = await check_page(chromium, tmp_path, url + "/", status)
            assert page.hidden["actions"] is False
            assert page.hidden["readonly"] is True
        async with serve(admin_app(sched)) as url:
            page = await check_page(chromium, tmp_path, url + "/", status)
            assert page.hidden["actions"] is True
            assert page.hidden["readonly"] is False


async def load(sched: Scheduler, stop: asyncio.Event) -> None:
    """Interactive calls of 5-60 ms to an upstream "llm" that fails now and then
    (429s and 503s), some shed, until ``stop``."""
    rng = random.Random(7)
    request = httpx.Request("POST", "http://llm.invalid/v1/chat")

    async def upstream_call() -> None:
        await asyncio.sleep(rng.uniform(0.005, 0.06))
        roll = rng.random()
        if roll < 0.12:
            status = 429 if roll < 0.04 else 503
            response = httpx.Response(status, request=request)
            raise httpx.HTTPStatusError(f"{status}", request=request, response=response)

    async def one() -> None:
        with contextlib.suppress(SchedulerError, httpx.HTTPStatusError):
            await sched.call(upstream_call, upstream="llm")

    tasks: set[asyncio.Task[None]] = set()
    for _ in range(10_000):  # bounded; stops far sooner
        if stop.is_set():
            break
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(rng.uniform(0.002, 0.012))
    await asyncio.gather(*tasks)


async def test_dashboard_draws_a_minute_of_server_history_on_load(
    chromium: str, tmp_path: Path
) -> None:
    """A fresh page shows the last minute at once (from ``/api/history``, filled on a
    fake clock under real load in ~3 s), with per-upstream charts; the screenshot."""
    shot = tmp_path / "dashboard.png"
    async with busy_scheduler(tmp_path / "d.db") as sched:
        fake = FakeClock(wall_start=time.time() - 60.0)
        history = History(sched, clock=fake)
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(sched, stop))
        try:
            async with serve(admin_app(sched, token=TOKEN, history=history)) as url:
                for _ in range(60):  # a minute on the fake clock: one point per second
                    await asyncio.sleep(0.05)
                    fake.advance(1.0)
                assert len(history) == 61
                dom, stderr = await browse(chromium, tmp_path, url + "/", "--dump-dom", budget=3000)
                _, shot_err = await browse(
                    chromium, tmp_path, url + "/", f"--screenshot={shot}", budget=5000, height=1420
                )
        finally:
            stop.set()
            await traffic
    assert console_lines(stderr) == []
    assert console_lines(shot_err) == []
    assert errors_box(dom) == ""
    page = LaneCells()
    page.feed(dom)
    assert int(page.body.get("data-points") or 0) == 61, "the server's minute, on the first load"
    assert re.search(r'<div class="chart" id="upstream-chart-0" data-upstream="llm"', dom)
    assert "requests sent per second vs the learned limit" in dom
    assert "(60 s, 61 points from the server)" in dom
    # the wait axis in human units (not "100000ms")
    wait_top = re.search(r'id="chart-wait" data-max="([^"]+)"', dom)
    assert wait_top
    assert re.fullmatch(r"[\d.]+ (ms|s|min|h)", wait_top.group(1)), wait_top.group(1)
    assert "failed attempts" in dom
    assert "<b>dead</b>: durable jobs that used" in dom
    # no bar is red: a full ceiling is the lane at work; the queued bar's scale is the peak
    assert 'class="bar full"' not in dom
    scales = re.findall(r"bar scale ([\d,]+) \(the last 15 minutes' peak\)", dom)
    assert scales
    assert all(int(x.replace(",", "")) <= 10 for x in scales)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000
    if os.environ.get("FLOODGATE_SCREENSHOT_TO"):  # e.g. docs/dashboard.png, by hand
        shutil.copy(shot, os.environ["FLOODGATE_SCREENSHOT_TO"])


async def page_until(browser: Browser, page: str, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript condition in the page (every 10 ms, bounded)."""
    async with asyncio.timeout(timeout):
        # the condition lives in another process (the browser): no Event to await
        while not await browser.evaluate(page, expression):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def dead_count(sched: Scheduler) -> int:
    return len(await sched.jobs(JobState.DEAD))


CLICK = "document.getElementById({!r}).click()"
TYPE = (
    "(() => {{ const box = document.getElementById({!r}); box.value = {!r};"
    " box.dispatchEvent(new Event('change')); }})()"
)


async def test_dashboard_buttons_pause_resume_and_requeue(chromium: str, tmp_path: Path) -> None:
    async with (
        busy_scheduler(tmp_path / "d.db") as sched,
        serve(admin_app(sched, token=TOKEN)) as url,
    ):
        browser = await Browser.launch(chromium, tmp_path / "cdp-profile")
        try:
            page = await browser.open(url + "/")
            await page_until(
                browser, page, "document.querySelectorAll('#dead tbody tr').length == 2"
            )

            await browser.evaluate(page, CLICK.format("resume"))  # no token yet: asks for it
            notice = "document.getElementById('notice').textContent"
            await page_until(browser, page, f"{notice} === 'enter the admin token first'")
            assert sched.gate.reason == "maintenance"

            await browser.evaluate(page, TYPE.format("token", "wrong"))
            await browser.evaluate(page, CLICK.format("resume"))
            await page_until(browser, page, f"{notice}.startsWith('refused')")
            assert not sched.gate.is_open

            await browser.evaluate(page, TYPE.format("token", TOKEN))
            await browser.evaluate(page, CLICK.format("resume"))
            await eventually(lambda: sched.gate.is_open, timeout=15)
            await browser.evaluate(page, TYPE.format("reason", "from the dashboard"))
            await browser.evaluate(page, CLICK.format("pause"))
            await eventually(lambda: sched.gate.reason == "from the dashboard", timeout=15)
            gate = "document.getElementById('gate').textContent"
            await page_until(browser, page, f"{gate} === 'gate closed: from the dashboard'")

            await browser.evaluate(page, "document.querySelector('#dead tbody button').click()")
            for _ in range(1500):  # bounded: ~15 s
                if await dead_count(sched) == 1:
                    break
                await asyncio.sleep(0.01)
            assert await dead_count(sched) == 1
            await page_until(
                browser, page, "document.querySelectorAll('#dead tbody tr').length == 1"
            )
            await browser.evaluate(page, CLICK.format("requeue-all"))
            for _ in range(1500):
                if await dead_count(sched) == 0:
                    break
                await asyncio.sleep(0.01)
            assert await dead_count(sched) == 0
        finally:
            await browser.close()
    problems = browser.console_problems()
    refused = [
        p for p in problems if "401 (Unauthorized)" in p["params"].get("entry", {}).get("text", "")
    ]
    assert len(refused) == 1, "the browser logs the one refused request (the wrong token)"
    assert [p for p in problems if p not in refused] == [], "no script errors or console calls"


async def test_dashboard_lists_periodic_jobs_tenants_and_cancelled(
    chromium: str, tmp_path: Path
) -> None:
    sched = Scheduler(
        str(tmp_path / "p.db"),
        lanes=[Lane("interactive", 1), Lane("batch", 2, durable=True)],
        shutdown_grace=0,
    )

    @sched.periodic("0 3 * * *", name="app.nightly", catch_up=0)
    async def nightly() -> None:
        return None

    @sched.task(name="t.later")
    async def later() -> None:
        return None

    gate = asyncio.Event()

    async def held() -> None:
        await gate.wait()

    async with sched, serve(admin_app(sched, token=TOKEN)) as url:
        calls = [
            asyncio.create_task(sched.call(held, tenant="acme" if i % 3 else "globex"))
            for i in range(6)
        ]
        job = await later.submit(delay=3600)
        assert await job.cancel()  # queued: the next nightly run, submitted ahead
        browser = await Browser.launch(chromium, tmp_path / "cdp-profile")
        try:
            page = await browser.open(url + "/")
            row = "document.querySelector('#periodic tr[data-task=\"app.nightly\"]')"
            await page_until(browser, page, f"{row} !== null")
            assert await browser.evaluate(page, f"{row}.cells[1].textContent") == "0 3 * * *"
            section = "document.getElementById('periodic-section')"
            assert not await browser.evaluate(page, f"{section}.hidden")
            tenants = (
                'document.querySelector(\'tr[data-lane="interactive"] [data-field="tenants"]\')'
            )
            await page_until(browser, page, f"{tenants} !== null")
            text = await browser.evaluate(page, f"{tenants}.textContent")
            assert text.startswith("acme 3q/1r") or text.startswith("acme 4q/0r"), text
            backlog = 'document.querySelector(\'tr[data-lane="batch"] [data-field="backlog"]\')'
            await page_until(browser, page, f"{backlog}.textContent === '1 / 0 / 0 / 1'")
        finally:
            await browser.close()
            gate.set()
            await asyncio.gather(*calls)
