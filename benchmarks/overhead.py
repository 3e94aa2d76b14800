"""Part 3: per-batch overhead on the system clock, read from a StreamingListener's BatchInfo.

- empty batches: ``queueStream([], default=emptyRDD).foreachRDD(lambda rdd: rdd.collect())``
- tiny / light batches: a cached 100-record, 2-partition RDD as the queue's default, then
  ``map(lambda x: (x % 10, 1)).reduceByKey(operator.add).foreachRDD(lambda rdd: rdd.collect())``
  (two stages of two tasks, a shuffle, a collect: the smallest job that goes through every layer)

Per batch: ``processingEndTime - batchTime`` (from due time to output done) and ``totalDelay``
(``processingEndTime - submissionTime``, Spark's definition). PySpark's figures come from its own
StreamingListener in ``pyspark_peer.py``.
"""
from __future__ import annotations

import operator
import threading
import time
from typing import Callable

from common import Table, log, median, percentile, pyspark_available, run_peer, verdict


def _to_pair(x: int) -> tuple[int, int]:
    return (x % 10, 1)


def engine_batches(master: str, job: str, batches: int, interval: float = 0.05, timeout: float = 600.0,
                   on_start: Callable[[], None] | None = None, on_done: Callable[[], None] | None = None) -> dict:
    """Run ``batches`` batches of ``job`` ('empty' or 'light') and return their per-batch delays (ms).

    ``on_start`` / ``on_done`` run just before ``ssc.start()`` and once the batches are done (hotspots.py
    samples between them)."""
    from dstream import Context, StreamingContext, StreamingListener
    infos: list = []
    done = threading.Event()

    class Collector(StreamingListener):
        def onBatchCompleted(self, batchCompleted) -> None:  # noqa: N802 - PySpark's name
            infos.append(batchCompleted.batchInfo())
            if len(infos) >= batches:
                done.set()

    ctx = Context(master)
    try:
        ctx.parallelize(list(range(4)), 2).map(_to_pair).reduceByKey(operator.add).collect()  # warm-up
        ssc = StreamingContext(ctx, interval)
        ssc.addStreamingListener(Collector())
        if job == "empty":
            stream = ssc.queueStream([], default=ctx.emptyRDD())
        else:
            tiny = ctx.parallelize(list(range(100)), 2).cache()
            tiny.count()
            stream = ssc.queueStream([], default=tiny).map(lambda x: (x % 10, 1))
            stream = stream.reduceByKey(operator.add) if job == "light" else stream.transform(_reduce_add)
        sink: list[int] = []
        stream.foreachRDD(lambda rdd: sink.append(len(rdd.collect())))
        if on_start is not None:
            on_start()
        start = time.perf_counter()
        ssc.start()
        finished = done.wait(timeout)
        wall = time.perf_counter() - start
        if on_done is not None:
            on_done()
        ssc.stop(stopSparkContext=False)
    finally:
        ctx.stop()
    rows = sorted(infos, key=lambda i: i.batch_time)[:batches]
    return {"finished": finished, "batches": len(rows), "wall_s": wall,
            "end_minus_batch_ms": [i.processing_end_time - i.batch_time for i in rows],
            "total_delay_ms": [i.totalDelay() for i in rows],
            "processing_ms": [i.processingDelay() for i in rows]}


def _reduce_add(rdd):
    return rdd.reduceByKey(operator.add)


def _summary(r: dict) -> tuple[float, float, float, float, float]:
    e, d, p = r["end_minus_batch_ms"], r["total_delay_ms"], r.get("processing_ms", [])
    return median(e), percentile(e, 99), max(e) if e else float("nan"), percentile(d, 99), median(p)


def part3(quick: bool) -> Table:
    empty_n, light_n = (40, 100) if quick else (200, 1000)
    peer_empty_n, peer_light_n = (20, 20) if quick else (100, 100)
    interval = 0.05
    results: list[tuple[str, str, dict]] = []
    for master in ("local[2]", "threads[2]"):
        log(f"part 3: {empty_n} empty batches on {master}")
        results.append((f"dstream {master}", "empty", engine_batches(master, "empty", empty_n, interval)))
        log(f"part 3: {light_n} light batches on {master}")
        results.append((f"dstream {master}", "light", engine_batches(master, "light", light_n, interval)))
    available, why = pyspark_available()
    if available:
        for job, n in (("empty", peer_empty_n), ("light", peer_light_n)):
            log(f"part 3: {n} {job} batches in PySpark")
            peer = run_peer("overhead", "--job", job, "--batches", str(n), "--interval", str(interval),
                            timeout=900)
            if peer.get("ok"):
                results.append((f"PySpark {peer.get('pyspark_version', '')} local[2]", job, peer))
            else:
                results.append((f"PySpark local[2]", job, {"error": peer.get("error")}))
    t = Table(f"Part 3: per-batch overhead, SystemClock, {int(interval * 1000)} ms batches "
              "(ms; end-batch = processingEndTime - batchTime)",
              ["engine", "job", "batches", "median end-batch", "p99 end-batch", "max end-batch",
               "p99 totalDelay", "median processing", "target", "verdict"])
    for engine, job, r in results:
        if "error" in r:
            t.add(engine, job, None, None, None, None, None, None, "-", "NOT MEASURED")
            t.notes.append(f"{engine} {job}: {r['error']}")
            continue
        med, p99, worst, p99_total, processing = _summary(r)
        is_engine = engine.startswith("dstream")
        if job == "empty":
            target, result = "median < 5", verdict(med < 5)
        else:
            target = "median < 5; p99 < 100"
            result = f"{verdict(med < 5)}; {verdict(p99 < 100)}"
        batches = r["batches"] if r.get("finished", True) else f"{r['batches']} (timed out)"
        t.add(engine, job, batches, f"{med:.1f}", f"{p99:.1f}", f"{worst:.0f}", f"{p99_total:.1f}",
              f"{processing:.1f}", target if is_engine else "-", result if is_engine else "-")
    t.notes.append("median processing = processingEndTime - processingStartTime: the batch's own cost, "
                   "whether or not the engine keeps up with the interval.")
    t.notes.append("light = 100 cached records -> map((x % 10, 1)) -> reduceByKey(add) -> collect; "
                   "empty = emptyRDD -> collect. The 'light' median is the tiny-batch figure.")
    if available:
        t.notes.append(f"PySpark ran {peer_empty_n} empty and {peer_light_n} light batches, not {light_n}: "
                       "its light batches take longer than 50 ms, so it falls further behind each batch and "
                       f"{light_n} would take minutes; its p99 grows with the number of batches run.")
    else:
        t.notes.append(f"PySpark NOT MEASURED: {why}")
    return t
