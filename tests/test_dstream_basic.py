"""Stateless DStream operators and output operations.

Inputs and expected outputs come from PySpark's own tests (python/pyspark/streaming/tests/test_dstream.py,
BasicOperationTests) where they exist; the rest follow pyspark/streaming/dstream.py's documented behaviour.
"""
from __future__ import annotations

import datetime as dt
import operator
from itertools import chain

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dstream.driver.jobs import BatchError
from dstream import ManualClock, StreamingContext
from dstream.testing import run_two_streams, advance, collect, run_stream

INPUT = [range(1, 5), range(5, 9), range(9, 13)]


def batch_time(seconds: float) -> dt.datetime:
    """The datetime PySpark hands to foreachRDD/transform for a batch (local time, as PySpark does)."""
    return dt.datetime.fromtimestamp(seconds)


# -- element-wise ------------------------------------------------------------------------------------


def test_map(any_ctx):
    out = run_stream(any_ctx, INPUT, lambda s: s.map(str), sort=False)
    assert out == [list(map(str, x)) for x in INPUT]


def test_flatMap(any_ctx):
    out = run_stream(any_ctx, INPUT, lambda s: s.flatMap(lambda x: (x, x * 2)), sort=False)
    assert out == [list(chain.from_iterable([y, y * 2] for y in x)) for x in INPUT]


def test_filter(ctx):
    out = run_stream(ctx, INPUT, lambda s: s.filter(lambda x: x % 2 == 0), sort=False)
    assert out == [[y for y in x if y % 2 == 0] for x in INPUT]


def test_chained_narrow_operators_keep_order(ctx):
    out = run_stream(ctx, [range(10)], lambda s: s.map(lambda x: x * 3).filter(lambda x: x % 2).flatMap(
        lambda x: [x, -x]), sort=False)
    assert out == [[3, -3, 9, -9, 15, -15, 21, -21, 27, -27]]


def test_mapPartitions(any_ctx):
    rdds = [any_ctx.parallelize(list(r), 2) for r in INPUT]

    def f(iterator):
        yield sum(iterator)

    assert run_stream(any_ctx, rdds, lambda s: s.mapPartitions(f), sort=False) == [[3, 7], [11, 15], [19, 23]]


def test_mapPartitionsWithIndex(ctx):
    rdds = [ctx.parallelize(list(r), 2) for r in INPUT[:2]]
    out = run_stream(ctx, rdds, lambda s: s.mapPartitionsWithIndex(lambda i, it: [(i, list(it))]), sort=False)
    assert out == [[(0, [1, 2]), (1, [3, 4])], [(0, [5, 6]), (1, [7, 8])]]


def test_glom(ctx):
    rdds = [ctx.parallelize(list(r), 2) for r in INPUT]
    assert run_stream(ctx, rdds, lambda s: s.glom(), sort=False) == [[[1, 2], [3, 4]], [[5, 6], [7, 8]],
                                                                    [[9, 10], [11, 12]]]


def test_repartition(ctx):
    rdds = [ctx.parallelize(list(r), 2) for r in INPUT[:2]]
    assert run_stream(ctx, rdds, lambda s: s.repartition(1).glom()) == [[[1, 2, 3, 4]], [[5, 6, 7, 8]]]
    out = run_stream(ctx, rdds, lambda s: s.repartition(3).glom(), sort=False)
    assert [len(parts) for parts in out] == [3, 3]
    assert [sorted(chain.from_iterable(parts)) for parts in out] == [[1, 2, 3, 4], [5, 6, 7, 8]]


# -- reductions --------------------------------------------------------------------------------------


def test_reduce(any_ctx):
    out = run_stream(any_ctx, INPUT, lambda s: s.reduce(operator.add))
    assert out == [[10], [26], [42]]


def test_reduce_of_an_empty_batch_is_empty(ctx):
    assert run_stream(ctx, [[1, 2], []], lambda s: s.reduce(operator.add)) == [[3], []]


def test_reduce_with_a_python_function(ctx):
    assert run_stream(ctx, [["a", "bbb", "cc"]], lambda s: s.reduce(lambda a, b: a if len(a) > len(b) else b)) \
        == [["bbb"]]


def test_count(any_ctx):
    inputs = [range(5), range(10), range(20)]
    assert run_stream(any_ctx, inputs, lambda s: s.count()) == [[len(x)] for x in inputs]


def test_count_is_zero_for_empty_batches(ctx):
    # queueStream yields an empty RDD (no partitions) once the queue is empty; count still says 0
    assert run_stream(ctx, [[1, 2, 3], []], lambda s: s.count(), num_batches=3) == [[3], [0], [0]]


def test_count_of_pickled_records(ctx):
    out = run_stream(ctx, [[(1, 2, 3), {"a": 1}, None], [[1], [2]]], lambda s: s.count())
    assert out == [[3], [2]]


# -- several streams ---------------------------------------------------------------------------------


def test_union(any_ctx):
    out = run_two_streams(any_ctx, [range(3), range(5), range(6)], [range(3, 6), range(5, 6)],
                         lambda a, b: a.union(b))
    assert [sorted(x) for x in out] == [list(range(6))] * 3


def test_union_of_typed_and_pickled_records(ctx):
    out = run_two_streams(ctx, [[1, 2]], [["x", (1, 2)]], lambda a, b: a.union(b), sort=False)
    assert out == [[1, 2, "x", (1, 2)]]


def test_streaming_context_union_of_three(ctx):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        streams = [ssc.queueStream([[i]]) for i in range(3)]
        out = collect(ssc.union(*streams), sort=True)
        ssc.start()
        advance(ssc, 1)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [[0, 1, 2]]


def test_union_needs_the_same_slide(ssc):
    a = ssc.queueStream([[1]])
    with pytest.raises(ValueError, match="slide"):
        a.union(a.window(2, 2))


def test_transform(ctx):
    out = run_stream(ctx, [[1, 2], [3]], lambda s: s.transform(lambda rdd: rdd.map(lambda x: x * 2)))
    assert out == [[2, 4], [6]]


def test_transform_with_time_gets_a_datetime(ctx):
    seen = []

    def func(time, rdd):
        seen.append(time)
        return rdd.map(lambda x: x + 1)

    assert run_stream(ctx, [[1], [2]], lambda s: s.transform(func)) == [[2], [3]]
    assert seen == [batch_time(1), batch_time(2)]


def test_transform_must_return_an_rdd(ssc):
    ssc.queueStream([[1]]).transform(lambda rdd: rdd.collect()).foreachRDD(lambda rdd: None)
    ssc.start()
    advance(ssc, 1)
    with pytest.raises(BatchError, match="must return an RDD"):
        ssc.awaitTerminationOrTimeout(0)


def test_transformWith(ctx):
    out = run_two_streams(ctx, [[1, 2], [3]], [[10], [20]], lambda a, b: a.transformWith(
        lambda x, y: x.cartesian(y).map(lambda p: p[0] * p[1]), b))
    assert out == [[10, 20], [60]]


def test_transformWith_time_gets_a_datetime(ctx):
    seen = []

    def func(time, x, y):
        seen.append(time)
        return x.union(y)

    out = run_two_streams(ctx, [[1], [2]], [["a"], []], lambda a, b: a.transformWith(func, b), sort=False)
    assert out == [[1, "a"], [2]]
    assert seen == [batch_time(1), batch_time(2)]


def test_streaming_context_transform(ctx):
    seen = []

    def with_time(time, rdds):
        seen.append(time)
        return rdds[0].union(rdds[1])

    out_plain = run_two_streams(ctx, [[1], [2]], [[3], [4]], lambda a, b: a.context().transform(
        [a, b], lambda rdds: rdds[0].union(rdds[1]).map(lambda x: x * 10)))
    out_time = run_two_streams(ctx, [[1], [2]], [[3], [4]], lambda a, b: a.context().transform([a, b], with_time))
    assert out_plain == [[10, 30], [20, 40]]
    assert out_time == [[1, 3], [2, 4]]
    assert seen == [batch_time(1), batch_time(2)]


# -- output operations -------------------------------------------------------------------------------


def test_foreachRDD_with_rdd_only(ssc):
    seen = []
    ssc.queueStream([[1, 2], [3]]).foreachRDD(lambda rdd: seen.append(sorted(rdd.collect())))
    ssc.start()
    advance(ssc, 2)
    assert seen == [[1, 2], [3]]


def test_foreachRDD_with_time_and_rdd(ssc):
    seen = []

    def func(time, rdd):
        seen.append((time, rdd.collect()))

    ssc.queueStream([[1], [2]]).foreachRDD(func)
    ssc.start()
    advance(ssc, 3)
    assert seen == [(batch_time(1), [1]), (batch_time(2), [2]), (batch_time(3), [])]
    assert all(isinstance(t, dt.datetime) for t, _ in seen)


def test_output_operations_run_in_declaration_order(ssc):
    order = []
    s = ssc.queueStream([[1], [2]])
    s.foreachRDD(lambda rdd: order.append(("first", rdd.collect())))
    s.map(lambda x: -x).foreachRDD(lambda rdd: order.append(("second", rdd.collect())))
    ssc.start()
    advance(ssc, 2)
    assert order == [("first", [1]), ("second", [-1]), ("first", [2]), ("second", [-2])]


def header(seconds: float) -> list[str]:
    return ["-------------------------------------------", f"Time: {batch_time(seconds)}",
            "-------------------------------------------"]


def test_pprint_prints_header_ten_records_and_ellipsis(ctx, capsys):
    run_stream(ctx, [range(12), range(3)], lambda s: (s.pprint(), s)[1])
    lines = capsys.readouterr().out.split("\n")
    expected = (header(1) + [str(i) for i in range(10)] + ["...", ""]
                + header(2) + ["0", "1", "2", ""] + [""])
    assert lines == expected


def test_pprint_num_and_records_as_python_prints_them(ctx, capsys):
    run_stream(ctx, [[("a", 1), (2, [3]), None, "x"]], lambda s: (s.pprint(2), s)[1])
    out = capsys.readouterr().out.split("\n")
    assert out == header(1) + ["('a', 1)", "(2, [3])", "...", "", ""]


def test_pprint_exactly_num_records_has_no_ellipsis(ctx, capsys):
    run_stream(ctx, [range(3)], lambda s: (s.pprint(3), s)[1])
    assert capsys.readouterr().out.split("\n") == header(1) + ["0", "1", "2", "", ""]


def test_failed_batch_does_not_stop_later_batches(ctx):
    # PySpark's test_failed_func_with_resetting_failure
    def failed_func(i):
        if i == 1:
            raise ValueError("This is a special error")
        return i

    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        out = collect(ssc.queueStream([[d] for d in range(4)]).map(failed_func))
        ssc.start()
        advance(ssc, 4)
        with pytest.raises(BatchError, match="This is a special error"):
            ssc.awaitTerminationOrTimeout(0)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [[0], [2], [3]]


# -- persistence -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True])
def test_cache_computes_each_batch_once_for_several_outputs(ctx, cached):
    calls = []
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        s = ssc.queueStream([[1, 2, 3]]).map(lambda x: calls.append(x) or x * 2)
        if cached:
            assert s.cache() is s
        outs = [collect(s, sort=True), collect(s.map(lambda x: x + 1), sort=True)]
        ssc.start()
        advance(ssc, 1)
        assert s.generated[1000].is_cached is cached
    finally:
        ssc.stop(stopSparkContext=False)
    assert outs == [[[2, 4, 6]], [[3, 5, 7]]]
    assert sorted(calls) == ([1, 2, 3] if cached else [1, 1, 2, 2, 3, 3])


def test_persist_returns_the_stream_and_caches(ssc):
    s = ssc.queueStream([[1]])
    assert s.persist() is s and s.must_cache


def test_checkpoint_interval_must_be_a_multiple_of_the_slide(ssc):
    s = ssc.queueStream([[1]])
    with pytest.raises(ValueError, match="interval"):
        s.checkpoint(1.5)
    with pytest.raises(ValueError, match="interval"):
        s.checkpoint(0)


def test_checkpoint_writes_the_rdds_of_every_interval(ctx, tmp_path):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        ssc.checkpoint(str(tmp_path))
        s = ssc.queueStream([[1], [2], [3], [4]]).map(lambda x: x * 10)
        assert s.checkpoint(2) is s
        out = collect(s)
        ssc.start()
        advance(ssc, 4)
        checkpointed = {t: rdd.isCheckpointed() for t, rdd in s.generated.items()}
    finally:
        ssc.stop(stopSparkContext=False)
        ctx.checkpoint_dir = None  # the session's Context is shared with other tests
    assert out == [[10], [20], [30], [40]]
    assert checkpointed == {1000: False, 2000: True, 3000: False, 4000: True}


# -- slice -------------------------------------------------------------------------------------------


def test_slice(ctx):
    """PySpark's test_slice: remember(4) keeps the four batches sliceable."""
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        ssc.remember(4.0)
        stream = ssc.queueStream([ctx.parallelize(d, 1) for d in [[1], [2], [3], [4]]])
        times = []
        stream.foreachRDD(lambda t, rdd: times.append(t))
        ssc.start()
        advance(ssc, 4)
        begin = times[0]

        def sliced(begin_delta, end_delta):
            rdds = stream.slice(begin + dt.timedelta(seconds=begin_delta), begin + dt.timedelta(seconds=end_delta))
            return {r for rdd in rdds for r in rdd.collect()}

        assert sliced(0, 0) == {1}
        assert sliced(1, 2) == {2, 3}
        assert sliced(1, 4) == {2, 3, 4}
        assert sliced(0, 4) == {1, 2, 3, 4}
        # unix timestamps work as well; times before the stream started are skipped
        assert {r for rdd in stream.slice(-5, 2.0) for r in rdd.collect()} == {1, 2}
    finally:
        ssc.stop(stopSparkContext=False)


def test_slice_before_start_is_an_error(ssc):
    s = ssc.queueStream([[1]])
    with pytest.raises(RuntimeError, match="start"):
        s.slice(0, 1)


def test_slice_rejects_bad_times(ssc):
    s = ssc.queueStream([[1]])
    s.foreachRDD(lambda rdd: None)
    ssc.start()
    with pytest.raises(ValueError, match="begin"):
        s.slice("yesterday", 1)


# -- columnar ----------------------------------------------------------------------------------------


def times_ten(batches):
    for b in batches:
        yield pa.RecordBatch.from_arrays([pc.multiply(b.column(0), 10)], ["value"])


def test_mapInArrow(any_ctx):
    assert run_stream(any_ctx, [[1, 2, 3], [4], []], lambda s: s.mapInArrow(times_ten)) == [[10, 20, 30], [40], []]


def test_mapInArrow_on_pairs_then_reduceByKey(ctx):
    def double_values(batches):
        for b in batches:
            yield pa.RecordBatch.from_arrays([b.column(0), pc.multiply(b.column(1), 2)], ["key", "value"])

    out = run_stream(ctx, [[("a", 1), ("b", 2), ("a", 3)]],
                     lambda s: s.mapInArrow(double_values).reduceByKey(operator.add))
    assert out == [[("a", 8), ("b", 4)]]


def test_mapInArrow_must_yield_record_batches(ssc):
    ssc.queueStream([[1]]).mapInArrow(lambda batches: [1]).foreachRDD(lambda rdd: rdd.collect())
    ssc.start()
    advance(ssc, 1)
    with pytest.raises(BatchError, match="RecordBatch"):
        ssc.awaitTerminationOrTimeout(0)


def test_mapInPandas(any_ctx):
    def plus_one(frames):
        for df in frames:
            yield df.assign(value=df.value + 1)

    assert run_stream(any_ctx, [[1, 2, 3], [4], []], lambda s: s.mapInPandas(plus_one)) == [[2, 3, 4], [5], []]


def test_mapInPandas_on_pairs(ctx):
    def big(frames):
        for df in frames:
            assert isinstance(df, pd.DataFrame) and list(df.columns) == ["key", "value"]
            yield df[df.value > 1]

    assert run_stream(ctx, [[("a", 1), ("b", 2), ("c", 3)]], lambda s: s.mapInPandas(big)) == [[("b", 2), ("c", 3)]]


# -- records of any Python type ----------------------------------------------------------------------


MIXED = [1, "a", 2.5, None, (1, 2), [3, 4], {"k": 1}, b"x", True, 10 ** 30, frozenset({1})]


def test_mixed_records_flow_through_narrow_operators(any_ctx):
    out = run_stream(any_ctx, [MIXED, ["b", 2]], lambda s: s.map(lambda x: x).filter(lambda x: x != "b"),
                     sort=False)
    assert out == [MIXED, [2]]
    assert [type(x) for x in out[0]] == [type(x) for x in MIXED]


def test_mixed_records_flatMap_and_count(ctx):
    out = run_stream(ctx, [[[1, "a"], [None], [(2, 3)]]], lambda s: s.flatMap(lambda x: x), sort=False)
    assert out == [[1, "a", None, (2, 3)]]
    assert run_stream(ctx, [MIXED], lambda s: s.count()) == [[len(MIXED)]]


def test_mixed_records_through_a_window(ctx):
    out = run_stream(ctx, [[1, 2], ["a"], [(1, 2)], [None, 2.5]], lambda s: s.window(2, 1), sort=False)
    assert out == [[1, 2], [1, 2, "a"], ["a", (1, 2)], [(1, 2), None, 2.5]]
