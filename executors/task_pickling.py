"""Pickling the tasks of a stage with their shared function pickled once.

The DAG scheduler gives every task of a stage the same function (it picks its partition from the
TaskContext), so an executor pickles that function, with the lineage it holds, once a stage
(``StagePickler``) and a worker unpickles it once (``_rebuild_task`` keeps the newest few), instead of once a
task: with 16 partitions, a sixteenth of the work on each side.
"""
from __future__ import annotations

import pickle
import threading
from typing import Any, NamedTuple

from dstream.executors import serialization
from dstream.executors.base import Task


class _TaskWithPickledFn(NamedTuple):
    """A task whose function travels as bytes pickled once for the whole stage (``StagePickler``)."""

    fn: bytes
    partition_id: int
    description: str
    reads: tuple[str, ...]

    def __reduce__(self) -> tuple:
        return _rebuild_task, tuple(self)


#: functions unpickled in this process, by their pickled bytes (the newest few stages)
_unpickled_fns: dict[bytes, Any] = {}
_UNPICKLED_FNS_KEPT = 8


def _rebuild_task(fn: bytes, partition_id: int, description: str, reads: tuple[str, ...]) -> Any:
    """Unpickle a ``_TaskWithPickledFn`` as a Task, its function unpickled once for all of its stage's tasks."""
    function = _unpickled_fns.get(fn)
    if function is None:
        function = serialization.loads(fn)
        if len(_unpickled_fns) >= _UNPICKLED_FNS_KEPT:
            _unpickled_fns.pop(next(iter(_unpickled_fns)))
        _unpickled_fns[fn] = function
    return Task(function, partition_id, description, reads)


class StagePickler:
    """Pickles tasks for an executor, each distinct function once: the tasks of a stage share one function
    (the DAG scheduler builds them so), and pickling it, lineage and all, is most of a task's cost."""

    def __init__(self) -> None:
        self._fn: Any = None
        self._fn_bytes = b""
        self._lock = threading.Lock()

    def dumps(self, task: Task) -> bytes:
        """``task`` as bytes that ``serialization.loads`` turns back into a Task."""
        with self._lock:
            if task.fn is not self._fn:
                self._fn_bytes, self._fn = serialization.dumps(task.fn), task.fn
            fn_bytes = self._fn_bytes
        return pickle.dumps(_TaskWithPickledFn(fn_bytes, task.partition_id, task.description, task.reads),
                            protocol=5)
