"""A stage's tasks share one function: the process executor pickles it once a stage, a worker unpickles it
once (``executors.task_pickling``), and each task still gets its own partition."""
from __future__ import annotations

import functools

from dstream import Context
from dstream.executors import serialization, task_pickling
from dstream.executors.base import Task, TaskContext, execute_task
from dstream.executors.blockstore import MemoryBlockStore


def _scaled(factor: int, tc: TaskContext) -> int:
    return tc.partition_id * factor


def test_a_stages_shared_function_is_pickled_once_and_unpickled_once(monkeypatch):
    pickled: list = []
    real_dumps = serialization.dumps
    monkeypatch.setattr(serialization, "dumps", lambda obj, protocol=None: pickled.append(obj) or real_dumps(obj))
    shared = functools.partial(_scaled, 10)
    pickler = task_pickling.StagePickler()
    payloads = [pickler.dumps(Task(shared, i, f"stage 1 partition {i}", (f"rdd_1_{i}",))) for i in range(3)]
    assert pickled == [shared]  # once for the stage
    tasks = [serialization.loads(p) for p in payloads]
    assert [(t.partition_id, t.description, t.reads) for t in tasks] == [
        (i, f"stage 1 partition {i}", (f"rdd_1_{i}",)) for i in range(3)]
    assert tasks[0].fn is tasks[1].fn is tasks[2].fn  # unpickled once in this process
    assert [execute_task(t, MemoryBlockStore()) for t in tasks] == [0, 10, 20]
    pickler.dumps(Task(functools.partial(_scaled, 2), 0))
    assert len(pickled) == 2  # the next stage's function is pickled again


def test_jobs_on_worker_processes_give_each_task_its_partition():
    with Context("local[2]") as ctx:
        rdd = ctx.parallelize(range(12), 6)
        assert rdd.mapPartitionsWithIndex(lambda i, it: [(i, sum(it))]).collect() == [
            (i, 4 * i + 1) for i in range(6)]
        assert sorted(rdd.map(lambda x: (x % 3, x)).reduceByKey(lambda a, b: a + b, 3).collect()) == [
            (0, 18), (1, 22), (2, 26)]
