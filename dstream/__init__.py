"""dstream: micro-batch stream processing on Arrow with PySpark Streaming's API and no JVM."""
from driver.clock import ManualClock, SystemClock
from driver.listener import BatchInfo, StreamingListener
from dstream.context import Context
from dstream.rdd import RDD

__all__ = ["Context", "RDD", "ManualClock", "SystemClock", "StreamingListener", "BatchInfo"]
__version__ = "0.1.0"
from dstream.dstream import DStream  # noqa: E402
from dstream.state import State  # noqa: E402
from dstream.streaming import SerializationError, StreamingContext  # noqa: E402

__all__ += ["DStream", "StreamingContext", "State", "SerializationError"]
