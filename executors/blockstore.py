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

    PREFIX = "dstream-blocks-"

    def __init__(self, directory: str | None = None) -> None:
        if directory is None:
            directory = os.path.join(_default_root(), f"{self.PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
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
            source = pa.memory_map(self._path(block_id), "r")
        except FileNotFoundError:
            return None
        return ipc.open_file(source).read_all()

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
    def remove_orphans(cls) -> None:
        """Delete block directories left by driver processes that no longer exist."""
        root = _default_root()
        for name in os.listdir(root):
            if not name.startswith(cls.PREFIX):
                continue
            try:
                pid = int(name[len(cls.PREFIX):].split("-")[0])
            except ValueError:
                continue
            if not _pid_alive(pid):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
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
