"""Where a batch's time goes: every task of every batch of a word count, on a timeline, with the gaps.

    python benchmarks/timeline.py                             # columnar, local[2], 4 batches x 200,000 lines
    python benchmarks/timeline.py --master 'local[4]' --form row --batches 3 --lines 500000

The engine is not changed: task runs come from ``ctx.scheduler.task_records`` (stage, partition, worker
pid, start, end, as the worker saw them on the shared clock); the script wraps the executor's ``submit_task`` and
``run_tasks`` on the Context's instance to see when the driver handed each task over (dispatch, payload
pickled), when its result was back, and when each stage was submitted and returned; a StreamingListener
gives each batch's due, submission, processing start and end (whole ms); the output function marks its
own start and end. Times are ms from the batch's processing start. Columns: dispatch (the driver
called submit_task), submit (ms inside it: pickling, handing over), ->start (dispatch to the task running
on its worker), start, end, dur, back at (the driver had the result), ->back (task end to that). Map tasks write shuffle buckets,
result tasks read them (in-task split not visible without the engine's help); result stages the
scheduler ran on the driver have no task record and are counted apart.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from wordcount import batch_table, build, cached_inputs, warm_up  # noqa: E402


def instrument(executor) -> tuple[dict, list]:
    """Wrap ``executor``'s submit_task / run_tasks (this instance only): per task description, (dispatch
    begun, handed over, result back); per stage call, (first task's description, called, returned)."""
    tasks: dict[str, list[float]] = {}
    stages: list[tuple[str, float, float]] = []
    submit, run_tasks = executor.submit_task, executor.run_tasks

    def submit_task(task):
        t = [time.time(), 0.0, 0.0]
        future = submit(task)
        t[1] = time.time()
        tasks[task.description] = t
        future.add_done_callback(lambda _f: t.__setitem__(2, time.time()))
        return future

    def run(ts):
        called = time.time()
        try:
            return run_tasks(ts)
        finally:
            stages.append((ts[0].description if ts else "?", called, time.time()))
    executor.submit_task, executor.run_tasks = submit_task, run
    return tasks, stages


def stage_of(description: str) -> str:
    return description.rsplit(" ", 2)[0]


def report(batch, out, records, tasks, stages, local_stages) -> list[str]:
    p0 = batch.processing_start_time / 1000

    def ms(t: float) -> str:
        return f"{(t - p0) * 1000:+8.1f}"
    lines = [f"batch {time.strftime('%H:%M:%S', time.localtime(batch.batch_time / 1000))}."
             f"{batch.batch_time % 1000:03d}: jobs generated {batch.submission_time - batch.batch_time} ms after due, "
             f"processing {batch.processingDelay()} ms, due -> done {batch.processing_end_time - batch.batch_time} ms; "
             f"output op {ms(out[0])} -> {ms(out[1])}; {len(records)} tasks, {local_stages} result stage(s) on the driver",
             f"  {'task':<34} {'worker':>7} {'dispatch':>8} {'submit':>6} {'->start':>7} {'start':>8} {'end':>8} "
             f"{'dur':>7} {'back at':>8} {'->back':>6}"]
    busy, per_worker = 0.0, defaultdict(list)
    for r in sorted(records, key=lambda r: r.start):
        kind = "map" if "(shuffle" in r.stage else "partition"
        d = tasks.get(f"{r.stage} {kind} {r.partition}", [float("nan")] * 3)
        lines.append(f"  {r.stage[:24] + ' ' + kind[:4] + ' ' + str(r.partition):<34} {r.worker:>7} {ms(d[0])} "
                     f"{(d[1] - d[0]) * 1000:6.1f} {(r.start - d[0]) * 1000:7.1f} {ms(r.start)} {ms(r.end)} "
                     f"{(r.end - r.start) * 1000:7.1f} {ms(d[2])} {(d[2] - r.end) * 1000:6.1f}")
        busy += r.end - r.start
        per_worker[r.worker].append((r.start, r.end))
    mine = [s for s in stages if out[0] <= s[1] <= out[1]]
    if mine:
        first, last = mine[0][1], mine[-1][2]
        between = sum(b[1] - a[2] for a, b in zip(mine, mine[1:]))
        idle = {w: (last - first) - sum(e - s for s, e in spans) for w, spans in per_worker.items()}
        lines.append("  stages: " + "; ".join(f"{stage_of(d)} {ms(c).strip()} -> {ms(r).strip()}" for d, c, r in mine))
        lines.append(f"  totals: tasks {busy * 1000:.1f} ms summed over {len(per_worker)} worker(s), stages "
                     f"{(last - first) * 1000:.1f} ms wall ({busy / max(last - first, 1e-9) / max(len(per_worker), 1):.0%} "
                     f"of the workers busy); worker idle between first and last stage: "
                     + ", ".join(f"{w} {v * 1000:.1f} ms" for w, v in idle.items()))
        lines.append(f"  driver: before the output op {(out[0] - p0) * 1000:.1f} ms, output op -> 1st stage "
                     f"{(first - out[0]) * 1000:.1f} ms, between stages {between * 1000:.1f} ms, last stage -> output "
                     f"op end {(out[1] - last) * 1000:.1f} ms, -> batch end "
                     f"{batch.processing_end_time - out[1] * 1000:.1f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--form", default="columnar", choices=["columnar", "row"])
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--partitions", type=int, default=None, help="input partitions (default: the workers)")
    p.add_argument("--parallelism", type=int, default=None,
                   help="spark.default.parallelism: reduce partitions (default: the workers)")
    p.add_argument("--interval", type=float, default=0.5, help="batch interval, s (default 0.5: batches apart)")
    a = p.parse_args(argv)
    from dstream import Context, StreamingContext, StreamingListener
    ctx = Context(a.master, conf={"spark.default.parallelism": str(a.parallelism)} if a.parallelism else None)
    warm_up(ctx)
    rdds = cached_inputs(ctx, [batch_table(i, a.lines) for i in range(a.batches)],
                         a.partitions or ctx.defaultParallelism)
    tasks, stages = instrument(ctx.scheduler.executor)
    infos, outs, done = [], [], threading.Event()

    class Batches(StreamingListener):
        def onBatchCompleted(self, completed) -> None:  # noqa: N802 - PySpark's name
            infos.append(completed.batchInfo())

    def output(rdd) -> None:
        before = (len(ctx.scheduler.task_records), ctx.scheduler.local_result_stages)
        t = time.time()
        rdd.toArrow() if a.form == "columnar" else rdd.collect()
        if len(outs) < a.batches:
            outs.append((t, time.time(), before, (len(ctx.scheduler.task_records), ctx.scheduler.local_result_stages)))
            if len(outs) == a.batches:
                done.set()
    ssc = StreamingContext(ctx, a.interval)
    ssc.addStreamingListener(Batches())
    build(ssc.queueStream(rdds), a.form).foreachRDD(output)
    ssc.start()
    done.wait(600)
    time.sleep(a.interval / 2)  # the last batch's completion event
    ssc.stop(stopSparkContext=False)
    print(f"# {a.form} word count on {a.master}, {a.batches} batches x {a.lines:,} lines, {rdds[0].getNumPartitions()} "
          f"input partitions, {ctx.defaultParallelism} reduce partitions; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; times in ms from the "
          "batch's processing start")
    for batch, (t0, t1, before, after) in zip(sorted(infos, key=lambda i: i.batch_time), outs):
        records = ctx.scheduler.task_records[before[0]:after[0]]
        print("\n".join(report(batch, (t0, t1), records, tasks, stages, after[1] - before[1])))
    ctx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
