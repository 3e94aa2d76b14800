"""A process-pool executor: N worker processes, tasks shipped with cloudpickle.

Workers are started as ``python -m executors.processes`` (not multiprocessing's spawn, which re-runs the
user's ``__main__`` and so needs an ``if __name__ == "__main__"`` guard that PySpark scripts never had);
functions defined in ``__main__`` or a notebook travel by value inside cloudpickle.

Results that are Arrow tables come back as Arrow IPC bytes; bigger data (cached partitions, shuffle
buckets) goes through the shared-directory block store, memory-mapped by whoever reads it. A worker that
dies mid-task is replaced and its task retried on another worker, up to ``max_attempts`` times; blocks it
wrote stay in the shared directory, and a block that is missing anyway is recomputed by the task that
needs it. Workers watch their parent and exit when the driver dies, so a killed driver leaves no orphans.

With speculation on (``SpeculationConf``), ``run_tasks`` gives a straggling task of its stage one backup
copy on an idle worker; the first copy to finish sets the task's result and the other's is discarded
(its worker is left to finish, not killed, so a half-done side effect is never cut off). That is safe
because tasks are idempotent: shuffle map outputs and block puts write whole blocks under a temporary name
and rename them into place, and sinks commit each task's output atomically.
"""
from __future__ import annotations

import itertools
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, FIRST_EXCEPTION, InvalidStateError, wait as wait_futures
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence

import cloudpickle
import pyarrow as pa

from dstream.executors.base import (Executor, SpeculationConf, Task, TaskError, TimedResult, execute_task,
                            format_exception, speculatable)
from dstream.executors import serialization
from dstream.executors.blockstore import SharedDirBlockStore, table_from_ipc, table_to_ipc


def _watch_parent(parent_pid: int) -> None:
    import time
    while True:
        if os.getppid() != parent_pid:
            os._exit(0)
        time.sleep(0.2)


def _encode_result(task_id: int, result: object) -> bytes:
    """A result for the pipe: tables (also inside a TimedResult) as Arrow IPC, anything else pickled."""
    if isinstance(result, pa.Table):
        return pickle.dumps((task_id, "table", table_to_ipc(result)), protocol=5)
    if isinstance(result, TimedResult) and isinstance(result.value, pa.Table):
        timing = (result.start, result.end, result.worker)
        updates = None if result.accumulators is None else cloudpickle.dumps(result.accumulators)
        return pickle.dumps((task_id, "timed_table", (table_to_ipc(result.value), timing, updates)), protocol=5)
    return pickle.dumps((task_id, "value", cloudpickle.dumps(result)), protocol=5)


def _decode_result(kind: str, data: Any) -> object:
    if kind == "table":
        return table_from_ipc(data)
    if kind == "timed_table":
        ipc_bytes, (start, end, worker), updates = data
        return TimedResult(table_from_ipc(ipc_bytes), start, end, worker,
                           None if updates is None else cloudpickle.loads(updates))
    return cloudpickle.loads(data)


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
            task = serialization.loads(payload)
        except BaseException as exc:  # noqa: BLE001
            err = TaskError("unpickling a task on the executor", RuntimeError(str(exc)), format_exception(exc))
            reply = pickle.dumps((task_id, "error", cloudpickle.dumps(err)))
        else:
            try:
                reply = _encode_result(task_id, execute_task(task, store))
            except TaskError as err:
                reply = pickle.dumps((task_id, "error", cloudpickle.dumps(err)))
            except BaseException as exc:  # noqa: BLE001 - result that cannot be sent
                err = TaskError(task.description, RuntimeError(str(exc)), format_exception(exc))
                reply = pickle.dumps((task_id, "error", cloudpickle.dumps(err)))
        try:
            conn.send_bytes(reply)
        except OSError:
            return  # the driver is gone (killed): exit quietly, as the parent watchdog would


@dataclass
class _Pending:
    """One submitted task: its payload, its future, and the copies of it running now."""

    task_id: int
    payload: bytes
    future: Future
    description: str
    #: how many times a worker was given it (first run, retries, backup copy)
    attempts: int = 0
    #: how many workers are running it now (2 while a backup copy runs beside the original)
    running: int = 0
    #: monotonic time its latest non-backup run started
    started: float | None = None
    #: seconds the winning copy took
    duration: float | None = None
    #: whether a backup copy was ever queued for it
    speculated: bool = False


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    current: _Pending | None = None
    alive: bool = True
    #: whether ``current`` is a backup copy
    backup: bool = False
    #: monotonic time ``current`` started here
    started: float = 0.0


def _settle(future: Future, kind: str, value: object) -> bool:
    """Set a future's result or exception unless it is already done (cancelled, or a copy won)."""
    try:
        if kind == "error":
            future.set_exception(value)  # type: ignore[arg-type]
        else:
            future.set_result(value)
    except InvalidStateError:
        return False
    return True


class ProcessExecutor(Executor):
    """Tasks run in ``num_workers`` worker processes; lost workers are replaced and their tasks retried."""

    #: seconds between two looks for stragglers while a stage runs with speculation on
    speculation_interval = 0.05

    def __init__(self, num_workers: int = 2, max_attempts: int = 4,
                 speculation: SpeculationConf | None = None) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        SharedDirBlockStore.remove_orphans()
        #: how many worker processes run tasks
        self.num_workers = num_workers
        #: how often a task is tried when its worker dies under it
        self.max_attempts = max_attempts
        #: straggler mitigation (off unless given, or set from a Context's conf)
        self.speculation = speculation or SpeculationConf()
        self.speculative_launches = 0
        self.speculative_wins = 0
        self.store = SharedDirBlockStore()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        #: backup copies waiting for an idle worker (served after every first run)
        self._backups: deque[_Pending] = deque()
        self._closed = False
        wake_r, wake_w = socket.socketpair()
        self._wake_r, self._wake_w = Connection(wake_r.detach()), Connection(wake_w.detach())
        self._workers = [self._start_worker() for _ in range(num_workers)]
        self._dispatcher = threading.Thread(target=self._loop, name="dstream-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- public interface -------------------------------------------------------------------------
    def submit_task(self, task: Task) -> Future:
        payload = self._payload(task)
        return self._submit(task, payload).future

    def run_tasks(self, tasks: Sequence[Task]) -> list[Any]:
        """Run one stage's tasks; with speculation on, stragglers get a backup copy and the first wins."""
        if not self.speculation.enabled or len(tasks) < 2:
            return super().run_tasks(tasks)
        payloads = [self._payload(t) for t in tasks]
        stage = [self._submit(t, payload) for t, payload in zip(tasks, payloads)]
        futures = [p.future for p in stage]
        while True:
            _, not_done = wait_futures(futures, timeout=self.speculation_interval, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
            if failed is not None:
                for f in futures:
                    f.cancel()
                raise failed.exception()
            if not not_done:
                return [f.result() for f in futures]
            self._speculate(stage)

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
            self._backups.clear()
        for p in pending:
            p.future.cancel()
        self._wake()
        self._dispatcher.join(timeout=5)
        for w in self._workers:  # nobody will deliver these results now
            if w.current is not None:
                _settle(w.current.future, "error", RuntimeError(
                    f"the executor was shut down while running {w.current.description or 'a task'}"))
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
    def _submit(self, task: Task, payload: bytes) -> _Pending:
        p = _Pending(next(self._ids), payload, Future(), task.description)
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor has been shut down")
            self._pending.append(p)
        # Hand it to an idle worker from this thread: one thread hop less than waking the dispatcher.
        self._assign()
        return p

    def _payload(self, task: Task) -> bytes:
        try:
            return serialization.dumps(task)
        except Exception as exc:
            raise TaskError(f"serialising {task.description or 'a task'}", exc, format_exception(exc)) from exc

    def _speculate(self, stage: list[_Pending]) -> None:
        """Queue a backup copy of each straggler of ``stage``, as many as there are idle workers."""
        now = time.monotonic()
        with self._lock:
            if self._closed or self._pending or self._backups:
                return
            idle = sum(1 for w in self._workers if w.alive and w.current is None)
            if not idle:
                return
            finished = [p.duration for p in stage if p.duration is not None]
            running = {i: now - p.started for i, p in enumerate(stage)
                       if p.running and p.started is not None and not p.speculated and not p.future.done()}
            chosen = speculatable(finished, running, len(stage), self.speculation)[:idle]
            for i in chosen:
                stage[i].speculated = True
                self._backups.append(stage[i])
        if chosen:
            self._wake()

    def _start_worker(self) -> _Worker:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # Python's str hash is salted per process; a fixed seed keeps user hashes equal across workers.
        env.setdefault("PYTHONHASHSEED", "0")
        # The driver's import path, so that functions pickled by reference import the same modules.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        fd = child_end.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dstream.executors.processes", str(fd), self.store.directory, str(os.getpid())],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        child_end.close()
        return _Worker(proc, Connection(parent_end.detach()))

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    def _next(self) -> tuple[_Pending, bool] | None:
        """The next task to run and whether it is a backup copy; skips tasks already done or cancelled."""
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                return p, False
        while self._backups:
            p = self._backups.popleft()
            if not p.future.done() and p.running:  # a copy is pointless once no original runs
                return p, True
        return None

    def _assign(self) -> None:
        with self._lock:
            for w in self._workers:
                if not (w.alive and w.current is None):
                    continue
                picked = self._next()
                if picked is None:
                    return
                p, backup = picked
                now = time.monotonic()
                p.attempts += 1
                p.running += 1
                if backup:
                    self.speculative_launches += 1
                else:
                    p.started = now
                w.current, w.backup, w.started = p, backup, now
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
        with self._lock:
            p, w.current = w.current, None
            if p is None or p.task_id != task_id:
                return
            p.running -= 1
            if p.future.done():
                return  # cancelled, or the other copy won: this result is discarded
            # Only this thread sets results; counted before the future is set, so that whoever waits
            # on it sees the counters already updated.
            p.duration = time.monotonic() - w.started
            won = w.backup
            if won:
                self.speculative_wins += 1
        try:
            value = cloudpickle.loads(data) if kind == "error" else _decode_result(kind, data)
        except BaseException as exc:  # noqa: BLE001 - a result the driver cannot load fails its task
            kind, value = "error", TaskError(f"loading the result of {p.description or f'task {p.task_id}'}",
                                             RuntimeError(str(exc)), format_exception(exc))
        if not _settle(p.future, kind, value) and won:  # cancelled meanwhile
            with self._lock:
                self.speculative_wins -= 1

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
        failed = None
        with self._lock:
            self._workers.remove(w)
            closed = self._closed
            p, w.current = w.current, None
            if p is not None:
                p.running -= 1
            if p is not None and not p.future.done() and not p.running:  # no other copy still runs it
                if p.attempts < self.max_attempts and not closed:
                    self._pending.appendleft(p)
                else:
                    failed = p
            if not closed:
                self._workers.append(self._start_worker())
        if failed is not None:
            _settle(failed.future, "error", TaskError(
                failed.description or f"task {failed.task_id}",
                RuntimeError(f"its worker process died {failed.attempts} times "
                             f"(last: pid {w.process.pid}, exit code {code})")))


if __name__ == "__main__":
    _fd, _store_dir, _parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker_main(Connection(int(_fd)), _store_dir, _parent)
