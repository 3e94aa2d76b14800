"""Reading and writing files on any fsspec URL: text inputs (``TextFileRDD``) and RDD data checkpoints
(Arrow IPC part files, ``CheckpointRDD``). The io layer: it builds on the core (``rdd``, ``records``)."""
from __future__ import annotations

import functools
import posixpath
import uuid
from typing import TYPE_CHECKING

import fsspec
import pyarrow as pa
import pyarrow.ipc as ipc

from dstream.executors.base import TaskContext
from dstream.rdd import RDD
from dstream.records import Partition, as_table

if TYPE_CHECKING:
    from dstream.context import Context


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)


def expand_paths(name: str) -> list[str]:
    """Files named by ``name``: comma-separated URLs, each a file, a directory (its files) or a glob.

    As Hadoop's input formats do, names starting with ``_`` or ``.`` (``_SUCCESS``, ``_temporary/``,
    ``.crc``) are skipped, and a glob that matches nothing is an error naming it.
    """
    out: list[str] = []
    for url in name.split(","):
        fs, path = url_to_fs(url)
        protocol = url.split("://")[0] + "://" if "://" in url else ""
        if any(c in path for c in "*?["):
            matches = [p for p in sorted(fs.glob(path)) if not _hidden(posixpath.basename(p.rstrip("/")))]
            if not matches:
                raise FileNotFoundError(f"textFile: the pattern {url} matches no files")
        elif fs.exists(path):
            matches = [path]
        else:
            raise FileNotFoundError(f"textFile: no such file or directory: {url}")
        for match in matches:
            found = _files_under(fs, match) if fs.isdir(match) else [match]
            out += [_with_protocol(fs, protocol, p) for p in found]
    return out


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _files_under(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """The files below ``directory``, leaving out hidden names and everything under hidden directories."""
    root = directory.rstrip("/")
    return sorted(p for p in fs.find(root)
                  if not any(_hidden(part) for part in posixpath.relpath(p, root).split("/")))


def _with_protocol(fs: fsspec.AbstractFileSystem, protocol: str, path: str) -> str:
    return fs.unstrip_protocol(path) if protocol else path


def split_lines(text: str) -> list[str]:
    """Lines as Hadoop's text input reads them: split on \\n, \\r\\n or \\r, no trailing empty line."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_text(url: str, encoding: str = "utf-8") -> str:
    """A file's text; a file that does not decode raises ValueError naming the file and the byte."""
    with fsspec.open(url, "rb") as f:
        data = f.read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot decode the file {url} as {encoding}: byte {exc.start} "
                         f"({data[exc.start:exc.start + 1]!r}): {exc.reason}") from None


def read_lines_table(url: str, encoding: str = "utf-8", chunk: int = 0, chunks: int = 1) -> pa.Table:
    lines = split_lines(read_text(url, encoding))
    if chunks > 1:
        n = len(lines)
        lines = lines[chunk * n // chunks:(chunk + 1) * n // chunks]
    return pa.table({"value": pa.array(lines, pa.string())})


class TextFileRDD(RDD):
    """The lines of text files: each file is read by one task (or ``chunks`` tasks for few files)."""

    def __init__(self, ctx: "Context", paths: list[str], min_partitions: int, encoding: str) -> None:
        chunks = max(1, -(-min_partitions // max(len(paths), 1)))
        self.splits = [(p, c, chunks) for p in paths for c in range(chunks)]
        self.encoding = encoding
        super().__init__(ctx, [], len(self.splits))

    def _compute(self, split: int, tc: TaskContext) -> pa.Table:
        path, chunk, chunks = self.splits[split]
        return read_lines_table(path, self.encoding, chunk, chunks)

    def _describe(self) -> str:
        return f"TextFileRDD ({len({s[0] for s in self.splits})} files)"


def write_arrow_file(url: str, table: pa.Table) -> None:
    """Write ``table`` as an Arrow IPC file, to a temporary name first, then moved into place."""
    fs, path = url_to_fs(url)
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(tmp, "wb") as f:
        with ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
    fs.mv(tmp, path)


def read_arrow_file(url: str) -> pa.Table:
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as f:
        return ipc.open_file(pa.BufferReader(f.read())).read_all()


class BinaryRecordsRDD(RDD):
    """Fixed-length byte records of files, one partition per file."""

    def __init__(self, ctx: "Context", paths: list[str], record_length: int) -> None:
        super().__init__(ctx, [], len(paths))
        self.paths = paths
        self.record_length = record_length

    def _compute(self, split: int, tc: TaskContext) -> pa.Table:
        path = self.paths[split]
        with fsspec.open(path, "rb") as f:
            data = f.read()
        n = self.record_length
        if len(data) % n:
            raise ValueError(f"the file {path} has {len(data)} bytes, not a multiple of recordLength={n}")
        return pa.table({"value": pa.array([data[i:i + n] for i in range(0, len(data), n)], pa.binary())})


class CheckpointRDD(RDD):
    """Partitions read back from Arrow IPC files written by ``RDD.checkpoint`` (any fsspec URL)."""

    def __init__(self, ctx: "Context", directory: str, paths: list[str]) -> None:
        super().__init__(ctx, [], len(paths))
        #: the checkpoint directory (fsspec URL) and its part files
        self.directory = directory
        self.paths = paths

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        return read_arrow_file(self.paths[split])

    def is_available(self) -> bool:
        return True


def _write_partition(rdd: RDD, directory: str, split: int, tc: TaskContext) -> str:
    url = join(directory, f"part-{split:05d}.arrow")
    write_arrow_file(url, as_table(rdd._iterator(split, tc)))
    return url


def write_rdd_checkpoint(rdd: RDD, checkpoint_dir: str) -> CheckpointRDD:
    """Write every partition of ``rdd`` in parallel from the executors; return the RDD that reads them."""
    directory = join(checkpoint_dir, f"rdd-{rdd.id()}-{uuid.uuid4().hex[:8]}")
    paths = rdd.ctx.run_job(rdd, functools.partial(_write_partition, rdd, directory),
                            description=f"checkpoint {rdd!r}")
    return CheckpointRDD(rdd.ctx, directory, paths)
