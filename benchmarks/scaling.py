"""Part 7: scaling sweep over worker counts (``run.py --workers 1,2,4,8,16``).

For each N of ``--workers``:

- 7a, word count: raw pyarrow on a ThreadPoolExecutor(N) (each batch cut into N slices, then a merge),
  dstream ``columnar`` and ``row`` on ``local[N]`` with N-partition input RDDs (``wordcount.engine_stream``),
  batches of ``--lines`` lines (500,000 by default); target columnar / raw >= 0.8 at every N.
- 7b, per-batch overhead: ``overhead.engine_batches`` light batches (100 records, a shuffle, a collect)
  every 50 ms on ``local[N]`` and ``threads[N]``: due -> done from BatchInfo's precise times, split into the
  timer's lateness (due -> submitted), due -> processing start and processing; targets median due -> done
  < 2 ms (local) / < 1 ms (threads), p99 < 10 ms.

- 7c, what idleness costs: on ``local[N]`` and ``threads[N]``, two no-op tasks (``run_tasks``) and the light
  job as a batch job, run back to back and then 50 ms apart (``idle_costs``): the difference is what waking
  sleeping threads and processes costs a batch that comes every 50 ms.

N above the machine's cores is run all the same, and flagged "oversubscribed": its figures then measure
time-sharing, not scaling.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import workload
from common import Table, log, verdict
from overhead import OVERHEAD_TARGETS, ms_cell, overhead_figures, overhead_verdict  # noqa: F401 - re-exported
from wordcount import batch_table, best, engine_stream, raw_pyarrow, with_context

RATIO_TARGET = 0.8


def default_workers(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the machine's cores (and the cores themselves when not a power of two)."""
    cores = cores or os.cpu_count() or 1
    out = [1]
    while out[-1] * 2 <= cores:
        out.append(out[-1] * 2)
    return out if out[-1] == cores else out + [cores]


def workers_label(n: int, cores: int) -> str:
    return f"{n} (oversubscribed: {cores} cores)" if n > cores else str(n)


def ratio_cell(engine: float, raw: float) -> tuple[str, str]:
    """(the ratio as '0.83x', PASS/MISS against RATIO_TARGET)."""
    ratio = engine / raw
    return f"{ratio:.2f}x", verdict(ratio >= RATIO_TARGET)


def _noop(tc) -> None:
    return None


def _pair(x: int) -> tuple[int, int]:
    return x % 10, 1


def idle_costs(master: str, rounds: int = 100, gap: float = 0.05) -> dict[str, float]:
    """Median ms of two no-op tasks and of the light job (100 cached records, a shuffle, a collect) on a
    fresh ``Context(master)``, run back to back and ``gap`` seconds apart."""
    import operator
    import statistics
    import time

    from dstream import Context
    from dstream.executors import Task

    ctx = Context(master)
    try:
        tiny = ctx.parallelize(list(range(100)), 2).cache()
        tiny.count()
        jobs = {"no-op": lambda: ctx.executor.run_tasks([Task(_noop, 0), Task(_noop, 1)]),
                "light": lambda: tiny.map(_pair).reduceByKey(operator.add).collect()}
        out = {}
        for name, job in jobs.items():
            job()
            for label, pause in (("hot", 0.0), ("idle", gap)):
                times = []
                for _ in range(rounds):
                    if pause:
                        time.sleep(pause)
                    start = time.perf_counter()
                    job()
                    times.append((time.perf_counter() - start) * 1000)
                out[f"{name} {label}"] = statistics.median(times)
        return out
    finally:
        ctx.stop()


def part7(quick: bool, workers: list[int] | None = None, lines: int | None = None) -> list[Table]:
    from overhead import engine_batches
    cores = os.cpu_count() or 1
    workers = workers or default_workers(cores)
    lines = lines or (100_000 if quick else 500_000)
    batches, repeats, light_n = (3, 1, 60) if quick else (6, 2, 300)
    tables = [batch_table(200 + i, lines) for i in range(batches)]
    expected = list(workload.expected_counts(workload.batch_seed(200 + batches - 1), lines))
    words = batches * lines * workload.WORDS_PER_LINE
    t1 = Table(f"Part 7a: scaling sweep, word count, {batches} batches x {lines:,} lines x "
               f"{workload.WORDS_PER_LINE} words (best of {repeats + 1} raw, {repeats} engine runs; words/s)",
               ["workers", "raw pyarrow", "dstream columnar", "dstream row", "columnar / raw", "target", "verdict",
                "row / raw", "check"])
    t2 = Table(f"Part 7b: scaling sweep, per-batch overhead, {light_n} light batches every 50 ms "
               "(ms, precise BatchInfo times; due = batchTime)",
               ["workers", "master", "batches", "median due->done", "p99 due->done", "max due->done",
                "median due->submitted", "median due->start", "median processing", "target", "verdict"])
    t3 = Table("Part 7c: what idleness costs, median ms of a job run back to back (hot) and 50 ms apart (idle)",
               ["workers", "master", "2 no-op tasks, hot", "idle", "light job, hot", "idle", "idle - hot (light)"])
    for n in workers:
        def runs(ctx, n=n):
            """Raw and engine runs interleaved (as in part 1), so that a noisy moment hits both sides."""
            out: dict[str, list[dict]] = {"raw": [], "columnar": [], "row": []}
            with ThreadPoolExecutor(n) as pool:
                raw_pyarrow(tables[:1], pool, n)  # warm-up
                for rep in range(repeats):
                    log(f"part 7: raw pyarrow on {n} threads, columnar and row on local[{n}], run {rep + 1}")
                    out["raw"].append(raw_pyarrow(tables, pool, n))
                    for form in ("columnar", "row"):
                        out[form].append(engine_stream(ctx, tables, form, 0.02, partitions=n))
                out["raw"].append(raw_pyarrow(tables, pool, n))  # cheap, and the noisiest
            return {k: best(v) for k, v in out.items()}
        engine = with_context(f"local[{n}]", runs)
        raw = engine["raw"]
        checks = [r["check"] == expected for r in (raw, engine["columnar"], engine["row"])]
        ratio, ok = ratio_cell(engine["columnar"]["lines_per_s"], raw["lines_per_s"])
        t1.add(workers_label(n, cores), words / raw["elapsed_s"], words / engine["columnar"]["elapsed_s"],
               words / engine["row"]["elapsed_s"], ratio, f">= {RATIO_TARGET}x", ok,
               f"{engine['row']['lines_per_s'] / raw['lines_per_s']:.2f}x",
               "ok" if all(checks) else f"WRONG (raw, columnar, row: {checks})")
        for master in (f"local[{n}]", f"threads[{n}]"):
            log(f"part 7: {light_n} light batches on {master}")
            r = engine_batches(master, "light", light_n, 0.05)
            f = overhead_figures(r)
            target, result = overhead_verdict(master, f["median"], f["p99"])
            t2.add(workers_label(n, cores), master, r["batches"] if r["finished"] else f"{r['batches']} (timed out)",
                   *(ms_cell(f[k]) for k in ("median", "p99", "max", "lateness", "to_start", "processing")),
                   target, result)
            log(f"part 7: idle costs on {master}")
            c = idle_costs(master, 40 if quick else 100)
            t3.add(workers_label(n, cores), master, *(ms_cell(c[k]) for k in ("no-op hot", "no-op idle", "light hot",
                                                                            "light idle")),
                   ms_cell(c["light idle"] - c["light hot"]))
    t1.notes.append("raw pyarrow: N threads, each batch cut into N slices counted in parallel, then one merge "
                    "(wordcount.raw_pyarrow); dstream: local[N] (N worker processes), input RDDs of N cached "
                    "partitions, reduceByKey into N partitions, 20 ms batches, timed from ssc.start() to the last "
                    "batch's result.")
    t1.notes.append(f"check = last batch's (distinct, total, count of w0) vs numpy's {expected}. "
                    f"{cores} cores here: rows marked oversubscribed time-share the cores.")
    t2.notes.append("light = 100 cached records -> map((x % 10, 1)) -> reduceByKey(add) (N reduce partitions) "
                    "-> collect. due->done = processing end - batch time; due->submitted = the timer's lateness; "
                    "due->start adds generating the jobs and queueing; processing = start -> done. Float ms "
                    "from BatchInfo.precise_* (the PySpark getters give whole ms).")
    t3.notes.append("the same work, so idle - hot is what waking the sleeping driver threads and worker "
                    "processes costs (each serial hand-off: timer, job generator, scheduler, workers, result "
                    "reader); a batch every 50 ms pays it every time.")
    return [t1, t2, t3]
