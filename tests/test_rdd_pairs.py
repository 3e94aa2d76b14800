"""Pair-RDD operations: per-key transformations, shuffles, joins, partitioning and sorting.

Expected values are PySpark's docstring examples (python/pyspark/rdd.py) where they exist.
"""
from __future__ import annotations

import operator

import pytest

from dstream.executors.base import TaskError


def _sorted_groups(pairs):
    return sorted((k, sorted(v)) for k, v in pairs)


# -- per-key narrow transformations ------------------------------------------------------------------


def test_map_values_and_flat_map_values(any_ctx):
    x = any_ctx.parallelize([("a", ["apple", "banana", "lemon"]), ("b", ["grapes"])])
    assert x.mapValues(len).collect() == [("a", 3), ("b", 1)]
    x = any_ctx.parallelize([("a", ["x", "y", "z"]), ("b", ["p", "r"])])
    assert x.flatMapValues(lambda v: v).collect() == [
        ("a", "x"), ("a", "y"), ("a", "z"), ("b", "p"), ("b", "r")]


def test_keys_and_values(any_ctx):
    rdd = any_ctx.parallelize([(1, 2), (3, 4)])
    assert rdd.keys().collect() == [1, 3]
    assert rdd.values().collect() == [2, 4]
    mixed = any_ctx.parallelize([((1, 2), None), ("a", [3])], 2)
    assert mixed.keys().collect() == [(1, 2), "a"]
    assert mixed.values().collect() == [None, [3]]


def test_keys_and_values_of_empty_partitions(ctx):
    rdd = ctx.parallelize([("a", 1)], 3).partitionBy(4)
    assert rdd.keys().collect() == ["a"]
    assert rdd.values().glom().collect() == [[1] if p else [] for p in rdd.glom().collect()]


def test_map_values_keeps_partitioner_map_does_not(ctx):
    rdd = ctx.parallelize([(i, i) for i in range(10)], 3).partitionBy(2)
    assert rdd.mapValues(str).partitioner == rdd.partitioner
    assert rdd.map(lambda kv: kv).partitioner is None
    assert rdd.map(lambda kv: kv, preservesPartitioning=True).partitioner == rdd.partitioner


# -- aggregations ------------------------------------------------------------------------------------


def test_reduce_by_key(any_ctx):
    rdd = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 1)])
    assert sorted(rdd.reduceByKey(operator.add).collect()) == [("a", 2), ("b", 1)]
    assert sorted(rdd.reduceByKey(lambda a, b: a + b, 3).collect()) == [("a", 2), ("b", 1)]
    assert rdd.reduceByKey(operator.add, 3).getNumPartitions() == 3


def test_reduce_by_key_merges_across_partitions(ctx):
    data = [(i % 7, i) for i in range(200)]
    expected = {}
    for k, v in data:
        expected[k] = expected.get(k, 0) + v
    for n in (1, 2, 5):
        assert dict(ctx.parallelize(data, 4).reduceByKey(operator.add, n).collect()) == expected
        assert dict(ctx.parallelize(data, 4).reduceByKey(lambda a, b: a + b, n).collect()) == expected


def test_reduce_by_key_each_key_in_exactly_one_partition(ctx):
    parts = ctx.parallelize([(i % 13, 1) for i in range(100)], 3).reduceByKey(operator.add, 4).glom().collect()
    keys = [k for p in parts for k, _ in p]
    assert len(keys) == len(set(keys)) == 13


def test_reduce_by_key_with_custom_partition_func(ctx):
    rdd = ctx.parallelize([(i, 1) for i in range(10)], 2).reduceByKey(operator.add, 2, lambda k: k // 5)
    assert rdd.glom().collect() == [[(i, 1) for i in range(5)], [(i, 1) for i in range(5, 10)]]


def test_non_pair_record_to_reduce_by_key_names_the_record(any_ctx):
    with pytest.raises(TaskError, match="TypeError.*reduceByKey.*record 3") as info:
        any_ctx.parallelize([("a", 1), 3]).reduceByKey(operator.add).collect()
    assert isinstance(info.value.cause, TypeError)
    with pytest.raises(TaskError, match=r"TypeError.*groupByKey.*\(1, 2, 3\)"):
        any_ctx.parallelize([(1, 2, 3)]).groupByKey().collect()
    with pytest.raises(TaskError, match="TypeError.*partitionBy.*'ab'"):
        any_ctx.parallelize(["ab"]).partitionBy(2).collect()


def test_group_by_key(any_ctx):
    rdd = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 1)])
    assert sorted(rdd.groupByKey().mapValues(len).collect()) == [("a", 2), ("b", 1)]
    assert sorted(rdd.groupByKey().mapValues(list).collect()) == [("a", [1, 1]), ("b", [1])]


def test_group_by_key_many_partitions_keeps_all_values(ctx):
    data = [(i % 5, i) for i in range(100)]
    groups = dict(ctx.parallelize(data, 7).groupByKey(3).collect())
    assert {k: sorted(v) for k, v in groups.items()} == {k: list(range(k, 100, 5)) for k in range(5)}


def test_group_by(ctx):
    result = ctx.parallelize([1, 1, 2, 3, 5, 8]).groupBy(lambda x: x % 2).collect()
    assert _sorted_groups(result) == [(0, [2, 8]), (1, [1, 1, 3, 5])]


def test_combine_by_key(any_ctx):
    x = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 2)])

    def to_list(a):
        return [a]

    def append(a, b):
        a.append(b)
        return a

    def extend(a, b):
        a.extend(b)
        return a

    assert sorted(x.combineByKey(to_list, append, extend).collect()) == [("a", [1, 2]), ("b", [1])]


def test_combine_by_key_merges_combiners_from_each_partition(ctx):
    x = ctx.parallelize([("a", 1), ("a", 2), ("a", 3), ("a", 4)], 4)
    out = x.combineByKey(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1),
                         lambda c, d: (c[0] + d[0], c[1] + d[1]), 2).collect()
    assert out == [("a", (10, 4))]


def test_aggregate_by_key(any_ctx):
    rdd = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 2)])

    def seq(x, y):
        return (x[0] + y, x[1] + 1)

    def comb(x, y):
        return (x[0] + y[0], x[1] + y[1])

    assert sorted(rdd.aggregateByKey((0, 0), seq, comb).collect()) == [("a", (3, 2)), ("b", (1, 1))]


def test_aggregate_by_key_copies_a_mutable_zero(ctx):
    def append(acc, v):  # mutates the accumulator, as PySpark allows
        acc.append(v)
        return acc

    rdd = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2)
    out = rdd.aggregateByKey([], append, lambda a, b: a + b).collect()
    assert {k: sorted(v) for k, v in out} == {"a": [1, 3], "b": [2]}


def test_fold_by_key(any_ctx):
    rdd = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 1)])
    assert sorted(rdd.foldByKey(0, operator.add).collect()) == [("a", 2), ("b", 1)]


def test_count_by_key_and_value(any_ctx):
    rdd = any_ctx.parallelize([("a", 1), ("b", 1), ("a", 1)])
    assert sorted(rdd.countByKey().items()) == [("a", 2), ("b", 1)]
    assert sorted(any_ctx.parallelize([1, 2, 1, 2, 2], 2).countByValue().items()) == [(1, 2), (2, 3)]


def test_count_by_value_of_unhashable_looking_records(ctx):
    counts = ctx.parallelize([(1, 2), (1, 2), None, "x", None, None], 3).countByValue()
    assert dict(counts) == {(1, 2): 2, None: 3, "x": 1}


# -- joins -------------------------------------------------------------------------------------------


def test_join(any_ctx):
    x = any_ctx.parallelize([("a", 1), ("b", 4)])
    y = any_ctx.parallelize([("a", 2), ("a", 3)])
    assert sorted(x.join(y).collect()) == [("a", (1, 2)), ("a", (1, 3))]
    assert x.join(y, 3).getNumPartitions() == 3


def test_outer_joins(any_ctx):
    x = any_ctx.parallelize([("a", 1), ("b", 4)])
    y = any_ctx.parallelize([("a", 2)])
    assert sorted(x.leftOuterJoin(y).collect()) == [("a", (1, 2)), ("b", (4, None))]
    assert sorted(y.rightOuterJoin(x).collect()) == [("a", (2, 1)), ("b", (None, 4))]
    y = any_ctx.parallelize([("a", 2), ("c", 8)])
    assert sorted(x.fullOuterJoin(y).collect()) == [("a", (1, 2)), ("b", (4, None)), ("c", (None, 8))]


def test_joins_with_duplicate_keys_and_none_values(ctx):
    x = ctx.parallelize([("k", 1), ("k", 2), ("only_x", None)], 2)
    y = ctx.parallelize([("k", "a"), ("k", "b"), ("only_y", 0)], 3)
    assert sorted(x.join(y).collect()) == [("k", (1, "a")), ("k", (1, "b")), ("k", (2, "a")), ("k", (2, "b"))]
    # a None value joined is different from a missing partner
    assert sorted(x.leftOuterJoin(y).collect(), key=repr) == sorted(
        [("k", (1, "a")), ("k", (1, "b")), ("k", (2, "a")), ("k", (2, "b")), ("only_x", (None, None))], key=repr)
    assert ("only_y", (None, 0)) in x.fullOuterJoin(y).collect()


def test_cogroup(any_ctx):
    x = any_ctx.parallelize([("a", 1), ("b", 4)])
    y = any_ctx.parallelize([("a", 2)])
    assert [(k, tuple(map(list, v))) for k, v in sorted(x.cogroup(y).collect())] == [
        ("a", ([1], [2])), ("b", ([4], []))]


def test_group_with_three_rdds(ctx):
    w = ctx.parallelize([("a", 5), ("b", 6)])
    x = ctx.parallelize([("a", 1), ("b", 4)])
    y = ctx.parallelize([("a", 2)])
    z = ctx.parallelize([("b", 42)])
    out = [(k, tuple(map(list, v))) for k, v in sorted(w.groupWith(x, y, z).collect())]
    assert out == [("a", ([5], [1], [2], [])), ("b", ([6], [4], [], [42]))]


# -- partitioning ------------------------------------------------------------------------------------


def test_partition_by(any_ctx):
    pairs = any_ctx.parallelize([1, 2, 3, 4, 2, 4, 1]).map(lambda x: (x, x))
    sets = pairs.partitionBy(2).glom().collect()
    assert len(set(sets[0]).intersection(set(sets[1]))) == 0
    assert sorted(sets[0] + sets[1]) == [(1, 1), (1, 1), (2, 2), (2, 2), (3, 3), (4, 4), (4, 4)]


def test_partition_by_hash_puts_int_keys_by_modulo(ctx):
    # portable_hash(int) is the int itself, as in PySpark
    parts = ctx.parallelize([(i, None) for i in range(6)], 2).partitionBy(3).glom().collect()
    assert [sorted(k for k, _ in p) for p in parts] == [[0, 3], [1, 4], [2, 5]]


def test_partition_by_custom_function_and_noop_when_already_partitioned(ctx):
    rdd = ctx.parallelize([("a", 1), ("bb", 2), ("ccc", 3)], 1)
    by_len = rdd.partitionBy(3, len)
    assert by_len.glom().collect() == [[("ccc", 3)], [("a", 1)], [("bb", 2)]]
    hashed = rdd.partitionBy(2)
    assert hashed.partitionBy(2) is hashed
    assert hashed.partitionBy(3) is not hashed


def test_partition_by_same_string_key_same_partition_in_every_process(pctx):
    # str hashes are salted per process; the partitioner must not depend on that
    data = [(w, i) for i, w in enumerate(["spark", "arrow", "stream", "dask"] * 5)]
    parts = pctx.parallelize(data, 4).partitionBy(3).glom().collect()
    where = {}
    for i, p in enumerate(parts):
        for k, _ in p:
            where.setdefault(k, set()).add(i)
    assert all(len(s) == 1 for s in where.values()) and len(where) == 4


# -- sorting -----------------------------------------------------------------------------------------

TMP = [("a", 1), ("b", 2), ("1", 3), ("d", 4), ("2", 5)]


def test_sort_by_key(any_ctx):
    assert any_ctx.parallelize(TMP).sortByKey().first() == ("1", 3)
    expected = [("1", 3), ("2", 5), ("a", 1), ("b", 2), ("d", 4)]
    assert any_ctx.parallelize(TMP).sortByKey(True, 1).collect() == expected
    assert any_ctx.parallelize(TMP).sortByKey(True, 2).collect() == expected


def test_sort_by_key_keyfunc(ctx):
    tmp2 = [("Mary", 1), ("had", 2), ("a", 3), ("little", 4), ("lamb", 5),
            ("whose", 6), ("fleece", 7), ("was", 8), ("white", 9)]
    assert ctx.parallelize(tmp2).sortByKey(True, 3, keyfunc=lambda k: k.lower()).collect() == [
        ("a", 3), ("fleece", 7), ("had", 2), ("lamb", 5), ("little", 4), ("Mary", 1), ("was", 8),
        ("white", 9), ("whose", 6)]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sort_by_key_descending(ctx, n):
    data = [(i * 7 % 31, i) for i in range(31)]
    out = ctx.parallelize(data, 3).sortByKey(False, n).collect()
    assert [k for k, _ in out] == sorted((k for k, _ in data), reverse=True)


def test_sort_by_key_partitions_are_ranges(ctx):
    out = ctx.parallelize([(i, None) for i in range(100)][::-1], 4).sortByKey(True, 4).glom().collect()
    flat = [k for p in out for k, _ in p]
    assert flat == list(range(100))
    assert sum(1 for p in out if p) >= 2


def test_sort_by_key_of_empty_rdd(ctx):
    assert ctx.parallelize([], 2).sortByKey().collect() == []
