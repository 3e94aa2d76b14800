"""Live views of a running stream: one output area in a Jupyter notebook, one status line in a terminal.

Both read ``StreamStatistics.summary()`` and the stream's ``describe()`` (its state) and redraw from a daemon
thread of their own, at most once per ``min_interval`` seconds (one by default) and only when a batch has
completed or the state has changed since the last drawing. ``start()`` draws the first state in the calling
thread; ``stop()`` stops the thread (a bounded join), draws the final state once more and leaves nothing
running. A view never fails the stream: a drawing that raises is logged and the stream goes on.

* ``NotebookView``: ``IPython.display.display(HTML, display_id=True)`` once, in the thread that calls
  ``StreamingContext.start()`` (so the output area is in the cell that started the stream), then
  ``handle.update(HTML)``: state, batches done and failed, input rate, average delays with a sparkline of the
  recent total delays, the last error and whether the stream keeps up. ``in_notebook_kernel()`` says whether
  this process is a Jupyter kernel (an IPython shell with a ``kernel``: not a plain IPython terminal, not a
  script).
* ``TerminalProgress``: one line redrawn in place on a terminal: with ``rich`` (the ``[ui]`` extra) a
  ``rich.live.Live`` line that keeps itself below what the program prints meanwhile; without it the line is
  rewritten with ``\\r``.

IPython and rich are optional dependencies, imported on first use.
"""
from __future__ import annotations

import atexit
import html
import logging
import os
import sys
import threading
from typing import Any, Callable, TextIO

from dstream.driver.statistics import RECENT, StreamStatistics, Summary

log = logging.getLogger(__name__)

#: the prefix of the views' thread names
THREAD_PREFIX = "dstream-liveview"
#: seconds ``stop()`` waits for a view's thread (and for a drawing in progress)
JOIN_TIMEOUT = 5.0
#: characters of the last error a notebook shows
ERROR_CHARS = 2000
#: the eight heights of a text sparkline
BLOCKS = "▁▂▃▄▅▆▇█"


def in_notebook_kernel() -> bool:
    """Whether this process is a Jupyter kernel: IPython is running and its shell has a ``kernel`` (a ZMQ
    shell). A plain IPython terminal and a script are not."""
    if "IPython" not in sys.modules:  # a kernel imports IPython long before any stream starts
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # noqa: BLE001 - a broken IPython means no notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class _LiveView:
    """Draws once at start(), then from its own daemon thread at most once per ``min_interval`` seconds when
    the stream changed, and a final time at stop()."""

    kind = "view"

    def __init__(self, statistics: StreamStatistics, describe: Callable[[], dict[str, Any]],
                 min_interval: float = 1.0) -> None:
        if not min_interval > 0:
            raise ValueError(f"min_interval must be positive, got {min_interval!r}")
        self.statistics = statistics
        self.describe = describe
        self.min_interval = float(min_interval)
        #: drawings so far (the first, the redraws and the final one)
        self.draws = 0
        self._stopping = threading.Event()
        self._draw_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shown: tuple[int, Any] | None = None  # (statistics version, state) last drawn
        self._started = self._stopped = False

    # -- what each view does ---------------------------------------------------------------------------
    def _render(self, summary: Summary, description: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _open(self, rendered: Any) -> None:
        """Show the first drawing."""
        raise NotImplementedError

    def _draw(self, rendered: Any) -> None:
        """Replace the drawing."""
        raise NotImplementedError

    def _close(self, rendered: Any) -> None:
        """Replace the drawing with the final one and let go of the output."""
        self._draw(rendered)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Draw the stream's state and start redrawing it; a view that cannot draw logs why and stays off."""
        if self._started:
            return
        self._started = True
        try:
            with self._draw_lock:
                self._open(self._next(force=True))
                self.draws += 1
        except Exception:  # noqa: BLE001 - the stream runs without its view
            log.warning("the %s of the stream could not start; the stream runs without it", self.kind,
                        exc_info=True)
            self._stopped = True
            return
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing (waits at most JOIN_TIMEOUT s for the thread), then draw the final state."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("the %s thread did not stop within %s s", self.kind, JOIN_TIMEOUT)
        if not self._draw_lock.acquire(timeout=JOIN_TIMEOUT):
            log.warning("the %s could not draw the final state: a drawing is stuck", self.kind)
            return
        try:
            self._close(self._next(force=True))
            self.draws += 1
        finally:
            self._draw_lock.release()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.wait(self.min_interval):
            try:
                with self._draw_lock:
                    if self._stopping.is_set():
                        return
                    rendered = self._next(force=False)
                    if rendered is not None:
                        self._draw(rendered)
                        self.draws += 1
            except Exception:  # noqa: BLE001 - a view never fails the stream
                failures += 1
                if failures == 1:  # once, not once a second
                    log.warning("redrawing the %s failed", self.kind, exc_info=True)

    def _next(self, force: bool) -> Any:
        """The next drawing, or None when neither the batches nor the state changed since the last one."""
        description = self.describe()
        key = (self.statistics.version, description.get("state"))
        if not force and key == self._shown:
            return None
        rendered = self._render(self.statistics.summary(), description)
        self._shown = key
        return rendered


# -- the notebook ------------------------------------------------------------------------------------------
class NotebookView(_LiveView):
    """One output area in the notebook cell that started the stream, updated in place."""

    kind = "notebook"

    def __init__(self, statistics: StreamStatistics, describe: Callable[[], dict[str, Any]],
                 min_interval: float = 1.0) -> None:
        super().__init__(statistics, describe, min_interval)
        self._handle: Any = None
        self._html: Any = None

    def _render(self, summary: Summary, description: dict[str, Any]) -> str:
        return render_html(summary, description)

    def _open(self, rendered: str) -> None:
        from IPython.display import HTML, display

        self._html = HTML
        # display_id=True: a handle whose update() replaces this one output (from any thread)
        self._handle = display(HTML(rendered), display_id=True)

    def _draw(self, rendered: str) -> None:
        self._handle.update(self._html(rendered))


def render_html(summary: Summary, description: dict[str, Any]) -> str:
    """The notebook view of a stream: a small table, the sparkline and the last error."""
    state = str(description.get("state", "unknown"))
    interval_ms = description.get("interval_ms")
    mark = ('<span style="color:#2e7d32;font-weight:bold">&#10004; keeping up</span>' if summary.keeping_up else
            '<span style="color:#c62828;font-weight:bold">&#9888; falling behind</span>')
    failed = str(summary.failed_batches)
    if summary.failed_batches:
        failed = f'<span style="color:#c62828;font-weight:bold">{failed}</span>'
    delays = (f"scheduling {_ms(summary.scheduling_delay_ms)} &middot; processing "
              f"{_ms(summary.processing_delay_ms)} &middot; total {_ms(summary.total_delay_ms)}")
    rows = [("state", f"<b>{_esc(state)}</b>"),
            ("batches completed", str(summary.batches)),
            ("failed batches", failed),
            ("input rate", _rate(summary.input_rate)),
            (f"delays (average of the last {RECENT} batches)", delays),
            ("recent total delays", sparkline_svg(summary.recent_total_delays_ms, interval_ms)),
            ("last batch", _esc(summary.last_batch or "-")),
            ("keeping up", mark)]
    cells = "".join(f'<tr><td style="text-align:left;padding:1px 12px 1px 0">{_esc(name)}</td>'
                    f'<td style="text-align:left;padding:1px 0">{value}</td></tr>' for name, value in rows)
    error = ""
    if summary.last_error:
        text = summary.last_error
        if len(text) > ERROR_CHARS:
            text = text[:ERROR_CHARS] + " …"
        error = ('<div><b>last error</b><pre style="white-space:pre-wrap;max-height:12em;overflow:auto;'
                 f'color:#c62828;font-size:11px;margin:2px 0">{_esc(text)}</pre></div>')
    interval = "" if interval_ms is None else f" &middot; batch interval {interval_ms / 1000:g} s"
    return (f'<div class="dstream-live" data-state="{_esc(state)}" data-batches="{summary.batches}" '
            f'data-failed="{summary.failed_batches}" data-keeping-up="{str(summary.keeping_up).lower()}">'
            f"<b>dstream</b> stream{interval}"
            f'<table style="border-collapse:collapse;margin:2px 0">{cells}</table>{error}</div>')


def sparkline_svg(values: list[int], interval_ms: float | None = None, width: int = 120,
                  height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (oldest first), scaled to their maximum or the batch interval
    (drawn dashed) whichever is larger; a dash when there is nothing to draw."""
    if not values:
        return "-"
    top = max(max(values), interval_ms or 0, 1)
    step = width / max(len(values) - 1, 1)

    def y(value: float) -> float:
        return round(height - 1 - (height - 2) * value / top, 1)

    points = " ".join(f"{round(i * step, 1)},{y(v)}" for i, v in enumerate(values))
    if len(values) == 1:
        points += f" {width},{y(values[0])}"
    limit = "" if not interval_ms else (
        f'<line x1="0" x2="{width}" y1="{y(interval_ms)}" y2="{y(interval_ms)}" stroke="#999" '
        f'stroke-dasharray="3,2" stroke-width="1"/>')
    title = f"total delay ms, oldest first: {', '.join(str(v) for v in values)}"
    return (f'<svg class="dstream-sparkline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'style="vertical-align:middle"><title>{_esc(title)}</title>{limit}'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/></svg>'
            f' <span style="font-size:11px">{values[-1]} ms</span>')


# -- the terminal ------------------------------------------------------------------------------------------
class TerminalProgress(_LiveView):
    """One status line on a terminal, redrawn in place (rich when installed, else ``\\r``)."""

    kind = "terminal"

    def __init__(self, statistics: StreamStatistics, describe: Callable[[], dict[str, Any]],
                 stream: TextIO | None = None, min_interval: float = 1.0, use_rich: bool | None = None) -> None:
        """``stream``: where the line goes (default ``sys.stderr``); ``use_rich``: None uses rich when it
        is installed, False never."""
        super().__init__(statistics, describe, min_interval)
        self.stream = sys.stderr if stream is None else stream
        self.use_rich = use_rich
        self._unicode = _can_encode(self.stream, BLOCKS + "…")
        self._live: Any = None
        self._width = 0  # characters of the plain line drawn last

    def _render(self, summary: Summary, description: dict[str, Any]) -> list[tuple[str, str]]:
        return status_segments(summary, description, self._unicode)

    def _open(self, rendered: list[tuple[str, str]]) -> None:
        if self.use_rich is not False and self._unicode:
            self._live = _start_live(self.stream)
        if self._live is None:
            self.use_rich = False
        atexit.register(self._at_exit)
        self._draw(rendered)

    def _draw(self, rendered: list[tuple[str, str]]) -> None:
        columns = _columns(self.stream)
        if self._live is not None:
            if columns:  # the stream's own terminal; else rich asks stdin, stdout and stderr
                self._live.console.width = columns
            self._live.update(self._live_text(rendered), refresh=True)
            return
        line = "".join(text for text, _ in rendered)
        room = (columns or 80) - 1  # the last column would wrap on some terminals
        if len(line) > room:
            line = line[:max(room - 3, 0)] + "..."
        self.stream.write("\r" + line + " " * max(self._width - len(line), 0))
        self.stream.flush()
        self._width = len(line)

    def _close(self, rendered: list[tuple[str, str]]) -> None:
        atexit.unregister(self._at_exit)
        try:
            self._draw(rendered)
        finally:
            if self._live is not None:
                live, self._live = self._live, None
                live.stop()  # the line stays, with a newline after it, and the cursor is shown again
            else:
                self.stream.write("\n")
                self.stream.flush()

    @staticmethod
    def _live_text(rendered: list[tuple[str, str]]) -> Any:
        from rich.text import Text

        return Text.assemble(*rendered, no_wrap=True, overflow="ellipsis", end="")

    def _at_exit(self) -> None:
        """The interpreter exits with the stream still running: leave the terminal as it was."""
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


def _start_live(stream: TextIO) -> Any:
    """A started ``rich.live.Live`` of one line on ``stream``, or None without rich. What the program prints
    to a terminal's stdout or stderr meanwhile goes above the line."""
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        return None
    console = Console(file=stream, force_jupyter=False, highlight=False, emoji=False, markup=False)
    live = Live(console=console, auto_refresh=False, transient=False,
                redirect_stdout=_isatty(sys.stdout), redirect_stderr=_isatty(sys.stderr))
    live.start()
    return live


def status_segments(summary: Summary, description: dict[str, Any], unicode: bool = True) -> list[tuple[str, str]]:
    """The terminal line as (text, rich style) pieces, the most telling first (a narrow terminal cuts the
    end): state, batches, failed batches, whether the stream keeps up, input rate, average total delay
    (scheduling / processing), and a sparkline of the recent total delays (``unicode`` only)."""
    state = str(description.get("state", "unknown"))
    sep = (" | ", "dim")
    parts: list[tuple[str, str]] = [
        ("dstream ", "bold"), (state, {"active": "green", "stopped": "dim"}.get(state, "yellow")), sep,
        (f"{summary.batches} batches", ""), sep,
        (f"{summary.failed_batches} failed", "bold red" if summary.failed_batches else ""), sep,
        ("keeping up", "green") if summary.keeping_up else ("falling behind", "bold red"), sep,
        (_rate(summary.input_rate).replace("records/s", "rec/s"), ""), sep,
        (f"delay {_ms(summary.total_delay_ms)} (sched {_ms(summary.scheduling_delay_ms)} / "
         f"proc {_ms(summary.processing_delay_ms)})", "")]
    if unicode and summary.recent_total_delays_ms:
        parts += [sep, (sparkline_text(summary.recent_total_delays_ms), "cyan")]
    return parts


def sparkline_text(values: list[int]) -> str:
    """``values`` as block characters, the highest one a full block."""
    top = max(max(values), 1)
    return "".join(BLOCKS[min(int(v / top * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1)] for v in values)


# -- helpers -----------------------------------------------------------------------------------------------
def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"


def _rate(value: float | None) -> str:
    return "- records/s" if value is None else f"{value:,.1f} records/s"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except Exception:  # noqa: BLE001 - closed or odd streams are not terminals
        return False


def _columns(stream: Any) -> int:
    """The width of the terminal ``stream`` writes to; 0 when it does not say."""
    try:
        return max(os.get_terminal_size(stream.fileno()).columns, 0)
    except (AttributeError, OSError, ValueError):
        return 0


def _can_encode(stream: Any, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
