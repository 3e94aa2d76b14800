"""RDD basics: Context.parallelize/textFile/union/emptyRDD, narrow transformations and actions.

Expected values are PySpark's docstring examples (python/pyspark/rdd.py, context.py) where they exist.
"""
from __future__ import annotations

import operator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dstream.executors.base import TaskError

# -- Context.parallelize -----------------------------------------------------------------------------


def test_parallelize_glom_docstring_examples(ctx):
    assert ctx.parallelize([0, 2, 3, 4, 6], 5).glom().collect() == [[0], [2], [3], [4], [6]]
    assert ctx.parallelize(range(0, 6, 2), 5).glom().collect() == [[], [0], [], [2], [4]]
    assert ctx.parallelize([1, 2, 3, 4, 5, 6, 7], 4).glom().collect() == [[1], [2, 3], [4, 5], [6, 7]]
    assert ctx.parallelize([1, 2, 3, 4, 5], 3).glom().collect() == [[1], [2, 3], [4, 5]]


@pytest.mark.parametrize("length,n", [(10, 3), (7, 4), (3, 5), (100, 7), (0, 3)])
def test_parallelize_slices_contiguously_like_spark(ctx, length, n):
    # Spark's ParallelCollectionRDD.slice: slice i is [i*len/n, (i+1)*len/n)
    expected = [list(range(i * length // n, (i + 1) * length // n)) for i in range(n)]
    assert ctx.parallelize(list(range(length)), n).glom().collect() == expected
    assert ctx.parallelize(range(length), n).glom().collect() == expected
    assert ctx.parallelize(iter(range(length)), n).glom().collect() == expected


def test_parallelize_arrow_table_keeps_columns(ctx):
    table = pa.table({"key": ["a", "b", "c"], "value": [1, 2, 3]})
    rdd = ctx.parallelize(table, 2)
    assert rdd.glom().collect() == [[("a", 1)], [("b", 2), ("c", 3)]]
    assert rdd.toArrow().equals(table)


def test_parallelize_default_slices_is_default_parallelism(ctx):
    assert ctx.parallelize([1, 2, 3, 4]).getNumPartitions() == ctx.defaultParallelism == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_parallelize_bad_num_slices_names_the_parameter(ctx, bad):
    with pytest.raises(ValueError, match="numSlices"):
        ctx.parallelize([1, 2], bad)


def test_empty_rdd(ctx):
    rdd = ctx.emptyRDD()
    assert rdd.collect() == []
    assert rdd.count() == 0
    assert rdd.isEmpty()
    assert rdd.getNumPartitions() == 0
    assert rdd.map(lambda x: x + 1).collect() == []


def test_context_union(any_ctx):
    a = any_ctx.parallelize([1, 2], 2)
    b = any_ctx.parallelize(["x"], 1)
    u = any_ctx.union([a, b, a])
    assert u.getNumPartitions() == 5
    assert u.collect() == [1, 2, "x", 1, 2]
    assert any_ctx.union([]).collect() == []


# -- narrow transformations --------------------------------------------------------------------------


def test_map_flatmap_filter(any_ctx):
    rdd = any_ctx.parallelize(["b", "a", "c"])
    assert sorted(rdd.map(lambda x: (x, 1)).collect()) == [("a", 1), ("b", 1), ("c", 1)]
    rdd = any_ctx.parallelize([2, 3, 4])
    assert sorted(rdd.flatMap(lambda x: range(1, x)).collect()) == [1, 1, 1, 2, 2, 3]
    assert sorted(rdd.flatMap(lambda x: [(x, x), (x, x)]).collect()) == [
        (2, 2), (2, 2), (3, 3), (3, 3), (4, 4), (4, 4)]
    assert any_ctx.parallelize([1, 2, 3, 4, 5]).filter(lambda x: x % 2 == 0).collect() == [2, 4]


def test_map_keeps_order_within_and_across_partitions(ctx):
    assert ctx.parallelize(range(10), 3).map(lambda x: x * 10).collect() == [x * 10 for x in range(10)]


def test_chained_narrow_ops_fuse_into_one_rdd(ctx):
    rdd = ctx.parallelize(range(10), 2).map(lambda x: x + 1).filter(lambda x: x % 2).flatMap(lambda x: [x, -x])
    assert len(rdd.toDebugString().splitlines()) == 2  # the pipelined RDD and its source
    assert rdd.collect() == [1, -1, 3, -3, 5, -5, 7, -7, 9, -9]


def test_map_partitions_and_with_index(any_ctx):
    rdd = any_ctx.parallelize([1, 2, 3, 4], 2)

    def f(iterator):
        yield sum(iterator)

    assert rdd.mapPartitions(f).collect() == [3, 7]

    def g(split_index, iterator):
        yield split_index

    assert any_ctx.parallelize([1, 2, 3, 4], 4).mapPartitionsWithIndex(g).sum() == 6
    assert rdd.mapPartitionsWithIndex(lambda i, it: [(i, x) for x in it]).collect() == [
        (0, 1), (0, 2), (1, 3), (1, 4)]


def test_glom(ctx):
    assert ctx.parallelize([1, 2, 3, 4], 2).glom().collect() == [[1, 2], [3, 4]]
    assert ctx.parallelize([], 2).glom().collect() == [[], []]


def test_union_and_add(ctx):
    rdd = ctx.parallelize([1, 1, 2, 3])
    assert rdd.union(rdd).collect() == [1, 1, 2, 3, 1, 1, 2, 3]
    assert (rdd + rdd).collect() == [1, 1, 2, 3, 1, 1, 2, 3]
    assert rdd.union(rdd).getNumPartitions() == 2 * rdd.getNumPartitions()


def test_cartesian(any_ctx):
    rdd = any_ctx.parallelize([1, 2])
    assert sorted(rdd.cartesian(rdd).collect()) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    other = any_ctx.parallelize(["a", "b", "c"], 2)
    assert rdd.cartesian(other).getNumPartitions() == 4
    assert sorted(rdd.cartesian(other).collect()) == [(x, y) for x in [1, 2] for y in "abc"]


def test_distinct(any_ctx):
    assert sorted(any_ctx.parallelize([1, 1, 2, 3]).distinct().collect()) == [1, 2, 3]
    rdd = any_ctx.parallelize(["a", "b", "a", None, None, (1, 2), (1, 2)], 3).distinct(2)
    assert rdd.getNumPartitions() == 2
    assert sorted(rdd.collect(), key=repr) == sorted(["a", "b", None, (1, 2)], key=repr)


# -- repartitioning ----------------------------------------------------------------------------------


def test_coalesce(ctx):
    assert ctx.parallelize([1, 2, 3, 4, 5], 3).coalesce(1).glom().collect() == [[1, 2, 3, 4, 5]]
    rdd = ctx.parallelize(range(8), 4).coalesce(2)
    assert rdd.glom().collect() == [[0, 1, 2, 3], [4, 5, 6, 7]]  # contiguous, no shuffle
    assert ctx.parallelize(range(4), 2).coalesce(5).getNumPartitions() == 2  # never more without shuffle
    assert ctx.parallelize(range(4), 2).coalesce(5, shuffle=True).getNumPartitions() == 5


def test_repartition(any_ctx):
    rdd = any_ctx.parallelize([1, 2, 3, 4, 5, 6, 7], 4)
    assert len(rdd.repartition(2).glom().collect()) == 2
    assert len(rdd.repartition(10).glom().collect()) == 10
    assert sorted(rdd.repartition(3).collect()) == [1, 2, 3, 4, 5, 6, 7]


def test_repartition_spreads_records(ctx):
    sizes = [len(p) for p in ctx.parallelize(range(1000), 1).repartition(4).glom().collect()]
    assert sum(sizes) == 1000 and min(sizes) > 200


@pytest.mark.parametrize("op", [
    lambda r, n: r.coalesce(n), lambda r, n: r.repartition(n), lambda r, n: r.reduceByKey(operator.add, n),
    lambda r, n: r.groupByKey(n), lambda r, n: r.partitionBy(n), lambda r, n: r.sortByKey(True, n),
    lambda r, n: r.distinct(n), lambda r, n: r.join(r, n),
])
@pytest.mark.parametrize("bad", [0, -2, 2.5, "3"])
def test_bad_num_partitions_names_the_parameter(ctx, op, bad):
    rdd = ctx.parallelize([(1, 2)])
    with pytest.raises(ValueError, match="numPartitions"):
        op(rdd, bad)


# -- sorting -----------------------------------------------------------------------------------------

TMP = [("a", 1), ("b", 2), ("1", 3), ("d", 4), ("2", 5)]


def test_sort_by(any_ctx):
    assert any_ctx.parallelize(TMP).sortBy(lambda x: x[0]).collect() == [
        ("1", 3), ("2", 5), ("a", 1), ("b", 2), ("d", 4)]
    assert any_ctx.parallelize(TMP).sortBy(lambda x: x[1]).collect() == [
        ("a", 1), ("b", 2), ("1", 3), ("d", 4), ("2", 5)]


def test_sort_by_descending_many_partitions(ctx):
    import random
    data = list(range(500))
    random.Random(3).shuffle(data)
    rdd = ctx.parallelize(data, 5).sortBy(lambda x: x, ascending=False, numPartitions=4)
    assert rdd.getNumPartitions() == 4
    assert rdd.collect() == sorted(data, reverse=True)


# -- actions -----------------------------------------------------------------------------------------


def test_count_take_first(any_ctx):
    assert any_ctx.parallelize([2, 3, 4]).count() == 3
    assert any_ctx.parallelize([2, 3, 4, 5, 6]).cache().take(2) == [2, 3]
    assert any_ctx.parallelize([2, 3, 4, 5, 6]).take(10) == [2, 3, 4, 5, 6]
    assert any_ctx.parallelize(range(100), 100).filter(lambda x: x > 90).take(3) == [91, 92, 93]
    assert any_ctx.parallelize([2, 3, 4]).first() == 2


def test_take_zero_and_from_empty(ctx):
    assert ctx.parallelize([1, 2, 3]).take(0) == []
    assert ctx.parallelize([], 3).take(5) == []


def test_take_scans_only_the_partitions_it_needs(ctx):
    seen = []

    def mark(i, it):
        seen.append(i)
        return it

    assert ctx.parallelize(range(100), 10).mapPartitionsWithIndex(mark).take(3) == [0, 1, 2]
    assert seen == [0]


def test_first_of_empty_raises_value_error(any_ctx):
    with pytest.raises(ValueError, match="RDD is empty"):
        any_ctx.parallelize([]).first()
    with pytest.raises(ValueError, match="RDD is empty"):
        any_ctx.parallelize([1, 2], 2).filter(lambda x: x > 5).first()


def test_reduce(any_ctx):
    assert any_ctx.parallelize([1, 2, 3, 4, 5]).reduce(operator.add) == 15
    assert any_ctx.parallelize((2 for _ in range(10))).map(lambda x: 1).cache().reduce(operator.add) == 10
    # partitions that are empty are skipped, not folded in as None
    assert any_ctx.parallelize([7], 4).reduce(operator.add) == 7


def test_reduce_of_empty_raises_value_error(ctx):
    with pytest.raises(ValueError, match=r"Can not reduce\(\) empty RDD"):
        ctx.parallelize([]).reduce(operator.add)
    with pytest.raises(ValueError, match="empty"):
        ctx.emptyRDD().reduce(operator.add)


def test_fold(any_ctx):
    assert any_ctx.parallelize([1, 2, 3, 4, 5]).fold(0, operator.add) == 15
    assert any_ctx.parallelize([], 3).fold(0, operator.add) == 0
    # PySpark applies the zero value once per partition and once more on the driver
    assert any_ctx.parallelize([1, 2, 3], 3).fold(10, operator.add) == 46


def test_fold_does_not_share_a_mutable_zero_between_partitions(ctx):
    def add_to(acc, x):  # mutates the accumulator, as PySpark allows
        acc.extend(x if isinstance(x, list) else [x])
        return acc

    assert sorted(ctx.parallelize([1, 2, 3], 3).fold([], add_to)) == [1, 2, 3]


def test_is_empty_and_num_partitions(any_ctx):
    assert any_ctx.parallelize([]).isEmpty()
    assert not any_ctx.parallelize([1]).isEmpty()
    assert any_ctx.parallelize([1, 2], 4).filter(lambda x: x > 1).isEmpty() is False
    assert any_ctx.parallelize([1, 2, 3, 4], 2).getNumPartitions() == 2


def test_foreach_and_foreach_partition_run_on_executors(any_ctx, tmp_path):
    def touch(x):
        (tmp_path / f"rec-{x}").write_text(str(x))

    any_ctx.parallelize([1, 2, 3, 4, 5], 2).foreach(touch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"rec-{i}" for i in range(1, 6)]

    def write_part(it):
        items = list(it)
        (tmp_path / f"part-{items[0]}").write_text(",".join(map(str, items)))

    any_ctx.parallelize([1, 2, 3, 4], 2).foreachPartition(write_part)
    assert (tmp_path / "part-1").read_text() == "1,2"
    assert (tmp_path / "part-3").read_text() == "3,4"


def test_user_function_error_names_the_function(ctx):
    def boom(x):
        raise KeyError("no such thing")

    with pytest.raises(TaskError, match="boom"):
        ctx.parallelize([1]).map(boom).collect()


# -- output ------------------------------------------------------------------------------------------


def test_save_as_text_file(any_ctx, tmp_path):
    out = tmp_path / "out"
    any_ctx.parallelize(range(10)).saveAsTextFile(str(out))
    parts = sorted(out.glob("part-0000*"))
    assert "".join(sorted(line for p in parts for line in p.read_text().splitlines(True))) == \
        "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n"
    assert (out / "_SUCCESS").exists()


def test_save_as_text_file_keeps_empty_lines(ctx, tmp_path):
    out = tmp_path / "out"
    ctx.parallelize(["", "foo", "", "bar", ""]).saveAsTextFile(str(out))
    lines = [line for p in sorted(out.glob("part-*")) for line in p.read_text().splitlines(True)]
    assert "".join(sorted(lines)) == "\n\n\nbar\nfoo\n"


def test_save_as_text_file_writes_bytes_records_as_they_are(ctx, tmp_path):
    out = tmp_path / "out"
    ctx.parallelize([b"raw \xff", "text", 3], 1).saveAsTextFile(str(out))
    assert (out / "part-00000").read_bytes() == b"raw \xff\ntext\n3\n"


def test_save_as_text_file_refuses_existing_output(ctx, tmp_path):
    out = tmp_path / "out"
    ctx.parallelize([1]).saveAsTextFile(str(out))
    with pytest.raises(FileExistsError):
        ctx.parallelize([2]).saveAsTextFile(str(out))


def test_save_as_text_file_then_text_file_round_trip(ctx, tmp_path):
    out = tmp_path / "out"
    ctx.parallelize([(1, "a"), None, "x"], 2).saveAsTextFile(str(out))
    assert ctx.textFile(str(out)).collect() == ["(1, 'a')", "None", "x"]


# -- textFile ----------------------------------------------------------------------------------------


def test_text_file_reads_a_file(any_ctx, tmp_path):
    path = tmp_path / "hello.txt"
    path.write_text("Hello world!")
    assert any_ctx.textFile(str(path)).collect() == ["Hello world!"]


def test_text_file_line_endings(ctx, tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\r\n\r\nc\rd\n")
    assert ctx.textFile(str(path)).collect() == ["a", "b", "", "c", "d"]


def test_text_file_directory_and_glob(ctx, tmp_path):
    (tmp_path / "a.txt").write_text("1\n2\n")
    (tmp_path / "b.txt").write_text("3\n")
    (tmp_path / "c.log").write_text("4\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden").write_text("secret\n")
    assert sorted(ctx.textFile(str(tmp_path)).collect()) == ["1", "2", "3", "4"]
    assert sorted(ctx.textFile(str(tmp_path / "*.txt")).collect()) == ["1", "2", "3"]
    assert ctx.textFile(f"{tmp_path / 'a.txt'},{tmp_path / 'c.log'}").collect() == ["1", "2", "4"]


def test_text_file_skips_hidden_directories_and_reads_subdirectories(ctx, tmp_path):
    (tmp_path / "a.txt").write_text("1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("2\n")
    (tmp_path / "_temporary" / "0").mkdir(parents=True)
    (tmp_path / "_temporary" / "0" / "part-00000").write_text("half-written\n")
    (tmp_path / "sub" / ".b.txt.crc").write_text("crc\n")
    assert sorted(ctx.textFile(str(tmp_path)).collect()) == ["1", "2"]
    assert sorted(ctx.textFile(str(tmp_path / "*")).collect()) == ["1", "2"]


def test_text_file_glob_matching_nothing_names_the_pattern(ctx, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"\*\.csv"):
        ctx.textFile(str(tmp_path / "*.csv"))


def test_text_file_on_an_fsspec_url(ctx):
    import fsspec
    fs = fsspec.filesystem("memory")
    fs.pipe("/dstream-test-textfile/x.txt", b"m1\nm2\n")
    try:
        assert ctx.textFile("memory://dstream-test-textfile").collect() == ["m1", "m2"]
        assert ctx.textFile("memory://dstream-test-textfile/*.txt").collect() == ["m1", "m2"]
    finally:
        fs.rm("/dstream-test-textfile", recursive=True)


def test_text_file_min_partitions(ctx, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"{i}\n" for i in range(10)))
    rdd = ctx.textFile(str(path), minPartitions=3)
    assert rdd.getNumPartitions() >= 3
    assert rdd.collect() == [str(i) for i in range(10)]


def test_text_file_and_parallelize_union(ctx, tmp_path):
    path = tmp_path / "union.txt"
    path.write_text("Hello")
    assert sorted(ctx.union([ctx.textFile(str(path)), ctx.parallelize(["World!"])]).collect()) == [
        "Hello", "World!"]


def test_text_file_missing_names_the_path(ctx, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ctx.textFile(str(tmp_path / "nope"))


def test_text_file_undecodable_names_the_file(any_ctx, tmp_path):
    (tmp_path / "good.txt").write_text("fine\n")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(Exception, match="bad.txt") as info:
        any_ctx.textFile(str(tmp_path)).collect()
    assert "good.txt" not in str(info.value)


# -- columnar API ------------------------------------------------------------------------------------


def test_map_in_arrow(any_ctx):
    def double(batches):
        for b in batches:
            yield pa.RecordBatch.from_arrays([pc.multiply(b.column(0), 2)], names=["value"])

    rdd = any_ctx.parallelize([1, 2, 3, 4], 2).mapInArrow(double)
    assert rdd.collect() == [2, 4, 6, 8]
    assert rdd.toArrow().schema.field("value").type == pa.int64()


def test_map_in_arrow_words_then_reduce_by_key(ctx):
    def words(batches):
        for b in batches:
            split = pc.list_flatten(pc.split_pattern(b.column(0), " "))
            yield pa.RecordBatch.from_arrays([split, pa.array([1] * len(split))], names=["key", "value"])

    out = ctx.parallelize(["a b", "b c", "c c"], 2).mapInArrow(words).reduceByKey(operator.add)
    assert sorted(out.collect()) == [("a", 1), ("b", 2), ("c", 3)]


def test_map_in_arrow_must_yield_batches(ctx):
    def bad(batches):
        for b in batches:
            yield b.to_pylist()

    with pytest.raises(TaskError, match="bad.*RecordBatch"):
        ctx.parallelize([1, 2]).mapInArrow(bad).collect()


def test_map_in_pandas(any_ctx):
    def add_col(frames):
        for df in frames:
            yield df.assign(sq=df["value"] ** 2)

    rdd = any_ctx.parallelize([1, 2, 3], 2).mapInPandas(add_col)
    assert rdd.collect() == [(1, 1), (2, 4), (3, 9)]
    assert rdd.toPandas().to_dict("list") == {"value": [1, 2, 3], "sq": [1, 4, 9]}


def test_map_in_pandas_sees_python_objects_of_pickled_columns(ctx):
    def lengths(frames):
        for df in frames:
            yield pd.DataFrame({"n": [len(v) for v in df["value"]]})

    assert ctx.parallelize([(1, 2, 3), [4], {5: 6, 7: 8}]).mapInPandas(lengths).collect() == [3, 1, 2]


def test_to_arrow_and_to_pandas(ctx):
    rdd = ctx.parallelize([("a", 1), ("b", 2), ("c", 3)], 2)
    table = rdd.toArrow()
    assert table.column_names == ["key", "value"]
    assert table.to_pydict() == {"key": ["a", "b", "c"], "value": [1, 2, 3]}
    df = rdd.toPandas()
    assert list(df.columns) == ["key", "value"]
    assert df["value"].tolist() == [1, 2, 3]
    objs = ctx.parallelize([{"a": 1}, [2]]).toPandas()
    assert objs["value"].tolist() == [{"a": 1}, [2]]
    assert ctx.emptyRDD().toArrow().num_rows == 0


@pytest.mark.parametrize("apply,what", [
    (lambda r, f: r.mapPartitions(f), "mapPartitions"),
    (lambda r, f: r.mapPartitionsWithIndex(lambda i, it: f(it)), "mapPartitionsWithIndex"),
    (lambda r, f: r.mapInArrow(f), "mapInArrow"),
    (lambda r, f: r.mapInPandas(f), "mapInPandas"),
])
def test_partition_function_returning_none_is_named(ctx, apply, what):
    def forgot_to_return(it):
        for _ in it:
            pass

    pattern = rf"TypeError: {what}\(.*(forgot_to_return|lambda).* must return an iterable"
    with pytest.raises(TaskError, match=pattern):
        apply(ctx.parallelize([1, 2]), forgot_to_return).collect()
