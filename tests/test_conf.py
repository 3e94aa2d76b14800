"""SparkConf, a Context's configuration, and ``spark.default.parallelism`` (Spark's rules for defaults)."""
from __future__ import annotations

import operator

import pytest

import dstream
from dstream import Context, SparkConf
from dstream import context as context_module
from dstream.testing import run_stream
from dstream.executors import conf_values
from dstream.executors.threads import ThreadExecutor


# -- SparkConf ----------------------------------------------------------------------------------------------
def test_setters_store_strings_and_chain():
    conf = SparkConf()
    assert conf.set("spark.default.parallelism", 8) is conf
    assert conf.get("spark.default.parallelism") == "8"
    assert conf.setMaster("threads[2]").setAppName("wordcount").set("flag", True) is conf
    assert conf.get("spark.master") == "threads[2]" and conf.get("spark.app.name") == "wordcount"
    assert conf.get("flag") == "True"
    assert conf.setAll([("a", 1), ("b", 2.5)]) is conf
    assert conf.get("a") == "1" and conf.get("b") == "2.5"


def test_get_contains_and_defaults():
    conf = SparkConf(loadDefaults=False).set("k", "v")
    assert conf.get("k") == "v" and conf.get("k", "other") == "v"
    assert conf.get("missing") is None and conf.get("missing", "d") == "d"
    assert conf.contains("k") and not conf.contains("missing")


def test_set_if_missing_keeps_what_is_set():
    conf = SparkConf().set("k", "first")
    assert conf.setIfMissing("k", "second").setIfMissing("new", 3) is conf
    assert conf.get("k") == "first" and conf.get("new") == "3"


def test_get_all_and_debug_string():
    conf = SparkConf().set("z.key", 1).set("a.key", "x").setExecutorEnv("PATH", "/bin")
    assert sorted(conf.getAll()) == [("a.key", "x"), ("spark.executorEnv.PATH", "/bin"), ("z.key", "1")]
    assert conf.toDebugString() == "a.key=x\nspark.executorEnv.PATH=/bin\nz.key=1"
    conf.setExecutorEnv(pairs=[("A", "1"), ("B", "2")])
    assert conf.get("spark.executorEnv.B") == "2"
    with pytest.raises(ValueError):
        conf.setExecutorEnv()


# -- Context and its configuration ----------------------------------------------------------------------------
@pytest.fixture
def masters(monkeypatch):
    """The masters Contexts are made from (each gets a one-thread executor instead)."""
    seen: list = []

    def fake_make_executor(master, start_method=None):
        seen.append(master)
        return ThreadExecutor(1)

    monkeypatch.setattr(context_module, "make_executor", fake_make_executor)
    return seen


def test_master_and_app_name_come_from_the_conf(masters):
    with Context(conf=SparkConf().setMaster("threads[3]").setAppName("from conf")) as c:
        assert (c.master, c.appName) == ("threads[3]", "from conf")
    with Context("local[2]", "given", conf=SparkConf().setMaster("threads[3]").setAppName("from conf")) as c:
        assert (c.master, c.appName) == ("local[2]", "given")  # arguments win, as in PySpark
        assert c.getConf().get("spark.master") == "local[2]" and c.getConf().get("spark.app.name") == "given"
    with Context(conf={"spark.master": "threads[4]"}) as c:  # a dict works too
        assert c.master == "threads[4]"
    assert masters == ["threads[3]", "local[2]", "threads[4]"]


def test_default_master_is_local_star(masters):
    with Context() as c:
        assert c.master == "local[*]" and c.appName == "dstream"
    with Context(conf=SparkConf().set("some.key", 1)) as c:
        assert c.master == "local[*]"
    assert masters == ["local[*]", "local[*]"]


def test_get_conf_is_a_copy_with_the_settings():
    conf = SparkConf().setMaster("threads[1]").set("my.key", 5).set("dstream.speculation.quantile", "0.5")
    with Context(conf=conf) as c:
        got = c.getConf()
        assert isinstance(got, SparkConf) and got is not conf
        assert got.get("my.key") == "5" and got.get("spark.app.name") == "dstream"
        assert c.executor.speculation.quantile == 0.5  # dstream.* keys are read from a SparkConf too
        got.set("my.key", "changed")
        assert c.getConf().get("my.key") == "5"
    conf.set("my.key", "later")  # nor does changing the conf given
    assert c.getConf().get("my.key") == "5"


def test_dict_conf_keeps_its_values():
    with Context("threads[1]", conf={"dstream.speculation": True, "n": 3}) as c:
        assert c.conf["n"] == 3 and c.getConf().get("n") == "3"


def test_conf_of_another_type_is_rejected():
    with pytest.raises(TypeError, match="SparkConf or a dict"):
        Context("threads[1]", conf=[("a", "b")])


def test_version():
    with Context("threads[1]") as c:
        assert c.version == dstream.__version__


# -- spark.default.parallelism ----------------------------------------------------------------------------
def test_default_parallelism_is_the_task_slots_unless_configured():
    with Context("threads[3]") as c:
        assert c.defaultParallelism == 3 and c.defaultMinPartitions == 2
        assert c.parallelize(range(10)).getNumPartitions() == 3
    with Context("threads[3]", conf=SparkConf().set("spark.default.parallelism", 7)) as c:
        assert c.defaultParallelism == 7
        assert c.parallelize(range(10)).getNumPartitions() == 7
    with Context("threads[1]", conf={"spark.default.parallelism": 5}) as c:
        assert c.defaultParallelism == 5


@pytest.mark.parametrize("value", ["many", "0", -1, 1.5, True])
def test_bad_default_parallelism_names_the_key(value):
    with pytest.raises(ValueError, match=r"spark\.default\.parallelism"):
        Context("threads[1]", conf={"spark.default.parallelism": value})


def _pairs(ctx: Context, n: int):
    return ctx.parallelize([(i % 4, i) for i in range(20)], n)


def test_rdd_shuffles_default_to_the_parents_partitions_without_the_key():
    with Context("threads[2]") as c:
        pairs = _pairs(c, 5)
        assert pairs.reduceByKey(operator.add).getNumPartitions() == 5
        assert pairs.groupByKey().getNumPartitions() == 5
        assert pairs.join(_pairs(c, 3)).getNumPartitions() == 5  # the most among the parents
        assert _pairs(c, 3).cogroup(pairs).getNumPartitions() == 5


def test_rdd_shuffles_default_to_spark_default_parallelism_when_set():
    with Context("threads[2]", conf=SparkConf().set("spark.default.parallelism", "7")) as c:
        pairs = _pairs(c, 5)
        reduced = pairs.reduceByKey(operator.add)
        assert reduced.getNumPartitions() == 7
        assert sorted(reduced.collect()) == [(k, sum(range(k, 20, 4))) for k in range(4)]
        assert pairs.groupByKey().getNumPartitions() == 7
        assert pairs.combineByKey(lambda v: v, operator.add, operator.add).getNumPartitions() == 7
        assert pairs.join(_pairs(c, 3)).getNumPartitions() == 7
        assert pairs.partitionBy(None).getNumPartitions() == 7
        assert pairs.reduceByKey(operator.add, 2).getNumPartitions() == 2  # an explicit number wins


def test_stream_shuffles_default_to_spark_default_parallelism():
    with Context("threads[2]", conf={"spark.default.parallelism": 6}) as c:
        out = run_stream(c, [[("a", 1), ("b", 2), ("a", 3)]],
                         lambda s: s.reduceByKey(operator.add).glom().map(lambda part: 1).reduce(operator.add))
        assert out == [[6]]  # six partitions


def test_active_and_getOrCreate_return_the_running_context_only():
    own = Context("threads[1]")
    try:
        assert Context.active() is own and Context.getOrCreate() is own
    finally:
        own.stop()
    assert Context.active() is None or Context.active() is not own
    fresh = Context.getOrCreate("threads[1]")
    try:
        assert fresh is not own and Context.active() is fresh
    finally:
        fresh.stop()


# -- conf values (executors/conf_values.py: every setting's parser) -----------------------------------------
@pytest.mark.parametrize("value, expected", [(True, True), (" Yes ", True), ("on", True), ("1", True),
                                             (False, False), ("OFF", False), ("no", False), ("0", False)])
def test_bool_spellings(value, expected):
    assert conf_values.parse_bool("k", value) is expected
    assert conf_values.conf_bool({"k": value}, "k", not expected) is expected


def test_bool_settings_refuse_other_values_naming_key_and_value():
    for value in ("maybe", "", 2):
        with pytest.raises(ValueError, match=r"^a\.key must be true or false, got "):
            conf_values.parse_bool("a.key", value)
    with pytest.raises(ValueError, match=r"a\.key must be true or false, got 1"):
        conf_values.parse_bool("a.key", 1)  # a bare int only in a conf read by conf_bool:
    assert conf_values.conf_bool({"a.key": 1}, "a.key", False) is True
    assert conf_values.conf_bool({}, "a.key", True) is True


def test_numbers_name_key_value_unit_and_bound():
    assert conf_values.positive_int("k", " 3 ") == 3
    for bad in ("many", "0", 0, 1.0, True):
        with pytest.raises(ValueError, match=r"^k must be a positive integer \(tries\), got "):
            conf_values.positive_int("k", bad, "tries")
    assert conf_values.parse_float("k", "0.5", "seconds", at_least=0) == 0.5
    with pytest.raises(ValueError, match=r"^k must be a number of seconds, got 'soon'$"):
        conf_values.parse_float("k", "soon", "seconds")
    with pytest.raises(ValueError, match=r"^k must be a finite number of seconds, at least 0, got -1$"):
        conf_values.parse_float("k", -1, "seconds", at_least=0)
    for bad in ("inf", float("nan")):
        with pytest.raises(ValueError, match=r"^k must be a finite number, got "):
            conf_values.parse_float("k", bad)
    assert conf_values.parse_float("k", "inf", finite=False) == float("inf")
    with pytest.raises(ValueError, match=r"^k must be a number, got nan$"):
        conf_values.parse_float("k", float("nan"), finite=False)
    with pytest.raises(ValueError, match=r"^k must be a number, got True$"):
        conf_values.parse_float("k", True)
    assert conf_values.parse_float("k", True, bool_as_number=True) == 1.0
