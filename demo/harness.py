"""Run a streaming driver app as a real process: feed it files, SIGKILL it, restart it, read what it committed.

The one copy of this machinery, shared by ``python -m dstream.demo``, the recovery tests (``tests/``) and
``benchmarks/recovery.py``.

The protocol: a driver app prints one JSON object per line on stdout, ``{"event": NAME, "wall": time.time(),
...}`` (``emit``), among them ``started`` once its StreamingContext runs (``started_fields``). The parent
parses the lines on a thread (``DriverProcess``, one per run of the process); ``RestartableDriver`` starts
the same app again after each kill. ``WordCountFiles`` lays out a word count job's directories (local or
on an object store such as S3), feeds input files atomically and reads the counts it committed. Committed
output is a ``<prefix>-<batch ms>/`` directory with ``_SUCCESS`` and text parts, one record per line.

The standard library and fsspec only: importing this module loads no part of dstream.
"""
from __future__ import annotations

import ast
import json
import os
import posixpath
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any, Callable, Sequence, TypeVar

import fsspec

from dstream.executors.launcher import WORKER_MODULE, process_name

T = TypeVar("T")
#: one progress line, parsed
Event = dict[str, Any]
#: committed output directory name -> its entries' names -> their version (``_version``)
Snapshot = dict[str, dict[str, tuple[str, ...]]]

#: the file a committed output directory gets last
SUCCESS = "_SUCCESS"


# -- the app's side: progress lines ------------------------------------------------------------------------
_emit_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Print one progress line (JSON) on stdout, written whole: a listener's thread and the main thread both
    emit, and ``print`` writes the text and its newline separately, so lines could interleave."""
    line = json.dumps({"event": event, "wall": time.time(), **fields}) + "\n"
    with _emit_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def started_fields(ssc: Any) -> dict[str, Any]:
    """The fields of the ``started`` event, read from a StreamingContext once ``ssc.start()`` returned: pid,
    restored (from a checkpoint), checkpoint_ms (its batch), interval_ms, replayed (the batch times being
    recomputed) and workers (the executor processes' pids; none for thread executors)."""
    cp = ssc.restored_from
    executor = ssc.sparkContext.executor
    return {"pid": os.getpid(), "restored": cp is not None, "checkpoint_ms": cp.time_ms if cp is not None else None,
            "interval_ms": round(ssc.batchDuration * 1000), "replayed": list(getattr(ssc, "replayed_times", [])),
            "workers": executor.worker_pids() if hasattr(executor, "worker_pids") else []}


# -- processes ---------------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something true and return that; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; where ``/proc`` tells, a zombie (exited, not yet reaped) counts as dead."""
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def worker_processes(driver_pid: int, reported: Sequence[int] = ()) -> list[int]:
    """Live executor processes (workers and their launcher) started by ``driver_pid``: found in ``/proc`` by
    their command line (``WORKER_MODULE``, the driver's pid last), or, forked from the driver, by their name
    (``process_name``); without ``/proc``, those of ``reported`` still alive."""
    name = process_name(driver_pid)
    if not os.path.isdir("/proc"):
        return [pid for pid in reported if pid_alive(pid)]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        ours = (WORKER_MODULE in argv and argv[-1] == str(driver_pid)) or comm == name
        if ours and int(entry) != driver_pid and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def wait_workers_exit(driver_pid: int, reported: Sequence[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for the worker processes of ``driver_pid`` to exit; those still alive."""
    deadline = time.time() + timeout
    left = worker_processes(driver_pid, reported)
    while left and time.time() < deadline:
        time.sleep(0.05)
        left = worker_processes(driver_pid, reported)
    return left


class DriverProcess:
    """One run of a driver app, ``python ARGV...``; a reader thread parses its progress lines into ``events``
    (a line that is not JSON becomes an ``output`` event; the end of its stdout an ``exited`` one) and passes
    each to ``on_event`` first. Its stderr is appended to ``log_path``. The driver runs with
    ``PYTHONHASHSEED=0`` unless ``env`` sets it: it then hashes as its workers do, which lets it fork them
    (``dstream.executor.startMethod`` "fork", ready in milliseconds after a restart)."""

    def __init__(self, argv: Sequence[str], log_path: str | os.PathLike[str], cwd: str | None = None,
                 env: dict[str, str] | None = None, on_event: Callable[[Event], None] | None = None) -> None:
        self.log_path = os.fspath(log_path)
        self.on_event = on_event
        self.started_at = time.time()
        env = dict(os.environ if env is None else env)
        env.setdefault("PYTHONHASHSEED", "0")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                         stderr=log, stdin=subprocess.DEVNULL, text=True)
        self.pid = self.proc.pid
        #: every progress event, in arrival order
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"driver-reader-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "output", "text": line.rstrip(), "wall": time.time()}
            self._add(event)
        self._add({"event": "exited", "wall": time.time()})

    def _add(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float, since: int = 0) -> Event | None:
        """The first event (from index ``since``) that satisfies ``predicate``; None on timeout or exit."""
        deadline = time.time() + timeout
        with self._cond:
            while True:
                for e in self.events[since:]:
                    if predicate(e):
                        return e
                    if e["event"] == "exited":
                        return None
                left = deadline - time.time()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_started(self, timeout: float) -> Event:
        """The ``started`` event, waited for; RuntimeError with the app's stderr if it does not come."""
        started = self.wait_for(lambda e: e["event"] == "started", timeout)
        if started is None:
            raise RuntimeError(f"the driver (pid {self.pid}, exit code {self.proc.poll()}) did not start within "
                               f"{timeout:g} s; its first events: {self.events[:3]}; its stderr:\n"
                               f"{self.stderr_tail()}")
        return started

    def count(self) -> int:
        """How many events arrived so far (a ``since`` for ``wait_for``)."""
        with self._cond:
            return len(self.events)

    def started(self) -> Event | None:
        """The ``started`` event, if it came."""
        return next((e for e in list(self.events) if e["event"] == "started"), None)

    @property
    def workers(self) -> list[int]:
        """The executor processes the driver reported at start."""
        return list((self.started() or {}).get("workers", []))

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL the driver and reap it (its executors keep our stdout pipe open until they exit); the time
        of the kill."""
        self.proc.send_signal(signal.SIGKILL)
        killed = time.time()
        self.proc.wait(timeout=10)
        return killed

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (an app stops gracefully); the exit code. SIGKILL after ``timeout`` s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Kill the driver if it still runs."""
        if self.running():
            self.kill()

    def stderr_tail(self, n: int = 15) -> str:
        """The last ``n`` lines of the stderr log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class RestartableDriver:
    """One driver app started again after each kill: the same command (``argv``, after the interpreter) and
    stderr log each time; every run's ``DriverProcess`` is kept in ``runs``, the newest last."""

    def __init__(self, argv: Sequence[str], log_path: str | os.PathLike[str], cwd: str | None = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = os.fspath(log_path)
        self.cwd = cwd
        self.on_event = on_event
        self.runs: list[DriverProcess] = []

    @property
    def process(self) -> DriverProcess:
        """The newest run."""
        if not self.runs:
            raise RuntimeError("the driver was never started")
        return self.runs[-1]

    @property
    def events(self) -> list[Event]:
        """The newest run's events (none before the first start)."""
        return self.runs[-1].events if self.runs else []

    def start(self, timeout: float = 60, env: dict[str, str] | None = None) -> Event:
        """Start a new run and wait for its ``started`` event (returned); RuntimeError if it does not come."""
        run = DriverProcess(self.argv, self.log_path, self.cwd, env, self.on_event)
        self.runs.append(run)
        return run.wait_started(timeout)

    def kill(self) -> list[int]:
        """SIGKILL the newest run; the executor processes it reported (they should exit by themselves)."""
        workers = self.process.workers
        self.process.kill()
        return workers

    def close(self) -> None:
        """Kill every run still running."""
        for run in self.runs:
            run.close()

    def stderr(self) -> str:
        """The whole stderr log of every run."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# -- input and committed output ----------------------------------------------------------------------------
def _fs(url: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(os.fspath(url))


def _join(url: str | os.PathLike[str], name: str) -> str:
    return posixpath.join(os.fspath(url).rstrip("/"), name)


def _listing(url: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries directly below ``url``, listed afresh (object stores' listings are cached)."""
    fs, path = _fs(url)
    fs.invalidate_cache(path)
    try:
        return fs.ls(path, detail=True)
    except FileNotFoundError:
        return []


def _name(entry: dict[str, Any]) -> str:
    return posixpath.basename(entry["name"].rstrip("/"))


def committed_batches(out_dir: str | os.PathLike[str], prefix: str) -> dict[int, str]:
    """Batch time (ms) -> directory (a path or URL, as ``out_dir``), of every committed (``_SUCCESS``)
    ``<prefix>-<ms>`` directory in ``out_dir`` (a local path or any fsspec URL), oldest first."""
    fs, _ = _fs(out_dir)
    found = {}
    for entry in _listing(out_dir):
        head, _, ms = _name(entry).rpartition("-")
        if head == prefix and ms.isdigit() and fs.exists(posixpath.join(entry["name"], SUCCESS)):
            found[int(ms)] = _join(out_dir, _name(entry))
    return dict(sorted(found.items()))


def _version(entry: dict[str, Any]) -> tuple[str, ...]:
    """What changes when a file or object is written again: inode and mtime, or ETag and time."""
    return tuple(str(entry.get(k)) for k in ("ino", "mtime", "ETag", "LastModified", "size"))


def committed_snapshot(out_dir: str | os.PathLike[str]) -> Snapshot:
    """The version (inode and mtime; ETag and time on object stores) of every entry of every committed
    output directory in ``out_dir`` (to show later that a restart never rewrote them)."""
    snap: Snapshot = {}
    for entry in sorted(_listing(out_dir), key=_name):
        entries = {_name(e): _version(e) for e in _listing(_join(out_dir, _name(entry)))}
        if SUCCESS in entries:
            snap[_name(entry)] = dict(sorted(entries.items()))
    return snap


def committed_parts(directory: str | os.PathLike[str]) -> list[str]:
    """The part files of a committed output directory, in part order: those its ``_SUCCESS`` manifest
    lists when it holds one (object stores), else every ``part-*`` file."""
    fs, path = _fs(directory)
    marker = fs.cat_file(posixpath.join(path, SUCCESS))
    if marker.strip():
        manifest = json.loads(marker)
        names = [p if isinstance(p, str) else p["name"] for p in manifest["parts"]]
    else:
        names = [_name(e) for e in _listing(directory) if _name(e).startswith("part-")]
    return [posixpath.join(path, n) for n in sorted(names)]


def read_lines(directory: str | os.PathLike[str]) -> list[str]:
    """The lines of a committed text output directory's part files, in part order."""
    fs, _ = _fs(directory)
    return [line for part in committed_parts(directory) for line in fs.cat_file(part).decode("utf-8").splitlines()]


def read_counts(directory: str | os.PathLike[str]) -> Counter[str]:
    """The ``(key, count)`` records of a text output directory, added up by key."""
    counts: Counter[str] = Counter()
    for line in read_lines(directory):
        if line.strip():
            key, n = ast.literal_eval(line)
            counts[key] += n
    return counts


class WordCountFiles:
    """A word count job's files below ``root`` (a local path or any fsspec URL, e.g. ``s3://bucket/job``):
    the input directory ``in/``; the output ``out/counts-<batch ms>/``; the checkpoint (``checkpoint/``
    unless given); and the words of every file fed, to check the output against. On a local disk a file is
    written in ``staging/`` and renamed in; on an object store it appears whole with one put."""

    prefix_name = "counts"

    def __init__(self, root: str | os.PathLike[str], checkpoint: str | None = None,
                 file_name: str = "f{:04d}.txt") -> None:
        root = os.fspath(root)
        self.input, self.staging, self.out = (_join(root, d) for d in ("in", "staging", "out"))
        self._fs, _ = _fs(root)
        self.local = "file" in self._fs.protocol or "local" in self._fs.protocol
        for d in (self.input, self.staging, self.out) if self.local else ():
            os.makedirs(d, exist_ok=True)
        self.prefix = _join(self.out, self.prefix_name)
        self.checkpoint = checkpoint or _join(root, "checkpoint")
        self.file_name = file_name
        #: the words of each file fed, in order
        self.files: list[Counter[str]] = []
        #: the words of all files fed
        self.truth: Counter[str] = Counter()

    def app_args(self) -> list[str]:
        """The word count apps' positional arguments: INPUT_DIR OUTPUT_PREFIX CHECKPOINT."""
        return [self.input, self.prefix, self.checkpoint]

    def feed(self, lines: Sequence[str]) -> tuple[str, float]:
        """Add a new input file holding ``lines`` so that it appears whole; its name and when it appeared."""
        name = self.file_name.format(len(self.files))
        data = "".join(line + "\n" for line in lines)
        if self.local:
            tmp = os.path.join(self.staging, name)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(data)
            os.rename(tmp, os.path.join(self.input, name))
        else:
            self._fs.pipe_file(_fs(_join(self.input, name))[1], data.encode("utf-8"))
        appeared = time.time()
        words = Counter(w for line in lines for w in line.split())
        self.files.append(words)
        self.truth.update(words)
        return name, appeared

    def committed(self) -> dict[int, str]:
        """Batch time -> directory of every committed batch, oldest first."""
        return committed_batches(self.out, self.prefix_name)

    def latest_counts(self) -> Counter[str]:
        """The counts of the newest committed batch (none before the first)."""
        batches = self.committed()
        return read_counts(batches[max(batches)]) if batches else Counter()

    def snapshot(self) -> Snapshot:
        """``committed_snapshot`` of the output directory."""
        return committed_snapshot(self.out)


# -- a local S3-compatible server (tests and benchmarks) ------------------------------------------------------
#: what a process needs in its environment to reach the local S3 server (moto accepts any credentials)
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """moto's standalone S3 server (``python -m moto.server``, the ``[test]`` extra) as a child process on a
    free loopback port. ``env`` points botocore and s3fs at it, in this process and in any child (drivers,
    executor workers), the way a user points them at S3: ``AWS_ENDPOINT_URL`` and credentials."""

    def __init__(self, log_path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        #: the server's URL
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log_path = os.fspath(log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._answers, timeout, f"moto.server to answer on {self.endpoint}")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"moto.server exited with {self.proc.returncode}: {f.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def env(self) -> dict[str, str]:
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def new_bucket(self) -> str:
        """A fresh, empty bucket; its ``s3://`` URL."""
        name = f"b-{uuid.uuid4().hex[:16]}"
        fs = fsspec.filesystem("s3", endpoint_url=self.endpoint, key="testing", secret="testing")
        fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
