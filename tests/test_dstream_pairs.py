"""Pair DStream operators: per-key reductions, grouping, partitioning, cogroup and the joins.

Inputs and expected outputs come from PySpark's tests (python/pyspark/streaming/tests/test_dstream.py)
where they exist. PySpark compares sorted batches; ``run_stream`` sorts each batch by ``repr``.
"""
from __future__ import annotations

import operator

import pytest

from dstream.shuffle import portable_hash
from dstream.testing import run_two_streams, advance, run_stream


def by_repr(batches):
    return [sorted(b, key=repr) for b in batches]


# -- per-key reductions ------------------------------------------------------------------------------


def test_reduceByKey(any_ctx):
    inputs = [[("a", 1), ("a", 1), ("b", 1), ("b", 1)],
              [("", 1), ("", 1), ("", 1), ("", 1)],
              [(1, 1), (1, 1), (2, 1), (2, 1), (3, 1)]]
    out = run_stream(any_ctx, inputs, lambda s: s.reduceByKey(operator.add))
    assert out == by_repr([[("a", 2), ("b", 2)], [("", 4)], [(1, 2), (2, 2), (3, 1)]])


def test_reduceByKey_with_a_python_function_and_numPartitions(ctx):
    out = run_stream(ctx, [[("a", "x"), ("b", "y"), ("a", "z")]],
                     lambda s: s.reduceByKey(lambda a, b: "".join(sorted(a + b)), 3).glom().map(len))
    assert sorted(out[0]) == [0, 1, 1]
    out = run_stream(ctx, [[("a", "x"), ("b", "y"), ("a", "z")]],
                     lambda s: s.reduceByKey(lambda a, b: "".join(sorted(a + b))))
    assert out == [[("a", "xz"), ("b", "y")]]


def test_reduceByKey_needs_pairs(ssc):
    from dstream.driver.jobs import BatchError
    ssc.queueStream([[1, 2]]).reduceByKey(operator.add).foreachRDD(lambda rdd: rdd.collect())
    ssc.start()
    advance(ssc, 1)
    with pytest.raises(BatchError, match=r"\(key, value\) pairs"):
        ssc.awaitTerminationOrTimeout(0)


def test_combineByKey(any_ctx):
    inputs = [[(1, 1), (2, 1), (3, 1), (4, 1)],
              [(1, 1), (1, 1), (1, 1), (2, 1), (2, 1), (3, 1)],
              [("a", 1), ("a", 1), ("b", 1), ("", 1), ("", 1), ("", 1)]]

    def add(a, b):
        return a + str(b)

    out = run_stream(any_ctx, inputs, lambda s: s.combineByKey(str, add, add))
    assert out == by_repr([[(1, "1"), (2, "1"), (3, "1"), (4, "1")],
                           [(1, "111"), (2, "11"), (3, "1")],
                           [("a", "11"), ("b", "1"), ("", "111")]])


def test_groupByKey(any_ctx):
    inputs = [[(1, 1), (2, 1), (3, 1), (4, 1)],
              [(1, 1), (1, 1), (1, 1), (2, 1), (2, 1), (3, 1)],
              [("a", 1), ("a", 1), ("b", 1), ("", 1), ("", 1), ("", 1)]]
    out = run_stream(any_ctx, inputs, lambda s: s.groupByKey().mapValues(list))
    assert out == by_repr([[(1, [1]), (2, [1]), (3, [1]), (4, [1])],
                           [(1, [1, 1, 1]), (2, [1, 1]), (3, [1])],
                           [("a", [1, 1]), ("b", [1]), ("", [1, 1, 1])]])


def test_groupByKey_numPartitions(ctx):
    out = run_stream(ctx, [[(i, i) for i in range(10)]], lambda s: s.groupByKey(5).glom().map(len), sort=False)
    assert out == [[2, 2, 2, 2, 2]]


def test_countByValue(ctx):
    inputs = [list(range(1, 5)) * 2, list(range(5, 7)) + list(range(5, 9)), ["a", "a", "b", ""]]
    out = run_stream(ctx, inputs, lambda s: s.countByValue())
    assert out == by_repr([[(1, 2), (2, 2), (3, 2), (4, 2)],
                           [(5, 2), (6, 2), (7, 1), (8, 1)],
                           [("a", 2), ("b", 1), ("", 1)]])


def test_countByValue_of_mixed_and_unhashable_by_arrow_records(ctx):
    out = run_stream(ctx, [[1, "1", (1,), None, None, "1", 2.5]], lambda s: s.countByValue())
    assert out == by_repr([[(1, 1), ("1", 2), ((1,), 1), (None, 2), (2.5, 1)]])


def test_mapValues(any_ctx):
    inputs = [[("a", 2), ("b", 2), ("c", 1), ("d", 1)],
              [(0, 4), (1, 1), (2, 2), (3, 3)],
              [(1, 1), (2, 1), (3, 1), (4, 1)]]
    out = run_stream(any_ctx, inputs, lambda s: s.mapValues(lambda x: x + 10))
    assert out == by_repr([[("a", 12), ("b", 12), ("c", 11), ("d", 11)],
                           [(0, 14), (1, 11), (2, 12), (3, 13)],
                           [(1, 11), (2, 11), (3, 11), (4, 11)]])


def test_flatMapValues(ctx):
    inputs = [[("a", 2), ("b", 2), ("c", 1), ("d", 1)],
              [(0, 4), (1, 1), (2, 1), (3, 1)],
              [(1, 1), (2, 1), (3, 1), (4, 1)]]
    out = run_stream(ctx, inputs, lambda s: s.flatMapValues(lambda x: (x, x + 10)), sort=False)
    assert out == [
        [("a", 2), ("a", 12), ("b", 2), ("b", 12), ("c", 1), ("c", 11), ("d", 1), ("d", 11)],
        [(0, 4), (0, 14), (1, 1), (1, 11), (2, 1), (2, 11), (3, 1), (3, 11)],
        [(1, 1), (1, 11), (2, 1), (2, 11), (3, 1), (3, 11), (4, 1), (4, 11)],
    ]


# -- partitioning ------------------------------------------------------------------------------------


def test_partitionBy_default_hash(any_ctx):
    pairs = [("a", 1), ("b", 2), ("c", 3), (1, 4), (2, 5), (7, 6)]
    out = run_stream(any_ctx, [pairs], lambda s: s.partitionBy(3).glom(), sort=False)
    parts = out[0]
    assert len(parts) == 3
    for i, part in enumerate(parts):
        assert all(portable_hash(k) % 3 == i for k, _ in part)
    assert sorted((kv for part in parts for kv in part), key=repr) == sorted(pairs, key=repr)


def test_partitionBy_custom_function(ctx):
    out = run_stream(ctx, [[(i, str(i)) for i in range(6)]],
                     lambda s: s.partitionBy(2, lambda k: 0 if k < 4 else 1).glom().map(sorted), sort=False)
    assert out == [[[(0, "0"), (1, "1"), (2, "2"), (3, "3")], [(4, "4"), (5, "5")]]]


# -- cogroup and joins -------------------------------------------------------------------------------


def test_cogroup(any_ctx):
    input1 = [[(1, 1), (2, 1), (3, 1)],
              [(1, 1), (1, 1), (1, 1), (2, 1)],
              [("a", 1), ("a", 1), ("b", 1), ("", 1), ("", 1)]]
    input2 = [[(1, 2)], [(4, 1)], [("a", 1), ("a", 1), ("b", 1), ("", 1), ("", 2)]]
    out = run_two_streams(any_ctx, input1, input2,
                         lambda a, b: a.cogroup(b).mapValues(lambda vs: tuple(map(list, vs))))
    assert out == by_repr([[(1, ([1], [2])), (2, ([1], [])), (3, ([1], []))],
                           [(1, ([1, 1, 1], [])), (2, ([1], [])), (4, ([], [1]))],
                           [("a", ([1, 1], [1, 1])), ("b", ([1], [1])), ("", ([1, 1], [1, 2]))]])


LEFT = [[("a", 1), ("b", 2)]]
RIGHT = [[("b", 3), ("c", 4)]]


@pytest.mark.parametrize("op,expected", [
    ("join", [("b", (2, 3))]),
    ("leftOuterJoin", [("a", (1, None)), ("b", (2, 3))]),
    ("rightOuterJoin", [("b", (2, 3)), ("c", (None, 4))]),
    ("fullOuterJoin", [("a", (1, None)), ("b", (2, 3)), ("c", (None, 4))]),
])
def test_joins(ctx, op, expected):
    assert run_two_streams(ctx, LEFT, RIGHT, lambda a, b: getattr(a, op)(b)) == [expected]


def test_join_on_processes(pctx):
    assert run_two_streams(pctx, LEFT, RIGHT, lambda a, b: a.fullOuterJoin(b, 3)) == \
        [[("a", (1, None)), ("b", (2, 3)), ("c", (None, 4))]]


@pytest.mark.parametrize("op,expected", [
    # batch 1: only the left side has data; batch 2: only the right side; batch 3: neither
    ("join", [[], [], []]),
    ("leftOuterJoin", [[("k", (1, None))], [], []]),
    ("rightOuterJoin", [[], [("k", (None, 2))], []]),
    ("fullOuterJoin", [[("k", (1, None))], [("k", (None, 2))], []]),
])
def test_joins_with_a_side_empty(ctx, op, expected):
    out = run_two_streams(ctx, [[("k", 1)], [], []], [[], [("k", 2)], []], lambda a, b: getattr(a, op)(b))
    assert out == expected


def test_join_multiplies_matching_values(ctx):
    out = run_two_streams(ctx, [[("k", 1), ("k", 2), ("x", 0)]], [[("k", "a"), ("k", "b"), ("y", 9)]],
                         lambda a, b: a.join(b))
    assert out == [[("k", (1, "a")), ("k", (1, "b")), ("k", (2, "a")), ("k", (2, "b"))]]


def test_join_with_mixed_key_types(ctx):
    left = [[(1, "int"), ("1", "str"), ((1, 2), "tuple"), (None, "none")]]
    right = [[(1, 10), ("1", 20), ((1, 2), 30), (2.5, 40)]]
    out = run_two_streams(ctx, left, right, lambda a, b: a.fullOuterJoin(b))
    assert out == by_repr([[(1, ("int", 10)), ("1", ("str", 20)), ((1, 2), ("tuple", 30)),
                            (None, ("none", None)), (2.5, (None, 40))]])


def test_join_numPartitions(ctx):
    out = run_two_streams(ctx, [[(i, i) for i in range(8)]], [[(i, -i) for i in range(8)]],
                         lambda a, b: a.join(b, 4).glom().map(lambda p: 1))
    assert out == [[1, 1, 1, 1]]


def test_join_needs_the_same_slide(ssc):
    a = ssc.queueStream([[("a", 1)]])
    with pytest.raises(ValueError, match="slide"):
        a.join(a.window(2, 2))
