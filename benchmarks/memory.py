"""Part 4: memory of a windowed stateful job over thousands of batches (ManualClock, as fast as they run).

The job, checkpointed to a temporary directory, on ``local[2]``::

    pairs  = each batch: 2,000 (word, 1) pairs over a 500-word Zipf vocabulary, made from the batch time
    state  = pairs.updateStateByKey(running total)                         (stateful, snapshotted)
    window = pairs.reduceByKeyAndWindow(add, sub, 10 s, 1 s)               (incremental, snapshotted)
    count  = pairs.countByWindow(10 s, 1 s)
    each of the three -> foreachRDD(count / collect)

After every batch, the proportional set size (PSS) of the driver and of every live worker process is read
from /proc and summed (a page the workers share with the launcher or driver they were forked from counts
once, where their VmRSS would count it in each); the peak so far is kept. The target: the peak at the last
batch is within 10 % of the peak at the quarter mark (batch 500 of 2,000). The block store and the
checkpoint directory sizes are printed too, since blocks live in /dev/shm files (memory, but not in any
process's PSS).
"""
from __future__ import annotations

import operator
import os
import tempfile
import time

import numpy as np

from common import Table, dir_bytes, log, pss_kib, verdict

VOCAB = 500
RECORDS = 2_000


def batch_pairs(seconds: int) -> list[tuple[str, int]]:
    """The records of the batch at ``seconds`` (deterministic)."""
    weights = 1.0 / np.arange(1, VOCAB + 1)
    cdf = np.cumsum(weights) / weights.sum()
    idx = np.searchsorted(cdf, np.random.default_rng(seconds).random(RECORDS), side="right")
    return [(f"w{min(int(i), VOCAB - 1)}", 1) for i in idx]


def _update_total(new_values: list, total):
    return sum(new_values) + (total or 0)


def part4(quick: bool) -> Table:
    from dstream import Context, ManualClock, StreamingContext
    from dstream.testing import advance
    batches = 400 if quick else 2000
    mark = batches // 4
    clock = ManualClock()
    ctx = Context("local[2]")
    samples: list[tuple[int, int, int, int, int, int]] = []  # batch, driver, workers, peak KiB, seconds, blocks B
    outputs = {"state": 0, "window": 0, "count": 0}
    with tempfile.TemporaryDirectory(prefix="dstream-bench-checkpoint-") as checkpoint:
        ssc = StreamingContext(ctx, 1.0, clock=clock)
        ssc.checkpoint(checkpoint)

        def make_batch(when, rdd):
            return rdd.context.parallelize(batch_pairs(int(when.timestamp())), 2)

        pairs = ssc.queueStream([], default=[0]).transform(make_batch)
        pairs.updateStateByKey(_update_total).foreachRDD(
            lambda rdd: outputs.__setitem__("state", rdd.count()))
        pairs.reduceByKeyAndWindow(operator.add, operator.sub, 10, 1).foreachRDD(
            lambda rdd: outputs.__setitem__("window", len(rdd.collect())))
        pairs.countByWindow(10, 1).foreachRDD(lambda rdd: outputs.__setitem__("count", sum(rdd.collect())))
        ssc.start()
        peak = 0
        started = time.perf_counter()
        pids = ctx.executor.worker_pids
        store_dir = getattr(ctx.executor.store, "directory", None)
        try:
            for b in range(1, batches + 1):
                advance(ssc, 1, timeout=120)
                driver = pss_kib(os.getpid())
                workers = sum(pss_kib(p) for p in pids())
                peak = max(peak, driver + workers)
                if b % max(1, batches // 20) == 0 or b == mark:
                    samples.append((b, driver, workers, peak, int(time.perf_counter() - started),
                                    dir_bytes(store_dir) if store_dir else 0))
                    log(f"part 4: batch {b}/{batches}: PSS driver {driver / 1024:.0f} MiB, workers "
                        f"{workers / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
            checkpoint_bytes = dir_bytes(checkpoint)
        finally:
            ssc.stop(stopSparkContext=True)
    elapsed = time.perf_counter() - started
    at_mark = next(s[3] for s in samples if s[0] == mark)
    final = samples[-1][3]
    growth = final / at_mark - 1
    t = Table(f"Part 4: memory over {batches:,} batches of a windowed stateful job, local[2], ManualClock "
              f"(PSS in MiB, driver + 2 workers)",
              ["batch", "driver PSS", "workers PSS", "peak so far", "block store", "elapsed s"])
    for b, driver, workers, pk, secs, blocks in samples:
        if b == mark or b == batches or b % max(1, batches // 10) == 0:
            t.add(b, driver / 1024, workers / 1024, pk / 1024, blocks / 2**20, secs)
    t.add(f"peak {batches} vs {mark}", None, None, f"{growth * 100:+.1f} %", None, None)
    t.notes.append(f"target: peak PSS at batch {batches:,} within 10 % of the peak at batch {mark:,}: "
                   f"{verdict(growth <= 0.10)} ({at_mark / 1024:.0f} -> {final / 1024:.0f} MiB)")
    t.notes.append(f"{batches / elapsed:.1f} batches/s; block store = Arrow files in /dev/shm (not in PSS); "
                   f"checkpoint directory at the end {checkpoint_bytes / 2**20:.1f} MiB; last outputs: "
                   f"{outputs['state']} keys in state, {outputs['window']} keys in window, "
                   f"{outputs['count']} records in window")
    return t
