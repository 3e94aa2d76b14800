"""StreamingContext lifecycle, batch timing, output order, listeners, and a few real-time runs."""
from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest

from dstream import Context, ManualClock, StreamingContext, StreamingListener, SystemClock
from dstream.demo.harness import wait_until
from dstream.testing import advance, collect, collect_timed


def _wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    wait_until(predicate, timeout, what, interval=0.005)


# -- the active context ---------------------------------------------------------------------------------

def test_get_active_only_while_running(ssc):
    collect(ssc.queueStream([[1]]))
    assert StreamingContext.getActive() is None
    ssc.start()
    assert StreamingContext.getActive() is ssc
    ssc.stop(stopSparkContext=False)
    assert StreamingContext.getActive() is None


def test_get_active_or_create(ctx, clock):
    made = []

    def setup():
        s = StreamingContext(ctx, 1.0, clock=clock)
        collect(s.queueStream([[1]]))
        made.append(s)
        return s

    first = StreamingContext.getActiveOrCreate(None, setup)
    try:
        assert made == [first]
        first.start()
        assert StreamingContext.getActiveOrCreate(None, setup) is first
        assert made == [first]  # setup not called again while one is active
    finally:
        first.stop(stopSparkContext=False)
    second = StreamingContext.getActiveOrCreate(None, setup)
    second.stop(stopSparkContext=False)
    assert made == [first, second]


def test_get_active_or_create_checks_what_setup_returns():
    with pytest.raises(TypeError, match="setupFunc"):
        StreamingContext.getActiveOrCreate(None, lambda: "not a context")


def test_only_one_context_runs_at_a_time(ssc, ctx):
    collect(ssc.queueStream([[1]]))
    other = StreamingContext(ctx, 1.0, clock=ManualClock())
    collect(other.queueStream([[2]]))
    ssc.start()
    try:
        with pytest.raises(RuntimeError, match="Only one StreamingContext"):
            other.start()
        ssc.stop(stopSparkContext=False)
        other.start()  # possible once the first has stopped
        assert StreamingContext.getActive() is other
    finally:
        other.stop(stopSparkContext=False)


# -- start and stop -------------------------------------------------------------------------------------

def test_start_twice_is_an_error(ssc):
    collect(ssc.queueStream([[1]]))
    ssc.start()
    with pytest.raises(RuntimeError, match="already been started"):
        ssc.start()


def test_start_after_stop_is_an_error(ssc):
    collect(ssc.queueStream([[1]]))
    ssc.start()
    ssc.stop(stopSparkContext=False)
    with pytest.raises(RuntimeError, match="stopped"):
        ssc.start()


def test_declaring_after_start_is_an_error(ssc):
    stream = ssc.queueStream([[1]])
    collect(stream)
    ssc.start()
    with pytest.raises(RuntimeError, match="after starting"):
        stream.map(str)


def test_stop_twice_and_stop_before_start_are_harmless(ctx, clock):
    never_started = StreamingContext(ctx, 1.0, clock=clock)
    never_started.stop(stopSparkContext=False)
    never_started.stop(stopSparkContext=False)
    assert never_started.awaitTerminationOrTimeout(0) is True
    with pytest.raises(RuntimeError, match="stopped"):
        never_started.start()

    s = StreamingContext(ctx, 1.0, clock=clock)
    out = collect(s.queueStream([[1], [2]]))
    s.start()
    advance(s)
    s.stop(stopSparkContext=False)
    s.stop(stopSparkContext=False)
    assert out == [[1]]


def test_stop_keeps_or_stops_the_context():
    own = Context("threads[1]")
    try:
        s = StreamingContext(own, 1.0, clock=ManualClock())
        collect(s.queueStream([[1]]))
        s.start()
        s.stop(stopSparkContext=False)
        assert own.parallelize([1, 2, 3]).collect() == [1, 2, 3]

        s2 = StreamingContext(own, 1.0, clock=ManualClock())
        collect(s2.queueStream([[1]]))
        s2.start()
        s2.stop()  # stopSparkContext=True by default, as in PySpark
        with pytest.raises(RuntimeError, match="stopped"):
            own.parallelize([1]).collect()
    finally:
        own.stop()


def test_graceful_stop_runs_the_batches_already_due(ssc, clock):
    out = collect_timed(ssc.queueStream([[1], [2], [3], [4], [5]]))
    ssc.start()
    clock.advance(3.0)  # three batches fall due; none is waited for
    ssc.stop(stopSparkContext=False, stopGraceFully=True)
    assert out == [(1000, [1]), (2000, [2]), (3000, [3])]


def test_non_graceful_stop_does_not_wait_for_queued_batches(ssc, clock):
    release = threading.Event()
    started = []

    def slow(t, rdd):
        started.append(rdd.collect())
        assert release.wait(10)

    ssc.queueStream([[1], [2], [3]]).foreachRDD(slow)
    ssc.start()
    clock.advance(3.0)
    _wait_for(lambda: ssc._scheduler.pending_times() == [1000, 2000, 3000], what="three batches queued")
    stopper = threading.Thread(target=ssc.stop, kwargs={"stopSparkContext": False})
    stopper.start()
    _wait_for(lambda: ssc._scheduler._stopping == "now", what="the scheduler to be told to stop")
    release.set()  # the running batch finishes; the queued ones are dropped
    stopper.join(10)
    assert not stopper.is_alive()
    assert started == [[1]]


def test_stop_from_inside_a_batch(ssc):
    """A common pattern: an output operation decides the job is done and stops the context."""
    seen = []

    def stop_after_two(rdd):
        seen.append(rdd.collect())
        if len(seen) == 2:
            ssc.stop(stopSparkContext=False)

    ssc.queueStream([[1], [2], [3]]).foreachRDD(stop_after_two)
    ssc.start()
    advance(ssc)
    ssc.clock.advance(1.0)
    assert ssc.awaitTerminationOrTimeout(10) is True
    ssc.clock.advance(1.0)
    assert seen == [[1], [2]]
    assert StreamingContext.getActive() is None


def test_await_termination(ssc):
    collect(ssc.queueStream([[1]]))
    ssc.start()
    assert ssc.awaitTerminationOrTimeout(0.05) is False
    assert ssc.awaitTermination(0.05) is None  # returns after the timeout
    threading.Timer(0.05, ssc.stop, kwargs={"stopSparkContext": False}).start()
    ssc.awaitTermination()  # returns once stopped
    assert ssc.awaitTerminationOrTimeout(0) is True
    assert ssc.awaitTerminationOrTimeout(1) is True


# -- batch times and output order -----------------------------------------------------------------------

@pytest.mark.parametrize("start, interval, first", [(0.3, 1.0, 1000), (1.0, 1.0, 2000), (0.3, 0.5, 500),
                                                    (12.34, 2.0, 14000)])
def test_batch_times_are_aligned_to_the_interval(ctx, start, interval, first):
    clock = ManualClock(start)
    s = StreamingContext(ctx, interval, clock=clock)
    times = []
    s.queueStream([[1]], default=[0]).foreachRDD(lambda t, rdd: times.append(t))
    s.start()
    try:
        clock.set_time(first / 1000)
        assert s.wait_for_batch(first, 10)
        clock.advance(interval)
        assert s.wait_for_batch(first + round(interval * 1000), 10)
    finally:
        s.stop(stopSparkContext=False)
    assert times == [dt.datetime.fromtimestamp(first / 1000),
                     dt.datetime.fromtimestamp((first + round(interval * 1000)) / 1000)]


def test_output_operations_run_in_declaration_order(ssc):
    ran = []
    source = ssc.queueStream([[1, 2], [3]])
    doubled = source.map(lambda x: 2 * x)
    doubled.foreachRDD(lambda rdd: ran.append(("first", rdd.collect())))
    source.foreachRDD(lambda rdd: ran.append(("second", rdd.collect())))
    doubled.count().foreachRDD(lambda rdd: ran.append(("third", rdd.collect())))
    source.foreachRDD(lambda rdd: ran.append(("fourth", rdd.collect())))
    ssc.start()
    advance(ssc, 2)
    assert ran == [("first", [2, 4]), ("second", [1, 2]), ("third", [2]), ("fourth", [1, 2]),
                   ("first", [6]), ("second", [3]), ("third", [1]), ("fourth", [3])]


def test_no_output_operation_is_an_error_at_start(ssc):
    ssc.queueStream([[1]]).map(str)
    with pytest.raises(ValueError, match="No output operations"):
        ssc.start()
    assert StreamingContext.getActive() is None


# -- listeners ------------------------------------------------------------------------------------------

class Recorder(StreamingListener):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def onBatchSubmitted(self, e):
        info = e.batchInfo()
        self.events.append(("submitted", info.batchTime(), info.processingStartTime()))

    def onBatchStarted(self, e):
        info = e.batchInfo()
        self.events.append(("started", info.batchTime(), info.processingEndTime()))

    def onBatchCompleted(self, e):
        info = e.batchInfo()
        self.events.append(("completed", info.batchTime(), info.schedulingDelay(), info.processingDelay(),
                            info.totalDelay(), info.numRecords()))

    def onOutputOperationStarted(self, e):
        op = e.outputOperationInfo()
        self.events.append(("op started", op.batchTime(), op.id(), op.endTime()))

    def onOutputOperationCompleted(self, e):
        op = e.outputOperationInfo()
        self.events.append(("op completed", op.batchTime(), op.id(), op.duration(), op.failureReason()))


def test_listener_sees_events_in_order_with_delays(ssc, clock):
    """Delays are clock differences (Spark's definitions), checked on the ManualClock.

        clock   1000        2000   2500
        b1000   |submit+start ... first op moves the clock ...| end (2500)
        b2000               |submit (2000)       start+end (2500)|
    """
    rec = Recorder()
    ssc.addStreamingListener(rec)

    def first(t, rdd):
        if t == dt.datetime.fromtimestamp(1):
            clock.advance(1.0)  # batch 2000 falls due while this one runs
            _wait_for(lambda: 2000 in ssc._scheduler.pending_times(), what="batch 2000 submitted")
            clock.advance(0.5)

    stream = ssc.queueStream([[1], [2]])
    stream.foreachRDD(first)
    stream.foreachRDD(lambda rdd: None)
    ssc.start()
    clock.advance(1.0)
    assert ssc.wait_for_batch(2000, 10)
    ssc.stop(stopSparkContext=False)  # delivers the remaining events
    assert rec.events == [  # -1: not known yet (as PySpark's listener API reports it)
        ("submitted", 1000, -1), ("started", 1000, -1),
        ("op started", 1000, 0, -1),
        ("submitted", 2000, -1),  # while the first output operation of batch 1000 runs
        ("op completed", 1000, 0, 1500, None),
        ("op started", 1000, 1, -1), ("op completed", 1000, 1, 0, None),
        ("completed", 1000, 0, 1500, 1500, 1),
        ("started", 2000, -1),
        ("op started", 2000, 0, -1), ("op completed", 2000, 0, 0, None),
        ("op started", 2000, 1, -1), ("op completed", 2000, 1, 0, None),
        ("completed", 2000, 500, 0, 500, 1),
    ]


def test_total_delay_counts_from_submission(ssc, clock):
    """totalDelay = schedulingDelay + processingDelay, even when batches are generated late."""
    infos = []

    class Done(StreamingListener):
        def onBatchCompleted(self, e):
            infos.append(e.batchInfo())

    ssc.addStreamingListener(Done())
    collect(ssc.queueStream([[1]]))
    ssc.start()
    clock.set_time(2.5)  # batches 1000 and 2000 are both generated at 2500
    assert ssc.wait_for_batch(2000, 10)
    ssc.stop(stopSparkContext=False)
    assert [(i.batchTime(), i.submissionTime(), i.totalDelay()) for i in infos] == [(1000, 2500, 0), (2000, 2500, 0)]
    assert all(i.totalDelay() == i.schedulingDelay() + i.processingDelay() for i in infos)


def test_listener_failure_reason_and_a_failing_listener(ssc):
    rec = Recorder()

    class Broken(StreamingListener):
        def onBatchCompleted(self, e):
            raise RuntimeError("listener bug")

    ssc.addStreamingListener(Broken())
    ssc.addStreamingListener(rec)

    def bad(rdd):
        raise KeyError("nope")

    ssc.queueStream([[1], [2]]).foreachRDD(bad)
    ssc.start()
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)
    failures = [e[4] for e in rec.events if e[0] == "op completed"]
    assert len(failures) == 2 and all("KeyError" in f and "nope" in f for f in failures)
    assert [e[1] for e in rec.events if e[0] == "completed"] == [1000, 2000]


def test_num_records_of_file_streams(ssc, tmp_path):
    rec = Recorder()
    ssc.addStreamingListener(rec)
    text_dir, bin_dir = tmp_path / "text", tmp_path / "bin"
    text_dir.mkdir()
    bin_dir.mkdir()
    collect(ssc.textFileStream(str(text_dir)))
    collect(ssc.binaryRecordsStream(str(bin_dir), 2))
    ssc.start()
    for name, data, where in (("a", b"1\n2\r\n3", text_dir), ("b", b"\n", text_dir), ("c", b"xxyyzz", bin_dir)):
        (tmp_path / name).write_bytes(data)
        os.rename(tmp_path / name, where / name)
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)
    assert [(e[1], e[5]) for e in rec.events if e[0] == "completed"] == [(1000, 3 + 1 + 3), (2000, 0)]


def test_text_files_are_not_read_on_the_driver_without_listeners(ssc, tmp_path, monkeypatch):
    import dstream.sources
    counted = []
    monkeypatch.setattr(dstream.sources, "_count_lines", lambda url: counted.append(url) or 0)
    out = collect(ssc.textFileStream(str(tmp_path)))
    ssc.start()
    (tmp_path / "f.txt").write_text("a\nb\n")
    advance(ssc)
    assert out == [["a", "b"]] and counted == []


def test_num_records_of_socket_stream(ssc):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5)
    rec = Recorder()
    ssc.addStreamingListener(rec)
    stream = ssc.socketTextStream("127.0.0.1", srv.getsockname()[1])
    collect(stream)
    ssc.start()
    conn, _ = srv.accept()
    try:
        conn.sendall(b"a\nb\nc\n")
        _wait_for(lambda: stream.buffered() == 3, what="3 lines")
        advance(ssc)
        conn.sendall(b"d\n")
        _wait_for(lambda: stream.buffered() == 1, what="1 line")
        advance(ssc)
    finally:
        conn.close()
        srv.close()
    ssc.stop(stopSparkContext=False)
    assert [(e[1], e[5]) for e in rec.events if e[0] == "completed"] == [(1000, 3), (2000, 1)]


# -- real time (SystemClock) ----------------------------------------------------------------------------

def test_batches_fire_on_their_own_with_the_system_clock(ctx):
    s = StreamingContext(ctx, 0.1)
    assert isinstance(s.clock, SystemClock)
    out = collect_timed(s.queueStream([["a"], ["b"]], default=["idle"]))
    before = s.clock.now_ms()
    s.start()
    try:
        _wait_for(lambda: len(out) >= 4, timeout=3.0, what="four real-time batches")
    finally:
        s.stop(stopSparkContext=False)
    times = [t for t, _ in out]
    assert times[0] > before and all(t % 100 == 0 for t in times)
    assert [b - a for a, b in zip(times, times[1:])] == [100] * (len(times) - 1)
    assert [records for _, records in out[:4]] == [["a"], ["b"], ["idle"], ["idle"]]


def test_real_time_socket_lines_each_arrive_once(ctx):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(3)
    s = StreamingContext(ctx, 0.2)
    got = []
    s.socketTextStream("127.0.0.1", srv.getsockname()[1]).foreachRDD(lambda rdd: got.extend(rdd.collect()))
    s.start()
    try:
        conn, _ = srv.accept()
        with conn:
            for i in range(5):
                conn.sendall(f"line {i}\n".encode())
                time.sleep(0.05)
            _wait_for(lambda: len(got) >= 5, timeout=3.0, what="all lines in some batch")
    finally:
        s.stop(stopSparkContext=False)
        srv.close()
    assert got == [f"line {i}" for i in range(5)]


def test_real_time_graceful_stop(ctx):
    s = StreamingContext(ctx, 0.1)
    out = collect_timed(s.queueStream([], default=["x"]))
    s.start()
    _wait_for(lambda: len(out) >= 2, timeout=3.0, what="two batches")
    s.stop(stopSparkContext=False, stopGraceFully=True)
    times = [t for t, _ in out]
    assert times[-1] <= s.clock.now_ms()
    assert [b - a for a, b in zip(times, times[1:])] == [100] * (len(times) - 1)  # no batch skipped
