"""Stop semantics: a non-graceful stop returns within the running batch and leaves the queued ones pending in
the checkpoint; a graceful stop, from any thread and from inside an output operation, runs the batches already
due and then stops (the Context last); stopping is idempotent."""
from __future__ import annotations

import threading
import time

from dstream import Context, ManualClock, StreamingContext
from dstream.driver.checkpoint import read_header
from dstream.testing import advance


#: shared with the checkpointed output below (functions of a checkpointed stream are pickled by reference)
_SLOW = {"running": threading.Event(), "release": threading.Event(), "ran": []}


def _slow_output(rdd, t) -> None:
    _SLOW["ran"].append(t)
    _SLOW["running"].set()
    _SLOW["release"].wait(10)


def test_a_non_graceful_stop_returns_within_the_running_batch_and_keeps_the_queued_ones_pending(tmp_path):
    ctx = Context("threads[2]")
    clock = ManualClock()
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    ssc.checkpoint(str(tmp_path / "cp"))
    ssc.queueStream([], default=ctx.parallelize([1])).foreachBatch(_slow_output)
    ssc.start()
    clock.advance(5.0)  # batches 1 to 5 are due; 1 runs and blocks, 2 to 5 queue behind it
    assert _SLOW["running"].wait(10)
    time.sleep(0.2)
    threading.Timer(0.3, _SLOW["release"].set).start()
    started = time.monotonic()
    ssc.stop(stopSparkContext=True, stopGraceFully=False)
    assert time.monotonic() - started < 5  # the running batch only
    assert _SLOW["ran"] == [1000]
    header = read_header(str(tmp_path / "cp"))
    assert {2000, 3000, 4000, 5000} <= set(header["pending_times"])  # a restart runs them
    assert ctx._stopped
    ssc.stop()  # twice is harmless


def test_a_graceful_stop_from_inside_an_output_operation_runs_the_due_batches_then_stops_the_context():
    ctx = Context("threads[2]")
    clock = ManualClock()
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    counts: list[int] = []
    errors: list[BaseException] = []

    def output(rdd) -> None:
        counts.append(rdd.count())  # needs the Context
        if len(counts) == 1:
            clock.advance(3.0)  # three more batches are due while this one runs
            time.sleep(0.3)
            ssc.stop(stopGraceFully=True)  # stopSparkContext=True: the Context goes last

    ssc.queueStream([], default=ctx.parallelize([1, 2])).foreachRDD(output)
    ssc.start()
    clock.advance(1.0)
    try:
        assert ssc.awaitTerminationOrTimeout(20)
    except BaseException as exc:  # noqa: BLE001 - a failed batch is what this test looks for
        errors.append(exc)
    assert errors == [] and counts == [2, 2, 2, 2]
    assert ctx._stopped and ssc._statistics.summary().failed_batches == 0


def test_a_graceful_stop_from_another_thread_runs_the_due_batches():
    with Context("threads[2]") as ctx:
        clock = ManualClock()
        ssc = StreamingContext(ctx, 1.0, clock=clock)
        gate, ran = threading.Event(), []

        def output(t, rdd) -> None:
            ran.append(t)
            gate.wait(10)

        ssc.queueStream([], default=ctx.parallelize([1])).foreachBatch(lambda rdd, t: output(t, rdd))
        ssc.start()
        clock.advance(3.0)
        stopper = threading.Thread(target=ssc.stop, kwargs={"stopSparkContext": False, "stopGraceFully": True})
        time.sleep(0.2)
        stopper.start()
        time.sleep(0.2)
        gate.set()
        stopper.join(20)
        assert not stopper.is_alive()
        assert ran == [1000, 2000, 3000]


def test_stopping_from_two_threads_at_once_is_harmless():
    with Context("threads[2]") as ctx:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.queueStream([[1]]).foreachRDD(lambda rdd: None)
        ssc.start()
        advance(ssc, 1)
        threads = [threading.Thread(target=ssc.stop, kwargs={"stopSparkContext": False}) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert ssc.awaitTerminationOrTimeout(5)


def test_the_batches_a_graceful_stop_runs_are_checkpointed(tmp_path):
    """The batches still queued when a graceful stop begins complete after it: the last checkpoint says so
    (a restart does not run them again)."""
    ctx = Context("threads[2]")
    clock = ManualClock()
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    ssc.checkpoint(str(tmp_path / "cp"))
    _SLOW.update(running=threading.Event(), release=threading.Event(), ran=[])
    ssc.queueStream([], default=ctx.parallelize([1])).foreachBatch(_slow_output)
    ssc.start()
    clock.advance(4.0)
    assert _SLOW["running"].wait(10)
    threading.Timer(0.3, _SLOW["release"].set).start()
    ssc.stop(stopGraceFully=True)
    assert _SLOW["ran"] == [1000, 2000, 3000, 4000]
    header = read_header(str(tmp_path / "cp"))
    assert header["last_completed_ms"] == 4000 and header["pending_times"] == []
