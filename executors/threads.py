"""A thread-pool executor: tasks share the driver's memory; best for work inside Arrow's kernels.

It ignores speculation (``Executor.speculation``): a straggling thread cannot be abandoned, and a backup
copy would compete for the same cores and the same interpreter. Nor is there a worker to lose.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from dstream.executors.base import Executor, Task, execute_task
from dstream.executors.blockstore import MemoryBlockStore


class ThreadExecutor(Executor):
    """Tasks run in ``num_workers`` threads of the driver; blocks stay in the driver's memory."""

    shares_driver_memory = True

    def __init__(self, num_workers: int = 2) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.num_workers = num_workers
        self.store = MemoryBlockStore()
        self._pool = ThreadPoolExecutor(num_workers, thread_name_prefix="dstream-executor")

    def submit_task(self, task: Task) -> Future:
        return self._pool.submit(execute_task, task, self.store)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
