"""File sinks (io layer): one committer protocol for every file format, and the text and Parquet formats.

A batch is a directory of part files (``part-NNNNN[.ext]``) published by ``_SUCCESS``, which holds a JSON
manifest of the parts and their sizes (``dstream.driver.commit``). How parts get there is the job of a
``Committer`` chosen by the target's filesystem (or given to the sink):

- local disk (``RenameCommitter``): tasks write under ``<target>/_temporary/<attempt>``, the driver renames
  the parts into place and writes ``_SUCCESS`` last, as Hadoop's FileOutputCommitter does;
- object stores such as S3 (``ManifestCommitter``), which have no atomic rename: each task writes its part
  once under a final name unique to the attempt (``part-NNNNN-<attempt>-<task>[.ext]``), and the driver
  publishes the batch with one PUT of ``_SUCCESS``. Read a batch with ``committed_parts(target)``: exactly
  the parts of the committed attempt, sizes checked.

A directory with ``_SUCCESS`` is committed and never written again. Any other existing directory is
refused (``if_exists="error"``, as Hadoop's FileOutputFormat) or removed as the leftovers of attempts that
never committed (``"skip"``). Targets are fsspec URLs, or ``Location``s carrying storage options (which
travel to the executors with the tasks).
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from dstream.driver.commit import Committer, ManifestError, Part, committed_parts, committer_for
from dstream.driver.storage import Location
from dstream.executors.base import TaskContext
from dstream.rdd import RDD
from dstream.records import Partition, as_rows, as_table
from dstream.sinks import IfExists, Sink, Target, WriteJob

__all__ = ["FileSink", "TextSink", "ParquetSink", "committed_parts", "ManifestError"]


class FileSink(Sink):
    """The file committer; a subclass only says how one partition becomes one file (``encode``).

    ``committer`` fixes the commit protocol; by default it is chosen per target by its filesystem
    (``committer_for``: rename on local disk, a manifest on object stores).
    """

    target_kind: ClassVar[str] = "output directory"
    #: appended to each part file's name
    extension: ClassVar[str] = ""

    def __init__(self, committer: Committer | None = None) -> None:
        self.committer = committer

    @abstractmethod
    def encode(self, part: Partition) -> bytes | pa.Buffer | None:
        """The bytes of one partition's file; None writes no file for it."""

    def _committer(self, where: Location) -> Committer:
        return self.committer if self.committer is not None else committer_for(where)

    def is_committed(self, target: Target) -> bool:
        where = Location.of(target)
        return self._committer(where).is_committed(where)

    def setup(self, target: Target, if_exists: IfExists) -> WriteJob:
        where = Location.of(target)
        try:
            fs, path = where.fs, where.path
            fs.invalidate_cache(path)  # a cached listing would hide an earlier attempt's objects
            exists = fs.exists(path)
        except Exception as exc:  # noqa: BLE001 - any failure, named (never with a secret)
            raise where.failure("checking", exc) from None
        if exists:
            if if_exists == "error":  # as Hadoop's FileOutputFormat: even an empty directory is refused
                raise FileExistsError(f"{self.target_kind} {where} already exists")
            self._committer(where).abort(where)  # leftovers of attempts that never committed
        return WriteJob(target)

    def write_partition(self, job: WriteJob, rdd: RDD, split: int, tc: TaskContext) -> Part | None:
        """Write the part file where readers do not trust it yet; its ``Part``, or None if none."""
        data = self.encode(rdd._iterator(split, tc))
        if data is None:
            return None
        where = Location.of(job.target)
        return self._committer(where).write_part(where, job.attempt, f"part-{split:05d}", self.extension, data)

    def commit(self, job: WriteJob, results: list[Any]) -> None:
        """Publish the parts: ``_SUCCESS`` with their manifest is written last."""
        where = Location.of(job.target)
        self._committer(where).commit(where, job.attempt, [p for p in results if p is not None])

    def __repr__(self) -> str:
        committer = f"committer={self.committer!r}" if self.committer is not None else ""
        return f"{type(self).__name__}({committer})"


class TextSink(FileSink):
    """One line per record: ``str(record)`` in UTF-8, bytes records as they are (as PySpark does)."""

    name: ClassVar[str] = "text"

    def encode(self, part: Partition) -> bytes:
        if isinstance(part, pa.Table) and part.num_columns == 1 and pa.types.is_string(part.schema.field(0).type) \
                and part.column(0).null_count == 0:
            return "".join(line + "\n" for line in part.column(0).to_pylist()).encode("utf-8")
        return b"".join((x if isinstance(x, bytes) else str(x).encode("utf-8")) + b"\n" for x in as_rows(part))


class ParquetSink(FileSink):
    """One Parquet file per non-empty partition, with the partition's Arrow types."""

    name: ClassVar[str] = "parquet"
    extension: ClassVar[str] = ".parquet"

    def encode(self, part: Partition) -> pa.Buffer | None:
        table = as_table(part)
        if table.num_rows == 0:
            return None  # a null-typed file would make the batch's files unreadable as one dataset
        out = pa.BufferOutputStream()
        pq.write_table(table, out)
        return out.getvalue()
