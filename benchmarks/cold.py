"""Cold single run: what a user's first columnar word count sees, start-up included, against raw pyarrow.

    python benchmarks/cold.py                       # 3 runs of each side, 10 batches x 200,000 lines, local[2]
    python benchmarks/cold.py --repeat 5 --master 'local[4]' --lines 500000

Each run of each side is a FRESH Python process (``--inner dstream`` / ``--inner raw``); the two sides
alternate. Both build their batches (``wordcount.batch_table``, untimed) after importing pyarrow, numpy and
``wordcount``; neither timing includes the interpreter's start or those imports.

- dstream: ``import dstream`` (timed, shown apart, not in the ratio), then the clock runs from just before
  ``Context(master)`` (which starts the worker processes) through ``parallelize`` of each batch (2
  partitions, not cached), ``StreamingContext``, ``queueStream`` of those RDDs,
  ``mapInArrow(split).reduceByKey(add)`` and ``ssc.start()`` (20 ms batches) to the last batch's
  ``toArrow()`` result in ``foreachRDD``.
- raw pyarrow: only its computation, as in part 1: from just before ``ThreadPoolExecutor(threads)`` to the
  last batch merged, with no warm-up run (its first kernels run cold too).

Target: dstream lines/s >= 0.8x raw's. Also printed: the first batch of the fresh context, from
``ssc.start()`` to its result (target < 0.3 s), and from ``Context(...)`` to it.

The dstream side runs twice per round, in the two ways a driver starts its workers by default
(``dstream.executor.startMethod``): with ``PYTHONHASHSEED=0`` the driver forks them ("fork"); with the seed
unset (random) a fresh launcher interpreter imports pyarrow, pandas and dstream once and forks them
("forkserver"). ``--methods`` picks which.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import workload  # noqa: E402
from common import Table, verdict  # noqa: E402
from wordcount import batch_table, build, check_of_table, raw_pyarrow  # noqa: E402

TAG = "COLD-JSON "


def inner_dstream(a: argparse.Namespace) -> dict:
    t = time.perf_counter()
    from dstream import Context, StreamingContext
    import_s = time.perf_counter() - t
    tables = [batch_table(i, a.lines) for i in range(a.batches)]
    results: list[tuple[float, object]] = []
    done = threading.Event()

    def output(rdd) -> None:
        table = rdd.toArrow()
        if len(results) < len(tables):  # the queue's empty batches after the last one do not count
            results.append((time.perf_counter(), table))
            if len(results) == len(tables):
                done.set()

    t0 = time.perf_counter()
    ctx = Context(a.master)
    t_ctx = time.perf_counter()
    ssc = StreamingContext(ctx, a.interval)
    build(ssc.queueStream([ctx.parallelize(tb, 2) for tb in tables]), "columnar").foreachRDD(output)
    t_start = time.perf_counter()
    ssc.start()
    t_started = time.perf_counter()
    finished = done.wait(600)
    end = time.perf_counter()
    ssc.stop()
    if not finished:
        raise RuntimeError(f"only {len(results)} of {len(tables)} batches within 600 s")
    return {"method": getattr(ctx.executor, "start_method", "-"), "import_s": import_s, "context_s": t_ctx - t0, "setup_s": t_start - t_ctx,
            "start_call_s": t_started - t_start, "first_batch_s": results[0][0] - t_start,
            "context_to_first_s": results[0][0] - t0, "elapsed_s": end - t0, "from_start_s": end - t_start,
            "lines_per_s": a.batches * a.lines / (end - t0), "check": check_of_table(results[-1][1])}


def inner_raw(a: argparse.Namespace) -> dict:
    from concurrent.futures import ThreadPoolExecutor
    tables = [batch_table(i, a.lines) for i in range(a.batches)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.threads) as pool:
        r = raw_pyarrow(tables, pool, a.threads)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "lines_per_s": a.batches * a.lines / elapsed, "check": r["check"]}


#: how each start method's driver is run: its PYTHONHASHSEED (None: unset, a random seed)
HASH_SEED = {"fork": "0", "forkserver": None}


def fresh(side: str, a: argparse.Namespace, method: str = "fork") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--inner", side, "--master", a.master, "--threads",
           str(a.threads), "--batches", str(a.batches), "--lines", str(a.lines), "--interval", str(a.interval)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if HASH_SEED[method] is not None:
        env["PYTHONHASHSEED"] = HASH_SEED[method]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    raise RuntimeError(f"{side} run exited {proc.returncode}: {proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--threads", type=int, default=2, help="raw pyarrow's threads (default 2)")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--methods", nargs="+", choices=sorted(HASH_SEED), default=["fork", "forkserver"],
                   help="the drivers' ways of starting workers to run (default both)")
    p.add_argument("--inner", choices=["dstream", "raw"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.inner:
        print(TAG + json.dumps(inner_dstream(a) if a.inner == "dstream" else inner_raw(a)), flush=True)
        return 0
    expected = list(workload.expected_counts(workload.batch_seed(a.batches - 1), a.lines))
    load = [os.getloadavg()[0]]
    t = Table(f"Cold single run: {a.batches} batches x {a.lines:,} lines, dstream columnar on {a.master} vs raw "
              f"pyarrow on {a.threads} threads, each run a fresh process (s)",
              ["run", "workers started by", "import dstream", "Context()", "parallelize + graph", "start() call",
               "start -> 1st batch", "Context -> 1st batch", "dstream total", "raw pyarrow", "dstream / raw",
               "target", "verdict", "1st batch < 0.3 s", "check"])
    ratios: dict[str, list[float]] = {m: [] for m in a.methods}
    firsts: dict[str, list[float]] = {m: [] for m in a.methods}
    for i in range(a.repeat):
        sides = [*(("dstream", m) for m in a.methods), ("raw", "fork")]
        if i % 2:
            sides.reverse()
        r = {(side, method): fresh(side, a, method) for side, method in sides}
        raw = r["raw", "fork"]
        for method in a.methods:
            d = r["dstream", method]
            ratio = d["lines_per_s"] / raw["lines_per_s"]
            ratios[method].append(ratio)
            firsts[method].append(d["first_batch_s"])
            ok = d["check"] == expected and raw["check"] == expected
            t.add(i + 1, d["method"], d["import_s"], d["context_s"], d["setup_s"], d["start_call_s"],
                  d["first_batch_s"], d["context_to_first_s"], d["elapsed_s"], raw["elapsed_s"], f"{ratio:.2f}x",
                  ">= 0.8x", verdict(ratio >= 0.8), verdict(d["first_batch_s"] < 0.3),
                  "ok" if ok else f"WRONG {d['check']} / {raw['check']}")
        load.append(os.getloadavg()[0])
    for method in a.methods:
        t.add("median", method, None, None, None, None, statistics.median(firsts[method]), None, None, None,
              f"{statistics.median(ratios[method]):.2f}x", ">= 0.8x",
              verdict(statistics.median(ratios[method]) >= 0.8), verdict(statistics.median(firsts[method]) < 0.3),
              "-")
    t.notes.append("workers started by: fork = the driver (PYTHONHASHSEED=0) forks the launcher; forkserver = "
                   "a fresh launcher interpreter imports, then forks (PYTHONHASHSEED unset).")
    t.notes.append("dstream total = Context() + parallelize + graph + start() + batches, to the last batch's "
                   "result; import dstream is not in it. raw pyarrow = its computation only (pool start to "
                   "last merge, no warm-up).")
    t.notes.append(f"check = last batch's (distinct, total, count of w0) vs numpy's {expected}; "
                   f"1-minute load average {', '.join(f'{x:.2f}' for x in load)} (start, after each run) "
                   f"on {os.cpu_count()} cores.")
    print(t.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
