"""Recovery benchmark: seconds from a driver restart to caught up, against lost batches and executors.

Run by hand (never by pytest)::

    python benchmarks/recovery.py --repeat 3      # lost 5, 20, 50 batches on local[1] and local[2]
    python benchmarks/recovery.py --lost 5 20 --lines 20

The pipeline is ``dstream.demo.app``'s word count made CPU-bound: every line costs ``--work-ms`` of
pure-Python work in ``flatMap``, then ``updateStateByKey`` keeps the counts and ``saveAsTextFiles``
commits each batch. One input file (``--lines`` lines) per batch, so a batch is one task when nothing
fails.

Method, for each master and each N in ``--lost``:

1. Start the app fresh with a data checkpoint interval far longer than the run, so no state snapshot is
   ever written: after a crash every batch since the start must be recomputed.
2. Feed N files, one per batch (each written elsewhere and renamed in after the previous one's batch
   completed); the failure-free per-batch time is the mean processing time of those batches.
3. SIGKILL the driver right after the N-th batch completed, wait until its executors have exited,
   restart it at once (the same command), and time from the new process's start until every replayed
   batch is done (``restart -> caught up``), and from the start of the parallel recovery stage to the
   same moment (``recompute``). Check the final counts against the words written.

Restart overhead is measured separately, per master: the same app with a state snapshot at every batch,
killed after an empty batch (nothing to recompute); seconds from process start to the first replayed
batch done; once with the job's files on local disk and once on S3 (a local moto server, when moto[server]
and s3fs are installed; ``--no-s3`` skips it).

The machine may be shared: before each measure the benchmark waits (up to ``--quiet-wait`` s) until the
other processes use less than ``--quiet`` cores, and during the recovery stage it samples ``/proc`` for
the cores our executors got and the cores everything else took. Medians over ``--repeat`` runs.

Targets on a 2-core machine: restart overhead under 2 s; recomputation with 2 executors at least 1.6x
faster than with 1. Also printed (issue targets, for a 16-core machine): process start to first replayed
batch done under 0.7 s on local[2] and under 1 s on local[16]; with 48 lost batches (``--lost 48``),
restart to caught up at least 10x faster on local[16] than on local[1] (``--masters local[1] ... local[16]``:
every master's speed-up over local[1] is tabled).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from dstream.demo import app
from dstream.demo.harness import DriverProcess, RestartableDriver, S3Server, WordCountFiles, wait_workers_exit
from dstream.demo.recovery_demo import WORDS

NAN = float("nan")


@dataclass
class Result:
    master: str
    lost: int
    per_batch: float
    restart_to_caught_up: float
    recompute: float
    stage: float
    #: seconds the recovery stage's tasks ran, added up
    busy: float
    tasks: int
    #: cores our executor processes used during the recovery stage, added up
    executor_cores: float
    #: cores the driver process used meanwhile
    driver_cores: float
    #: cores every other process on the machine used meanwhile
    other_cores: float
    correct: bool
    #: seconds from the new process's start to the first replayed batch done
    first_replayed: float = NAN


# -- CPU accounting from /proc (Linux) ----------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    try:
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        return (sum(v) - v[3] - v[4]) / _TICK
    except (OSError, IndexError, ValueError):
        return NAN


class CpuSampler:
    """Samples the CPU time of some processes and of the whole machine every 0.1 s, on a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, list[float | None], float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), [_process_cpu(p) for p in self.pids], _machine_busy()))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> tuple[list[float], float]:
        """(cores each of our processes used, cores the rest of the machine used) from ``start`` to ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return [NAN] * len(self.pids), NAN
        (t0, a, m0), (t1, b, m1) = inside[0], inside[-1]
        ours = [(y - x) / (t1 - t0) if x is not None and y is not None else 0.0 for x, y in zip(a, b)]
        return ours, (m1 - m0) / (t1 - t0) - sum(ours)


def wait_quiet(limit: float, wait: float) -> None:
    """Wait until the machine's other processes use less than ``limit`` cores (at most ``wait`` s)."""
    deadline = time.time() + wait
    while True:
        m0 = _machine_busy()
        time.sleep(1.0)
        busy = _machine_busy() - m0
        if math.isnan(busy) or busy < limit or time.time() > deadline:
            if busy >= limit:
                print(f"#   the machine is busy ({busy:.2f} cores in use); measuring anyway", file=sys.stderr)
            return


class Run:
    """One job: a work directory, its driver process, the files fed to it."""

    def __init__(self, master: str, interval: float, work_ms: float, lines: int, checkpoint_interval: float,
                 data_root: str | None = None) -> None:
        self.lines = lines
        self.dir = tempfile.mkdtemp(prefix="dstream-recovery-bench-")
        #: input, output and checkpoint: below the work directory, or below ``data_root`` (an S3 URL)
        self.job = WordCountFiles(data_root or self.dir)
        self.rng = random.Random(3)
        command = app.command(self.job.app_args(), "--interval", str(interval), "--master", master,
                              "--checkpoint-interval", str(checkpoint_interval), "--work-ms", str(work_ms),
                              "--report-stages")
        self.app = RestartableDriver(command, os.path.join(self.dir, "driver.log"), cwd=self.dir)

    @property
    def driver(self) -> DriverProcess:
        """The newest driver process."""
        return self.app.process

    def start(self) -> DriverProcess:
        self.app.start(120)
        driver = self.driver
        took = driver.started()["wall"] - driver.started_at
        if took > 10:
            print(f"#   the driver took {took:.1f} s to start: {driver.events[:2]}", file=sys.stderr)
        return driver

    def feed(self, n: int) -> list[float]:
        """Write n files, one per batch; the processing seconds of the batches that took them."""
        driver = self.driver
        times = []
        for _ in range(n):
            mark = driver.count()
            self.job.feed([" ".join(self.rng.choices(WORDS, k=8)) for _ in range(self.lines)])
            done = driver.wait_for(lambda e: e["event"] == "batch" and e["records"] > 0, 60, since=mark)
            if done is None:
                raise RuntimeError(f"no batch took file {len(self.job.files) - 1}:\n{driver.stderr_tail()}")
            times.append(done["processing_ms"] / 1000)
        return times

    def kill_and_restart(self, down: float = 0.0) -> DriverProcess:
        """SIGKILL the driver, wait for its executors to exit and at least ``down`` seconds, restart it."""
        old = self.driver
        workers = old.workers
        old.kill()
        killed = time.monotonic()
        wait_workers_exit(old.pid, workers, 5)
        time.sleep(max(0.0, killed + down - time.monotonic()))
        return self.start()

    def recovered(self, driver: DriverProcess) -> tuple[dict, dict | None]:
        """Wait until every replayed batch is done: (the last one's event, the recovery stage's event)."""
        pending = set((driver.started() or {}).get("replayed", []))
        done: set[int] = set()

        def last_replay(e: dict) -> bool:
            if e["event"] == "batch" and e["replayed"]:
                done.add(e["time"])
            return bool(pending) and pending <= done

        last = driver.wait_for(last_replay, 600)
        if last is None:
            raise RuntimeError(f"the replayed batches did not complete:\n{driver.stderr_tail()}")
        stage = next((e for e in list(driver.events) if e["event"] == "recovery"), None)
        return last, stage

    def counts_correct(self) -> bool:
        """The newest committed output equals the words written."""
        return bool(self.job.committed()) and self.job.latest_counts() == self.job.truth

    def close(self) -> None:
        if self.app.runs and self.driver.running():
            self.driver.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_lost(master: str, lost: int, a: argparse.Namespace) -> Result:
    run = Run(master, a.interval, a.work_ms, a.lines, checkpoint_interval=3600.0)
    try:
        driver = run.start()
        driver.wait_for(lambda e: e["event"] == "batch", 60)
        per_batch = statistics.mean(run.feed(lost))
        wait_quiet(a.quiet, a.quiet_wait)
        new = run.kill_and_restart()
        started = new.started() or {}
        sampler = CpuSampler([new.pid] + list(started.get("workers", [])))
        try:
            last, stage = run.recovered(new)
        finally:
            sampler.stop()
        # The restarted driver committed the replayed batches; wait for one more batch, then check.
        mark = new.count()
        new.wait_for(lambda e: e["event"] == "batch", 30, since=mark)
        cores, others = sampler.cores(stage["start"], stage["end"]) if stage else ([NAN, NAN], NAN)
        first = next((e for e in list(new.events) if e["event"] == "batch" and e["replayed"]), None)
        return Result(master, lost, per_batch, last["wall"] - new.started_at,
                      last["wall"] - stage["start"] if stage else NAN,
                      stage["end"] - stage["start"] if stage else NAN,
                      stage["busy"] if stage else NAN, stage["tasks"] if stage else 0, sum(cores[1:]), cores[0],
                      others, run.counts_correct(), first["wall"] - new.started_at if first else NAN)
    finally:
        run.close()


def measure_overhead(master: str, a: argparse.Namespace, data_root: str | None = None) -> tuple[float, float, float]:
    """Seconds from process start to the driver started, to the first task run on an executor, and to the
    first replayed batch done; with a state snapshot at every batch and the driver killed after an empty
    batch, so there is nothing to recompute. ``data_root``: keep input, checkpoints and output there (S3)."""
    run = Run(master, a.interval, a.work_ms, a.lines, checkpoint_interval=a.interval, data_root=data_root)
    try:
        driver = run.start()
        driver.wait_for(lambda e: e["event"] == "batch", 60)
        run.feed(3)
        wait_quiet(a.quiet, a.quiet_wait)
        mark = driver.count()
        driver.wait_for(lambda e: e["event"] == "batch" and e["records"] == 0, 30, since=mark)
        # Down for more than an interval, so that a batch falls due meanwhile (a driver back within the same
        # interval has nothing to replay, and its first batch would wait for its time).
        new = run.kill_and_restart(down=1.2 * a.interval)
        t0 = new.started_at
        first = new.wait_for(lambda e: e["event"] == "batch" and e["replayed"], 60)
        if first is None:
            raise RuntimeError(f"no replayed batch:\n{new.stderr_tail()}")
        stages = new.wait_for(lambda e: e["event"] == "stages", 30)
        first_task = min((s["start"] for s in stages["stages"]), default=NAN) if stages else NAN
        return (new.started() or {})["wall"] - t0, first_task - t0, first["wall"] - t0
    finally:
        run.close()


def start_s3() -> S3Server | None:
    """A local S3 server with this process's environment (and so the drivers') pointed at it; None when
    moto or s3fs is not installed."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("s3fs") is None:
        print("# S3 column skipped: install moto[server] and s3fs (the [test] extra)", file=sys.stderr)
        return None
    server = S3Server(os.path.join(tempfile.mkdtemp(prefix="dstream-bench-moto-"), "moto.log"))
    os.environ.update(server.env)
    return server


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _combine(runs: list[Result]) -> tuple[Result, float]:
    """The median of each measure over repeated runs, and the best recompute time."""
    m = runs[0]

    def med(attr: str) -> float:
        return _median([getattr(r, attr) for r in runs])

    return Result(m.master, m.lost, med("per_batch"), med("restart_to_caught_up"), med("recompute"), med("stage"),
                  med("busy"), m.tasks, med("executor_cores"), med("driver_cores"), med("other_cores"),
                  all(r.correct for r in runs), med("first_replayed")), min(r.recompute for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lost", type=int, nargs="+", default=[5, 20, 50], help="lost batches (default 5 20 50)")
    parser.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"])
    parser.add_argument("--interval", type=float, default=0.5, help="batch interval, s (default 0.5)")
    parser.add_argument("--work-ms", type=float, default=5.0, help="pure-Python work per line, ms (default 5)")
    parser.add_argument("--lines", type=int, default=40, help="lines per file, one file per batch (default 40)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measure; medians are shown (default 1)")
    parser.add_argument("--quiet", type=float, default=0.3,
                        help="wait until other processes use fewer cores than this before a restart (default 0.3)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="but at most this long, s (default 60)")
    parser.add_argument("--no-s3", dest="s3", action="store_false",
                        help="skip the restart overhead with checkpoints on a local S3 server (moto, the [test] "
                             "extra; skipped anyway when moto or s3fs is not installed)")
    a = parser.parse_args(argv)
    s3 = start_s3() if a.s3 else None
    print(f"# {a.lines} lines x {a.work_ms:g} ms per batch, {a.interval:g} s batches, {a.repeat} run(s) per "
          f"measure; load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    overhead: dict[str, list[tuple[float, float, float]]] = {m: [] for m in a.masters}
    overhead_s3: dict[str, list[tuple[float, float, float]]] = {m: [] for m in a.masters}
    raw: dict[tuple[str, int], list[Result]] = {}
    for _ in range(a.repeat):
        for m in a.masters:
            overhead[m].append(measure_overhead(m, a))
            if s3 is not None:
                overhead_s3[m].append(measure_overhead(m, a, data_root=f"{s3.new_bucket()}/job"))
        for lost in a.lost:
            for m in a.masters:
                r = measure_lost(m, lost, a)
                raw.setdefault((m, lost), []).append(r)
                print(f"#   {m} lost={lost}: restart -> caught up {r.restart_to_caught_up:.2f} s, recompute "
                      f"{r.recompute:.2f} s; cores: executors {r.executor_cores:.2f}, driver {r.driver_cores:.2f}, "
                      f"others {r.other_cores:.2f}",
                      file=sys.stderr, flush=True)
    print(f"# load average at end {os.getloadavg()[0]:.2f}")

    by = {k: _combine(v) for k, v in raw.items()}
    print()
    print("| master | lost batches | failure-free s/batch | lost work, s (N x s/batch) | restart -> 1st replayed "
          "batch done, s | restart -> caught up, s | recompute, s (best) | recovery stage, s (tasks) | tasks running at once | s/task in stage "
          "| cores: executors / driver / other processes | counts |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for lost in a.lost:
        for m in a.masters:
            r, best = by[(m, lost)]
            print(f"| {m} | {lost} | {r.per_batch:.3f} | {lost * r.per_batch:.2f} | {r.first_replayed:.2f} "
                  f"| {r.restart_to_caught_up:.2f} "
                  f"| {r.recompute:.2f} ({best:.2f}) | {r.stage:.2f} ({r.tasks}) | {r.busy / r.stage:.2f} "
                  f"| {r.busy / max(r.tasks, 1):.3f} | {r.executor_cores:.2f} / {r.driver_cores:.2f} / "
                  f"{r.other_cores:.2f} "
                  f"| {'ok' if r.correct else 'WRONG'} |")
    print()
    print("| master | restart overhead, s: process start -> driver started | -> first task on an executor "
          "| -> first replayed batch done (best) | the same with input, checkpoints and output on S3 (local "
          "moto server) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for m, xs in overhead.items():
        on_s3 = overhead_s3[m]
        s3_cell = (f"{_median([x[2] for x in on_s3]):.2f} ({min(x[2] for x in on_s3):.2f})" if on_s3
                   else "not measured (moto[server] and s3fs needed)" if s3 is None else "-")
        print(f"| {m} | {_median([x[0] for x in xs]):.2f} | {_median([x[1] for x in xs]):.2f} "
              f"| {_median([x[2] for x in xs]):.2f} ({min(x[2] for x in xs):.2f}) | {s3_cell} |")
    if s3 is not None:
        s3.stop()
    both = "local[1]" in a.masters and "local[2]" in a.masters
    others = [m for m in a.masters if m != "local[1]"] if "local[1]" in a.masters else []
    if others:
        print()
        print("| lost batches | master | speed-up vs local[1] (local[1] s / this s): restart -> caught up "
              "| recompute | recompute, best | recovery stage |")
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        for lost in a.lost:
            for m in others:
                (one, b1), (two, b2) = by[("local[1]", lost)], by[(m, lost)]
                print(f"| {lost} | {m} | {one.restart_to_caught_up / two.restart_to_caught_up:.2f}x "
                      f"| {one.recompute / two.recompute:.2f}x | {b1 / b2:.2f}x | {one.stage / two.stage:.2f}x |")
    print()
    worst = max(_median([x[2] for x in xs]) for xs in overhead.values())
    print(f"restart overhead target (< 2 s): {'met' if worst < 2 else 'MISSED'} (worst median {worst:.2f} s)")
    for m, limit in (("local[2]", 0.7), ("local[16]", 1.0)):
        if m in overhead:
            x = _median([v[2] for v in overhead[m]])
            print(f"restart -> first replayed batch done on {m} (< {limit:g} s): {'met' if x < limit else 'MISSED'} "
                  f"({x:.2f} s, median)")
    if others:
        big = max(a.lost)
        m = max(others, key=lambda m: int(m[6:-1]) if m.startswith("local[") and m[6:-1].isdigit() else 0)
        x = by[("local[1]", big)][0].restart_to_caught_up / by[(m, big)][0].restart_to_caught_up
        print(f"restart -> caught up at {big} lost batches, {m} vs local[1] (target >= 10x on local[16] at 48): "
              f"{x:.2f}x{'' if m == 'local[16]' else ' (no local[16] in --masters)'}")
    if both:
        big = max(a.lost)
        ratio = by[("local[1]", big)][0].recompute / by[("local[2]", big)][0].recompute
        print(f"2-executor recomputation target (>= 1.6x at {big} lost batches): "
              f"{'met' if ratio >= 1.6 else 'MISSED'} ({ratio:.2f}x, medians)")
    return 0 if all(r.correct for v in raw.values() for r in v) else 1


if __name__ == "__main__":
    sys.exit(main())
