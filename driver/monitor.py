"""The views of a running stream: which are on, and their start and stop with the StreamingContext.

A view reads ``StreamStatistics`` (the batches) and a ``describe()`` callable (the stream itself: state,
interval, inputs, outputs, the operator graph; JSON-ready, no secrets) and never touches the engine
otherwise. ``StreamViews`` starts the views the configuration and the environment ask for when the
StreamingContext starts, and stops every one of them when it stops:

=====================  ==============================  =====================================================
view                   on when                         conf key (default)
=====================  ==============================  =====================================================
web status page        a port is configured            ``dstream.ui.port`` (off; Spark's 4040 suggested),
                                                       ``dstream.ui.host`` (``127.0.0.1``)
notebook live view     running in a Jupyter kernel     ``dstream.ui.notebook`` (true)
terminal progress      stderr is a terminal            ``dstream.ui.progress`` (true)
=====================  ==============================  =====================================================

``dstream.ui.retainedBatches`` (or Spark's ``spark.streaming.ui.retainedBatches``, default 1000) bounds the
batches the statistics keep.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Mapping, Protocol, TextIO

from dstream.driver.liveview import NotebookView, TerminalProgress, in_notebook_kernel
from dstream.driver.statistics import RETAINED_BATCHES, StreamStatistics
from dstream.driver.webui import StatusServer
from dstream.executors.conf_values import conf_bool

log = logging.getLogger(__name__)

PORT, HOST = "dstream.ui.port", "dstream.ui.host"
NOTEBOOK, PROGRESS = "dstream.ui.notebook", "dstream.ui.progress"
RETAINED = ("dstream.ui.retainedBatches", "spark.streaming.ui.retainedBatches")

#: what a view gets to describe the stream (JSON-ready)
Describe = Callable[[], dict[str, Any]]


class View(Protocol):
    """A live view of a stream: started once, stopped once, leaving nothing running."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def web_port(conf: Mapping[str, Any]) -> int | None:
    """The web status page's port (``dstream.ui.port``: 0 to 65535, 0 for any free one), None when off."""
    if conf.get(PORT) is None:
        return None
    value = conf[PORT]
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{PORT} must be a port number from 0 to 65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT} must be a port number from 0 to 65535, got {value!r}")
    return port


def retained_batches(conf: Mapping[str, Any]) -> int:
    """How many batches the statistics keep (``dstream.ui.retainedBatches``)."""
    for key in RETAINED:
        if key in conf:
            try:
                n = int(conf[key])
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a whole number of batches, got {conf[key]!r}") from None
            if n < 1:
                raise ValueError(f"{key} must be at least 1, got {n}")
            return n
    return RETAINED_BATCHES


class StreamViews:
    """The views of one StreamingContext, made from its conf when it starts."""

    def __init__(self, statistics: StreamStatistics, describe: Describe, conf: Mapping[str, Any]) -> None:
        self.statistics = statistics
        self.describe = describe
        self.conf = conf
        self.views: list[View] = []
        #: where the terminal progress line goes (None: ``sys.stderr`` as it is when the stream starts)
        self.progress_stream: TextIO | None = None
        # bad settings fail when the StreamingContext is made, not when it starts
        web_port(conf)
        conf_bool(conf, NOTEBOOK, True)
        conf_bool(conf, PROGRESS, True)
        #: the web status page, once made (``dstream.ui.port``)
        self._status_server: StatusServer | None = None

    @property
    def web_url(self) -> str | None:
        """The web status page's address while it is served (``http://127.0.0.1:4040/``), else None."""
        server = self._status_server
        return server.url if server is not None and server in self.views else None

    def start(self) -> None:
        """Start every view the conf and the environment ask for. The live views never fail a stream (one
        that cannot draw logs why and stays off); a web page whose port is taken raises, after stopping
        whatever had started, so the StreamingContext does not start."""
        try:
            for make in (self._web_page, self._notebook_view, self._terminal_progress):
                view = make()
                if view is not None:
                    view.start()
                    self.views.append(view)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every view (each once; errors are logged)."""
        views, self.views = self.views, []
        for view in reversed(views):
            try:
                view.stop()
            except Exception:  # noqa: BLE001 - stopping the others matters more
                log.exception("stopping %r failed", view)

    # -- the views (each returns None when off) ---------------------------------------------------------
    def _web_page(self) -> View | None:
        port = web_port(self.conf)
        if port is None:
            return None
        host = str(self.conf.get(HOST, "127.0.0.1")).strip() or "127.0.0.1"
        self._status_server = StatusServer(self.statistics, self.describe, host, port)
        return self._status_server

    def _notebook_view(self) -> View | None:
        """The live view in a Jupyter kernel (``dstream.ui.notebook``, default true)."""
        if not conf_bool(self.conf, NOTEBOOK, True) or not in_notebook_kernel():
            return None
        return NotebookView(self.statistics, self.describe)

    def _terminal_progress(self) -> View | None:
        """The status line on a terminal (``dstream.ui.progress``, default true); never in a Jupyter kernel,
        which has the notebook view instead."""
        if not conf_bool(self.conf, PROGRESS, True) or in_notebook_kernel():
            return None
        stream = sys.stderr if self.progress_stream is None else self.progress_stream
        try:
            if stream is None or not stream.isatty():
                return None
        except (AttributeError, OSError, ValueError):  # closed or odd streams are not terminals
            return None
        return TerminalProgress(self.statistics, self.describe, stream)
