"""A recoverable word count written as PySpark programs are (Spark's recoverable_network_wordcount
pattern): only the imports differ. ``createContext`` never calls ``ssc.checkpoint``; ``getOrCreate``
checkpoints the context it returns, so a SIGKILLed driver restarts from its checkpoint.

    python tests/apps/pyspark_wordcount.py INPUT_DIR OUTPUT_PREFIX CHECKPOINT_DIR
"""
import sys

from dstream import Context as SparkContext
from dstream import StreamingContext, StreamingListener
from dstream.demo.harness import emit, started_fields


def createContext(inputDir, outputPrefix):
    emit("creating")
    sc = SparkContext("local[2]", "PythonStreamingRecoverableWordCount")
    ssc = StreamingContext(sc, 0.3)
    lines = ssc.textFileStream(inputDir)
    words = lines.flatMap(lambda line: line.split(" "))
    counts = words.map(lambda x: (x, 1)).updateStateByKey(lambda new, old: sum(new) + (old or 0))
    counts.saveAsTextFiles(outputPrefix)
    return ssc


class Progress(StreamingListener):
    def onBatchCompleted(self, batchCompleted):
        emit("batch", time=int(batchCompleted.batchInfo().batchTime().milliseconds()))


if __name__ == "__main__":
    inputDir, outputPrefix, checkpoint = sys.argv[1:4]
    ssc = StreamingContext.getOrCreate(checkpoint, lambda: createContext(inputDir, outputPrefix))
    ssc.addStreamingListener(Progress())
    ssc.start()
    emit("started", **started_fields(ssc))
    ssc.awaitTermination()
