"""The dashboard: one self-contained HTML page (inline CSS and JS, no network but its own API).

It polls ``api/status`` and ``api/history`` (relative, so it works wherever
the app is mounted) every second and draws: lanes (queue depth against the
last 15 minutes' peak, in flight against the ceiling, p95/p99 wait and run
latency, failed attempts, shed, backlog by state), charts of the server's
history (up to 15 minutes, drawn on load) on ``<canvas>``, upstreams (breaker,
error rate, failures by class) each with its own charts (requests sent per
second against the learned rate limit, and the breaker's timeline), the
gate, and the dead jobs with requeue buttons. Buttons show only when the API takes
changes (a token is set); the page asks for the token and sends it as
``Authorization: Bearer``. On a public bind the page itself needs the token:
the browser asks for it (HTTP Basic, the token as the password) and sends it
with every poll. Script errors are written into ``#errors`` and the
page keeps ``data-polls`` on ``<body>``, so a headless browser test can read
both from the DOM.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_HTML"]

DASHBOARD_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Floodgate</title>
<link rel="icon" href="data:,">
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#6b7280; --line:#e3e6eb;
        --ok:#1a7f4b; --warn:#b45309; --bad:#b42318; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       background:var(--bg); color:var(--ink); }
header { display:flex; flex-wrap:wrap; gap:10px 16px; align-items:center; padding:12px 20px;
         background:#111827; color:#f9fafb; }
header h1 { font-size:18px; margin:0 8px 0 0; letter-spacing:.3px; }
main { padding:16px 20px 40px; display:grid; gap:16px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:12px 16px; }
h2 { font-size:13px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted);
     margin:0 0 10px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:right; padding:6px 8px; border-bottom:1px solid var(--line);
         white-space:nowrap; }
th:first-child, td:first-child { text-align:left; }
th { font-weight:600; color:var(--muted); font-size:12px; }
th.text { text-align:left; }
td.text { text-align:left; white-space:normal; max-width:420px; overflow-wrap:anywhere; }
#dead th, #dead td { text-align:left; }
.badge { display:inline-block; padding:2px 9px; border-radius:999px; font-size:12px;
         font-weight:600; background:#374151; color:#f9fafb; }
.badge.ok { background:var(--ok); } .badge.warn { background:var(--warn); }
.badge.bad { background:var(--bad); }
.muted { color:var(--muted); } header .muted { color:#9ca3af; }
.bar { position:relative; display:inline-block; width:70px; height:8px; background:var(--line);
       border-radius:4px; margin-left:8px; vertical-align:middle; overflow:hidden; }
.bar > span { position:absolute; left:0; top:0; bottom:0; background:var(--accent); }
.bar.warn > span { background:var(--warn); }
.controls { display:flex; gap:8px; align-items:center; margin-left:auto; flex-wrap:wrap; }
form.controls { margin:0; }
[hidden] { display:none !important; }
input { font:inherit; padding:4px 8px; border-radius:6px; border:1px solid #4b5563;
        background:#1f2937; color:#f9fafb; }
button { font:inherit; padding:4px 12px; border-radius:6px; border:1px solid var(--accent);
         background:var(--accent); color:#fff; cursor:pointer; }
button.secondary { background:transparent; color:var(--accent); }
button:disabled { opacity:.5; cursor:default; }
.charts { display:grid; grid-template-columns:repeat(auto-fill,minmax(300px,1fr)); gap:14px; }
.chart h3 { font-size:12px; margin:0 0 4px; font-weight:600; }
.chart canvas { width:100%; height:120px; display:block; }
.chart canvas.strip { height:12px; margin-top:4px; }
.note { font-size:12px; color:var(--muted); margin:8px 0 0; }
.legend { font-size:12px; color:var(--muted); margin-top:2px; }
.legend i { display:inline-block; width:10px; height:3px; margin:0 4px 2px 8px;
            vertical-align:middle; }
#errors { color:var(--bad); background:#fef3f2; border:1px solid #fecdca; border-radius:8px;
          padding:8px 12px; margin:0; white-space:pre-wrap; }
#notice { font-size:12px; }
.empty { color:var(--muted); font-style:italic; padding:6px 0; }
</style>
</head>
<body data-polls="0">
<header>
  <h1>Floodgate</h1>
  <span id="state" class="badge">connecting</span>
  <span id="gate" class="badge">gate</span>
  <span id="fleet" class="badge" hidden>fleet</span>
  <span id="running" class="muted"></span>
  <span id="updated" class="muted"></span>
  <div class="controls">
    <span id="notice" class="muted"></span>
    <span id="readonly" class="muted" hidden>
      read-only (start the admin API with a token to allow changes)</span>
    <form id="actions" class="controls" autocomplete="off" hidden>
      <input id="reason" placeholder="pause reason" size="16" aria-label="pause reason">
      <button id="pause" type="button">Pause gate</button>
      <button id="resume" type="button" class="secondary">Resume gate</button>
      <label id="fleet-wide-label" hidden>
        <input id="fleet-wide" type="checkbox"> whole fleet</label>
      <input id="username" type="text" autocomplete="username" value="admin" hidden>
      <input id="token" type="password" placeholder="admin token" size="14"
             autocomplete="current-password" aria-label="admin token">
    </form>
  </div>
</header>
<main>
  <pre id="errors" hidden></pre>
  <section>
    <h2>Lanes</h2>
    <table id="lanes">
      <thead><tr>
        <th>lane</th><th>queued</th><th>in flight / ceiling</th>
        <th>wait p95</th><th>wait p99</th><th>run p95</th><th>run p99</th>
        <th>done</th><th title="runs that raised (each attempt counts)">failed attempts</th>
        <th>shed</th><th>backlog queued / running / dead / cancelled</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p class="note" id="lane-note"><b>failed attempts</b>: runs that raised, each attempt
      counted (a job retried twice and then done counts 2); <b>dead</b>: durable jobs that used
      up their attempts and wait in the backlog for a requeue (listed below). The queued bar is
      drawn against the last 15 minutes' peak (amber when the lane is full and sheds); the in
      flight bar against the lane's ceiling (a full ceiling is the lane working, not an
      alarm).</p>
  </section>
  <section>
    <h2>Last minutes <span id="span" class="muted"></span></h2>
    <div class="charts" id="charts"></div>
  </section>
  <section>
    <h2>Upstreams</h2>
    <table id="upstreams">
      <thead><tr>
        <th>upstream</th><th>breaker</th><th>requests</th><th>error rate</th>
        <th class="text">failures by class</th><th>latency p95</th><th>paused for</th><th>limit</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <div id="no-upstreams" class="empty">No upstream has reported yet.</div>
    <div class="charts" id="upstream-charts"></div>
  </section>
  <section id="periodic-section" hidden>
    <h2>Periodic jobs</h2>
    <table id="periodic">
      <thead><tr><th>task</th><th class="text">schedule</th><th>lane</th><th>next run</th>
        <th>scheduled here</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Dead jobs <button id="requeue-all" class="secondary" hidden>Requeue all dead</button></h2>
    <table id="dead">
      <thead><tr><th>job</th><th>task</th><th>lane</th><th>attempts</th><th>last error</th>
        <th>updated</th><th></th></tr></thead>
      <tbody></tbody>
    </table>
    <div id="no-dead" class="empty">No dead jobs.</div>
  </section>
</main>
<script>
"use strict";
(function () {
  const BASE = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
  const POLL_MS = 1000, DEAD_EVERY = 3, TOKEN_KEY = "floodgate-admin-token";
  const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777",
                  "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];
  const BREAKER = { closed: "#1a7f4b", half_open: "#d97706", open: "#b42318" };
  const CHARTS = [
    { id: "queued", title: "Queued", kind: "lanes", key: "queued", fmt: fmtCount },
    { id: "running", title: "In flight", kind: "lanes", key: "running", fmt: fmtCount },
    { id: "done", title: "Done per second", kind: "lanes", key: "done", fmt: fmtRate },
    { id: "failed", title: "Failed attempts per second", kind: "lanes", key: "failed",
      fmt: fmtRate },
    { id: "shed", title: "Shed per second", kind: "lanes", key: "shed", fmt: fmtRate },
    { id: "wait", title: "Wait p95", kind: "lanes", key: "wait", fmt: fmtDuration },
    { id: "errors", title: "Upstream error rate", kind: "upstreams", key: "errors",
      fmt: (v) => fmtNumber(v * 100) + " %" },
  ];
  const ui = { token: "", readOnly: true, history: [], seconds: 900, polls: 0,
               lastDeadPoll: -DEAD_EVERY, upstreamCharts: [] };

  const $ = (id) => document.getElementById(id);

  function reportError(message) {
    const box = $("errors");
    box.hidden = false;
    box.textContent += message + "\n";
  }
  window.addEventListener("error", (e) => reportError("script error: " + e.message));
  window.addEventListener("unhandledrejection",
                          (e) => reportError("unhandled: " + String(e.reason)));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "\u2013";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  }
  function fmtNumber(v) {
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return String(parseFloat(v.toFixed(digits)));
  }
  function fmtCount(v) { return fmtNumber(v); }
  function fmtRate(v) { return fmtNumber(v) + "/s"; }
  function fmtDuration(v) {
    // seconds in human units: 250 ms, 1.5 s, 2 min, 1.5 h
    if (v === 0) return "0";
    if (v < 1) return fmtNumber(v * 1000) + " ms";
    if (v < 120) return fmtNumber(v) + " s";
    if (v < 7200) return fmtNumber(v / 60) + " min";
    return fmtNumber(v / 3600) + " h";
  }
  function fmtInt(n) {
    return n === null || n === undefined ? "\u2013" : Number(n).toLocaleString("en-US");
  }
  function fmtAgo(epoch) {
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 90) return Math.round(s) + "s ago";
    if (s < 5400) return Math.round(s / 60) + "m ago";
    if (s < 172800) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  }

  function numCell(field, value, text) {
    return el("td", { dataset: { field: field, value: value === null ? "" : String(value) } },
              text === undefined ? fmtInt(value) : text);
  }
  function bar(value, max, cls, title) {
    const ratio = max > 0 ? Math.min(1, value / max) : 0;
    const span = el("span");
    span.style.width = (ratio * 100).toFixed(1) + "%";
    return el("span", { class: cls ? "bar " + cls : "bar", title: title }, span);
  }

  function peakQueued(lane) {
    let peak = 0;
    for (const p of ui.history) {
      const v = (p.lanes[lane] || {}).queued;
      if (v > peak) peak = v;
    }
    return peak;
  }

  function queuedBar(lane) {
    // against the recent peak (rounded up), not max_queued (often 1,000,000)
    const scale = Math.min(lane.max_queued, niceMax(Math.max(peakQueued(lane.name), lane.queued)));
    const full = lane.queued >= lane.max_queued;
    return bar(lane.queued, scale, full ? "warn" : "",
               fmtInt(lane.queued) + " queued; bar scale " + fmtInt(scale) +
               " (the last 15 minutes' peak); the lane sheds at " + fmtInt(lane.max_queued));
  }

  // -- rendering ------------------------------------------------------------------

  function renderHeader(s) {
    const state = $("state");
    state.textContent = s.scheduler.state;
    state.className = "badge " + (s.scheduler.state === "running" ? "ok" : "warn");
    const gate = $("gate");
    gate.textContent = s.gate.open ? "gate open"
      : s.gate.reason ? "gate closed: " + s.gate.reason : "gate closed";
    gate.className = "badge " + (s.gate.open ? "ok" : "bad");
    gate.dataset.open = String(s.gate.open);
    renderFleet(s.fleet);
    const ceiling = s.scheduler.max_concurrency === null ? "" : " / " + s.scheduler.max_concurrency;
    $("running").textContent = s.scheduler.running + ceiling + " running";
    $("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
    ui.readOnly = s.admin.read_only;
    $("readonly").hidden = !ui.readOnly;
    $("actions").hidden = ui.readOnly;
    $("requeue-all").hidden = ui.readOnly;
  }

  function renderFleet(fleet) {
    // processes sharing this backlog share each upstream's budget (scheduler.fleet)
    const badge = $("fleet");
    badge.hidden = !fleet;
    $("fleet-wide-label").hidden = !fleet;
    if (!fleet) return;
    const counts = Object.values(fleet.members || {});
    const processes = counts.length ? Math.max(...counts) : 1;
    let text = "fleet: " + processes + (processes === 1 ? " process" : " processes");
    if (fleet.paused_reason !== null) {
      text += " · paused by " + fleet.paused_by + ": " + fleet.paused_reason;
    }
    if (!fleet.reachable) text += " · shared state unreachable";
    badge.textContent = text;
    badge.title = "this process: " + fleet.member;
    badge.className = "badge " + (fleet.paused_reason !== null ? "bad"
      : fleet.reachable ? "ok" : "warn");
  }

  function renderLanes(s) {
    const body = $("lanes").tBodies[0];
    const rows = s.lanes.map((lane) => {
      const counts = s.backlog ? s.backlog[lane.name] || {} : null;
      const backlog = lane.durable && counts
        ? ["queued", "running", "dead", "cancelled"].map((k) => fmtInt(counts[k] || 0)).join(" / ")
        : "\u2013";
      const shedTitle = Object.entries(lane.shed).map(([k, v]) => k + ": " + v).join(", ");
      const tags = [lane.durable ? "durable" : null, lane.gated ? "gated" : null]
        .filter(Boolean).join(", ");
      const queued = numCell("queued", lane.queued);
      queued.append(queuedBar(lane));
      const ceiling = el("span", { dataset: { field: "max_concurrency" } },
                         String(lane.max_concurrency));
      const flight = el("td", { dataset: { field: "running", value: String(lane.running) } },
                        lane.running + " / ", ceiling,
                        bar(lane.running, lane.max_concurrency, "",
                            lane.running + " of " + lane.max_concurrency + " seats"));
      const shed = numCell("shed_total", lane.shed_total);
      shed.title = shedTitle || "none";
      // the busiest tenants (stats() keeps nine and "(other)"): who fills the lane
      const tenants = (lane.tenants || []).slice(0, 3)
        .map((t) => t.tenant + " " + fmtInt(t.queued) + "q/" + fmtInt(t.running) + "r"
                    + (t.shed ? "/" + fmtInt(t.shed) + " shed" : ""))
        .join(", ");
      return el("tr", { dataset: { lane: lane.name } },
        el("td", {}, el("strong", {}, lane.name),
           tags ? el("div", { class: "muted" }, tags) : null,
           tenants ? el("div", { class: "muted", dataset: { field: "tenants" },
                                 title: "busiest tenants: queued/running/shed" }, tenants)
                   : null),
        queued, flight,
        numCell("wait_p95", lane.wait.p95, fmtSeconds(lane.wait.p95)),
        numCell("wait_p99", lane.wait.p99, fmtSeconds(lane.wait.p99)),
        numCell("run_p95", lane.run.p95, fmtSeconds(lane.run.p95)),
        numCell("run_p99", lane.run.p99, fmtSeconds(lane.run.p99)),
        numCell("completed", lane.completed), numCell("failed", lane.failed), shed,
        el("td", { dataset: { field: "backlog" } }, backlog));
    });
    body.replaceChildren(...rows);
  }

  function renderUpstreams(s) {
    const body = $("upstreams").tBodies[0];
    $("no-upstreams").hidden = s.upstreams.length > 0;
    body.replaceChildren(...s.upstreams.map((u) => {
      const failures = Object.entries(u.failures || {})
        .map(([k, v]) => k + " " + v).join(", ") || "none";
      const cls = u.breaker === "closed" ? "ok" : u.breaker === "open" ? "bad" : "warn";
      return el("tr", { dataset: { upstream: u.name } },
        el("td", {}, el("strong", {}, u.name)),
        el("td", {}, el("span", { class: "badge " + cls, dataset: { field: "breaker" } },
                        u.breaker)),
        numCell("requests", u.requests),
        numCell("error_rate", u.error_rate,
                u.error_rate === null ? "\u2013" : (u.error_rate * 100).toFixed(1) + " %"),
        el("td", { class: "text" }, failures),
        numCell("latency_p95", u.latency_p95, fmtSeconds(u.latency_p95)),
        numCell("paused_for", u.paused_for,
                u.paused_for ? u.paused_for.toFixed(0) + " s" : "\u2013"),
        numCell("concurrency_limit", u.concurrency_limit));
    }));
  }

  function renderPeriodic(s) {
    const periodic = s.periodic || [];
    $("periodic-section").hidden = periodic.length === 0;
    $("periodic").tBodies[0].replaceChildren(...periodic.map((p) =>
      el("tr", { dataset: { task: p.task } },
        el("td", {}, el("strong", {}, p.task)),
        el("td", { class: "text" }, p.schedule),
        el("td", {}, p.lane),
        el("td", { dataset: { field: "next_run" } },
           new Date(p.next_run * 1000).toLocaleString()),
        el("td", {}, p.scheduled_here ? "yes" : "no"))));
  }

  function renderDead(jobs) {
    const body = $("dead").tBodies[0];
    $("no-dead").hidden = jobs.length > 0;
    body.replaceChildren(...jobs.map((job) => {
      const button = el("button", { class: "secondary" }, "Requeue");
      button.hidden = ui.readOnly;
      const path = "api/jobs/" + encodeURIComponent(job.id) + "/requeue";
      button.addEventListener("click", () => act(path, null, "requeued " + job.id));
      return el("tr", { dataset: { job: job.id } },
        el("td", {}, el("code", {}, job.id)), el("td", { class: "text" }, job.task),
        el("td", {}, job.lane), el("td", {}, job.attempts + " / " + job.max_attempts),
        el("td", { class: "text" }, job.error || ""), el("td", {}, fmtAgo(job.updated_at)),
        el("td", {}, button));
    }));
  }

  // -- charts ---------------------------------------------------------------------

  function chartBox(id, title, strip) {
    return el("div", { class: "chart", id: id },
      el("h3", {}, title), el("canvas", { width: "300", height: "120" }),
      strip ? el("canvas", { class: "strip", width: "300", height: "12" }) : null,
      el("div", { class: "legend" }));
  }

  function buildCharts() {
    const box = $("charts");
    for (const chart of CHARTS) box.append(chartBox("chart-" + chart.id, chart.title, false));
  }

  function mergeHistory(answer) {
    // the server's ring buffer: points (oldest first) on its clock, 1 s apart
    ui.seconds = answer.seconds || ui.seconds;
    const last = ui.history.length ? ui.history[ui.history.length - 1].t : -Infinity;
    for (const p of answer.points) if (p.t > last) ui.history.push(p);
    const newest = ui.history.length ? ui.history[ui.history.length - 1].t : 0;
    let drop = 0;
    while (drop < ui.history.length && newest - ui.history[drop].t > ui.seconds) drop += 1;
    if (drop) ui.history.splice(0, drop);
  }

  function names(kind) {
    const found = new Set();
    for (const p of ui.history) for (const n of Object.keys(p[kind] || {})) found.add(n);
    return [...found];
  }

  function series(chart) {
    return names(chart.kind).map((name, i) => ({
      name: name, color: COLORS[i % COLORS.length],
      points: ui.history.map((p) => {
        const v = ((p[chart.kind] || {})[name] || {})[chart.key];
        return [p.t, v === undefined ? null : v];
      }),
    }));
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function windowOf() {
    // the window grows with the data: at least a minute, at most the server's (15 min)
    const now = ui.history.length ? ui.history[ui.history.length - 1].t : Date.now() / 1000;
    const first = ui.history.length ? ui.history[0].t : now;
    return { now: now, span: Math.min(ui.seconds, Math.max(60, now - first)) };
  }

  function sizeCanvas(canvas, fallbackHeight) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || fallbackHeight;
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx: ctx, w: w, h: h };
  }

  const LEFT = 50, RIGHT = 6;

  function drawLines(box, lines, fmt) {
    const { ctx, w, h } = sizeCanvas(box.querySelector("canvas"), 120);
    const top = 6, bottom = 16;
    const { now, span } = windowOf();
    let max = 0;
    for (const line of lines) {
      for (const [t, v] of line.points) if (v !== null && now - t <= span && v > max) max = v;
    }
    max = niceMax(max);
    box.dataset.max = fmt(max);  // the axis' top label, readable from the DOM
    const x = (t) => LEFT + (w - LEFT - RIGHT) * (1 - (now - t) / span);
    const y = (v) => top + (h - top - bottom) * (1 - v / max);
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.strokeStyle = "#e3e6eb";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const v = (max * i) / 2, yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(LEFT, yy); ctx.lineTo(w - RIGHT, yy); ctx.stroke();
      ctx.fillText(fmt(v), 2, yy + 3);
    }
    const ago = span >= 120 ? "-" + Math.round(span / 60) + " min" : "-" + Math.round(span) + " s";
    ctx.fillText(ago, LEFT, h - 3);
    ctx.fillText("now", w - RIGHT - 18, h - 3);
    ctx.lineWidth = 1.6;
    for (const line of lines) {
      ctx.strokeStyle = line.color;
      ctx.setLineDash(line.dash || []);
      ctx.beginPath();
      let pen = false;
      for (const [t, v] of line.points) {
        if (v === null || now - t > span) { pen = false; continue; }
        if (pen) ctx.lineTo(x(t), y(v)); else { ctx.moveTo(x(t), y(v)); pen = true; }
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const legend = box.querySelector(".legend");
    legend.replaceChildren(...lines.flatMap((line) => {
      const swatch = el("i");
      swatch.style.background = line.color;
      return [swatch, line.name];
    }));
  }

  function drawBreaker(canvas, name) {
    // one band per point, coloured by the breaker's state then (blank: not reported)
    const { ctx, w, h } = sizeCanvas(canvas, 12);
    const { now, span } = windowOf();
    const x = (t) => LEFT + (w - LEFT - RIGHT) * (1 - (now - t) / span);
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillStyle = "#6b7280";
    ctx.fillText("breaker", 2, h - 2);
    const points = ui.history.filter((p) => now - p.t <= span);
    for (let i = 0; i < points.length; i++) {
      const state = ((points[i].upstreams || {})[name] || {}).breaker;
      if (!state) continue;
      const end = i + 1 < points.length ? points[i + 1].t : points[i].t + 1;
      ctx.fillStyle = BREAKER[state] || "#9ca3af";
      const x0 = Math.max(LEFT, x(points[i].t));
      ctx.fillRect(x0, 0, Math.max(1, x(end) - x0 + 0.5), h);
    }
  }

  function drawUpstreamCharts() {
    const box = $("upstream-charts");
    const upstreams = names("upstreams");
    if (upstreams.join("\n") !== ui.upstreamCharts.join("\n")) {
      ui.upstreamCharts = upstreams;
      box.replaceChildren(...upstreams.map((name, i) => {
        const card = chartBox("upstream-chart-" + i,
                              name + ": requests sent per second vs the learned limit", true);
        card.dataset.upstream = name;
        return card;
      }));
    }
    upstreams.forEach((name, i) => {
      const card = $("upstream-chart-" + i);
      const at = (key) => ui.history.map((p) => {
        const v = ((p.upstreams || {})[name] || {})[key];
        return [p.t, v === undefined ? null : v];
      });
      const lines = [
        { name: "sent", color: COLORS[0], points: at("sent") },
        { name: "learned limit (none until a 429)", color: "#111827", dash: [5, 3],
          points: at("limit") },
      ];
      drawLines(card, lines, fmtRate);
      drawBreaker(card.querySelector("canvas.strip"), name);
      const legend = card.querySelector(".legend");
      for (const [state, color] of Object.entries(BREAKER)) {
        const swatch = el("i");
        swatch.style.background = color;
        legend.append(swatch, "breaker " + state.replace("_", " "));
      }
    });
  }

  function drawCharts() {
    for (const chart of CHARTS) {
      const box = $("chart-" + chart.id);
      const lines = series(chart);
      box.hidden = chart.kind === "upstreams" && lines.length === 0;
      if (!box.hidden) drawLines(box, lines, chart.fmt);
    }
    drawUpstreamCharts();
    const { span } = windowOf();
    $("span").textContent = "(" + (span >= 120 ? Math.round(span / 60) + " min"
      : Math.round(span) + " s") + ", " + ui.history.length + " points from the server)";
    document.body.dataset.points = String(ui.history.length);
  }

  // -- talking to the API -----------------------------------------------------------

  async function poll() {
    try {
      const response = await fetch(BASE + "api/status", { cache: "no-store" });
      if (response.status === 401) {
        throw new Error("the token is needed: reload, sign in with it as the password");
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const s = await response.json();
      await loadHistory();
      renderHeader(s);
      renderLanes(s);
      renderUpstreams(s);
      renderPeriodic(s);
      drawCharts();
      if (ui.polls - ui.lastDeadPoll >= DEAD_EVERY) {
        ui.lastDeadPoll = ui.polls;
        await loadDead();
      }
      ui.polls += 1;
      document.body.dataset.polls = String(ui.polls);
    } catch (e) {
      const state = $("state");
      state.textContent = "disconnected";
      state.className = "badge bad";
      state.title = String(e && e.message ? e.message : e);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  async function loadHistory() {
    const last = ui.history.length ? ui.history[ui.history.length - 1].t : null;
    const query = last === null ? "" : "?since=" + encodeURIComponent(String(last));
    const response = await fetch(BASE + "api/history" + query, { cache: "no-store" });
    if (!response.ok) throw new Error("history: HTTP " + response.status);
    mergeHistory(await response.json());
  }

  async function loadDead() {
    const response = await fetch(BASE + "api/jobs?state=dead&limit=50", { cache: "no-store" });
    if (response.ok) renderDead((await response.json()).jobs);
  }

  async function act(path, body, done) {
    const notice = $("notice");
    if (!ui.token) {
      notice.textContent = "enter the admin token first";
      $("token").focus();
      return;
    }
    const headers = { Authorization: "Bearer " + ui.token };
    if (body !== null) headers["Content-Type"] = "application/json";
    try {
      const response = await fetch(BASE + path, {
        method: "POST", headers: headers, body: body === null ? undefined : JSON.stringify(body),
      });
      const answer = await response.json().catch(() => ({}));
      if (response.status === 401) { ui.token = ""; $("token").value = ""; }
      notice.textContent = response.ok ? done : "refused: " + (answer.error || response.status);
    } catch (e) {
      notice.textContent = "failed: " + String(e && e.message ? e.message : e);
    }
    ui.lastDeadPoll = -DEAD_EVERY;
  }

  function wire() {
    try {
      ui.token = sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      ui.token = "";
    }
    $("token").value = ui.token;
    $("token").addEventListener("change", (e) => {
      ui.token = e.target.value.trim();
      try {
        sessionStorage.setItem(TOKEN_KEY, ui.token);
      } catch (err) {
        /* storage disabled: keep the token in memory only */
      }
    });
    $("actions").addEventListener("submit", (e) => e.preventDefault());
    $("pause").addEventListener("click", () => {
      const reason = $("reason").value.trim() || "paused from the dashboard";
      const fleet = $("fleet-wide").checked;
      act("api/gate/pause", { reason: reason, fleet: fleet },
          fleet ? "fleet paused" : "gate paused");
    });
    $("resume").addEventListener("click", () => {
      const fleet = $("fleet-wide").checked;
      act("api/gate/resume", fleet ? { fleet: true } : null,
          fleet ? "fleet resumed" : "gate resumed");
    });
    $("requeue-all").addEventListener(
      "click", () => act("api/jobs/requeue-dead", null, "requeued dead jobs"));
  }

  buildCharts();
  wire();
  poll();
})();
</script>
</body>
</html>
"""
