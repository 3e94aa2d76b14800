"""The live views: a status line on a terminal (a real pseudo-terminal) and the notebook view (a real kernel)."""
from __future__ import annotations

import io
import os
import re
import sys
import termios
import textwrap
import threading
import time
import tty
import types

import pytest

from dstream.driver.liveview import (THREAD_PREFIX, NotebookView, TerminalProgress, in_notebook_kernel,
                                     render_html, sparkline_text)
from dstream.driver.monitor import StreamViews
from dstream.driver.statistics import BatchRecord, StreamStatistics
from dstream.testing import advance

INTERVAL_MS = 1000


def record(n: int, total_ms: int = 20, failure: str | None = None) -> BatchRecord:
    """Batch ``n``: 10 records, submitted at its batch time, done ``total_ms`` later."""
    t = n * INTERVAL_MS
    return BatchRecord(t, t, t + 1, t + total_ms, {"queue": 10}, (), failure=failure)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def drawings(out: str) -> list[str]:
    """The drawings of the status line in what a terminal got (colours and cursor codes left out): each
    one rewrites the line from its start."""
    return [d for d in ANSI.sub("", out).rstrip("\n").split("\r") if d]


def live_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


class Pty:
    """A pseudo-terminal: ``writer`` is its slave side as a text file (``isatty()`` is True); what is
    written to it is drained from the master side by a thread into ``output()``."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no output processing: "\n" stays "\n", so a "\r" is the view's own
        termios.tcsetwinsize(slave, (24, 200))  # wide enough for the whole line
        self.writer = os.fdopen(slave, "w", encoding="utf-8")
        self._data = bytearray()
        self._reader = threading.Thread(target=self._drain, name="test-pty-reader", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # the slave side closed
                return
            if not chunk:
                return
            self._data += chunk

    def output(self, settle: float = 0.2) -> str:
        self.writer.flush()
        time.sleep(settle)  # let the reader take what was written
        return self._data.decode("utf-8", "replace")

    def close(self) -> None:
        self.writer.close()
        self._reader.join(5)
        os.close(self.master)


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def describer(state: list[str]):
    return lambda: {"state": state[0], "interval_ms": INTERVAL_MS}


# -- the terminal --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_rich", [True, False], ids=["rich", "plain"])
def test_terminal_line_is_redrawn_in_place_throttled_and_final_at_stop(pty, use_rich):
    if use_rich:
        pytest.importorskip("rich")
    stats, state = StreamStatistics(INTERVAL_MS), ["active"]
    view = TerminalProgress(stats, describer(state), stream=pty.writer, min_interval=0.2, use_rich=use_rich)
    drawn_at: list[float] = []
    draw = view._draw
    view._draw = lambda rendered: (drawn_at.append(time.monotonic()), draw(rendered))[1]  # type: ignore
    view.start()
    try:
        assert live_threads() == [f"{THREAD_PREFIX}-terminal"]
        # a batch every 10 ms for one second: the line changes all the time, it is drawn every 0.2 s at most
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < 1.0:
            n += 1
            stats.add(record(n))
            time.sleep(0.01)
        time.sleep(0.3)  # the last change is drawn
        running_draws = view.draws
        gaps = [b - a for a, b in zip(drawn_at, drawn_at[1:])]
        assert all(gap >= 0.19 for gap in gaps), gaps
        assert 4 <= running_draws <= 1 + 1.3 / 0.2 + 1, running_draws  # the first, then one per 0.2 s
        time.sleep(0.5)  # nothing changes: nothing is redrawn
        assert view.draws == running_draws
        state[0] = "stopped"
    finally:
        view.stop()
    assert view.draws == running_draws + 1
    assert live_threads() == []

    out = ANSI.sub("", pty.output())
    assert out.endswith("\n") and out.count("\n") == 1  # one line, ended at stop()
    drawn = drawings(out)
    assert len(drawn) >= running_draws + 1
    final = drawn[-1]
    assert f"{n} batches" in final and "stopped" in final and "0 failed" in final
    assert "keeping up" in final and "10.0 rec/s" in final and "delay 20 ms (sched 1 ms / proc 19 ms)" in final
    assert final.rstrip().endswith("| " + "█" * 10)  # the sparkline of the last ten (equal) total delays
    if use_rich:
        assert "\x1b[2K" in pty.output(0)  # rich erases the line before drawing it again


def test_terminal_line_shows_failures_and_falling_behind(pty):
    stats, state = StreamStatistics(INTERVAL_MS), ["active"]
    view = TerminalProgress(stats, describer(state), stream=pty.writer, min_interval=0.1, use_rich=False)
    view.start()
    try:
        stats.add(record(1, total_ms=3000, failure="ValueError: boom"))
        state[0] = "stopped"
    finally:
        view.stop()
    final = drawings(pty.output())[-1]
    assert "1 batches" in final and "1 failed" in final and "falling behind" in final


def test_plain_line_fits_a_narrow_terminal(pty):
    termios.tcsetwinsize(pty.writer.fileno(), (24, 40))
    stats = StreamStatistics(INTERVAL_MS)
    stats.add(record(1))
    view = TerminalProgress(stats, describer(["active"]), stream=pty.writer, use_rich=False)
    view.start()
    view.stop()
    lines = drawings(pty.output())
    assert len(lines) == 2 and all(len(line) == 39 for line in lines)  # the first drawing and the final one
    assert lines[-1].startswith("dstream active | 1 batches") and lines[-1].endswith("...")


def test_a_real_stream_on_a_terminal(pty, ssc):
    ssc._views.progress_stream = pty.writer
    seen = []
    ssc.queueStream([[1, 2], [3], [4, 5, 6]]).foreachRDD(lambda rdd: seen.append(rdd.count()))
    ssc.start()
    assert live_threads() == [f"{THREAD_PREFIX}-terminal"]
    advance(ssc, 3)
    ssc.stop(stopSparkContext=False)
    assert seen == [2, 1, 3] and live_threads() == []
    final = drawings(pty.output())[-1]
    assert "3 batches" in final and "stopped" in final


def test_stream_views_pick_the_views_by_conf_and_environment(pty, monkeypatch):
    stats = StreamStatistics(INTERVAL_MS)
    describe = describer(["active"])

    def views(conf=None, stream=None) -> StreamViews:
        v = StreamViews(stats, describe, conf or {})
        v.progress_stream = stream
        return v

    assert not in_notebook_kernel()
    assert views(stream=io.StringIO())._terminal_progress() is None  # not a terminal
    assert isinstance(views(stream=pty.writer)._terminal_progress(), TerminalProgress)
    assert views({"dstream.ui.progress": "false"}, pty.writer)._terminal_progress() is None
    with pytest.raises(ValueError, match="dstream.ui.progress"):
        views({"dstream.ui.progress": "maybe"}, pty.writer)._terminal_progress()
    assert views()._notebook_view() is None  # not in a kernel

    # a Jupyter kernel: an IPython shell with a kernel gets the notebook view and no terminal line
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert in_notebook_kernel()
    assert isinstance(views()._notebook_view(), NotebookView)
    assert views(stream=pty.writer)._terminal_progress() is None
    assert views({"dstream.ui.notebook": False})._notebook_view() is None
    del shell.kernel  # a plain IPython terminal
    assert not in_notebook_kernel() and views()._notebook_view() is None


def test_the_html_and_sparklines():
    stats = StreamStatistics(INTERVAL_MS)
    for n, total in enumerate([10, 400, 2500], 1):
        stats.add(record(n, total, failure="<script>alert(1)</script>" if n == 2 else None))
    page = render_html(stats.summary(), {"state": "active", "interval_ms": INTERVAL_MS})
    assert 'data-state="active" data-batches="3" data-failed="1"' in page
    assert "&lt;script&gt;" in page and "<script>" not in page  # the error is escaped
    assert "<polyline" in page and "falling behind" not in page and "keeping up" in page
    assert sparkline_text([0, 50, 100]) == "▁▅█"
    assert sparkline_text([0]) == "▁"


def test_a_view_that_cannot_draw_stays_off_and_never_fails_the_stream(caplog):
    stats = StreamStatistics(INTERVAL_MS)
    view = NotebookView(stats, describer(["active"]), min_interval=0.05)
    view._open = lambda rendered: (_ for _ in ()).throw(RuntimeError("no display"))  # type: ignore[method-assign]
    view.start()
    assert live_threads() == [] and "could not start" in caplog.text
    view.stop()


# -- the notebook, in a real kernel ------------------------------------------------------------------------
NOTEBOOK_CELLS = [
    # 0: the stream starts here, so its live view is this cell's output
    """
    import threading, time
    from dstream import Context, ManualClock, StreamingContext
    from dstream.testing import advance

    ctx = Context("threads[2]")
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    lines = ssc.queueStream([["a b", "b"], ["c"], ["a a a"]])
    counts = []
    lines.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b) \\
        .foreachRDD(lambda rdd: counts.append(sorted(rdd.collect())))
    ssc.start()
    """,
    # 1: batches, more than a second apart, so the view updates while this cell runs
    """
    for _ in range(3):
        advance(ssc, 1)
        time.sleep(1.2)
    """,
    # 2
    """
    ssc.stop(stopSparkContext=False)
    print(counts)
    """,
    # 3
    """
    print("live-view threads:", [t.name for t in threading.enumerate() if t.name.startswith("dstream-liveview")])
    ctx.stop()
    """,
    # 4: the notebook view off by conf
    """
    ctx2 = Context("threads[2]", conf={"dstream.ui.notebook": "false"})
    ssc2 = StreamingContext(ctx2, 1.0, clock=ManualClock())
    ssc2.queueStream([[1], [2]]).foreachRDD(lambda rdd: None)
    ssc2.start()
    advance(ssc2, 2)
    ssc2.stop()
    print("stopped", ssc2._statistics.summary().batches)
    """,
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook above, executed in a real ipykernel; with the display messages the kernel sent."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager

    class Client(nbclient.NotebookClient):
        """Records every display message, and starts the kernel of this interpreter: the ``python3`` spec
        ipykernel provides for ``sys.executable`` itself, whatever kernelspecs are installed (none in a
        fresh venv need be)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.display_messages: list[tuple[int, str, str, dict]] = []

        def create_kernel_manager(self):
            self.km = self.kernel_manager_class(kernel_name="python3", config=self.config,
                                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
            return self.km

        def process_message(self, msg, cell, cell_index):
            content = msg["content"]
            if msg["msg_type"] in ("display_data", "update_display_data"):
                display_id = (content.get("transient") or {}).get("display_id")
                self.display_messages.append((cell_index, msg["msg_type"], display_id, msg))
            return super().process_message(msg, cell, cell_index)

    work = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(src).strip()) for src in NOTEBOOK_CELLS]
    client = Client(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_RUNTIME_DIR", str(work / "runtime"))  # the connection file, not in $HOME
        client.execute()
    return nb, client.display_messages


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_notebook_view_updates_one_output_area_in_place(executed):
    nb, messages = executed
    # one output area, in the cell that started the stream
    shown = [m for m in messages if m[1] == "display_data"]
    assert [(cell, kind) for cell, kind, _, _ in shown] == [(0, "display_data")]
    display_id = shown[0][2]
    assert display_id
    [output] = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert not any(o.output_type == "display_data" for cell in nb.cells[1:] for o in cell.outputs)

    # updated while the batches ran (throttled: at most one a second), and a final time at stop()
    updates = [(cell, msg) for cell, kind, did, msg in messages if kind == "update_display_data"]
    assert updates and all(did == display_id for _, kind, did, _ in messages if kind == "update_display_data")
    running = [msg for cell, msg in updates if cell == 1]
    assert running, "no update while the batches ran"
    sent = [msg["header"]["date"] for msg in running]
    gaps = [(b - a).total_seconds() for a, b in zip(sent, sent[1:])]
    assert all(gap >= 0.95 for gap in gaps), gaps
    assert len(running) <= 4
    assert [cell for cell, _ in updates][-1] == 2  # the final update, from ssc.stop()

    # nbclient applied the updates to the one output: it shows the final state
    final = output["data"]["text/html"]
    assert 'class="dstream-live"' in final and 'data-state="stopped" data-batches="3" data-failed="0"' in final
    assert "keeping up" in final and "<polyline" in final
    assert "[[('a', 1), ('b', 2)], [('c', 1)], [('a', 3)]]" in _stream_text(nb.cells[2])


def test_notebook_view_leaves_no_thread_after_stop(executed):
    nb, _ = executed
    assert "live-view threads: []" in _stream_text(nb.cells[3])


def test_notebook_view_off_by_conf(executed):
    nb, messages = executed
    assert "stopped 2" in _stream_text(nb.cells[4])
    assert not [m for m in messages if m[0] == 4]
    assert not [o for o in nb.cells[4].outputs if o.output_type == "display_data"]
