"""A tiny event loop: events are posted from any thread and handled, one at a time, on its own thread."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Generic, TypeVar

log = logging.getLogger(__name__)
E = TypeVar("E")

_STOP = object()


class EventLoop(Generic[E]):
    def __init__(self, name: str, on_event: Callable[[E], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.name = name
        self._on_event = on_event
        self._on_error = on_error
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def post(self, event: E) -> None:
        if not self._stopped.is_set():
            self._queue.put(event)

    def stop(self, wait: bool = True) -> None:
        """Stop after the events already posted have been handled."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._queue.put(_STOP)
        if wait and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def is_stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def is_running(self) -> bool:
        """Whether the loop's thread still handles events."""
        return self._thread.is_alive()

    def in_loop(self) -> bool:
        """Whether the calling thread is the loop's own (an event being handled)."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            try:
                self._on_event(event)
            except BaseException as exc:  # noqa: BLE001 - the loop must survive a bad event
                log.exception("error in event loop %s", self.name)
                if self._on_error is not None:
                    self._on_error(exc)
