"""The socket receiver's write-ahead log: received lines in segment files under
``<checkpoint>/wal/<stream id>/`` (any fsspec URL), replayed after a driver restart."""
from __future__ import annotations

import logging
import os
import posixpath
import threading
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from dstream.io import join, url_to_fs

log = logging.getLogger(__name__)


def wal_dir(directory: str, stream_id: str | None = None) -> str:
    """The write-ahead log directory of a checkpoint, or of one receiver stream in it."""
    return join(directory, "wal") if stream_id is None else join(directory, "wal", stream_id)


class WriteAheadLog:
    """A receiver's write-ahead log: received lines in segment files under one directory (any fsspec URL).

    A segment is named ``segment-<number of its first line>`` and holds UTF-8 lines, each ending in
    ``\\n``; once a segment holds ``max_lines`` lines or ``max_bytes`` bytes the next write starts a new
    one, and so does a restart (a segment is never appended to by two drivers). Line numbers run on
    across segments and restarts. A last line without its ``\\n`` was torn by a crash while being
    written: it was never buffered, so it is not a line. Appends are flushed (and fsynced on local disks)
    before ``append`` returns.
    """

    PREFIX = "segment-"

    def __init__(self, url: str, max_lines: int, max_bytes: int, start: int = 0, fresh: bool = False) -> None:
        self.url = url
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.fs, self.path = url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.path, exist_ok=True)
        self._lock = threading.Lock()
        #: the first line number of each segment, oldest first
        self.segments: list[int] = self._list()
        if fresh and self.segments:
            log.warning("%s: deleting the write-ahead log of an earlier run that left no checkpoint", url)
            self._delete(self.segments)
            self.segments = []
        if self.segments and not self.read_segment(self.segments[-1]):
            self._delete(self.segments[-1:])  # it holds no complete line; its name is reused
            self.segments.pop()
        last = self.segments[-1] + len(self.read_segment(self.segments[-1])) if self.segments else 0
        #: the number the next appended line gets
        self.next_line = max(start, last)
        self._file: Any = None
        self._lines_in_file = self._bytes_in_file = 0

    def _name(self, first: int) -> str:
        return posixpath.join(self.path, f"{self.PREFIX}{first:012d}")

    def _list(self) -> list[int]:
        try:
            names = [posixpath.basename(p) for p in self.fs.ls(self.path, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[len(self.PREFIX):]) for n in names
                      if n.startswith(self.PREFIX) and n[len(self.PREFIX):].isdigit())

    def read_segment(self, first: int) -> list[str]:
        """The complete lines of one segment."""
        try:
            data = self.fs.cat_file(self._name(first))
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
        data = b"".join(ln.encode("utf-8") + b"\n" for ln in lines)
        if self._file is None:
            self._file = self.fs.open(self._name(self.next_line), "wb")
            with self._lock:
                self.segments.append(self.next_line)
            if self.local:
                self._fsync_dir()
        self._file.write(data)
        self._file.flush()
        if self.local:
            os.fsync(self._file.fileno())
        self.next_line += len(lines)
        self._lines_in_file += len(lines)
        self._bytes_in_file += len(data)
        if self._lines_in_file >= self.max_lines or self._bytes_in_file >= self.max_bytes:
            self.close()

    def _fsync_dir(self) -> None:
        """Make a new segment's directory entry durable too."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._lines_in_file = self._bytes_in_file = 0

    def delete_before(self, line: int) -> None:
        """Delete the segments whose lines all come before ``line`` (never the newest segment)."""
        with self._lock:
            old = [s for s, nxt in zip(self.segments, self.segments[1:]) if nxt <= line]
            self.segments = self.segments[len(old):]
        self._delete(old)

    def _delete(self, segments: list[int]) -> None:
        for first in segments:
            try:
                self.fs.rm(self._name(first))
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - a leftover segment is harmless
                log.warning("could not delete write-ahead log segment %s: %s", self._name(first), exc)


class WriteAheadLogError(RuntimeError):
    """socketTextStream could not write its write-ahead log, so its receiver stopped."""
