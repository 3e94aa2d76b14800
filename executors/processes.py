"""A process-pool executor: N worker processes, tasks shipped with cloudpickle.

Workers are forked by a launcher process that imported pyarrow, pandas and the modules tasks use once
(``preload``) for all of them, or, where it cannot be used, started one by one; either way from a fresh
interpreter (``executors/launcher.py``), not with multiprocessing's spawn, which re-runs the user's
``__main__`` and so needs an ``if __name__ == "__main__"`` guard that PySpark scripts never had. Functions
defined in ``__main__`` or a notebook travel by value inside cloudpickle. A worker has done its imports
before its first task arrives, so the first task does not pay for them.

Results that are Arrow tables come back as Arrow IPC bytes; bigger data (cached partitions, shuffle
buckets) goes through the shared-directory block store, memory-mapped by whoever reads it. A worker that
dies mid-task is replaced and its task retried on another worker, up to ``max_attempts`` times; blocks it
wrote stay in the shared directory, and a block that is missing anyway is recomputed by the task that
needs it. Workers exit as soon as the driver dies, by ``SIGKILL`` too: a thread of each worker waits for
the kernel to hang up the driver's end of its socket (``_watch_parent``), so a killed driver leaves no
orphans; the next driver to start on the machine removes the block directory it left
(``SharedDirBlockStore.remove_orphans``).

With speculation on (``SpeculationConf``), ``run_tasks`` gives a straggling task of its stage one backup
copy on an idle worker; the first copy to finish sets the task's result and the other's is discarded
(its worker is left to finish, not killed, so a half-done side effect is never cut off). That is safe
because tasks are idempotent: shuffle map outputs and block puts write whole blocks under a temporary name
and rename them into place, and sinks commit each task's output atomically.

Every decision above (which task runs on which worker, retries, copies, which result wins) is made by the
state machine in ``executors/pool_state.py``; ``ProcessExecutor`` is the shell that owns the processes,
pipes, futures and lock, feeds it events and carries out its instructions.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, FIRST_EXCEPTION, InvalidStateError, wait as wait_futures
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

import cloudpickle

from dstream.executors.base import (Executor, SpeculationConf, Task, TaskError, execute_task,
                                    format_exception)
from dstream.executors import serialization
from dstream.executors.blockstore import SharedDirBlockStore
from dstream.executors.launcher import ForkedProcess, Launcher, command, resolve_start_method, serve, warm_up
from dstream.executors.results import decode_result, encode_result
from dstream.executors.task_pickling import StagePickler
from dstream.executors.pool_state import (AbortTask, AcceptResult, CancelTask, EndTask, FailTask, FindStragglers,
                                          LaunchCopy, PoolClosed, PoolEvent, PoolState, PoolStopped, RetryTask,
                                          SendTask, StageDone, StartWorker, TaskCancelled, TaskFinished,
                                          TaskSubmitted, WorkerDied, WorkerReady)

log = logging.getLogger(__name__)

#: what every worker imports before its first task: pyarrow's compute functions and Acero (group-by
#: aggregations load it), and pandas, which pyarrow imports on its first array built from Python objects
PRELOAD = ("pyarrow.compute", "pyarrow.acero", "pandas")

#: seconds between two looks at the parent pid, the fallback where the socket cannot be watched for a hang-up
PARENT_POLL = 0.05


def _exit_now() -> None:
    """End the worker at once: the driver is gone (or closed its socket), so nobody wants what it does.
    No interpreter shutdown: that would wait for threads a task left running and run slow finalizers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream: nothing to keep
            pass
    os._exit(0)


def _watch_parent(parent_pid: int | None, fd: int | None = None) -> None:
    """Exit when the driver dies, even while a task runs. The driver holds the only other end of the
    worker's socket, so the kernel hangs it up the moment the driver dies, by ``SIGKILL`` too:
    ``POLLRDHUP`` on it wakes this thread without reading (the main thread reads the tasks). A change of
    parent pid, looked at every ``PARENT_POLL`` seconds, is the fallback (no ``POLLRDHUP``, or another
    process holding the driver's end); ``parent_pid`` is None for a worker the launcher forked, whose
    parent is the launcher (forking is used only where ``POLLRDHUP`` is)."""
    rdhup = getattr(select, "POLLRDHUP", None)
    poller = None
    if fd is not None and rdhup is not None and hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, rdhup)
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            _exit_now()
        if poller is None:
            time.sleep(PARENT_POLL)
            continue
        try:
            events = poller.poll(PARENT_POLL * 1000)
        except OSError:
            events = []
        if any(mask & (rdhup | select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events):
            _exit_now()


def _encode_result(task_id: int, result: object) -> bytes:
    """A result for the pipe (``results.encode_result``), tagged with its task id."""
    return pickle.dumps((task_id, *encode_result(result)), protocol=5)


def worker_main(conn: Connection, store_dir: str, parent_pid: int | None) -> None:
    """The loop of one worker process: receive a task, run it, send back its result or error."""
    threading.Thread(target=_watch_parent, args=(parent_pid, conn.fileno()), daemon=True).start()
    store = SharedDirBlockStore(store_dir)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            _exit_now()  # the driver closed its end (shutdown) or died
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
            _exit_now()  # the driver is gone (killed): exit quietly, as the parent watchdog would


def boot(argv: Sequence[str], imported: Callable[[], None]) -> None:
    """Where ``launcher.BOOTSTRAP`` hands over, its parent watch running: ``MODE FD STORE_DIR PRELOAD
    DRIVER_PID``. Imports ``PRELOAD`` (comma-separated module names), ends the bootstrap's watch
    (``imported``), then serves as the launcher that forks workers (``launcher.serve``) or as one worker."""
    mode, fd, store_dir, preload, parent = argv[0], int(argv[1]), argv[2], argv[3], int(argv[4])
    warm_up(m for m in preload.split(",") if m)
    imported()
    if mode == "launcher":
        serve(fd, functools.partial(_run_forked, store_dir))
    else:
        worker_main(Connection(fd), store_dir, parent)


def _become_launcher(store_dir: str, preload: Sequence[str], fd: int, imported: Callable[[], None]) -> None:
    """A launcher forked from the driver (start method "fork"): import what the driver has not, end the
    watch that ran meanwhile (``imported``), then fork the workers (``launcher.serve``)."""
    warm_up(preload)
    imported()
    serve(fd, functools.partial(_run_forked, store_dir))


def _run_forked(store_dir: str, fd: int) -> None:
    """A worker the launcher forked: its parent is the launcher, so it watches only its socket."""
    worker_main(Connection(fd), store_dir, None)


@dataclass
class _Submitted:
    """What the shell keeps of a task the state machine knows by id: its payload, future and name."""

    payload: bytes
    future: Future
    description: str


@dataclass
class _Worker:
    """One worker process and the driver's end of its pipe."""

    worker_id: int
    #: a process of its own, or one the launcher forked
    process: subprocess.Popen | ForkedProcess
    conn: Connection


def _worker_env() -> dict[str, str]:
    """The environment of worker processes (the launcher's, which its forks inherit): the driver's, with a
    fixed string hash seed and the driver's import path."""
    env = dict(os.environ)
    # Python's str hash is salted per process; a fixed seed keeps user hashes equal across workers.
    env.setdefault("PYTHONHASHSEED", "0")
    # The driver's import path, so that functions pickled by reference import the same modules.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


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
    """Tasks run in ``num_workers`` worker processes; lost workers are replaced and their tasks retried.

    The decisions (which task runs where, retries, speculative copies) are ``PoolState``'s; this class is
    the shell around it. Under ``_lock`` it feeds events to the state machine and carries out the
    instructions that touch workers (send a task, start a worker); instructions that settle futures
    (``AcceptResult``, ``FailTask``, ``CancelTask``, ``AbortTask``) run after the lock is released, since
    settling a future runs its callbacks.
    """

    #: seconds between two looks for stragglers while a stage runs with speculation on
    speculation_interval = 0.05

    def __init__(self, num_workers: int = 2, max_attempts: int = 4,
                 speculation: SpeculationConf | None = None, preload: Sequence[str] = (),
                 start_method: str | None = None) -> None:
        """``preload``: modules each worker imports before its first task, besides ``PRELOAD`` (the Context
        gives the modules of dstream that tasks run); the launcher imports them before it forks, so they
        should start no threads when imported.
        ``start_method`` (``launcher.START_METHODS``): "fork" forks the launcher from this process, which has
        imported pyarrow and dstream already, so workers are ready in milliseconds (it needs the driver to
        run with ``PYTHONHASHSEED=0``); "forkserver" starts the launcher as a fresh interpreter, which
        imports once for all workers (about half a second); "spawn" starts each worker as a fresh interpreter
        of its own. None: "fork" where it can be used, else "forkserver" on Linux, else "spawn"."""
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        method = resolve_start_method(start_method)  # before anything starts: a bad one starts nothing
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
        self._state = PoolState(max_attempts)
        #: pickles a stage's shared task function once
        self._pickler = StagePickler()
        self._lock = threading.Lock()
        self._task_ids = itertools.count()
        self._worker_ids = itertools.count()
        self._stage_ids = itertools.count()
        #: tasks the state machine has not finished with, by task id
        self._tasks: dict[int, _Submitted] = {}
        #: live workers by worker id
        self._workers: dict[int, _Worker] = {}
        wake_r, wake_w = socket.socketpair()
        self._wake_r, self._wake_w = Connection(wake_r.detach()), Connection(wake_w.detach())
        #: modules each worker imports before its first task
        self.preload = tuple(dict.fromkeys((*PRELOAD, *preload)))
        #: how the workers start: "fork", "forkserver" or "spawn"
        self.start_method = method
        #: forks the workers (None: each starts on its own)
        self._launcher: Launcher | None = None
        if self.start_method != "spawn":
            become = (functools.partial(_become_launcher, self.store.directory, self.preload)
                      if self.start_method == "fork" else None)
            try:
                self._launcher = Launcher(self.store.directory, self.preload, _worker_env(), become)
            except OSError as exc:
                log.warning("cannot start the worker launcher (%s); starting workers one by one", exc)
        with self._lock:
            for _ in range(num_workers):
                self._start_worker()
        self._dispatcher = threading.Thread(target=self._loop, name="dstream-dispatcher", daemon=True)
        self._dispatcher.start()

    # -- public interface -------------------------------------------------------------------------
    def submit_task(self, task: Task) -> Future:
        return self._submit(task, self._payload(task))

    def run_tasks(self, tasks: Sequence[Task]) -> list[Any]:
        """Run one stage's tasks; with speculation on, stragglers get a backup copy and the first wins."""
        if not self.speculation.enabled or len(tasks) < 2:
            return super().run_tasks(tasks)
        payloads = [self._payload(t) for t in tasks]
        stage = next(self._stage_ids)
        try:
            futures = [self._submit(t, payload, stage) for t, payload in zip(tasks, payloads)]
            while True:
                _, not_done = wait_futures(futures, timeout=self.speculation_interval,
                                           return_when=FIRST_EXCEPTION)
                failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
                if failed is not None:
                    for f in futures:
                        f.cancel()
                    raise failed.exception()
                if not not_done:
                    return [f.result() for f in futures]
                self._feed(FindStragglers(stage, self.speculation, now=time.monotonic()))
        finally:
            self._feed(StageDone(stage, now=time.monotonic()))

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and the recovery demo); waits for the launcher to fork
        those it has not yet."""
        with self._lock:
            processes = [w.process for w in self._workers.values()]
        pids = [p.wait_forked() if isinstance(p, ForkedProcess) else p.pid for p in processes]
        return [pid for pid in pids if pid is not None]

    def shutdown(self) -> None:
        with self._lock:
            if self._state.closed:
                return
            later = self._handle(PoolClosed(now=time.monotonic()))
        self._conclude(later)
        self._wake()
        self._dispatcher.join(timeout=5)
        self._feed(PoolStopped(now=time.monotonic()))  # nobody will deliver these results now
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            try:
                w.conn.close()
            except OSError:
                pass
        launcher = self._launcher
        if launcher is not None and any(isinstance(w.process, ForkedProcess) and w.process.pid is None
                                        for w in workers):
            launcher.close()  # still importing: hung up on, it exits at once and forks nothing more
        for w in workers:
            try:
                w.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(timeout=2)
        if launcher is not None:
            launcher.close()
        self.store.close()

    # -- feeding the state machine -----------------------------------------------------------------
    def _feed(self, event: PoolEvent) -> None:
        """Feed one event and carry out all it calls for."""
        with self._lock:
            later = self._handle(event)
        self._conclude(later)

    def _handle(self, event: PoolEvent) -> list[tuple[EndTask, _Submitted]]:
        """Feed one event (``_lock`` held) and carry out the instructions that touch workers; return those
        that settle a future, with their task, for ``_conclude`` once the lock is released."""
        later: list[tuple[EndTask, _Submitted]] = []
        for instruction in self._state.handle(event):
            if isinstance(instruction, SendTask):
                self._send(instruction)
            elif isinstance(instruction, StartWorker):
                later += self._start_worker()
            elif isinstance(instruction, RetryTask):
                log.info("retrying %s (run %d): its worker died", self._name(instruction.task_id),
                         instruction.attempt)
            elif isinstance(instruction, EndTask):  # over for the state machine: the shell lets go of it too
                submitted = self._tasks.pop(instruction.task_id)
                if isinstance(instruction, AcceptResult) and instruction.copy:
                    # counted before the future is set, so whoever waits on it sees the counter updated
                    self.speculative_wins += 1
                later.append((instruction, submitted))
            else:
                raise TypeError(f"the process pool cannot carry out {instruction!r}")
        return later

    def _conclude(self, later: list[tuple[EndTask, _Submitted]], result: tuple[str, Any] | None = None,
                  lost: tuple[int, int | None] | None = None) -> None:
        """Settle futures (``_lock`` not held): ``result`` is the (kind, data) a worker sent for an
        ``AcceptResult``, ``lost`` the (pid, exit code) of the worker a ``FailTask`` lost last."""
        for instruction, submitted in later:
            name = submitted.description or f"task {instruction.task_id}"
            if isinstance(instruction, AcceptResult):
                assert result is not None
                if not _settle(submitted.future, *_load(name, *result)) and instruction.copy:
                    with self._lock:  # cancelled meanwhile: the copy won nothing
                        self.speculative_wins -= 1
            elif isinstance(instruction, FailTask):
                pid, code = lost if lost is not None else (None, None)
                _settle(submitted.future, "error", TaskError(
                    name, RuntimeError(f"{instruction.reason} (last: pid {pid}, exit code {code})")))
            elif isinstance(instruction, CancelTask):
                submitted.future.cancel()
            elif isinstance(instruction, AbortTask):
                _settle(submitted.future, "error", RuntimeError(
                    f"the executor was shut down while running {submitted.description or 'a task'}"))

    def _name(self, task_id: int) -> str:
        submitted = self._tasks.get(task_id)
        return (submitted.description if submitted is not None else "") or f"task {task_id}"

    # -- carrying out instructions ----------------------------------------------------------------
    def _submit(self, task: Task, payload: bytes, stage: int | None = None) -> Future:
        task_id, future = next(self._task_ids), Future()
        future.add_done_callback(functools.partial(self._on_done, task_id))
        with self._lock:
            if self._state.closed:
                raise RuntimeError("the executor has been shut down")
            self._tasks[task_id] = _Submitted(payload, future, task.description)
            # Sent to an idle worker from this thread: one thread hop less than waking the dispatcher.
            later = self._handle(TaskSubmitted(task_id, stage, now=time.monotonic()))
        self._conclude(later)
        return future

    def _on_done(self, task_id: int, future: Future) -> None:
        """A future is done; a cancelled one's task is over (this runs in the thread that cancelled it)."""
        if future.cancelled():
            with self._lock:
                self._tasks.pop(task_id, None)
                later = self._handle(TaskCancelled(task_id, now=time.monotonic()))
            self._conclude(later)

    def _payload(self, task: Task) -> bytes:
        try:
            return self._pickler.dumps(task)
        except Exception as exc:
            raise TaskError(f"serialising {task.description or 'a task'}", exc, format_exception(exc)) from exc

    def _send(self, instruction: SendTask) -> None:
        if isinstance(instruction, LaunchCopy):
            self.speculative_launches += 1
            log.info("launching a speculative copy of %s", self._name(instruction.task_id))
        worker = self._workers[instruction.worker_id]
        message = pickle.dumps((instruction.task_id, self._tasks[instruction.task_id].payload), protocol=5)
        try:
            worker.conn.send_bytes(message)
        except OSError:
            pass  # the worker died; its pipe tells the dispatcher and the task is retried

    def _start_worker(self) -> list[tuple[EndTask, _Submitted]]:
        """Start a worker process (``_lock`` held): forked by the launcher, else a process of its own; report
        it ready at once (the tasks sent meanwhile wait in its socket until it has done its imports)."""
        parent_end, child_end = socket.socketpair()
        worker_id = next(self._worker_ids)
        proc = self._launcher.fork(worker_id, child_end) if self._launcher is not None else None
        if proc is None:
            fd = child_end.fileno()
            proc = subprocess.Popen(command("worker", fd, self.store.directory, self.preload, os.getpid()),
                                    pass_fds=(fd,), env=_worker_env(), stdin=subprocess.DEVNULL)
        child_end.close()
        worker = _Worker(worker_id, proc, Connection(parent_end.detach()))
        self._workers[worker.worker_id] = worker
        self._wake()  # the dispatcher listens to the new pipe from its next round
        return self._handle(WorkerReady(worker.worker_id, now=time.monotonic()))

    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"x")
        except OSError:
            pass

    # -- the dispatcher thread: results and deaths ------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._state.closed:
                    return
                conns = {w.conn: w for w in self._workers.values()}
            for ready in wait([self._wake_r, *conns]):
                if ready is self._wake_r:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                else:
                    self._receive(conns[ready])

    def _receive(self, w: _Worker) -> None:
        try:
            message = w.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_worker_death(w)
            return
        task_id, kind, data = pickle.loads(message)
        with self._lock:
            later = self._handle(TaskFinished(w.worker_id, task_id, now=time.monotonic()))
        self._conclude(later, result=(kind, data))

    def _on_worker_death(self, w: _Worker) -> None:
        with self._lock:
            if self._workers.pop(w.worker_id, None) is None:
                return
            later = self._handle(WorkerDied(w.worker_id, now=time.monotonic()))
        try:
            code = w.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            w.process.kill()
            code = w.process.wait()
        try:
            w.conn.close()
        except OSError:
            pass
        self._conclude(later, lost=(w.process.pid, code))


def _load(name: str, kind: str, data: Any) -> tuple[str, object]:
    """A worker's reply as (kind, value); a result the driver cannot load becomes its task's error."""
    try:
        return kind, (cloudpickle.loads(data) if kind == "error" else decode_result(kind, data))
    except BaseException as exc:  # noqa: BLE001 - a result the driver cannot load fails its task
        return "error", TaskError(f"loading the result of {name}", RuntimeError(str(exc)), format_exception(exc))


if __name__ == "__main__":
    _fd, _store_dir, _parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker_main(Connection(int(_fd)), _store_dir, _parent)
