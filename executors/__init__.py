"""Executors: run tasks over Arrow tables in parallel (threads, processes, Dask) and keep their blocks."""
from dstream.executors.base import Executor, Task, TaskContext, TaskError, get_backend, register_backend
from dstream.executors.blockstore import BlockStore, MemoryBlockStore, SharedDirBlockStore

__all__ = ["Executor", "Task", "TaskContext", "TaskError", "get_backend", "register_backend",
           "BlockStore", "MemoryBlockStore", "SharedDirBlockStore"]
