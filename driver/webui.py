"""The web status page of a running stream: Spark's Streaming tab, its JSON, and Prometheus metrics.

``StatusServer`` serves, from its own daemon thread with its own asyncio event loop (aiohttp, the
``[ui]`` extra):

===================  ===========================================================================================
``/``                the page: state, interval, inputs (receivers and file sources), outputs, the operator graph,
                     input rate and delays over batch time, the recent batches with their output operations, the
                     failed batches with their errors; it polls ``/api/streaming`` every second (self-contained:
                     inline script, style and SVG charts, nothing fetched from elsewhere)
``/api/streaming``   JSON: ``{"stream": <the stream's description>, "interval_ms", "started_at", "summary",
                     "batches": [newest first]}``; ``?limit=N`` batches (default 100)
``/metrics``         the Prometheus text format (prometheus-client), read from the statistics at scrape time
===================  ===========================================================================================

It shows names, counts, times and errors only: no configuration, no storage options, nothing from the
checkpoint (whether the stream checkpoints, not where). It binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import socket
import threading
from typing import Any, Callable

from dstream.driver.statistics import RECENT, StreamStatistics

log = logging.getLogger(__name__)

#: batches the JSON endpoint returns unless asked for another number (and the page asks for)
DEFAULT_LIMIT = 100
#: seconds stop() waits for requests still being answered
SHUTDOWN_TIMEOUT = 2.0

INSTALL_HINT = "pip install 'dstream[ui]'"


def _require_aiohttp() -> Any:
    try:
        from aiohttp import web
    except ImportError as error:
        raise ImportError(f"the web status page needs aiohttp: {INSTALL_HINT}") from error
    return web


class StatusServer:
    """The status page of one stream on ``host:port`` (port 0: a free port, see ``url`` once started).

    ``describe`` returns the stream's description (``dstream.views.describe_stream``); ``statistics`` keeps
    its batches. ``start()`` returns once the socket is bound (``OSError`` naming ``host:port`` when it
    cannot be); ``stop()`` closes the server and its thread."""

    def __init__(self, statistics: StreamStatistics, describe: Callable[[], dict[str, Any]],
                 host: str = "127.0.0.1", port: int = 4040) -> None:
        self.statistics = statistics
        self.describe = describe
        self.host = host
        self.port = port
        #: the page's address once started (``http://host:port/``), None before and after
        self.url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._socket: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<StatusServer {self.url or f'{self.host}:{self.port} (not serving)'}>"

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind, then serve from a daemon thread; returns once the page can be loaded."""
        if self._thread is not None:
            raise RuntimeError("the status page is already being served")
        web = _require_aiohttp()
        sock = _bind(self.host, self.port)
        self._socket = sock
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(web, sock, ready, failure),
                                        name=f"dstream-status-page-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            sock.close()
            raise failure[0]
        self.url = f"http://{_url_host(self.host)}:{self.port}/"
        log.info("dstream status page at %s (JSON: %sapi/streaming, Prometheus: %smetrics)",
                 self.url, self.url, self.url)

    def stop(self) -> None:
        """Stop serving: close the listening socket and open connections, end the thread. Twice is harmless."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(SHUTDOWN_TIMEOUT + 5)
        except Exception:  # noqa: BLE001 - the loop stops and the socket closes regardless
            log.exception("closing the status page failed")
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        if self._socket is not None:
            self._socket.close()
        self._thread = self._loop = self._runner = self._socket = None
        self.url = None

    def _serve(self, web: Any, sock: socket.socket, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            runner = web.AppRunner(self._app(web), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as error:  # noqa: BLE001 - handed to start()
            failure.append(error)
            ready.set()
            loop.close()
            return
        self._loop, self._runner = loop, runner
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # -- the routes -----------------------------------------------------------------------------------
    def _app(self, web: Any) -> Any:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/api/streaming", self._api)
        app.router.add_get("/metrics", self._metrics)
        app.on_response_prepare.append(_security_headers)
        return app

    async def _page(self, request: Any) -> Any:
        from aiohttp import web
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})

    async def _api(self, request: Any) -> Any:
        from aiohttp import web
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            if limit < 1:
                raise ValueError
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a positive whole number") from None
        return web.json_response(self.data(limit), headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self._registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    # -- the data -------------------------------------------------------------------------------------
    def data(self, limit: int | None = DEFAULT_LIMIT) -> dict[str, Any]:
        """What ``/api/streaming`` returns: the stream's description (the checkpoint only as whether there
        is one) and the statistics' snapshot with the newest ``limit`` batches."""
        return {"stream": public_description(self.describe()), **self.statistics.snapshot(limit)}

    def _registry(self) -> Any:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.statistics, self.describe))
        return registry


def public_description(description: dict[str, Any]) -> dict[str, Any]:
    """The description as the page shows it: the checkpoint location (a path, maybe with storage options)
    becomes whether the stream checkpoints."""
    shown = {k: v for k, v in description.items() if k != "checkpoint"}
    shown["checkpointing"] = description.get("checkpoint") is not None
    return shown


class _Collector:
    """Prometheus metrics read from the statistics at each scrape."""

    def __init__(self, statistics: StreamStatistics, describe: Callable[[], dict[str, Any]]) -> None:
        self.statistics = statistics
        self.stream = describe  # not ``describe``: the registry would take that for the metrics' names

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        summary = self.statistics.summary()
        batches = self.statistics.batches()
        last = batches[-1] if batches else None
        recent = f"average over the newest {RECENT} batches"
        yield CounterMetricFamily("dstream_batches_completed", "Batch runs completed, failed ones included",
                                  value=summary.batches)
        yield CounterMetricFamily("dstream_batches_failed", "Batch runs that failed", value=summary.failed_batches)
        yield GaugeMetricFamily("dstream_batch_interval_seconds", "The batch interval",
                                value=self.statistics.interval_ms / 1000)
        yield GaugeMetricFamily("dstream_keeping_up", "1 while the recent batches run within the interval and "
                                "do not wait longer and longer to start, else 0", value=int(summary.keeping_up))
        active = self.stream().get("state") == "active"
        yield GaugeMetricFamily("dstream_active", "1 while the StreamingContext is active", value=int(active))
        optional = [
            ("dstream_last_batch_time_seconds", "Batch time of the newest completed batch (streaming clock)",
             None if last is None else last.batch_time_ms / 1000),
            ("dstream_last_batch_records", "Records the newest completed batch took from all inputs "
             "(absent when no input counted)", None if last is None else last.records),
            ("dstream_input_rate_records_per_second", f"Input rate, {recent}", summary.input_rate),
            ("dstream_scheduling_delay_ms", f"Scheduling delay (batch submitted to started), {recent}",
             summary.scheduling_delay_ms),
            ("dstream_processing_delay_ms", f"Processing delay (batch started to done), {recent}",
             summary.processing_delay_ms),
            ("dstream_total_delay_ms", f"Total delay (batch submitted to done), {recent}", summary.total_delay_ms),
        ]
        for name, help_text, value in optional:
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)


# -- sockets --------------------------------------------------------------------------------------------
def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; OSError naming both when it cannot be had."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family)
    except OSError as error:
        known = isinstance(error.errno, int) and error.errno > 0 and not isinstance(error, socket.gaierror)
        reason = os.strerror(error.errno) if known else (error.strerror or str(error))
        raise OSError(error.errno, f"cannot serve the status page on {_url_host(host)}:{port}: {reason}") from error


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


async def _security_headers(request: Any, response: Any) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")


# -- the page -------------------------------------------------------------------------------------------
STYLE = """
:root { --fg:#1d2733; --muted:#677788; --line:#d9e0e7; --bg:#f6f8fa; --bad:#c62828; --badbg:#fdecea; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:13px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color:var(--fg);
       background:var(--bg); }
header { display:flex; align-items:baseline; gap:14px; padding:10px 20px; background:#24313f; color:#fff; }
header h1 { margin:0; font-size:18px; font-weight:600; }
header h1 span { color:#9fb3c8; font-weight:400; }
#updated { margin-left:auto; color:#9fb3c8; font-size:12px; }
#updated.lost { color:#ffab91; }
.badge { padding:1px 8px; border-radius:9px; font-size:12px; background:#546e7a; color:#fff; }
.badge.active { background:var(--ok); } .badge.stopped { background:var(--bad); }
main { padding:14px 20px 30px; max-width:1400px; }
h2 { font-size:14px; margin:18px 0 6px; }
.cards { display:flex; flex-wrap:wrap; gap:8px; }
.card { flex:1 1 auto; background:#fff; border:1px solid var(--line); border-radius:6px; padding:6px 10px; min-width:96px; }
.card .k { color:var(--muted); font-size:12px; white-space:nowrap; }
.card .v { font-size:16px; font-weight:600; white-space:nowrap; }
.card.bad .v { color:var(--bad); }
.note { font-size:12px; margin-top:4px; }
.charts { display:grid; grid-template-columns:1fr 1fr; gap:12px; margin-top:12px; }
figure { margin:0; background:#fff; border:1px solid var(--line); border-radius:6px; padding:6px 10px; }
figcaption { font-weight:600; }
.legend span { margin-right:12px; font-size:12px; color:var(--muted); }
.legend i { display:inline-block; width:14px; height:3px; vertical-align:middle; margin-right:4px; }
svg.chart { width:100%; height:auto; display:block; }
svg.chart text { font-size:10px; fill:var(--muted); }
svg.chart .axis { stroke:var(--line); }
svg.chart .empty { font-size:13px; }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:12px; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:3px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef2f6; font-weight:600; white-space:nowrap; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
tr.failed td { background:var(--badbg); }
.err { color:var(--bad); white-space:pre-wrap; word-break:break-word; font-family:ui-monospace, "DejaVu Sans Mono",
       monospace; font-size:12px; margin:0; }
.ops .op { display:inline-block; margin-right:10px; white-space:nowrap; } .ops .bad { color:var(--bad); font-weight:600; }
td.t { white-space:nowrap; }
.muted { color:var(--muted); }
pre.graph { background:#fff; border:1px solid var(--line); padding:8px; margin:0; font-size:12px; overflow:auto; }
#failed-list .item { background:var(--badbg); border:1px solid #f5c6c0; border-radius:6px; padding:6px 10px;
                     margin-bottom:6px; }
footer { margin-top:20px; color:var(--muted); font-size:12px; }
footer a { color:inherit; }
@media (max-width: 900px) { .charts, .cols { grid-template-columns:1fr; } }
"""

SCRIPT = r"""
"use strict";
const LIMIT = __LIMIT__, RECENT = __RECENT__, POLL_MS = 1000, SVG = "http://www.w3.org/2000/svg";
const COLORS = {rate: "#1565c0", scheduling: "#ef6c00", processing: "#6a1b9a", total: "#2e7d32", interval: "#90a4ae"};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}
function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}
function fill(id, ...children) { const node = document.getElementById(id); node.replaceChildren(...children); return node; }
function num(v, digits) {
  if (v === null || v === undefined) return "-";
  return Number(v).toLocaleString("en-US", {maximumFractionDigits: digits === undefined ? 0 : digits});
}
function ms(v) { return v === null || v === undefined ? "-" : num(v) + " ms"; }
function duration(milliseconds) {
  const s = milliseconds / 1000;
  return s < 60 ? num(s, 3).replace(/\.?0+$/, "") + " s" : num(s / 60, 1) + " min";
}
function clockTime(t) { const d = new Date(t); return d.toTimeString().slice(0, 8); }
function batchLabel(b) { return b.batch.replace(/^batch /, ""); }
function pad(n, width) { return String(n).padStart(width || 2, "0"); }
function batchTime(t) {
  const d = new Date(t), millis = d.getMilliseconds();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${d.toTimeString().slice(0, 8)}` +
    (millis ? "." + pad(millis, 3) : "");
}

// A line chart as inline SVG: series [{name, color, points: [[x, y], ...]}] (y null: left out), an optional
// dashed horizontal line, x as batch times.
function drawChart(svg, series, unit, hline) {
  const W = 640, H = 220, L = 56, R = 12, T = 10, B = 26;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pts = series.flatMap(s => s.points.filter(p => p[1] !== null));
  if (!pts.length) {
    const t = svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"});
    t.textContent = "no batch yet";
    svg.append(t);
    return;
  }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  if (hline !== null && hline !== undefined) ys.push(hline.value);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const y1 = Math.max(1, ...ys) * 1.1;
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (1 - y / y1) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    const y = sy(y1 * f);
    svg.append(svgEl("line", {x1: L, x2: W - R, y1: y, y2: y, class: "axis"}));
    const label = svgEl("text", {x: L - 4, y: y + 3, "text-anchor": "end"});
    label.textContent = num(y1 * f, y1 < 10 ? 1 : 0) + (f === 1 ? " " + unit : "");
    svg.append(label);
  }
  for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
    const label = svgEl("text", {x: sx(x), y: H - 8, "text-anchor": anchor});
    label.textContent = clockTime(x);
    svg.append(label);
  }
  if (hline !== null && hline !== undefined) {
    svg.append(svgEl("line", {x1: L, x2: W - R, y1: sy(hline.value), y2: sy(hline.value), stroke: hline.color,
                              "stroke-dasharray": "4 3", class: "hline"}));
  }
  for (const s of series) {
    const p = s.points.filter(q => q[1] !== null);
    if (!p.length) continue;
    const line = svgEl("polyline", {points: p.map(q => sx(q[0]).toFixed(1) + "," + sy(q[1]).toFixed(1)).join(" "),
                                    fill: "none", stroke: s.color, "stroke-width": 1.8, class: "series",
                                    "data-series": s.name});
    svg.append(line);
    const [lx, ly] = p[p.length - 1];
    svg.append(svgEl("circle", {cx: sx(lx), cy: sy(ly), r: 2.5, fill: s.color}));
  }
}

function legend(id, items) {
  fill(id, ...items.map(([name, color, dashed]) =>
    el("span", {}, el("i", {style: `background:${color};${dashed ? "opacity:.7" : ""}`}), name)));
}

function card(key, value, bad) {
  return el("div", {class: "card" + (bad ? " bad" : "")}, el("div", {class: "k"}, key), el("div", {class: "v"}, value));
}

function render(d) {
  const s = d.stream, sum = d.summary, batches = d.batches, oldestFirst = batches.slice().reverse();
  const state = document.getElementById("state");
  state.textContent = s.state;
  state.className = "badge " + s.state;
  fill("cards",
    card("batch interval", duration(d.interval_ms)),
    card("running since", d.started_at ? new Date(d.started_at * 1000).toLocaleTimeString() : "-"),
    card("batches completed", num(sum.batches)),
    card("failed batches", num(sum.failed_batches), sum.failed_batches > 0),
    card("input rate", sum.input_rate === null ? "-" : num(sum.input_rate, 1) + " rec/s"),
    card("scheduling delay", ms(sum.scheduling_delay_ms)),
    card("processing delay", ms(sum.processing_delay_ms)),
    card("total delay", ms(sum.total_delay_ms)),
    card("keeping up", sum.keeping_up ? "yes" : "no", !sum.keeping_up),
    card("checkpointing", s.checkpointing ? "on" : "off"));

  const interval_s = d.interval_ms / 1000;
  drawChart(document.getElementById("chart-rate"),
    [{name: "input rate", color: COLORS.rate,
      points: oldestFirst.map(b => [b.batch_time_ms, b.records === null ? null : b.records / interval_s])}], "rec/s");
  drawChart(document.getElementById("chart-delays"),
    ["scheduling", "processing", "total"].map(k => ({name: k + " delay", color: COLORS[k],
      points: oldestFirst.map(b => [b.batch_time_ms, b[k + "_delay_ms"]])})), "ms",
    {value: d.interval_ms, color: COLORS.interval});

  const last = batches.length ? batches[0] : null, recent = batches.slice(0, RECENT);
  fill("inputs", ...s.inputs.map(i => {
    const counted = recent.map(b => b.input_records[i.name]).filter(n => n !== null && n !== undefined);
    const rate = counted.length ? counted.reduce((a, b) => a + b, 0) / (counted.length * interval_s) : null;
    const lastN = last ? last.input_records[i.name] : null;
    return el("tr", {class: "input"}, el("td", {}, i.name), el("td", {}, i.kind),
              el("td", {class: "n"}, num(lastN)), el("td", {class: "n"}, rate === null ? "-" : num(rate, 1)));
  }));
  if (!s.inputs.length) fill("inputs", el("tr", {}, el("td", {colspan: 4, class: "muted"}, "none")));
  fill("outputs", ...s.outputs.map(o => {
    const op = last ? last.outputs.find(x => x.id === o.id) : null;
    return el("tr", {class: "output"}, el("td", {class: "n"}, o.id), el("td", {}, o.name),
              el("td", {class: "n"}, op ? ms(op.duration_ms) : "-"),
              el("td", {}, op && op.failure ? el("span", {class: "err"}, op.failure) : ""));
  }));
  if (!s.outputs.length) fill("outputs", el("tr", {}, el("td", {colspan: 4, class: "muted"}, "none")));
  fill("graph", s.graph.join("\n"));

  const failed = batches.filter(b => b.failure !== null);
  document.getElementById("failed-count").textContent = String(failed.length);
  fill("failed-list", ...(failed.length ? failed.map(b => el("div", {class: "item failed-batch"},
      el("b", {}, batchLabel(b)), " attempt " + b.attempt, el("pre", {class: "err"}, b.failure)))
    : [el("div", {class: "muted"}, "none among the batches shown")]));

  document.getElementById("batch-count").textContent = batches.length < sum.batches
    ? `newest ${batches.length} of ${num(sum.batches)}` : String(batches.length);
  fill("batches", ...batches.map(b => {
    const ops = el("td", {class: "ops"}, ...b.outputs.map(o => el("span", {class: "op" + (o.failure ? " bad" : ""),
      title: o.name + (o.failure ? "\n" + o.failure : "")},
      `#${o.id} ${o.duration_ms === null ? "-" : o.duration_ms + " ms"}${o.failure ? " failed" : ""}`)));
    const perInput = Object.entries(b.input_records).map(([k, v]) => `${k}: ${v === null ? "not counted" : v}`).join("\n");
    return el("tr", {class: "batch" + (b.failure !== null ? " failed" : ""), "data-batch-time": b.batch_time_ms},
      el("td", {class: "t", title: b.batch}, batchTime(b.batch_time_ms)), el("td", {class: "n", title: perInput}, num(b.records)),
      el("td", {class: "n"}, ms(b.scheduling_delay_ms)), el("td", {class: "n"}, ms(b.processing_delay_ms)),
      el("td", {class: "n"}, ms(b.total_delay_ms)), ops,
      el("td", {class: "n"}, b.attempt + (b.task_retries ? ` (${b.task_retries} task retries)` : "")),
      el("td", {}, b.failure === null ? "" : el("pre", {class: "err"}, b.failure)));
  }));
  if (!batches.length) fill("batches", el("tr", {}, el("td", {colspan: 8, class: "muted"}, "no batch completed yet")));
}

let busy = false;
async function poll() {
  if (busy) return;
  busy = true;
  const updated = document.getElementById("updated");
  try {
    const response = await fetch(`api/streaming?limit=${LIMIT}`, {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    updated.className = "";
  } catch (error) {
    updated.textContent = "no connection to the driver (" + error.message + ")";
    updated.className = "lost";
  } finally {
    busy = false;
  }
}
legend("legend-rate", [["input rate (records/s)", COLORS.rate]]);
legend("legend-delays", [["scheduling", COLORS.scheduling], ["processing", COLORS.processing],
                         ["total", COLORS.total], ["batch interval", COLORS.interval, true]]);
poll();
setInterval(poll, POLL_MS);
""".replace("__LIMIT__", str(DEFAULT_LIMIT)).replace("__RECENT__", str(RECENT))

BODY = """<header><h1>dstream <span>Streaming</span></h1><span id="state" class="badge">…</span>
<span id="updated">loading…</span></header>
<main>
<div id="cards" class="cards"></div>
<div class="muted note">Input rate and delays: averages over the newest __RECENT__ batches.</div>
<div class="charts">
<figure><figcaption>Input rate</figcaption><div id="legend-rate" class="legend"></div>
<svg id="chart-rate" class="chart" viewBox="0 0 640 220"></svg></figure>
<figure><figcaption>Scheduling, processing and total delay</figcaption><div id="legend-delays" class="legend"></div>
<svg id="chart-delays" class="chart" viewBox="0 0 640 220"></svg></figure>
</div>
<div class="cols">
<section><h2>Inputs (receivers and file sources)</h2><table><thead><tr><th>name</th><th>kind</th>
<th>records, last batch</th><th>records/s, recent</th></tr></thead><tbody id="inputs"></tbody></table></section>
<section><h2>Output operations</h2><table><thead><tr><th>id</th><th>name</th><th>last duration</th><th>last failure</th>
</tr></thead><tbody id="outputs"></tbody></table></section>
</div>
<h2>Failed batches (<span id="failed-count">0</span>)</h2><div id="failed-list"></div>
<h2>Completed batches (<span id="batch-count">0</span>), newest first</h2>
<table><thead><tr><th>batch time</th><th>records</th><th>scheduling delay</th><th>processing delay</th>
<th>total delay</th><th>output operations (#id duration)</th><th>attempt</th><th>failure</th></tr></thead>
<tbody id="batches"></tbody></table>
<h2>Operator graph</h2><pre id="graph" class="graph"></pre>
<footer>Refreshed every second from <a href="api/streaming">api/streaming</a> (JSON).
Prometheus metrics: <a href="metrics">metrics</a>.</footer>
</main>""".replace("__RECENT__", str(RECENT))

PAGE = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dstream Streaming</title><style>{STYLE}</style></head>"
        f"<body>{BODY}<script>{SCRIPT}</script></body></html>")

#: only this page's own script runs (its hash), data only from this server, no frames
CSP = ("default-src 'none'; script-src 'sha256-"
       + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
       + "'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
         "form-action 'none'; frame-ancestors 'none'")
