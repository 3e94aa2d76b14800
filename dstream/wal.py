"""The socket receiver's write-ahead log: received lines in segments under ``<checkpoint>/wal/<stream id>/``
(a ``Location``: any fsspec URL with its storage options), replayed after a driver restart.

How a segment is written depends on the storage (``SegmentWriter``): a local disk appends to an open
segment file and fsyncs it (``AppendingWriter``); a store without append (S3, GCS, Azure, ``memory://``)
gets one immutable object per block interval, written in one put (``ObjectWriter``). Either way a segment
is named by its first line number, and a line is durable before ``append`` returns.
"""
from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from dstream.driver.storage import Location

log = logging.getLogger(__name__)


def wal_dir(directory: "str | Location", stream_id: str | None = None) -> Location:
    """The write-ahead log directory of a checkpoint, or of one receiver stream in it."""
    base = Location.of(directory).join("wal")
    return base if stream_id is None else base.join(stream_id)


class SegmentWriter:
    """How a ``WriteAheadLog`` makes lines durable; one subclass per kind of storage."""

    #: seconds the receiver gathers lines before one ``append`` (0: append each chunk as it arrives)
    block_interval = 0.0

    def __init__(self, wal: "WriteAheadLog") -> None:
        self.wal = wal

    def write(self, lines: list[bytes]) -> None:
        """Make ``lines`` (each encoded, ending in ``\\n``) durable as lines ``wal.next_line`` onwards."""
        raise NotImplementedError

    def close(self) -> None:
        """End the current segment (the next write starts a new one)."""


class AppendingWriter(SegmentWriter):
    """Local disks: append to the open segment and fsync it (and, for a new segment, its directory); a new
    segment starts once it holds ``max_lines`` lines or ``max_bytes`` bytes, and after a restart."""

    def __init__(self, wal: "WriteAheadLog") -> None:
        super().__init__(wal)
        self._file: Any = None
        self._lines = self._bytes = 0

    def write(self, lines: list[bytes]) -> None:
        wal = self.wal
        data = b"".join(lines)
        if self._file is None:
            self._file = wal.fs.open(wal.segment_path(wal.next_line), "wb")
            wal.add_segment(wal.next_line)
            self._fsync_dir()
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += len(lines)
        self._bytes += len(data)
        if self._lines >= wal.max_lines or self._bytes >= wal.max_bytes:
            self.close()

    def _fsync_dir(self) -> None:
        """Make a new segment's directory entry durable too."""
        fd = os.open(self.wal.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._lines = self._bytes = 0


class ObjectWriter(SegmentWriter):
    """Stores without append: each write becomes immutable objects of at most ``max_lines`` lines (and
    about ``max_bytes`` bytes), each written whole in one put and never changed afterwards."""

    def __init__(self, wal: "WriteAheadLog", block_interval: float) -> None:
        super().__init__(wal)
        self.block_interval = block_interval

    def write(self, lines: list[bytes]) -> None:
        wal = self.wal
        first, chunk, size = wal.next_line, [], 0
        for i, line in enumerate(lines):
            chunk.append(line)
            size += len(line)
            if len(chunk) >= wal.max_lines or size >= wal.max_bytes or i == len(lines) - 1:
                self.put(wal.segment_path(first), b"".join(chunk))
                wal.add_segment(first)
                first, chunk, size = first + len(chunk), [], 0

    def put(self, path: str, data: bytes) -> None:
        """Write one segment object in a single request (durable when it returns)."""
        self.wal.fs.pipe_file(path, data)


class WriteAheadLog:
    """A receiver's write-ahead log: received lines in segments under one directory (any fsspec URL).

    A segment is named ``segment-<number of its first line>`` and holds UTF-8 lines, each ending in
    ``\\n``. Line numbers run on across segments and restarts, and a restart never writes into a segment
    of an earlier run. A last line without its ``\\n`` was torn by a crash while being written: it was
    never buffered, so it is not a line. Lines are durable before ``append`` returns (``SegmentWriter``).
    """

    PREFIX = "segment-"

    def __init__(self, where: "str | Location", max_lines: int, max_bytes: int, start: int = 0,
                 fresh: bool = False, block_interval: float = 0.2) -> None:
        self.location = Location.of(where)
        self.url = self.location.url
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.fs, self.path = self.location.fs, self.location.path
        #: writes segments the way the storage allows (append + fsync, or one object per block)
        self.writer: SegmentWriter = (AppendingWriter(self) if isinstance(self.fs, LocalFileSystem)
                                      else ObjectWriter(self, block_interval))
        self.fs.makedirs(self.path, exist_ok=True)
        self._lock = threading.Lock()
        #: the first line number of each segment, oldest first
        self.segments: list[int] = self._list()
        if fresh and self.segments:
            log.warning("%s: deleting the write-ahead log of an earlier run that left no checkpoint", self.url)
            self._delete(self.segments)
            self.segments = []
        if self.segments and not self.read_segment(self.segments[-1]):
            self._delete(self.segments[-1:])  # it holds no complete line; its name is reused
            self.segments.pop()
        last = self.segments[-1] + len(self.read_segment(self.segments[-1])) if self.segments else 0
        #: the number the next appended line gets
        self.next_line = max(start, last)

    @property
    def block_interval(self) -> float:
        """Seconds the receiver gathers lines into one ``append`` (0 on local disks)."""
        return self.writer.block_interval

    def segment_path(self, first: int) -> str:
        """The path (in ``fs``) of the segment whose first line is ``first``."""
        return posixpath.join(self.path, f"{self.PREFIX}{first:012d}")

    def add_segment(self, first: int) -> None:
        """Record a segment the writer created."""
        with self._lock:
            self.segments.append(first)

    def _list(self) -> list[int]:
        names = [posixpath.basename(e["name"].rstrip("/")) for e in self.location.list()]
        return sorted(int(n[len(self.PREFIX):]) for n in names
                      if n.startswith(self.PREFIX) and n[len(self.PREFIX):].isdigit())

    def read_segment(self, first: int) -> list[str]:
        """The complete lines of one segment."""
        try:
            data = self.fs.cat_file(self.segment_path(first))
        except FileNotFoundError:
            return []
        return [ln.decode("utf-8") for ln in data.split(b"\n")[:-1]]

    def read(self, first: int, end: int) -> list[str]:
        """Lines ``first`` to ``end - 1``."""
        with self._lock:
            segments = list(self.segments)
        out: list[str] = []
        for i, start in enumerate(segments):
            stop = segments[i + 1] if i + 1 < len(segments) else end
            if start < end and stop > first:
                out += self.read_segment(start)[max(first - start, 0):end - start]
        return out

    def append(self, lines: list[str]) -> None:
        """Write ``lines`` durably (the receiver thread is the only writer)."""
        if not lines:
            return
        self.writer.write([ln.encode("utf-8") + b"\n" for ln in lines])
        self.next_line += len(lines)

    def close(self) -> None:
        """Close the open segment, if any."""
        self.writer.close()

    def delete_before(self, line: int) -> None:
        """Delete the segments whose lines all come before ``line`` (never the newest segment)."""
        with self._lock:
            old = [s for s, nxt in zip(self.segments, self.segments[1:]) if nxt <= line]
            self.segments = self.segments[len(old):]
        self._delete(old)

    def _delete(self, segments: list[int]) -> None:
        for first in segments:
            try:
                self.fs.rm(self.segment_path(first))
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - a leftover segment is harmless
                log.warning("could not delete write-ahead log segment %s: %s", self.segment_path(first), exc)


class WriteAheadLogError(RuntimeError):
    """socketTextStream could not write its write-ahead log, so its receiver stopped."""
