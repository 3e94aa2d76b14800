"""Behaviours that follow PySpark 4.3 where dstream once differed: checkpoint directories, getOrCreate,
contexts captured by checkpointed functions, and the shape of the public API."""
from __future__ import annotations

import collections
import operator
import time
from pathlib import Path

import pytest

from dstream import Context, ManualClock, SerializationError, StreamingContext
from dstream.demo.harness import pid_alive, wait_until
from dstream.testing import advance, collect

from .recovery_harness import WordCountDriver


@pytest.fixture
def own_ctx():
    """A Context of its own: these tests set its checkpoint directory, which the shared one must not keep."""
    c = Context("threads[2]")
    yield c
    c.stop()


# -- 1. sc.setCheckpointDir is enough for stateful streams ---------------------------------------------------
BATCHES = [["a", "b", "a"], ["b"], [], ["a", "c"], ["c", "c"], ["a"], ["b", "b"], [], ["a"], ["c"], ["a", "b"],
           ["b"], ["c"], ["a"]]


def _windowed_truth(batches: list[list[str]], window: int) -> list[collections.Counter]:
    return [collections.Counter(w for b in batches[max(0, i + 1 - window):i + 1] for w in b)
            for i in range(len(batches))]


def test_context_checkpoint_dir_is_enough_for_stateful_streams(own_ctx, tmp_path):
    """Spark: with only ``sc.setCheckpointDir``, stateful streams snapshot their data there (no metadata
    checkpoint, so no recovery); old snapshots are deleted as the streams move on."""
    own_ctx.setCheckpointDir(str(tmp_path))
    ssc = StreamingContext(own_ctx, 1.0, clock=ManualClock())
    words = ssc.queueStream([list(b) for b in BATCHES])
    pairs = words.map(lambda w: (w, 1))
    state = collect(pairs.updateStateByKey(lambda new, old: sum(new) + (old or 0)), sort=True)
    by_window = collect(words.countByWindow(3.0, 1.0))
    values = collect(words.countByValueAndWindow(3.0, 1.0), sort=True)
    reduced = collect(pairs.reduceByKeyAndWindow(operator.add, operator.sub, 3.0, 1.0), sort=True)
    snapshots_seen = []
    words.foreachRDD(lambda rdd: snapshots_seen.append(len(list(tmp_path.glob("rdd-*")))))
    ssc.start()
    try:
        advance(ssc, len(BATCHES))
    finally:
        ssc.stop(stopSparkContext=False)
    ssc.awaitTerminationOrTimeout(0)  # no batch failed

    running = collections.Counter()
    for i, batch in enumerate(BATCHES):
        running.update(batch)
        assert state[i] == sorted(running.items(), key=repr)
    windows = _windowed_truth(BATCHES, 3)
    assert by_window == [[sum(w.values())] for w in windows]
    assert values == [sorted(w.items(), key=repr) for w in windows]
    assert [[kv for kv in batch if kv[1] > 0] for batch in reduced] == values
    # snapshots were written to the Context's directory, and old ones deleted (not one per interval kept)
    assert max(snapshots_seen) >= 1
    assert len(list(tmp_path.glob("rdd-*"))) <= 4  # one live snapshot per stateful stream at most
    assert not list(tmp_path.glob("checkpoint-*"))  # no metadata checkpoints: Spark writes none either


def test_stateful_stream_without_any_checkpoint_directory_fails_at_start(own_ctx):
    ssc = StreamingContext(own_ctx, 1.0, clock=ManualClock())
    ssc.queueStream([["a"]]).countByWindow(2.0, 1.0).pprint()
    with pytest.raises(ValueError, match="checkpoint directory has not been set"):
        ssc.start()


# -- 2. getOrCreate checkpoints the context that setup returns -------------------------------------------------
def test_checkpoint_creates_its_directory(own_ctx, tmp_path):
    directory = tmp_path / "not" / "yet" / "there"
    StreamingContext(own_ctx, 1.0, clock=ManualClock()).checkpoint(str(directory))
    assert directory.is_dir()


def test_getOrCreate_checkpoints_a_context_whose_setup_did_not(own_ctx, tmp_path):
    checkpoint = tmp_path / "cp"
    clock = ManualClock()

    def setup() -> StreamingContext:  # as Spark's examples write it: no ssc.checkpoint(...)
        ssc = StreamingContext(own_ctx, 1.0, clock=clock)
        ssc.queueStream([[("a", 1)], [("a", 2)]]).updateStateByKey(lambda new, old: sum(new) + (old or 0)).pprint()
        return ssc

    ssc = StreamingContext.getOrCreate(str(checkpoint), setup)
    ssc.start()
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)
    assert sorted(p.name for p in checkpoint.glob("checkpoint-*"))  # metadata was written

    restored = StreamingContext.getOrCreate(str(checkpoint), lambda: pytest.fail("setup must not run"),
                                            clock=ManualClock(start=3.0))
    restored.start()
    try:
        assert restored.replayed_times == [3000]
    finally:
        restored.stop(stopSparkContext=False)


@pytest.mark.slow
def test_sigkilled_pyspark_style_driver_restarts_from_the_checkpoint_getOrCreate_made(tmp_path):
    """A PySpark-style app (setup never calls ssc.checkpoint) killed with SIGKILL resumes, not restarts."""
    driver = WordCountDriver(tmp_path)
    driver.app = Path(__file__).parent / "apps" / "pyspark_wordcount.py"
    try:
        driver.start()
        driver.write_file(["spark", "arrow", "spark"])
        driver.wait_caught_up()
        workers = driver.kill()
        wait_until(lambda: not any(pid_alive(p) for p in workers), 10, f"workers {workers} to exit")
        driver.write_file(["arrow", "dask"])  # arrives while the driver is down
        time.sleep(0.5)
        started = driver.start()
        assert started["restored"], driver.stderr()
        assert not any(e["event"] == "creating" for e in driver.events), \
            "setup ran again: the checkpoint was ignored"
        driver.write_file(["spark"])
        # the state survived the kill: counts include the words counted before it
        assert driver.wait_caught_up() is not None
        assert driver.latest_counts() == {"spark": 3, "arrow": 2, "dask": 1}
    finally:
        driver.close()


# -- 3. a Context captured by a checkpointed function fails at start, as in PySpark ------------------------------
def _checkpointed_ssc(ctx: Context, tmp_path: Path) -> StreamingContext:
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path / "cp"))
    return ssc


def test_foreachRDD_capturing_the_context_in_a_checkpointed_stream_fails_at_start(own_ctx, tmp_path):
    ssc = _checkpointed_ssc(own_ctx, tmp_path)
    sc = own_ctx

    def save_with_context(time, rdd):
        sc.parallelize(rdd.collect()).count()

    ssc.queueStream([[1]]).foreachRDD(save_with_context)
    with pytest.raises(SerializationError, match="SPARK-5063") as info:
        ssc.start()
    assert "save_with_context" in str(info.value) and "captures the Context" in str(info.value)


def test_transform_capturing_the_context_in_a_checkpointed_stream_fails_at_start(own_ctx, tmp_path):
    ssc = _checkpointed_ssc(own_ctx, tmp_path)
    sc = own_ctx

    def add_reference_data(rdd):
        return rdd.union(sc.parallelize([0]))

    ssc.queueStream([[1]]).transform(add_reference_data).pprint()
    with pytest.raises(SerializationError, match="SparkContext can only be used on the driver") as info:
        ssc.start()
    assert "add_reference_data" in str(info.value)


def test_transform_capturing_an_rdd_in_a_checkpointed_stream_fails_at_start(own_ctx, tmp_path):
    """A static RDD joined in a checkpointed stream could not be restored: say so at start, not at restart."""
    ssc = _checkpointed_ssc(own_ctx, tmp_path)
    regions = own_ctx.parallelize([(1, "north")])

    def add_region(rdd):
        return rdd.join(regions)

    ssc.queueStream([[(1, 10)]]).transform(add_region).pprint()
    with pytest.raises(SerializationError, match="cannot be restored from a checkpoint") as info:
        ssc.start()
    assert "add_region" in str(info.value) and "ParallelCollectionRDD" in str(info.value)


def test_context_from_the_rdd_inside_a_checkpointed_function_works(own_ctx, tmp_path):
    ssc = _checkpointed_ssc(own_ctx, tmp_path)
    out = collect(ssc.queueStream([[1], [2]]).transform(lambda rdd: rdd.union(rdd.context.parallelize([0]))),
                  sort=True)
    ssc.start()
    try:
        advance(ssc, 2)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [[0, 1], [0, 2]]


def test_without_checkpointing_driver_side_functions_may_use_the_context(own_ctx):
    """Functions that run on the driver and are not checkpointed may use the Context (PySpark allows it)."""
    ssc = StreamingContext(own_ctx, 1.0, clock=ManualClock())
    sc = own_ctx
    out = collect(ssc.queueStream([[1]]).transform(lambda rdd: rdd.union(sc.parallelize([7]))), sort=True)
    ssc.start()
    try:
        advance(ssc, 1)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [[1, 7]]


def test_a_task_capturing_the_context_fails_with_pysparks_explanation(pctx):
    sc = pctx  # tasks for worker processes are pickled (thread tasks are not)
    with pytest.raises(Exception, match="SPARK-5063"):
        sc.parallelize([1, 2], 2).map(lambda x: sc.defaultParallelism + x).collect()


# -- 7, 8. RDD ids and names are methods; RDD and DStream are generic ------------------------------------------
def test_rdd_id_and_name_are_methods(ctx):
    a, b = ctx.parallelize([1, 2]), ctx.parallelize([3])
    assert isinstance(a.id(), int) and a.id() != b.id()
    assert a.name() is None
    assert a.setName("numbers") is a and a.name() == "numbers"
    assert "numbers ParallelCollectionRDD" in a.map(str).toDebugString()


def test_type_hinted_pyspark_code_works(ssc):
    from typing import get_args

    from dstream import RDD, DStream

    def tokens(lines: DStream[str]) -> DStream[tuple[str, int]]:
        return lines.flatMap(str.split).map(lambda w: (w, 1))

    def total(rdd: RDD[tuple[str, int]]) -> RDD[int]:
        return rdd.values()

    assert get_args(RDD[tuple[str, int]]) == (tuple[str, int],)
    assert get_args(DStream[str]) == (str,)
    out = collect(tokens(ssc.queueStream([["a b a"]])).transform(total))
    ssc.start()
    advance(ssc, 1)
    assert out == [[1, 1, 1]]


# -- 11. a useful repr, and dir() that shows the API ------------------------------------------------------------
def test_repr_of_a_streaming_context_says_state_interval_inputs_and_outputs(ctx, tmp_path):
    ssc = StreamingContext(ctx, 0.5, clock=ManualClock())
    queue = ssc.queueStream([[1]])
    files = ssc.textFileStream(str(tmp_path))
    queue.union(files).pprint()
    queue.saveAsTextFiles(str(tmp_path / "out"))
    text = repr(ssc)
    assert text.startswith("<StreamingContext initialized, batchDuration=0.5 s")
    assert f"2 inputs: queueStream, textFileStream({tmp_path})" in text
    assert "2 outputs: pprint, saveAsTextFiles" in text
    ssc.start()
    assert repr(ssc).startswith("<StreamingContext active,")
    ssc.stop(stopSparkContext=False)
    assert repr(ssc).startswith("<StreamingContext stopped,")


PYSPARK_DSTREAM_API = {  # public methods of pyspark.streaming.DStream (4.3)
    "cache", "checkpoint", "cogroup", "combineByKey", "context", "count", "countByValue", "countByValueAndWindow",
    "countByWindow", "filter", "flatMap", "flatMapValues", "foreachRDD", "fullOuterJoin", "glom", "groupByKey",
    "groupByKeyAndWindow", "join", "leftOuterJoin", "map", "mapPartitions", "mapPartitionsWithIndex",
    "mapValues", "partitionBy", "persist", "pprint", "reduce", "reduceByKey", "reduceByKeyAndWindow",
    "reduceByWindow", "repartition", "rightOuterJoin", "saveAsTextFiles", "slice", "transform", "transformWith",
    "union", "updateStateByKey", "window"}
DSTREAM_ADDITIONS = {"mapWithState", "mapInArrow", "mapInPandas", "saveAsParquetFiles", "foreachBatch"}


def test_dir_of_a_dstream_is_the_public_api(ssc):
    stream = ssc.queueStream([[1]]).map(str).window(2.0, 1.0)
    public = {n for n in dir(stream) if not n.startswith("_")}
    assert public == PYSPARK_DSTREAM_API | DSTREAM_ADDITIONS
    from dstream import DStream
    assert {n for n in dir(DStream) if not n.startswith("_")} == PYSPARK_DSTREAM_API | DSTREAM_ADDITIONS


def test_dir_of_an_rdd_is_the_public_api(ctx):
    rdd = ctx.parallelize([("a", 1)]).reduceByKey(operator.add).cache()
    public = {n for n in dir(rdd) if not n.startswith("_")}
    for internal in ("compute", "iterator", "dependencies", "num_partitions", "is_available", "truncated"):
        assert internal not in public
    for api in ("map", "reduceByKey", "collect", "toArrow", "mapInArrow", "sql", "id", "name", "setName", "ctx",
                "is_cached", "partitioner", "getNumPartitions", "context"):
        assert api in public
    assert all(callable(getattr(rdd, n)) or n in ("ctx", "is_cached", "partitioner", "context") for n in public)
