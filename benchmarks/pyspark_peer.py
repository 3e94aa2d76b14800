"""The PySpark side of the benchmarks: run as a subprocess in PySpark's own venv, print one JSON object.

    $DSTREAM_PYSPARK_PYTHON benchmarks/pyspark_peer.py wordcount --batches 10 --lines 200000
    $DSTREAM_PYSPARK_PYTHON benchmarks/pyspark_peer.py overhead --job light --batches 1000

Never imported by the project (it imports pyspark); it shares only ``workload.py`` (numpy) with it, so
both sides count the same words. ``wordcount`` is part 2's row-API job on ``local[2]``: a queueStream of
cached 2-partition RDDs, timed from ``ssc.start()`` to the last batch's result collected in
``foreachRDD``. ``overhead`` is part 3: batches on the system clock, read from PySpark's
StreamingListener (``processingEndTime - batchTime`` and ``totalDelay`` per batch).
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workload  # noqa: E402


def make_context(master: str):
    from pyspark import SparkConf, SparkContext
    conf = (SparkConf().setMaster(master).setAppName("dstream-benchmark-peer")
            .set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.driver.memory", "4g")
            .set("spark.python.worker.reuse", "true"))
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    return sc


def wordcount(args: argparse.Namespace) -> dict:
    """Part 2: flatMap(split) -> map((w, 1)) -> reduceByKey(add) over cached 2-partition RDDs."""
    from pyspark.streaming import StreamingContext
    sc = make_context(args.master)
    try:
        rdds = []
        for i in range(args.batches):
            rdd = sc.parallelize(workload.batch_lines(workload.batch_seed(i), args.lines), 2).cache()
            rdd.count()
            rdds.append(rdd)
        # Warm-up (starts the Python workers, as the dstream side warms its executors): one small job.
        sc.parallelize(["a b", "b c"], 2).flatMap(lambda l: l.split(" ")).map(lambda w: (w, 1)) \
            .reduceByKey(operator.add).collect()
        ssc = StreamingContext(sc, args.interval)
        done = threading.Event()
        results: list[tuple[float, list]] = []

        def output(rdd) -> None:
            counts = rdd.collect()
            if len(results) < args.batches:
                results.append((time.perf_counter(), counts))
                if len(results) == args.batches:
                    done.set()

        (ssc.queueStream(rdds, oneAtATime=True)
         .flatMap(lambda line: line.split(" ")).map(lambda w: (w, 1)).reduceByKey(operator.add)
         .foreachRDD(output))
        start = time.perf_counter()
        ssc.start()
        finished = done.wait(args.timeout)
        elapsed = time.perf_counter() - start
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
        if not finished:
            return {"ok": False, "error": f"timed out after {args.timeout} s with {len(results)} batches done"}
        last = dict(results[-1][1])
        check = [len(last), sum(last.values()), last.get("w0", 0)]
        return {"ok": True, "elapsed_s": elapsed, "lines": args.batches * args.lines,
                "lines_per_s": args.batches * args.lines / elapsed,
                "batch_done_s": [round(t - start, 4) for t, _ in results],
                "check": check, "expected": list(workload.expected_counts(workload.batch_seed(args.batches - 1),
                                                                          args.lines))}
    finally:
        sc.stop()


def overhead(args: argparse.Namespace) -> dict:
    """Part 3: per-batch delays of an empty or light job, from PySpark's StreamingListener."""
    from pyspark.streaming import StreamingContext
    from pyspark.streaming.listener import StreamingListener
    sc = make_context(args.master)
    try:
        infos: list[tuple[int, int, int, int, int]] = []
        done = threading.Event()

        class Collector(StreamingListener):
            def onBatchCompleted(self, batchCompleted) -> None:  # noqa: N802 - PySpark's name
                info = batchCompleted.batchInfo()
                infos.append((info.batchTime().milliseconds(), info.submissionTime(),
                              info.processingEndTime(), info.totalDelay(), info.processingDelay()))
                if len(infos) >= args.batches:
                    done.set()

        ssc = StreamingContext(sc, args.interval)
        ssc.addStreamingListener(Collector())
        if args.job == "empty":
            stream = ssc.queueStream([], default=sc.emptyRDD())
        else:
            tiny = sc.parallelize(list(range(100)), 2).cache()
            tiny.count()
            stream = ssc.queueStream([], default=tiny).map(lambda x: (x % 10, 1)).reduceByKey(operator.add)
        sink: list[int] = []
        stream.foreachRDD(lambda rdd: sink.append(len(rdd.collect())))
        # Warm-up outside the measured batches: start the Python workers.
        sc.parallelize([1, 2], 2).map(lambda x: (x, 1)).reduceByKey(operator.add).collect()
        start = time.perf_counter()
        ssc.start()
        finished = done.wait(args.timeout)
        wall = time.perf_counter() - start
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
        rows = sorted(infos)[: args.batches]
        return {"ok": True, "finished": finished, "batches": len(rows), "wall_s": wall,
                "end_minus_batch_ms": [end - bt for bt, _, end, _, _ in rows],
                "total_delay_ms": [td for _, _, _, td, _ in rows],
                "processing_ms": [pd for _, _, _, _, pd in rows]}
    finally:
        sc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["wordcount", "overhead"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--interval", type=float, default=0.02, help="batch interval in seconds")
    parser.add_argument("--job", choices=["empty", "light"], default="light")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    try:
        result = wordcount(args) if args.mode == "wordcount" else overhead(args)
    except Exception as exc:  # noqa: BLE001 - reported to the benchmark as JSON, not a traceback
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    import pyspark
    result["pyspark_version"] = pyspark.__version__
    print("PEER-JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
