"""Output committers: each partition is written by a task to a temporary directory, then the driver moves
the parts into place and writes ``_SUCCESS`` last. A directory with ``_SUCCESS`` is committed; writing a
committed batch again is skipped, so replayed batches produce their output exactly once.
"""
from __future__ import annotations

import functools
import posixpath
import uuid
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from dstream.executors.base import TaskContext
from dstream.io import join, url_to_fs
from dstream.records import as_rows, as_table
from dstream.rdd import RDD

Format = Literal["text", "parquet"]
SUCCESS = "_SUCCESS"


def _text_of(part: Any) -> bytes:
    """One line per record: ``str(record)`` in UTF-8, bytes written as they are (as PySpark does)."""
    if isinstance(part, pa.Table) and part.num_columns == 1 and pa.types.is_string(part.schema.field(0).type) \
            and part.column(0).null_count == 0:
        return "".join(line + "\n" for line in part.column(0).to_pylist()).encode("utf-8")
    return b"".join((x if isinstance(x, bytes) else str(x).encode("utf-8")) + b"\n" for x in as_rows(part))


def _write_part(rdd: RDD, tmp_url: str, fmt: Format, split: int, tc: TaskContext) -> str | None:
    """Write one partition; None for an empty Parquet partition, whose column types are unknown."""
    part = rdd._iterator(split, tc)
    if fmt == "parquet":
        part = as_table(part)
        if part.num_rows == 0:
            return None  # a null-typed file would make the batch's files unreadable as one dataset
    fs, tmp = url_to_fs(tmp_url)
    fs.makedirs(tmp, exist_ok=True)
    name = f"part-{split:05d}" + (".parquet" if fmt == "parquet" else "")
    with fs.open(posixpath.join(tmp, name), "wb") as f:
        if fmt == "parquet":
            pq.write_table(part, f)
        else:
            f.write(_text_of(part))
    return name


def is_committed(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.exists(posixpath.join(path, SUCCESS))


def commit_rdd(rdd: RDD, url: str, fmt: Format, if_exists: Literal["error", "skip"]) -> bool:
    """Write ``rdd`` under ``url`` atomically; return False when it was already committed (skipped)."""
    fs, path = url_to_fs(url)
    if fs.exists(posixpath.join(path, SUCCESS)):
        if if_exists == "skip":
            return False
        raise FileExistsError(f"output directory {url} already exists")
    if fs.exists(path):
        if if_exists == "error":  # as Hadoop's FileOutputFormat: even an empty directory is refused
            raise FileExistsError(f"output directory {url} already exists")
        fs.rm(path, recursive=True)  # leftovers of an attempt that never committed
    tmp_url = join(url, "_temporary", uuid.uuid4().hex[:12])
    names = rdd.ctx.run_job(rdd, functools.partial(_write_part, rdd, tmp_url, fmt),
                            description=f"save {fmt} {url}")
    _, tmp = url_to_fs(tmp_url)
    fs.makedirs(path, exist_ok=True)
    for name in names:
        if name is not None:
            fs.mv(posixpath.join(tmp, name), posixpath.join(path, name))
    if fs.exists(posixpath.join(path, "_temporary")):
        fs.rm(posixpath.join(path, "_temporary"), recursive=True)
    fs.pipe_file(posixpath.join(path, SUCCESS), b"")
    return True


def save_text_partitions(rdd: RDD, url: str, if_exists: Literal["error", "skip"] = "error") -> bool:
    return commit_rdd(rdd, url, "text", if_exists)


def save_parquet_partitions(rdd: RDD, url: str, if_exists: Literal["error", "skip"] = "error") -> bool:
    return commit_rdd(rdd, url, "parquet", if_exists)


def batch_path(prefix: str, time_ms: int, suffix: str | None) -> str:
    """``prefix-<batch time in ms>[.suffix]``, as Spark names a batch's output."""
    return f"{prefix}-{time_ms}" + (f".{suffix}" if suffix else "")
