"""The driver that ``python -m dstream.demo`` (and ``benchmarks/recovery.py``) start, kill and restart.

A checkpointed, stateful word count restarted with ``StreamingContext.getOrCreate``::

    textFileStream(INPUT) -> flatMap(words) -> map((w, 1)) -> updateStateByKey(sum) -> saveAsTextFiles(PREFIX)

    python -m dstream.demo.app INPUT_DIR OUTPUT_PREFIX CHECKPOINT [--interval S] [--master M]
                               [--checkpoint-interval S] [--work-ms MS]

It prints one JSON object per line on stdout (``dstream.demo.harness.emit``), for the parent to parse
(``wall`` is ``time.time()``)::

    {"event": "process", "pid"}   the interpreter and the imports are ready
    {"event": "started", "pid", "restored", "checkpoint_ms", "interval_ms", "replayed": [batch ms...],
     "workers": [pid...]}
    {"event": "batch_started", "time", "records", "replayed"}
    {"event": "batch", "time", "records", "scheduling_ms", "processing_ms", "total_ms", "replayed"}
    {"event": "recovery", "tasks", "workers", "start", "end", "busy"}   the parallel recovery stage (on a
        restart; ``busy``: the seconds its tasks ran, added up)
    {"event": "stages", "stages": [{"stage", "start", "end", "tasks", "workers"}...]}   with --report-stages
    {"event": "error", "message"}  /  {"event": "stopped"}

The options only matter on a fresh start: a restored job takes its graph, interval and master from its
checkpoint (as Spark does). SIGTERM stops the job (graceful); SIGKILL is what the demo uses to crash it.
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from typing import Any, Sequence

from dstream import Context, StreamingContext, StreamingListener
from dstream.demo.harness import emit, started_fields

#: the module that runs this app (``python -m``)
MODULE = "dstream.demo.app"


def command(app_args: Sequence[str], *options: str) -> list[str]:
    """The arguments after the interpreter that run this app: ``-m dstream.demo.app INPUT_DIR OUTPUT_PREFIX
    CHECKPOINT [options]`` (``app_args`` as ``WordCountFiles.app_args`` gives them)."""
    return ["-m", MODULE, *app_args, *options]


def words(line: str, work_ms: float = 0.0) -> list[str]:
    """The words of a line, after ``work_ms`` of pure-Python work (the benchmark's CPU-bound stage)."""
    if work_ms > 0:
        end = time.perf_counter() + work_ms / 1000.0
        x = 0
        while time.perf_counter() < end:
            x += sum(i * i for i in range(200))
    return line.split()


def add_counts(new: list[int], old: int | None) -> int:
    """updateStateByKey's function: the running count of a word."""
    return sum(new) + (old or 0)


class Progress(StreamingListener):
    """Prints a JSON line when a batch starts and completes; waits for ``ready`` to know the replays."""

    def __init__(self, ssc: StreamingContext, report_stages: bool = False) -> None:
        self.ssc = ssc
        #: also print every stage run up to the end of the recovery (``stages`` event)
        self.report_stages = report_stages
        #: set once ``start()`` has returned, so ``ssc.replayed_times`` is known
        self.ready = threading.Event()
        self._left: set[int] | None = None

    def _replayed(self, time_ms: int) -> bool:
        self.ready.wait(10)
        return time_ms in set(getattr(self.ssc, "replayed_times", ()))

    def onBatchStarted(self, batchStarted: Any) -> None:
        info = batchStarted.batchInfo()
        emit("batch_started", time=info.batchTime(), records=info.numRecords(),
             replayed=self._replayed(info.batchTime()))

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        info = batchCompleted.batchInfo()
        replayed = self._replayed(info.batchTime())
        if self._left is None:
            self._left = set(getattr(self.ssc, "replayed_times", ()))
        if replayed and self._left:
            self._left.discard(info.batchTime())
            if not self._left:  # reported before the last replayed batch, so readers have it then
                self._report_recovery_stage()
        emit("batch", time=info.batchTime(), records=info.numRecords(), scheduling_ms=info.schedulingDelay(),
             processing_ms=info.processingDelay(), total_ms=info.totalDelay(), replayed=replayed)

    def _report_recovery_stage(self) -> None:
        all_records = list(self.ssc.sparkContext.scheduler.task_records)
        records = [r for r in all_records if "parallel recovery" in r.stage]
        if self.report_stages:
            stages: dict[str, list] = {}
            for r in all_records:
                s = stages.setdefault(r.stage, [r.start, r.end, 0, set()])
                s[0], s[1], s[2] = min(s[0], r.start), max(s[1], r.end), s[2] + 1
                s[3].add(r.worker)
            emit("stages", stages=[{"stage": k, "start": v[0], "end": v[1], "tasks": v[2], "workers": len(v[3])}
                                   for k, v in stages.items()])
        if records:
            emit("recovery", tasks=len(records), workers=sorted({r.worker for r in records}),
                 start=min(r.start for r in records), end=max(r.end for r in records),
                 busy=sum(r.end - r.start for r in records))


def build(input_dir: str, output_prefix: str, checkpoint: str, interval: float, master: str,
          checkpoint_interval: float | None, work_ms: float) -> StreamingContext:
    """The setup function of ``getOrCreate``: declare the word count on a new context."""
    ssc = StreamingContext(Context(master), interval)
    ssc.checkpoint(checkpoint)
    pairs = (ssc.textFileStream(input_dir)
             .flatMap(functools.partial(words, work_ms=work_ms))
             .map(lambda w: (w, 1)))
    counts = pairs.updateStateByKey(add_counts)
    if checkpoint_interval is not None:
        counts.checkpoint(checkpoint_interval)
    counts.saveAsTextFiles(output_prefix)
    return ssc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dstream.demo.app",
                                     description="A restartable, checkpointed stateful word count.")
    parser.add_argument("input_dir")
    parser.add_argument("output_prefix")
    parser.add_argument("checkpoint", help="checkpoint directory (a path or fsspec URL)")
    parser.add_argument("--interval", type=float, default=0.5, help="batch interval, seconds")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--checkpoint-interval", type=float, default=None,
                        help="data checkpoint interval of the state, seconds (default: the engine's, >= 10 s)")
    parser.add_argument("--work-ms", type=float, default=0.0, help="pure-Python work per line in flatMap, ms")
    parser.add_argument("--report-stages", action="store_true",
                        help="after a recovery, print the timings of every stage run so far")
    args = parser.parse_args(argv)
    emit("process", pid=os.getpid())  # imports done; next: read the checkpoint or set up

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ssc = StreamingContext.getOrCreate(args.checkpoint, functools.partial(
        build, args.input_dir, args.output_prefix, args.checkpoint, args.interval, args.master,
        args.checkpoint_interval, args.work_ms))
    progress = Progress(ssc, args.report_stages)
    ssc.addStreamingListener(progress)
    ssc.start()
    progress.ready.set()
    emit("started", **started_fields(ssc))
    try:
        while not stop.is_set():
            ssc.awaitTerminationOrTimeout(0.1)
    except Exception as exc:  # noqa: BLE001 - a failed batch: report it and exit non-zero
        emit("error", message=f"{type(exc).__name__}: {exc}")
        ssc.stop(stopSparkContext=True)
        return 1
    ssc.stop(stopSparkContext=True, stopGraceFully=True)
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
