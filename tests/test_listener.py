"""Listeners as PySpark hands them to Python, dstream's log levels by Spark's names, and how errors and
logs name a batch (its time as ``pprint`` shows it, then its milliseconds)."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from dstream.driver.jobs import BatchError
from dstream.driver.listener import BatchInfo, OutputOperationInfo
from dstream.driver.logs import LOGGER_ROOTS
from dstream.driver.times import Time
from dstream import ManualClock, StreamingContext, StreamingListener
from dstream.testing import advance, collect


class AllEvents(StreamingListener):
    """Keeps every event, by listener method."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, object]] = []

    def onStreamingStarted(self, streamingStarted):
        self.events.append(("streamingStarted", streamingStarted))

    def onBatchSubmitted(self, batchSubmitted):
        self.events.append(("submitted", batchSubmitted.batchInfo()))

    def onBatchStarted(self, batchStarted):
        self.events.append(("started", batchStarted.batchInfo()))

    def onBatchCompleted(self, batchCompleted):
        self.events.append(("completed", batchCompleted.batchInfo()))

    def onOutputOperationStarted(self, outputOperationStarted):
        self.events.append(("op started", outputOperationStarted.outputOperationInfo()))

    def onOutputOperationCompleted(self, outputOperationCompleted):
        self.events.append(("op completed", outputOperationCompleted.outputOperationInfo()))

    def of(self, kind: str) -> list:
        return [info for k, info in self.events if k == kind]


def _run(ssc: StreamingContext, batches: int, listener: StreamingListener | None = None) -> None:
    """Run ``batches`` batches, then stop (which delivers the listener events still queued)."""
    if listener is not None:
        ssc.addStreamingListener(listener)
    ssc.start()
    try:
        advance(ssc, batches)
    finally:
        ssc.stop(stopSparkContext=False)


# -- BatchInfo and OutputOperationInfo ----------------------------------------------------------------

def test_batch_info_methods_as_pyspark_returns_them(ssc, clock):
    rec = AllEvents()
    numbers = ssc.queueStream([[1, 2, 3], [4]])
    words = ssc.queueStream([["a"], [], ["b", "c"]])
    collect(numbers.union(words.map(len)))
    _run(ssc, 2, rec)

    started = rec.of("streamingStarted")
    assert len(started) == 1 and started[0].time == 0 and started[0].time() == 0  # Scala's and py4j's form

    submitted, begun, completed = rec.of("submitted"), rec.of("started"), rec.of("completed")
    assert [i.batchTime().milliseconds() for i in submitted] == [1000, 2000]
    assert [i.batchTime().milliseconds() for i in completed] == [1000, 2000]
    for info in submitted:  # nothing has run yet: -1 for every unknown time and delay
        assert isinstance(info.batchTime(), Time)
        assert info.submissionTime() == info.batchTime().milliseconds()
        assert (info.processingStartTime(), info.processingEndTime()) == (-1, -1)
        assert (info.schedulingDelay(), info.processingDelay(), info.totalDelay()) == (-1, -1, -1)
    for info in begun:  # started: the scheduling delay is known, the rest not yet
        assert info.schedulingDelay() == 0 and info.processingStartTime() == info.batchTime().milliseconds()
        assert (info.processingEndTime(), info.processingDelay(), info.totalDelay()) == (-1, -1, -1)
    for info in completed:
        delays = (info.schedulingDelay(), info.processingDelay(), info.totalDelay())
        assert all(type(d) is int and d >= 0 for d in delays)
        assert info.totalDelay() == info.schedulingDelay() + info.processingDelay()
        assert info.processingEndTime() >= info.processingStartTime() >= info.submissionTime()

    # records per input stream (ids are the inputs' positions, as Spark numbers them) and in all
    assert [i.numRecords() for i in completed] == [3 + 1, 1 + 0]
    inputs = completed[0].streamIdToInputInfo()
    assert sorted(inputs) == [0, 1]
    assert [(inputs[k].inputStreamId(), inputs[k].numRecords()) for k in (0, 1)] == [(0, 3), (1, 1)]
    assert inputs[0].metadata() == {} and inputs[0].metadataDescription() is None
    assert [i.streamIdToInputInfo()[1].numRecords() for i in submitted] == [1, 0]


def test_output_operation_infos_and_a_failure_reason(ssc):
    rec = AllEvents()
    stream = ssc.queueStream([["ok"], ["bad"]])
    collect(stream)

    def refuse_bad(rdd):
        if rdd.collect() == ["bad"]:
            raise KeyError("no room for bad records")

    stream.foreachRDD(refuse_bad)
    _run(ssc, 2, rec)

    ops = [i.outputOperationInfos() for i in rec.of("completed")]
    assert [sorted(o) for o in ops] == [[0, 1], [0, 1]]
    assert all(o[1].name().startswith("foreachRDD(") and "refuse_bad" in o[1].name() for o in ops)
    assert ops[0][0].name().startswith("foreachRDD(") and ops[0][1].description() == ops[0][1].name()
    assert [(o[0].id(), o[1].id()) for o in ops] == [(0, 1), (0, 1)]
    assert [o[1].batchTime().milliseconds() for o in ops] == [1000, 2000]
    assert ops[0][1].failureReason() is None and ops[1][0].failureReason() is None
    reason = ops[1][1].failureReason()
    assert reason.startswith("KeyError") and "no room for bad records" in reason
    for op in (o[k] for o in ops for k in (0, 1)):
        assert op.duration() == op.endTime() - op.startTime() >= 0

    started = rec.of("op started")
    assert [(op.batchTime().milliseconds(), op.id()) for op in started] == [(1000, 0), (1000, 1), (2000, 0),
                                                                              (2000, 1)]
    assert all(op.startTime() >= 0 and op.endTime() == -1 and op.duration() == -1 for op in started)
    assert all(op.failureReason() is None for op in started)
    failed = [op for op in rec.of("op completed") if op.failureReason() is not None]
    assert [(op.batchTime().milliseconds(), op.id()) for op in failed] == [(2000, 1)]


def test_a_listener_written_as_in_the_pyspark_docs(ssc, clock):
    class BatchDelays(StreamingListener):
        def __init__(self):
            super().__init__()
            self.rows = []

        def onBatchCompleted(self, batchCompleted):
            info = batchCompleted.batchInfo()
            self.rows.append((info.batchTime().milliseconds(), info.numRecords(), info.processingDelay(),
                              info.schedulingDelay(), info.totalDelay()))

    def slow(rdd):
        clock.advance(0.25)  # the batch takes 250 ms of the streaming clock

    ssc.queueStream([[1, 2], [3]]).foreachRDD(slow)
    listener = BatchDelays()
    ssc.addStreamingListener(listener)
    ssc.start()
    try:
        clock.set_time(1.0)
        assert ssc.wait_for_batch(1000, 10)
        clock.set_time(2.0)
        assert ssc.wait_for_batch(2000, 10)
    finally:
        ssc.stop(stopSparkContext=False)
    assert listener.rows == [(1000, 2, 250, 0, 250), (2000, 1, 250, 0, 250)]


def test_listeners_get_snapshots_and_the_snake_case_attributes_stay(ssc):
    rec = AllEvents()
    collect(ssc.queueStream([[1]]))
    _run(ssc, 1, rec)
    (submitted,), (completed,) = rec.of("submitted"), rec.of("completed")
    # the info handed out on submission is not changed afterwards by the driver
    assert submitted.processingDelay() == -1 and completed.processingDelay() == 0
    assert submitted.outputOperationInfos()[0].endTime() == -1
    # snake_case attributes: ints in ms, None (not -1) where unknown; read-only
    assert type(completed.batch_time) is int and completed.batch_time == 1000
    assert (submitted.processing_start_time, submitted.processing_end_time) == (None, None)
    assert (completed.submission_time, completed.processing_end_time, completed.num_records) == (1000, 1000, 1)
    op = completed.output_operations[0]
    assert (op.batch_time, op.start_time, op.end_time, op.failure_reason) == (1000, 1000, 1000, None)
    with pytest.raises(AttributeError):
        completed.batch_time = 5
    with pytest.raises(AttributeError):
        op.failure_reason = "x"
    # what a listener reads from the dicts it gets does not change the batch's info
    completed.outputOperationInfos().clear()
    completed.streamIdToInputInfo().clear()
    assert completed.outputOperationInfos() and completed.numRecords() == 1


def test_time_is_sparks_time_and_an_int_of_milliseconds():
    t = Time(1000)
    assert t.milliseconds() == 1000 and int(t) == 1000 and type(t.milliseconds()) is int
    assert t == Time(1000) == 1000 and t != Time(2000)
    assert Time(1000) < Time(2000) and max(Time(3000), Time(2000)) == 3000
    assert hash(t) == hash(1000) and {t: "x"}[1000] == "x"
    assert repr(t) == "Time(1000 ms)" and str(t) == "1000" and json.dumps({"batch": t}) == '{"batch": 1000}'
    assert t.datetime() == dt.datetime.fromtimestamp(1)


def test_queue_stream_counts_list_items_all_at_once_and_default(ssc, ctx):
    rec = AllEvents()
    collect(ssc.queueStream([[1, 2], [3, 4, 5]], oneAtATime=False, default=[0] * 7))
    collect(ssc.queueStream([ctx.parallelize([1, 2, 3])]))  # an RDD: not counted (Spark counts none)
    _run(ssc, 2, rec)
    assert [[i.streamIdToInputInfo()[k].numRecords() for k in (0, 1)] for i in rec.of("completed")] == \
        [[5, 0], [7, 0]]


def test_file_stream_input_info_names_the_files(ssc, tmp_path):
    rec = AllEvents()
    watched = tmp_path / "in"
    watched.mkdir()
    collect(ssc.textFileStream(str(watched)))
    ssc.addStreamingListener(rec)
    ssc.start()
    try:
        (tmp_path / "a.txt").write_text("x\ny\n")
        os.rename(tmp_path / "a.txt", watched / "a.txt")
        advance(ssc)
    finally:
        ssc.stop(stopSparkContext=False)
    info = rec.of("completed")[0].streamIdToInputInfo()[0]
    assert info.numRecords() == 2
    assert [os.path.basename(f) for f in info.metadata()["files"]] == ["a.txt"]
    assert info.metadataDescription() == info.metadata()["files"][0]


# -- setLogLevel ---------------------------------------------------------------------------------------

@pytest.fixture
def dstream_logging():
    """dstream's loggers as they are with no configuration; restored afterwards."""
    loggers = [logging.getLogger(root) for root in LOGGER_ROOTS]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.NOTSET)
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


def test_precise_times_keep_the_sub_millisecond_part(ssc, clock):
    """A batch that takes 0.4 ms: the PySpark getters and snake_case attributes say 0 ms (whole ms, as
    before); the precise_* properties say 0.4 ms (float ms, to the clock's precision)."""
    rec = AllEvents()
    ssc.queueStream([[1]]).foreachRDD(lambda rdd: clock.advance(0.0004))
    _run(ssc, 1, rec)
    (submitted,), (completed,) = rec.of("submitted"), rec.of("completed")
    assert (completed.processingDelay(), completed.totalDelay(), completed.schedulingDelay()) == (0, 0, 0)
    assert (completed.processingEndTime(), completed.processing_end_time) == (1000, 1000)
    assert all(type(v) is int for v in (completed.processingEndTime(), completed.processing_end_time,
                                        completed.submissionTime(), completed.processingDelay()))
    assert completed.precise_processing_delay == pytest.approx(0.4)
    assert completed.precise_total_delay == pytest.approx(0.4)
    assert completed.precise_processing_end_time == pytest.approx(1000.4)
    assert (completed.precise_submission_time, completed.precise_processing_start_time) == (1000, 1000)
    assert completed.precise_scheduling_delay == 0
    op = completed.output_operations[0]
    assert (op.duration(), op.end_time) == (0, 1000)
    assert op.precise_duration == pytest.approx(0.4) and op.precise_end_time == pytest.approx(1000.4)
    # None (not -1) where not known yet, as the snake_case attributes
    assert (submitted.precise_processing_start_time, submitted.precise_processing_delay,
            submitted.precise_total_delay, submitted.precise_scheduling_delay) == (None, None, None, None)
    assert submitted.outputOperationInfos()[0].precise_duration is None


def test_whole_ms_getters_are_differences_of_whole_ms_times():
    """From precise times, each getter is what it was with whole-ms clock readings (floor): 1000.9 -> 1001.2
    is a scheduling delay of 1 ms (1000 -> 1001), 0.3 ms precisely."""
    op = OutputOperationInfo(1000, 0, "out", start_time=1001.2, end_time=1001.6)
    info = BatchInfo(1000, 1000.9, {}, {0: op}, processing_start_time=1001.2, processing_end_time=1001.6)
    getters = (info.submissionTime(), info.processingStartTime(), info.processingEndTime(),
               info.schedulingDelay(), info.processingDelay(), info.totalDelay(), op.startTime(), op.endTime(),
               op.duration())
    assert getters == (1000, 1001, 1001, 1, 0, 1, 1001, 1001, 0) and all(type(v) is int for v in getters)
    snake = (info.submission_time, info.processing_start_time, info.processing_end_time, op.start_time, op.end_time)
    assert snake == (1000, 1001, 1001, 1001, 1001) and all(type(v) is int for v in snake)
    assert (info.precise_scheduling_delay, info.precise_processing_delay, info.precise_total_delay,
            op.precise_duration) == pytest.approx((0.3, 0.4, 0.7, 0.4))
    assert "submissionTime=1000," in repr(info)


def _batch_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "scheduling delay" in r.getMessage()]


def _run_two_timed_batches(ssc: StreamingContext, clock: ManualClock) -> None:
    def slow(rdd):
        clock.advance(0.25)

    ssc.queueStream([[1, 2, 3], [4]]).foreachRDD(slow)
    ssc.start()
    try:
        clock.set_time(1.0)
        assert ssc.wait_for_batch(1000, 10)
        clock.set_time(2.0)
        assert ssc.wait_for_batch(2000, 10)
    finally:
        ssc.stop(stopSparkContext=False)


def test_info_logs_one_line_per_batch(ctx, ssc, clock, caplog, dstream_logging):
    ctx.setLogLevel("INFO")
    _run_two_timed_batches(ssc, clock)
    lines = _batch_lines(caplog)
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    assert [r.getMessage() for r in lines] == [
        f"batch {dt.datetime.fromtimestamp(1)} (1000 ms): 3 records, scheduling delay 0 ms, "
        f"processing delay 250 ms, total delay 250 ms",
        f"batch {dt.datetime.fromtimestamp(2)} (2000 ms): 1 records, scheduling delay 0 ms, "
        f"processing delay 250 ms, total delay 250 ms"]


def test_nothing_at_info_by_default(ssc, clock, caplog, dstream_logging):
    _run_two_timed_batches(ssc, clock)
    assert [r for r in caplog.records if r.levelno < logging.WARNING and r.name.split(".")[0] in LOGGER_ROOTS] == []


@pytest.mark.parametrize("level, shown", [("warn", False), ("Info", True), ("ALL", True), ("trace", True),
                                          ("DEBUG", True), ("ERROR", False), ("FATAL", False), ("OFF", False)])
def test_spark_level_names_any_case(ctx, ssc, clock, caplog, dstream_logging, level, shown):
    ctx.setLogLevel(level)
    _run_two_timed_batches(ssc, clock)
    assert len(_batch_lines(caplog)) == (2 if shown else 0)
    effective = logging.getLogger("dstream.driver.jobs").getEffectiveLevel()
    assert effective == {"warn": logging.WARNING, "Info": logging.INFO, "ALL": 1, "trace": 5, "DEBUG": logging.DEBUG,
                         "ERROR": logging.ERROR, "FATAL": logging.CRITICAL, "OFF": logging.CRITICAL + 10}[level]
    assert all(logging.getLogger(root).level == effective for root in LOGGER_ROOTS)


@pytest.mark.parametrize("bad", ["VERBOSE", "warning", "", None, 20])
def test_unknown_level_is_a_value_error_naming_the_levels(ctx, dstream_logging, bad):
    with pytest.raises(ValueError, match="did not match one of: ALL,DEBUG,ERROR,FATAL,INFO,OFF,TRACE,WARN"):
        ctx.setLogLevel(bad)
    assert logging.getLogger("dstream").level == logging.NOTSET


def test_text_files_are_counted_for_the_info_log_without_listeners(ctx, ssc, tmp_path, caplog, dstream_logging):
    ctx.setLogLevel("INFO")
    watched = tmp_path / "in"
    watched.mkdir()
    collect(ssc.textFileStream(str(watched)))
    ssc.start()
    try:
        (tmp_path / "a.txt").write_text("x\ny\nz\n")
        os.rename(tmp_path / "a.txt", watched / "a.txt")
        advance(ssc)
    finally:
        ssc.stop(stopSparkContext=False)
    assert [r.getMessage().split(": ")[1].split(",")[0] for r in _batch_lines(caplog)] == ["3 records"]


_APP = textwrap.dedent("""
    import sys
    from dstream import Context, ManualClock, StreamingContext
    from dstream.testing import advance, collect
    ctx = Context("threads[1]")
    if sys.argv[1] != "-":
        ctx.setLogLevel(sys.argv[1])
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    collect(ssc.queueStream([[1, 2], [3]]))
    ssc.start()
    advance(ssc, 2)
    ssc.stop()
""")


@pytest.mark.parametrize("level, lines", [("-", 0), ("INFO", 2), ("WARN", 0)])
def test_log_lines_reach_stderr_of_an_app_without_logging_configuration(level, lines):
    """No logging configured: quiet by default (Python's last-resort handler prints warnings only);
    setLogLevel("INFO") adds a stderr handler, so the per-batch lines show."""
    done = subprocess.run([sys.executable, "-c", _APP, level], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stderr.splitlines() if "scheduling delay" in line]
    assert len(shown) == lines, done.stderr
    if lines:
        assert "INFO" in shown[0] and f"batch {dt.datetime.fromtimestamp(1)} (1000 ms): 2 records" in shown[0]
    else:
        assert "INFO" not in done.stderr


# -- naming a batch ------------------------------------------------------------------------------------

def test_an_error_names_its_batch_as_pprint_shows_it(ctx, capsys):
    clock = ManualClock(1795999935.0)
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    stream = ssc.queueStream([[1], [2]])
    stream.pprint()

    def refuse_two(rdd):
        if rdd.collect() == [2]:
            raise ValueError("two is refused")

    stream.foreachRDD(refuse_two)
    ssc.start()
    try:
        advance(ssc, 2)
        with pytest.raises(BatchError) as info:
            ssc.awaitTerminationOrTimeout(5)
    finally:
        ssc.stop(stopSparkContext=False)
    shown = [line[len("Time: "):] for line in capsys.readouterr().out.splitlines() if line.startswith("Time: ")]
    assert shown == [str(dt.datetime.fromtimestamp(1795999936)), str(dt.datetime.fromtimestamp(1795999937))]
    assert str(info.value).startswith(f"batch {shown[1]} (1795999937000 ms), output operation 1 (foreachRDD(")
    assert "refuse_two" in str(info.value) and "two is refused" in str(info.value)
