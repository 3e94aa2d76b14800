"""Starting worker processes quickly: a stdlib-only bootstrap, and a fork server that imports once for all.

A new Python process spends about half a second importing pyarrow, pandas (pyarrow loads it on its first
array built from Python objects) and dstream before it can run a task; sixteen workers starting at once on
a small machine take seconds. So ``ProcessExecutor`` starts one *launcher* process, which imports all that
once (``preload``), then forks each worker on request, in milliseconds (as PySpark's ``daemon.py`` and
multiprocessing's forkserver do). The launcher is a fresh interpreter, not a fork of the driver, so the
user's ``__main__`` is never re-run and scripts need no ``if __name__ == "__main__"`` guard; the workers run
``worker_main`` as before, each on its own socket to the driver. Where the launcher cannot be used (no
``fork``, no ``POLLRDHUP``, no file descriptor passing) or has died, a worker is started on its own with the
same bootstrap and imports for itself.

Every such process starts with ``BOOTSTRAP`` (``python -c``): before importing anything but the standard
library it starts a thread that exits the process when the driver's end of its socket hangs up (the driver
died or gave up on it) or its parent changes, so a driver killed during start-up leaves no process importing.
Once the imports are done, that watch ends and the process's own takes over (the launcher's loop; each
worker's ``_watch_parent`` thread).

The driver talks to the launcher over one ``SOCK_SEQPACKET`` socket: ``("fork", worker_id)`` with the
worker's socket attached (``SCM_RIGHTS``) one way; ``("forked", worker_id, pid)``, ``("exited", pid, code)``
and ``("failed", worker_id, reason)`` the other. ``ForkedProcess`` is the driver's handle on one forked
worker (the part of ``subprocess.Popen`` the pool uses).
"""
from __future__ import annotations

import fcntl
import gc
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from typing import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

#: the module a bootstrapped process imports and hands over to (its ``boot(argv, imported)``); also how the
#: driver's tools recognise such executor processes in ``/proc`` (``dstream.demo.harness.worker_processes``;
#: forked from the driver, they have its command line and ``process_name`` instead)
WORKER_MODULE = "dstream.executors.processes"

#: ``python -c BOOTSTRAP MODULE MODE FD STORE_DIR PRELOAD DRIVER_PID``: the standard library only, until its
#: watch runs. ``FD`` is the process's socket to the driver; the watch exits at once when the driver's end
#: hangs up or the parent pid changes, and ends when ``boot`` calls ``imported()``.
BOOTSTRAP = """\
import os, select, sys, threading
_fd, _parent = int(sys.argv[3]), int(sys.argv[-1])
_stop_r, _stop_w = os.pipe()
def _watch():
    rdhup = getattr(select, "POLLRDHUP", 0)
    poller = select.poll()
    poller.register(_fd, rdhup)
    poller.register(_stop_r, select.POLLIN)
    while True:
        if os.getppid() != _parent:
            os._exit(0)
        for fd, mask in poller.poll(50):
            if fd == _stop_r:
                return
            if mask & (rdhup | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)
_watcher = threading.Thread(target=_watch, daemon=True)
_watcher.start()
def _imported():
    os.write(_stop_w, b"x")
    _watcher.join()
    os.close(_stop_r)
    os.close(_stop_w)
__import__(sys.argv[1], fromlist=["boot"]).boot(sys.argv[2:], _imported)
"""

def process_name(driver_pid: int) -> str:
    """The name (``/proc/PID/comm``, what ``ps -o comm`` and ``top`` show) of a launcher forked from the
    driver ``driver_pid`` and of its workers, whose command line is the driver's: how tools find them."""
    return f"dstream:{driver_pid}"


#: the longest ``ForkedProcess.wait_forked`` waits for the launcher to report a pid (it may still be importing)
FORK_WAIT = 120.0

#: how worker processes start (``dstream.executor.startMethod``), named as in ``multiprocessing``: the launcher
#: forked from the driver, which has imported everything already ("fork"); a fresh launcher interpreter that
#: imports once for all workers ("forkserver"); or each worker a fresh interpreter of its own ("spawn")
START_METHODS = ("fork", "forkserver", "spawn")


def hashes_like_workers() -> bool:
    """Whether this process hashes ``str`` as workers started on their own do: workers get
    ``PYTHONHASHSEED=0`` (a driver's own setting wins), so a forked worker, which keeps its driver's hash
    seed, agrees with them only when the driver runs with ``PYTHONHASHSEED=0`` too."""
    return sys.flags.hash_randomization == 0 and os.environ.get("PYTHONHASHSEED", "0") == "0"


def default_start_method() -> str:
    """"fork" where it is supported and the driver hashes like its workers (``PYTHONHASHSEED=0``), else
    "forkserver" where supported, else "spawn"."""
    if not supported():
        return "spawn"
    return "fork" if hashes_like_workers() else "forkserver"


def resolve_start_method(method: str | None) -> str:
    """``method`` checked (None: ``default_start_method()``); a ValueError that says why it cannot be used."""
    if method is None:
        return default_start_method()
    if method not in START_METHODS:
        raise ValueError(f"dstream.executor.startMethod must be one of {', '.join(START_METHODS)}, got {method!r}")
    if method != "spawn" and not supported():
        raise ValueError(f"dstream.executor.startMethod {method!r} needs Linux (fork, POLLRDHUP and descriptor "
                         f"passing); use 'spawn' on {sys.platform}")
    if method == "fork" and not hashes_like_workers():
        raise ValueError("dstream.executor.startMethod 'fork' needs the driver started with PYTHONHASHSEED=0: "
                         "forked workers keep the driver's str hash seed, and must hash keys as workers "
                         "started on their own do (PYTHONHASHSEED=0); use 'forkserver' otherwise")
    return method


def command(mode: str, fd: int, store_dir: str, preload: Sequence[str], driver_pid: int) -> list[str]:
    """The command line of a bootstrapped process: ``mode`` ``"launcher"`` or ``"worker"``."""
    return [sys.executable, "-c", BOOTSTRAP, WORKER_MODULE, mode, str(fd), store_dir, ",".join(preload),
            str(driver_pid)]


def supported() -> bool:
    """Whether workers can be forked by a launcher here: ``fork``, ``POLLRDHUP`` (a forked worker watches only
    its socket, its parent being the launcher), ``SOCK_SEQPACKET`` and descriptor passing (Linux)."""
    return (hasattr(os, "fork") and hasattr(select, "POLLRDHUP") and hasattr(select, "poll")
            and hasattr(socket, "SOCK_SEQPACKET") and hasattr(socket, "send_fds") and sys.platform.startswith("linux"))


# -- the launcher process ----------------------------------------------------------------------------------
def serve(ctrl_fd: int, run_worker: Callable[[int], None]) -> None:
    """The launcher's loop, once its imports are done: fork a worker for each ``("fork", id)`` request, which
    runs ``run_worker(fd)`` on the socket that came with it; report its pid, and each child's exit code as it
    is reaped. Exits (without returning) when the driver's end hangs up."""
    ctrl = socket.socket(fileno=ctrl_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; the launcher goes with it
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, _on_sigchld)  # a handler, so that the signal writes to the wake-up pipe
    signal.set_wakeup_fd(wake_w)
    hangup = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
    poller = select.poll()
    poller.register(ctrl, select.POLLIN | select.POLLRDHUP)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, mask in poller.poll():
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(ctrl)
            elif mask & hangup:
                os._exit(0)  # the driver is gone or shutting down: its workers watch their own sockets
            else:
                data, fds, _, _ = socket.recv_fds(ctrl, 4096, 1)
                if not data:
                    os._exit(0)
                _fork(ctrl, pickle.loads(data)[1], fds, (wake_r, wake_w), run_worker)


def _on_sigchld(signum: int, frame: object) -> None:
    """Nothing: the wake-up pipe tells the launcher's loop to reap."""


def _tell(ctrl: socket.socket, message: tuple) -> None:
    try:
        ctrl.send(pickle.dumps(message))
    except OSError:
        os._exit(0)  # the driver is gone


def _reap(ctrl: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _tell(ctrl, ("exited", pid, os.waitstatus_to_exitcode(status)))


def _fork(ctrl: socket.socket, worker_id: int, fds: list[int], pipe: tuple[int, int],
          run_worker: Callable[[int], None]) -> None:
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        _tell(ctrl, ("failed", worker_id, "no socket came with the request"))
        return
    _flush_standard_streams()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process with threads: ours are pyarrow's jemalloc and numpy's
            # BLAS threads, idle at this point and made fork-safe by their libraries.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(fds[0])
        _tell(ctrl, ("failed", worker_id, f"fork failed: {exc}"))
        return
    if pid == 0:
        _child(ctrl, pipe, fds[0], run_worker)
    os.close(fds[0])  # the child's now: a copy left here would hide its death from the driver
    _tell(ctrl, ("forked", worker_id, pid))


def _child(ctrl: socket.socket, pipe: tuple[int, int], fd: int, run_worker: Callable[[int], None]) -> None:
    """In a forked worker: drop what is the launcher's, then run the worker; never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ctrl.close()  # held here, it would hide the launcher's death from the driver
        for p in pipe:
            os.close(p)
        numpy_random = sys.modules.get("numpy.random")  # Python's random reseeds itself after a fork
        if numpy_random is not None:
            numpy_random.seed()
        run_worker(fd)
    except BaseException:  # noqa: BLE001 - a worker must never return into the launcher's loop
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


# -- imports ahead of need --------------------------------------------------------------------------------
def warm_up(modules: Iterable[str]) -> None:
    """Import ``modules`` now, before any task: what tasks unpickle and call, so the first task does not pay
    for the imports. One that fails to import is left for the task that needs it to report."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the task that needs it reports it
            log.debug("warming up: cannot import %s: %s", name, exc)


#: the thread ``warm_up_in_background`` started last
_warming: threading.Thread | None = None


def warm_up_in_background(modules: Sequence[str]) -> None:
    """Import those of ``modules`` not imported yet on a thread of their own, while this process (the
    driver) goes on: pandas, for one, which pyarrow imports on its first array built from Python objects,
    costs 0.2 s, which a driver's first batch would otherwise wait for. ``fork_launcher`` waits for the
    thread: a fork must not copy a module half imported."""
    global _warming
    missing = [m for m in modules if m not in sys.modules]
    if missing and (_warming is None or not _warming.is_alive()):
        _warming = threading.Thread(target=warm_up, args=(missing,), name="dstream-warm-up", daemon=True)
        _warming.start()


# -- a launcher forked from the driver ("fork") ----------------------------------------------------------
#: what the driver held that a launcher forked from it never uses but keeps referenced (the standard streams,
#: logging handlers), so that nothing of the driver's is finalised (flushed, closed) in the launcher or workers
_DRIVER_LEFTOVERS: list = []


def fork_launcher(fd: int, become: Callable[[int, Callable[[], None]], None]) -> int:
    """Fork this process (the driver) into a launcher on socket ``fd``; the child's pid. The child lets go of
    what is the driver's (``_leave_driver``) and runs ``become(fd, imported)``: it imports what the driver has
    not, calls ``imported()``, then ``serve``s; it never returns. Until ``imported()``, a thread exits the
    child at once if the driver's end of ``fd`` hangs up (as ``BOOTSTRAP``'s does in a fresh launcher)."""
    if _warming is not None:
        _warming.join()
    _flush_standard_streams()
    driver_pid = os.getpid()
    # No collection from the fork until the child has frozen what it inherited: a driver object's finaliser
    # run there could close a descriptor whose number the child uses (gc.freeze's documented recipe).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process with threads. None of the driver's threads is needed in
            # the launcher, which lets go of what they hold; pyarrow's and numpy's pools are fork-safe.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    finally:
        if collecting and os.getpid() == driver_pid:
            gc.enable()
    if pid:
        return pid
    code = 0
    try:
        fd = _leave_driver(fd)
        gc.enable()
        _set_name(process_name(driver_pid))  # the workers it forks inherit it
        become(fd, _watch_hangup(fd))
    except BaseException:  # noqa: BLE001 - the child must never return into the driver's code
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _watch_hangup(fd: int) -> Callable[[], None]:
    """Exit this process at once when the other end of socket ``fd`` hangs up, until the function returned
    is called."""
    stop_r, stop_w = os.pipe()
    hangup = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
        poller.register(stop_r, select.POLLIN)
        while True:
            for ready, mask in poller.poll():
                if ready == stop_r:
                    return
                if mask & hangup:
                    os._exit(0)

    watcher = threading.Thread(target=watch, name="dstream-launcher-watch", daemon=True)
    watcher.start()

    def stop() -> None:
        os.write(stop_w, b"x")
        watcher.join()
        os.close(stop_r)
        os.close(stop_w)
    return stop


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):  # else what sits in their buffers is written once per fork too
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _leave_driver(keep_fd: int) -> int:
    """In a launcher just forked from the driver, become a process of its own, as a fresh one would be; the
    number ``keep_fd`` has now (moved above 2, where the driver had it among its standard descriptors):

    - every file descriptor but stdout, stderr and ``keep_fd`` points to /dev/null: a pipe or socket of the
      driver's held here would hide a hang-up from whoever waits on its other end, and /dev/null rather than
      closing, so that a driver object finalised here cannot close a descriptor the launcher reuses;
    - signal handlers the driver installed are back to the defaults, and no signal is blocked;
    - the standard streams are plain ones on descriptors 0-2 (a notebook kernel's talk to threads that did
      not survive the fork), and logging has no handlers (its last resort writes warnings to stderr);
    - what the driver allocated, garbage included, is out of the garbage collector's sight (``gc.freeze``):
      no driver object is finalised here, and collections in the launcher and its workers do not copy the
      driver's memory pages they share.
    """
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in signal.valid_signals():
        handler = signal.getsignal(sig)
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    devnull = _above_standard(os.open(os.devnull, os.O_RDWR))
    keep_fd = _above_standard(keep_fd)
    # A driver started without stdout or stderr (a daemon) has None there, and descriptors 0-2 may be its
    # sockets: /dev/null in their place.
    for fd, stream in ((1, sys.__stdout__), (2, sys.__stderr__)):
        if not _stream_on(stream, fd):
            os.dup2(devnull, fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in (1, 2, keep_fd, devnull) or not _is_open(fd):  # not open: the listing's own, closed by now
            continue
        os.dup2(devnull, fd)
    os.close(devnull)
    _DRIVER_LEFTOVERS.extend((sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__))
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        if logger.handlers:
            _DRIVER_LEFTOVERS.append(logger.handlers)
            logger.handlers = []
    gc.freeze()
    return keep_fd


def _above_standard(fd: int) -> int:
    """``fd``, or a copy of it numbered 3 or above when it is 0, 1 or 2 (which then stays as it is)."""
    return fd if fd > 2 else fcntl.fcntl(fd, fcntl.F_DUPFD, 3)


def _stream_on(stream: object, fd: int) -> bool:
    """Whether ``stream`` (one of the driver's ``sys.__stdout__``...) is a file on descriptor ``fd``."""
    try:
        return stream is not None and stream.fileno() == fd  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass  # only a name for tools to see


class ForkedLauncher:
    """The driver's handle on a launcher it forked: what ``Launcher`` uses of ``subprocess.Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        #: the exit code once reaped (negative: killed by that signal); None while it runs or when unknown
        self.returncode: int | None = None
        self._reaped = False

    def poll(self) -> int | None:
        if not self._reaped:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else (a SIGCHLD set to SIG_IGN, os.wait())
                self._reaped = True
                return None
            if pid:
                self._reaped = True
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None and not self._reaped:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker launcher (pid {self.pid})", timeout)
            time.sleep(0.005)
        return self.returncode

    def kill(self) -> None:
        if not self._reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- the driver's side ---------------------------------------------------------------------------------
class ForkedProcess:
    """A worker the launcher forked (or will): its pid once reported, its exit code once reaped. Offers what
    the pool uses of ``subprocess.Popen``: ``pid``, ``poll``, ``wait`` and ``kill``."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        #: the process id, once the launcher reported it (None before, and if it was never forked)
        self.pid: int | None = None
        #: the exit code once reaped (negative: killed by that signal); None while it runs, or when unknown
        self.returncode: int | None = None
        self._forked = threading.Event()
        self._exited = threading.Event()
        #: set when the launcher is gone: no more reports come for this process
        self._orphaned = False

    # called by the Launcher's reader thread
    def _set_pid(self, pid: int) -> None:
        self.pid = pid
        self._forked.set()

    def _set_exited(self, code: int | None) -> None:
        self.returncode = code
        self._forked.set()
        self._exited.set()

    def _orphan(self) -> None:
        self._orphaned = True
        if self.pid is None:
            self._set_exited(None)  # never forked, and never will be
        self._forked.set()

    def wait_forked(self, timeout: float | None = FORK_WAIT) -> int | None:
        """The pid, waiting up to ``timeout`` seconds for the fork; None if it was never forked."""
        self._forked.wait(timeout)
        return self.pid

    def poll(self) -> int | None:
        return self.returncode if self._exited.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process is gone (None when the launcher died first, so nobody reaped it
        for us); ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._exited.is_set():
            if self._orphaned and (self.pid is None or _gone(self.pid)):
                self._set_exited(None)
                break
            step = 0.01 if self._orphaned else 0.1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(f"forked worker {self.worker_id} (pid {self.pid})", timeout)
                step = min(step, left)
            self._exited.wait(step)
        return self.returncode

    def kill(self) -> None:
        if self.pid is not None and not self._exited.is_set():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts); for workers the launcher left."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


class Launcher:
    """The driver's end of the launcher process: starts it, asks it to fork workers, and hears their pids and
    exit codes on a reader thread. Once it has died (or was closed), ``fork`` returns None and the pool starts
    workers on their own."""

    def __init__(self, store_dir: str, preload: Sequence[str], env: dict[str, str],
                 become: Callable[[int, Callable[[], None]], None] | None = None) -> None:
        """A fresh interpreter started with ``command("launcher", ...)`` and ``env``; or, given ``become``
        (start method "fork"), a fork of this process that runs it (``fork_launcher``)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = theirs.fileno()
        try:
            #: the launcher process
            self.process: subprocess.Popen | ForkedLauncher
            if become is not None:
                self.process = ForkedLauncher(fork_launcher(fd, become))
            else:
                self.process = subprocess.Popen(command("launcher", fd, store_dir, preload, os.getpid()),
                                                pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._ctrl = ours
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        #: requested, not yet reported forked, by worker id
        self._pending: dict[int, ForkedProcess] = {}
        #: forked and not yet reaped, by pid
        self._running: dict[int, ForkedProcess] = {}
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="dstream-launcher", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    def fork(self, worker_id: int, sock: socket.socket) -> ForkedProcess | None:
        """Ask for a worker on ``sock`` (the caller closes its copy afterwards); None when the launcher is gone."""
        proc = ForkedProcess(worker_id)
        with self._lock:
            if not self._alive:
                return None
            self._pending[worker_id] = proc
        try:
            # Not under _lock, which the reader needs: a send waits while the launcher's queue is full (it may
            # still be importing), and the launcher may wait in turn for the reader to take its reports.
            with self._send_lock:
                socket.send_fds(self._ctrl, [pickle.dumps(("fork", worker_id))], [sock.fileno()])
        except OSError as exc:
            with self._lock:
                self._pending.pop(worker_id, None)
                self._alive = False
            log.warning("the worker launcher is gone (%s); starting workers one by one", exc)
            return None
        return proc

    def _read(self) -> None:
        while True:
            try:
                data = self._ctrl.recv(4096)
            except OSError:
                data = b""
            if not data:
                break
            kind, key, value = pickle.loads(data)
            with self._lock:
                if kind == "forked":
                    proc = self._pending.pop(key, None)
                    if proc is not None:
                        self._running[value] = proc
                        proc._set_pid(value)
                elif kind == "exited":
                    proc = self._running.pop(key, None)
                    if proc is not None:
                        proc._set_exited(value)
                elif kind == "failed":
                    log.warning("the worker launcher could not start worker %d (%s); starting workers one by "
                                "one", key, value)
                    self._alive = False
                    proc = self._pending.pop(key, None)
                    if proc is not None:
                        proc._set_exited(None)
        with self._lock:
            self._alive = False
            left = [*self._pending.values(), *self._running.values()]
            self._pending.clear()
            self._running.clear()
        for proc in left:
            proc._orphan()

    def close(self, timeout: float = 2.0) -> None:
        """Hang up on the launcher (it exits; the workers it forked watch their own sockets) and reap it."""
        with self._lock:
            self._alive = False
        try:
            self._ctrl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(timeout)
        self._ctrl.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
