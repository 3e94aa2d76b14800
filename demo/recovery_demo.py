"""``python -m dstream.demo``: kill a streaming driver with SIGKILL mid-stream, restart it, check the output.

The demo runs a checkpointed, stateful word count (``dstream.demo.app``: textFileStream -> flatMap -> map
-> updateStateByKey -> saveAsTextFiles, restarted with ``StreamingContext.getOrCreate``) as a child
process on local executors, and feeds it generated text files, one per batch (written to a staging
directory, then renamed in). It kills the driver with SIGKILL ``--kills`` times: the 1st, 3rd, ... kill
lands right as a file is renamed in, the 2nd, 4th, ... while a batch with new words is running. While the
driver is down one more file arrives and batches fall due; then the demo restarts it, and the driver
recomputes the lost batches from its checkpoint. The process machinery is ``dstream.demo.harness``.

It prints a timeline (batches committed, kills, restarts, batches recomputed, seconds from restart to
caught up) and ends with a verdict line. ``verdict: OK`` (exit 0) needs all of:

- the final counts equal the words written (the ground truth), and every batch's counts are the counts
  of the first k files written, k never decreasing (no file counted twice, lost or half-counted);
- every batch committed exactly once: each output directory has ``_SUCCESS`` and no ``_temporary``
  leftovers, no batch time is missing, and the ``_SUCCESS`` and part files committed before a kill have
  the same inode and mtime at the end (a restart never rewrote them);
- every restart restored the job from its checkpoint, and the executor processes of each killed driver
  exited by themselves (no orphans).

Otherwise ``verdict: FAILED`` lists what differs, and the exit code is 1.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from dstream.context import LOCAL_MASTER
from dstream.demo import app
from dstream.demo.harness import (DriverProcess, Event, RestartableDriver, Snapshot, WordCountFiles, read_counts,
                                  wait_workers_exit)
from dstream.driver.checkpoint import checkpoint_times
from dstream.io import url_to_fs

#: the words of the generated input files
WORDS = ("stream", "batch", "arrow", "spark", "window", "state", "driver", "executor", "lineage", "shuffle",
         "partition", "checkpoint", "record", "table", "python")
#: how long the workers of a killed driver may take to exit by themselves (they poll every 0.2 s)
ORPHAN_GRACE = 5.0


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


class Timeline:
    """Prints lines stamped with the seconds since the demo started (from any thread)."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self._lock = threading.Lock()

    def say(self, text: str, at: float | None = None) -> None:
        with self._lock:
            print(f"{(at if at is not None else time.time()) - self.t0:6.1f}s  {text}", flush=True)


def describe(e: Event) -> str | None:
    """The timeline line for one progress event of the driver, or None (not shown)."""
    kind = e.get("event")
    if kind == "batch":
        what = "recomputed" if e["replayed"] else "committed"
        lines = f"{e['records']} new line{'s' if e['records'] != 1 else ''}"
        return (f"  batch {_clock(e['time'])} {what}: {lines}, processing {e['processing_ms']} ms, "
                f"scheduling delay {e['scheduling_ms']} ms")
    if kind == "recovery":
        return (f"  parallel recovery stage: {e['tasks']} tasks on {len(e['workers'])} executor "
                f"process{'es' if len(e['workers']) != 1 else ''} in {e['end'] - e['start']:.2f} s")
    if kind == "error":
        return f"  driver error: {e['message']}"
    if kind == "output":
        return f"  [driver] {e['text']}"
    return None


@dataclass
class Restart:
    """What happened around one kill."""

    scenario: str
    killed_pid: int
    kill_at: float
    driver: DriverProcess | None = None
    replayed: list[int] = field(default_factory=list)
    recovered_at: float | None = None
    caught_up_at: float | None = None


@dataclass
class OutputCheck:
    """What the committed output showed."""

    problems: list[str]
    #: the counts of the newest committed batch (when every batch checked out)
    final: Counter[str] | None = None
    batches_committed: int = 0


def check_output(job: WordCountFiles, interval_ms: int, snapshots: list[Snapshot]) -> OutputCheck:
    """Check the committed output of ``job`` against the files fed to it (see the module's docstring);
    ``snapshots``: the committed output taken before each kill."""
    check = OutputCheck([])
    problems = check.problems
    prefix = job.prefix_name + "-"
    names = sorted(os.listdir(job.out))
    stray = [x for x in names if not x.startswith(prefix) or not x[len(prefix):].isdigit()]
    if stray:
        problems.append(f"unexpected entries in the output directory: {stray}")
    batches = sorted(int(x[len(prefix):]) for x in names if x not in stray)
    torn = [t for t in batches if not os.path.exists(os.path.join(job.out, f"{prefix}{t}", "_SUCCESS"))]
    leftovers = [t for t in batches if os.path.exists(os.path.join(job.out, f"{prefix}{t}", "_temporary"))]
    if torn:
        problems.append(f"torn output (no _SUCCESS): batches {[_clock(t) for t in torn]}")
    if leftovers:
        problems.append(f"_temporary left in committed batches {[_clock(t) for t in leftovers]}")
    committed = [t for t in batches if t not in torn]
    if not committed:
        problems.append("no batch was committed")
        return check
    missing = [t for t in range(committed[0], committed[-1], interval_ms) if t not in set(committed)]
    if missing:
        problems.append(f"{len(missing)} batches never committed: {[_clock(t) for t in missing[:5]]}")
    now = job.snapshot()
    for i, snap in enumerate(snapshots, 1):
        changed = sorted(f"{d}/{name}" for d, entries in snap.items() for name, st in entries.items()
                         if now.get(d, {}).get(name) != st)
        if changed:
            problems.append(f"{len(changed)} files committed before kill {i} were rewritten or removed, "
                            f"e.g. {changed[:3]}")
    # Each batch's state must be the counts of the first k files written, k never decreasing.
    prefixes = [Counter()]
    for c in job.files:
        prefixes.append(prefixes[-1] + c)
    k = 0
    for t in committed:
        counts = read_counts(os.path.join(job.out, f"{prefix}{t}"))
        while k < len(prefixes) and prefixes[k] != counts:
            k += 1
        if k == len(prefixes):
            problems.append(f"batch {_clock(t)}: its counts ({sum(counts.values())} words) are not the "
                            f"counts of the first files written, in order (a file lost or counted twice)")
            return check
    check.final = read_counts(os.path.join(job.out, f"{prefix}{committed[-1]}"))
    check.batches_committed = len(committed)
    truth = prefixes[-1]
    if check.final != truth:
        diff = {w: (check.final.get(w, 0), truth.get(w, 0)) for w in sorted(set(truth) | set(check.final))
                if check.final.get(w, 0) != truth.get(w, 0)}
        problems.append(f"final counts differ from the words written (counted, written): {diff}")
    return check


def print_verdict(restarts: list[Restart], problems: list[str], files: list[Counter[str]],
                  batches_committed: int) -> int:
    """Print the table of restarts and the verdict line; the exit code."""
    print()
    print(f"{'kill':>4}  {'when':<45} {'recomputed':>10} {'restart->recovered':>19} {'restart->caught up':>19}")
    for i, r in enumerate(restarts, 1):
        d = r.driver
        rec = f"{r.recovered_at - d.started_at:.2f} s" if d and r.recovered_at else "-"
        cau = f"{r.caught_up_at - d.started_at:.2f} s" if d and r.caught_up_at else "-"
        print(f"{i:>4}  {r.scenario:<45} {len(r.replayed):>10} {rec:>19} {cau:>19}")
    print()
    words = sum(sum(c.values()) for c in files)
    if problems:
        print("verdict: FAILED")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"verdict: OK: final counts equal the {words} words written in {len(files)} files; "
          f"{batches_committed} batches committed exactly once across {len(restarts)} "
          f"SIGKILLs; no orphan executors", flush=True)
    return 0


class Demo:
    """Feeds files, kills and restarts the driver, then checks the output against the ground truth."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.interval_ms = round(args.interval * 1000)
        self.rng = random.Random(7)
        self.timeline = Timeline()
        self.workdir = tempfile.mkdtemp(prefix="dstream-recovery-demo-")
        self.job = WordCountFiles(self.workdir, checkpoint=args.checkpoint, file_name="words-{:04d}.txt")
        # State snapshots every 4 batches, so restarts recover from a data checkpoint, not from the start.
        command = app.command(self.job.app_args(), "--interval", str(args.interval), "--master", args.master,
                              "--checkpoint-interval", str(4 * args.interval))
        self.app = RestartableDriver(command, os.path.join(self.workdir, "driver.log"), cwd=self.workdir,
                                     on_event=self._show)
        self.restarts: list[Restart] = []
        self.snapshots: list[Snapshot] = []
        self.problems: list[str] = []
        #: when the last SIGKILL was sent
        self.kill_time = 0.0
        #: wall time of the newest rename into the input directory
        self.last_rename = time.time()

    def _show(self, e: Event) -> None:
        text = describe(e)
        if text is not None:
            self.timeline.say(text, e["wall"])

    @property
    def driver(self) -> DriverProcess:
        """The newest driver process."""
        return self.app.process

    # -- the child driver -------------------------------------------------------------------------------
    def start_driver(self) -> DriverProcess:
        started = self.app.start(60)
        driver = self.driver
        how = (f"restored from the checkpoint of batch {_clock(started['checkpoint_ms'])}, "
               f"{len(started['replayed'])} batches to recompute" if started["restored"] else "fresh start")
        workers = f"executor processes {started['workers']}" if started["workers"] else "thread executors"
        self.timeline.say(f"driver pid {driver.pid} started ({how}); {workers}", started["wall"])
        return driver

    # -- input -------------------------------------------------------------------------------------------
    def write_file(self, note: str = "", kill: DriverProcess | None = None) -> float:
        """Write the next file to staging and rename it in (then SIGKILL ``kill`` at once); the rename time."""
        lines = [" ".join(self.rng.choices(WORDS, k=self.rng.randint(1, 12)))
                 for _ in range(self.rng.randint(5, 30))]
        name, renamed = self.job.feed(lines)
        self.last_rename = renamed
        if kill is not None:
            self.kill_time = kill.kill()
        self.timeline.say(f"{name} renamed in: {len(lines)} lines, {sum(self.job.files[-1].values())} words{note}",
                          renamed)
        return renamed

    # -- kills -------------------------------------------------------------------------------------------
    def kill(self, number: int) -> None:
        """Kill the driver (scenario by ``number``), write a file while it is down, restart it."""
        driver = self.driver
        reported = driver.workers
        self.snapshots.append(self.job.snapshot())
        committed = len(self.snapshots[-1])
        if number % 2 == 0:
            scenario = "while a file was being renamed in"
            self.write_file("; SIGKILL sent right after the rename", kill=driver)
            kill_at = self.kill_time
        else:
            scenario = "while a batch with new words was running"
            mark = driver.count()
            self.write_file()
            if driver.wait_for(lambda e: e["event"] == "batch_started" and e["records"] > 0,
                               3 * self.args.interval + 5, since=mark) is None:
                scenario = "after a file arrived (no batch start seen)"
            kill_at = driver.kill()
        restart = Restart(scenario, driver.pid, kill_at)
        self.restarts.append(restart)
        self.timeline.say(f"SIGKILL driver pid {driver.pid} {scenario} ({committed} batches committed before)",
                          kill_at)
        self.check_orphans(driver.pid, reported, kill_at)
        if len(self.job.files) < self.args.batches:
            self.write_file(" (the driver is down)")
        time.sleep(self.args.interval * 1.5)  # let batches fall due while the driver is down
        self.timeline.say("restarting the driver")
        new = self.start_driver()
        started = new.started() or {}
        restart.driver = new
        restart.replayed = list(started.get("replayed", []))
        if not started.get("restored"):
            self.problems.append(f"restart {len(self.restarts)} did not restore from the checkpoint")
        self.wait_caught_up(restart)

    def check_orphans(self, pid: int, reported: list[int], since: float) -> None:
        """The executor processes of the dead driver ``pid`` must exit by themselves, soon."""
        left = wait_workers_exit(pid, reported, since + ORPHAN_GRACE - time.time())
        waited = time.time() - since
        if left:
            self.problems.append(f"executor processes {left} of the killed driver {pid} still ran "
                                 f"{ORPHAN_GRACE:g} s after it died (orphans; killed now)")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        elif reported:
            self.timeline.say(f"executor processes {reported} of pid {pid} exited by themselves "
                              f"{waited:.1f} s after the kill")

    def wait_caught_up(self, restart: Restart) -> None:
        """Wait until the replayed batches are done and a batch runs on time again."""
        driver = restart.driver
        assert driver is not None
        pending = set(restart.replayed)
        done = driver.wait_for(lambda e: e["event"] == "batch" and e["replayed"] and
                               not pending.difference(_done_replays(driver)), 60)
        if done is None and pending:
            self.problems.append(f"restart {len(self.restarts)}: the replayed batches did not all complete "
                                 f"within 60 s")
            return
        restart.recovered_at = done["wall"] if done else driver.started_at
        on_time = driver.wait_for(lambda e: e["event"] == "batch" and not e["replayed"]
                                  and e["scheduling_ms"] is not None and e["scheduling_ms"] < self.interval_ms
                                  and e["wall"] >= restart.recovered_at, 30)
        restart.caught_up_at = on_time["wall"] if on_time else restart.recovered_at
        times = sorted(restart.replayed)
        span = f" ({_clock(times[0])} ... {_clock(times[-1])})" if times else ""
        self.timeline.say(f"recovered: {len(times)} batches recomputed{span}; caught up "
                          f"{restart.caught_up_at - driver.started_at:.1f} s after the restart",
                          restart.caught_up_at)

    # -- the run -----------------------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        self.timeline.say(f"recovery demo: {a.batches} files, {a.kills} SIGKILLs, {a.interval:g} s batches on "
                          f"{a.master}; checkpoint {self.job.checkpoint}")
        driver = self.start_driver()
        if driver.wait_for(lambda e: e["event"] == "batch", 30) is None:
            raise RuntimeError(f"the driver ran no batch:\n{driver.stderr_tail()}")
        n, k = a.batches, a.kills
        kill_at = {round((i + 1) * n / (k + 1)) for i in range(k)}
        kills = 0
        while len(self.job.files) < n:
            if len(self.job.files) in kill_at:
                self.kill(kills)
                kills += 1
            else:
                self.write_file()
                time.sleep(a.interval)
        driver = self.driver
        cut = round(self.last_rename * 1000) + self.interval_ms
        if driver.wait_for(lambda e: e["event"] == "batch" and e["time"] >= cut, 30) is None:
            self.problems.append("no batch completed after the last file arrived")
        code = driver.stop()
        self.timeline.say(f"driver pid {driver.pid} stopped (SIGTERM), exit code {code}")
        if code != 0:
            self.problems.append(f"the driver exited with code {code}:\n{driver.stderr_tail()}")
        self.check_orphans(driver.pid, [], time.time())
        self.problems += [f"driver pid {d.pid}: {e['message']}" for d in self.app.runs for e in list(d.events)
                          if e["event"] == "error"]
        check = check_output(self.job, self.interval_ms, self.snapshots)
        self.problems += check.problems
        return print_verdict(self.restarts, self.problems, self.job.files, check.batches_committed)

    def cleanup(self) -> None:
        self.app.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _done_replays(driver: DriverProcess) -> set[int]:
    return {e["time"] for e in list(driver.events) if e["event"] == "batch" and e["replayed"]}


def _check_checkpoint(url: str) -> str | None:
    """Why ``url`` cannot hold the demo's checkpoint, or None."""
    if url.startswith("memory://"):
        return "memory:// lives inside one process; the demo's driver is a child process that gets killed"
    try:
        fs, path = url_to_fs(url)
        if checkpoint_times(fs, path):
            return "it already holds a checkpoint (of another job); give a new or empty location"
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing driver package...
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the demo with command-line options ``argv``; the exit code (0: verdict OK)."""
    parser = argparse.ArgumentParser(
        prog="python -m dstream.demo",
        description="Kill a checkpointed streaming word count with SIGKILL, restart it, check exactly-once output.")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of the driver (default 2)")
    parser.add_argument("--batches", type=int, default=12, help="input files, one per batch (default 12)")
    parser.add_argument("--interval", type=float, default=0.5, help="batch interval in seconds (default 0.5)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint directory, a path or fsspec URL (default: a temporary directory)")
    parser.add_argument("--master", default="local[2]", help="executors: local[N] or threads[N] (default local[2])")
    args = parser.parse_args(argv)
    if args.kills < 0:
        parser.error(f"--kills must be 0 or more, got {args.kills}")
    if args.batches < 2 * args.kills + 2:
        parser.error(f"--batches must be at least 2 * --kills + 2 = {2 * args.kills + 2}, got {args.batches}")
    if not 0.05 <= args.interval <= 10:
        parser.error(f"--interval must be between 0.05 and 10 seconds, got {args.interval}")
    if not LOCAL_MASTER.match(args.master.strip()):
        parser.error(f"--master: the demo runs local executors: use local[N], local[*] or threads[N], "
                     f"not {args.master!r}")
    if args.checkpoint is not None:
        why = _check_checkpoint(args.checkpoint)
        if why:
            parser.error(f"--checkpoint {args.checkpoint}: {why}")
    demo = Demo(args)
    try:
        return demo.run()
    except RuntimeError as exc:
        print(f"verdict: FAILED\n  - {exc}", flush=True)
        return 1
    finally:
        demo.cleanup()
