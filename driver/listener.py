"""Streaming listeners and the bus that feeds them (PySpark's StreamingListener names).

Events are delivered on the bus's own thread, in order, so a slow listener never holds up a batch.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
from typing import Any

from dstream.driver.times import Time

log = logging.getLogger(__name__)


class StreamInputInfo:
    """What one input stream took for one batch (Spark's ``StreamInputInfo``); immutable."""

    __slots__ = ("_input_stream_id", "_num_records", "_metadata")

    #: the metadata key whose value describes the input (Spark's ``METADATA_KEY_DESCRIPTION``)
    METADATA_KEY_DESCRIPTION = "Description"

    def __init__(self, input_stream_id: int, num_records: int, metadata: dict[str, Any] | None = None) -> None:
        self._input_stream_id = input_stream_id
        self._num_records = num_records
        self._metadata = dict(metadata or {})

    def inputStreamId(self) -> int:
        """The input stream's id: its position among the context's input streams, from 0."""
        return self._input_stream_id

    def numRecords(self) -> int:
        """Records the input stream took for the batch (0 where it cannot know; see its docs)."""
        return self._num_records

    def metadata(self) -> dict[str, Any]:
        """The input's metadata for the batch (a copy), e.g. ``{"files": [...], "Description": ...}``."""
        return dict(self._metadata)

    def metadataDescription(self) -> str | None:
        """The metadata's ``Description`` as text, or None (Spark's Option/null)."""
        description = self._metadata.get(self.METADATA_KEY_DESCRIPTION)
        return None if description is None else str(description)

    def __repr__(self) -> str:
        return f"StreamInputInfo(inputStreamId={self._input_stream_id}, numRecords={self._num_records})"


def _or_minus_one(value: float | None) -> int:
    return -1 if value is None else math.floor(value)


def _whole(value: float | None) -> int | None:
    """A time kept with sub-millisecond precision, in whole ms (floor: what ``Clock.now_ms`` said)."""
    return None if value is None else math.floor(value)


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


class OutputOperationInfo:
    """One output operation of one batch, as PySpark's listener sees it (Spark's ``JavaOutputOperationInfo``).

    The PySpark methods return ``-1`` for a time not known yet, as Spark's Java listener API does; the
    snake_case properties give ``None`` instead (Scala's ``Option``). Both give whole milliseconds; the
    ``precise_*`` properties give the same times and duration as float ms, to the clock's precision. Only
    the driver changes an info, through the underscore methods; listeners get copies.
    """

    __slots__ = ("_batch_time", "_id", "_name", "_description", "_start_time", "_end_time", "_failure_reason",
                 "_task_retries")

    def __init__(self, batch_time: int, id: int, name: str, description: str | None = None,
                 start_time: float | None = None, end_time: float | None = None,
                 failure_reason: str | None = None, task_retries: int = 0) -> None:
        self._batch_time = Time(batch_time)
        self._id = id
        self._name = name
        self._description = name if description is None else description
        self._start_time = start_time
        self._end_time = end_time
        self._failure_reason = failure_reason
        self._task_retries = task_retries

    # -- PySpark's methods ----------------------------------------------------------------------------
    def batchTime(self) -> Time:
        """The batch's time (``batchTime().milliseconds()``)."""
        return self._batch_time

    def id(self) -> int:
        """The output operation's id: its position among the context's output operations (run order)."""
        return self._id

    def name(self) -> str:
        """The output operation's name, e.g. ``foreachRDD(save)``."""
        return self._name

    def description(self) -> str:
        """A description of the output operation (its name)."""
        return self._description

    def startTime(self) -> int:
        """Clock time (ms) when the operation started; -1 before it starts."""
        return _or_minus_one(self._start_time)

    def endTime(self) -> int:
        """Clock time (ms) when the operation ended; -1 before it ends."""
        return _or_minus_one(self._end_time)

    def failureReason(self) -> str | None:
        """The error (type and message) if the operation failed, else None."""
        return self._failure_reason

    def duration(self) -> int:
        """endTime - startTime in ms; -1 before the operation ends."""
        if self._start_time is None or self._end_time is None:
            return -1
        return math.floor(self._end_time) - math.floor(self._start_time)

    def taskRetries(self) -> int:
        """Failed task attempts that were run again while the operation ran (``spark.task.maxFailures``)."""
        return self._task_retries

    # -- snake_case, read-only (None where not known yet) ---------------------------------------------
    @property
    def batch_time(self) -> int:
        return int(self._batch_time)

    @property
    def start_time(self) -> int | None:
        return _whole(self._start_time)

    @property
    def end_time(self) -> int | None:
        return _whole(self._end_time)

    # -- float ms, to the clock's precision (None where not known yet) --------------------------------
    @property
    def precise_start_time(self) -> float | None:
        return self._start_time

    @property
    def precise_end_time(self) -> float | None:
        return self._end_time

    @property
    def precise_duration(self) -> float | None:
        """end - start in float ms; None before the operation ends."""
        return _between(self._start_time, self._end_time)

    @property
    def failure_reason(self) -> str | None:
        return self._failure_reason

    @property
    def task_retries(self) -> int:
        return self._task_retries

    # -- the driver's updates -------------------------------------------------------------------------
    def _started(self, now_ms: float) -> None:
        self._start_time = now_ms

    def _completed(self, now_ms: float, failure_reason: str | None, task_retries: int = 0) -> None:
        self._end_time = now_ms
        self._failure_reason = failure_reason
        self._task_retries = task_retries

    def _copy(self) -> "OutputOperationInfo":
        new = OutputOperationInfo.__new__(OutputOperationInfo)
        for slot in self.__slots__:
            setattr(new, slot, getattr(self, slot))
        return new

    def __repr__(self) -> str:
        return (f"OutputOperationInfo(batchTime={self._batch_time!r}, id={self._id}, name={self._name!r}, "
                f"startTime={self.startTime()}, endTime={self.endTime()}, "
                f"failureReason={self._failure_reason!r})")


class BatchInfo:
    """Timing of one batch, in milliseconds of the streaming clock (Spark's ``BatchInfo``).

    The batch covers arrivals in (batchTime - interval, batchTime]. As in PySpark (Spark's Java listener
    API), times and delays not known yet are ``-1``: on ``onBatchSubmitted`` the processing times and all
    delays, on ``onBatchStarted`` the end time, processing and total delay. The snake_case properties
    (``batch_time``, ``processing_start_time``, ...) give ``None`` instead. Both give whole milliseconds
    (``Clock.now_ms``; a delay is the difference of two whole-ms times). The driver keeps the times to the
    clock's precision: the ``precise_*`` properties give them, and the delays between them, as float ms
    (None where not known yet), e.g. ``precise_processing_delay`` 0.4 where ``processingDelay()`` says 0 or 1.

    A batch whose output operation failed stays pending and may run again (``retryFailedBatches``, or a
    restart): each run posts its own events, ``attempt()`` counting them; ``failureReason()`` says why a
    run failed.
    """

    __slots__ = ("_batch_time", "_submission_time", "_processing_start_time", "_processing_end_time",
                 "_inputs", "_output_operations", "_attempt")

    def __init__(self, batch_time: int, submission_time: float,
                 stream_id_to_input_info: dict[int, StreamInputInfo] | None = None,
                 output_operations: dict[int, OutputOperationInfo] | None = None,
                 processing_start_time: float | None = None, processing_end_time: float | None = None,
                 attempt: int = 1) -> None:
        self._batch_time = Time(batch_time)
        self._submission_time = submission_time
        self._processing_start_time = processing_start_time
        self._processing_end_time = processing_end_time
        self._inputs: dict[int, StreamInputInfo] = dict(stream_id_to_input_info or {})
        self._output_operations: dict[int, OutputOperationInfo] = dict(output_operations or {})
        self._attempt = attempt

    # -- PySpark's methods ----------------------------------------------------------------------------
    def batchTime(self) -> Time:
        """The batch's time (``batchTime().milliseconds()``)."""
        return self._batch_time

    def streamIdToInputInfo(self) -> dict[int, StreamInputInfo]:
        """Input stream id -> what that input took for this batch."""
        return dict(self._inputs)

    def submissionTime(self) -> int:
        """Clock time (ms) when the batch's jobs were generated and submitted."""
        return math.floor(self._submission_time)

    def processingStartTime(self) -> int:
        """Clock time (ms) when the batch started running; -1 before."""
        return _or_minus_one(self._processing_start_time)

    def processingEndTime(self) -> int:
        """Clock time (ms) when the batch's last output operation finished; -1 before."""
        return _or_minus_one(self._processing_end_time)

    def schedulingDelay(self) -> int:
        """Milliseconds from submission until processing started; -1 before the batch starts."""
        if self._processing_start_time is None:
            return -1
        return math.floor(self._processing_start_time) - math.floor(self._submission_time)

    def processingDelay(self) -> int:
        """Milliseconds spent running the batch's jobs; -1 before the batch completes."""
        if self._processing_start_time is None or self._processing_end_time is None:
            return -1
        return math.floor(self._processing_end_time) - math.floor(self._processing_start_time)

    def totalDelay(self) -> int:
        """schedulingDelay + processingDelay: ms from submission until the batch finished; -1 before."""
        if self._processing_end_time is None:
            return -1
        return math.floor(self._processing_end_time) - math.floor(self._submission_time)

    def numRecords(self) -> int:
        """Records taken by all input streams for this batch."""
        return sum(i.numRecords() for i in self._inputs.values())

    def outputOperationInfos(self) -> dict[int, OutputOperationInfo]:
        """Output operation id -> its info, in run order."""
        return dict(self._output_operations)

    def attempt(self) -> int:
        """1 for the batch's first run; n for its (n-1)th run again after failing."""
        return self._attempt

    def failureReason(self) -> str | None:
        """Why this run of the batch failed (its first failed output operation and error), else None."""
        return next((f"output operation {op.id()} ({op.name()}): {op.failureReason()}"
                     for op in self._output_operations.values() if op.failureReason() is not None), None)

    def taskRetries(self) -> int:
        """Failed task attempts run again for the batch's output operations (``spark.task.maxFailures``)."""
        return sum(op.taskRetries() for op in self._output_operations.values())

    # -- snake_case, read-only (None where not known yet) ---------------------------------------------
    @property
    def batch_time(self) -> int:
        return int(self._batch_time)

    @property
    def submission_time(self) -> int:
        return math.floor(self._submission_time)

    @property
    def processing_start_time(self) -> int | None:
        return _whole(self._processing_start_time)

    @property
    def processing_end_time(self) -> int | None:
        return _whole(self._processing_end_time)

    @property
    def num_records(self) -> int:
        return self.numRecords()

    @property
    def output_operations(self) -> dict[int, OutputOperationInfo]:
        return self.outputOperationInfos()

    @property
    def failure_reason(self) -> str | None:
        return self.failureReason()

    # -- float ms, to the clock's precision (None where not known yet) --------------------------------
    @property
    def precise_submission_time(self) -> float:
        return self._submission_time

    @property
    def precise_processing_start_time(self) -> float | None:
        return self._processing_start_time

    @property
    def precise_processing_end_time(self) -> float | None:
        return self._processing_end_time

    @property
    def precise_scheduling_delay(self) -> float | None:
        """Submission to processing start."""
        return _between(self._submission_time, self._processing_start_time)

    @property
    def precise_processing_delay(self) -> float | None:
        """Processing start to end."""
        return _between(self._processing_start_time, self._processing_end_time)

    @property
    def precise_total_delay(self) -> float | None:
        """Submission to processing end."""
        return _between(self._submission_time, self._processing_end_time)

    # -- the driver's updates -------------------------------------------------------------------------
    def _started(self, now_ms: float) -> None:
        self._processing_start_time = now_ms

    def _completed(self, now_ms: float) -> None:
        self._processing_end_time = now_ms

    def _output_operation(self, output_id: int) -> OutputOperationInfo:
        """The driver's own (live) info of one output operation."""
        return self._output_operations[output_id]

    def _copy(self) -> "BatchInfo":
        new = BatchInfo.__new__(BatchInfo)
        new._batch_time = self._batch_time
        new._submission_time = self._submission_time
        new._processing_start_time = self._processing_start_time
        new._processing_end_time = self._processing_end_time
        new._inputs = self._inputs  # never changed after the batch is generated: shared
        new._output_operations = {k: v._copy() for k, v in self._output_operations.items()}
        new._attempt = self._attempt
        return new

    def __repr__(self) -> str:
        return (f"BatchInfo(batchTime={self._batch_time!r}, numRecords={self.numRecords()}, "
                f"submissionTime={self.submissionTime()}, processingStartTime={self.processingStartTime()}, "
                f"processingEndTime={self.processingEndTime()}, "
                f"outputOperations={len(self._output_operations)}"
                f"{f', attempt={self._attempt}' if self._attempt > 1 else ''})")


def _snapshot(info: Any) -> Any:
    """A copy of an info as it is now (the driver keeps updating the original); cheap, not deep."""
    if isinstance(info, (BatchInfo, OutputOperationInfo)):
        return info._copy()
    return info


class _Millis(int):
    """Milliseconds readable both as Scala's ``event.time`` and as PySpark's (py4j) ``event.time()``."""

    __slots__ = ()

    def __call__(self) -> int:
        return int(self)


class ReceiverInfo:
    """A receiver's state, as PySpark's listener sees it in ``onReceiverStarted``, ``onReceiverError`` and
    ``onReceiverStopped`` (Spark's ``ReceiverInfo``); immutable.

    dstream's receivers run in the driver process: ``executorId()`` is ``"driver"`` and ``location()`` the
    driver's host name. ``lastErrorTime()`` is in milliseconds of the streaming clock, -1 without an error.
    """

    __slots__ = ("_stream_id", "_name", "_active", "_location", "_executor_id", "_last_error_message",
                 "_last_error", "_last_error_time")

    def __init__(self, stream_id: int, name: str, active: bool, location: str, executor_id: str = "driver",
                 last_error_message: str = "", last_error: str = "", last_error_time: int = -1) -> None:
        self._stream_id = stream_id
        self._name = name
        self._active = active
        self._location = location
        self._executor_id = executor_id
        self._last_error_message = last_error_message
        self._last_error = last_error
        self._last_error_time = last_error_time

    def streamId(self) -> int:
        """The receiver's input stream id (its position among the context's input streams)."""
        return self._stream_id

    def name(self) -> str:
        """The receiving input stream's name, e.g. ``socketTextStream(localhost:9999)``."""
        return self._name

    def active(self) -> bool:
        """Whether the receiver runs (it keeps retrying after an error; False once stopped)."""
        return self._active

    def location(self) -> str:
        """The host the receiver runs on (the driver's)."""
        return self._location

    def executorId(self) -> str:
        """Where the receiver runs: ``"driver"``."""
        return self._executor_id

    def lastErrorMessage(self) -> str:
        """What failed last, e.g. ``cannot connect to localhost:9999``; empty without an error."""
        return self._last_error_message

    def lastError(self) -> str:
        """The last error's type and message, e.g. ``ConnectionRefusedError: [Errno 111] Connection
        refused``; empty without an error."""
        return self._last_error

    def lastErrorTime(self) -> int:
        """When the last error happened (ms of the streaming clock); -1 without an error."""
        return self._last_error_time

    def __repr__(self) -> str:
        error = f", lastErrorMessage={self._last_error_message!r}, lastError={self._last_error!r}" \
            if self._last_error_message or self._last_error else ""
        return f"ReceiverInfo(streamId={self._stream_id}, name={self._name!r}, active={self._active}{error})"


class StreamingListenerEvent:
    """Base of the events handed to a ``StreamingListener``."""

    __slots__ = ()


class StreamingListenerStreamingStarted(StreamingListenerEvent):
    """``onStreamingStarted``'s event: ``time`` (or ``time()``), the clock time in ms of the start."""

    __slots__ = ("time",)

    def __init__(self, time_ms: int) -> None:
        self.time = _Millis(time_ms)

    def __repr__(self) -> str:
        return f"StreamingListenerStreamingStarted(time={int(self.time)})"


class _BatchEvent(StreamingListenerEvent):
    __slots__ = ("_info",)

    def __init__(self, info: BatchInfo) -> None:
        self._info = info

    def batchInfo(self) -> BatchInfo:
        """The batch's info as it was when the event was posted."""
        return self._info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._info!r})"


class StreamingListenerBatchSubmitted(_BatchEvent):
    """``onBatchSubmitted``'s event."""

    __slots__ = ()


class StreamingListenerBatchStarted(_BatchEvent):
    """``onBatchStarted``'s event."""

    __slots__ = ()


class StreamingListenerBatchCompleted(_BatchEvent):
    """``onBatchCompleted``'s event."""

    __slots__ = ()


class _OutputOperationEvent(StreamingListenerEvent):
    __slots__ = ("_info",)

    def __init__(self, info: OutputOperationInfo) -> None:
        self._info = info

    def outputOperationInfo(self) -> OutputOperationInfo:
        """The output operation's info as it was when the event was posted."""
        return self._info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._info!r})"


class StreamingListenerOutputOperationStarted(_OutputOperationEvent):
    """``onOutputOperationStarted``'s event."""

    __slots__ = ()


class StreamingListenerOutputOperationCompleted(_OutputOperationEvent):
    """``onOutputOperationCompleted``'s event."""

    __slots__ = ()


class _ReceiverEvent(StreamingListenerEvent):
    __slots__ = ("_info",)

    def __init__(self, info: ReceiverInfo) -> None:
        self._info = info

    def receiverInfo(self) -> ReceiverInfo:
        """The receiver's state when the event was posted."""
        return self._info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._info!r})"


class StreamingListenerReceiverStarted(_ReceiverEvent):
    """``onReceiverStarted``'s event: a receiver started (before it connects)."""

    __slots__ = ()


class StreamingListenerReceiverError(_ReceiverEvent):
    """``onReceiverError``'s event: a receiver could not connect, or lost its connection; it retries."""

    __slots__ = ()


class StreamingListenerReceiverStopped(_ReceiverEvent):
    """``onReceiverStopped``'s event: a receiver stopped (with the context, or after a fatal error)."""

    __slots__ = ()


#: the event each listener method receives, made from what the driver posts
_EVENTS: dict[str, type] = {
    "onStreamingStarted": StreamingListenerStreamingStarted,
    "onReceiverStarted": StreamingListenerReceiverStarted,
    "onReceiverError": StreamingListenerReceiverError,
    "onReceiverStopped": StreamingListenerReceiverStopped,
    "onBatchSubmitted": StreamingListenerBatchSubmitted,
    "onBatchStarted": StreamingListenerBatchStarted,
    "onBatchCompleted": StreamingListenerBatchCompleted,
    "onOutputOperationStarted": StreamingListenerOutputOperationStarted,
    "onOutputOperationCompleted": StreamingListenerOutputOperationCompleted,
}


class StreamingListener:
    """Subclass and override what you need; add with ``StreamingContext.addStreamingListener``.

    As in PySpark::

        class Delays(StreamingListener):
            def onBatchCompleted(self, batchCompleted):
                info = batchCompleted.batchInfo()
                print(info.batchTime().milliseconds(), info.numRecords(), info.processingDelay())

    Batch events have ``batchInfo()`` (a ``BatchInfo``), output operation events
    ``outputOperationInfo()`` (an ``OutputOperationInfo``), ``onStreamingStarted``'s event ``time``
    (ms), receiver events ``receiverInfo()`` (a ``ReceiverInfo``: ``socketTextStream``'s receiver reports
    its start and stop, and every failed connection attempt or lost connection as ``onReceiverError``).
    Events arrive in order on one listener thread.
    """

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

    def wants_record_counts(self) -> bool:
        """Whether a listener reads record counts (built-in ones, such as the batch statistics, say they
        do not with ``wants_record_counts = False``, so their presence alone costs inputs no counting)."""
        with self._lock:
            return any(getattr(listener, "wants_record_counts", True) for listener in self._listeners)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dstream-listener-bus", daemon=True)
            self._thread.start()

    def post(self, method: str, info: Any) -> None:
        """Queue the event of listener method ``method`` for ``info`` (a BatchInfo, OutputOperationInfo,
        ReceiverInfo or, for ``onStreamingStarted``, a time in ms). The info is copied now, so a listener sees it as
        it was when posted; with no listener, nothing is copied or queued."""
        if not self._wanted(method):
            return
        self._queue.put((method, _EVENTS[method](_snapshot(info))))

    def _wanted(self, method: str) -> bool:
        """Whether a listener has its own ``method`` (the base class's does nothing): events nobody handles
        are neither copied nor queued."""
        base = getattr(StreamingListener, method, None)
        with self._lock:
            return any(getattr(type(listener), method, None) is not base for listener in self._listeners)

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def wait_until_empty(self, timeout: float = 10.0) -> bool:
        """Wait until every event posted so far has reached the listeners (Spark's ``waitUntilEmpty``);
        False if ``timeout`` seconds passed first. Returns at once when the bus is not running."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):  # wait_until_empty's marker: everything before it is out
                item.set()
                continue
            method, event = item
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    getattr(listener, method)(event)
                except Exception:  # noqa: BLE001
                    log.exception("streaming listener %r failed in %s", listener, method)
