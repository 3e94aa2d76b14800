"""Streaming listeners and the bus that feeds them (PySpark's StreamingListener names).

Events are delivered on the bus's own thread, in order, so a slow listener never holds up a batch.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class OutputOperationInfo:
    """One output operation of one batch."""

    batch_time: int
    id: int
    name: str
    start_time: int | None = None
    end_time: int | None = None
    failure_reason: str | None = None

    def batchTime(self) -> int:
        return self.batch_time

    def failureReason(self) -> str | None:
        return self.failure_reason

    def duration(self) -> int | None:
        if self.start_time is None or self.end_time is None:
            return None
        return self.end_time - self.start_time


@dataclass
class BatchInfo:
    """Timing of one batch, all in milliseconds of the streaming clock (Spark's BatchInfo)."""

    #: the batch time: the batch covers arrivals in (batch_time - interval, batch_time]
    batch_time: int
    #: when the batch's jobs were generated and submitted
    submission_time: int
    processing_start_time: int | None = None
    processing_end_time: int | None = None
    #: records read by the input streams for this batch
    num_records: int = 0
    output_operations: dict[int, OutputOperationInfo] = field(default_factory=dict)

    def batchTime(self) -> int:
        return self.batch_time

    def submissionTime(self) -> int:
        return self.submission_time

    def processingStartTime(self) -> int | None:
        return self.processing_start_time

    def processingEndTime(self) -> int | None:
        return self.processing_end_time

    def schedulingDelay(self) -> int | None:
        """Milliseconds from submission until processing started."""
        if self.processing_start_time is None:
            return None
        return self.processing_start_time - self.submission_time

    def processingDelay(self) -> int | None:
        """Milliseconds spent running the batch's jobs."""
        if self.processing_start_time is None or self.processing_end_time is None:
            return None
        return self.processing_end_time - self.processing_start_time

    def totalDelay(self) -> int | None:
        """schedulingDelay + processingDelay: milliseconds from submission until the batch finished."""
        if self.processing_end_time is None:
            return None
        return self.processing_end_time - self.submission_time

    def numRecords(self) -> int:
        return self.num_records

    def outputOperationInfos(self) -> dict[int, OutputOperationInfo]:
        return self.output_operations


def _snapshot(info: Any) -> Any:
    """A copy of an info as it is now (the driver keeps updating the original); cheap, not deep."""
    if isinstance(info, BatchInfo):
        return dataclasses.replace(info, output_operations={
            k: dataclasses.replace(v) for k, v in info.output_operations.items()})
    if isinstance(info, OutputOperationInfo):
        return dataclasses.replace(info)
    return info


class _Event:
    def __init__(self, info: Any) -> None:
        self._info = info

    def batchInfo(self) -> BatchInfo:
        return self._info

    def outputOperationInfo(self) -> OutputOperationInfo:
        return self._info


class StreamingListener:
    """Subclass and override what you need; add with ``StreamingContext.addStreamingListener``."""

    def onStreamingStarted(self, streamingStarted: Any) -> None: ...
    def onReceiverStarted(self, receiverStarted: Any) -> None: ...
    def onReceiverError(self, receiverError: Any) -> None: ...
    def onReceiverStopped(self, receiverStopped: Any) -> None: ...
    def onBatchSubmitted(self, batchSubmitted: Any) -> None: ...
    def onBatchStarted(self, batchStarted: Any) -> None: ...
    def onBatchCompleted(self, batchCompleted: Any) -> None: ...
    def onOutputOperationStarted(self, outputOperationStarted: Any) -> None: ...
    def onOutputOperationCompleted(self, outputOperationCompleted: Any) -> None: ...


_STOP = object()


class ListenerBus:
    """Delivers events to listeners on one thread; a listener that raises is logged and kept."""

    def __init__(self) -> None:
        self._listeners: list[StreamingListener] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, listener: StreamingListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def has_listeners(self) -> bool:
        with self._lock:
            return bool(self._listeners)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dstream-listener-bus", daemon=True)
            self._thread.start()

    def post(self, method: str, info: Any) -> None:
        """Queue an event; the info is copied now, so a listener sees it as it was when posted."""
        self._queue.put((method, _Event(_snapshot(info))))

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            method, event = item
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    getattr(listener, method)(event)
                except Exception:  # noqa: BLE001
                    log.exception("streaming listener %r failed in %s", listener, method)
