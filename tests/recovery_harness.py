"""A harness for driver-kill tests: run tests/apps/stateful_wordcount.py as a real process, feed it
files, kill it with SIGKILL, restart it, and read its committed output (Bytewax's testing.py shape)."""
from __future__ import annotations

import ast
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

APP = Path(__file__).parent / "apps" / "stateful_wordcount.py"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
    return True


class AppProcess:
    """A driver script in its own process that prints JSON progress lines; killed and restarted by tests."""

    def __init__(self, root: Path) -> None:
        self.stderr_path = root / "stderr.log"
        self._stderr = open(self.stderr_path, "ab")
        self.proc: subprocess.Popen | None = None
        self.events: list[dict] = []

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30, env: dict | None = None) -> dict:
        self.events = []
        self.proc = subprocess.Popen([sys.executable, *self.argv()], stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env=env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return wait_until(lambda: next((e for e in self.events if "started" in e), None), timeout,
                          "the driver to start")

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def started(self) -> dict:
        return next(e for e in self.events if "started" in e)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()


class WordCountDriver(AppProcess):
    """The stateful word count app (tests/apps/stateful_wordcount.py), restartable from its checkpoint."""

    #: the driver script; it takes INPUT_DIR OUTPUT_PREFIX CHECKPOINT_DIR and prints progress lines
    app: Path = APP

    def __init__(self, root: Path, *extra: str) -> None:
        super().__init__(root)
        self.input = root / "in"
        self.staging = root / "staging"
        self.output_prefix = str(root / "out" / "counts")
        self.checkpoint = root / "checkpoint"
        for d in (self.input, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self.extra = list(extra)
        self.truth: collections.Counter = collections.Counter()
        self._files = 0

    def argv(self) -> list[str]:
        return [str(self.app), str(self.input), self.output_prefix, str(self.checkpoint), *self.extra]

    def batches_done(self) -> list[int]:
        return [e["batch"] for e in self.events if "batch" in e]

    def kill(self) -> list[int]:
        """SIGKILL the driver; return its worker pids (which must then exit by themselves)."""
        workers = self.started()["workers"]
        super().kill()
        return workers

    # -- input and output ---------------------------------------------------------------------------
    def write_file(self, words: list[str], lines: int = 1) -> None:
        """Write a file elsewhere, then rename it into the input directory (atomic appearance)."""
        self._files += 1
        name = f"f{self._files:04d}.txt"
        text = "".join(" ".join(words) + "\n" for _ in range(lines))
        (self.staging / name).write_text(text)
        os.rename(self.staging / name, self.input / name)
        for _ in range(lines):
            self.truth.update(words)

    def committed(self) -> dict[str, tuple]:
        """Every committed output directory: its _SUCCESS and part files' (inode, mtime)."""
        out = {}
        root = Path(self.output_prefix).parent
        if not root.exists():
            return out
        for d in sorted(root.iterdir()):
            if (d / "_SUCCESS").exists():
                out[d.name] = tuple((p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(d.iterdir()))
        return out

    def latest_counts(self) -> dict:
        root = Path(self.output_prefix).parent
        dirs = sorted((d for d in root.iterdir() if (d / "_SUCCESS").exists()),
                      key=lambda d: int(d.name.rsplit("-", 1)[1])) if root.exists() else []
        if not dirs:
            return {}
        counts = {}
        for part in sorted(dirs[-1].glob("part-*")):
            for line in part.read_text().splitlines():
                k, v = ast.literal_eval(line)
                counts[k] = v
        return counts

    def wait_caught_up(self, timeout: float = 40) -> dict:
        return wait_until(lambda: self.latest_counts() == dict(self.truth), timeout,
                          f"the output to reach the true counts {dict(self.truth)}")
