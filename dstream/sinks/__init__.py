"""Sinks: how a batch's output is written exactly once (core layer: the interface and the registry only).

A ``Sink`` writes an RDD to a *target* (a directory URL for the file sinks, a batch id for foreachBatch) in
three steps that ``Sink.save`` runs in order:

1. ``is_committed(target)``: a committed target is skipped (``if_exists="skip"``, replayed batches) or
   refused (``"error"``);
2. ``setup`` then ``write``: by default one job whose tasks run ``write_partition`` on the executors, each
   writing its partition where nothing reads it yet and returning what the commit needs;
3. ``commit(job, results)`` on the driver: one atomic step publishes the whole batch.

A crash anywhere before step 3 leaves the target uncommitted, so the replayed batch writes it again, once.
The file sinks' commit is a ``Committer`` chosen by the filesystem (``dstream.driver.commit``): renames on
local disk; on object stores, which have no atomic rename, parts written once under unique names and
published by one PUT of the ``_SUCCESS`` manifest.

Implementations register by name as ``"module:Class"`` and are imported on first use, as executor
backends are (``get_backend``): ``text`` and ``parquet`` (``dstream.sinks.files``), ``foreachBatch``
(``dstream.sinks.foreach_batch``); add your own with ``register_sink``. This module imports no I/O code, so
core modules (``dstream.rdd``) can use it; the implementations live in the io layer.
"""
from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from dstream.executors.plugins import LazyRegistry

if TYPE_CHECKING:
    from dstream.driver.storage import Location
    from dstream.executors.base import TaskContext
    from dstream.rdd import RDD

__all__ = ["Sink", "WriteJob", "IfExists", "SUCCESS", "Target", "batch_path", "get_sink", "register_sink"]

#: the object a file sink writes last: a directory holding it is committed (it holds the JSON manifest of
#: the batch's parts, ``dstream.driver.commit``)
SUCCESS = "_SUCCESS"

#: where a sink publishes a batch: a URL, a ``Location`` (a URL with fsspec storage options, which travel to
#: the tasks), or a batch id for sinks that are not files
Target = Union[str, "Location"]

#: what ``Sink.save`` does with a target that is already committed: raise FileExistsError, or skip it
IfExists = Literal["error", "skip"]


@dataclass(frozen=True)
class WriteJob:
    """One attempt at writing one target; it travels to the tasks with ``write_partition``."""

    #: where (or under which id) the batch is published
    target: Target
    #: unique per attempt, so the tasks of an attempt that died never mix with a later one's
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


class Sink(ABC):
    """Writes a batch to a target exactly once: tasks write partitions, the driver commits atomically.

    Implement ``is_committed``, ``commit`` and either ``write_partition`` (tasks write in parallel, the
    usual case) or ``write`` (a whole-batch writer on the driver). Override ``setup`` to check or clear the
    target before the tasks run. Callers use ``save`` only.
    """

    #: the registry name, used in job descriptions
    name: ClassVar[str] = "sink"
    #: how error messages call a target
    target_kind: ClassVar[str] = "output"

    def save(self, rdd: "RDD", target: Target, if_exists: IfExists = "error") -> bool:
        """Write ``rdd`` to ``target`` and commit it; False when it was already committed and skipped."""
        if self.is_committed(target):
            if if_exists == "skip":
                return False
            raise FileExistsError(f"{self.target_kind} {target} already exists")
        job = self.setup(target, if_exists)
        results = self.write(rdd, job)
        self.commit(job, results)
        return True

    @abstractmethod
    def is_committed(self, target: Target) -> bool:
        """Whether ``target`` holds a committed batch."""

    def setup(self, target: Target, if_exists: IfExists) -> WriteJob:
        """Driver, before any task: prepare an uncommitted ``target`` (e.g. clear an earlier attempt)."""
        return WriteJob(target)

    def write(self, rdd: "RDD", job: WriteJob) -> list[Any]:
        """Driver: run ``write_partition`` for every partition as one job; their results, in order."""
        return rdd.ctx.run_job(rdd, functools.partial(self.write_partition, job, rdd),
                               description=f"save {self.name} {job.target}")

    def write_partition(self, job: WriteJob, rdd: "RDD", split: int, tc: "TaskContext") -> Any:
        """Task: write partition ``split`` of ``rdd`` where readers do not see it yet; return what
        ``commit`` needs to publish it (picklable)."""
        raise NotImplementedError(f"the {self.name} sink writes whole batches (write), not partitions")

    @abstractmethod
    def commit(self, job: WriteJob, results: list[Any]) -> None:
        """Driver, after every task succeeded: publish the batch in one atomic step, marking it committed."""


def batch_path(prefix: str, time_ms: int, suffix: str | None) -> str:
    """``prefix-<batch time in ms>[.suffix]``, as Spark names a batch's output."""
    return f"{prefix}-{time_ms}" + (f".{suffix}" if suffix else "")


#: sinks by name, imported when first asked for
SINKS: LazyRegistry[Sink] = LazyRegistry("sink", {
    "text": "dstream.sinks.files:TextSink",
    "parquet": "dstream.sinks.files:ParquetSink",
    "foreachBatch": "dstream.sinks.foreach_batch:ForeachBatchSink",
})


def register_sink(name: str, target: str) -> None:
    """Register a sink class as ``"module:Class"`` under ``name`` (imported on first ``get_sink``)."""
    SINKS.register(name, target)


def get_sink(name: str) -> type[Sink]:
    """The sink class registered as ``name``, importing its module now."""
    return SINKS.get(name)
