"""Broadcast variables and accumulators (PySpark's shared variables) on every executor kind.

- A broadcast value is unpickled at most once per worker process, however many tasks use it (counted by a
  value whose unpickling appends its pid to a file); the Broadcast object itself pickles as a few bytes.
- unpersist() drops the executors' copies (a later use sends it again); after destroy() a task that uses
  it fails naming it.
- Accumulator updates travel back with each task's result and count once per partition: the update of a
  task attempt whose worker was killed, or of the losing copy of a speculative task, is not counted.
- In a checkpointed stream, broadcasts and accumulators are lazily created singletons (Spark Streaming's
  recipe, recoverable_network_wordcount.py); one captured by a checkpointed function fails at start().

Task functions and classes live at module level so that worker processes import them by name.
"""
from __future__ import annotations

import ast
import functools
import operator
import os
import pickle
import signal
import threading
import time

import cloudpickle
import pytest

from dstream import Accumulator, AccumulatorParam, Broadcast, Context, ManualClock, StreamingContext
from dstream.accumulators import AddingAccumulatorParam
from dstream.broadcast import SharedVariableInCheckpointError, pickling_for_checkpoint
from dstream.streaming import SerializationError
from dstream.testing import advance, collect
from dstream.executors import Task, broadcasts, serialization
from .test_executor_faults import _pid_after, _wait_for  # the worker-kill helpers those tests use


# -- values, task functions and helpers ---------------------------------------------------------------------
class CountedLoads:
    """A value that appends this process's pid to ``path`` each time it is unpickled."""

    def __init__(self, path: str, payload: list) -> None:
        self.path = path
        self.payload = payload

    def __reduce__(self):
        return _load_counted, (self.path, self.payload)


def _load_counted(path: str, payload: list) -> CountedLoads:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return CountedLoads(path, payload)


def _loads(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f]


def _use_broadcast(bc: Broadcast, x: int) -> tuple[int, int]:
    return os.getpid(), x + len(bc.value.payload)


def _cached_broadcasts(_: int) -> list[str]:
    return broadcasts.cached_ids()


class VectorParam(AccumulatorParam):
    """Element-wise addition of lists, in place (PySpark's docs' example)."""

    def zero(self, value: list) -> list:
        return [0.0] * len(value)

    def addInPlace(self, value1: list, value2: list) -> list:
        for i in range(len(value1)):
            value1[i] += value2[i]
        return value1


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def _add_then_die_once(acc: Accumulator, marker: str, x: int) -> int:
    """Add ``x``; for x == 3 the first attempt then kills its own worker (after adding)."""
    acc.add(x)
    if x == 3 and not os.path.exists(marker):
        _write_atomically(marker, str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _add_slowly_on_first_attempt(acc: Accumulator, marker: str, index: int, it):
    """Partition 0's first attempt adds 1000 and straggles (its backup copy wins); every other run adds 1."""
    records = list(it)
    if index == 0 and not os.path.exists(marker):
        _write_atomically(marker, str(os.getpid()))
        acc.add(1000)
        time.sleep(1.5)
        _write_atomically(marker + ".done", "")
        return records
    acc.add(1)
    return records




@pytest.fixture(scope="module")
def sctx():
    """Two worker processes, with speculation on (the fault and straggler tests kill and slow workers)."""
    c = Context("local[2]", conf={"dstream.speculation": "true", "dstream.speculation.minRuntime": 0.2})
    # every worker imports this module first, so a cold start does not count as straggling
    for f in [c.executor.submit_task(Task(functools.partial(_pid_after, 0.1), i)) for i in range(2)]:
        f.result(timeout=20)
    yield c
    c.stop()


# -- broadcast ------------------------------------------------------------------------------------------------
def test_broadcast_value_in_tasks_and_on_the_driver(any_ctx):
    bc = any_ctx.broadcast({"a": 1, "b": 2})
    assert isinstance(bc, Broadcast) and isinstance(bc.id, int)
    assert bc.value == {"a": 1, "b": 2}
    words = any_ctx.parallelize(["a", "b", "c", "a"], 3)
    assert words.map(lambda w: bc.value.get(w, 0)).collect() == [1, 2, 0, 1]
    assert any_ctx.broadcast([1, 2]).id != bc.id


def test_broadcast_is_unpickled_once_per_worker_process(pctx, tmp_path):
    counter = str(tmp_path / "loads")
    value = CountedLoads(counter, list(range(1000)))
    bc = pctx.broadcast(value)
    out = pctx.parallelize(range(200), 100).map(functools.partial(_use_broadcast, bc)).collect()
    assert [x for _, x in out] == [x + 1000 for x in range(200)]
    loads = _loads(counter)
    workers = set(pctx.executor.worker_pids())
    assert 1 <= len(loads) <= len(workers) == 2, loads  # 100 tasks, at most one load per worker
    assert set(loads) <= workers and os.getpid() not in loads
    pctx.parallelize(range(20), 10).map(functools.partial(_use_broadcast, bc)).collect()  # a second job
    assert len(_loads(counter)) == len(loads)
    # without a broadcast, the value travels with the stage's function: unpickled once per worker process
    # and stage (the tasks of a stage share it), and again for every later stage
    os.remove(counter)
    pctx.parallelize(range(200), 100).map(lambda x: x + len(value.payload)).collect()
    first = len(_loads(counter))
    assert 1 <= first <= 2
    pctx.parallelize(range(20), 10).map(lambda x: x + len(value.payload)).collect()
    assert len(_loads(counter)) > first
    bc.unpersist()


def test_broadcast_pickles_as_its_id(any_ctx):
    bc = any_ctx.broadcast(b"x" * 1_000_000)
    data = cloudpickle.dumps(bc)
    assert len(data) < 500
    assert pickle.loads(data) is bc  # unpickled in the process that made it: the original
    bc.unpersist()


def test_unpersist_drops_executor_copies_and_a_later_use_sends_it_again(pctx):
    bc = pctx.broadcast(list(range(10)))
    rdd = pctx.parallelize(range(4), 4)
    assert rdd.map(lambda x: sum(bc.value) + x).collect() == [45, 46, 47, 48]
    first_block = bc._block_id
    assert pctx.executor.store.contains(first_block)
    bc.unpersist()
    assert not pctx.executor.store.contains(first_block)
    # used again, it is stored again under a new name; the workers drop the old copy as their next task starts
    assert rdd.map(lambda x: sum(bc.value) - x).collect() == [45, 44, 43, 42]
    assert bc._block_id != first_block and pctx.executor.store.contains(bc._block_id)
    cached = set().union(*pctx.parallelize(range(4), 4).map(_cached_broadcasts).collect())
    assert first_block not in cached
    bc.unpersist()


def test_destroyed_broadcast_fails_tasks_naming_it(any_ctx):
    bc = any_ctx.broadcast([1, 2, 3])
    rdd = any_ctx.parallelize(range(4), 2)
    assert rdd.map(lambda x: x + len(bc.value)).collect() == [3, 4, 5, 6]
    bc.destroy()
    with pytest.raises(Exception, match=rf"Broadcast\({bc.id}\) after it was destroyed"):
        rdd.map(lambda x: x + len(bc.value)).collect()
    with pytest.raises(RuntimeError, match=rf"Broadcast\({bc.id}\) after it was destroyed"):
        bc.value
    with pytest.raises(RuntimeError, match="destroyed"):
        bc.unpersist()
    bc.destroy()  # twice is harmless


def test_broadcast_value_that_cannot_be_pickled_fails_at_once(pctx):
    with pytest.raises(pickle.PicklingError, match="Could not serialize broadcast"):
        pctx.broadcast(threading.Lock())


def test_broadcast_of_a_stopped_context_fails_clearly():
    c = Context("threads[1]")
    bc = c.broadcast(1)
    c.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        c.broadcast(2)
    with pytest.raises(RuntimeError, match=rf"Broadcast\({bc.id}\) belongs to a Context that has been stopped"):
        cloudpickle.dumps(bc)


# -- accumulators -------------------------------------------------------------------------------------------
def test_accumulator_add_and_iadd_in_tasks(any_ctx):
    acc = any_ctx.accumulator(0)
    assert isinstance(acc, Accumulator)
    any_ctx.parallelize(range(10), 4).foreach(lambda x: acc.add(x))
    assert acc.value == 45

    def plus_equals(x):
        nonlocal acc  # PySpark code writes "global acc" for a module-level one
        acc += x * 10

    any_ctx.parallelize(range(10), 3).foreach(plus_equals)
    assert acc.value == 45 + 450
    acc += 5  # on the driver too
    assert acc.value == 500 and str(acc) == "500" and repr(acc) == f"Accumulator<id={acc.aid}, value=500>"
    acc.value = 1
    assert acc.value == 1


def test_default_params_for_int_float_and_complex(any_ctx):
    f, c = any_ctx.accumulator(0.5), any_ctx.accumulator(1j)
    any_ctx.parallelize(range(4), 2).foreach(lambda x: (f.add(x / 2), c.add(complex(0, x))))
    assert f.value == 3.5 and c.value == 7j
    with pytest.raises(TypeError, match="No default accumulator param"):
        any_ctx.accumulator("text")


def test_custom_accumulator_param(any_ctx):
    vec = any_ctx.accumulator([1.0, 2.0, 3.0], VectorParam())
    any_ctx.parallelize(range(6), 3).foreach(lambda x: vec.add([x, 1.0, -1.0]))
    assert vec.value == [16.0, 8.0, -3.0]
    lists = any_ctx.accumulator([], AddingAccumulatorParam([]))
    any_ctx.parallelize(["a", "b", "c"], 3).foreach(lambda x: lists.add([x]))
    assert sorted(lists.value) == ["a", "b", "c"]


def test_accumulator_value_cannot_be_read_inside_tasks(any_ctx):
    acc = any_ctx.accumulator(0)
    with pytest.raises(Exception, match="Accumulator.value cannot be accessed inside tasks"):
        any_ctx.parallelize(range(2), 2).map(lambda x: acc.value).collect()


def test_updates_in_a_transformation_count_once_per_computed_partition(any_ctx):
    acc = any_ctx.accumulator(0)
    mapped = any_ctx.parallelize(range(100), 5).map(lambda x: (acc.add(1), x)[1])
    assert mapped.count() == 100
    assert acc.value == 100
    cached = mapped.cache()
    cached.count()
    cached.count()  # read from the cache: not computed again
    assert acc.value == 200
    cached.unpersist()


def test_updates_of_a_result_stage_run_on_the_driver_count(pctx):
    acc = pctx.accumulator(0)
    local_stages = pctx.scheduler.local_result_stages
    pairs = pctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).reduceByKey(operator.add)
    out = pairs.map(lambda kv: (acc.add(kv[1]), kv)[1]).collect()
    assert pctx.scheduler.local_result_stages == local_stages + 1  # this small stage ran in the driver
    assert sorted(out) == [("a", 4), ("b", 2)] and acc.value == 6


def test_update_of_a_killed_task_attempt_is_not_counted(sctx, tmp_path):
    acc = sctx.accumulator(0)
    marker = str(tmp_path / "killed")
    out = sctx.parallelize(range(8), 4).map(functools.partial(_add_then_die_once, acc, marker)).collect()
    assert out == list(range(8)) and os.path.exists(marker)  # the task of x == 3 ran twice
    assert acc.value == sum(range(8))


def test_update_of_the_losing_speculative_copy_is_not_counted(sctx, tmp_path):
    acc = sctx.accumulator(0)
    marker = str(tmp_path / "straggler")
    launches, wins = sctx.executor.speculative_launches, sctx.executor.speculative_wins
    rdd = sctx.parallelize(range(8), 4).mapPartitionsWithIndex(
        functools.partial(_add_slowly_on_first_attempt, acc, marker))
    assert rdd.collect() == list(range(8))
    assert (sctx.executor.speculative_launches - launches, sctx.executor.speculative_wins - wins) == (1, 1)
    assert _wait_for(lambda: os.path.exists(marker + ".done"))  # the original finished too, and lost
    assert sctx.parallelize([1], 1).count() == 1  # its worker is free again
    assert acc.value == 4  # one add per partition: the backup's 1, not the original's 1000


# -- checkpoints: lazily created singletons (Spark Streaming's recipe) ----------------------------------------
# As in recoverable_network_wordcount.py: the broadcast and the accumulator are not captured by the
# checkpointed functions, but got each batch from these getters, which create them on first use.
def getWordExcludeList(sparkContext):
    if "wordExcludeList" not in globals():
        globals()["wordExcludeList"] = sparkContext.broadcast(["a", "b", "c"])
    return globals()["wordExcludeList"]


def getDroppedWordsCounter(sparkContext):
    if "droppedWordsCounter" not in globals():
        globals()["droppedWordsCounter"] = sparkContext.accumulator(0)
    return globals()["droppedWordsCounter"]


def _forget_singletons() -> None:
    """What a new driver process starts with: neither singleton."""
    globals().pop("wordExcludeList", None)
    globals().pop("droppedWordsCounter", None)


BATCHES = [["a x b y", "x z"], ["c c x"], ["y a", "w"], ["b b b", "z q"], ["q"]]


def createContext(ctx: Context, clock: ManualClock, checkpoint: str, output_path: str) -> StreamingContext:
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    ssc.checkpoint(checkpoint)
    lines = ssc.queueStream(BATCHES)
    words = lines.flatMap(lambda line: line.split(" "))
    wordCounts = words.map(lambda x: (x, 1)).reduceByKey(operator.add)

    def echo(time, rdd):
        # Get or register the excludeList Broadcast
        excludeList = getWordExcludeList(rdd.context)
        # Get or register the droppedWordsCounter Accumulator
        droppedWordsCounter = getDroppedWordsCounter(rdd.context)

        # Use excludeList to drop words and use droppedWordsCounter to count them
        def filterFunc(wordCount):
            if wordCount[0] in excludeList.value:
                droppedWordsCounter.add(wordCount[1])
                return False
            else:
                return True

        counts = sorted(rdd.filter(filterFunc).collect())
        with open(output_path, "a") as f:
            f.write(repr((time.strftime("%S"), counts, droppedWordsCounter.value)) + "\n")

    wordCounts.foreachRDD(echo)
    return ssc


def _outputs(path: str) -> list:
    with open(path) as f:
        return [ast.literal_eval(line) for line in f]


def test_singleton_broadcast_and_accumulator_are_recreated_after_a_restart(tmp_path):
    checkpoint, output = str(tmp_path / "checkpoint"), str(tmp_path / "out.txt")
    _forget_singletons()
    first = Context("local[2]")
    ssc = StreamingContext.getOrCreate(checkpoint, lambda: createContext(first, ManualClock(), checkpoint, output))
    ssc.start()
    try:
        advance(ssc, 2)
        made = (globals()["wordExcludeList"], globals()["droppedWordsCounter"])
    finally:
        ssc.stop(stopSparkContext=True)  # the driver "dies"; a new process would have neither singleton
    _forget_singletons()
    assert _outputs(output) == [("01", [("x", 2), ("y", 1), ("z", 1)], 2),
                                ("02", [("x", 1)], 4)]

    second = Context("local[2]")
    restored = StreamingContext.getOrCreate(checkpoint, lambda: pytest.fail("setup must not run"),
                                            clock=ManualClock(start=2.0))
    try:
        assert restored.sparkContext is second and restored.restored_from is not None
        restored.start()
        advance(restored, 3)
        # made afresh, on the new Context: the counter counts from zero again (Spark cannot recover it)
        assert globals()["wordExcludeList"] is not made[0] and globals()["droppedWordsCounter"] is not made[1]
        assert globals()["droppedWordsCounter"].value == 4
    finally:
        restored.stop(stopSparkContext=True)
        _forget_singletons()
    assert _outputs(output)[2:] == [("03", [("w", 1), ("y", 1)], 1),
                                    ("04", [("q", 1), ("z", 1)], 4),
                                    ("05", [("q", 1)], 4)]


def test_broadcast_captured_by_a_checkpointed_stream_fails_at_start(ctx, tmp_path):
    bc = ctx.broadcast({"a"})
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path / "cp"))
    collect(ssc.queueStream([["a", "b"]]).filter(lambda w: w not in bc.value))
    with pytest.raises(SerializationError, match=rf"Broadcast\({bc.id}\) is captured by a function of a "
                                                 r"checkpointed stream.*singleton"):
        ssc.start()
    ssc.stop(stopSparkContext=False)


def test_accumulator_captured_by_a_checkpointed_output_fails_at_start(ctx, tmp_path):
    acc = ctx.accumulator(0)
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path / "cp"))
    ssc.queueStream([["a", "b"]]).foreachRDD(lambda rdd: acc.add(rdd.count()))
    with pytest.raises(SerializationError, match=r"Accumulator<id=\d+, value=0> is captured"):
        ssc.start()
    ssc.stop(stopSparkContext=False)


def test_shared_variables_in_a_stream_without_checkpoint(ctx):
    bc, acc = ctx.broadcast({"a"}), ctx.accumulator(0)
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    out = collect(ssc.queueStream([["a", "b", "c"], ["a"]]).filter(lambda w: w not in bc.value or acc.add(1)))
    ssc.start()
    try:
        advance(ssc, 2)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [["b", "c"], []] and acc.value == 2


def test_checkpoint_pickling_refuses_shared_variables(ctx):
    bc, acc = ctx.broadcast(1), ctx.accumulator(0)
    with pickling_for_checkpoint():
        with pytest.raises(SharedVariableInCheckpointError, match=rf"Broadcast\({bc.id}\)"):
            serialization.dumps(lambda: bc.value)
        with pytest.raises(SharedVariableInCheckpointError, match="Accumulator"):
            serialization.dumps(lambda: acc.add(1))
    serialization.dumps(lambda: (bc.value, acc.add(1)))  # for tasks it is fine
