"""Clocks. The batch timer only ever waits on a clock, so a ManualClock drives batches deterministically.

Times are integer milliseconds inside the engine (as Spark's ``Time``), so that batch times are exact;
``ManualClock.advance`` takes seconds, like every duration in the public API.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now_ms(self) -> int:
        """The current time in milliseconds."""

    def wait_until_ms(self, target_ms: int, stop: threading.Event) -> int:
        """Block until the clock reaches ``target_ms`` or ``stop`` is set; return the time then."""

    def wake(self) -> None:
        """Wake waiters so they notice a stop."""


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def wait_until_ms(self, target_ms: int, stop: threading.Event) -> int:
        while not stop.is_set():
            now = self.now_ms()
            if now >= target_ms:
                return now
            stop.wait(min((target_ms - now) / 1000.0, 0.1))
        return self.now_ms()

    def wake(self) -> None:
        pass


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)`` or ``set_time(seconds)``."""

    def __init__(self, start: float = 0.0) -> None:
        self._ms = round(start * 1000)
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        with self._cond:
            return self._ms

    def now(self) -> float:
        return self.now_ms() / 1000.0

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._ms += round(seconds * 1000)
            self._cond.notify_all()

    def set_time(self, seconds: float) -> None:
        with self._cond:
            self._ms = round(seconds * 1000)
            self._cond.notify_all()

    def wait_until_ms(self, target_ms: int, stop: threading.Event) -> int:
        with self._cond:
            while self._ms < target_ms and not stop.is_set():
                self._cond.wait(0.1)
            return self._ms

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
