"""Job generation and job scheduling for streams.

``JobGenerator`` turns clock ticks into batches: a RecurringTimer posts ``GenerateJobs(t)`` to an event
loop, which asks the stream graph for batch t's jobs and hands them to the ``JobScheduler``. The scheduler
runs one batch at a time, its output operations in declaration order; a job that raises is reported
and the next job and batch still run. State changes only on the event loop.

A batch with a failed job is *failed*, not completed: the scheduler keeps it (``FailedBatch``), the
checkpoint lists it (``failed_times``) and the graph keeps what recomputing it needs (``clear_metadata``'s
``keep``). ``JobGenerator.retry_failed`` (``StreamingContext.retryFailedBatches``) regenerates failed
batches and queues them ahead of new ones, in time order; a restart replays them with the pending ones.
When the failed job builds on state kept across batches (``Job.stateful``) and
``JobScheduler.stop_on_stateful_failure`` is set, later batches would build on a wrong state: the
scheduler runs no further batch and hands the error to ``on_fatal``, which stops the context.
"""
from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections import deque
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Callable, Collection, Literal, Protocol, Sequence

from dstream.driver.clock import Clock, precise_now_ms
from dstream.driver.events import EventLoop
from dstream.driver.listener import BatchInfo, ListenerBus, OutputOperationInfo, StreamInputInfo
from dstream.driver.retries import task_retries_in_thread
from dstream.driver.times import batch_name
from dstream.executors.base import TaskError, format_exception

log = logging.getLogger(__name__)


def records_wanted(bus: ListenerBus) -> bool:
    """Whether anyone reads the batches' record counts: a streaming listener, or the per-batch INFO log.
    Inputs that must do extra work to count (reading text files on the driver) count only then."""
    return bus.wants_record_counts() or log.isEnabledFor(logging.INFO)


class BatchError(RuntimeError):
    """An output operation of a batch failed; ``__cause__`` is the user's error. ``time_ms`` is the batch's
    time (None when the error is not one batch's)."""

    def __init__(self, message: str = "", time_ms: int | None = None) -> None:
        super().__init__(message)
        self.time_ms = time_ms

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.time_ms))


@dataclass
class Job:
    """One output operation of one batch."""

    time_ms: int
    output_id: int
    name: str
    run: Callable[[], None]
    #: the streams keeping state across batches that the output depends on (empty: a stateless output)
    stateful: tuple[str, ...] = ()


@dataclass
class JobSet:
    time_ms: int
    jobs: list[Job]
    info: BatchInfo
    #: runs before the jobs (the graph materialises its stateful RDDs here)
    prepare: Callable[[], None] | None = None
    #: 1 for the batch's first run, n for its (n-1)th retry after failing
    attempt: int = 1


@dataclass(frozen=True)
class FailedBatch:
    """A batch whose output operations did not all succeed: it stays pending until retried or discarded."""

    time_ms: int
    #: how many times it has run (and failed)
    attempts: int
    #: the first failed output operation and its error, in one line
    reason: str


class StreamGraph(Protocol):
    """What the driver needs of a stream graph (implemented by ``dstream``)."""

    def start(self, zero_time_ms: int) -> None: ...
    def restart(self) -> None: ...
    def generate_jobs(self, time_ms: int) -> list[Job]: ...
    def prepare_batch(self, time_ms: int) -> None: ...
    def input_infos(self, time_ms: int) -> dict[int, StreamInputInfo]:
        """Input stream id -> what that input took for batch ``time_ms`` (after ``generate_jobs``)."""
    def clear_metadata(self, time_ms: int, keep: Collection[int] = ()) -> None:
        """Forget what batch ``time_ms`` no longer needs, except what recomputing the batches ``keep``
        (failed or still pending) needs."""
    def prepare_replay(self, times_ms: list[int]) -> None: ...


class Checkpointer(Protocol):
    """Writes a metadata checkpoint of the graph (implemented with ``driver.checkpoint``)."""

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool, failed: Sequence[FailedBatch] = ()) -> None: ...


@dataclass(frozen=True)
class GenerateJobs:
    time_ms: int


@dataclass(frozen=True)
class ClearMetadata:
    time_ms: int


@dataclass(frozen=True)
class ReplayBatches:
    """After a restart: the batch times to recompute, oldest first (``attempts``: time -> the attempt
    number of each batch that had failed)."""

    times_ms: tuple[int, ...]
    attempts: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class RetryBatches:
    """Recompute failed batches (all, or those of ``times_ms``) ahead of new ones; ``done`` gets the times
    queued."""

    times_ms: tuple[int, ...] | None
    done: Future = field(compare=False)


@dataclass(frozen=True)
class ForgetBatches:
    """Failed batches were given up: forget what was kept for them, and checkpoint without them."""


@dataclass(frozen=True)
class Flush:
    """Set ``done`` once every event posted before this one has been handled."""

    done: threading.Event


Event = GenerateJobs | ClearMetadata | ReplayBatches | RetryBatches | ForgetBatches | Flush


class RecurringTimer:
    """Calls ``callback(t)`` at t = start, start + period, ... as ``clock`` reaches each t."""

    def __init__(self, clock: Clock, period_ms: int, callback: Callable[[int], None], name: str) -> None:
        self.clock = clock
        self.period_ms = period_ms
        self.callback = callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        #: the next time the timer will fire
        self.next_time_ms = 0

    def start(self, start_ms: int) -> None:
        self.next_time_ms = start_ms
        self._thread.start()

    def stop(self) -> int:
        """Stop the timer; return the last time it fired."""
        self._stop.set()
        self.clock.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()
        return self.next_time_ms - self.period_ms

    def _run(self) -> None:
        while not self._stop.is_set():
            self.clock.wait_until_ms(self.next_time_ms, self._stop)
            if self._stop.is_set():
                return
            self.callback(self.next_time_ms)
            self.next_time_ms += self.period_ms


class JobScheduler:
    """Runs job sets one after another on its own thread; keeps the batches that failed."""

    def __init__(self, clock: Clock, bus: ListenerBus, on_error: Callable[[BaseException], None],
                 on_batch_completed: Callable[[int], None],
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.clock = clock
        self.bus = bus
        self.on_error = on_error
        self.on_batch_completed = on_batch_completed
        #: called (on this thread) with the error of a stateful batch that failed, when that stops the stream
        self.on_fatal = on_fatal
        #: whether a failed output that depends on state kept across batches stops the scheduler
        self.stop_on_stateful_failure = True
        self._queue: deque[JobSet] = deque()
        self._cond = threading.Condition()
        self._stopping: Literal["no", "graceful", "now"] = "no"
        self._running: JobSet | None = None
        #: failed batches by time, until they are retried or discarded
        self._failed: dict[int, FailedBatch] = {}
        #: set after a fatal failure: no further batch runs (the queued ones stay pending)
        self._halted = False
        #: batches queued when a non-graceful stop came: never run here, pending for a restart
        self._abandoned: list[int] = []
        #: set when the scheduler thread has ended
        self._exited = False
        #: the newest batch time whose jobs have all finished (succeeded or failed)
        self.last_completed_ms: int | None = None
        self._thread = threading.Thread(target=self._run, name="dstream-job-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job_set: JobSet) -> bool:
        """Queue a batch (after the queued ones); False when the scheduler is stopping."""
        with self._cond:
            if self._stopping != "no":
                return False
            # Posted before the batch can start, so listeners see Submitted before Started.
            self.bus.post("onBatchSubmitted", job_set.info)
            self._queue.append(job_set)
            self._cond.notify_all()
            return True

    def resubmit(self, job_sets: Sequence[JobSet]) -> list[int]:
        """Queue failed batches again, ahead of the new ones and in time order; each stops counting as
        failed as it is queued (in one step, so a checkpoint always lists it as failed or pending). Returns
        the times queued: none when the scheduler is stopping (they stay failed)."""
        with self._cond:
            if self._stopping != "no":
                return []
            queued = []
            for job_set in sorted(job_sets, key=lambda js: js.time_ms):
                if self._failed.pop(job_set.time_ms, None) is None:
                    continue  # retried or discarded meanwhile
                self.bus.post("onBatchSubmitted", job_set.info)
                # after the retries queued before it, ahead of every new batch
                at = next((i for i, queued_set in enumerate(self._queue)
                           if queued_set.attempt == 1 or queued_set.time_ms > job_set.time_ms), len(self._queue))
                self._queue.insert(at, job_set)
                queued.append(job_set.time_ms)
            self._cond.notify_all()
            return queued

    def pending_times(self) -> list[int]:
        with self._cond:
            return self._pending()

    def _pending(self) -> list[int]:
        times = [js.time_ms for js in self._queue] + self._abandoned
        if self._running is not None:
            times.insert(0, self._running.time_ms)
        return sorted(times)

    def outstanding(self) -> tuple[list[int], list[FailedBatch]]:
        """The pending batch times and the failed batches, taken together (a batch is in one or the other)."""
        with self._cond:
            return self._pending(), sorted(self._failed.values(), key=lambda f: f.time_ms)

    def failed_batches(self) -> list[FailedBatch]:
        """The failed batches not yet retried or discarded, oldest first."""
        return self.outstanding()[1]

    def take_failed(self, times_ms: Collection[int] | None = None) -> list[FailedBatch]:
        """Stop keeping failed batches (all, or those of ``times_ms``); the ones dropped, oldest first."""
        with self._cond:
            times = list(self._failed) if times_ms is None else [t for t in times_ms if t in self._failed]
            return sorted((self._failed.pop(t) for t in times), key=lambda f: f.time_ms)

    def stop(self, graceful: bool) -> None:
        """Run no new batch (``graceful``: only those already queued); wait for the thread to end, unless
        called on it (from an output operation), which ends once the running batch is done."""
        with self._cond:
            self._stopping = "graceful" if graceful else "now"
            if not graceful:
                # not run, but still pending: the checkpoints written from now on list them for a restart
                self._abandoned += [js.time_ms for js in self._queue]
                self._queue.clear()
            self._cond.notify_all()
        self.join()

    def in_own_thread(self) -> bool:
        """Whether the caller runs on the scheduler's thread (inside an output operation)."""
        return threading.current_thread() is self._thread

    def join(self) -> None:
        """Wait for the scheduler's thread to end (at once from that thread itself)."""
        if not self.in_own_thread() and self._thread.ident is not None:
            self._thread.join()

    def wait_for_batch(self, time_ms: int, timeout: float | None) -> bool:
        """Block until batch ``time_ms`` (and all before it) has finished; False on timeout, or when the
        scheduler ended first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.last_completed_ms is not None and self.last_completed_ms >= time_ms or self._exited,
                timeout) and self.last_completed_ms is not None and self.last_completed_ms >= time_ms

    def wait_for_times(self, times_ms: Collection[int], timeout: float | None) -> bool:
        """Block until none of the batches ``times_ms`` is queued or running; False on timeout (at once,
        from the scheduler's own thread: an output operation, which they wait for)."""
        if threading.current_thread() is self._thread:
            return False
        wanted = set(times_ms)
        with self._cond:
            return self._cond.wait_for(lambda: self._exited or not wanted & set(self._pending()), timeout)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and self._stopping == "no" and not self._halted:
                        self._cond.wait()
                    if not self._queue or self._halted:
                        return
                    job_set = self._running = self._queue.popleft()
                reason, fatal = self._run_job_set(job_set)
                with self._cond:
                    self._running = None
                    if reason is not None:
                        self._failed[job_set.time_ms] = FailedBatch(job_set.time_ms, job_set.attempt, reason)
                    if fatal is None:
                        self._completed(job_set.time_ms)
                    else:
                        self._halted = True
                self.on_batch_completed(job_set.time_ms)
                if fatal is not None:
                    # The batch is recorded as failed first: the checkpoints written while the context stops
                    # list it, and every batch after it as pending.
                    (self.on_fatal or self.on_error)(fatal)
                    with self._cond:
                        self._completed(job_set.time_ms)
        finally:
            with self._cond:
                self._exited = True
                self._cond.notify_all()

    def _completed(self, time_ms: int) -> None:
        if self.last_completed_ms is None or time_ms > self.last_completed_ms:
            self.last_completed_ms = time_ms
        self._cond.notify_all()

    def _run_job_set(self, job_set: JobSet) -> tuple[str | None, BatchError | None]:
        """Run a batch's jobs; the first failure's reason (None when all succeeded) and, when a failed job
        stops the stream, its error (the others' go to ``on_error`` as they happen)."""
        info = job_set.info
        info._started(precise_now_ms(self.clock))
        self.bus.post("onBatchStarted", info)
        if job_set.prepare is not None:
            try:
                job_set.prepare()
            except BaseException as exc:  # noqa: BLE001 - the jobs below report what it breaks
                log.warning("preparing %s failed: %s", batch_name(job_set.time_ms), exc)
        failed = 0
        reason: str | None = None
        fatal: BatchError | None = None
        for job in job_set.jobs:
            op = info._output_operation(job.output_id)
            op._started(precise_now_ms(self.clock))
            self.bus.post("onOutputOperationStarted", op)
            failure = None
            retries = task_retries_in_thread()
            try:
                job.run()
            except BaseException as exc:  # noqa: BLE001 - report it; later jobs and batches still run
                failed += 1
                failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                if reason is None:
                    reason = f"output operation {job.output_id} ({job.name}) failed: {failure.splitlines()[0]}"
                # A TaskError's text already holds the executor's traceback; else show the driver's.
                detail = str(exc) if isinstance(exc, TaskError) else format_exception(exc).rstrip()
                stops = bool(job.stateful) and self.stop_on_stateful_failure
                note = (f" The StreamingContext stops: the output builds on {', '.join(job.stateful)}, which "
                        f"keeps state across batches, so later batches would build on a wrong state "
                        f"(dstream.stopOnStatefulFailure). The batch stays pending in the checkpoint: restart "
                        f"from it once the cause is fixed, and the batch is recomputed from the last good state."
                        if stops else "")
                error = BatchError(f"{batch_name(job.time_ms)}, output operation {job.output_id} ({job.name}) "
                                   f"failed:{note} {detail}", job.time_ms)
                error.__cause__ = exc
                log.error("%s", error)
                if stops:
                    fatal = fatal or error
                else:
                    self.on_error(error)
            op._completed(precise_now_ms(self.clock), failure, task_retries_in_thread() - retries)
            self.bus.post("onOutputOperationCompleted", op)
        info._completed(precise_now_ms(self.clock))
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %d records, scheduling delay %d ms, processing delay %d ms, total delay %d ms%s%s%s",
                     batch_name(job_set.time_ms), info.numRecords(), info.schedulingDelay(),
                     info.processingDelay(), info.totalDelay(),
                     f", attempt {job_set.attempt}" if job_set.attempt > 1 else "",
                     f", {info.taskRetries()} task retries" if info.taskRetries() else "",
                     f", {failed} of {len(job_set.jobs)} output operations failed" if failed else "")
        if reason is not None and fatal is None:
            log.warning("%s failed (attempt %d): %s. It stays pending: StreamingContext.retryFailedBatches() "
                        "recomputes it, discardFailedBatches() gives it up, and a restart from the checkpoint "
                        "retries it.", batch_name(job_set.time_ms), job_set.attempt, reason)
        elif reason is None and job_set.attempt > 1:
            log.warning("%s succeeded on attempt %d", batch_name(job_set.time_ms), job_set.attempt)
        self.bus.post("onBatchCompleted", info)
        return reason, fatal


class JobGenerator:
    """Generates a job set per batch interval from the stream graph; the event loop owns its state."""

    def __init__(self, clock: Clock, interval_ms: int, graph: StreamGraph, scheduler: JobScheduler,
                 on_error: Callable[[BaseException], None], checkpointer: Checkpointer | None = None) -> None:
        self.clock = clock
        #: writes the metadata checkpoint after each batch is generated and after it completes
        self.checkpointer = checkpointer
        self.interval_ms = interval_ms
        self.graph = graph
        self.scheduler = scheduler
        self.on_error = on_error
        self.timer = RecurringTimer(clock, interval_ms, lambda t: self.loop.post(GenerateJobs(t)),
                                    "dstream-batch-timer")
        self.loop: EventLoop[Event] = EventLoop("dstream-job-generator", self._on_event, on_error)
        #: the newest batch time whose jobs were generated
        self.last_generated_ms: int | None = None
        #: the newest batch time a checkpoint was written for: later writes never go under an older time
        #: (a retried batch completing writes the current state under the newest one)
        self.last_checkpoint_ms: int | None = None

    def start(self) -> int:
        """Start at the first interval boundary after now; return the zero time (one interval before)."""
        start = (self.clock.now_ms() // self.interval_ms + 1) * self.interval_ms
        zero = start - self.interval_ms
        self.graph.start(zero)
        self.loop.start()
        self.timer.start(start)
        return zero

    def restart(self, checkpoint_time_ms: int, pending_times: list[int],
                failed: Sequence[FailedBatch] = ()) -> list[int]:
        """Resume from a checkpoint: replay its failed and pending batches and every batch that fell due
        while the driver was down, in time order, then go on with the timer. Returns the replayed times."""
        self.last_generated_ms = checkpoint_time_ms
        self.last_checkpoint_ms = checkpoint_time_ms
        restart = (self.clock.now_ms() // self.interval_ms + 1) * self.interval_ms
        down = range(checkpoint_time_ms + self.interval_ms, restart, self.interval_ms)
        attempts = {f.time_ms: f.attempts + 1 for f in failed}
        times = sorted(set(pending_times) | set(attempts) | set(down))
        self.graph.restart()
        self.loop.start()
        if times:
            self.last_generated_ms = min(times) - self.interval_ms
            log.info("restarting from the checkpoint of %s: recomputing %d batches, %s to %s",
                     batch_name(checkpoint_time_ms), len(times), batch_name(times[0]), batch_name(times[-1]))
            if attempts:
                log.warning("retrying %d failed batches first: %s", len(attempts),
                            ", ".join(batch_name(t) for t in sorted(attempts)))
            self.loop.post(ReplayBatches(tuple(times), tuple(sorted(attempts.items()))))
        self.timer.start(restart)
        return times

    def stop_generating(self, graceful: bool) -> None:
        """Stop the timer. Gracefully, the batches already due on the clock are generated first: this returns
        once they are queued on the scheduler. The event loop keeps running (``stop_loop``), so the batches
        the scheduler still runs are checkpointed as they complete."""
        self.timer.stop()
        if graceful:
            now = self.clock.now_ms()
            t = (self.last_generated_ms or self.timer.next_time_ms - self.interval_ms) + self.interval_ms
            while t <= now:
                self.loop.post(GenerateJobs(t))
                t += self.interval_ms
        if not self.loop.in_loop() and self.loop.is_running and not self.loop.is_stopped:
            flushed = threading.Event()
            self.loop.post(Flush(flushed))
            flushed.wait()

    def stop_loop(self) -> None:
        """Stop the event loop once the events posted so far (the last checkpoints) are handled."""
        self.loop.stop(wait=True)

    def on_batch_completed(self, time_ms: int) -> None:
        self.loop.post(ClearMetadata(time_ms))

    def retry_failed(self, times_ms: Collection[int] | None = None) -> list[int]:
        """Have the event loop regenerate the failed batches (all, or those of ``times_ms``) and queue them
        ahead of new ones; the times queued. Returns once they are queued (not run); from the event loop's
        own thread, at once with ``[]`` (they are queued after the current event)."""
        done: Future = Future()
        self.loop.post(RetryBatches(None if times_ms is None else tuple(sorted(times_ms)), done))
        if self.loop.in_loop():
            return []
        while not done.done():
            wait_futures([done], timeout=0.1)
            if self.loop.is_stopped and not self.loop.is_running:
                break  # stopped before handling it: the batches stay failed
        return done.result() if done.done() else []

    def forget_failed(self) -> None:
        """After failed batches were given up: free what was kept for them, and checkpoint without them."""
        self.loop.post(ForgetBatches())

    def _on_event(self, event: Event) -> None:
        if isinstance(event, GenerateJobs):
            self._generate(event.time_ms)
        elif isinstance(event, ClearMetadata):
            self._clear_metadata(event.time_ms)
            self._checkpoint(event.time_ms, batch_completed=True)
        elif isinstance(event, ReplayBatches):
            # Recompute the lost batches' independent work together, in parallel, then run them in order.
            try:
                self.graph.prepare_replay(list(event.times_ms))
            except BaseException as exc:  # noqa: BLE001 - the batches themselves will report it
                log.warning("parallel recomputation before replay failed: %s", exc)
            attempts = dict(event.attempts)
            for t in event.times_ms:
                self._generate(t, attempts.get(t, 1))
        elif isinstance(event, RetryBatches):
            try:
                event.done.set_result(self._retry(event.times_ms))
            except BaseException as exc:  # noqa: BLE001 - the caller gets it
                event.done.set_exception(exc)
                raise
        elif isinstance(event, Flush):
            event.done.set()
        elif isinstance(event, ForgetBatches):
            if self.scheduler.last_completed_ms is not None:
                self._clear_metadata(self.scheduler.last_completed_ms)
                self._checkpoint(self.scheduler.last_completed_ms, batch_completed=True)

    def _clear_metadata(self, time_ms: int) -> None:
        pending, failed = self.scheduler.outstanding()
        self.graph.clear_metadata(time_ms, keep=set(pending) | {f.time_ms for f in failed})

    def _retry(self, times_ms: tuple[int, ...] | None) -> list[int]:
        failed = [f for f in self.scheduler.failed_batches() if times_ms is None or f.time_ms in times_ms]
        job_sets = []
        for f in failed:
            job_set, error = self._job_set(f.time_ms, f.attempts + 1)
            if error is not None:  # it stays failed
                self.on_error(error)
                continue
            job_sets.append(job_set)
        queued = self.scheduler.resubmit(job_sets)
        if queued:
            log.info("retrying %d failed batches: %s", len(queued), ", ".join(batch_name(t) for t in queued))
        return queued

    def _checkpoint(self, time_ms: int, batch_completed: bool) -> None:
        if self.checkpointer is None:
            return
        pending, failed = self.scheduler.outstanding()
        if not batch_completed and time_ms not in pending:
            pending.append(time_ms)
        if self.last_checkpoint_ms is not None and time_ms < self.last_checkpoint_ms:
            time_ms = self.last_checkpoint_ms  # the state now, under the newest time written (read first)
        self.last_checkpoint_ms = time_ms
        try:
            self.checkpointer.write(time_ms, sorted(pending), self.scheduler.last_completed_ms, batch_completed,
                                    failed)
        except BaseException as exc:  # noqa: BLE001
            error = BatchError(f"writing the checkpoint of {batch_name(time_ms)} failed: {exc}")
            error.__cause__ = exc
            self.on_error(error)

    def _job_set(self, time_ms: int, attempt: int) -> tuple[JobSet, BatchError | None]:
        """Batch ``time_ms``'s jobs (none, and the error, when the graph cannot generate them)."""
        submitted = precise_now_ms(self.clock)
        error = None
        try:
            jobs = self.graph.generate_jobs(time_ms)
        except BaseException as exc:  # noqa: BLE001
            error = BatchError(f"generating the jobs of {batch_name(time_ms)} failed: "
                               f"{format_exception(exc).rstrip()}", time_ms)
            error.__cause__ = exc
            jobs = []
        info = BatchInfo(time_ms, submitted, self.graph.input_infos(time_ms),
                         {j.output_id: OutputOperationInfo(time_ms, j.output_id, j.name) for j in jobs},
                         attempt=attempt)
        log.debug("generated %s: %d output operations", batch_name(time_ms), len(jobs))
        return JobSet(time_ms, jobs, info, functools.partial(self.graph.prepare_batch, time_ms), attempt), error

    def _generate(self, time_ms: int, attempt: int = 1) -> None:
        if self.last_generated_ms is not None and time_ms <= self.last_generated_ms:
            return
        self.last_generated_ms = time_ms
        job_set, error = self._job_set(time_ms, attempt)
        if error is not None:
            self.on_error(error)
        # The batch's input is recorded durably before any of its jobs runs.
        self._checkpoint(time_ms, batch_completed=False)
        self.scheduler.submit(job_set)
