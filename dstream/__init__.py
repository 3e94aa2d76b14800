"""dstream: micro-batch stream processing on Arrow with PySpark Streaming's API and no JVM."""
__version__ = "0.1.0"  # before the imports: dstream.context reads it
from driver.clock import ManualClock, SystemClock
from driver.listener import BatchInfo, StreamingListener
from dstream.accumulators import Accumulator, AccumulatorParam
from dstream.broadcast import Broadcast
from dstream.conf import SparkConf
from dstream.context import Context
from dstream.rdd import RDD
from dstream.row import Row

__all__ = ["Context", "RDD", "Row", "ManualClock", "SystemClock", "StreamingListener", "BatchInfo"]
from dstream.dstream import DStream  # noqa: E402
from dstream.state import State  # noqa: E402
from dstream.streaming import SerializationError, StreamingContext  # noqa: E402

__all__ += ["DStream", "StreamingContext", "State", "SerializationError"]
__all__ += ["SparkConf", "Broadcast", "Accumulator", "AccumulatorParam"]
