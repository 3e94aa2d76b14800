"""``python -m dstream.demo``: a streaming word count over a directory that fills while it runs.

A writer thread drops a text file of generated words into a temporary directory every ~0.3 s (written
elsewhere, then renamed in, as ``textFileStream`` expects); the stream counts the words of each batch
and prints the top five; a listener prints each batch's delays. At the end the demo checks that every
word written was counted exactly once and exits 1 if not.
"""
from __future__ import annotations

import argparse
import operator
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from dstream import Context, StreamingContext, StreamingListener

WORDS = ("stream", "batch", "arrow", "spark", "window", "state", "driver", "executor", "lineage", "shuffle",
         "partition", "checkpoint", "record", "table", "python")


class FileWriter(threading.Thread):
    """Writes a file of random words every ``period`` seconds: to ``staging``, then renamed into ``target``."""

    def __init__(self, target: str, staging: str, period: float = 0.3, seed: int = 1) -> None:
        super().__init__(name="demo-writer", daemon=True)
        self.target, self.staging, self.period = target, staging, period
        self.rng = random.Random(seed)
        self.stop_event = threading.Event()
        #: words written so far, by word
        self.written: Counter[str] = Counter()
        self.files = 0
        #: wall-clock time (s) of the last rename into ``target``
        self.last_write = 0.0

    def run(self) -> None:
        while not self.stop_event.is_set():
            lines = [" ".join(self.rng.choices(WORDS, k=self.rng.randint(1, 12)))
                     for _ in range(self.rng.randint(1, 20))]
            name = f"words-{self.files:05d}.txt"
            tmp = os.path.join(self.staging, name)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            os.rename(tmp, os.path.join(self.target, name))
            self.last_write = time.time()
            self.files += 1
            for line in lines:
                self.written.update(line.split())
            self.stop_event.wait(self.period)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


class DelayPrinter(StreamingListener):
    """Prints the scheduling, processing and total delay of every completed batch."""

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        info = batchCompleted.batchInfo()
        print(f"  delays of batch {_clock(info.batchTime())}: scheduling {info.schedulingDelay()} ms, "
              f"processing {info.processingDelay()} ms, total {info.totalDelay()} ms", flush=True)


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


class WordCounts:
    """The output operation: prints each batch's top 5 words and keeps the running totals."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.batches = 0
        #: batch time (unix seconds) of the newest batch seen
        self.last_batch = 0.0

    def __call__(self, time: datetime, rdd: Any) -> None:
        counts = rdd.collect()
        top = sorted(counts, key=lambda kv: (-kv[1], kv[0]))[:5]
        self.batches += 1
        self.totals.update(dict(counts))
        self.last_batch = time.timestamp()
        shown = ", ".join(f"{w}={n}" for w, n in top) or "(no new files)"
        print(f"batch {_clock(round(time.timestamp() * 1000))}: {sum(n for _, n in counts)} words; top 5: {shown}",
              flush=True)


def run(ctx: Context, seconds: float, interval: float, period: float = 0.3) -> int:
    """Run the demo on ``ctx`` (stopped at the end); return the exit code: 0 when every word was counted once."""
    workdir = tempfile.mkdtemp(prefix="dstream-demo-")
    target, staging = os.path.join(workdir, "in"), os.path.join(workdir, "staging")
    os.makedirs(target)
    os.makedirs(staging)
    ssc = StreamingContext(ctx, interval)
    writer = FileWriter(target, staging, period)
    try:
        ssc.addStreamingListener(DelayPrinter())
        counts = WordCounts()
        (ssc.textFileStream(target)
            .flatMap(str.split)
            .map(lambda word: (word, 1))
            .reduceByKey(operator.add)
            .foreachRDD(counts))
        print(f"word count over {target}: {interval:g} s batches on {ctx.master}, for {seconds:g} s", flush=True)
        ssc.start()
        writer.start()
        time.sleep(seconds)
        writer.stop()
        # Wait for a batch cut after the last file arrived, so that every file has been read.
        deadline = time.time() + 5 * interval + 10
        while counts.last_batch <= writer.last_write and time.time() < deadline:
            ssc.awaitTerminationOrTimeout(0.05)
        ssc.stop(stopSparkContext=True, stopGraceFully=True)
    finally:
        if writer.is_alive():
            writer.stop()
        ssc.stop(stopSparkContext=True)
        shutil.rmtree(workdir, ignore_errors=True)
    written, counted = sum(writer.written.values()), sum(counts.totals.values())
    ok = counts.totals == writer.written
    print(f"summary: {counts.batches} batches, {writer.files} files, {written} words written, "
          f"{counted} words counted: {'OK' if ok else 'MISMATCH'}", flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dstream.demo", description="A streaming word count over a directory that fills while it runs.")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the writer runs (default 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="batch interval in seconds (default 0.5)")
    parser.add_argument("--master", default="local[2]", help="executors: local[N], threads[N] (default local[2])")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    if args.interval <= 0:
        parser.error(f"--interval must be positive, got {args.interval}")
    try:
        ctx = Context(args.master)
    except ValueError as exc:
        parser.error(f"--master: {exc}")
    return run(ctx, args.seconds, args.interval)


if __name__ == "__main__":
    sys.exit(main())
