"""A socketTextStream driver for write-ahead-log recovery tests: socket lines -> saveAsTextFiles (the raw
lines) and -> map -> updateStateByKey (how often each line was counted) -> saveAsTextFiles; checkpointed,
restartable with getOrCreate. The tests kill it with SIGKILL.

    python tests/apps/socket_app.py HOST PORT OUTPUT_DIR CHECKPOINT_DIR [--interval S] [--master M]

Output: ``OUTPUT_DIR/lines-<ms>`` and ``OUTPUT_DIR/counts-<ms>``. It prints progress lines with
``dstream.demo.harness.emit``: ``started`` at start (``started_fields``: restored, replayed, ...) and
``batch`` (``time``: its ms) per completed batch.
While the environment variable SOCKET_APP_SLOW is set, each batch with lines first sleeps that many
seconds (read when the batch runs, so a restarted driver can run at full speed).
"""
import argparse
import logging
import os
import time

from dstream import Context, StreamingContext, StreamingListener
from dstream.demo.harness import emit, started_fields


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("output_dir")
    p.add_argument("checkpoint")
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--master", default="threads[2]")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def slow(rdd) -> None:
        delay = float(os.environ.get("SOCKET_APP_SLOW") or 0)
        if delay and not rdd.isEmpty():
            time.sleep(delay)

    def setup() -> StreamingContext:
        ssc = StreamingContext(Context(args.master), args.interval)
        ssc.checkpoint(args.checkpoint)
        lines = ssc.socketTextStream(args.host, args.port)
        lines.foreachRDD(slow)
        lines.saveAsTextFiles(os.path.join(args.output_dir, "lines"))
        counts = lines.map(lambda line: (line, 1)).updateStateByKey(lambda new, old: sum(new) + (old or 0))
        counts.checkpoint(args.interval * 4)
        counts.saveAsTextFiles(os.path.join(args.output_dir, "counts"))
        return ssc

    ssc = StreamingContext.getOrCreate(args.checkpoint, setup)

    class Progress(StreamingListener):
        def onBatchCompleted(self, batchCompleted):
            emit("batch", time=batchCompleted.batchInfo().batchTime())

    ssc.addStreamingListener(Progress())
    ssc.start()
    emit("started", **started_fields(ssc))
    ssc.awaitTermination()


if __name__ == "__main__":
    main()
