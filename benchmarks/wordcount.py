"""Parts 1, 2 and 5: word count over micro-batches (columnar and row API), raw pyarrow, PySpark, growth.

Every stream run: the batches are RDDs of 2 partitions, cached (and counted) before timing; a
queueStream feeds them one a batch on the system clock with a short interval (20 ms by default), and the
time runs from ``ssc.start()`` to the last batch's result collected in ``foreachRDD``.

Forms of the job (``FORMS``):

- ``columnar``: ``lines.mapInArrow(split_into_key_value_batches).reduceByKey(operator.add)``
- ``columnar/transform``: the same with ``transform(lambda rdd: rdd.reduceByKey(operator.add))``;
  identical work, but no DStream operator closure holding ``self`` (see the report: the spec form makes
  ``StreamingContext.start`` pickle the queue's RDDs into Python lists)
- ``row`` and ``row/transform``: ``flatMap(split).map((w, 1)).reduceByKey(operator.add)``, likewise
"""
from __future__ import annotations

import operator
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.acero  # noqa: F401 - imported up front, so no timed run pays for it
import pyarrow.compute as pc

import workload
from common import Table, log, pyspark_available, run_peer, verdict

# -- the workload ----------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def batch_table(i: int, lines: int) -> pa.Table:
    """Batch ``i`` as a one-column table of lines (cached: parts 1, 2 and 5 share the same batches)."""
    return pa.table({"value": pa.array(workload.batch_lines(workload.batch_seed(i), lines), pa.string())})


def split_into_key_value_batches(batches):
    """mapInArrow function: lines -> (word, 1) record batches, all in Arrow kernels."""
    for batch in batches:
        words = pc.list_flatten(pc.split_pattern(batch.column(0), " "))
        ones = pa.array(np.ones(len(words), dtype=np.int64))
        yield pa.RecordBatch.from_arrays([words, ones], names=["key", "value"])


def _split_line(line: str) -> list[str]:
    return line.split(" ")


def _pair(word: str) -> tuple[str, int]:
    return (word, 1)


def _reduce_add(rdd):
    return rdd.reduceByKey(operator.add)


def build(lines, form: str):
    """The job of ``form`` on the DStream ``lines``."""
    if form == "columnar":
        return lines.mapInArrow(split_into_key_value_batches).reduceByKey(operator.add)
    if form == "columnar/transform":
        return lines.mapInArrow(split_into_key_value_batches).transform(_reduce_add)
    if form == "row":
        return lines.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1)).reduceByKey(operator.add)
    if form == "row/transform":
        return lines.flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1)).transform(_reduce_add)
    raise ValueError(f"unknown form {form!r}")


FORMS = ("columnar", "columnar/transform", "row", "row/transform")


def check_of_table(table: pa.Table) -> list[int]:
    """(distinct words, total count, count of w0) of a columnar result."""
    w0 = table.filter(pc.equal(table.column("key"), "w0")).column("value")
    return [table.num_rows, int(pc.sum(table.column("value")).as_py() or 0),
            int(pc.sum(w0).as_py() or 0)]


def check_of_rows(rows: list) -> list[int]:
    counts = dict(rows)
    return [len(counts), sum(counts.values()), counts.get("w0", 0)]


# -- raw pyarrow -----------------------------------------------------------------------------------------


def _count_half(table: pa.Table) -> pa.Table:
    words = pc.list_flatten(pc.split_pattern(table.column(0), " "))
    kv = pa.table({"key": words, "value": pa.array(np.ones(len(words), dtype=np.int64))})
    return kv.group_by("key", use_threads=False).aggregate([("value", "sum")])


def raw_pyarrow(tables: list[pa.Table], pool: ThreadPoolExecutor, slices: int = 2) -> dict:
    """The same word count with no engine: the pool's threads on ``slices`` even slices of each batch (two
    halves by default), then a merge."""
    start = time.perf_counter()
    merged = None
    for table in tables:
        bounds = [table.num_rows * k // slices for k in range(slices + 1)]
        pieces = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]
        parts = list(pool.map(_count_half, pieces))
        merged = (pa.concat_tables(parts).group_by("key", use_threads=False)
                  .aggregate([("value_sum", "sum")]).rename_columns(["key", "value"]))
    elapsed = time.perf_counter() - start
    lines = sum(t.num_rows for t in tables)
    return {"elapsed_s": elapsed, "lines_per_s": lines / elapsed, "check": check_of_table(merged)}


# -- the engine ------------------------------------------------------------------------------------------


def cached_inputs(ctx, tables: list[pa.Table], partitions: int = 2) -> list:
    rdds = []
    for table in tables:
        rdd = ctx.parallelize(table, partitions).cache()
        rdd.count()
        rdds.append(rdd)
    return rdds


def warm_up(ctx) -> None:
    """One small job of each form in batch mode: workers import pyarrow.acero etc. before any timing."""
    rdd = ctx.parallelize(pa.table({"value": pa.array(["a b", "b c", "c d", "d a"])}), 2)
    rdd.mapInArrow(split_into_key_value_batches).reduceByKey(operator.add).toArrow()
    rdd.flatMap(_split_line).map(_pair).reduceByKey(operator.add).collect()


def engine_stream(ctx, tables: list[pa.Table], form: str, interval: float = 0.02, timeout: float = 900.0,
                  on_start: Callable[[], None] | None = None, on_done: Callable[[], None] | None = None,
                  partitions: int = 2) -> dict:
    """Time one stream run of ``form`` over ``tables`` (each batch an RDD of ``partitions`` partitions) from
    ``ssc.start()`` to the last batch's result.

    ``on_start`` / ``on_done`` run just before ``ssc.start()`` and after the last result (hotspots.py
    samples between them)."""
    from dstream import StreamingContext
    rdds = cached_inputs(ctx, tables, partitions)
    n = len(rdds)
    columnar = form.startswith("columnar")
    results: list[tuple[float, Any]] = []
    done = threading.Event()

    def output(rdd) -> None:
        result = rdd.toArrow() if columnar else rdd.collect()
        if len(results) < n:
            results.append((time.perf_counter(), result))
            if len(results) == n:
                done.set()

    ssc = StreamingContext(ctx, interval)
    build(ssc.queueStream(rdds), form).foreachRDD(output)
    if on_start is not None:
        on_start()
    start = time.perf_counter()
    ssc.start()
    started = time.perf_counter() - start
    finished = done.wait(timeout)
    elapsed = time.perf_counter() - start
    if on_done is not None:
        on_done()
    ssc.stop(stopSparkContext=False)
    for rdd in rdds:
        rdd.unpersist()
    if not finished:
        raise RuntimeError(f"{form} on {ctx.master}: only {len(results)} of {n} batches within {timeout} s")
    last = results[-1][1]
    lines = sum(t.num_rows for t in tables)
    return {"elapsed_s": elapsed, "start_s": started, "lines_per_s": lines / elapsed,
            "first_batch_s": results[0][0] - start,
            "check": check_of_table(last) if columnar else check_of_rows(last)}


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["lines_per_s"])


def with_context(master: str, fn: Callable):
    from dstream import Context
    ctx = Context(master)
    try:
        warm_up(ctx)
        return fn(ctx)
    finally:
        ctx.stop()


# -- part 1 ----------------------------------------------------------------------------------------------


def part1(quick: bool) -> Table:
    batches, lines = (4, 50_000) if quick else (10, 200_000)
    repeats = 1 if quick else 2
    tables = [batch_table(i, lines) for i in range(batches)]
    expected = list(workload.expected_counts(workload.batch_seed(batches - 1), lines))
    pool = ThreadPoolExecutor(2)
    raw_pyarrow(tables[:1], pool)  # warm-up
    raw_runs: list[dict] = []
    engine: dict[tuple[str, str], list[dict]] = {}
    configs = [("local[2]", "columnar"), ("local[2]", "columnar/transform"),
               ("threads[2]", "columnar"), ("threads[2]", "columnar/transform")]
    for master in ("local[2]", "threads[2]"):
        def runs(ctx, master=master):
            for rep in range(repeats):
                raw_runs.append(raw_pyarrow(tables, pool))
                for m, form in configs:
                    if m == master:
                        log(f"part 1: {form} on {master}, run {rep + 1}/{repeats}")
                        engine.setdefault((m, form), []).append(engine_stream(ctx, tables, form))
        with_context(master, runs)
    pool.shutdown()
    raw = best(raw_runs)
    t = Table(f"Part 1: columnar word count, {batches} batches x {lines:,} lines x 10 words "
              f"(best of {repeats}; lines/s)",
              ["engine", "job form", "lines/s", "start() s", "x raw pyarrow", "target", "verdict", "check"])
    t.add("raw pyarrow (2 threads + merge)", "-", raw["lines_per_s"], None, 1.0, "-", "-",
          "ok" if raw["check"] == expected else f"WRONG {raw['check']}")
    for (master, form), rs in engine.items():
        r = best(rs)
        ratio = r["lines_per_s"] / raw["lines_per_s"]
        spec = form == "columnar"
        t.add(master, form, r["lines_per_s"], r["start_s"], f"{ratio:.2f}x", ">= 0.8x" if spec else "(diagnostic)",
              verdict(ratio >= 0.8) if spec else "-",
              "ok" if r["check"] == expected else f"WRONG {r['check']}")
    t.notes.append("job form 'columnar' = lines.mapInArrow(split_into_key_value_batches).reduceByKey(operator.add) "
                   "(the target's job, PASS/MISS on it);")
    t.notes.append("'columnar/transform' = the same work via .transform(lambda rdd: rdd.reduceByKey(add)): "
                   "the cost of the DStream operator layer itself (a regression check: the two should match).")
    t.notes.append("start() s = time inside ssc.start(), included in the timing; check = last batch's "
                   f"(distinct, total, count of w0) vs numpy's {expected}.")
    return t


# -- part 2 ----------------------------------------------------------------------------------------------


def part2(quick: bool) -> Table:
    batches, lines = (3, 50_000) if quick else (10, 200_000)
    tables = [batch_table(i, lines) for i in range(batches)]
    expected = list(workload.expected_counts(workload.batch_seed(batches - 1), lines))
    engine: dict[str, dict] = {}

    def runs(ctx):
        for form in ("row", "row/transform"):
            log(f"part 2: {form} on local[2]")
            engine[form] = engine_stream(ctx, tables, form)
    with_context("local[2]", runs)
    available, why = pyspark_available()
    peer: dict = {"ok": False, "error": why}
    if available:
        log(f"part 2: PySpark DStreams on local[2] ({batches} x {lines:,} lines)")
        peer = run_peer("wordcount", "--batches", str(batches), "--lines", str(lines), "--interval", "0.02")
    t = Table(f"Part 2: row API word count on local[2], {batches} batches x {lines:,} lines x 10 words (lines/s)",
              ["engine", "job form", "lines/s", "start() s", "x PySpark", "target", "verdict", "check"])
    if peer.get("ok"):
        t.add(f"PySpark {peer.get('pyspark_version', '')} DStreams", "row", peer["lines_per_s"], None, 1.0, "-", "-",
              "ok" if peer["check"] == expected else f"WRONG {peer['check']}")
    for form, r in engine.items():
        ratio = r["lines_per_s"] / peer["lines_per_s"] if peer.get("ok") else None
        spec = form == "row"
        t.add("dstream local[2]", form, r["lines_per_s"], r["start_s"],
              None if ratio is None else f"{ratio:.2f}x", ">= 1.5x" if spec else "(diagnostic)",
              verdict(None if ratio is None else ratio >= 1.5) if spec else "-",
              "ok" if r["check"] == expected else f"WRONG {r['check']}")
    t.notes.append("job: lines.flatMap(lambda l: l.split(' ')).map(lambda w: (w, 1)).reduceByKey(operator.add); "
                   "both sides: queueStream of cached 2-partition RDDs, 20 ms batches, one run each.")
    if not peer.get("ok"):
        t.notes.append(f"PySpark NOT MEASURED: {peer.get('error')}")
    return t


# -- part 5 ----------------------------------------------------------------------------------------------


def part5(quick: bool) -> list[Table]:
    sizes = [(10_000, 10, 0.005), (100_000, 5, 0.02), (1_000_000, 2, 0.05)] if quick else \
        [(10_000, 20, 0.005), (100_000, 10, 0.02), (1_000_000, 4, 0.05)]
    pool = ThreadPoolExecutor(2)
    by_size: dict[int, dict] = {}

    def size_runs(ctx):
        for lines, batches, interval in sizes:
            tables = [batch_table(100 + i, lines) for i in range(batches)]
            row = {"batches": batches, "interval": interval}
            raw_pyarrow(tables[:1], pool)
            row["raw"] = raw_pyarrow(tables, pool)["lines_per_s"]
            for form in ("columnar", "columnar/transform", "row"):
                log(f"part 5: {form} on local[2], {batches} x {lines:,} lines")
                row[form] = engine_stream(ctx, tables, form, interval)["lines_per_s"]
            by_size[lines] = row
            if lines >= 1_000_000:
                batch_table.cache_clear()
    with_context("local[2]", size_runs)
    pool.shutdown()
    t1 = Table("Part 5a: throughput against batch size, local[2] (lines/s)",
               ["lines/batch", "batches", "interval ms", "raw pyarrow", "columnar", "x raw", "columnar/transform",
                "x raw", "row"])
    for lines, r in by_size.items():
        t1.add(lines, r["batches"], int(r["interval"] * 1000), r["raw"], r["columnar"],
               f"{r['columnar'] / r['raw']:.2f}x", r["columnar/transform"],
               f"{r['columnar/transform'] / r['raw']:.2f}x", r["row"])

    lines, batches = (50_000, 3) if quick else (200_000, 6)
    tables = [batch_table(i, lines) for i in range(batches)]
    by_workers: dict[str, dict] = {}
    for master in ("local[1]", "local[2]"):
        def worker_runs(ctx, master=master):
            out = {}
            for form in ("columnar", "columnar/transform", "row"):
                log(f"part 5: {form} on {master}, {batches} x {lines:,} lines")
                out[form] = engine_stream(ctx, tables, form)["lines_per_s"]
            return out
        by_workers[master] = with_context(master, worker_runs)
    t2 = Table(f"Part 5b: throughput against workers, {batches} batches x {lines:,} lines (lines/s)",
               ["master", "columnar", "columnar/transform", "row"])
    for master, r in by_workers.items():
        t2.add(master, r["columnar"], r["columnar/transform"], r["row"])
    one, two = by_workers["local[1]"], by_workers["local[2]"]
    t2.add("speed-up 2 vs 1", f"{two['columnar'] / one['columnar']:.2f}x",
           f"{two['columnar/transform'] / one['columnar/transform']:.2f}x", f"{two['row'] / one['row']:.2f}x")
    t2.notes.append("2 cores on this machine; the input RDDs have 2 partitions either way, and reduceByKey uses "
                    "the default parallelism (the number of workers).")
    return [t1, t2]
