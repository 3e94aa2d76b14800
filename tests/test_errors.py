"""Errors: a failing batch does not stop later ones, its error (with the user's traceback) comes out of
awaitTermination*; bad functions, files and durations are reported naming what is at fault."""
from __future__ import annotations

import datetime as dt
import os
import threading

import pytest

from dstream import Context, ManualClock, SerializationError, StreamingContext
from dstream.testing import advance, collect


@pytest.fixture
def any_ssc(any_ctx):
    s = StreamingContext(any_ctx, 1.0, clock=ManualClock())
    yield s
    s.stop(stopSparkContext=False)


def test_error_in_map_on_the_executors(any_ssc):
    def explode_on_three(x):
        if x == 3:
            raise ValueError("three is not welcome")
        return x * 10

    out = collect(any_ssc.queueStream([[1, 2], [3], [4]]).map(explode_on_three))
    any_ssc.start()
    advance(any_ssc, 3)
    assert out == [[10, 20], [40]]  # the failed batch has no output; the next one runs
    for wait in (lambda: any_ssc.awaitTerminationOrTimeout(0.01), lambda: any_ssc.awaitTermination(0.01)):
        with pytest.raises(RuntimeError) as info:
            wait()
        text = str(info.value)
        assert "explode_on_three" in text
        assert 'raise ValueError("three is not welcome")' in text
        assert f'File "{__file__}", line {_line_of("three is not welcome")}, in explode_on_three' in text
        assert "<dynamic-code>" not in text
        # the batch named as pprint shows its time, then its milliseconds
        assert f"batch {dt.datetime.fromtimestamp(2)} (2000 ms), output operation 0" in text


def _line_of(marker: str) -> int:
    """The line of this file that raises with ``marker``."""
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if marker in line and "raise" in line)


def test_error_in_a_notebook_cell_function_shows_its_source(any_ctx):
    """A function from a notebook cell (its file exists only in the kernel's linecache) keeps its
    cell name, line and source line in an executor's traceback, whatever cloudpickle does to code."""
    import linecache
    cell = "<notebook-cell-7f3a>"
    source = "def parse_amount(text):\n    return int(text) // 1  # cell line two\n"
    linecache.cache[cell] = (len(source), None, source.splitlines(True), cell)  # what IPython does
    namespace = {"__name__": "__main__"}
    exec(compile(source, cell, "exec"), namespace)
    try:
        with pytest.raises(RuntimeError) as info:
            any_ctx.parallelize(["1", "x"], 2).map(namespace["parse_amount"]).collect()
    finally:
        linecache.cache.pop(cell, None)
    text = str(info.value)
    assert f'File "{cell}", line 2, in parse_amount' in text
    assert "return int(text) // 1  # cell line two" in text


def test_error_in_foreach_rdd_on_the_driver(any_ssc):
    seen = []

    def sink_that_fails(rdd):
        records = rdd.collect()
        if records == ["bad"]:
            raise KeyError("no room for bad records")
        seen.append(records)

    any_ssc.queueStream([["ok"], ["bad"], ["fine"]]).foreachRDD(sink_that_fails)
    any_ssc.start()
    advance(any_ssc, 3)
    assert seen == [["ok"], ["fine"]]
    with pytest.raises(RuntimeError) as info:
        any_ssc.awaitTerminationOrTimeout(0.01)
    text = str(info.value)
    assert "sink_that_fails" in text and 'raise KeyError("no room for bad records")' in text
    assert isinstance(info.value.__cause__, KeyError)


def test_error_in_transform_function(ssc):
    def pick(rdd):
        if rdd.isEmpty():
            raise LookupError("nothing to pick from")
        return rdd

    out = collect(ssc.queueStream([[1], [], [2]]).transform(pick))
    ssc.start()
    advance(ssc, 3)
    assert out == [[1], [2]]
    with pytest.raises(RuntimeError, match="nothing to pick from") as info:
        ssc.awaitTerminationOrTimeout(0.01)
    assert 'raise LookupError("nothing to pick from")' in str(info.value)


def test_error_does_not_stop_the_context_until_asked(ssc):
    def boom(rdd):
        raise RuntimeError("every batch fails")

    ssc.queueStream([[1], [2]]).foreachRDD(boom)
    ssc.start()
    advance(ssc, 2)
    assert StreamingContext.getActive() is ssc
    with pytest.raises(RuntimeError, match="every batch fails"):
        ssc.awaitTermination()  # raises at once: it does not wait for the stop
    ssc.stop(stopSparkContext=False)
    assert StreamingContext.getActive() is None


def test_unpicklable_closure_fails_at_start(ssc):
    lock = threading.Lock()

    def locked_double(x):
        with lock:
            return 2 * x

    ssc.queueStream([[1]]).map(locked_double).foreachRDD(lambda rdd: None)
    with pytest.raises(SerializationError, match="locked_double") as info:
        ssc.start()
    assert "lock" in str(info.value)
    assert StreamingContext.getActive() is None


def test_driver_side_output_functions_may_hold_locks_unless_checkpointing(tmp_path):
    """As in PySpark: foreachRDD runs on the driver, so only a checkpoint needs to pickle it."""
    own = Context("threads[1]")
    lock = threading.Lock()
    out = []

    def guarded_sink(rdd):
        with lock:
            out.append(rdd.collect())

    try:
        s = StreamingContext(own, 1.0, clock=ManualClock())
        s.queueStream([[1]]).foreachRDD(guarded_sink)
        s.start()
        advance(s)
        s.stop(stopSparkContext=False)
        assert out == [[1]]

        s2 = StreamingContext(own, 1.0, clock=ManualClock())
        s2.checkpoint(str(tmp_path / "ckpt"))
        s2.queueStream([[1]]).foreachRDD(guarded_sink)
        with pytest.raises(SerializationError, match="guarded_sink"):
            s2.start()
    finally:
        own.stop()


def test_undecodable_text_file_fails_that_batch_only(ssc, tmp_path):
    watched = tmp_path / "in"
    watched.mkdir()

    def put(name: str, data: bytes) -> None:
        (tmp_path / name).write_bytes(data)
        os.rename(tmp_path / name, watched / name)

    out = collect(ssc.textFileStream(str(watched)))
    ssc.start()
    put("latin1.txt", "caf\xe9\n".encode("latin-1"))
    advance(ssc)
    put("utf8.txt", "caf\xe9\n".encode("utf-8"))
    advance(ssc)
    assert out == [["caf\xe9"]]
    with pytest.raises(RuntimeError, match=r"latin1\.txt") as info:
        ssc.awaitTerminationOrTimeout(0.01)
    assert "decode" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 0.0001, "1", None, True, float("nan"), float("inf"), [1]])
def test_invalid_batch_duration(ctx, bad):
    with pytest.raises(ValueError, match="batchDuration"):
        StreamingContext(ctx, bad, clock=ManualClock())


def test_invalid_durations_of_operators_name_the_parameter(ssc, tmp_path):
    stream = ssc.queueStream([[1]])
    with pytest.raises(ValueError, match="windowDuration"):
        stream.window(0)
    with pytest.raises(ValueError, match="slideDuration"):
        stream.window(2.0, -1)
    with pytest.raises(ValueError, match="windowDuration"):
        stream.window(float("nan"))
    with pytest.raises(ValueError, match="duration"):
        ssc.remember("a minute")
    with pytest.raises(ValueError, match="interval"):
        stream.checkpoint(0)


def test_durations_accept_numpy_numbers(ctx):
    np = pytest.importorskip("numpy")
    for value, seconds in ((np.float64(0.5), 0.5), (np.int64(2), 2.0)):
        s = StreamingContext(ctx, value, clock=ManualClock())
        assert s.batchDuration == seconds
        s.stop(stopSparkContext=False)
