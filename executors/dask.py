"""A Dask executor: tasks run on the workers of an existing Dask cluster (``dask://HOST:PORT`` or a Client).

Each task travels as cloudpickle bytes (so functions from ``__main__`` or a notebook work) and runs
``execute_task`` on a worker through ``client.submit(..., pure=False)``; its result comes back encoded on the
worker (``results``: a table as Arrow IPC, anything else cloudpickled), so a result that cannot be sent fails
its task instead of the worker. A task error arrives as
the TaskError raised on the worker, with the worker's traceback. Lost workers are Dask's business: the
scheduler reruns their tasks elsewhere (``distributed.scheduler.allowed-failures`` times).

The workers share nothing but the network. Blocks (driver data, cached partitions, shuffle buckets,
broadcast values) live in the workers' memory as Dask keys (``dask_blocks``); the driver holds futures.
A task declares the blocks it reads (``Task.reads``, filled in by the scheduler, plus the broadcast
variables its closure pickles): they are the inputs of its Dask task, so Dask places it where they are and
moves the rest. The workers must be able to import dstream (same version as the driver). Speculation is
left to Dask (ignored here). A worker that joins later is used by the next tasks.
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future, InvalidStateError
from typing import Any

import distributed

from dstream.executors.base import Executor, Task, TaskError, execute_task, format_exception
from dstream.executors import serialization
from dstream.executors.results import decode_result, encode_result
from dstream.executors.dask_blocks import DROPPED, DaskBlockStore, TaskBlocks, TaskOutput, block_of, result_of


def _run_on_worker(payload: bytes, description: str, dropped: tuple[str, ...], read_ids: tuple[str, ...],
                   *tables: Any) -> TaskOutput:
    """Run on a Dask worker: unpickle the task, run it with its declared blocks (Dask passes them in as
    ``tables``), and leave its pickled result and the blocks it put on the worker. ``dropped``: blocks the
    task declared that the driver no longer has (cached broadcast values of them are dropped)."""
    DROPPED.drop(dropped)
    try:
        task = serialization.loads(payload)
    except BaseException as exc:  # noqa: BLE001
        raise TaskError(f"unpickling {description or 'a task'} on a Dask worker", RuntimeError(str(exc)),
                        format_exception(exc)) from None
    store = TaskBlocks(dict(zip(read_ids, tables)))
    result = execute_task(task, store)
    try:
        return TaskOutput(encode_result(result), store.outputs)
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

    needs_declared_reads = True

    def __init__(self, master: Any) -> None:
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
        self.store = DaskBlockStore(self.client)
        self._lock = threading.Lock()
        #: per running task, the Dask futures of its output and result; Dask forgets a task whose
        #: futures are dropped, so they are held here until the task settles
        self._running: dict[Future, tuple[distributed.Future, distributed.Future]] = {}
        self._closed = False
        self._threads, self._threads_checked = 1, 0.0

    @property
    def num_workers(self) -> int:
        """Worker threads in the cluster now (at least 1); asked of the scheduler at most once a second."""
        if time.monotonic() - self._threads_checked > 1.0:
            try:
                self._threads = max(1, sum(self.client.nthreads().values()))
                self._threads_checked = time.monotonic()
            except Exception:  # noqa: BLE001 - keep the last answer while the scheduler is unreachable
                pass
        return self._threads

    def submit_task(self, task: Task) -> Future:
        try:
            with serialization.recording_block_reads() as pickled_reads:
                payload = serialization.dumps(task)
        except Exception as exc:
            raise TaskError(f"serialising {task.description or 'a task'}", exc, format_exception(exc)) from exc
        inputs, dropped = {}, []
        for block_id in dict.fromkeys([*task.reads, *sorted(pickled_reads)]):
            block = self.store.future(block_id)
            if block is not None:
                inputs[block_id] = block
            else:
                dropped.append(block_id)
        future: Future = Future()
        name = f"dstream-task-{task.partition_id}-{uuid.uuid4().hex}"
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            output = self.client.submit(_run_on_worker, payload, task.description, tuple(dropped), tuple(inputs),
                                        *inputs.values(), pure=False, key=name)
            result = self.client.submit(result_of, output, pure=False, key=name + "-result")
            self._running[future] = (output, result)
        future.add_done_callback(lambda f: f.cancelled() and self._cancel(f))
        description = task.description or f"task {task.partition_id}"
        result.add_done_callback(lambda _: self._settle(future, description))
        return future

    def _cancel(self, future: Future) -> None:
        with self._lock:
            running = self._running.pop(future, None)
        if running is not None:
            self.client.cancel(list(running))

    def _settle(self, future: Future, description: str) -> None:
        """Called in Dask's callback thread when a task's result is ready, failed or cancelled: keep the
        blocks the task put (each split off as its own key on the task's worker), deliver the result."""
        with self._lock:
            running = self._running.pop(future, None)
        if running is None:
            return  # cancelled by the driver meanwhile
        output, result = running
        try:
            if result.status == "cancelled":
                future.set_exception(TaskError(description, RuntimeError("cancelled on the Dask cluster")))
            elif result.status == "error":
                exc = result.exception()  # e.g. KilledWorker when the task killed too many workers
                future.set_exception(exc if isinstance(exc, TaskError) else TaskError(description, exc))
            else:
                encoded, put = result.result()
                for block_id in put:
                    self.store.register(block_id, self.client.submit(
                        block_of, output, block_id, pure=False, key=self.store.key(block_id)))
                future.set_result(decode_result(*encoded))
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
        for future in running:  # nobody will deliver these results now
            try:
                future.set_exception(RuntimeError("the executor was shut down while running a task"))
            except InvalidStateError:
                pass
        if running:
            try:
                self.client.cancel([f for pair in running.values() for f in pair])
            except Exception:  # noqa: BLE001 - the cluster may already be gone
                pass
        self.store.close()
        if self._owns_client:
            self.client.close()
