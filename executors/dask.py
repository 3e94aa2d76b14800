"""A Dask executor: tasks run on the workers of an existing Dask cluster (``dask://HOST:PORT`` or a Client).

Each task travels as cloudpickle bytes (so functions from ``__main__`` or a notebook work) and runs
``execute_task`` on a worker through ``client.submit(..., pure=False)``; its result comes back as cloudpickle
bytes too, so a result that cannot be sent fails its task instead of the worker. A task error arrives as
the TaskError raised on the worker, with the worker's traceback. Lost workers are Dask's business: the
scheduler reruns their tasks elsewhere (``distributed.scheduler.allowed-failures`` times).

Blocks (cached partitions, shuffle buckets) live in a SharedDirBlockStore that the driver and every
worker must see. By default it is a fresh directory under ``/dev/shm`` (or the temp directory), which
works when every worker runs on the driver's machine (``LocalCluster``). **A cluster spanning several
machines needs a directory shared by all of them** (NFS or another shared mount): pass it as
``block_dir``; the executor makes its own subdirectory there and removes it at shutdown. The workers
must be able to import dstream (same version as the driver). Speculation is left to Dask (ignored here).

Use ``Context(DaskExecutor(client, block_dir="/shared/blocks"))`` to set ``block_dir``.
"""
from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import Future, InvalidStateError
from typing import Any

import cloudpickle
import distributed

from dstream.executors.base import Executor, Task, TaskError, execute_task, format_exception
from dstream.executors import serialization
from dstream.executors.blockstore import SharedDirBlockStore


def _run_on_worker(payload: bytes, store_dir: str, description: str) -> bytes:
    """Run on a Dask worker: unpickle the task, run it against the shared store, pickle its result."""
    try:
        task = serialization.loads(payload)
    except BaseException as exc:  # noqa: BLE001
        raise TaskError(f"unpickling {description or 'a task'} on a Dask worker", RuntimeError(str(exc)),
                        format_exception(exc)) from None
    result = execute_task(task, SharedDirBlockStore(store_dir))
    try:
        return cloudpickle.dumps(result, protocol=5)
    except BaseException as exc:  # noqa: BLE001 - a result that cannot be sent fails its task
        raise TaskError(f"sending the result of {description or 'a task'}", RuntimeError(str(exc)),
                        format_exception(exc)) from None


def _address(master: str) -> str:
    if master.startswith("dask://"):
        return "tcp://" + master[len("dask://"):]
    if master.startswith("tcp://"):
        return master
    raise ValueError(f"master {master!r}: a Dask master looks like 'dask://HOST:PORT' or 'tcp://HOST:PORT'")


class DaskExecutor(Executor):
    """Tasks run on a Dask cluster; ``master`` is a ``distributed.Client`` or a scheduler address."""

    def __init__(self, master: Any, block_dir: str | None = None) -> None:
        if isinstance(master, distributed.Client):
            self.client, self._owns_client = master, False
        elif isinstance(master, str):
            address = _address(master)
            try:
                self.client = distributed.Client(address, set_as_default=False)
            except OSError as exc:
                raise ConnectionError(f"master {master!r}: cannot reach the Dask scheduler at {address}: {exc}") \
                    from exc
            self._owns_client = True
        else:
            raise ValueError(f"master must be a distributed.Client or 'dask://HOST:PORT', got {master!r}")
        #: worker threads in the cluster when the executor started (at least 1)
        self.num_workers = max(1, sum(self.client.nthreads().values()))
        self.store = self._make_store(block_dir)
        self._lock = threading.Lock()
        #: Dask futures of running tasks; Dask forgets a task whose future is dropped, so they are held here
        self._running: dict[distributed.Future, Future] = {}
        self._closed = False

    @staticmethod
    def _make_store(block_dir: str | None) -> SharedDirBlockStore:
        if block_dir is None:
            SharedDirBlockStore.remove_orphans()
            return SharedDirBlockStore()
        if not os.path.isdir(block_dir):
            raise ValueError(f"block_dir {block_dir!r} is not a directory")
        directory = os.path.join(block_dir, f"{SharedDirBlockStore.PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(directory)
        store = SharedDirBlockStore(directory)
        store.owner = True  # ours to remove at shutdown
        return store

    def submit_task(self, task: Task) -> Future:
        try:
            payload = serialization.dumps(task)
        except Exception as exc:
            raise TaskError(f"serialising {task.description or 'a task'}", exc, format_exception(exc)) from exc
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            dask_future = self.client.submit(_run_on_worker, payload, self.store.directory, task.description,
                                             pure=False, key=f"dstream-task-{task.partition_id}-{uuid.uuid4().hex}")
            self._running[dask_future] = future
        future.add_done_callback(lambda f: f.cancelled() and dask_future.cancel())
        description = task.description or f"task {task.partition_id}"
        dask_future.add_done_callback(lambda df: self._settle(df, future, description))
        return future

    def _settle(self, dask_future: distributed.Future, future: Future, description: str) -> None:
        """Called in Dask's callback thread when a task is finished, failed or cancelled."""
        with self._lock:
            self._running.pop(dask_future, None)
        try:
            if dask_future.status == "cancelled":
                future.set_exception(TaskError(description, RuntimeError("cancelled on the Dask cluster")))
            elif dask_future.status == "error":
                exc = dask_future.exception()  # e.g. KilledWorker when the task killed too many workers
                future.set_exception(exc if isinstance(exc, TaskError) else TaskError(description, exc))
            else:
                future.set_result(cloudpickle.loads(dask_future.result()))
        except InvalidStateError:
            pass  # cancelled by the driver meanwhile
        except BaseException as exc:  # noqa: BLE001 - a result the driver cannot load fails its task
            try:
                future.set_exception(TaskError(f"loading the result of {description}", RuntimeError(str(exc)),
                                               format_exception(exc)))
            except InvalidStateError:
                pass

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running, self._running = dict(self._running), {}
        for future in running.values():  # nobody will deliver these results now
            try:
                future.set_exception(RuntimeError("the executor was shut down while running a task"))
            except InvalidStateError:
                pass
        if running:
            try:
                self.client.cancel(list(running))
            except Exception:  # noqa: BLE001 - the cluster may already be gone
                pass
        if self._owns_client:
            self.client.close()
        self.store.close()
