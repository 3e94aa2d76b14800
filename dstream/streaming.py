"""StreamingContext: the streaming entry point. It owns the DStream graph (``dstream.graph``), the job
generator and scheduler (``dstream.driver.jobs``) and the checkpointing (``dstream.recovery``)."""
from __future__ import annotations

import inspect
import io
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Mapping

import cloudpickle

from dstream.broadcast import SharedVariableInCheckpointError, pickling_for_checkpoint
from dstream.context import CONTEXT_ONLY_ON_DRIVER, Context
from dstream.driver.checkpoint import checkpoint_key
from dstream.driver.clock import Clock, SystemClock
from dstream.driver.jobs import BatchError, FailedBatch, JobGenerator, JobScheduler
from dstream.driver.listener import ListenerBus, StreamingListener
from dstream.driver.monitor import StreamViews, retained_batches
from dstream.driver.statistics import StreamStatistics
from dstream.driver.storage import Location
from dstream.driver.times import batch_name
from dstream.executors.conf_values import conf_bool
from dstream.dstream import DStream, ForEachDStream, TransformedDStream, UnionDStream
from dstream.durations import ms_to_datetime, to_ms
from dstream.graph import DStreamGraph
from dstream.rdd import RDD, _fn_name
from dstream.recovery import (Restored, SnapshotOnlyCheckpointer, StreamCheckpointer, data_dir, failed_batches,
                              read_checkpoint)
from dstream.sources import FileInputDStream, QueueInputDStream, SocketInputDStream
from dstream.views import describe_stream, html_for_stream, plot_statistics

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class SerializationError(TypeError):
    """A user function cannot be pickled, so it cannot be shipped to executors or checkpointed."""


class ContextCapturedError(TypeError):
    """A function holds a Context or StreamingContext (which live on the driver only)."""


class _FunctionPickler(cloudpickle.CloudPickler):
    """Pickles a user function without following it into streams or RDDs it captured (those pickle by
    their own rules; the check is about the function's own code and captures). A captured Context or
    StreamingContext is an error unless ``allow_contexts`` (functions that run on the driver and are not
    checkpointed may use them)."""

    def __init__(self, file: Any, allow_contexts: bool) -> None:
        super().__init__(file)
        self.allow_contexts = allow_contexts

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, RDD) and not self.allow_contexts:
            raise ContextCapturedError(f"RDD {obj!r}")
        if isinstance(obj, (DStream, RDD)):
            return (type(None), ())
        if isinstance(obj, (Context, StreamingContext)):
            if not self.allow_contexts:
                raise ContextCapturedError(type(obj).__name__)
            return (type(None), ())
        return super().reducer_override(obj)


def _check_picklable(func: Callable, allow_contexts: bool) -> None:
    _FunctionPickler(io.BytesIO(), allow_contexts).dump(func)


def check_functions(graph: DStreamGraph, checkpointing: bool) -> None:
    """Every user function of the graph must pickle (for executors, and with ``checkpointing`` for the
    checkpoint); a checkpointed one must not capture a Context or StreamingContext (SPARK-5063)."""
    for stream in graph.all_streams():
        if isinstance(stream, ForEachDStream) and not checkpointing:
            continue  # output functions run on the driver: pickled only into checkpoints
        for what, func in stream._user_functions():
            if hasattr(func, "user_func"):
                what = f"{what} ({_fn_name(func.user_func)})"
            try:
                with pickling_for_checkpoint(checkpointing):
                    _check_picklable(func, allow_contexts=not checkpointing)
            except SharedVariableInCheckpointError as exc:
                raise SerializationError(f"the function {what}: {exc}") from None
            except ContextCapturedError as exc:
                if str(exc).startswith("RDD "):
                    raise SerializationError(
                        f"the function {what} captures the {exc}, and this stream is checkpointed: an RDD "
                        f"belongs to the Context that made it and cannot be restored from a checkpoint. Make "
                        f"it inside the function (rdd.context.parallelize(...), a file read), keep its data "
                        f"in a broadcast variable created lazily, or read it from storage (SPARK-5063)."
                    ) from None
                raise SerializationError(
                    f"the function {what} captures the "
                    f"{exc}, and this stream is checkpointed: {CONTEXT_ONLY_ON_DRIVER} Get the context "
                    f"inside the function instead (rdd.context), or create what you need lazily, as a "
                    f"singleton (see the README on broadcasts and accumulators in checkpointed streams)."
                ) from None
            except Exception as exc:  # noqa: BLE001
                raise SerializationError(
                    f"cannot serialise the function {what}; "
                    f"functions are pickled to run on executors (and into checkpoints), so they must "
                    f"not capture locks, sockets, open files or the StreamingContext: {exc}") from exc


State = Literal["initialized", "active", "stopped"]

#: the conf key saying whether a failed batch of an output that builds on state kept across batches stops the
#: StreamingContext (default true)
STOP_ON_STATEFUL_FAILURE = "dstream.stopOnStatefulFailure"


class StreamingContext:
    """The entry point for streams: declare input streams and operators, then ``start()``.

    ``batchDuration`` is in seconds. ``clock`` (a ``ManualClock`` in tests) is what the batch timer
    waits on; the default is the system clock.
    """

    _active: ClassVar["StreamingContext | None"] = None
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, sparkContext: Context | None = None, batchDuration: float = 1.0,
                 clock: Clock | None = None, *, restored: Restored | None = None) -> None:
        """``restored`` (set by ``getOrCreate``, as PySpark's hidden ``jssc``) rebuilds the context from a
        checkpoint: its graph, its checkpoint directory, and the batches ``start()`` replays."""
        self._ctx = sparkContext if sparkContext is not None else Context.getOrCreate()
        self._interval_ms = to_ms(batchDuration, "batchDuration")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._graph = DStreamGraph(self) if restored is None else restored.graph
        self._bus = ListenerBus()
        #: the newest batches, for statistics(), plot() and the live views
        self._statistics = StreamStatistics(self._interval_ms, retained_batches(self._ctx.conf),
                                            self._input_name)
        self._bus.add(self._statistics)
        self._views = StreamViews(self._statistics, self._describe, self._ctx.conf)
        self._state: State = "initialized"
        self._lock = threading.RLock()
        #: signalled when the context stops or a batch fails
        self._waiter = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        #: while the context stops after a stateful batch failed (awaitTermination waits for the stop)
        self._failing = False
        self._checkpoint_dir: str | None = None
        self._checkpoint_location: Location | None = None
        #: the checkpoint this context was rebuilt from (getOrCreate), replayed at start()
        self._restored_from = None if restored is None else restored.checkpoint
        #: the failed batches of the checkpoint this context was rebuilt from, retried at start()
        self._restored_failed: list[FailedBatch] = [] if restored is None else failed_batches(restored.checkpoint)
        self._scheduler = JobScheduler(self._clock, self._bus, self.report_error, self._on_batch_completed,
                                       on_fatal=self._stop_after_failure)
        self._generator = JobGenerator(self._clock, self._interval_ms, self._graph, self._scheduler,
                                       self.report_error)
        if restored is not None:
            # the checkpoint directory first: attaching reads the data snapshots below it, with its options
            self.checkpoint(restored.directory)
            self._graph.attach(self)

    # -- properties -----------------------------------------------------------------------------------
    @property
    def sparkContext(self) -> Context:
        return self._ctx

    @property
    def batchDuration(self) -> float:
        return self._interval_ms / 1000.0

    # -- the internal surface for operators, sources and checkpointers (dstream.graph.StreamRuntime) ----
    @property
    def clock(self) -> Clock:
        """What the batch timer waits on."""
        return self._clock

    @property
    def graph(self) -> DStreamGraph:
        """The input and output streams declared on this context."""
        return self._graph

    @property
    def interval_ms(self) -> int:
        """The batch interval in milliseconds."""
        return self._interval_ms

    @property
    def listener_bus(self) -> ListenerBus:
        """Where streaming listener events are posted."""
        return self._bus

    @property
    def checkpoint_dir(self) -> str | None:
        """The metadata checkpoint directory, or None when the context does not checkpoint."""
        return self._checkpoint_dir

    @property
    def checkpoint_location(self) -> Location | None:
        """The metadata checkpoint directory with its storage options, or None."""
        return self._checkpoint_location

    @property
    def restored_from(self) -> Any:
        """The checkpoint (``driver.checkpoint.Checkpoint``) this context was rebuilt from, or None."""
        return self._restored_from

    def check_can_declare(self) -> None:
        """Raise unless inputs, operators and outputs may still be added (before ``start()``)."""
        if self._state != "initialized":
            raise RuntimeError("Adding new inputs, transformations, and output operations after starting "
                               "a context is not supported")

    def report_error(self, error: BaseException) -> None:
        """Fail the stream: ``awaitTermination`` raises ``error`` (later batches still run)."""
        with self._waiter:
            if self._error is None:
                self._error = error
            self._waiter.notify_all()

    def wait_for_batch(self, time_ms: int, timeout: float | None = 30.0) -> bool:
        """Wait until batch ``time_ms`` has completed (ManualClock tests); False on timeout."""
        return self._scheduler.wait_for_batch(time_ms, timeout)

    # -- inputs ---------------------------------------------------------------------------------------
    def queueStream(self, rdds: Iterable[RDD | Iterable[Any]], oneAtATime: bool = True,
                    default: RDD | Iterable[Any] | None = None) -> DStream:
        """A stream of the given RDDs (or lists): one per batch, or all at once; then ``default`` or empty."""
        return QueueInputDStream(self, rdds, oneAtATime, default)

    def textFileStream(self, directory: str, storage_options: dict[str, Any] | None = None,
                       maxFilesPerTrigger: int | None = None) -> DStream:
        """Lines of the new text files in ``directory`` (a local path or any fsspec URL: ``s3://``, ...).

        A file counts once, in the batch in which it appears (a file replaced under the same name counts
        again); move files in atomically (rename, or an object store's PUT). The directory is listed afresh
        every batch; a listing that fails fails its batch, and a later batch takes the files.
        ``storage_options`` (fsspec's, e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``) reach
        the listing on the driver and the reads in the tasks; without them fsspec's configuration and the
        environment apply (``AWS_*``, ``FSSPEC_S3_*``). Secrets are left out of checkpoints: a restored
        stream takes them from the environment.
        ``memory://`` works only with the thread executor, whose tasks share the driver's memory.
        ``maxFilesPerTrigger`` (Structured Streaming's option) takes at most that many new files a batch,
        the oldest first (by modification time, then name); the others wait for later batches (also across
        a restart from the checkpoint), none is dropped.
        """
        return FileInputDStream(self, directory, "textFileStream", storage_options=storage_options,
                                max_files_per_trigger=maxFilesPerTrigger)

    def binaryRecordsStream(self, directory: str, recordLength: int,
                            storage_options: dict[str, Any] | None = None,
                            maxFilesPerTrigger: int | None = None) -> DStream:
        """Fixed-length byte records of the new files in ``directory`` (as ``textFileStream``)."""
        if not isinstance(recordLength, int) or recordLength < 1:
            raise ValueError(f"recordLength must be a positive integer, got {recordLength!r}")
        return FileInputDStream(self, directory, "binaryRecordsStream", recordLength,
                                storage_options=storage_options, max_files_per_trigger=maxFilesPerTrigger)

    def socketTextStream(self, hostname: str, port: int, storageLevel: Any = None) -> DStream:
        """Lines received from a TCP server at ``hostname:port``. The receiver takes at most
        ``spark.streaming.receiver.maxRate`` lines a second (conf; default no limit), and with
        ``spark.streaming.backpressure.enabled`` at most what the batches show the processing sustains
        (``dstream.driver.rate``); over the rate it stops reading, so TCP makes the sender wait."""
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        return SocketInputDStream(self, hostname, port)

    def union(self, *dstreams: DStream) -> DStream:
        if not dstreams:
            raise ValueError("union needs at least one DStream")
        for d in dstreams[1:]:
            dstreams[0]._check_same_slide(d, "union")
        return UnionDStream(list(dstreams))

    def transform(self, dstreams: list[DStream], transformFunc: Callable) -> DStream:
        """A stream of ``transformFunc(rdds)`` or ``transformFunc(time, rdds)`` over several streams."""
        if not dstreams:
            raise ValueError("transform needs at least one DStream")
        for d in dstreams[1:]:
            dstreams[0]._check_same_slide(d, "transform")
        takes_time = len([p for p in _params(transformFunc)]) >= 2
        func = (lambda t, *rdds: transformFunc(ms_to_datetime(t), list(rdds))) if takes_time else \
            (lambda t, *rdds: transformFunc(list(rdds)))
        return TransformedDStream(list(dstreams), func, f"transform({_fn_name(transformFunc)})")

    # -- configuration --------------------------------------------------------------------------------
    def remember(self, duration: float) -> None:
        """Keep each stream's RDDs for at least ``duration`` seconds (for ``slice`` or ad-hoc queries)."""
        self._graph.remember_ms = to_ms(duration, "duration")

    def checkpoint(self, directory: str | Location, storage_options: Mapping[str, Any] | None = None) -> None:
        """Checkpoint to ``directory`` (an fsspec URL: a local path, ``s3://bucket/prefix``, ...): metadata
        every batch, stateful streams' data every checkpoint interval. ``storage_options`` (fsspec's, e.g.
        ``{"endpoint_url": ..., "key": ..., "secret": ...}``) open it; without them fsspec's configuration
        and the environment apply (``AWS_*``). Secrets in them never show in logs, errors or checkpoints.

        Only the job's owner may be able to write there: restoring a checkpoint unpickles (runs) the code
        stored in it. Set ``dstream.checkpoint.key`` (conf) or ``DSTREAM_CHECKPOINT_KEY`` to sign the
        checkpoints, so that a restore refuses any file not written with the key."""
        location = Location.of(directory, storage_options)
        try:
            location.fs.makedirs(location.path, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - named by URL, secrets masked
            raise location.failure("creating the checkpoint directory", exc) from None
        self._checkpoint_location = location
        self._checkpoint_dir = location.url
        # data snapshots go below it, with the same storage options (a plain URL when there are none)
        data = data_dir(location.url)
        self._ctx.setCheckpointDir(Location(data, location.storage_options) if location.storage_options else data)

    def addStreamingListener(self, streamingListener: StreamingListener) -> None:
        self._bus.add(streamingListener)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start generating and running batches."""
        with self._lock:
            if self._state == "active":
                raise RuntimeError("StreamingContext has already been started")
            if self._state == "stopped":
                raise RuntimeError("StreamingContext has already been stopped")
            self._graph.validate()
            check_functions(self._graph, checkpointing=self._checkpoint_dir is not None)
            self._scheduler.stop_on_stateful_failure = conf_bool(self._ctx.conf, STOP_ON_STATEFUL_FAILURE, True)
            stateful = [st.name for st in self._graph.all_streams() if st.must_checkpoint]
            if stateful and self._checkpoint_dir is None and self._ctx.checkpoint_dir is None:
                raise ValueError(f"The checkpoint directory has not been set: {', '.join(stateful)} keep state "
                                 f"across batches and need StreamingContext.checkpoint(directory) (or at "
                                 f"least Context.setCheckpointDir(directory) for their data snapshots)")
            if self._checkpoint_dir is not None:
                self._generator.checkpointer = StreamCheckpointer(self, self._checkpoint_location)
            elif stateful:
                self._generator.checkpointer = SnapshotOnlyCheckpointer(self)
            with StreamingContext._active_lock:
                active = StreamingContext._active
                if active is not None and active is not self and active._state == "active":
                    raise RuntimeError("Only one StreamingContext may be started in this process")
                StreamingContext._active = self
            try:
                self._views.start()  # first: a status page whose port is taken stops the start here
            except BaseException:
                with StreamingContext._active_lock:
                    if StreamingContext._active is self:
                        StreamingContext._active = None
                raise
            self._bus.start()
            self._scheduler.start()
            if self._restored_from is not None:
                cp = self._restored_from
                #: batch times recomputed after the restart
                self.replayed_times = self._generator.restart(cp.time_ms, cp.pending_times, self._restored_failed)
                self._restored_failed = []
            else:
                self._generator.start()
            self._state = "active"
            self._bus.post("onStreamingStarted", self._clock.now_ms())

    def stop(self, stopSparkContext: bool = True, stopGraceFully: bool = False) -> None:
        """Stop generating batches. Not gracefully (the default): the running batch finishes, and the batches
        queued behind it do not run (they stay pending in the checkpoint, for a restart). Gracefully: the
        batches already due run first. From any thread; from inside an output operation it returns at once,
        and the stop completes (the Context stopped last) once that batch, and with ``stopGraceFully`` the
        batches due, are done: ``awaitTermination`` waits for it. Stopping twice is harmless."""
        with self._lock:
            if self._state == "stopped":
                return
            was_active = self._state == "active"
            self._state = "stopped"
        if was_active:
            self._generator.stop_generating(graceful=stopGraceFully)
            self._graph.stop()
            self._scheduler.stop(graceful=stopGraceFully)  # from an output operation: does not wait
        with StreamingContext._active_lock:
            if StreamingContext._active is self:
                StreamingContext._active = None
        if was_active and self._scheduler.in_own_thread():
            threading.Thread(target=self._finish_stop, args=(stopSparkContext,), name="dstream-stop",
                             daemon=True).start()
        else:
            self._finish_stop(stopSparkContext)

    def _finish_stop(self, stop_context: bool) -> None:
        """The rest of a stop, once the scheduler ran its last batch: listeners, views, the Context."""
        self._scheduler.join()
        self._generator.stop_loop()  # after the last batch: its completion is checkpointed
        self._bus.stop()
        self._views.stop()
        if stop_context:
            self._ctx.stop()
        with self._waiter:
            self._stopped = True
            self._failing = False
            self._waiter.notify_all()

    def awaitTermination(self, timeout: float | None = None) -> None:
        """Wait until stopped (or ``timeout`` seconds); raise the error of a failed batch."""
        self.awaitTerminationOrTimeout(timeout)

    def awaitTerminationOrTimeout(self, timeout: float | None) -> bool:
        """Wait until stopped or ``timeout`` seconds; True if stopped.

        As in Spark, a failed batch's error is raised from here as soon as it happens (the context keeps
        running its later batches); the error carries the user's traceback. A failed batch of an output that
        builds on state kept across batches stops the context (``dstream.stopOnStatefulFailure``): its error
        is raised once the context has stopped. ``retryFailedBatches`` and ``discardFailedBatches`` clear
        the error of the batches they handle, so this waits again.
        """
        with self._waiter:
            self._waiter.wait_for(lambda: self._stopped or (self._error is not None and not self._failing),
                                  timeout)
            if self._error is not None:
                raise self._error
            return self._stopped

    def _on_batch_completed(self, time_ms: int) -> None:
        self._generator.on_batch_completed(time_ms)

    # -- failed batches -------------------------------------------------------------------------------
    def failedBatches(self) -> list[int]:
        """The times (ms) of the batches that failed and stay pending, oldest first.

        A batch fails when one of its output operations raises (after ``spark.task.maxFailures`` attempts
        of a failing task). It is not counted as completed: its recorded input (files, queue items, log
        lines) stays in the checkpoint and in memory until ``retryFailedBatches`` recomputes it,
        ``discardFailedBatches`` gives it up, or a restart from the checkpoint recomputes it. On a context
        rebuilt by ``getOrCreate`` and not started yet: the failed batches of its checkpoint.
        """
        with self._lock:
            if self._state == "initialized":
                return [f.time_ms for f in self._restored_failed]
        return [f.time_ms for f in self._scheduler.failed_batches()]

    def retryFailedBatches(self, timeout: float | None = None) -> list[int]:
        """Recompute the failed batches, oldest first and ahead of new batches; return their times (ms).

        Each takes exactly the input it took before (the same files, read again; the same queue items or
        log lines) and runs all its output operations again: a file output already committed for the batch
        is skipped (``_SUCCESS``), a ``foreachRDD`` function runs again. Blocks until they have run (at
        most ``timeout`` seconds; not when called from an output operation, where they run after it). One
        that fails again stays failed, and its error is raised from ``awaitTermination`` (the error of the
        batches retried is cleared first). Before ``start()`` of a rebuilt context, returns the failed
        batches of its checkpoint, which ``start()`` recomputes first.
        """
        with self._lock:
            state = self._state
            if state == "initialized":
                times = [f.time_ms for f in self._restored_failed]
                if times:
                    log.info("%d failed batches of the checkpoint are recomputed first when the context starts",
                             len(times))
                return times
        if state == "stopped":
            raise RuntimeError("this StreamingContext has stopped; restart it from its checkpoint "
                               "(StreamingContext.getOrCreate), which recomputes its failed batches first")
        failed = [f.time_ms for f in self._scheduler.failed_batches()]
        if not failed:
            return []
        self._clear_error(failed)
        queued = self._generator.retry_failed(failed)
        if queued and not self._scheduler.wait_for_times(queued, timeout) and timeout is not None:
            log.warning("retryFailedBatches: not all of %d batches ran within %s s; they are still queued",
                        len(queued), timeout)
        return queued

    def discardFailedBatches(self) -> list[int]:
        """Give up the failed batches: their input is never processed. Returns their times (ms), and logs a
        warning naming each with its input (the files, records). The checkpoint stops listing them, so a
        restart does not recompute them. On a context rebuilt by ``getOrCreate`` and not started yet: the
        failed batches of its checkpoint, which ``start()`` then does not recompute.
        """
        with self._lock:
            state = self._state
            if state == "initialized":
                dropped, self._restored_failed = self._restored_failed, []
        if state == "active":
            dropped = self._scheduler.take_failed()
        elif state == "stopped":
            raise RuntimeError("this StreamingContext has stopped; rebuild it from its checkpoint "
                               "(StreamingContext.getOrCreate) and discard its failed batches before start()")
        if not dropped:
            return []
        times = [f.time_ms for f in dropped]
        self._clear_error(times)
        log.warning("discarding %d failed batches; their input is not processed: %s", len(dropped),
                    "; ".join(f"{batch_name(f.time_ms)} (failed {f.attempts} times: {f.reason}), input: "
                              f"{self._describe_input(f.time_ms)}" for f in dropped))
        if state == "active":
            self._generator.forget_failed()
        return times

    def _describe_input(self, time_ms: int) -> str:
        """What the inputs took for a batch: records, and files where the input names them."""
        parts = []
        for stream_id, info in sorted(self._graph.input_infos(time_ms).items()):
            files = info.metadata().get("files")
            took = ([f"{info.numRecords()} records"] if info.numRecords() or not files else []) + \
                ([f"files {', '.join(files)}"] if files else [])
            parts.append(f"{self._graph.inputs[stream_id].name}: {', '.join(took)}")
        return "; ".join(parts) or "none"

    def _clear_error(self, times_ms: list[int]) -> None:
        """Forget the reported error when it is one of these batches' (they are retried or given up)."""
        with self._waiter:
            if isinstance(self._error, BatchError) and self._error.time_ms in times_ms and not self._stopped:
                self._error = None

    def _stop_after_failure(self, error: BaseException) -> None:
        """A failed batch builds on state kept across batches (``dstream.stopOnStatefulFailure``): stop, and
        raise ``error`` from ``awaitTermination`` once stopped. Runs on the scheduler thread, which runs no
        further batch; the checkpoints written while stopping list the batch as failed."""
        with self._waiter:
            self._error = error  # the reason the context stops, ahead of any earlier batch's error
            self._failing = True  # until the stop is complete (_finish_stop)
        try:
            self.stop(stopSparkContext=False)
        except BaseException:
            with self._waiter:
                self._failing = False
                self._waiter.notify_all()
            raise

    # -- what a running stream looks like -------------------------------------------------------------
    def statistics(self) -> "pd.DataFrame":
        """The newest completed batches (``dstream.ui.retainedBatches``, default 1000), oldest first, as a
        pandas DataFrame: batch time, records (all inputs, and ``records[<input>]`` per input; NA where a
        file input did not count), scheduling, processing and total delay (ms), output operations and their
        durations, attempt, task retries, and whether and why the batch failed. Every batch completed
        before the call is in it."""
        self._bus.wait_until_empty()
        return self._statistics.to_frame()

    @property
    def uiWebUrl(self) -> str | None:  # noqa: N802 - PySpark's name (SparkContext.uiWebUrl)
        """The web status page's address while the stream runs with ``dstream.ui.port`` set, else None."""
        return self._views.web_url

    def plot(self, ax: Any = None) -> Any:
        """Draw input rate and delays over the retained batches with matplotlib; returns the figure."""
        self._bus.wait_until_empty()
        return plot_statistics(self._statistics, ax)

    def _input_name(self, stream_id: int) -> str:
        inputs = self._graph.inputs
        return inputs[stream_id].name if 0 <= stream_id < len(inputs) else f"input-{stream_id}"

    def _describe(self) -> dict[str, Any]:
        """This context as the live views show it (JSON-ready; names only, no secrets)."""
        return describe_stream(self._state, self._interval_ms, self._graph,
                               None if self._checkpoint_location is None else repr(self._checkpoint_location))

    def _repr_html_(self) -> str:
        return html_for_stream(self._describe(), self._statistics)

    def __repr__(self) -> str:
        inputs = ", ".join(inp.name for inp in self._graph.inputs) or "none"
        outputs = ", ".join(out.name for out in self._graph.outputs) or "none"
        return (f"<StreamingContext {self._state}, batchDuration={self.batchDuration:g} s, "
                f"{len(self._graph.inputs)} inputs: {inputs}; {len(self._graph.outputs)} outputs: {outputs}>")

    # -- the active context ---------------------------------------------------------------------------
    @classmethod
    def getActive(cls) -> "StreamingContext | None":
        with cls._active_lock:
            active = cls._active
        return active if active is not None and active._state == "active" else None

    @classmethod
    def getOrCreate(cls, checkpointPath: str | Location | None, setupFunc: Callable[[], "StreamingContext"],
                    clock: Clock | None = None, storage_options: Mapping[str, Any] | None = None,
                    onUnreadable: Literal["raise", "fresh"] = "raise") -> "StreamingContext":
        """Rebuild the context from the newest readable checkpoint under ``checkpointPath``; when there is
        none, call ``setupFunc()`` (which declares the streams) and checkpoint the context it returns to
        ``checkpointPath``, as PySpark does. ``storage_options`` (fsspec's) open ``checkpointPath``.

        ``clock`` is the rebuilt context's clock (tests pass a ManualClock; default the system clock).
        ``start()`` on a rebuilt context recomputes the batches that were pending when the driver died
        and those that fell due while it was down, then goes on. Raises ``CheckpointError`` when a
        checkpoint exists but cannot be restored (another dstream version, or changed code).

        A damaged newest checkpoint is skipped, with a warning, for the newest one that can be read. When
        checkpoint files exist but not one can be read, ``onUnreadable`` decides: ``"raise"`` (the
        default) raises ``UnreadableCheckpointError`` (a ``CheckpointError``) naming each file and why,
        and ``setupFunc`` is not called; ``"fresh"`` logs a warning naming them and calls ``setupFunc()``
        (the files are left there; the new context's checkpoints are written next to them).

        Signed checkpoints are verified, before anything is unpickled, with the ``dstream.checkpoint.key``
        of the active Context's conf, else ``$DSTREAM_CHECKPOINT_KEY``; a checkpoint that fails (or is
        unsigned while a key is set) raises ``CheckpointSignatureError`` naming it.
        """
        _check_on_unreadable(onUnreadable)
        if checkpointPath is not None:
            restored = read_checkpoint(checkpointPath, storage_options, key=_restore_key(),
                                       on_unreadable=onUnreadable)
            if restored is not None:
                cp = restored.checkpoint
                ctx = Context.getOrCreate(cp.master or "local[*]", conf=cp.conf)
                return cls(ctx, cp.interval_ms / 1000.0, clock=clock, restored=restored)
        ssc = setupFunc()
        if not isinstance(ssc, StreamingContext):
            raise TypeError(f"setupFunc must return a StreamingContext, got {type(ssc).__name__}")
        if checkpointPath is not None:
            wanted = Location.of(checkpointPath, storage_options)
            have = ssc.checkpoint_location
            if have is None or have.url != wanted.url or storage_options:
                # as PySpark does: the new context checkpoints where it was asked (keeping the storage
                # options setupFunc gave for the same URL)
                ssc.checkpoint(wanted)
        return ssc

    @classmethod
    def getActiveOrCreate(cls, checkpointPath: str | Location | None, setupFunc: Callable[[], "StreamingContext"],
                          storage_options: Mapping[str, Any] | None = None,
                          onUnreadable: Literal["raise", "fresh"] = "raise") -> "StreamingContext":
        """The active context, else ``getOrCreate(checkpointPath, setupFunc, storage_options=...,
        onUnreadable=...)``."""
        _check_on_unreadable(onUnreadable)
        active = cls.getActive()
        if active is not None:
            return active
        return cls.getOrCreate(checkpointPath, setupFunc, storage_options=storage_options,
                               onUnreadable=onUnreadable)


def _check_on_unreadable(value: Any) -> None:
    if value not in ("raise", "fresh"):
        raise ValueError(f'onUnreadable must be "raise" (the default: an error when no checkpoint file can be '
                         f'read) or "fresh" (start from setupFunc anyway), got {value!r}')


def _restore_key() -> bytes | None:
    """The key a restore verifies with: the active Context's ``dstream.checkpoint.key``, else the
    environment's (the restored Context is made from the checkpoint's conf, which never holds the key)."""
    active = Context.active()
    return checkpoint_key(active.conf if active is not None else None)


def _params(func: Callable) -> list[str]:
    try:
        return [p.name for p in inspect.signature(func).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return ["rdds"]
