"""The foreachBatch sink (io layer): the user's ``func(rdd, batch_time_ms)`` is the writer."""
from __future__ import annotations

import posixpath
from typing import Any, Callable, ClassVar

from dstream.io import url_to_fs
from dstream.rdd import RDD
from dstream.sinks import Sink, WriteJob

__all__ = ["ForeachBatchSink"]


class ForeachBatchSink(Sink):
    """Runs ``func(rdd, batch_time_ms)`` on the driver for a batch; the target is the batch time in ms.

    How the sink steps map onto a user function:

    - ``write``: ``func`` gets the whole batch on the driver (it may run its own jobs), so this sink
      overrides ``write`` and has no ``write_partition``.
    - ``commit`` and ``is_committed``: without ``commit_dir`` (``DStream.foreachBatch``), commit does
      nothing and no batch is ever committed, so ``func`` runs for every batch, replayed ones included
      (at least once): a sink written in ``func`` should be idempotent by batch time, as Spark's
      foreachBatch asks. With ``commit_dir`` (an fsspec URL), a batch whose ``func`` returned gets an empty
      marker file ``batch-<time>`` there, and a later save of that batch is skipped. A crash after ``func``
      returned but before the marker was written still runs ``func`` again.
    """

    name: ClassVar[str] = "foreachBatch"
    target_kind: ClassVar[str] = "batch"

    def __init__(self, func: Callable[[RDD, int], Any], commit_dir: str | None = None) -> None:
        self.func = func
        self.commit_dir = commit_dir

    def is_committed(self, target: str) -> bool:
        if self.commit_dir is None:
            return False
        fs, marker = self._marker(target)
        return fs.exists(marker)

    def write(self, rdd: RDD, job: WriteJob) -> list[Any]:
        self.func(rdd, int(job.target))
        return []

    def commit(self, job: WriteJob, results: list[Any]) -> None:
        if self.commit_dir is None:
            return
        fs, marker = self._marker(job.target)
        fs.makedirs(posixpath.dirname(marker), exist_ok=True)
        fs.pipe_file(marker, b"")

    def _marker(self, target: str) -> tuple[Any, str]:
        fs, directory = url_to_fs(self.commit_dir)
        return fs, posixpath.join(directory, f"batch-{int(target)}")
