"""Side-by-side benchmarks: one table per part, with ratios and PASS/MISS against each target.

    python benchmarks/run.py              # the full run (about 20-25 minutes on 2 cores)
    python benchmarks/run.py --quick      # a smaller smoke run (a few minutes)
    python benchmarks/run.py --parts 1,3  # only some parts

1. columnar word count (mapInArrow + reduceByKey) vs raw pyarrow, local[2] and threads[2]   (>= 0.8x)
2. row-API word count vs PySpark DStreams on local[2]                                       (>= 1.5x)
3. per-batch overhead: empty/tiny batch median < 5 ms; 1,000 x 50 ms light batches p99 < 100 ms
4. memory: windowed stateful job over 2,000 batches, peak PSS (driver + workers) within 10 % from batch 500 to 2,000
5. growth: throughput against batch size and against workers
6. the Dask backend (a 2-worker LocalCluster) next to local[2]: word count throughput and per-batch overhead
7. scaling sweep (not in the default run): ``--workers 1,2,4,8,16`` runs it alone (``--lines`` per batch,
   500,000 by default): raw pyarrow on N threads, columnar and row word count on local[N], columnar / raw
   >= 0.8x at every N; per-batch overhead on local[N] and threads[N]

Tables go to stdout, progress to stderr. The PySpark side runs as a subprocess in its own venv
(``pyspark_peer.py``); without PySpark the comparison says so and everything else still runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from common import Table, pyspark_available  # noqa: E402


def run_part(number: int, quick: bool, workers: list[int] | None = None, lines: int | None = None) -> list[Table]:
    if number in (1, 2, 5):
        import wordcount
        result = {1: wordcount.part1, 2: wordcount.part2, 5: wordcount.part5}[number](quick)
    elif number == 3:
        import overhead
        result = overhead.part3(quick)
    elif number == 4:
        import memory
        result = memory.part4(quick)
    elif number == 6:
        import dask_backend
        result = dask_backend.part6(quick)
    elif number == 7:
        import scaling
        result = scaling.part7(quick, workers, lines)
    else:
        raise ValueError(f"there is no part {number}: parts are 1-7")
    return result if isinstance(result, list) else [result]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dstream side-by-side benchmarks")
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run")
    parser.add_argument("--parts", default=None,
                        help="comma-separated part numbers (default: 1-6; 7, the scaling sweep, with --workers)")
    parser.add_argument("--workers", default=None,
                        help="part 7's worker counts, e.g. 1,2,4,8,16 (given alone: run part 7 only; default for "
                             "--parts 7: 1, 2, 4, ... up to the cores)")
    parser.add_argument("--lines", type=int, default=None,
                        help="part 7's lines per batch (default 500,000; 100,000 with --quick)")
    parser.add_argument("--inline", action="store_true",
                        help="run the parts in this process (default: each part in a fresh process, so that "
                             "no part's memory or executors carry over into the next)")
    args = parser.parse_args(argv)
    if args.parts is None:
        args.parts = "7" if args.workers else "1,2,3,4,5,6"
    try:
        parts = [int(p) for p in args.parts.split(",") if p.strip()]
        workers = [int(w) for w in args.workers.split(",") if w.strip()] if args.workers else None
    except ValueError:
        parser.error(f"--parts and --workers must be numbers like 1,3,5, got {args.parts!r} / {args.workers!r}")
    if any(p not in range(1, 8) for p in parts):
        parser.error(f"--parts: there are parts 1-7, got {args.parts!r}")
    if workers is not None and any(w < 1 for w in workers):
        parser.error(f"--workers: worker counts are 1 or more, got {args.workers!r}")
    if not args.inline:
        import pyarrow
        import dstream
        available, why = pyspark_available()
        print(f"dstream {getattr(dstream, '__version__', '?')}, pyarrow {pyarrow.__version__}, "
              f"Python {platform.python_version()}, {os.cpu_count()} cores; "
              f"PySpark: {why if available else 'ABSENT - ' + why}; mode: {'quick' if args.quick else 'full'}",
              flush=True)
    failed = 0
    for number in parts:
        started = time.perf_counter()
        load_before = _load()
        if not args.inline:
            cmd = [sys.executable, os.path.abspath(__file__), "--inline", "--parts", str(number)]
            cmd += (["--workers", args.workers] if args.workers else []) + (
                ["--lines", str(args.lines)] if args.lines else [])
            code = subprocess.run(cmd + (["--quick"] if args.quick else [])).returncode
            if code != 0:
                failed += 1
                print(f"\n== Part {number}: its process exited with code {code} ==", flush=True)
        else:
            try:
                tables = run_part(number, args.quick, workers, args.lines)
            except Exception:  # noqa: BLE001 - one broken part must not hide the others
                failed += 1
                print(f"\n== Part {number}: FAILED ==\n{traceback.format_exc()}", flush=True)
                continue
            for table in tables:
                print("\n" + table.render(), flush=True)
        if not args.inline:
            print(f"  (part {number}: {time.perf_counter() - started:.0f} s; 1-minute load average "
                  f"{load_before} before, {_load()} after, on {os.cpu_count()} cores: anything above what "
                  f"the benchmark itself runs is other work on the machine)", flush=True)
    return 1 if failed else 0


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
