"""A process-pool executor: N worker processes, tasks shipped with cloudpickle.

Workers are started as ``python -m executors.processes`` (not multiprocessing's spawn, which re-runs the
user's ``__main__`` and so needs an ``if __name__ == "__main__"`` guard that PySpark scripts never had);
functions defined in ``__main__`` or a notebook travel by value inside cloudpickle.

Results that are Arrow tables come back as Arrow IPC bytes; bigger data (cached partitions, shuffle
buckets) goes through the shared-directory block store, memory-mapped by whoever reads it. A worker that
dies mid-task is replaced and its task retried on another worker, up to ``max_attempts`` times. Workers
watch their parent and exit when the driver dies, so a killed driver leaves no orphans.
"""
from __future__ import annotations

import itertools
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import cloudpickle
import pyarrow as pa

from executors.base import Executor, Task, TaskError, execute_task, format_exception
from executors.blockstore import SharedDirBlockStore, table_from_ipc, table_to_ipc


def _watch_parent(parent_pid: int) -> None:
    import time
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.2)


def _encode_result(task_id: int, result: object) -> bytes:
    if isinstance(result, pa.Table):
        return pickle.dumps((task_id, "table", table_to_ipc(result)), protocol=5)
    return pickle.dumps((task_id, "value", cloudpickle.dumps(result)), protocol=5)


def worker_main(conn: Connection, store_dir: str, parent_pid: int) -> None:
    """The loop of one worker process: receive a task, run it, send back its result or error."""
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    store = SharedDirBlockStore(store_dir)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        task_id, payload = pickle.loads(message)
        try:
            task = cloudpickle.loads(payload)
        except BaseException as exc:  # noqa: BLE001
            err = TaskError("unpickling a task on the executor", RuntimeError(str(exc)), format_exception(exc))
            conn.send_bytes(pickle.dumps((task_id, "error", cloudpickle.dumps(err))))
            continue
        try:
            reply = _encode_result(task_id, execute_task(task, store))
        except TaskError as err:
            reply = pickle.dumps((task_id, "error", cloudpickle.dumps(err)))
        except BaseException as exc:  # noqa: BLE001 - result that cannot be sent
            err = TaskError(task.description, RuntimeError(str(exc)), format_exception(exc))
            reply = pickle.dumps((task_id, "error", cloudpickle.dumps(err)))
        conn.send_bytes(reply)


@dataclass
class _Pending:
    task_id: int
    payload: bytes
    future: Future
    description: str
    attempts: int = 0


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    current: _Pending | None = None
    alive: bool = True


class ProcessExecutor(Executor):
    def __init__(self, num_workers: int = 2, max_attempts: int = 4) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        SharedDirBlockStore.remove_orphans()
        #: how many worker processes run tasks
        self.num_workers = num_workers
        #: how often a task is tried when its worker dies under it
        self.max_attempts = max_attempts
        self.store = SharedDirBlockStore()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._closed = False
        wake_r, wake_w = socket.socketpair()
        self._wake_r, self._wake_w = Connection(wake_r.detach()), Connection(wake_w.detach())
        self._workers = [self._start_worker() for _ in range(num_workers)]
        self._dispatcher = threading.Thread(target=self._loop, name="dstream-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- public interface -------------------------------------------------------------------------
    def submit_task(self, task: Task) -> Future:
        try:
            payload = cloudpickle.dumps(task)
        except Exception as exc:
            raise TaskError(f"serialising {task.description or 'a task'}", exc, format_exception(exc)) from exc
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            self._pending.append(_Pending(next(self._ids), payload, future, task.description))
        self._wake()
        return future

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and the recovery demo)."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.alive]

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
        for p in pending:
            p.future.cancel()
        self._wake()
        self._dispatcher.join(timeout=5)
        for w in self._workers:
            try:
                w.conn.close()
            except OSError:
                pass
        for w in self._workers:
            try:
                w.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(timeout=2)
        self.store.close()

    # -- internals ----------------------------------------------------------------------------------
    def _start_worker(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # Python's str hash is salted per process; a fixed seed keeps user hashes equal across workers.
        env.setdefault("PYTHONHASHSEED", "0")
        # The driver's import path, so that functions pickled by reference import the same modules.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        fd = child_end.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", "executors.processes", str(fd), self.store.directory, str(os.getpid())],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        child_end.close()
        return _Worker(proc, Connection(parent_end.detach()))

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _assign(self) -> None:
        with self._lock:
            for w in self._workers:
                if not self._pending:
                    return
                if w.alive and w.current is None:
                    p = self._pending.popleft()
                    while p.future.cancelled() and self._pending:
                        p = self._pending.popleft()
                    if p.future.cancelled():
                        return
                    p.attempts += 1
                    w.current = p
                    try:
                        w.conn.send_bytes(pickle.dumps((p.task_id, p.payload), protocol=5))
                    except OSError:
                        pass  # the worker died; its sentinel tells us and the task is retried

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
            self._assign()
            waitables = [self._wake_r] + [w.conn for w in self._workers if w.alive]
            for ready in wait(waitables):
                if ready is self._wake_r:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                    continue
                for w in list(self._workers):
                    if not w.alive:
                        continue
                    if ready is w.conn:
                        self._receive(w)

    def _receive(self, w: _Worker) -> None:
        try:
            message = w.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_worker_death(w)
            return
        task_id, kind, data = pickle.loads(message)
        p, w.current = w.current, None
        if p is None or p.task_id != task_id or p.future.done():
            return
        if kind == "table":
            p.future.set_result(table_from_ipc(data))
        elif kind == "value":
            p.future.set_result(cloudpickle.loads(data))
        else:
            p.future.set_exception(cloudpickle.loads(data))

    def _on_worker_death(self, w: _Worker) -> None:
        if not w.alive:
            return
        w.alive = False
        try:
            code = w.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            w.process.kill()
            code = w.process.wait()
        try:
            w.conn.close()
        except OSError:
            pass
        with self._lock:
            self._workers.remove(w)
            closed = self._closed
            p, w.current = w.current, None
            if p is not None and not p.future.done():
                if p.attempts < self.max_attempts and not closed:
                    self._pending.appendleft(p)
                else:
                    p.future.set_exception(TaskError(
                        p.description or f"task {p.task_id}",
                        RuntimeError(f"worker process {w.process.pid} died (exit code {code}) "
                                     f"{p.attempts} times running it")))
            if not closed:
                self._workers.append(self._start_worker())


if __name__ == "__main__":
    _fd, _store_dir, _parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker_main(Connection(int(_fd)), _store_dir, _parent)
