"""A stateful word count driver for recovery tests: file stream -> flatMap -> updateStateByKey ->
saveAsTextFiles, checkpointed, restartable with getOrCreate. The tests kill it with SIGKILL.

    python tests/apps/stateful_wordcount.py INPUT_DIR OUTPUT_PREFIX CHECKPOINT_DIR
        [--interval S] [--master M] [--work S] [--task-log FILE]

It prints progress lines with ``dstream.demo.harness.emit``: ``started`` at start (``started_fields``:
restored, replayed, workers, ...) and ``batch`` (``time``: its ms) per completed batch. ``--work`` sleeps
that long per line in flatMap (to make tasks long enough to overlap); ``--task-log`` writes the task
timings of the parallel recovery stage.
"""
import argparse
import json
import logging
import time

from dstream import Context, StreamingContext, StreamingListener
from dstream.demo.harness import emit, started_fields


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("input_dir")
    p.add_argument("output_prefix")
    p.add_argument("checkpoint")
    p.add_argument("--interval", type=float, default=0.3)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=float, default=0.0)
    p.add_argument("--snapshot-every", type=int, default=4, help="data checkpoint every N batches")
    p.add_argument("--task-log")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = args.work

    def split(line: str) -> list[str]:
        if work:
            time.sleep(work)
        return line.split()

    def setup() -> StreamingContext:
        ssc = StreamingContext(Context(args.master), args.interval)
        ssc.checkpoint(args.checkpoint)
        words = ssc.textFileStream(args.input_dir).flatMap(split).map(lambda w: (w, 1))
        counts = words.updateStateByKey(lambda new, old: sum(new) + (old or 0))
        counts.checkpoint(args.interval * args.snapshot_every)
        counts.saveAsTextFiles(args.output_prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(args.checkpoint, setup)
    ctx = ssc.sparkContext

    class Progress(StreamingListener):
        def onBatchCompleted(self, batchCompleted):
            emit("batch", time=batchCompleted.batchInfo().batchTime())
            if args.task_log:
                records = [r.__dict__ for r in ctx.scheduler.task_records if "parallel recovery" in r.stage]
                with open(args.task_log, "w") as f:
                    json.dump(records, f)

    ssc.addStreamingListener(Progress())
    ssc.start()
    emit("started", **started_fields(ssc))
    ssc.awaitTermination()


if __name__ == "__main__":
    main()
