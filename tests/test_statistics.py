"""Batch statistics: ``ssc.statistics()`` against ManualClock-driven streams, the bounded window, failed
batches, inputs that do not count, ``plot()``, the summary the live views show, and the HTML views of a
StreamingContext and an RDD."""
from __future__ import annotations

import operator

import pandas as pd
import pytest

from dstream import Context, ManualClock, StreamingContext, StreamingListener
from dstream.driver.statistics import BatchRecord, OutputRecord, StreamStatistics
from dstream.testing import advance, collect


@pytest.fixture
def ctx():
    c = Context("threads[2]")
    yield c
    c.stop()


def test_statistics_has_a_row_per_batch_with_records_delays_and_output_operations(ctx):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    words = ssc.queueStream([["a b", "c"], ["d"], []]).flatMap(str.split)
    collect(words.map(lambda w: (w, 1)).reduceByKey(operator.add))
    words.count().foreachRDD(lambda rdd: None)
    ssc.start()
    try:
        advance(ssc, 3)
        frame = ssc.statistics()
    finally:
        ssc.stop(stopSparkContext=False)
    assert list(frame["batch_time"]) == [pd.Timestamp(t, unit="ms") for t in (1000, 2000, 3000)]
    assert list(frame["records"]) == [2, 1, 0]
    assert list(frame["records[queueStream]"]) == [2, 1, 0]
    assert list(frame["output_operations"]) == [2, 2, 2]
    assert all(len(d) == 2 for d in frame["output_durations_ms"])
    for column in ("scheduling_delay_ms", "processing_delay_ms", "total_delay_ms"):
        assert str(frame[column].dtype) == "Int64" and (frame[column] >= 0).all()
    assert not frame["failed"].any() and list(frame["attempt"]) == [1, 1, 1]


def test_statistics_keeps_only_the_newest_batches():
    with Context("threads[1]", conf={"dstream.ui.retainedBatches": 3}) as small:
        ssc = StreamingContext(small, 1.0, clock=ManualClock())
        ssc.queueStream([[i] for i in range(5)]).foreachRDD(lambda rdd: None)
        ssc.start()
        try:
            advance(ssc, 5)
            frame = ssc.statistics()
        finally:
            ssc.stop(stopSparkContext=False)
    assert [t.value // 10**6 for t in frame["batch_time"]] == [3000, 4000, 5000]


@pytest.mark.parametrize("value", [0, "many"])
def test_a_bad_retained_batches_setting_names_the_key(value):
    with Context("threads[1]", conf={"spark.streaming.ui.retainedBatches": value}) as c:
        with pytest.raises(ValueError, match="spark.streaming.ui.retainedBatches"):
            StreamingContext(c, 1.0, clock=ManualClock())


def _fail_on_two(rdd) -> None:
    if 2 in rdd.collect():
        raise ValueError("the sink is down")


def test_a_failed_batch_shows_as_failed_with_its_error(ctx):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.queueStream([[1], [2], [3]]).foreachRDD(_fail_on_two)
    ssc.start()
    try:
        advance(ssc, 3)
        frame = ssc.statistics()
        summary = ssc._statistics.summary()
    finally:
        ssc.stop(stopSparkContext=False)
    assert list(frame["failed"]) == [False, True, False]
    assert "the sink is down" in frame["failure"][1]
    assert summary.failed_batches == 1 and "the sink is down" in summary.last_error


def test_file_inputs_that_did_not_count_show_na_and_count_for_a_listener(ctx, tmp_path):
    def run(listen: bool) -> pd.DataFrame:
        directory = tmp_path / f"in-{listen}"
        directory.mkdir()
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        if listen:
            ssc.addStreamingListener(StreamingListener())
        ssc.textFileStream(str(directory)).foreachRDD(lambda rdd: None)
        ssc.start()
        try:
            (directory / "a.txt").write_text("x\ny\nz\n")
            advance(ssc, 1)
            return ssc.statistics()
        finally:
            ssc.stop(stopSparkContext=False)

    assert run(listen=False)["records"].isna().all()  # counting would read the file again on the driver
    assert list(run(listen=True)["records"]) == [3]


def test_plot_draws_the_input_rate_and_the_delays(ctx):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.queueStream([[1, 2], [3], [4, 5, 6]]).foreachRDD(lambda rdd: None)
    ssc.start()
    try:
        advance(ssc, 3)
        figure = ssc.plot()
    finally:
        ssc.stop(stopSparkContext=False)
    rate, delays = figure.axes
    assert list(rate.lines[0].get_ydata()) == [2.0, 1.0, 3.0]
    assert [line.get_label() for line in delays.lines[:3]] == ["scheduling delay", "processing delay",
                                                               "total delay"]
    assert all(len(line.get_xdata()) == 3 for line in delays.lines[:3])


def test_records_keep_whole_milliseconds_from_precise_batch_infos():
    """The statistics (tables, UI, Prometheus) show Spark's whole ms, from the PySpark getters, not floats."""
    from dstream.driver.listener import BatchInfo, OutputOperationInfo
    op = OutputOperationInfo(1000, 0, "out", start_time=1001.2, end_time=1001.6)
    info = BatchInfo(1000, 1000.9, {}, {0: op}, processing_start_time=1001.2, processing_end_time=1001.6)
    record = BatchRecord.from_info(info, str)
    delays = (record.scheduling_delay_ms, record.processing_delay_ms, record.total_delay_ms,
              record.outputs[0].duration_ms)
    assert delays == (1, 0, 1, 0) and all(type(d) is int for d in delays)


def _record(t: int, start: int, end: int, records: int = 10, failure: str | None = None) -> BatchRecord:
    return BatchRecord(t, t, t + start, t + end, {"in": records}, (OutputRecord(0, "out", end - start, failure),),
                       failure=failure)


def test_summary_says_whether_the_stream_keeps_up():
    ok = StreamStatistics(1000)
    for i in range(5):
        ok.add(_record(1000 * (i + 1), 0, 200))
    s = ok.summary()
    assert s.keeping_up and s.batches == 5 and s.input_rate == 10.0 and s.processing_delay_ms == 200
    assert s.recent_total_delays_ms == [200] * 5

    slow = StreamStatistics(1000)
    for i in range(5):
        slow.add(_record(1000 * (i + 1), 0, 1500))
    assert not slow.summary().keeping_up  # each batch takes longer than the interval

    queueing = StreamStatistics(1000)
    for i, wait in enumerate([200, 900, 1600, 2300]):
        queueing.add(_record(1000 * (i + 1), wait, wait + 700))
    assert not queueing.summary().keeping_up  # batches wait longer and longer to start


def test_snapshot_is_json_ready_newest_first():
    import json
    stats = StreamStatistics(1000)
    stats.add(_record(1000, 0, 5))
    stats.add(_record(2000, 0, 5, failure="boom"))
    snap = json.loads(json.dumps(stats.snapshot()))
    assert [b["batch_time_ms"] for b in snap["batches"]] == [2000, 1000]
    assert snap["batches"][0]["failure"] == "boom" and snap["summary"]["failed_batches"] == 1


def test_html_views_of_a_stream_and_an_rdd(ctx):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.queueStream([["<b>x</b>"]]).map(str.upper).foreachRDD(lambda rdd: None)
    before = ssc._repr_html_()
    assert "initialized" in before and "no batch completed yet" in before
    ssc.start()
    try:
        advance(ssc, 1)
        ssc.statistics()
        after = ssc._repr_html_()
    finally:
        ssc.stop(stopSparkContext=False)
    assert "active" in after and "1970-01-01 00:00:01" in after and "queueStream" in after
    assert "operator graph" in after and "map" in after

    rdd = ctx.parallelize([("a", 1), ("b", 2)], 2).reduceByKey(operator.add).cache()
    assert "partitions</b>: 2" in rdd._repr_html_() and "schema" not in rdd._repr_html_()
    rdd.count()
    shown = rdd._repr_html_()
    assert "schema" in shown and "ShuffledRDD" in shown and "lineage" in shown
