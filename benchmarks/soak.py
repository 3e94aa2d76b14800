"""Soak benchmark: SIGKILL a checkpointed stateful job's driver N times at random moments, then count what
was lost or doubled and what storage was left behind.

Run by hand (never by pytest)::

    python benchmarks/soak.py                      # 20 driver kills, a few minutes
    python benchmarks/soak.py --kills 3 --seed 5 --batch 0.2 --master 'local[2]'

The job is the recovery demo's driver, ``dstream.demo.app`` (``demo/app.py``): textFileStream ->
flatMap -> map -> updateStateByKey(sum) -> saveAsTextFiles, checkpointed (a state snapshot every 4
batches), restarted with ``getOrCreate`` through ``dstream.demo.harness.RestartableDriver``. A thread
renames a new input file in every 0.05-0.4 s, while the driver runs and while it is down.

Each round: wait until the (re)started driver has completed a batch (restart -> first batch: from the new
process's start to its first ``batch`` event), then a random 0.5-3 s, and SIGKILL it; one round in five
instead kills it 0-0.3 s after it started, while it recovers. Every 3rd round one executor worker is
SIGKILLed 0.05-0.5 s before the driver. The driver is restarted with the same command after 0.2-1.5 s
down. All random choices come from ``--seed``.

At the end the files stop, the driver catches up and is stopped (SIGTERM), and the newest committed
batch's counts are compared with every word written: lost = sum of max(0, written - counted), doubled =
sum of max(0, counted - written). The recovery demo's output check (``check_output``) also runs: every
batch time committed once, no torn or half-cleaned directory, no file committed before a kill rewritten,
each batch's counts those of the first k files written. Storage left behind: the checkpoint directory's
size and files, its snapshot directories against those the newest checkpoint refers to, ``.tmp`` files
under the job's directories, the block directories (``/dev/shm/dstream-blocks-<pid>-*``) of our dead
drivers, and our executor processes still alive 5 s after the final stop.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime
from typing import Any

import fsspec

from common import Table, log, median, verdict
from dstream.demo import app
from dstream.demo.harness import (DriverProcess, RestartableDriver, WordCountFiles, wait_until, wait_workers_exit,
                                  worker_processes)
from dstream.demo.recovery_demo import ORPHAN_GRACE, WORDS, check_output
from dstream.driver.checkpoint import read_latest
from dstream.driver.retention import SNAPSHOTS


class Feeder(threading.Thread):
    """Renames a new input file in every 0.05-0.4 s until stopped, whether the driver runs or not."""

    def __init__(self, job: WordCountFiles, seed: int) -> None:
        super().__init__(name="feeder", daemon=True)
        self.job, self.rng, self.done = job, random.Random(seed), threading.Event()

    def run(self) -> None:
        rng = self.rng
        while not self.done.wait(rng.uniform(0.05, 0.4)):
            self.job.feed([" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(rng.randint(5, 30))])

    def stop(self) -> None:
        self.done.set()
        self.join()


def first_batch(run: DriverProcess) -> float | None:
    """Seconds from the process's start to its first completed batch; None if it completed none."""
    e = next((e for e in list(run.events) if e["event"] == "batch"), None)
    return e["wall"] - run.started_at if e else None


def clock(seconds: float) -> str:
    """A wall time as batch times print (``HH:MM:SS.mmm``; a batch's time is its ``<prefix>-<ms>`` in ms)."""
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]


def checkpoint_storage(url: str) -> dict[str, Any]:
    """The checkpoint directory's bytes, files, ``.tmp`` files, snapshot directories and how many of those
    the newest checkpoint's kept references name."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    files = fs.find(path, detail=True)
    data = f"{path.rstrip('/')}/data"
    snapshots = {os.path.basename(p.rstrip("/")) for p in (fs.ls(data, detail=False) if fs.exists(data) else [])}
    newest = read_latest(url)
    refs = set().union(*(newest.extra.get(SNAPSHOTS, {}).values() if newest else []))
    return {"bytes": sum(e.get("size") or 0 for e in files.values()), "files": len(files),
            "tmp": sum(name.endswith(".tmp") for name in files), "snapshots": len(snapshots),
            "referenced": len(snapshots & {os.path.basename(r.rstrip("/")) for r in refs})}


def local_tmp_files(*dirs: str) -> int:
    return sum(name.endswith(".tmp") for d in dirs for _, _, names in os.walk(d) for name in names)


def orphan_block_dirs(pids: list[int]) -> list[str]:
    """Block directories of our driver processes (all dead by now) still on disk."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return [d for pid in pids for d in glob.glob(os.path.join(root, f"dstream-blocks-{pid}-*"))]


def soak(a: argparse.Namespace) -> int:
    rng = random.Random(a.seed)
    workdir = tempfile.mkdtemp(prefix="dstream-soak-")
    job = WordCountFiles(workdir, checkpoint=a.checkpoint_url)
    driver = RestartableDriver(app.command(job.app_args(), "--interval", str(a.batch), "--master", a.master,
                                           "--checkpoint-interval", str(4 * a.batch)),
                               os.path.join(workdir, "driver.log"), cwd=workdir)
    feeder = Feeder(job, a.seed + 1)
    problems: list[str] = []
    snapshots = []  # the committed output before each kill
    executor_kills = early_kills = 0
    load0, t0 = os.getloadavg()[0], time.time()
    log(f"# soak: {a.kills} driver kills, {a.batch:g} s batches on {a.master}, seed {a.seed}; "
        f"work directory {workdir}; load average {load0:.2f} on {os.cpu_count()} CPUs")
    try:
        driver.start(60)
        if driver.process.wait_for(lambda e: e["event"] == "batch", 60) is None:
            raise RuntimeError(f"the driver ran no batch:\n{driver.process.stderr_tail()}")
        feeder.start()
        for i in range(a.kills):
            run = driver.process
            early = rng.random() < 0.2
            if early:
                delay = rng.uniform(0.0, 0.3)
            else:
                if run.wait_for(lambda e: e["event"] == "batch", 60) is None:
                    raise RuntimeError(f"driver pid {run.pid} completed no batch within 60 s:\n{run.stderr_tail()}")
                delay = rng.uniform(0.5, 3.0)
            snapshots.append(job.snapshot())
            time.sleep(delay)
            note = ""
            if i % 3 == 2:
                workers = worker_processes(run.pid, run.workers)
                if workers:
                    victim = rng.choice(workers)
                    os.kill(victim, signal.SIGKILL)
                    executor_kills += 1
                    note = f" (executor {victim} killed first)"
                    time.sleep(rng.uniform(0.05, 0.5))
            killed_at = run.kill()
            took = first_batch(run)
            early_kills += took is None
            last = max((e["time"] for e in list(run.events) if e["event"] == "batch"), default=None)
            log(f"kill {i + 1}/{a.kills} at {clock(killed_at)}: driver {run.pid}, {killed_at - run.started_at:.2f} s "
                f"after its start, last batch done {clock(last / 1000) if last else 'none'}{note}; "
                f"{len(job.files)} files written")
            time.sleep(rng.uniform(0.2, 1.5))  # down: files keep arriving, batches fall due
            started = driver.start(60)
            if not started["restored"]:
                problems.append(f"restart {i + 1} (pid {started['pid']}) did not restore from the checkpoint")
        feeder.stop()
        run = driver.process
        try:
            wait_until(lambda: job.latest_counts() == job.truth, 120, "the output to reach the words written")
            mark = run.count()  # and on time again, so the stop finds the usual state, not a queue of batches
            run.wait_for(lambda e: e["event"] == "batch" and not e["replayed"]
                         and 0 <= e["scheduling_ms"] < a.batch * 1000, 60, mark)
        except TimeoutError as exc:
            problems.append(str(exc))
        code = run.stop()
        if code != 0:
            problems.append(f"the last driver (pid {run.pid}) exited with code {code}:\n{run.stderr_tail()}")
    except RuntimeError as exc:  # a driver that did not start or ran no batch: report what happened so far
        problems.append(str(exc))
    finally:
        feeder.done.set()
        driver.close()
    stopped = time.time()
    leftover = [p for r in driver.runs
                for p in wait_workers_exit(r.pid, r.workers, max(0.0, stopped + ORPHAN_GRACE - time.time()))]
    problems += [f"driver pid {r.pid}: {e['message']}" for r in driver.runs for e in list(r.events)
                 if e["event"] == "error"]
    check = check_output(job, round(a.batch * 1000), snapshots)
    problems += check.problems

    got, truth = job.latest_counts(), job.truth
    lost = sum((truth - got).values())
    doubled = sum((got - truth).values())
    restarts = [t for t in map(first_batch, driver.runs[1:]) if t is not None]
    logging.getLogger("dstream").setLevel(logging.ERROR)  # reading the checkpoint: no "not signed" warning
    store = checkpoint_storage(job.checkpoint)
    blocks = orphan_block_dirs([r.pid for r in driver.runs])
    tmp = store["tmp"] + local_tmp_files(job.input, job.staging, job.out)
    ok = lost == doubled == 0 and not problems

    table = Table(f"Soak: a checkpointed stateful word count SIGKILLed {a.kills} times ({a.master}, "
                  f"{a.batch:g} s batches, seed {a.seed})",
                  ["driver kills", "executor kills", "files", "words", "lost", "doubled",
                   "restart -> 1st batch median, s", "max, s", "checkpoint MB / files", "snapshot dirs / referenced",
                   ".tmp files", "orphan block dirs", "leftover processes", "verdict"])
    table.add(a.kills, executor_kills, len(job.files), sum(truth.values()), lost, doubled,
              median(restarts), max(restarts, default=None), f"{store['bytes'] / 1e6:.2f} / {store['files']}",
              f"{store['snapshots']} / {store['referenced']}", tmp, len(blocks), len(leftover), verdict(ok))
    table.notes.append(f"{len(job.committed())} batches committed in {stopped - t0:.0f} s; {early_kills} kills "
                       f"before the restarted driver's first batch (not in the restart times); load average "
                       f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end, {os.cpu_count()} CPUs")
    if lost or doubled:
        diff = {w: (got[w], truth[w]) for w in sorted(set(got) | set(truth)) if got[w] != truth[w]}
        table.notes.append(f"(counted, written) where they differ: {diff}")
    table.notes += [f"problem: {p}" for p in problems]
    table.notes += [f"leftover: {x}" for x in blocks + [f"pid {p}" for p in leftover]]
    if ok and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        table.notes.append(f"kept for inspection: {workdir} (driver.log: every driver's stderr)")
    print(table.render(), flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="driver SIGKILLs (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice (default 1)")
    parser.add_argument("--batch", type=float, default=0.2, help="batch interval, s (default 0.2)")
    parser.add_argument("--master", default="local[2]", help="executors (default local[2])")
    parser.add_argument("--checkpoint-url", default=None,
                        help="checkpoint directory, a path or fsspec URL other than memory:// (default: in the "
                             "temporary work directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway on failure)")
    a = parser.parse_args(argv)
    if a.kills < 1:
        parser.error(f"--kills must be 1 or more, got {a.kills}")
    if a.checkpoint_url and a.checkpoint_url.startswith("memory://"):
        parser.error("--checkpoint-url: memory:// lives inside one process; the driver is a child process")
    return soak(a)


if __name__ == "__main__":
    sys.exit(main())
