"""The example scripts (examples/*.py): each one's --help, and each run on generated data as a real driver
process that is SIGKILLed once mid-run and restarted with the same command, ending with exactly the output
plain Python computes from the same input (nothing lost, nothing written twice).

The scripts live in the source tree, not in the installed package: these tests skip where examples/ is not
next to tests/ (a copy of the suite run against an installed wheel without it).
"""
from __future__ import annotations

import collections
import datetime
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dstream.demo.harness import DriverProcess, committed_batches, committed_snapshot, read_lines, wait_until
from dstream.sinks.files import committed_parts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"the example scripts are not here ({EXAMPLES} does not exist): this copy of "
                                  f"the suite runs outside the source tree")

#: batch interval of the runs below (seconds): short, so the runs are too
BATCH = "0.4"
#: how long a user's open session waits for more clicks (stream time) before it is written: longer than the
#: stream time between two files of one visit (the feed gap, or the wait before a kill: files fed while the
#: driver is down go into the first batch after the kill), short enough to wait for at the end
IDLE = "8"
#: generous bounds for a loaded 2-core machine
WAIT = 60


def script(name: str) -> str:
    return str(EXAMPLES / name)


def run_script(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script(name), *args], capture_output=True, text=True, timeout=timeout)


def feed(src: Path, directory: Path, staging: Path) -> None:
    """Make ``src`` appear whole in ``directory``: copied to ``staging``, then renamed in."""
    staging.mkdir(exist_ok=True)
    tmp = staging / src.name
    shutil.copyfile(src, tmp)
    os.rename(tmp, directory / src.name)


def stream_running(checkpoint: Path) -> bool:
    """A metadata checkpoint is written when the first batch is generated, after ``start()`` listed the input
    directory: files moved in from now on are new files."""
    return checkpoint.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoint.iterdir())


def stdout_lines(driver: DriverProcess) -> list[str]:
    return [e["text"] for e in list(driver.events) if e["event"] == "output"]


class Job:
    """A script run as a driver process, restartable with the same command (``DriverProcess`` per run)."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.argv = [script(name), *args]
        self.log = tmp_path / f"{name}.stderr.log"
        self.runs: list[DriverProcess] = []

    def start(self) -> DriverProcess:
        self.runs.append(DriverProcess(self.argv, self.log))
        return self.runs[-1]

    @property
    def run(self) -> DriverProcess:
        return self.runs[-1]

    def kill(self) -> None:
        self.run.kill()

    def stop(self) -> int:
        """SIGTERM: the script stops gracefully; its exit code."""
        return self.run.stop(timeout=WAIT)

    def close(self) -> None:
        for run in self.runs:
            run.close()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_a_little(self, predicate, what: str) -> bool:
        """Wait for ``predicate`` before a kill, but not so long that an open session times out in between
        (the stream time from the last file fed to the first batch after the restart must stay below IDLE);
        whether it came."""
        try:
            return bool(self.wait(predicate, what, timeout=float(IDLE) - 3))
        except AssertionError:
            if not self.run.running():
                raise
            return False

    def wait(self, predicate, what: str, timeout: float = WAIT):
        """wait_until, failing early if the driver exits, with its stderr in the error."""
        def check():
            if not self.run.running():
                raise AssertionError(f"the driver exited ({self.run.proc.returncode}) while waiting for {what}; "
                                     f"stderr:\n{self.stderr()[-3000:]}")
            return predicate()
        try:
            return wait_until(check, timeout, what, interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; stderr:\n{self.stderr()[-3000:]}") from None


def committed_dirs(out: Path, prefix: str) -> list[Path]:
    """Committed output directories ``<prefix>-<ms>[.parquet]`` (and ``backfill.parquet``), oldest first."""
    dirs = [d for d in out.glob(f"{prefix}-*") if (d / "_SUCCESS").exists()] if out.is_dir() else []
    return sorted(dirs, key=lambda d: int(d.name.split("-")[1].split(".")[0]))


def parquet_rows(dirs: list[Path]) -> list[dict]:
    return [row for d in dirs for part in committed_parts(str(d)) for row in pq.read_table(part.path).to_pylist()]


def epoch(ts: str) -> int:
    return int(datetime.datetime.fromisoformat(ts).timestamp())


def sessions_of(events: list[tuple[int, str, str]], gap: int = 1800) -> list[tuple]:
    """Plain Python: ``(ts, user, page)`` events -> ``(user, start, end, n, entry, exit)``, one per visit."""
    by_user = collections.defaultdict(list)
    for ts, user, page in events:
        by_user[user].append((ts, page))
    out = []
    for user, clicks in by_user.items():
        current = None
        for ts, page in sorted(clicks):
            if current is not None and ts - current[2] < gap:
                current = (user, current[1], ts, current[3] + 1, current[4], page)
            else:
                if current is not None:
                    out.append(current)
                current = (user, ts, ts, 1, page, page)
        out.append(current)
    return out


def read_events(files: list[Path]) -> list[tuple[int, str, str]]:
    events = []
    for f in files:
        for line in f.read_text().splitlines():
            ts, user, page = line.split(",", 2)
            events.append((epoch(ts), user, page))
    return events


# -- --help -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, arguments", [
    ("clickstream.py", ["--users", "--input", "--output", "--checkpoint", "--batch-seconds", "--session-gap",
                        "--idle-timeout", "--master", "--generate", "--num-users", "--files", "--seed"]),
    ("log_monitor.py", ["--input", "--socket", "--output", "--checkpoint", "--batch-seconds", "--window",
                        "--slide", "--threshold", "--master", "--generate", "--files", "--lines", "--seed"]),
    ("sessionize_backfill.py", ["--history", "--live", "--output", "--checkpoint", "--batch-seconds", "--gap",
                                "--idle-timeout", "--master", "--verify", "--generate", "--users",
                                "--history-hours", "--live-hours", "--seed"]),
])
def test_help_lists_every_argument(name, arguments):
    done = run_script(name, "--help")
    assert done.returncode == 0, done.stderr
    missing = [a for a in arguments if a not in done.stdout]
    assert not missing, f"{name} --help does not mention {missing}:\n{done.stdout}"
    # without its locations, a script says which are missing (and starts nothing)
    bare = run_script(name)
    assert bare.returncode == 2 and "required" in bare.stderr, bare.stderr


# -- clickstream.py ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_clickstream_sessions_survive_a_driver_kill(tmp_path):
    data, out, cp = tmp_path / "data", tmp_path / "out", tmp_path / "checkpoint"
    gen = run_script("clickstream.py", "--generate", str(data), "--num-users", "12", "--files", "8", "--seed", "7")
    assert gen.returncode == 0, gen.stderr
    pending = sorted((data / "pending").iterdir())
    assert len(pending) == 8 and (data / "users.parquet").exists() and (data / "clicks").is_dir()

    # what the job must write, computed in plain Python: visits split at 30-minute pauses, with the user's
    # attributes from the table (None for users missing from it)
    users = {r["user_id"]: r for r in pq.read_table(data / "users.parquet").to_pylist()}
    expected = collections.Counter()
    for user, start, end, n, entry, exit_ in sessions_of(read_events(pending)):
        attrs = users.get(user, {})
        expected[(user, start, end, end - start, n, entry, exit_, attrs.get("country"), attrs.get("plan"),
                  attrs.get("signup_date"))] += 1
    assert {s[0] for s in expected} - set(users), "some users who click are missing from the table"

    def written() -> collections.Counter:
        return collections.Counter(
            (r["user_id"], int(r["session_start"].timestamp()), int(r["session_end"].timestamp()), r["duration_s"],
             r["clicks"], r["entry_page"], r["exit_page"], r["country"], r["plan"], r["signup_date"])
            for r in parquet_rows(committed_dirs(out, "sessions")))

    job = Job(tmp_path, "clickstream.py", "--users", str(data / "users.parquet"), "--input", str(data / "clicks"),
              "--output", str(out), "--checkpoint", str(cp), "--batch-seconds", BATCH, "--idle-timeout", IDLE)
    try:
        job.start()
        job.wait(lambda: stream_running(cp), "the stream to start")
        for f in pending[:5]:
            feed(f, data / "clicks", tmp_path / "staging")
            time.sleep(0.4)
        job.wait_a_little(lambda: sum(written().values()) > 0, "a first session to be written")
        before = committed_snapshot(out)
        job.kill()
        for f in pending[5:]:  # clicks keep coming while the driver is down
            feed(f, data / "clicks", tmp_path / "staging")
        job.start()
        job.wait(lambda: sum(written().values()) >= sum(expected.values()), "every session to be written")
        time.sleep(1.0)  # a few more batches: nothing more may come
        assert job.stop() == 0, job.stderr()
    finally:
        job.close()
    got = written()
    assert got == expected, f"missing: {expected - got}; unexpected or twice: {got - expected}"
    after = committed_snapshot(out)
    assert not [d for d, files in before.items() if after.get(d) != files], "batches rewritten after the restart"
    assert not any(line.startswith("batch ") for r in job.runs for line in stdout_lines(r)), \
        "status lines are for terminals only"
    assert "Traceback" not in job.stderr(), job.stderr()


# -- log_monitor.py ------------------------------------------------------------------------------------------
def log_file(path: Path, errors: dict[str, int], lines: int = 10) -> Path:
    """A log file with ``lines`` lines per service, ``errors[service]`` of them errors, and one bad line."""
    out = []
    for service, n in errors.items():
        for i in range(lines):
            level = "ERROR" if i < n else "INFO"
            out.append(f"2026-11-30T08:00:{i:02d}Z {service} {level} request {i}")
    out.append("garbage")
    path.write_text("\n".join(out) + "\n")
    return path


def test_log_monitor_generates_sample_logs(tmp_path):
    done = run_script("log_monitor.py", "--generate", str(tmp_path), "--files", "6", "--lines", "200")
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "pending").iterdir())
    assert len(files) == 6 and (tmp_path / "logs").is_dir()
    lines = [line.split() for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 1200 and {fields[1] for fields in lines} == {"payments", "search", "checkout", "auth"}

    def payments_error_rate(some: list[Path]) -> float:
        levels = [line.split()[2] for f in some for line in f.read_text().splitlines() if " payments " in line]
        return levels.count("ERROR") / len(levels)

    # the middle third is an error burst of payments, above the default threshold; the rest is below it
    assert payments_error_rate(files[2:4]) > 0.25 > payments_error_rate(files[:2] + files[4:])


@pytest.mark.slow
def test_log_monitor_alerts_exactly_once_across_a_driver_kill(tmp_path):
    logs, out, cp, src = tmp_path / "logs", tmp_path / "out", tmp_path / "checkpoint", tmp_path / "src"
    logs.mkdir()
    src.mkdir()
    # phase 1: payments fails half its requests, search 30 %, checkout 10 %; phase 2: payments recovers
    failing = [log_file(src / f"a{i}.log", {"payments": 5, "search": 3, "checkout": 1}) for i in range(3)]
    healthy = [log_file(src / f"b{i}.log", {"payments": 0, "search": 3, "checkout": 1}) for i in range(5)]
    window = "2"
    job = Job(tmp_path, "log_monitor.py", "--input", str(logs), "--output", str(out), "--checkpoint", str(cp),
              "--batch-seconds", BATCH, "--window", window, "--threshold", "0.25")

    def alerts() -> list[str]:
        return [line for d in committed_batches(out, "alerts").values() for line in read_lines(d)]

    try:
        job.start()
        job.wait(lambda: stream_running(cp), "the stream to start")
        for f in failing:
            feed(f, logs, tmp_path / "staging")
            time.sleep(0.4)
        job.wait(lambda: len(alerts()) >= 2, "the two alerts to be written")
        first = job.run
        before = committed_snapshot(out)
        job.kill()
        for f in healthy[:2]:  # lines keep coming while the driver is down
            feed(f, logs, tmp_path / "staging")
        job.start()
        for f in healthy[2:]:
            feed(f, logs, tmp_path / "staging")
            time.sleep(0.4)
        job.wait(lambda: any(a.startswith("RESOLVED") for a in alerts()), "payments to recover")
        time.sleep(1.5)  # a few more batches: no alert may come twice
        assert job.stop() == 0, job.stderr()
    finally:
        job.close()
    got = sorted(alerts())
    assert got[:2] == ["ALERT payments error rate 0.50 > 0.25 over the last 2 s",
                       "ALERT search error rate 0.30 > 0.25 over the last 2 s"], got
    assert len(got) == 3 and re.fullmatch(r"RESOLVED payments error rate 0\.(\d\d) <= 0\.25 over the last 2 s",
                                          got[2]) and float(got[2].split()[4]) <= 0.25, got
    after = committed_snapshot(out)
    assert not [d for d, files in before.items() if after.get(d) != files], "batches rewritten after the restart"
    # alerts are printed too (always: they are the job's output), status lines only in a terminal
    assert "ALERT payments error rate 0.50 > 0.25 over the last 2 s" in stdout_lines(first)
    assert got[2] in stdout_lines(job.run)
    assert not any(line.startswith("batch ") for r in job.runs for line in stdout_lines(r))
    assert "Traceback" not in job.stderr(), job.stderr()


def test_log_monitor_reads_a_socket_and_prints_status_lines_in_a_terminal(tmp_path):
    """--socket, on thread executors; stdout is a pseudo-terminal, so one status line per batch comes too."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, script("log_monitor.py"), "--socket", f"127.0.0.1:{port}",
                             "--output", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "cp"),
                             "--batch-seconds", BATCH, "--window", "2", "--master", "threads[2]"],
                            stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(slave)
    text = ""
    try:
        server.settimeout(WAIT)
        conn, _ = server.accept()
        lines = log_file(tmp_path / "burst.log", {"payments": 6, "auth": 0}).read_bytes()
        conn.sendall(lines)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not ("ALERT payments" in text and text.count("\nbatch ") >= 3):
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    text += os.read(master, 65536).decode(errors="replace")
                except OSError:  # the pty closed: the process exited
                    break
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        os.close(master)
        server.close()
    assert "ALERT payments error rate 0.60 > 0.25 over the last 2 s" in text, (text[-2000:], err.decode()[-2000:])
    status = re.findall(r"batch \d\d:\d\d:\d\d\.\d{3}: \d+ lines, \d+ services in the window, \d+ alerting", text)
    assert len(status) >= 3, text[-2000:]
    assert proc.returncode == 0, err.decode()[-2000:]


# -- sessionize_backfill.py ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_sessionize_backfill_then_stream_equals_one_batch_job_across_a_driver_kill(tmp_path):
    data, out, cp = tmp_path / "data", tmp_path / "out", tmp_path / "checkpoint"
    gen = run_script("sessionize_backfill.py", "--generate", str(data), "--users", "10", "--history-hours", "6",
                     "--live-hours", "4", "--seed", "3")
    assert gen.returncode == 0, gen.stderr
    history, pending = sorted((data / "history").iterdir()), sorted((data / "pending").iterdir())
    assert len(history) == 6 and len(pending) == 4
    # plain Python over all the files at once; one visit spans the end of the history
    expected = collections.Counter(sessions_of(read_events(history + pending)))
    boundary = epoch("2026-11-29T06:00:00+00:00")
    assert any(s[1] < boundary <= s[2] for s in expected), "no session crosses from the history into the stream"

    def written() -> collections.Counter:
        dirs = committed_dirs(out, "sessions") + [d for d in [out / "backfill.parquet"] if (d / "_SUCCESS").exists()]
        return collections.Counter(
            (r["user_id"], int(r["session_start"].timestamp()), int(r["session_end"].timestamp()), r["events"],
             r["entry_page"], r["exit_page"]) for r in parquet_rows(dirs))

    locations = ["--history", str(data / "history"), "--live", str(data / "live"), "--output", str(out)]
    job = Job(tmp_path, "sessionize_backfill.py", *locations, "--checkpoint", str(cp), "--batch-seconds", BATCH,
              "--idle-timeout", IDLE)
    try:
        job.start()
        job.wait(lambda: stream_running(cp), "the backfill and the stream's start")
        assert (out / "backfill.parquet" / "_SUCCESS").exists()
        backfilled = sum(written().values())
        for f in pending[:2]:
            feed(f, data / "live", tmp_path / "staging")
            time.sleep(0.4)
        n = len(committed_dirs(out, "sessions"))
        job.wait_a_little(lambda: len(committed_dirs(out, "sessions")) >= n + 3, "the live files' batches")
        before = committed_snapshot(out)
        job.kill()
        for f in pending[2:]:  # files keep coming while the driver is down
            feed(f, data / "live", tmp_path / "staging")
        job.start()
        job.wait(lambda: sum(written().values()) >= sum(expected.values()), "every session to be written")
        time.sleep(1.0)
        assert job.stop() == 0, job.stderr()
    finally:
        job.close()
    got = written()
    assert got == expected, f"missing: {expected - got}; unexpected or twice: {got - expected}"
    assert 0 < backfilled < sum(expected.values())
    after = committed_snapshot(out)
    assert not [d for d, files in before.items() if after.get(d) != files], "batches rewritten after the restart"
    # the restart resumed the stream: the backfill ran once, in the first run
    assert [sum(line.startswith("backfill:") for line in stdout_lines(r)) for r in job.runs] == [1, 0]
    assert not any(line.startswith("batch ") for r in job.runs for line in stdout_lines(r))
    assert "Traceback" not in job.stderr(), job.stderr()
    # the script's own check: the shared function as one batch job over all the files agrees with the output
    check = run_script("sessionize_backfill.py", "--verify", *locations, "--master", "threads[2]")
    assert check.returncode == 0 and check.stdout.startswith("OK:"), check.stdout + check.stderr
