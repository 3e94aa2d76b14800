"""The DAG scheduler: cut an RDD's lineage into stages at shuffle boundaries and run them as tasks.

The driver knows datasets only through this small protocol: ``id``, ``num_partitions``,
``dependencies`` (a list of NarrowDependency / ShuffleDependency), optionally ``is_available()``
(True when every partition is already materialised, e.g. cached or checkpointed, so its parents need not
run) and ``_blocks_read(split, exists)`` (the blocks a task computing ``split`` may read, declared to
executors whose workers share nothing). Operator semantics live in ``dstream``; the scheduler only orders
and runs tasks.
"""
from __future__ import annotations

import functools
import os
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

from dstream.executors import block_ids
from dstream.executors.base import Executor, Task, TaskContext, TimedResult, execute_task


class Dataset(Protocol):
    def id(self) -> int: ...
    num_partitions: int
    dependencies: list["Dependency"]


class Dependency:
    """An edge of the lineage graph: this dataset reads ``rdd``."""

    def __init__(self, rdd: Any) -> None:
        self.rdd = rdd


class NarrowDependency(Dependency):
    """Each partition reads a bounded set of parent partitions: fused into the same task."""


class ShuffleDependency(Dependency):
    """A stage boundary: the parent's partitions are hash-partitioned into buckets first.

    ``map_task(map_index)`` returns the function an executor runs to write the buckets of one parent
    partition; that function returns a ``MapStatus``. A shuffle dependency pickles without its parent, so
    a reduce task never ships the lineage of the stage before it.
    """

    _ids = itertools.count()

    def __init__(self, rdd: Any, num_partitions: int, map_task: Callable[[int], Callable[[TaskContext], Any]]):
        super().__init__(rdd)
        #: unique id naming this shuffle's blocks (``block_ids.shuffle_block``)
        self.shuffle_id = next(ShuffleDependency._ids)
        #: number of reduce-side buckets
        self.num_partitions = num_partitions
        #: number of map-side partitions (the parent's)
        self.num_maps = rdd.num_partitions
        self.map_task = map_task

    def __getstate__(self) -> dict:
        return {"shuffle_id": self.shuffle_id, "num_partitions": self.num_partitions,
                "num_maps": self.num_maps, "rdd": None, "map_task": None}

    @staticmethod
    def block_id(shuffle_id: int, map_index: int, reduce_index: int) -> str:
        """The block holding one bucket of one map output (``block_ids.shuffle_block``)."""
        return block_ids.shuffle_block(shuffle_id, map_index, reduce_index)


@dataclass(frozen=True)
class MapStatus:
    """What one shuffle map task reports back (Spark's MapStatus): the rows it wrote to each bucket.

    An empty bucket writes no block; the scheduler sums ``rows`` per shuffle to decide whether a final stage
    reading only small shuffles runs on the driver.
    """

    shuffle_id: int
    map_index: int
    #: rows written to each reduce bucket, by reduce index
    bucket_rows: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Rows written to all buckets together."""
        return sum(self.bucket_rows)

    def block_ids(self) -> list[str]:
        """The blocks this map output wrote (its non-empty buckets)."""
        return [block_ids.shuffle_block(self.shuffle_id, self.map_index, r)
                for r, n in enumerate(self.bucket_rows) if n]


@dataclass
class TaskRecord:
    """When and where a task ran (for listeners and the parallel-recovery tests)."""

    stage: str
    partition: int
    start: float
    end: float
    worker: int


def _timed_split(make: Callable[[int], Callable[[TaskContext], Any]], tc: TaskContext) -> TimedResult:
    """Run on the executor: the function ``make`` gives for this task's partition, timed. Every task of a
    stage shares one such function, so an executor can pickle (and a worker unpickle) it once a stage."""
    return _timed(make(tc.partition_id), tc)


def _timed(fn: Callable[[TaskContext], Any], tc: TaskContext) -> TimedResult:
    """Run on the executor: the task's result with its timing and its accumulator updates."""
    start = time.time()
    result = fn(tc)
    return TimedResult(result, start, time.time(), os.getpid(), tc.accumulator_updates or None)


class DAGScheduler:
    """Runs jobs: the shuffle stages a dataset needs (independent ones together), then its result tasks."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._done_shuffles: set[int] = set()
        self._lock = threading.Lock()
        self._stage_ids = itertools.count()
        #: task timings of recent jobs, newest last (bounded)
        self.task_records: list[TaskRecord] = []
        self.keep_task_records = 10_000
        #: rows each written shuffle holds, from its map tasks' reports
        self._shuffle_rows: dict[int, int] = {}
        #: a result stage that reads only shuffles this small (rows in all) runs on the driver
        self.local_result_max_rows = 4096
        #: how many result stages ran on the driver (for tests and benchmarks)
        self.local_result_stages = 0
        #: how failed tasks are retried (a ``driver.retries.TaskRetries``, set by the Context from
        #: ``spark.task.maxFailures``); None: each task gets one attempt
        self.task_retries: Any = None
        #: called with the accumulator updates of each task result the scheduler accepts (one per
        #: partition of a finished stage; failed attempts and losing speculative copies bring none)
        self.on_accumulator_updates: Callable[[dict[int, Any]], None] | None = None

    def run_job(self, rdd: Dataset, func: Callable[[TaskContext], Any] | Callable[[int, TaskContext], Any],
                partitions: Sequence[int] | None = None, description: str = "job",
                local_ok: bool = False) -> list[Any]:
        """Run ``func(partition_index, tc)`` on each partition of ``rdd``, parents' shuffles first.

        With ``local_ok`` (jobs that only bring results back: collect, count, take), a result stage
        that reads nothing but small shuffle outputs runs on the driver: it saves a round trip to the
        executors, which is most of a tiny batch's cost.
        """
        self.run_stages(self.missing_shuffles([rdd]))
        parts = range(rdd.num_partitions) if partitions is None else partitions
        stage = f"stage {next(self._stage_ids)} ({description})"
        run = functools.partial(_timed_split, functools.partial(functools.partial, func))
        tasks = [self._task(run, rdd, i, f"{stage} partition {i}") for i in parts]
        if local_ok and tasks and self._reads_only_small_shuffles(rdd):
            self.local_result_stages += 1
            if self.task_retries is None:
                outputs = [execute_task(t, self.executor.store) for t in tasks]
            else:
                outputs = self.task_retries.run_local(self.executor.store, stage, tasks)
            self._apply_accumulator_updates(outputs)
            return [o.value for o in outputs]
        return self._run(stage, tasks)

    def _task(self, run: Callable[[TaskContext], Any], rdd: Dataset, split: int, description: str) -> Task:
        """The task computing partition ``split`` of ``rdd`` with ``run`` (shared by the stage's tasks); where
        the executor's workers share nothing, it declares the blocks it may read (the dataset's optional
        ``_blocks_read``)."""
        reads: tuple[str, ...] = ()
        blocks_read = getattr(rdd, "_blocks_read", None)
        if self.executor.needs_declared_reads and blocks_read is not None:
            reads = tuple(dict.fromkeys(blocks_read(split, self.executor.store.contains)))
        return Task(run, split, description, reads)

    def _reads_only_small_shuffles(self, rdd: Dataset) -> bool:
        """True when every input of ``rdd``'s final stage is a written shuffle, and all are small."""
        rows, stack, seen = 0, [rdd], set()
        while stack:
            r = stack.pop()
            if r.id() in seen:
                continue
            seen.add(r.id())
            if not r.dependencies:
                return False  # a source (files, parallelised data, cached blocks): size unknown
            for dep in r.dependencies:
                if isinstance(dep, ShuffleDependency):
                    with self._lock:
                        n = self._shuffle_rows.get(dep.shuffle_id)
                    if n is None:
                        return False
                    rows += n
                else:
                    stack.append(dep.rdd)
        return rows <= self.local_result_max_rows

    def run_jobs(self, jobs: Sequence[tuple[Dataset, Callable[[int, TaskContext], Any]]],
                 description: str = "jobs") -> list[list[Any]]:
        """Run several independent jobs together, so their tasks share the executors (parallel recovery)."""
        self.run_stages(self.missing_shuffles([rdd for rdd, _ in jobs]))
        stage = f"stage {next(self._stage_ids)} ({description})"
        tasks, spans = [], []
        for rdd, func in jobs:
            first = len(tasks)
            run = functools.partial(_timed_split, functools.partial(functools.partial, func))
            tasks += [self._task(run, rdd, i, f"{stage} partition {i}") for i in range(rdd.num_partitions)]
            spans.append((first, len(tasks)))
        results = self._run(stage, tasks)
        return [results[a:b] for a, b in spans]

    def missing_shuffles(self, rdds: Iterable[Dataset]) -> list[list[ShuffleDependency]]:
        """The shuffles not yet written that ``rdds`` need, in waves: each wave needs only earlier ones."""
        levels: dict[int, int] = {}
        deps: dict[int, ShuffleDependency] = {}

        def visit(rdd: Dataset, seen: set[int]) -> int:
            if rdd.id() in seen:
                return 0
            seen.add(rdd.id())
            available = getattr(rdd, "is_available", None)
            if available is not None and available():
                return 0
            depth = 0
            for dep in rdd.dependencies:
                if isinstance(dep, ShuffleDependency):
                    with self._lock:
                        done = dep.shuffle_id in self._done_shuffles
                    if done:
                        continue
                    if dep.shuffle_id not in levels:
                        levels[dep.shuffle_id] = visit(dep.rdd, set()) + 1
                        deps[dep.shuffle_id] = dep
                    depth = max(depth, levels[dep.shuffle_id])
                else:
                    depth = max(depth, visit(dep.rdd, seen))
            return depth

        for rdd in rdds:
            visit(rdd, set())
        waves: dict[int, list[ShuffleDependency]] = {}
        for sid, level in levels.items():
            waves.setdefault(level, []).append(deps[sid])
        return [waves[k] for k in sorted(waves)]

    def run_stages(self, waves: list[list[ShuffleDependency]]) -> None:
        for wave in waves:
            stage = f"stage {next(self._stage_ids)} (shuffle {','.join(str(d.shuffle_id) for d in wave)})"
            tasks = [self._task(run, dep.rdd, m, f"{stage} map {m}")
                     for dep in wave for run in [functools.partial(_timed_split, dep.map_task)]
                     for m in range(dep.num_maps)]
            statuses = iter(self._run(stage, tasks))
            with self._lock:
                for dep in wave:
                    written = [next(statuses) for _ in range(dep.num_maps)]
                    self._shuffle_rows[dep.shuffle_id] = sum(s.rows for s in written if isinstance(s, MapStatus))
                self._done_shuffles.update(d.shuffle_id for d in wave)

    def forget_shuffle(self, shuffle_id: int) -> None:
        """Drop a shuffle's buckets (its dataset is gone)."""
        with self._lock:
            self._done_shuffles.discard(shuffle_id)
            self._shuffle_rows.pop(shuffle_id, None)
        try:
            self.executor.remove_blocks(block_ids.shuffle_prefix(shuffle_id))
        except Exception:  # noqa: BLE001 - best effort during shutdown
            pass

    def _run(self, stage: str, tasks: list[Task]) -> list[Any]:
        if not tasks:
            return []
        retries = self.task_retries
        outputs = self.executor.run_tasks(tasks) if retries is None else retries.run(self.executor, stage, tasks)
        records = [TaskRecord(stage, t.partition_id, o.start, o.end, o.worker) for t, o in zip(tasks, outputs)]
        with self._lock:
            self.task_records.extend(records)
            if len(self.task_records) > self.keep_task_records:
                del self.task_records[: len(self.task_records) - self.keep_task_records]
        self._apply_accumulator_updates(outputs)
        return [o.value for o in outputs]

    def _apply_accumulator_updates(self, outputs: Sequence[TimedResult]) -> None:
        """Hand the accepted results' accumulator updates to the driver's accumulators, in partition order."""
        if self.on_accumulator_updates is None:
            return
        for o in outputs:
            if o.accumulators:
                self.on_accumulator_updates(o.accumulators)
