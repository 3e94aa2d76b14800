"""Records: every Python record round-trips unchanged; typed data stays typed; the Arrow fast path of the
shuffle reductions gives exactly the answers of the Python row path."""
from __future__ import annotations

import math
import operator
import random
from collections import Counter

import pyarrow as pa
import pytest

import dstream.shuffle
from dstream.records import PICKLED_KEY, is_pickled, to_rows, to_table
from dstream.executors.base import TaskError


class Point:
    """A user class defined in the test module (pickled by reference to this module)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def same(a, b) -> bool:
    """Equal, of exactly the same types all the way down, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


RECORDS = {
    "tuples": [(1, 2), (1, 2, 3), (), (1,), ((1, 2), [3, (4,)])],
    "none": [None, None, 1, None],
    "nested lists": [[1, [2, [3, []]]], [], [[]]],
    "dicts": [{"a": 1, "b": [2, 3]}, {}, {(1, 2): None}],
    "sets": [{1, 2, 3}, set(), frozenset({"a"})],
    "custom class": [Point(1, 2), Point("a", None)],
    "big ints": [2 ** 64, -(2 ** 70), 2 ** 63, 2 ** 63 - 1, -(2 ** 63)],
    "mixed scalars": [1, 2.5, "three", b"four", None, True],
    "bools vs ints": [True, 1, False, 0],
    "bools only": [True, False, None],
    "bytes": [b"", b"\x00\xff", b"abc"],
    "floats": [float("nan"), float("inf"), -0.0, 0.0, 1e308],
    "strings": ["", "ünïcødé", "a\nb", "\x00"],
    "undecodable file names": [b"caf\xe9".decode("utf-8", "surrogateescape"), "ok"],
    "pairs and non-pairs": [("k", 1), "x", ("k", None), (None, None)],
    "pairs of objects": [("a", [1]), ((1, 2), {"x": 1}), (Point(0, 0), None)],
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_records_round_trip_through_parallelize_collect(any_ctx, name):
    data = RECORDS[name]
    for n in (1, 2):
        out = any_ctx.parallelize(data, n).collect()
        assert same(out, data), (name, out)


@pytest.mark.parametrize("name", list(RECORDS))
def test_records_round_trip_through_a_shuffle(any_ctx, name):
    data = RECORDS[name]
    # as values: every record comes back from its key's group, in order
    grouped = any_ctx.parallelize(list(enumerate(data)), 2).groupByKey(3).mapValues(list).collect()
    assert same([v[0] for _, v in sorted(grouped, key=operator.itemgetter(0))], data)
    # as keys (hashable ones) of a partitionBy: the records and their types survive the buckets
    if all(_hashable(x) for x in data):
        keyed = any_ctx.parallelize([(x, i) for i, x in enumerate(data)], 2).partitionBy(3).collect()
        assert same([k for k, _ in sorted(keyed, key=operator.itemgetter(1))], data)


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def test_records_survive_map_and_filter_after_a_shuffle(ctx):
    data = RECORDS["mixed scalars"]
    out = ctx.parallelize(list(enumerate(data)), 2).partitionBy(2).values().filter(lambda x: True).collect()
    assert sorted(map(repr, out)) == sorted(map(repr, data))


# -- typed columns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data,arrow_type", [
    ([1, 2, None], pa.int64()),
    ([1.5, None, float("nan")], pa.float64()),
    (["a", None, "c"], pa.string()),
    ([b"a", b"b"], pa.binary()),
    ([True, None, False], pa.bool_()),
])
def test_homogeneous_data_is_typed(any_ctx, data, arrow_type):
    table = any_ctx.parallelize(data, 2).toArrow()
    field = table.schema.field("value")
    assert field.type == arrow_type and not is_pickled(field)
    assert same(table.column("value").to_pylist(), data)


@pytest.mark.parametrize("data", [
    [1, "a"], [1, 2.0], [True, 1], [2 ** 64], [(1, 2, 3)], [[1]], [{"a": 1}], [Point(1, 2)], [{1}],
])
def test_other_data_is_pickled_binary_with_metadata(ctx, data):
    table = ctx.parallelize(data, 1).toArrow()
    field = table.schema.field("value")
    assert field.type == pa.binary()
    assert field.metadata[PICKLED_KEY] == b"1"
    assert same(to_rows(table), data)


def test_pairs_become_key_value_columns_typed_separately(ctx):
    table = ctx.parallelize([("a", 1), ("b", None)], 1).toArrow()
    assert table.column_names == ["key", "value"]
    assert table.schema.field("key").type == pa.string()
    assert table.schema.field("value").type == pa.int64()
    table = ctx.parallelize([("a", [1]), ("b", 2)], 1).toArrow()
    assert table.schema.field("key").type == pa.string()
    assert is_pickled(table.schema.field("value"))


def test_results_of_python_functions_are_typed_again(any_ctx):
    table = any_ctx.parallelize([1, 2, 3], 2).map(lambda x: str(x * 2)).toArrow()
    assert table.schema.field("value").type == pa.string()
    counts = any_ctx.parallelize(["a", "b", "a"], 2).map(lambda w: (w, 1)).reduceByKey(operator.add).toArrow()
    assert counts.schema.types == [pa.string(), pa.int64()]


def test_all_none_partition_round_trips(ctx):
    assert ctx.parallelize([None, None, None], 2).collect() == [None, None, None]
    assert to_rows(to_table([None])) == [None]


def test_partitions_typed_differently_concatenate(ctx):
    # one partition typed int64, the other pickled: toArrow re-encodes rather than failing
    rdd = ctx.parallelize([1, 2, "x", 2 ** 70], 2)
    assert same(rdd.coalesce(1).collect(), [1, 2, "x", 2 ** 70])
    assert same(to_rows(rdd.toArrow()), [1, 2, "x", 2 ** 70])


# -- keys of mixed types -----------------------------------------------------------------------------

MIXED_KEYS = [1, "1", (1,), b"1", 1.5, None, (1, "1"), 2 ** 65, -7, "", ()]


def test_keys_of_mixed_types_group_correctly(any_ctx):
    data = [(k, i) for i in range(3) for k in MIXED_KEYS]
    groups = any_ctx.parallelize(data, 3).groupByKey(4).mapValues(sorted).collect()
    assert len(groups) == len(MIXED_KEYS)
    assert {repr(k): v for k, v in groups} == {repr(k): [0, 1, 2] for k in MIXED_KEYS}
    assert all(any(same(k, m) for m in MIXED_KEYS) for k, _ in groups)


def test_same_key_typed_in_one_partition_and_pickled_in_another_meets(any_ctx):
    # partition 0: typed key column; partition 1: pickled keys (the tuple forces pickling)
    typed_ints = [(5, 1), (6, 1), (None, 1)]
    mixed_ints = [(5, 10), ((0,), 10), (6, 10), (None, 10)]
    typed_strs = [("a", 1), ("b", 1)]
    mixed_strs = [("a", 10), (b"a", 10), ("b", 10)]
    for part0, part1 in [(typed_ints, mixed_ints), (typed_strs, mixed_strs)]:
        rdd = any_ctx.parallelize(part0 + part1, 2)
        assert rdd.glom().count() == 2
        for n in (1, 2, 3, 7):
            out = rdd.reduceByKey(operator.add, n).collect()
            assert sorted(out, key=repr) == sorted(_py_reduce(part0 + part1, operator.add).items(), key=repr)


def test_arrow_keys_of_other_int_types_meet_python_keys(ctx):
    # tables made in Arrow (parallelize of a table, mapInArrow) may carry uint64 or int8 keys
    big = 2 ** 64 - 1
    typed = ctx.parallelize(pa.table({"key": pa.array([big, 5, 2 ** 63 + 1], pa.uint64()), "value": [1, 1, 1]}), 1)
    pickled = ctx.parallelize([(big, 10), (5, 10), (2 ** 63 + 1, 10), ((0,), 10)], 1)
    out = ctx.union([typed, pickled]).reduceByKey(operator.add, 7).collect()
    assert sorted(out, key=repr) == sorted([(big, 11), (5, 11), (2 ** 63 + 1, 11), ((0,), 10)], key=repr)
    small = ctx.parallelize(pa.table({"key": pa.array([-5, 127, -5], pa.int8()), "value": [1, 2, 3]}), 2)
    parts = small.partitionBy(130).glom().collect()
    assert parts[127] == [(127, 2)] and sorted(parts[-5 % 130]) == [(-5, 1), (-5, 3)]


def _py_reduce(pairs, func) -> dict:
    out: dict = {}
    for k, v in pairs:
        out[k] = func(out[k], v) if k in out else v
    return out


# -- the Arrow fast path gives exactly the row path's answers ----------------------------------------

KEY_POOL = [None, 0, 1, 2, -3, 10 ** 6, "a", "b", "", "ü", 2.5]
PICKLING_KEYS = [(1, 2), 2 ** 64, b"raw"]


def _random_partition(rng: random.Random, kind: str) -> list:
    # small partitions take the dict path, those over shuffle.SMALL_TABLE_ROWS Arrow's group-by
    n = rng.choice([rng.randrange(0, 40), rng.randrange(300, 500)])
    if kind == "int keys":
        keys = [rng.choice([None, 0, 1, 2, -3, 10 ** 6]) for _ in range(n)]
    elif kind == "str keys":
        keys = [rng.choice([None, "a", "b", "", "ü"]) for _ in range(n)]
    else:  # mixed keys: pickled
        keys = [rng.choice(KEY_POOL + PICKLING_KEYS) for _ in range(n)]
    value_kind = rng.choice(["int", "big int", "float", "mixed"])
    values = []
    for _ in range(n):
        if value_kind == "int":
            values.append(rng.randint(-100, 100))
        elif value_kind == "big int":  # sums overflow int64
            values.append(rng.randint(2 ** 61, 2 ** 63 - 1) * rng.choice([1, -1]))
        elif value_kind == "float":
            values.append(rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 1e-9, 0.1, -0.0, 0.0]))
        else:
            values.append(rng.choice([rng.randint(-5, 5), rng.uniform(-5, 5)]))
    return list(zip(keys, values))


def _random_rdd(ctx, seed: int):
    rng = random.Random(seed)
    kinds = [rng.choice(["int keys", "str keys", "mixed keys"]) for _ in range(rng.randrange(1, 6))]
    parts = [_random_partition(rng, k) for k in kinds]
    rdds = [ctx.parallelize(p, 1) for p in parts]
    return ctx.union(rdds), [kv for p in parts for kv in p]


FAST = {"add": (operator.add, lambda a, b: a + b), "min": (min, lambda a, b: min(a, b)),
        "max": (max, lambda a, b: max(a, b))}


@pytest.mark.parametrize("op", list(FAST))
def test_arrow_reduce_by_key_equals_row_path(ctx, op):
    fast, slow = FAST[op]
    for seed in range(40):
        rdd, data = _random_rdd(ctx, seed)
        for n in (1, 3):
            got = rdd.reduceByKey(fast, n).collect()
            want = rdd.reduceByKey(slow, n).collect()
            assert same(sorted(got, key=repr), sorted(want, key=repr)), (op, seed, n)
        if op == "add" and all(isinstance(v, int) for _, v in data):
            assert dict(rdd.reduceByKey(fast).collect()) == _py_reduce(data, operator.add)


def test_arrow_reduce_by_key_equals_row_path_on_processes(pctx):
    for seed in range(3):
        rdd, _ = _random_rdd(pctx, seed)
        for fast, slow in FAST.values():
            got = sorted(rdd.reduceByKey(fast, 2).collect(), key=repr)
            assert same(got, sorted(rdd.reduceByKey(slow, 2).collect(), key=repr))


def test_arrow_path_is_taken_for_typed_data(ctx, monkeypatch):
    calls = []
    real = dstream.shuffle.arrow_combine
    monkeypatch.setattr(dstream.shuffle, "arrow_combine", lambda t, op: calls.append(op) or real(t, op))
    n = dstream.shuffle.SMALL_TABLE_ROWS + 1  # smaller tables are combined with a dict (faster there)
    rdd = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)] * n, 1)
    assert sorted(rdd.reduceByKey(operator.add).collect()) == [("a", 4 * n), ("b", 2 * n)]
    assert calls and set(calls) == {"sum"}
    calls.clear()
    assert sorted(rdd.reduceByKey(lambda a, b: a + b).collect()) == [("a", 4 * n), ("b", 2 * n)]
    assert calls == []
    small = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 1)
    assert sorted(small.reduceByKey(operator.add).collect()) == [("a", 4), ("b", 2)]
    assert calls == []


def test_int64_sums_that_overflow_stay_exact(any_ctx):
    big = 2 ** 62
    rdd = any_ctx.parallelize([("a", big), ("a", big), ("a", big), ("b", 1)], 2)
    assert sorted(rdd.reduceByKey(operator.add).collect()) == [("a", 3 * big), ("b", 1)]
    assert sorted(any_ctx.parallelize([("a", -big)] * 3, 1).reduceByKey(operator.add).collect()) == [
        ("a", -3 * big)]


def test_none_values_fail_in_arrow_as_in_python(ctx):
    # Python's add/min of None and a number raises; the Arrow path must not silently skip nulls
    rdd = ctx.parallelize([("a", 1), ("a", None), ("b", None)], 1)
    for fast, slow in FAST.values():
        for f in (fast, slow):
            with pytest.raises(TaskError, match="TypeError"):
                rdd.reduceByKey(f).collect()
    # a key whose only value is None keeps it
    assert ctx.parallelize([("a", None), ("b", 1)], 1).reduceByKey(operator.add).collectAsMap() == {
        "a": None, "b": 1}


def test_nan_and_signed_zero_values_as_in_python(ctx):
    nan = float("nan")
    data = [("a", 1.0), ("a", nan), ("a", 0.5), ("z", -0.0), ("y", 0.0), ("y", -0.0), ("x", -0.0), ("x", 0.0)]
    rdd = ctx.parallelize(data, 1)
    for fast, slow in FAST.values():
        got = sorted(rdd.reduceByKey(fast).collect())
        assert same(got, sorted(rdd.reduceByKey(slow).collect()))
        assert same(got, sorted(_py_reduce(data, slow).items()))


def test_float_keys_group_as_in_python(ctx):
    # Python: 0.0 == -0.0 is one key; each NaN is its own key
    rdd = ctx.parallelize([(0.0, 1), (-0.0, 1), (2.5, 1), (2.5, 1)], 1)
    assert sorted(rdd.reduceByKey(operator.add).collect()) == [(0.0, 2), (2.5, 2)]


def test_string_min_max(ctx):
    rdd = ctx.parallelize([("k", "b"), ("k", "ü"), ("k", "a"), ("j", "Z")], 2)
    assert sorted(rdd.reduceByKey(min).collect()) == [("j", "Z"), ("k", "a")]
    assert sorted(rdd.reduceByKey(max).collect()) == [("j", "Z"), ("k", "ü")]


def test_count_by_value_counts_typed_columns_in_arrow(ctx, monkeypatch):
    import dstream.rdd
    seen = []
    real = dstream.rdd.count_values

    def spy(part):
        out = real(part)
        seen.append(type(out))
        return out

    monkeypatch.setattr(dstream.rdd, "count_values", spy)
    assert dict(ctx.parallelize(["a", "b", "a", None], 2).countByValue()) == {"a": 2, "b": 1, None: 1}
    assert seen == [pa.Table, pa.Table]  # counted by Arrow: the per-partition counts are tables
    seen.clear()
    assert dict(ctx.parallelize([(1,), (1,), "x"], 1).countByValue()) == {(1,): 2, "x": 1}
    assert seen == [list]  # pickled records are counted in Python
    assert dict(ctx.parallelize([("x", 1), ("y", 2), ("x", 3)], 2).countByKey()) == {"x": 2, "y": 1}


def test_count_by_value_of_floats_as_in_python(ctx):
    nan = float("nan")
    counts = ctx.parallelize([0.0, -0.0, 1.5, 1.5, nan, nan], 1).countByValue()
    assert sorted((k, v) for k, v in counts.items() if k == k) == [(0.0, 2), (1.5, 2)]
    assert sorted(v for k, v in counts.items() if k != k) == [1, 1]  # each NaN is its own record


def test_count_by_value_equals_python_counter(any_ctx):
    for seed in range(5):
        rng = random.Random(seed)
        parts = []
        for _ in range(rng.randrange(1, 5)):
            pool = rng.choice([[None, 1, 2, 3], ["a", "b", None], KEY_POOL + PICKLING_KEYS])
            parts.append([rng.choice(pool) for _ in range(rng.randrange(0, 30))])
        rdd = any_ctx.union([any_ctx.parallelize(p, 1) for p in parts])
        data = [x for p in parts for x in p]
        assert dict(rdd.countByValue()) == dict(Counter(data))
        assert dict(rdd.map(lambda x: (x, 0)).countByKey()) == dict(Counter(data))
