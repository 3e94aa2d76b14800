"""Clocks: the batch timer only ever waits on one, so these are the engine's sense of time."""
from __future__ import annotations

import threading

import pytest

from dstream.driver.clock import Clock, ManualClock, SystemClock, precise_now_ms


def _waiter(clock: Clock, target_ms: int, stop: threading.Event) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(clock.wait_until_ms(target_ms, stop)), daemon=True)
    t.start()
    return t, result


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(1.5)
    assert clock.now_ms() == 1500 and clock.now() == 1.5
    clock.advance(0.25)
    assert clock.now_ms() == 1750
    clock.set_time(10)
    assert clock.now_ms() == 10_000
    clock.advance(0.001)
    assert clock.now_ms() == 10_001


def test_manual_clock_keeps_microseconds_and_says_whole_milliseconds():
    clock = ManualClock(1.0)
    clock.advance(0.0004)
    assert clock.now_ms() == 1000 and clock.now_ms_precise() == pytest.approx(1000.4)
    clock.advance(0.0004)
    assert clock.now_ms() == 1000 and clock.now_ms_precise() == pytest.approx(1000.8)
    clock.advance(0.0004)  # 1001.2: the whole ms reached, not rounded
    assert clock.now_ms() == 1001 and clock.now_ms_precise() == pytest.approx(1001.2)
    assert clock.wait_until_ms(1001, threading.Event()) == 1001
    clock.set_time(2.0000005)
    assert clock.now_ms() == 2000 and clock.now_ms_precise() == pytest.approx(2000.0, abs=0.0011)


def test_precise_now_falls_back_to_whole_milliseconds():
    class Coarse:
        def now_ms(self) -> int:
            return 1234

    assert precise_now_ms(Coarse()) == 1234.0 and isinstance(precise_now_ms(Coarse()), float)
    assert precise_now_ms(ManualClock(0.0015)) == pytest.approx(1.5)
    system = SystemClock()
    before = system.now_ms()
    precise = precise_now_ms(system)
    assert isinstance(precise, float) and int(precise) >= before


@pytest.mark.parametrize("move", ["advance", "set_time"])
def test_manual_clock_wakes_waiters_when_it_reaches_the_target(move):
    clock = ManualClock()
    stop = threading.Event()
    thread, result = _waiter(clock, 2000, stop)
    thread.join(0.05)
    assert thread.is_alive() and result == []  # nothing has moved the clock
    if move == "advance":
        clock.advance(1.0)
        thread.join(0.05)
        assert thread.is_alive()  # 1000 < 2000: still waiting
        clock.advance(1.5)
    else:
        clock.set_time(2.5)
    thread.join(5)
    assert not thread.is_alive() and result == [2500]


def test_manual_clock_waiter_returns_at_once_when_already_past():
    clock = ManualClock(3.0)
    assert clock.wait_until_ms(1000, threading.Event()) == 3000


def test_manual_clock_waiter_leaves_on_stop():
    clock = ManualClock()
    stop = threading.Event()
    thread, result = _waiter(clock, 5000, stop)
    stop.set()
    clock.wake()
    thread.join(5)
    assert not thread.is_alive() and result == [0]


def test_system_clock_waits_until_the_target():
    clock = SystemClock()
    target = clock.now_ms() + 150
    assert clock.wait_until_ms(target, threading.Event()) >= target
    assert clock.now_ms() >= target


def test_system_clock_waiter_leaves_on_stop():
    clock = SystemClock()
    stop = threading.Event()
    far = clock.now_ms() + 60_000
    thread, result = _waiter(clock, far, stop)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and result[0] < far


def test_clocks_satisfy_the_protocol():
    assert isinstance(ManualClock(), Clock) and isinstance(SystemClock(), Clock)
