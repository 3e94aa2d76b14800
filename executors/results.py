"""Task results on the wire: a table (also inside a TimedResult) as Arrow IPC, anything else cloudpickled.

Worker processes and Dask workers send results this way, so a table reaches the driver in Arrow's own
format (no pickling of its buffers) and a result that cannot be pickled fails on the worker, naming its task.
"""
from __future__ import annotations

from typing import Any

import cloudpickle
import pyarrow as pa

from dstream.executors.base import TimedResult
from dstream.executors.blockstore import table_from_ipc, table_to_ipc


def encode_result(result: object) -> tuple[str, Any]:
    """``(kind, data)`` for ``result``; ``decode_result(kind, data)`` gives it back."""
    if isinstance(result, pa.Table):
        return "table", table_to_ipc(result)
    if isinstance(result, TimedResult) and isinstance(result.value, pa.Table):
        timing = (result.start, result.end, result.worker)
        updates = None if result.accumulators is None else cloudpickle.dumps(result.accumulators)
        return "timed_table", (table_to_ipc(result.value), timing, updates)
    return "value", cloudpickle.dumps(result, protocol=5)


def decode_result(kind: str, data: Any) -> object:
    """The result ``encode_result`` made ``(kind, data)`` from."""
    if kind == "table":
        return table_from_ipc(data)
    if kind == "timed_table":
        ipc_bytes, (start, end, worker), updates = data
        return TimedResult(table_from_ipc(ipc_bytes), start, end, worker,
                           None if updates is None else cloudpickle.loads(updates))
    return cloudpickle.loads(data)
