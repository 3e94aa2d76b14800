"""Backpressure and rate limits, as in Spark Streaming: ``spark.streaming.receiver.maxRate`` caps what a
socket receiver lets in, ``spark.streaming.backpressure.enabled`` has a PID rate estimator (Spark's
formula) set the limit from the completed batches, and ``maxFilesPerTrigger`` caps the new files a file
stream takes per batch (the others wait, also across a restart). Nothing is dropped."""
from __future__ import annotations

import math
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from dstream import Context, ManualClock, StreamingContext
from dstream.demo.harness import wait_until
from dstream.driver.listener import BatchInfo, OutputOperationInfo, StreamInputInfo, StreamingListenerBatchCompleted
from dstream.driver.rate import PIDRateEstimator, RateConf, RateController, RateLimiter
from dstream.testing import advance, collect

from .tcp_server import TcpServer


# -- the PID rate estimator, against Spark's formula worked by hand -----------------------------------------

def test_pid_first_batch_only_sets_the_starting_point():
    pid = PIDRateEstimator(100)
    assert pid.compute(1000, 1000, 500, 0) is None  # processing rate 2000/s becomes the latest rate
    # processing rate 200/200 ms = 1000/s; error = 2000 - 1000 = 1000; historical = 50 * 1000 / 100 = 500
    # new = 2000 - 1.0 * 1000 - 0.2 * 500 - 0.0 * dError = 900
    assert pid.compute(1100, 200, 200, 50) == pytest.approx(900.0)
    # processing rate 450/300 ms = 1500/s; error = 900 - 1500 = -600; historical 0: new = 900 + 600 = 1500
    assert pid.compute(1200, 450, 300, 0) == pytest.approx(1500.0)


def test_pid_derivative_term_and_min_rate_floor():
    pid = PIDRateEstimator(100, proportional=1.0, integral=0.2, derivative=0.1, min_rate=100)
    assert pid.compute(1000, 1000, 500, 0) is None
    # error 1000, historical 500, dError = (1000 - 0) / 0.1 s = 10000: 2000 - 1000 - 100 - 1000 < 100
    assert pid.compute(1100, 200, 200, 50) == pytest.approx(100.0)
    # latest rate 100, latest error 1000; processing 1500/s: error = -1400, dError = (-1400 - 1000) / 0.1
    # new = 100 + 1400 - 0 + 0.1 * 24000 = 3900
    assert pid.compute(1200, 450, 300, 0) == pytest.approx(3900.0)


def test_pid_never_estimates_below_min_rate():
    pid = PIDRateEstimator(100, min_rate=250)
    pid.compute(1000, 1000, 500, 0)
    # processing 100/s, error 1900, historical 10000 * 100 / 100 = 10000: 2000 - 1900 - 2000 < 250
    assert pid.compute(1100, 100, 1000, 10_000) == pytest.approx(250.0)


def test_pid_follows_the_processing_rate_without_accumulated_error():
    pid = PIDRateEstimator(1000)
    assert pid.compute(1000, 5000, 1000, 0) is None
    for i in range(2, 6):  # processing 5000/s, no scheduling delay: the estimate stays at 5000
        assert pid.compute(1000 * i, 5000, 1000, 0) == pytest.approx(5000.0)


@pytest.mark.parametrize("skipped", [
    (1000, 100, 100, 0),   # a time not later than the last one used
    (900, 100, 100, 0),
    (1100, 0, 100, 0),     # no records
    (1100, 100, 0, 0),     # no processing delay
])
def test_pid_ignores_batches_spark_ignores(skipped):
    pid = PIDRateEstimator(100)
    assert pid.compute(1000, 1000, 500, 0) is None
    assert pid.compute(*skipped) is None
    # the skipped batch changed nothing: the worked example goes on as if it never came
    assert pid.compute(1100, 200, 200, 50) == pytest.approx(900.0)


def test_pid_skipped_batches_before_the_first_do_not_count_as_first():
    pid = PIDRateEstimator(100)
    assert pid.compute(500, 0, 100, 0) is None
    assert pid.compute(600, 100, 0, 0) is None
    assert pid.compute(1000, 1000, 500, 0) is None  # still the first one used
    assert pid.compute(1100, 200, 200, 50) == pytest.approx(900.0)


@pytest.mark.parametrize("args", [dict(batch_interval_ms=0), dict(proportional=-1), dict(integral=-0.1),
                                  dict(derivative=-1), dict(min_rate=0), dict(proportional=math.nan)])
def test_pid_checks_its_settings(args):
    kwargs = {"batch_interval_ms": 100, **args}
    with pytest.raises(ValueError):
        PIDRateEstimator(**kwargs)


# -- the token bucket ---------------------------------------------------------------------------------------

def test_rate_limiter_pays_before_use_and_keeps_at_most_a_burst():
    limiter = RateLimiter(100, burst=0.02)  # at most 2 permits kept
    assert limiter.reserve(2, 0.0) == pytest.approx(0.02)
    assert limiter.reserve(2, 0.02) == pytest.approx(0.02)  # the first 2 were paid by then
    assert limiter.reserve(1, 10.0) == 0.0  # idle for 10 s: 2 permits kept, not 1000
    assert limiter.reserve(1, 10.0) == 0.0
    assert limiter.reserve(1, 10.0) == pytest.approx(0.01)


def test_rate_limiter_lets_through_at_most_the_rate_over_any_second():
    limiter, now, times = RateLimiter(1000), 0.0, []
    while now < 5.0:  # a receiver with lines always waiting
        n = limiter.group(10_000)
        now += limiter.reserve(n, now)
        times += [now] * n
    for start in (0.0, 0.5, 1.7, 3.0):
        inside = sum(1 for t in times if start <= t < start + 1.0)
        assert 1000 - 40 <= inside <= 1000 + 40


def test_rate_limiter_rate_changes_and_no_limit():
    limiter = RateLimiter(None)
    assert limiter.rate is None and limiter.reserve(10**9, 0.0) == 0.0 and limiter.group(123) == 123
    limiter.set_rate(100, 0.0)
    assert limiter.rate == 100 and limiter.reserve(10, 0.0) == pytest.approx(0.1)
    limiter.set_rate(1000, 0.0)  # 10 owed at 100/s is 0.1 s, which stays 0.1 s at 1000/s
    assert limiter.reserve(0, 0.0) == pytest.approx(0.1)
    limiter.set_rate(0, 0.0)  # 0 or less: no limit, as spark.streaming.receiver.maxRate
    assert limiter.rate is None and limiter.reserve(10, 0.0) == 0.0


# -- the configuration ----------------------------------------------------------------------------------------

def test_rate_conf_defaults_spark_keys_and_dstream_keys():
    assert RateConf.from_conf({}) == RateConf()
    assert not RateConf().limited and RateConf().initial_limit() is None
    conf = RateConf.from_conf({"spark.streaming.receiver.maxRate": "5000",
                               "spark.streaming.backpressure.enabled": "true",
                               "spark.streaming.backpressure.initialRate": "8000",
                               "spark.streaming.backpressure.pid.minRate": "10",
                               "dstream.backpressure.pid.integral": 0.5,
                               "spark.streaming.backpressure.pid.integral": 0.1})
    assert conf == RateConf(max_rate=5000, backpressure=True, initial_rate=8000, integral=0.5, min_rate=10)
    assert conf.initial_limit() == 5000 and conf.limit(7000) == 5000 and conf.limit(300) == 300
    assert RateConf.from_conf({"spark.streaming.receiver.maxRate": 0}).max_rate is None
    # the initial rate applies with backpressure only
    assert RateConf.from_conf({"spark.streaming.backpressure.initialRate": 10}).initial_limit() is None
    assert RateConf.from_conf({"dstream.backpressure.enabled": True,
                               "dstream.backpressure.initialRate": 10}).initial_limit() == 10


@pytest.mark.parametrize("key, value", [("spark.streaming.receiver.maxRate", "fast"),
                                        ("spark.streaming.backpressure.enabled", "maybe"),
                                        ("spark.streaming.backpressure.initialRate", 0),
                                        ("spark.streaming.backpressure.pid.minRate", 0),
                                        ("dstream.backpressure.pid.proportional", -1),
                                        ("spark.streaming.backpressure.rateEstimator", "pi")])
def test_bad_rate_settings_fail_when_the_socket_stream_is_declared(key, value):
    with pytest.raises(ValueError):
        RateConf.from_conf({key: value})
    ctx = Context("threads[1]", conf={key: value})
    try:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        with pytest.raises(ValueError):
            ssc.socketTextStream("127.0.0.1", 9)
    finally:
        ctx.stop()


def _completed(time_ms: int, records: int, processing_ms: int, scheduling_ms: int,
               failure: str | None = None) -> StreamingListenerBatchCompleted:
    submitted = time_ms
    output = OutputOperationInfo(time_ms, 0, "foreachRDD", start_time=submitted + scheduling_ms,
                                 end_time=submitted + scheduling_ms + processing_ms, failure_reason=failure)
    info = BatchInfo(time_ms, submitted, {0: StreamInputInfo(0, records)}, {0: output},
                     processing_start_time=submitted + scheduling_ms,
                     processing_end_time=submitted + scheduling_ms + processing_ms)
    return StreamingListenerBatchCompleted(info)


def test_rate_controller_publishes_estimates_of_its_input_and_skips_failed_batches():
    published = []
    controller = RateController(0, PIDRateEstimator(100), published.append)
    assert controller.wants_record_counts is False
    controller.onBatchCompleted(_completed(900, 1000, 500, 0))  # ends at 1400: the starting point
    controller.onBatchCompleted(_completed(1000, 50, 10, 0, failure="boom"))  # failed: skipped
    controller.onBatchCompleted(_completed(1300, 200, 200, 50))  # ends at 1550
    assert published == [900] and controller.latest_rate == 900
    other = RateController(3, PIDRateEstimator(100), published.append)  # no input 3 in these batches
    other.onBatchCompleted(_completed(900, 1000, 500, 0))
    other.onBatchCompleted(_completed(1300, 200, 200, 50))
    assert published == [900]


# -- a real socket stream ------------------------------------------------------------------------------------

class Sender(TcpServer):
    """Sends lines to the receiver that connects: ``lines`` all at once, or ``rate`` lines a second
    (numbered) until closed."""

    def __init__(self, lines: list[str] | None = None, rate: int | None = None) -> None:
        self.lines, self.rate = lines, rate
        self.sent = 0
        self.done = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> bool:
        with conn:
            try:
                self._send(conn)
            except OSError:
                pass
        return False

    def _send(self, conn: socket.socket) -> None:
        if self.lines is not None:
            conn.sendall("".join(f"{ln}\n" for ln in self.lines).encode())
            self.sent = len(self.lines)
            self.done.set()
            self.closed.wait()  # keep the connection open: the lines must come in at the receiver's pace
            return
        start, step = time.monotonic(), 0.01
        while not self.closed.is_set():
            due = int((time.monotonic() - start) * self.rate)
            if due > self.sent:
                conn.sendall("".join(f"{i}\n" for i in range(self.sent, due)).encode())
                self.sent = due
            time.sleep(step)


@pytest.fixture
def make_ctx():
    made: list[Context] = []

    def make(conf: dict) -> Context:
        made.append(Context("threads[2]", conf=conf))
        return made[-1]

    yield make
    for c in made:
        c.stop()


@pytest.mark.parametrize("checkpointed", [False, True], ids=["plain", "write-ahead-log"])
def test_max_rate_caps_each_batch_and_every_line_arrives_once(make_ctx, tmp_path, checkpointed):
    rate, interval, n = 2000, 0.2, 2000
    ctx = make_ctx({"spark.streaming.receiver.maxRate": rate})
    sender = Sender(lines=[f"line-{i}" for i in range(n)])
    ssc = StreamingContext(ctx, interval)
    if checkpointed:
        ssc.checkpoint(str(tmp_path / "cp"))
    stream = ssc.socketTextStream("127.0.0.1", sender.port)
    out = collect(stream)
    ssc.start()
    try:
        wait_until(lambda: sum(map(len, out)) >= n, 20, f"{n} lines through a receiver limited to {rate}/s")
    finally:
        ssc.stop(stopSparkContext=False)
        sender.close()
    assert [ln for batch in out for ln in batch] == [f"line-{i}" for i in range(n)]  # once each, in order
    per_batch = [len(b) for b in out if b]
    # Sent at once, they come in at the limit: ~rate * interval (400) a batch, never much more
    assert max(per_batch) <= rate * interval * 1.25, per_batch
    assert len(per_batch) >= n / (rate * interval * 1.25), per_batch
    assert stream.rate_limit == rate


def _run_overloaded(ctx: Context, seconds: float, interval: float, cost: float, send_rate: int):
    """A socket stream whose processing takes ``cost`` s a record, fed ``send_rate`` lines a second: the
    batches (records, scheduling delay) and the receiver's last rate limit."""
    sender = Sender(rate=send_rate)
    ssc = StreamingContext(ctx, interval)
    stream = ssc.socketTextStream("127.0.0.1", sender.port)

    def slow(rdd):
        time.sleep(rdd.count() * cost)

    stream.foreachRDD(slow)
    ssc.start()
    try:
        time.sleep(seconds)
    finally:
        limit = stream.rate_limit
        ssc.stop(stopSparkContext=False)
        sender.close()
    frame = ssc.statistics()
    return list(frame["records"]), list(frame["scheduling_delay_ms"]), limit


def test_backpressure_keeps_delay_bounded_when_input_outruns_processing(make_ctx):
    interval, cost = 0.2, 1 / 2500  # the processing sustains ~2500 records/s: ~500 a batch
    send_rate = 5000  # twice that
    on = make_ctx({"spark.streaming.backpressure.enabled": "true"})
    records, delays, limit = _run_overloaded(on, 6.0, interval, cost, send_rate)
    sustainable = interval / cost
    assert limit is not None and limit < send_rate * 0.8, (limit, records)
    tail = records[-8:]
    assert sustainable * 0.4 <= sum(tail) / len(tail) <= sustainable * 1.3, records
    assert max(delays[-8:]) < 1000, delays  # bounded: a few intervals at most

    off = make_ctx({})
    records_off, delays_off, limit_off = _run_overloaded(off, 5.0, interval, cost, send_rate)
    assert limit_off is None
    assert delays_off[-1] > 1500 and delays_off[-1] > delays_off[len(delays_off) // 2], delays_off  # grows


# -- maxFilesPerTrigger ---------------------------------------------------------------------------------------

def _put(directory: Path, name: str, lines: list[str], mtime: float) -> None:
    staging = directory.parent / f".{name}.staging"
    staging.write_text("".join(f"{ln}\n" for ln in lines))
    os.utime(staging, (mtime, mtime))
    os.rename(staging, directory / name)


#: seven files whose modification times do not follow their names: oldest first g, f, e, a, b, c, d
ORDER = ["g", "f", "e", "a", "b", "c", "d"]


def _put_seven(directory: Path) -> None:
    base = time.time() - 1000
    for age, name in enumerate(ORDER):
        _put(directory, f"{name}.txt", [f"{name}1", f"{name}2"], base + age)


def test_max_files_per_trigger_takes_the_oldest_first_and_the_rest_later(ssc, tmp_path):
    watched = tmp_path / "in"
    watched.mkdir()
    stream = ssc.textFileStream(str(watched), maxFilesPerTrigger=3)
    out = collect(stream, sort=True)
    ssc.start()
    _put_seven(watched)
    advance(ssc, 2)
    _put(watched, "z.txt", ["z1"], time.time())  # newer than every file waiting
    advance(ssc, 3)
    lines = lambda names: sorted(f"{n}{i}" for n in names for i in (1, 2))  # noqa: E731
    assert out == [lines("gfe"), lines("abc"), lines("d") + ["z1"], [], []]


def test_max_files_per_trigger_counts_binary_records_of_the_files_taken(ssc, tmp_path):
    watched = tmp_path / "in"
    watched.mkdir()
    stream = ssc.binaryRecordsStream(str(watched), 2, maxFilesPerTrigger=2)
    out = collect(stream)
    ssc.start()
    for i, name in enumerate("abc"):
        (watched.parent / name).write_bytes(b"xxyy")
        os.utime(watched.parent / name, (1000 + i, 1000 + i))
        os.rename(watched.parent / name, watched / name)
    advance(ssc, 2)
    assert [len(batch) for batch in out] == [4, 2]
    assert list(ssc.statistics()["records"]) == [4, 2]  # the records counted are those of the files taken


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_max_files_per_trigger_checks_its_value(ssc, tmp_path, bad):
    with pytest.raises(ValueError, match="maxFilesPerTrigger"):
        ssc.textFileStream(str(tmp_path), maxFilesPerTrigger=bad)


def _must_not_run() -> StreamingContext:
    raise AssertionError("the context must be restored from the checkpoint")


def test_files_left_for_later_are_taken_after_a_restart_from_the_checkpoint(make_ctx, tmp_path):
    ctx = make_ctx({})
    checkpoint, watched, prefix = str(tmp_path / "cp"), tmp_path / "in", str(tmp_path / "out" / "lines")
    watched.mkdir()

    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.textFileStream(str(watched), maxFilesPerTrigger=3).saveAsTextFiles(prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    try:
        _put_seven(watched)
        advance(ssc)  # takes g, f, e; the driver then stops with a, b, c, d waiting
    finally:
        ssc.stop(stopSparkContext=False)

    restored = StreamingContext.getOrCreate(checkpoint, _must_not_run, clock=ManualClock(start=1.0))
    restored.start()
    try:
        advance(restored, 3)
    finally:
        restored.stop(stopSparkContext=False)
    committed = {}
    for t in (1000, 2000, 3000, 4000):
        parts = sorted(Path(f"{prefix}-{t}").glob("part-*"))
        committed[t] = sorted(ln for p in parts for ln in p.read_text().splitlines())
    lines = lambda names: sorted(f"{n}{i}" for n in names for i in (1, 2))  # noqa: E731
    assert committed == {1000: lines("gfe"), 2000: lines("abc"), 3000: lines("d"), 4000: []}
