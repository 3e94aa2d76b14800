"""File sinks (io layer): a committer shared by every file format, and the text and Parquet formats.

Each task writes its partition as ``part-NNNNN[.ext]`` under ``<target>/_temporary/<attempt>``; the driver
then moves the parts into ``<target>`` and writes ``_SUCCESS`` last. A directory with ``_SUCCESS`` is
committed (readers skip ``_temporary`` and the marker, as Hadoop's do). Any other existing directory is
refused (``if_exists="error"``, as Hadoop's FileOutputFormat) or removed as the leftovers of an attempt that
never committed (``"skip"``). Targets are fsspec URLs.
"""
from __future__ import annotations

import posixpath
from abc import abstractmethod
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from dstream.executors.base import TaskContext
from dstream.io import join, url_to_fs
from dstream.rdd import RDD
from dstream.records import Partition, as_rows, as_table
from dstream.sinks import SUCCESS, IfExists, Sink, WriteJob

__all__ = ["FileSink", "TextSink", "ParquetSink"]

_TEMPORARY = "_temporary"


class FileSink(Sink):
    """The file committer; a subclass only says how one partition becomes one file (``encode``)."""

    target_kind: ClassVar[str] = "output directory"
    #: appended to each part file's name
    extension: ClassVar[str] = ""

    @abstractmethod
    def encode(self, part: Partition) -> bytes | pa.Buffer | None:
        """The bytes of one partition's file; None writes no file for it."""

    def is_committed(self, target: str) -> bool:
        fs, path = url_to_fs(target)
        return fs.exists(posixpath.join(path, SUCCESS))

    def setup(self, target: str, if_exists: IfExists) -> WriteJob:
        fs, path = url_to_fs(target)
        if fs.exists(path):
            if if_exists == "error":  # as Hadoop's FileOutputFormat: even an empty directory is refused
                raise FileExistsError(f"{self.target_kind} {target} already exists")
            fs.rm(path, recursive=True)  # leftovers of an attempt that never committed
        return WriteJob(target)

    def write_partition(self, job: WriteJob, rdd: RDD, split: int, tc: TaskContext) -> str | None:
        """Write the part file under the attempt's temporary directory; its name, or None if none."""
        data = self.encode(rdd._iterator(split, tc))
        if data is None:
            return None
        fs, tmp = url_to_fs(self._attempt_dir(job))
        fs.makedirs(tmp, exist_ok=True)
        name = f"part-{split:05d}{self.extension}"
        with fs.open(posixpath.join(tmp, name), "wb") as f:
            f.write(data)
        return name

    def commit(self, job: WriteJob, results: list[Any]) -> None:
        """Move the parts into place, drop ``_temporary``, then write ``_SUCCESS``."""
        fs, path = url_to_fs(job.target)
        _, tmp = url_to_fs(self._attempt_dir(job))
        fs.makedirs(path, exist_ok=True)
        for name in results:
            if name is not None:
                fs.mv(posixpath.join(tmp, name), posixpath.join(path, name))
        if fs.exists(posixpath.join(path, _TEMPORARY)):
            fs.rm(posixpath.join(path, _TEMPORARY), recursive=True)
        fs.pipe_file(posixpath.join(path, SUCCESS), b"")

    @staticmethod
    def _attempt_dir(job: WriteJob) -> str:
        return join(job.target, _TEMPORARY, job.attempt)


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
