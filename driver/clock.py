"""Clocks. The batch timer only ever waits on a clock, so a ManualClock drives batches deterministically.

Times are integer milliseconds inside the engine (as Spark's ``Time``), so that batch times are exact;
``ManualClock.advance`` takes seconds, like every duration in the public API. A clock may also tell the
time with sub-millisecond precision (``now_ms_precise``, float ms; ``precise_now_ms`` falls back to
``now_ms``): the batches' timings (``BatchInfo.precise_*``) are taken with it.
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


def precise_now_ms(clock: Clock) -> float:
    """``clock``'s time in ms with sub-millisecond precision where it has one (``now_ms_precise``), else
    its ``now_ms``. ``int()`` of it (floor) is what ``now_ms`` would have said at that moment."""
    precise = getattr(clock, "now_ms_precise", None)
    return precise() if precise is not None else float(clock.now_ms())


#: a system clock's wait sleeps its last (at most) this many seconds
_SLEEP_LAST_S = 0.002


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now_ms_precise(self) -> float:
        return time.time() * 1000

    def wait_until_ms(self, target_ms: int, stop: threading.Event) -> int:
        # The remaining time is taken from the precise time: from a whole-ms ``now`` (truncated) each wait
        # would end up to 1 ms after the target (0.5 ms on average), every batch. The last stretch is slept
        # (not waited on ``stop``: a sleep wakes sooner), so a stop waits 2 ms at most for it.
        while not stop.is_set():
            now = time.time() * 1000
            if now >= target_ms:
                return int(now)
            remaining = (target_ms - now) / 1000.0
            if remaining > _SLEEP_LAST_S:
                stop.wait(min(remaining - _SLEEP_LAST_S / 2, 0.1))
            else:
                time.sleep(remaining)
        return self.now_ms()

    def wake(self) -> None:
        pass


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)`` or ``set_time(seconds)``, to the microsecond
    (``now_ms`` is the whole milliseconds reached, as a system clock's: ``advance(0.0004)`` twice is 0.8 ms,
    ``now_ms`` unchanged; ``now_ms_precise`` says 0.8 ms more)."""

    def __init__(self, start: float = 0.0) -> None:
        self._us = round(start * 1_000_000)
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        with self._cond:
            return self._us // 1000

    def now_ms_precise(self) -> float:
        with self._cond:
            return self._us / 1000

    def now(self) -> float:
        return self.now_ms() / 1000.0

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._us += round(seconds * 1_000_000)
            self._cond.notify_all()

    def set_time(self, seconds: float) -> None:
        with self._cond:
            self._us = round(seconds * 1_000_000)
            self._cond.notify_all()

    def wait_until_ms(self, target_ms: int, stop: threading.Event) -> int:
        with self._cond:
            while self._us < target_ms * 1000 and not stop.is_set():
                self._cond.wait(0.1)
            return self._us // 1000

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
