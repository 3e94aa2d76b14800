"""dstream: micro-batch stream processing on Arrow with PySpark Streaming's API and no JVM.

The user API is imported on first use (PEP 562), so executor processes, which import only
``dstream.executors``, start without loading the streaming layers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dstream.version import __version__  # noqa: F401 - re-exported

#: public name -> the module that defines it
_EXPORTS = {
    "Context": "dstream.context",
    "SparkConf": "dstream.conf",
    "RDD": "dstream.rdd",
    "Row": "dstream.row",
    "Broadcast": "dstream.broadcast",
    "Accumulator": "dstream.accumulators",
    "AccumulatorParam": "dstream.accumulators",
    "DStream": "dstream.dstream",
    "State": "dstream.state",
    "StreamingContext": "dstream.streaming",
    "SerializationError": "dstream.streaming",
    "ManualClock": "dstream.driver.clock",
    "SystemClock": "dstream.driver.clock",
    "StreamingListener": "dstream.driver.listener",
    "BatchInfo": "dstream.driver.listener",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from dstream.accumulators import Accumulator, AccumulatorParam
    from dstream.broadcast import Broadcast
    from dstream.conf import SparkConf
    from dstream.context import Context
    from dstream.driver.clock import ManualClock, SystemClock
    from dstream.driver.listener import BatchInfo, StreamingListener
    from dstream.dstream import DStream
    from dstream.rdd import RDD
    from dstream.row import Row
    from dstream.state import State
    from dstream.streaming import SerializationError, StreamingContext
