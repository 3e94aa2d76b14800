"""Task retries: a task that fails is run again, up to ``spark.task.maxFailures`` attempts in all.

Spark's rule, for user errors too: a task of a stage that raises is retried (after a short backoff that
doubles, ``dstream.task.retryBackoff`` seconds at first, at most ``dstream.task.retryBackoffMax``); only
the failed tasks of the stage run again, and the stage fails when one task has failed ``maxFailures``
times. The default is 1 attempt, Spark's default for ``local[N]`` masters (a cluster's is 4): set
``spark.task.maxFailures`` (or ``dstream.task.maxFailures``, which wins when both are set) to retry.

A worker process that dies under its task is another matter: the process pool retries that task itself
(``ProcessExecutor.max_attempts``), and an error it gives up with is not retried here again.

Each attempt's result is only accepted when it succeeds, so accumulator updates come from the accepted
attempt alone (a failed attempt's updates never reach the driver). The number of retries made by the
actions of the calling thread is counted (``task_retries_in_thread``), for the output operation infos.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from dstream.executors.base import Executor, Task, TaskContext, TaskError, execute_task
from dstream.executors.blockstore import BlockStore
from dstream.executors.conf_values import parse_float, positive_int

log = logging.getLogger(__name__)

#: the conf keys of the number of attempts of a task (the dstream one wins when both are set)
MAX_FAILURES_KEYS = ("dstream.task.maxFailures", "spark.task.maxFailures")
BACKOFF_KEY = "dstream.task.retryBackoff"
BACKOFF_MAX_KEY = "dstream.task.retryBackoffMax"

_counter = threading.local()


def task_retries_in_thread() -> int:
    """How many task retries the jobs run from this thread have made so far (a running count)."""
    return getattr(_counter, "retries", 0)


def _count_retries(n: int) -> None:
    _counter.retries = task_retries_in_thread() + n


@dataclass(frozen=True)
class _Failed:
    """What a wrapped attempt returns instead of raising, so the other tasks of the stage keep their results."""

    error: BaseException


def _attempt(task: Task, tc: TaskContext) -> Any:
    """Run on the executor: one attempt of ``task``; its TaskError is returned, not raised."""
    return _attempt_with(task, tc.store)


def _attempt_with(task: Task, store: BlockStore) -> Any:
    try:
        return execute_task(task, store)
    except TaskError as exc:
        return _Failed(exc)


@dataclass(frozen=True)
class TaskRetries:
    """How often and how patiently a failed task is retried (``from_conf`` reads the Context's conf)."""

    #: attempts of a task before its stage fails (``spark.task.maxFailures``); 1: no retry
    max_failures: int = 1
    #: seconds before the first retry of a stage's failed tasks; doubled for each further round
    backoff: float = 0.1
    #: the longest wait between two rounds
    backoff_max: float = 2.0

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> "TaskRetries":
        """The settings in a Context's conf (values may be strings, as a SparkConf holds them)."""
        values: dict[str, Any] = {}
        key = next((k for k in MAX_FAILURES_KEYS if k in conf), None)
        if key is not None:
            values["max_failures"] = positive_int(key, conf[key], "attempts of a task")
        if BACKOFF_KEY in conf:
            values["backoff"] = parse_float(BACKOFF_KEY, conf[BACKOFF_KEY], "seconds", at_least=0)
        if BACKOFF_MAX_KEY in conf:
            values["backoff_max"] = parse_float(BACKOFF_MAX_KEY, conf[BACKOFF_MAX_KEY], "seconds", at_least=0)
        return cls(**values)

    def run(self, executor: Executor, stage: str, tasks: Sequence[Task]) -> list[Any]:
        """Run a stage's tasks on ``executor``, retrying the failed ones; their results in order, or the
        error of a task that failed ``max_failures`` times (a TaskError saying which attempt it was)."""
        if self.max_failures <= 1:
            return executor.run_tasks(tasks)
        return self._rounds(stage, tasks, lambda todo: executor.run_tasks(
            [dataclasses.replace(t, fn=functools.partial(_attempt, t)) for t in todo]))

    def run_local(self, store: BlockStore, stage: str, tasks: Sequence[Task]) -> list[Any]:
        """The same for a stage that runs in the driver's process (``DAGScheduler.run_job``'s small final
        stages), one task after another against ``store``."""
        if self.max_failures <= 1:
            return [execute_task(t, store) for t in tasks]
        return self._rounds(stage, tasks, lambda todo: [_attempt_with(t, store) for t in todo])

    def _rounds(self, stage: str, tasks: Sequence[Task],
                run_round: Callable[[list[Task]], list[Any]]) -> list[Any]:
        """Run the tasks in rounds (``run_round`` gives each task's result or ``_Failed``), each round the
        failed ones of the one before, until all succeed or one has failed ``max_failures`` times."""
        results: list[Any] = [None] * len(tasks)
        failures = [0] * len(tasks)
        todo = list(range(len(tasks)))
        delay = self.backoff
        while True:
            outputs = run_round([tasks[i] for i in todo])
            failed = []
            for i, out in zip(todo, outputs):
                if isinstance(out, _Failed):
                    failures[i] += 1
                    failed.append((i, out.error))
                else:
                    results[i] = out
            if not failed:
                return results
            for i, error in failed:
                if failures[i] >= self.max_failures:
                    raise self._gave_up(tasks[i], error, failures[i])
            next_attempts = ", ".join(f"{_name(tasks[i])} attempt {failures[i] + 1} of {self.max_failures}"
                                      for i, _ in failed)
            log.warning("%s: %d of %d tasks failed, retrying them in %.2g s (%s); first error: %s", stage,
                        len(failed), len(todo), delay, next_attempts, _first_line(failed[0][1]))
            _count_retries(len(failed))
            time.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
            todo = [i for i, _ in failed]

    def _gave_up(self, task: Task, error: BaseException, attempts: int) -> BaseException:
        if not isinstance(error, TaskError):
            return error
        return TaskError(f"{error.description} (attempt {attempts} of {attempts}, spark.task.maxFailures)",
                         error.cause, error.remote_traceback)


def _name(task: Task) -> str:
    return task.description or f"task {task.partition_id}"


def _first_line(error: BaseException) -> str:
    cause = error.cause if isinstance(error, TaskError) and error.cause is not None else error
    return f"{type(cause).__name__}: {cause}".splitlines()[0]
