"""SQL on each batch (``RDD.sql`` on DuckDB over Arrow) and the ``Row`` record type.

Spark's ``sql_network_wordcount.py`` turns each batch into a DataFrame and queries it; here
``words.transform(lambda rdd: rdd.sql(...))`` does it without a JVM.
"""
from __future__ import annotations

import operator
import pickle
import sys
from collections import Counter
from datetime import datetime

import cloudpickle
import pandas as pd
import pyarrow as pa
import pytest

from dstream import Row
from dstream.records import is_pickled, to_rows, to_table
from dstream.sql import INSTALL_HINT, SQLError
from dstream.testing import advance, collect

pytest.importorskip("duckdb")

WORDS = "to be or not to be that is the question to be".split()
COUNT_SQL = "SELECT value AS word, count(*) AS total FROM batch GROUP BY word ORDER BY word"


class Point:
    """A class Arrow cannot type: kept as pickles, passed through SQL unchanged."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


# -- Row ---------------------------------------------------------------------------------------------


def test_row_fields_by_attribute_name_and_position():
    row = Row(word="a", total=3)
    assert (row.word, row["word"], row[0], row.total, row["total"], row[1]) == ("a", "a", "a", 3, 3, 3)
    assert row[:1] == ("a",)
    word, total = row
    assert (word, total) == ("a", 3)
    assert row.asDict() == {"word": "a", "total": 3}
    assert "word" in row and "a" not in row
    with pytest.raises(AttributeError):
        row.missing
    with pytest.raises(KeyError):
        row["missing"]
    with pytest.raises(RuntimeError, match="read-only"):
        row.word = "b"


def test_row_prints_like_pyspark():
    assert repr(Row(word="a", total=3)) == "Row(word='a', total=3)"
    assert str(Row(word="a", total=3)) == "Row(word='a', total=3)"
    assert repr(Row("a", 3)) == "<Row('a', 3)>"


def test_row_equality_and_hash_are_the_tuple_s():
    assert Row(word="a", total=3) == ("a", 3) == Row(word="a", total=3)
    assert Row(word="a", total=3) != Row(word="a", total=4)
    assert hash(Row(word="a", total=3)) == hash(("a", 3))
    assert isinstance(Row(word="a"), tuple)


def test_row_class_builds_rows_as_in_pyspark():
    Person = Row("name", "age")
    alice = Person("Alice", 11)
    assert repr(alice) == "Row(name='Alice', age=11)"
    assert alice.name == "Alice" and alice.asDict() == {"name": "Alice", "age": 11}
    with pytest.raises(ValueError):
        Person("Alice", 11, "extra")
    with pytest.raises(TypeError):
        Row("a", 3).asDict()


def test_row_asDict_recursive():
    row = Row(a=Row(b=1), c=[Row(d=2)], e={"f": Row(g=3)})
    assert row.asDict(recursive=True) == {"a": {"b": 1}, "c": [{"d": 2}], "e": {"f": {"g": 3}}}
    assert isinstance(row.asDict()["a"], Row)


@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)])
def test_row_pickles(dumps, loads):
    for row in (Row(word="a", total=3), Row("a", 3), Row("name", "age")("Bob", 5)):
        back = loads(dumps(row))
        assert type(back) is Row and back == row and repr(back) == repr(row)
    assert loads(dumps(Row(word="a", total=3))).word == "a"


# -- Rows as records ----------------------------------------------------------------------------------


def test_rows_become_typed_columns_named_by_their_fields():
    rows = [Row(word="a", total=3), Row(word="b", total=None)]
    table = to_table(rows)
    assert table.column_names == ["word", "total"]
    assert table.schema.field("word").type == pa.string() and table.schema.field("total").type == pa.int64()
    back = to_rows(table)
    assert back == rows and all(type(r) is Row for r in back)
    assert [repr(r) for r in back] == ["Row(word='a', total=3)", "Row(word='b', total=None)"]


def test_any_other_table_is_a_stream_of_rows():
    out = to_rows(pa.table({"a": [1, 2], "b": ["x", "y"], "c": [1.5, None]}))
    assert out == [Row(a=1, b="x", c=1.5), Row(a=2, b="y", c=None)]
    assert all(type(r) is Row for r in out)
    # the two special shapes are unchanged: scalars, and (key, value) tuples
    assert to_rows(pa.table({"value": [1]})) == [1]
    assert [type(r) for r in to_rows(pa.table({"key": [1], "value": [2]}))] == [tuple]


def test_rows_with_untypable_values_keep_their_names_and_values():
    rows = [Row(name="p", where=Point(1, 2)), Row(name="q", where=(1, "x"))]
    table = to_table(rows)
    assert table.column_names == ["name", "where"] and is_pickled(table.schema.field("where"))
    assert not is_pickled(table.schema.field("name"))
    assert to_rows(table) == rows


@pytest.mark.parametrize("rows", [
    [Row(word="a", total=1), Row(total=2, word="b")],  # different fields
    [Row(value=1), Row(value=2)],  # one field: would read back as scalars
    [Row(key="a", value=1)],  # key/value: would read back as pairs
    [Row("a", 1), Row("b", 2)],  # no field names
    [Row(word="a", total=1), ("b", 2)],  # not all Rows
])
def test_rows_that_would_not_read_back_as_rows_are_pickled_whole(rows):
    back = to_rows(to_table(rows))
    assert back == rows and [type(r) for r in back] == [type(r) for r in rows]
    assert [repr(r) for r in back] == [repr(r) for r in rows]


def test_rows_round_trip_through_parallelize_and_a_shuffle(any_ctx):
    rows = [Row(word=w, n=i) for i, w in enumerate(WORDS)]
    assert any_ctx.parallelize(rows, 3).collect() == rows
    assert all(type(r) is Row for r in any_ctx.parallelize(rows, 3).collect())
    grouped = any_ctx.parallelize(rows, 3).map(lambda r: (r.word, r)).groupByKey(2).collectAsMap()
    assert grouped["be"] == [Row(word="be", n=1), Row(word="be", n=5), Row(word="be", n=11)]
    assert repr(grouped["be"][0]) == "Row(word='be', n=1)"


# -- RDD.sql --------------------------------------------------------------------------------------------


def test_sql_word_count_equals_counter(any_ctx):
    rdd = any_ctx.parallelize(WORDS, 3).sql(COUNT_SQL)
    assert dict(rdd.collect()) == dict(Counter(WORDS))
    assert rdd.getNumPartitions() == 1


def test_sql_result_is_rows_that_print_like_pyspark(any_ctx):
    out = any_ctx.parallelize(WORDS, 2).sql(COUNT_SQL + " LIMIT 2").collect()
    assert [repr(r) for r in out] == ["Row(word='be', total=3)", "Row(word='is', total=1)"]
    assert all(type(r) is Row for r in out)
    assert out[0].word == "be" and out[0]["total"] == 3 and out[0].asDict() == {"word": "be", "total": 3}


def test_sql_result_maps_like_any_rdd(any_ctx):
    counts = any_ctx.parallelize(WORDS, 2).sql(COUNT_SQL)
    assert sorted(counts.map(lambda r: (r.word, r.total)).collect()) == sorted(Counter(WORDS).items())
    assert counts.map(lambda r: r.total).sum() == len(WORDS)
    by_total = counts.map(lambda r: (r.total, r.word)).groupByKey().mapValues(sorted).collectAsMap()
    assert by_total[3] == ["be", "to"]


def test_sql_to_pandas_columns_and_dtypes(ctx):
    df = ctx.parallelize(WORDS, 2).sql(COUNT_SQL).toPandas()
    assert list(df.columns) == ["word", "total"]
    assert pd.api.types.is_string_dtype(df["word"]) and df["total"].dtype == "int64"
    assert dict(zip(df["word"], df["total"])) == dict(Counter(WORDS))
    stats = ctx.parallelize([1.5, 2.5, 3.0], 2).sql(
        "SELECT avg(value) AS mean, max(value) AS top, count(*) AS n FROM batch").toPandas()
    assert list(stats.columns) == ["mean", "top", "n"]
    assert stats.dtypes.tolist() == ["float64", "float64", "int64"]
    assert stats.iloc[0].tolist() == [7.0 / 3, 3.0, 3]


def test_sql_over_pairs_sees_key_and_value(any_ctx):
    pairs = any_ctx.parallelize([("a", 1), ("b", 2), ("a", 3), ("c", 4)], 3)
    out = pairs.sql("SELECT key, sum(value) AS total FROM batch GROUP BY key ORDER BY key").collect()
    assert out == [Row(key="a", total=4), Row(key="b", total=2), Row(key="c", total=4)]
    assert [type(r.total) for r in out] == [int, int, int]  # DuckDB's HUGEINT sums come back as int64
    # a key/value result is a pair RDD again, so the pair operations apply
    again = pairs.sql("SELECT key, value * 10 AS value FROM batch").reduceByKey(operator.add)
    assert sorted(again.collect()) == [("a", 40), ("b", 20), ("c", 40)]


def test_sql_over_rows_sees_their_fields(any_ctx):
    people = [Row(name="ann", age=31, city="Oslo"), Row(name="bo", age=17, city="Rome"),
              Row(name="cy", age=45, city="Oslo")]
    rdd = any_ctx.parallelize(people, 2)
    adults = rdd.sql("SELECT city, count(*) AS n, max(age) AS oldest FROM people WHERE age >= 18 "
                     "GROUP BY city", name="people").collect()
    assert adults == [Row(city="Oslo", n=2, oldest=45)]
    # chained: a Row result queried again
    assert rdd.sql("SELECT name, age + 1 AS next FROM batch").sql(
        "SELECT name FROM batch WHERE next > 40").collect() == ["cy"]


def test_sql_over_rows_of_one_field_as_in_pyspark_s_example(any_ctx):
    """``rdd.map(lambda w: Row(word=w))`` (PySpark's idiom): a one-field Row is a record of its own,
    stored whole, and SQL still sees its field as a column."""
    rows = any_ctx.parallelize(WORDS, 2).map(lambda w: Row(word=w))
    assert rows.take(1) == [Row(word="to")] and repr(rows.first()) == "Row(word='to')"
    out = rows.sql("SELECT word, count(*) AS total FROM words GROUP BY word", name="words").collect()
    assert dict(out) == dict(Counter(WORDS))
    kv = any_ctx.parallelize([Row(key="a", value=1), Row(key="a", value=2)], 2)
    assert kv.sql("SELECT key, sum(value) AS s FROM batch GROUP BY key").collect() == [Row(key="a", s=3)]


def test_sql_runs_over_the_whole_batch_not_per_partition(any_ctx):
    """An aggregate over 4 partitions gives one row, not one per partition."""
    rdd = any_ctx.parallelize(range(100), 4).sql("SELECT count(*) AS n, sum(value) AS s FROM batch")
    assert rdd.collect() == [Row(n=100, s=4950)]


def test_sql_runs_on_the_executors_too(any_ctx):
    """Large enough that the final stage is not run on the driver: DuckDB runs in an executor task."""
    scheduler = any_ctx.scheduler
    old, scheduler.local_result_max_rows = scheduler.local_result_max_rows, 0
    try:
        local_before = scheduler.local_result_stages
        rdd = any_ctx.parallelize(WORDS, 2).map(str.upper).sql(COUNT_SQL)
        assert dict(rdd.collect()) == {w.upper(): n for w, n in Counter(WORDS).items()}
        assert scheduler.local_result_stages == local_before
    finally:
        scheduler.local_result_max_rows = old


def test_sql_is_lazy(ctx):
    calls = []
    rdd = ctx.parallelize([1, 2, 3], 2).map(lambda x: calls.append(x) or x).sql("SELECT sum(value) FROM batch")
    assert calls == []
    assert rdd.collect() == [6] and sorted(calls) == [1, 2, 3]


def test_sql_over_an_empty_rdd(any_ctx):
    assert any_ctx.emptyRDD().sql("SELECT count(*) AS n FROM batch").collect() == [0]
    assert any_ctx.parallelize([], 2).sql("SELECT count(*) AS n FROM batch").collect() == [0]
    # an empty batch has no known columns: a query naming them gives no rows rather than failing
    assert any_ctx.emptyRDD().sql("SELECT key, sum(value) AS s FROM batch GROUP BY key").collect() == []


def test_sql_types_pickled_columns_when_arrow_can(ctx):
    groups = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).groupByKey()  # values are lists
    out = groups.sql("SELECT key, len(value) AS n, list_sum(value) AS s FROM batch ORDER BY key").collect()
    assert out == [Row(key="a", n=2, s=4), Row(key="b", n=1, s=2)]
    mixed = ctx.parallelize([1, 2.5, None], 1).sql("SELECT sum(value) AS s FROM batch")  # int and float
    assert mixed.collect() == [3.5]


def test_sql_passes_untypable_objects_through(ctx):
    rows = [Row(name="p", where=Point(1, 2)), Row(name="q", where=Point(3, 4))]
    out = ctx.parallelize(rows, 2).sql("SELECT name, \"where\" FROM batch WHERE name = 'q'").collect()
    assert out == [Row(name="q", where=Point(3, 4))]


def test_sql_error_on_untypable_objects_names_the_column(ctx):
    rows = [Row(name="p", where=Point(1, 2)), Row(name="q", where=(1, "x"))]
    with pytest.raises(Exception) as info:
        ctx.parallelize(rows, 2).sql("SELECT name, \"where\" + 1 AS w FROM batch").collect()
    message = str(info.value)
    assert "column 'where' holds Python objects SQL cannot type (Point, tuple)" in message
    assert "SELECT name, \"where\" + 1 AS w FROM batch" in message


def test_sql_syntax_error_raises_at_once_with_the_query(ctx):
    query = "SELEC value FROM batch"
    with pytest.raises(SQLError) as info:
        ctx.parallelize([1, 2], 2).sql(query)
    assert query in str(info.value) and "syntax error" in str(info.value).lower()


def test_sql_unknown_column_fails_the_action_with_the_query(any_ctx):
    query = "SELECT word FROM batch"
    rdd = any_ctx.parallelize(["a", "b"], 2).sql(query)
    with pytest.raises(Exception, match="SQLError") as info:
        rdd.collect()
    assert query in str(info.value) and "word" in str(info.value)


@pytest.mark.parametrize("query", ["SELECT 1; SELECT 2", "CREATE TABLE t AS SELECT 1"])
def test_sql_runs_exactly_one_select(ctx, query):
    with pytest.raises(SQLError, match="one SELECT query"):
        ctx.parallelize([1]).sql(query)


def test_sql_without_duckdb_says_how_to_install_it(ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ImportError) as info:
        ctx.parallelize([1, 2]).sql("SELECT value FROM batch")
    assert str(info.value) == INSTALL_HINT == "RDD.sql needs DuckDB: pip install 'dstream[sql]'"


# -- SQL on each batch of a stream --------------------------------------------------------------------


BATCHES = [["to be or not to be"], ["that is the question"], ["to be", "be quick"]]


def test_sql_on_each_batch_via_transform(any_ctx, clock):
    """Spark's sql_network_wordcount.py: each batch's words counted by a SQL query.

    batch:     b1                   b2                      b3            b4 (queue empty)
    lines:     to be or not to be   that is the question    to be/be quick  -
    counts:    be 2, not 1, or 1,   is 1, question 1, ...   be 3, quick 1,  (none)
               to 2                                         to 1
    """
    from dstream import StreamingContext
    ssc = StreamingContext(any_ctx, 1.0, clock=clock)
    try:
        words = ssc.queueStream(BATCHES).flatMap(str.split)
        counts = words.transform(lambda rdd: rdd.sql(
            "SELECT value AS word, count(*) AS total FROM batch GROUP BY word"))
        out = collect(counts.map(lambda r: (r.word, r.total)), sort=True)
        ssc.start()
        advance(ssc, 4)
    finally:
        ssc.stop(stopSparkContext=False)
    expected = [sorted(Counter(w for line in batch for w in line.split()).items()) for batch in BATCHES]
    assert out == expected + [[]]


def test_sql_in_foreachRDD_with_time(ssc):
    """The PySpark example's shape: ``foreachRDD(process(time, rdd))`` querying each batch."""
    seen = []

    def process(time, rdd):
        df = rdd.sql("SELECT value AS word, count(*) AS total FROM words GROUP BY word ORDER BY total DESC, word",
                     name="words").toPandas()
        seen.append((time, df.to_dict("records")[:2]))

    ssc.queueStream(BATCHES).flatMap(str.split).foreachRDD(process)
    ssc.start()
    advance(ssc, 2)
    assert all(isinstance(time, datetime) for time, _ in seen)
    assert [records for _, records in seen] == [
        [{"word": "be", "total": 2}, {"word": "to", "total": 2}],
        [{"word": "is", "total": 1}, {"word": "question", "total": 1}],
    ]
