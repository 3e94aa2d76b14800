"""A socketTextStream driver for write-ahead-log recovery tests: socket lines -> saveAsTextFiles (the raw
lines) and -> map -> updateStateByKey (how often each line was counted) -> saveAsTextFiles; checkpointed,
restartable with getOrCreate. The tests kill it with SIGKILL.

    python tests/apps/socket_app.py HOST PORT OUTPUT_DIR CHECKPOINT_DIR [--interval S] [--master M]

Output: ``OUTPUT_DIR/lines-<ms>`` and ``OUTPUT_DIR/counts-<ms>``. It prints one JSON line at start
({"started": ..., "restored": ..., "replayed": [...]}) and one per completed batch ({"batch": ms}).
While the environment variable SOCKET_APP_SLOW is set, each batch with lines first sleeps that many
seconds (read when the batch runs, so a restarted driver can run at full speed).
"""
import argparse
import logging
import os
import time

from progress import emit  # noqa: E402 - tests/apps is the script's directory
from dstream import Context, StreamingContext, StreamingListener



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
            emit({"batch": batchCompleted.batchInfo().batchTime()})

    ssc.addStreamingListener(Progress())
    ssc.start()
    emit({"started": time.time(), "restored": ssc._restored_from is not None,
          "replayed": getattr(ssc, "replayed_times", [])})
    ssc.awaitTermination()


if __name__ == "__main__":
    main()
