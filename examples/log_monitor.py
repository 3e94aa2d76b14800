#!/usr/bin/env python
"""Log monitor: log lines from a directory (or a socket) -> each service's error rate over a sliding window,
and an alert line when it crosses a threshold.

    log lines ("2026-11-30T08:00:00Z payments ERROR card declined")
        |  textFileStream(--input) or socketTextStream(--socket)
        v
    (service, (errors, lines))
        |  reduceByKeyAndWindow(add, subtract, --window, --slide): incremental, with the inverse function
        v
    (service, (errors, lines) over the window)  ->  error rate = errors / lines
        |  updateStateByKey: is the service alerting? (so an alert is raised once per crossing)
        v
    "ALERT payments error rate 0.42 > 0.25 over the last 60 s"       when the rate rises above --threshold
    "RESOLVED payments error rate 0.10 <= 0.25 over the last 60 s"   when it falls back to it or below
        -> printed, and saved per batch under OUTPUT/alerts-<batch ms>/ (exactly once)

Try it::

    python examples/log_monitor.py --generate /tmp/lm
    python examples/log_monitor.py --input /tmp/lm/logs --output /tmp/lm/out --checkpoint /tmp/lm/checkpoint \\
        --batch-seconds 1 --window 10
    for f in /tmp/lm/pending/*; do mv "$f" /tmp/lm/logs/; sleep 1; done

or read lines from a socket (``nc -lk 9999`` in another terminal, then type log lines there)::

    python examples/log_monitor.py --socket localhost:9999 --output /tmp/lm/out --checkpoint /tmp/lm/cp-socket

Kill it at any time (``kill -9``) and start it again with the same command: it resumes from its checkpoint,
raises no alert twice and loses none. Alerts always print; in a terminal it also prints one status line per
batch.
"""
from __future__ import annotations

import argparse
import functools
import logging
import posixpath
import random
import signal
import sys
import threading

import fsspec

from dstream import Context, StreamingContext

#: levels that count as errors
ERROR_LEVELS = frozenset({"ERROR", "FATAL", "CRITICAL"})


# -- the job ---------------------------------------------------------------------------------------------
def parse_line(line: str) -> list[tuple[str, tuple[int, int]]]:
    """``TIME SERVICE LEVEL message`` -> ``[(service, (1 if an error else 0, 1))]``; [] for a bad line."""
    fields = line.split(None, 3)
    if len(fields) < 3:
        return []
    return [(fields[1], (1 if fields[2].upper() in ERROR_LEVELS else 0, 1))]


def add_counts(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], a[1] + b[1]


def subtract_counts(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The inverse of add_counts: what leaves the window is taken off (no recount of the whole window)."""
    return a[0] - b[0], a[1] - b[1]


def track_alert(threshold: float, window: list[tuple[int, int]], old: tuple | None) -> tuple | None:
    """updateStateByKey's function. State: ``(alerting, errors, lines, changed)``; ``window`` holds the
    service's counts over the window, or nothing when it logged nothing in the window (nothing changes)."""
    alerting = bool(old and old[0])
    if not window:
        return (alerting, old[1], old[2], False) if alerting else None
    errors, lines = window[0]
    now = errors / lines > threshold
    return now, errors, lines, now != alerting


def alert_line(threshold: float, window_s: float, kv: tuple) -> str:
    service, (alerting, errors, lines, _) = kv
    if alerting:
        return f"ALERT {service} error rate {errors / lines:.2f} > {threshold:g} over the last {window_s:g} s"
    return f"RESOLVED {service} error rate {errors / lines:.2f} <= {threshold:g} over the last {window_s:g} s"


def print_alerts(rdd) -> None:
    """Alerts are the job's output: always printed (a replayed batch prints its alerts again; the files
    under OUTPUT are written exactly once)."""
    for line in sorted(rdd.collect()):
        print(line, flush=True)


def status(time, rdd) -> None:
    """One line per batch, only when stdout is a terminal (otherwise nothing is computed)."""
    if not sys.stdout.isatty():
        return
    counts = dict(rdd.collect())
    print(f"batch {time:%H:%M:%S}.{time.microsecond // 1000:03d}: {counts.get('lines', 0)} lines, "
          f"{counts.get('services', 0)} services in the window, {counts.get('alerting', 0)} alerting", flush=True)


def setup(args: argparse.Namespace) -> StreamingContext:
    """getOrCreate's setup: declare the job on a new context (not called when restoring a checkpoint)."""
    ssc = StreamingContext(Context(args.master, appName="log_monitor"), args.batch_seconds)
    ssc.checkpoint(args.checkpoint)
    if args.socket:
        host, _, port = args.socket.rpartition(":")
        lines = ssc.socketTextStream(host or "localhost", int(port))
    else:
        lines = ssc.textFileStream(args.input)
    counts = lines.flatMap(parse_line)
    slide = args.slide or args.batch_seconds
    windowed = counts.reduceByKeyAndWindow(add_counts, subtract_counts, args.window, slide,
                                           filterFunc=lambda kv: kv[1][1] > 0)
    state = windowed.updateStateByKey(functools.partial(track_alert, args.threshold))
    alerts = state.filter(lambda kv: kv[1][3]).map(functools.partial(alert_line, args.threshold, args.window))
    alerts.foreachRDD(print_alerts)
    alerts.saveAsTextFiles(posixpath.join(args.output, "alerts"))
    status_counts = [counts.count().map(lambda n: ("lines", n)),
                     windowed.count().map(lambda n: ("services", n)),
                     state.filter(lambda kv: kv[1][0]).count().map(lambda n: ("alerting", n))]
    if slide != args.batch_seconds:  # one status line per window slide
        status_counts[0] = counts.window(slide, slide).count().map(lambda n: ("lines", n))
    ssc.union(*status_counts).foreachRDD(status)
    return ssc


# -- sample data -------------------------------------------------------------------------------------------
SERVICES = {"payments": 0.02, "search": 0.05, "checkout": 0.01, "auth": 0.03}
MESSAGES = {"INFO": ["request served", "cache hit", "user signed in"], "WARN": ["slow response", "retrying"],
            "ERROR": ["timeout calling upstream", "card declined by bank", "connection reset"]}


def generate(root: str, files: int, lines_per_file: int, seed: int) -> None:
    """Write ``root/pending/log-NNNN.txt`` (an error burst of ``payments`` in the middle third) and an empty
    ``root/logs/`` (the job's input directory)."""
    rng = random.Random(seed)
    fs, base = fsspec.core.url_to_fs(root)
    fs.makedirs(posixpath.join(base, "logs"), exist_ok=True)
    fs.makedirs(posixpath.join(base, "pending"), exist_ok=True)
    second = 0
    for i in range(files):
        burst = files // 3 <= i < 2 * files // 3
        out = []
        for _ in range(lines_per_file):
            service = rng.choice(sorted(SERVICES))
            rate = 0.5 if burst and service == "payments" else SERVICES[service]
            level = "ERROR" if rng.random() < rate else rng.choice(["INFO", "INFO", "INFO", "WARN"])
            second += rng.randint(0, 2)
            out.append(f"2026-11-30T{8 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z "
                       f"{service} {level} {rng.choice(MESSAGES[level])}\n")
        fs.pipe_file(posixpath.join(base, "pending", f"log-{i:04d}.txt"), "".join(out).encode())
    print(f"wrote {files} log files to {base}/pending/ (payments fails half its requests in files "
          f"{files // 3}..{2 * files // 3 - 1}) and an empty input directory {base}/logs/")


# -- the command line --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="log_monitor.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Each service's error rate over a sliding window of log lines (reduceByKeyAndWindow with "
                    "an inverse function), with an alert line when it crosses a threshold and a resolved line "
                    "when it falls back. Alerts print and are saved per batch, exactly once. Restart it with "
                    "the same command after a crash: it resumes from its checkpoint. Locations are paths or "
                    "fsspec URLs (file://, s3://, ...).",
        epilog="example:\n  %(prog)s --generate /tmp/lm\n"
               "  %(prog)s --input /tmp/lm/logs --output /tmp/lm/out --checkpoint /tmp/lm/checkpoint "
               "--batch-seconds 1 --window 10\n"
               "  for f in /tmp/lm/pending/*; do mv \"$f\" /tmp/lm/logs/; sleep 1; done")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="URL", help="directory the log files are moved into (lines: TIME "
                        "SERVICE LEVEL message); files there before the first start are ignored")
    source.add_argument("--socket", metavar="HOST:PORT", help="read log lines from a TCP server instead "
                        "(write-ahead logged in the checkpoint, so a restart loses none)")
    p.add_argument("--output", metavar="URL", help="output directory: alerts-<batch ms>/ per batch")
    p.add_argument("--checkpoint", metavar="URL", help="checkpoint directory (private to this job); a restart "
                   "with the same directory resumes the job")
    p.add_argument("--batch-seconds", type=float, default=5.0, metavar="S", help="batch interval (default 5)")
    p.add_argument("--window", type=float, default=60.0, metavar="S",
                   help="the window the error rate is computed over (default 60); a multiple of the slide")
    p.add_argument("--slide", type=float, default=None, metavar="S",
                   help="how often the window moves (default: every batch); a multiple of --batch-seconds")
    p.add_argument("--threshold", type=float, default=0.25, metavar="RATE",
                   help="alert when a service's error rate rises above this (default 0.25)")
    p.add_argument("--master", default="local[2]", help="executors: local[N] processes or threads[N] "
                   "(default local[2]); a restart takes the master from the checkpoint")
    p.add_argument("--generate", metavar="DIR", help="write sample log files to DIR/pending/ (and an empty "
                   "input directory DIR/logs/) and exit")
    p.add_argument("--files", type=int, default=30, metavar="N", help="with --generate: files (default 30)")
    p.add_argument("--lines", type=int, default=200, metavar="N",
                   help="with --generate: lines per file (default 200)")
    p.add_argument("--seed", type=int, default=1, help="with --generate: random seed (default 1)")
    args = p.parse_args(argv)
    if not args.generate:
        missing = [f"--{name}" for name in ("output", "checkpoint") if not getattr(args, name)]
        if not (args.input or args.socket):
            missing.insert(0, "--input or --socket")
        if missing:
            p.error(f"the following arguments are required (or --generate DIR): {', '.join(missing)}")
        if args.socket and not args.socket.rpartition(":")[2].isdigit():
            p.error(f"--socket: expected HOST:PORT, got {args.socket!r}")
    return args


def run(ssc: StreamingContext) -> int:
    """Start the context and run until SIGTERM or Ctrl-C (a graceful stop); 1 if a batch failed."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ssc.start()
    try:
        while not stop.is_set():
            ssc.awaitTerminationOrTimeout(0.2)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - a failed batch: say which and exit non-zero
        print(f"error: {exc}", file=sys.stderr)
        ssc.stop(stopSparkContext=True)
        return 1
    ssc.stop(stopSparkContext=True, stopGraceFully=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate:
        generate(args.generate, args.files, args.lines, args.seed)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ssc = StreamingContext.getOrCreate(args.checkpoint, functools.partial(setup, args))
    return run(ssc)


if __name__ == "__main__":
    sys.exit(main())
