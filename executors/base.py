"""The executor interface: run task functions in parallel and keep blocks for them.

An executor knows tasks and Arrow tables, not streams or RDDs. Two methods are required (``submit`` and
``shutdown``); ``run_tasks`` derives from them. Backends: ``threads`` (ThreadExecutor), ``processes``
(ProcessExecutor) and ``dask`` (an existing Dask cluster); they register by name and import lazily, as fsspec's do.

While a task runs, ``TaskContext.get()`` in its thread returns its context; the accumulator updates it
collects there travel back with its result (``TimedResult.accumulators``), and broadcast values are read
through ``executors.broadcasts`` (once per process).

Speculation (Spark's ``spark.speculation``) is described by ``SpeculationConf``; ``speculatable`` is the
pure rule deciding which running tasks of a stage get a backup copy. Backends that can run a copy use them.
"""
from __future__ import annotations

import math
import statistics
import threading
import traceback
from abc import ABC, abstractmethod
from concurrent.futures import Future, wait, FIRST_EXCEPTION
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import cloudpickle

from dstream.executors import broadcasts
from dstream.executors.blockstore import BlockStore
from dstream.executors.conf_values import parse_bool, parse_float
from dstream.executors.plugins import LazyRegistry

#: the TaskContext of the task running in this thread (``TaskContext.get()``)
_running = threading.local()


@dataclass
class TaskContext:
    """What a running task knows about itself (Spark's TaskContext)."""

    #: the block store holding cached partitions and shuffle buckets
    store: BlockStore
    #: the index of the partition the task computes
    partition_id: int = 0
    #: a short description for error messages, e.g. "stage 3 (collect) partition 1"
    description: str = ""
    #: accumulator updates this task made, by accumulator id; they travel back with its result
    accumulator_updates: dict[int, Any] = field(default_factory=dict)

    @staticmethod
    def get() -> "TaskContext | None":
        """The context of the task running in this thread; None outside tasks (PySpark's TaskContext.get)."""
        return getattr(_running, "tc", None)


class TaskError(RuntimeError):
    """A task failed; the message carries the task and the user's traceback from the worker."""

    def __init__(self, description: str, cause: BaseException | None, remote_traceback: str = ""):
        self.description = description
        self.remote_traceback = remote_traceback
        self.cause = cause
        msg = f"{description} failed: {type(cause).__name__ if cause else 'error'}: {cause}"
        if remote_traceback:
            msg += "\n\n--- traceback from the executor ---\n" + remote_traceback.rstrip()
        super().__init__(msg)

    def __reduce__(self):
        return (TaskError, (self.description, self.cause, self.remote_traceback))


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@dataclass
class TimedResult:
    """A task's result with when (wall clock) and where (process id) it ran. A table inside still
    travels from a worker process as Arrow IPC."""

    value: Any
    start: float
    end: float
    worker: int
    #: the task's accumulator updates by accumulator id (None when it made none)
    accumulators: dict[int, Any] | None = None


@dataclass
class Task:
    """One unit of work: ``fn(TaskContext)`` for one partition."""

    fn: Callable[[TaskContext], Any]
    partition_id: int
    description: str = ""
    #: the blocks the task may read (cached partitions, driver data, shuffle buckets); an executor whose
    #: workers share nothing (Dask) makes them the task's inputs, others let a task read any block
    reads: tuple[str, ...] = ()


def execute_task(task: Task, store: BlockStore) -> Any:
    """Run ``task`` against ``store``, turning any exception into a TaskError with its traceback.

    While it runs, ``TaskContext.get()`` in this thread returns its context (with a fresh, empty set of
    accumulator updates); broadcast values cached in this process whose blocks are gone are dropped first.
    """
    tc = TaskContext(store=store, partition_id=task.partition_id, description=task.description)
    outer = getattr(_running, "tc", None)
    _running.tc = tc
    try:
        broadcasts.evict_removed()
        return task.fn(tc)
    except TaskError:
        raise
    except BaseException as exc:  # noqa: BLE001 - any user error becomes a task failure
        remote_traceback = format_exception(exc)  # before _portable drops the traceback
        raise TaskError(task.description or f"task {task.partition_id}", _portable(exc),
                        remote_traceback) from None
    finally:
        _running.tc = outer


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles, else a RuntimeError with its text."""
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        exc.__traceback__ = None
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class SpeculationConf:
    """Straggler mitigation settings (Spark's ``spark.speculation.*``), read from ``dstream.speculation*``.

    Within one stage, once ``quantile`` of its tasks have finished, a task still running longer than
    ``multiplier`` times the median duration of the finished ones, and longer than ``min_runtime`` seconds,
    gets one backup copy; the first copy to finish wins.
    """

    #: ``dstream.speculation``: whether slow tasks get backup copies
    enabled: bool = False
    #: ``dstream.speculation.multiplier``: how many times slower than the median a task must be
    multiplier: float = 1.5
    #: ``dstream.speculation.quantile``: the fraction of a stage's tasks that must finish first
    quantile: float = 0.75
    #: ``dstream.speculation.minRuntime``: seconds a task must have run before it is copied
    min_runtime: float = 0.1

    KEYS = {"dstream.speculation": "enabled", "dstream.speculation.multiplier": "multiplier",
            "dstream.speculation.quantile": "quantile", "dstream.speculation.minRuntime": "min_runtime"}

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> "SpeculationConf":
        """The settings in a Context's conf (values may be strings, as in Spark's conf)."""
        unknown = sorted(k for k in conf if k.startswith("dstream.speculation") and k not in cls.KEYS)
        if unknown:
            raise ValueError(f"unknown configuration key {unknown[0]!r}; known: {sorted(cls.KEYS)}")
        values: dict[str, Any] = {}
        for key, name in cls.KEYS.items():
            if key in conf:
                values[name] = parse_bool(key, conf[key]) if name == "enabled" else parse_float(key, conf[key])
        made = cls(**values)
        if made.multiplier <= 0:
            raise ValueError(f"dstream.speculation.multiplier must be positive, got {made.multiplier}")
        if not 0 <= made.quantile <= 1:
            raise ValueError(f"dstream.speculation.quantile must be between 0 and 1, got {made.quantile}")
        if made.min_runtime < 0:
            raise ValueError(f"dstream.speculation.minRuntime must be at least 0 seconds, got {made.min_runtime}")
        return made


def speculatable(finished: Sequence[float], running: Mapping[int, float], num_tasks: int,
                 conf: SpeculationConf) -> list[int]:
    """Which running tasks deserve a backup copy, slowest first (Spark's ``checkSpeculatableTasks``).

    ``finished`` holds the durations of the stage's finished tasks, ``running`` the elapsed seconds of its
    running tasks that have no copy yet, by task index; ``num_tasks`` is the stage's size.
    """
    if not conf.enabled or not finished or len(finished) < max(1, math.floor(conf.quantile * num_tasks)):
        return []
    threshold = max(conf.multiplier * statistics.median(finished), conf.min_runtime)
    return sorted((i for i, elapsed in running.items() if elapsed > threshold), key=lambda i: -running[i])


class Executor(ABC):
    """Runs tasks in parallel and owns the block store the tasks share."""

    #: how many tasks can run at once
    num_workers: int
    #: where tasks keep cached partitions and shuffle buckets
    store: BlockStore
    #: whether tasks run in the driver's process on the driver's own objects (not pickled copies)
    shares_driver_memory: bool = False
    #: whether a task can read only the blocks it declares (``Task.reads``) and those it put itself
    #: (workers that share no memory or disk); the scheduler fills in ``reads`` only then
    needs_declared_reads: bool = False
    #: straggler mitigation; backends that cannot run backup copies ignore it
    speculation: SpeculationConf = SpeculationConf()
    #: backup copies of slow tasks started so far
    speculative_launches: int = 0
    #: backup copies that finished before their original
    speculative_wins: int = 0

    @abstractmethod
    def submit_task(self, task: Task) -> Future:
        """Start ``task``; the future holds its result or its TaskError."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop the workers and free the block store."""

    def run_tasks(self, tasks: Sequence[Task]) -> list[Any]:
        """Run all tasks, wait for them, return their results in order; raise the first failure."""
        futures = [self.submit_task(t) for t in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()
        return [f.result() for f in futures]

    def remove_blocks(self, prefix: str) -> None:
        self.store.remove_prefix(prefix)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


#: executor backends by name, imported when first asked for
BACKENDS: LazyRegistry[Executor] = LazyRegistry("executor backend", {
    "threads": "dstream.executors.threads:ThreadExecutor",
    "processes": "dstream.executors.processes:ProcessExecutor",
    "dask": "dstream.executors.dask:DaskExecutor",
})


def register_backend(name: str, target: str) -> None:
    """Register an executor backend as ``"module:Class"`` under ``name``."""
    BACKENDS.register(name, target)


def get_backend(name: str) -> type[Executor]:
    """The executor class registered as ``name`` (``threads``, ``processes``, ``dask`` or a plugin)."""
    return BACKENDS.get(name)
