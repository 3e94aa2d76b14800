"""Block stores: where executors keep cached partitions and shuffle buckets as Arrow tables.

A block is an immutable Arrow table under a string id (``rdd_3_0``, ``shuffle_2_1_0``). The interface
has three required methods; the rest derive from them, as fsspec's filesystems do.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod

import pyarrow as pa
import pyarrow.ipc as ipc


class BlockStore(ABC):
    """Put, get and remove Arrow tables by block id."""

    @abstractmethod
    def put(self, block_id: str, table: pa.Table) -> None:
        """Store ``table`` under ``block_id`` (replacing any block of that id)."""

    @abstractmethod
    def get(self, block_id: str) -> pa.Table | None:
        """The table stored under ``block_id``, or None when there is none."""

    @abstractmethod
    def remove_prefix(self, prefix: str) -> int:
        """Remove every block whose id starts with ``prefix``; return how many went."""

    def contains(self, block_id: str) -> bool:
        return self.get(block_id) is not None

    def close(self) -> None:
        """Release everything the store holds."""
        self.remove_prefix("")


class MemoryBlockStore(BlockStore):
    """Blocks in a dict: for executors that share the driver's memory (threads)."""

    def __init__(self) -> None:
        self._blocks: dict[str, pa.Table] = {}
        self._lock = threading.Lock()

    def put(self, block_id: str, table: pa.Table) -> None:
        with self._lock:
            self._blocks[block_id] = table

    def get(self, block_id: str) -> pa.Table | None:
        with self._lock:
            return self._blocks.get(block_id)

    def contains(self, block_id: str) -> bool:
        with self._lock:
            return block_id in self._blocks

    def remove_prefix(self, prefix: str) -> int:
        with self._lock:
            gone = [b for b in self._blocks if b.startswith(prefix)]
            for b in gone:
                del self._blocks[b]
        return len(gone)


def _default_root() -> str:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


class SharedDirBlockStore(BlockStore):
    """Blocks as Arrow IPC files in a directory every worker process can see (``/dev/shm`` when there).

    Readers memory-map the files, so a block moves between processes without being pickled or copied
    through a pipe. Writes go to a temporary name and are renamed into place, so a reader never sees a
    half-written block.
    """

    #: a driver's block directory is ``<root>/dstream-blocks-<pid>-<start>-<random>``: the driver's pid and
    #: its start time (``/proc/<pid>/stat``'s, in clock ticks since boot; 0 where unknown), so that a
    #: directory is known as an orphan once that process is gone, even when its pid is in use again
    PREFIX = "dstream-blocks-"

    def __init__(self, directory: str | None = None) -> None:
        if directory is None:
            pid = os.getpid()
            directory = os.path.join(_default_root(),
                                     f"{self.PREFIX}{pid}-{_start_time(pid) or 0}-{uuid.uuid4().hex[:8]}")
            os.makedirs(directory, exist_ok=True)
            self.owner = True
        else:
            self.owner = False
        #: the directory holding the block files
        self.directory = directory

    def _path(self, block_id: str) -> str:
        return os.path.join(self.directory, block_id + ".arrow")

    def put(self, block_id: str, table: pa.Table) -> None:
        path = self._path(block_id)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with pa.OSFile(tmp, "wb") as sink:
            with ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        os.replace(tmp, path)

    def get(self, block_id: str) -> pa.Table | None:
        try:
            # the whole mapping as one buffer (no copy): reading the IPC file from the buffer is ~4x faster
            # than from the MemoryMappedFile, which pays a seek and a read call per piece of the footer
            mapped = pa.memory_map(self._path(block_id), "r").read_buffer()
        except FileNotFoundError:
            return None
        return ipc.open_file(mapped).read_all()

    def contains(self, block_id: str) -> bool:
        return os.path.exists(self._path(block_id))

    def remove_prefix(self, prefix: str) -> int:
        n = 0
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return 0
        for name in names:
            if name.startswith(prefix) and name.endswith(".arrow"):
                try:
                    os.remove(os.path.join(self.directory, name))
                    n += 1
                except FileNotFoundError:
                    pass
        return n

    def close(self) -> None:
        if self.owner:
            shutil.rmtree(self.directory, ignore_errors=True)

    @classmethod
    def remove_orphans(cls) -> list[str]:
        """Delete the block directories of driver processes that no longer run (killed ones leave theirs);
        return their paths. Every process-pool driver calls this when it starts. A driver is gone when no
        process has its pid, when that process is a zombie (killed, not yet reaped by its parent), or when
        the process with its pid started at another time than the one in the directory's name (the pid
        was given to a new process)."""
        root = _default_root()
        removed = []
        try:
            names = os.listdir(root)
        except OSError:
            return removed
        for name in names:
            if not name.startswith(cls.PREFIX):
                continue
            parts = name[len(cls.PREFIX):].split("-")
            try:
                pid = int(parts[0])
                # "<pid>-<start>-<random>"; "<pid>-<random>" (older versions): no start time to compare
                started = int(parts[1]) if len(parts) >= 3 else 0
            except ValueError:
                continue
            if not _owner_alive(pid, started):
                path = os.path.join(root, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None without one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int, fields: list[str] | None = None) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc``); None where that is not known."""
    fields = _proc_stat(pid) if fields is None else fields
    try:
        return int(fields[19]) if fields is not None else None  # field 22 of the stat line, starttime
    except (IndexError, ValueError):
        return None


def _owner_alive(pid: int, started: int = 0) -> bool:
    """Whether the process that made a block directory still runs: ``pid`` is a live process (not a
    zombie) and, when ``started`` (its start time in clock ticks) is known, it started then."""
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return False
        return not started or _start_time(pid, fields) in (None, started)
    try:  # no /proc (or not readable there): whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialise a table as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    return ipc.open_stream(pa.py_buffer(data)).read_all()
