"""A Dask cluster of separate "machines" on one host, for tests.

``DaskMachines(n)`` starts a ``dask scheduler`` and ``n`` ``dask worker`` processes on 127.0.0.1.  Each
worker runs in its own mount namespace (``unshare --mount``) with private tmpfs mounts on ``/dev/shm`` and on
its own ``TMPDIR``, so it shares no /dev/shm or temp files with the test process or with other workers, like a
separate machine.  Workers can be killed (SIGKILL) and added while the cluster runs.

``namespaces_unavailable()`` says why the harness cannot run here (None when it can); tests skip with it.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any

ROOTDIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The pytest rootdir (the directory holding the ``tests`` package); on the workers' PYTHONPATH."""

_NAMESPACE_SCRIPT = 'mount -t tmpfs tmpfs /dev/shm && mount -t tmpfs tmpfs "$TMPDIR" && exec "$@"'
_UNSHARE = ["unshare", "--mount", "--propagation", "private"]
START_TIMEOUT = 30.0


@functools.lru_cache(maxsize=None)
def namespaces_unavailable() -> str | None:
    """None when ``distributed`` imports and ``unshare --mount`` with a tmpfs mount works here, else why not."""
    try:
        importlib.import_module("distributed")
    except ImportError as e:
        return f"distributed is not importable: {e}"
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    try:
        r = subprocess.run(_UNSHARE + ["sh", "-c", "mount -t tmpfs tmpfs /dev/shm && true"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"needs root / CAP_SYS_ADMIN for unshare -m: {e}"
    if r.returncode != 0:
        return f"needs root / CAP_SYS_ADMIN for unshare -m: {r.stderr.strip()[-500:]}"
    return None


def _dask_command(sub: str) -> list[str]:
    """The ``dask <sub>`` command line: the ``dask`` script next to the interpreter, else ``python -m``."""
    script = os.path.join(os.path.dirname(sys.executable), "dask")
    if os.path.exists(script):
        return [script, sub]
    return [sys.executable, "-m", f"distributed.cli.dask_{sub}"]


def _tail(path: str, n: int = 4000) -> str:
    """The last ``n`` characters of a log file ('' if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL the process group led by ``proc`` (started with start_new_session) and reap ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL of a process in D state
        pass


def _reap(procs: list[subprocess.Popen], logs: list[Any], base: str) -> None:
    """SIGKILL every process group, close the log files, remove the temp dirs (also run by the finalizer)."""
    for proc in reversed(procs):  # the workers first, then the scheduler
        _kill_group(proc)
    for f in logs:
        f.close()
    logs.clear()
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class Machine:
    """One worker "machine": its process, private temp dir, log file and (once registered) address."""

    index: int
    name: str
    proc: subprocess.Popen
    tmpdir: str
    log_path: str
    address: str = ""

    @property
    def pid(self) -> int:
        """The worker's pid (``unshare`` and ``sh`` exec into ``dask worker``, so it is the Popen pid)."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the worker process still runs (not yet reaped)."""
        return self.proc.poll() is None


class DaskMachines:
    """A scheduler and ``n_workers`` namespace-isolated workers on 127.0.0.1; a context manager.

    Started by the constructor; ``close()`` (or leaving the ``with`` block) kills every process and removes
    the temp dirs.  Worker processes get the test process's environment (S3 endpoint variables included),
    with the pytest rootdir prepended to PYTHONPATH so pickled ``tests.*`` functions import there.
    """

    def __init__(self, n_workers: int = 2, *, timeout: float = START_TIMEOUT) -> None:
        reason = namespaces_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self.timeout = timeout
        self.base = tempfile.mkdtemp(prefix="dask-machines-")
        self.scheduler_file = os.path.join(self.base, "scheduler.json")
        self.machines: list[Machine] = []
        self._client: Any = None
        self._procs: list[subprocess.Popen] = []  # the scheduler, then every worker ever started
        self._logs: list[Any] = []
        # a forgotten close() still kills the processes, when collected or at interpreter exit
        self._finalizer = weakref.finalize(self, _reap, self._procs, self._logs, self.base)
        self.address = ""
        try:
            self._start_scheduler()
            for _ in range(n_workers):
                self._spawn_worker()
            for m in self.machines:  # fails fast, with the log tail, when a worker exits
                self._await_registration(m, timeout)
        except BaseException:
            self.close()
            raise

    # -- processes ---------------------------------------------------------------------------------------

    def _log(self, name: str) -> tuple[str, Any]:
        path = os.path.join(self.base, f"{name}.log")
        f = open(path, "wb")
        self._logs.append(f)
        return path, f

    def _start_scheduler(self) -> None:
        log_path, log = self._log("scheduler")
        cmd = _dask_command("scheduler") + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                            "--scheduler-file", self.scheduler_file]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.base, start_new_session=True)
        self._procs.append(proc)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dask scheduler exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                with open(self.scheduler_file) as f:
                    self.address = json.load(f)["address"]
                if self.address:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dask scheduler wrote no address to {self.scheduler_file} in {self.timeout:.0f} s:\n"
                           f"{_tail(log_path)}")

    def _spawn_worker(self) -> Machine:
        index = len(self.machines)
        name = f"machine-{index}"
        tmpdir = os.path.join(self.base, f"{name}-tmp")
        os.makedirs(tmpdir)
        log_path, log = self._log(name)
        env = dict(os.environ)
        env["TMPDIR"] = tmpdir
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOTDIR, env.get("PYTHONPATH", "")) if p)
        cmd = _dask_command("worker") + ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                         "--scheduler-file", self.scheduler_file, "--name", name,
                                         "--local-directory", tmpdir]
        proc = subprocess.Popen(_UNSHARE + ["sh", "-c", _NAMESPACE_SCRIPT, "sh"] + cmd, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOTDIR, start_new_session=True)
        self._procs.append(proc)
        m = Machine(index, name, proc, tmpdir, log_path)
        self.machines.append(m)
        return m

    def _await_registration(self, m: Machine, timeout: float) -> None:
        """Wait until the scheduler lists worker ``m`` by name; record its address."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not m.alive:
                raise RuntimeError(f"{m.name} exited with {m.proc.returncode}:\n{_tail(m.log_path)}")
            for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
                if w.get("name") == m.name:
                    m.address = addr
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{m.name} did not register with the scheduler in {timeout:.0f} s:\n{_tail(m.log_path)}")

    # -- public API --------------------------------------------------------------------------------------

    def client(self) -> Any:
        """The harness's ``distributed.Client`` on this cluster (created once, closed by ``close()``)."""
        if self._client is None:
            from distributed import Client
            self._client = Client(self.address, set_as_default=False, timeout=self.timeout)
        return self._client

    def wait_for_workers(self, n: int, timeout: float = 30) -> None:
        """Wait until the scheduler has at least ``n`` workers; the error includes the workers' log tails."""
        try:
            self.client().wait_for_workers(n, timeout=timeout)
        except TimeoutError as e:
            logs = "\n".join(f"--- {m.name} (alive={m.alive}):\n{_tail(m.log_path, 1500)}" for m in self.machines)
            raise TimeoutError(f"{e}\n{logs}") from None

    def add_worker(self, timeout: float | None = None) -> Machine:
        """Start one more worker machine; returns once the scheduler sees it."""
        m = self._spawn_worker()
        try:
            self._await_registration(m, self.timeout if timeout is None else timeout)
        except BaseException:
            _kill_group(m.proc)
            raise
        return m

    def _machine(self, which: Machine | int | str) -> Machine:
        if isinstance(which, Machine):
            return which
        if isinstance(which, int):
            return self.machines[which]
        for m in self.machines:
            if which in (m.name, m.address):
                return m
        raise KeyError(which)

    def kill_worker(self, which: Machine | int | str, *, wait: bool = True, timeout: float = 30) -> Machine:
        """SIGKILL a worker (by handle, index, name or address) and its process group, and reap it.

        With ``wait`` (default), also wait until the scheduler no longer lists it.
        """
        m = self._machine(which)
        _kill_group(m.proc)
        if wait and m.address:
            client = self.client()
            deadline = time.monotonic() + timeout
            while m.address in client.scheduler_info(n_workers=-1)["workers"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the scheduler still lists killed {m.name} ({m.address}) after {timeout} s")
                time.sleep(0.05)
        return m

    def live_machines(self) -> list[Machine]:
        """The machines whose worker process still runs."""
        return [m for m in self.machines if m.alive]

    def worker_pids(self) -> list[int]:
        """The pids of the live workers, as the workers themselves report them (``client.run(os.getpid)``)."""
        return sorted(self.client().run(os.getpid).values())

    def close(self) -> None:
        """Close the client, SIGKILL every worker and the scheduler (process groups), remove the temp dirs."""
        if self._client is not None:
            try:
                self._client.close(timeout=5)
            except Exception:
                pass
            self._client = None
        self._finalizer()

    def __enter__(self) -> DaskMachines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
