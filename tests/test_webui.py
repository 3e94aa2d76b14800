"""The web status page (``dstream.ui.port``): its JSON, its Prometheus metrics, its socket and thread, and
the page itself as a real headless browser (Debian's ``chromium``) renders it while a stream runs."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

from prometheus_client import CONTENT_TYPE_LATEST  # noqa: E402 - after the skips
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from dstream import Context, ManualClock, StreamingContext  # noqa: E402
from dstream.driver.monitor import StreamViews, web_port  # noqa: E402
from dstream.driver.statistics import StreamStatistics  # noqa: E402
from dstream.driver.webui import PAGE, SCRIPT, StatusServer  # noqa: E402
from dstream.testing import advance, collect  # noqa: E402

#: requests go straight to the server, whatever proxy the environment names
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
THREAD = "dstream-status-page"
EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with _OPENER.open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


def metrics(url: str) -> dict[str, float]:
    """Every sample of ``/metrics`` by name, parsed by the Prometheus client's own parser."""
    status, headers, body = get(url + "metrics")
    assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_LATEST
    return {sample.name: sample.value
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def status_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD)]


def _fail_on_five(rdd) -> None:
    if 5 in rdd.collect():
        raise ValueError(f"five is not allowed {EVIL}")


@pytest.fixture(scope="module")
def uictx():
    """A thread-pool Context whose streams serve their status page on a free port."""
    c = Context("threads[2]", conf={"dstream.ui.port": 0})
    yield c
    c.stop()


@pytest.fixture
def uissc(uictx):
    s = StreamingContext(uictx, 1.0, clock=ManualClock())
    yield s
    s.stop(stopSparkContext=False)
    assert not status_threads()


def _stream(ssc: StreamingContext, batches: list[list[int]]) -> list[list[int]]:
    """Numbers, one list a batch; output 0 fails every batch holding a 5, output 1 collects."""
    numbers = ssc.queueStream(batches, oneAtATime=True)
    numbers.foreachRDD(_fail_on_five)
    return collect(numbers.map(lambda x: x * 10))


# -- off by default, on with dstream.ui.port ----------------------------------------------------------------
def test_off_by_default(ssc):
    collect(ssc.queueStream([[1]]))
    ssc.start()
    advance(ssc, 1)
    assert ssc.uiWebUrl is None and not status_threads()


def test_the_port_setting_is_checked_when_the_context_is_made():
    stats = StreamStatistics(1000)
    assert web_port({}) is None and web_port({"dstream.ui.port": None}) is None
    assert web_port({"dstream.ui.port": "4040"}) == 4040 and web_port({"dstream.ui.port": 0}) == 0
    for bad in (-1, 65536, "http", 40.5, True):
        with pytest.raises(ValueError, match=r"dstream\.ui\.port must be a port number from 0 to 65535"):
            StreamViews(stats, dict, {"dstream.ui.port": bad})


def test_serves_on_loopback_by_default_and_says_where(uissc, caplog):
    _stream(uissc, [[1, 2]])
    with caplog.at_level("INFO", logger="dstream.driver.webui"):
        uissc.start()
    url = uissc.uiWebUrl
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
    assert f"status page at {url}" in caplog.text
    server = uissc._views._status_server
    assert server._socket.getsockname()[0] == "127.0.0.1"
    status, headers, body = get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert body.decode() == PAGE  # the same static page always: stream data reaches it only as JSON
    uissc.stop(stopSparkContext=False)
    assert uissc.uiWebUrl is None and not status_threads()
    with pytest.raises(OSError):
        get(url)


def test_host_from_the_conf():
    stats = StreamStatistics(1000)
    views = StreamViews(stats, lambda: {"state": "active"}, {"dstream.ui.port": 0, "dstream.ui.host": "localhost"})
    views.start()
    try:
        assert re.fullmatch(r"http://localhost:\d+/", views.web_url)
    finally:
        views.stop()
    assert views.web_url is None and not status_threads()


# -- the JSON ---------------------------------------------------------------------------------------------
def test_json_has_the_stream_and_its_batches(uissc):
    out = _stream(uissc, [[1, 2, 3], [4], [6, 7]])
    uissc.start()
    advance(uissc, 3)
    uissc._bus.wait_until_empty()
    data = get_json(uissc.uiWebUrl + "api/streaming")
    assert out == [[10, 20, 30], [40], [60, 70]]
    stream = data["stream"]
    assert stream["state"] == "active" and stream["interval_ms"] == 1000 and data["interval_ms"] == 1000
    assert [i["name"] for i in stream["inputs"]] == ["queueStream"]
    assert [o["id"] for o in stream["outputs"]] == [0, 1] and stream["graph"]
    assert stream["checkpointing"] is False and "checkpoint" not in stream
    assert [b["batch_time_ms"] for b in data["batches"]] == [3000, 2000, 1000]  # newest first
    assert [b["records"] for b in data["batches"]] == [2, 1, 3]
    assert all(b["failure"] is None and len(b["outputs"]) == 2 for b in data["batches"])
    assert data["summary"]["batches"] == 3 and data["summary"]["failed_batches"] == 0
    assert [b["batch_time_ms"] for b in get_json(uissc.uiWebUrl + "api/streaming?limit=1")["batches"]] == [3000]
    for bad in ("0", "x"):
        assert get(uissc.uiWebUrl + f"api/streaming?limit={bad}")[0] == 400


def test_a_failed_batch_in_json_and_metrics(uissc):
    _stream(uissc, [[1], [5], [2, 3]])
    uissc.start()
    assert metrics(uissc.uiWebUrl)["dstream_batches_completed_total"] == 0  # before any batch
    advance(uissc, 3)
    uissc._bus.wait_until_empty()
    data = get_json(uissc.uiWebUrl + "api/streaming")
    failed = [b for b in data["batches"] if b["failure"] is not None]
    assert [b["batch_time_ms"] for b in failed] == [2000]
    assert "ValueError: five is not allowed" in failed[0]["failure"]
    assert failed[0]["outputs"][0]["failure"].startswith("ValueError") and failed[0]["outputs"][1]["failure"] is None
    assert data["summary"]["failed_batches"] == 1 and "five is not allowed" in data["summary"]["last_error"]

    m = metrics(uissc.uiWebUrl)
    assert m["dstream_batches_completed_total"] == 3 == data["summary"]["batches"]
    assert m["dstream_batches_failed_total"] == 1
    assert m["dstream_last_batch_records"] == 2 and m["dstream_last_batch_time_seconds"] == 3.0
    assert m["dstream_batch_interval_seconds"] == 1.0 and m["dstream_active"] == 1
    assert m["dstream_input_rate_records_per_second"] == pytest.approx(4 / 3)
    assert m["dstream_keeping_up"] == 1
    for delay in ("scheduling", "processing", "total"):
        assert m[f"dstream_{delay}_delay_ms"] >= 0


# -- the server itself ------------------------------------------------------------------------------------
def test_stop_frees_the_port_and_ends_the_thread():
    stats = StreamStatistics(1000)
    server = StatusServer(stats, lambda: {"state": "active", "inputs": [], "outputs": [], "graph": []}, port=0)
    before = {t.ident for t in threading.enumerate()}
    server.start()
    port = server.port
    assert port != 0 and server.url == f"http://127.0.0.1:{port}/" and len(status_threads()) == 1
    for path in ("", "api/streaming", "metrics"):  # connections the server must close too
        assert get(server.url + path)[0] == 200
    server.stop()
    server.stop()  # harmless
    assert server.url is None and not status_threads()
    assert {t.ident for t in threading.enumerate()} <= before
    with socket.create_server(("127.0.0.1", port)):  # free again
        pass
    again = StatusServer(stats, server.describe, port=port)  # and a new server gets it
    again.start()
    try:
        assert again.url == f"http://127.0.0.1:{port}/" and get(again.url + "metrics")[0] == 200
    finally:
        again.stop()


def test_a_taken_port_raises_naming_host_and_port():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = StatusServer(StreamStatistics(1000), dict, port=port)
        with pytest.raises(OSError, match=rf"cannot serve the status page on 127\.0\.0\.1:{port}: "):
            server.start()
    assert server.url is None and not status_threads()


def test_a_stream_whose_port_is_taken_does_not_start_quietly():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ssc = StreamingContext(Context("threads[1]", conf={"dstream.ui.port": port}), 1.0, clock=ManualClock())
        try:
            collect(ssc.queueStream([[1]]))
            with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}: Address already in use$"):
                ssc.start()
            assert StreamingContext.getActive() is None  # not left running behind the error
        finally:
            ssc.stop()
    assert not status_threads()


def test_a_host_that_does_not_resolve_raises_naming_it():
    server = StatusServer(StreamStatistics(1000), dict, host="no-such-host.invalid", port=0)
    with pytest.raises(OSError, match=r"cannot serve the status page on no-such-host\.invalid:0: "):
        server.start()
    assert not status_threads()


def test_without_aiohttp_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'dstream[ui]'")):
        StatusServer(StreamStatistics(1000), dict, port=0).start()
    assert not status_threads()


def test_the_page_builds_its_content_from_text_only():
    """Stream names and errors reach the page as JSON and go into it as text nodes, never as markup."""
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in SCRIPT
    assert "http://" not in PAGE.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    assert "https://" not in PAGE


# -- the page in a real browser -----------------------------------------------------------------------------
def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium or chromium-browser on PATH (Debian: apt-get install chromium)")


def _browse(chromium: str, profile: Path, url: str, *args: str) -> str:
    """Load ``url`` headless, letting its script run 3 s of virtual time; stdout (the DOM with --dump-dom)."""
    command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--no-first-run",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--virtual-time-budget=3000", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _batch_rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="batch( failed)?" data-batch-time="(\d+)"', dom)


def _polylines(dom: str, chart: str) -> list[list[str]]:
    svg = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
    assert svg, f"no {chart} in the page"
    return [points.split() for points in re.findall(r'<polyline points="([^"]*)"', svg.group(0))]


def test_the_page_in_headless_chromium(uissc, tmp_path):
    chromium = _chromium()
    numbers = uissc.queueStream([[1, 2, 3], [5], [6, 7], [8, 9, 10, 11], [12], [13, 14]], oneAtATime=True)
    numbers.name = EVIL  # a stream name with markup in it: shown as text
    numbers.foreachRDD(_fail_on_five)
    collect(numbers.map(lambda x: x * 10))
    uissc.start()
    advance(uissc, 3)
    uissc._bus.wait_until_empty()
    profile = tmp_path / "profile"

    first = _browse(chromium, profile, uissc.uiWebUrl, "--dump-dom")
    rows = _batch_rows(first)
    assert [int(t) for _, t in rows] == [3000, 2000, 1000]
    assert [bool(f) for f, _ in rows] == [False, True, False]  # the failed batch is marked
    assert "five is not allowed" in first and 'class="item failed-batch"' in first

    advance(uissc, 3)
    uissc._bus.wait_until_empty()
    second = _browse(chromium, profile, uissc.uiWebUrl, "--dump-dom")
    assert [int(t) for _, t in _batch_rows(second)] == [6000, 5000, 4000, 3000, 2000, 1000]  # the table grew
    for dom in (first, second):
        # markup from the stream's name and the error is text: escaped, never an element
        assert "&lt;script&gt;document.title" in dom and "&lt;img src=x" in dom
        assert "<img" not in dom and "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
        assert re.search(r'<span id="state" class="badge active">active</span>', dom)
    (rate,) = _polylines(second, "chart-rate")
    assert len(rate) == 6 and all(re.fullmatch(r"[\d.]+,[\d.]+", p) for p in rate)
    delays = _polylines(second, "chart-delays")
    assert len(delays) == 3 and all(len(points) == 6 for points in delays)

    screenshot = tmp_path / "webui.png"
    _browse(chromium, profile, uissc.uiWebUrl, f"--screenshot={screenshot}", "--window-size=1280,900")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("DSTREAM_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "webui.png")

