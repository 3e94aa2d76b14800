"""Job generation and job scheduling for streams.

``JobGenerator`` turns clock ticks into batches: a RecurringTimer posts ``GenerateJobs(t)`` to an event
loop, which asks the stream graph for batch t's jobs and hands them to the ``JobScheduler``. The scheduler
runs one batch at a time, its output operations in declaration order; a job that raises is reported
and the next job and batch still run. State changes only on the event loop.
"""
from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

from dstream.driver.clock import Clock
from dstream.driver.events import EventLoop
from dstream.driver.listener import BatchInfo, ListenerBus, OutputOperationInfo, StreamInputInfo
from dstream.driver.times import batch_name
from dstream.executors.base import TaskError, format_exception

log = logging.getLogger(__name__)


def records_wanted(bus: ListenerBus) -> bool:
    """Whether anyone reads the batches' record counts: a streaming listener, or the per-batch INFO log.
    Inputs that must do extra work to count (reading text files on the driver) count only then."""
    return bus.has_listeners() or log.isEnabledFor(logging.INFO)


class BatchError(RuntimeError):
    """An output operation of a batch failed; ``__cause__`` is the user's error."""


@dataclass
class Job:
    """One output operation of one batch."""

    time_ms: int
    output_id: int
    name: str
    run: Callable[[], None]


@dataclass
class JobSet:
    time_ms: int
    jobs: list[Job]
    info: BatchInfo
    #: runs before the jobs (the graph materialises its stateful RDDs here)
    prepare: Callable[[], None] | None = None


class StreamGraph(Protocol):
    """What the driver needs of a stream graph (implemented by ``dstream``)."""

    def start(self, zero_time_ms: int) -> None: ...
    def restart(self) -> None: ...
    def generate_jobs(self, time_ms: int) -> list[Job]: ...
    def prepare_batch(self, time_ms: int) -> None: ...
    def input_infos(self, time_ms: int) -> dict[int, StreamInputInfo]:
        """Input stream id -> what that input took for batch ``time_ms`` (after ``generate_jobs``)."""
    def clear_metadata(self, time_ms: int) -> None: ...
    def prepare_replay(self, times_ms: list[int]) -> None: ...


class Checkpointer(Protocol):
    """Writes a metadata checkpoint of the graph (implemented with ``driver.checkpoint``)."""

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool) -> None: ...


@dataclass(frozen=True)
class GenerateJobs:
    time_ms: int


@dataclass(frozen=True)
class ClearMetadata:
    time_ms: int


@dataclass(frozen=True)
class ReplayBatches:
    """After a restart: the batch times to recompute, oldest first."""

    times_ms: tuple[int, ...]


Event = GenerateJobs | ClearMetadata | ReplayBatches


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
    """Runs job sets one after another on its own thread."""

    def __init__(self, clock: Clock, bus: ListenerBus, on_error: Callable[[BaseException], None],
                 on_batch_completed: Callable[[int], None]) -> None:
        self.clock = clock
        self.bus = bus
        self.on_error = on_error
        self.on_batch_completed = on_batch_completed
        self._queue: deque[JobSet] = deque()
        self._cond = threading.Condition()
        self._stopping: Literal["no", "graceful", "now"] = "no"
        self._running: JobSet | None = None
        #: the newest batch time whose jobs have all finished
        self.last_completed_ms: int | None = None
        self._thread = threading.Thread(target=self._run, name="dstream-job-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job_set: JobSet) -> None:
        with self._cond:
            if self._stopping != "no":
                return
            # Posted before the batch can start, so listeners see Submitted before Started.
            self.bus.post("onBatchSubmitted", job_set.info)
            self._queue.append(job_set)
            self._cond.notify_all()

    def pending_times(self) -> list[int]:
        with self._cond:
            times = [js.time_ms for js in self._queue]
            if self._running is not None:
                times.insert(0, self._running.time_ms)
            return times

    def stop(self, graceful: bool) -> None:
        with self._cond:
            self._stopping = "graceful" if graceful else "now"
            if not graceful:
                self._queue.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def wait_for_batch(self, time_ms: int, timeout: float | None) -> bool:
        """Block until batch ``time_ms`` (and all before it) has finished; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.last_completed_ms is not None and self.last_completed_ms >= time_ms, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._stopping == "no":
                    self._cond.wait()
                if not self._queue:
                    return
                job_set = self._running = self._queue.popleft()
            self._run_job_set(job_set)
            with self._cond:
                self._running = None
                self.last_completed_ms = job_set.time_ms
                self._cond.notify_all()
            self.on_batch_completed(job_set.time_ms)

    def _run_job_set(self, job_set: JobSet) -> None:
        info = job_set.info
        info._started(self.clock.now_ms())
        self.bus.post("onBatchStarted", info)
        if job_set.prepare is not None:
            try:
                job_set.prepare()
            except BaseException as exc:  # noqa: BLE001 - the jobs below report what it breaks
                log.warning("preparing %s failed: %s", batch_name(job_set.time_ms), exc)
        failed = 0
        for job in job_set.jobs:
            op = info._output_operation(job.output_id)
            op._started(self.clock.now_ms())
            self.bus.post("onOutputOperationStarted", op)
            failure = None
            try:
                job.run()
            except BaseException as exc:  # noqa: BLE001 - report it; later jobs and batches still run
                failed += 1
                failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                # A TaskError's text already holds the executor's traceback; else show the driver's.
                detail = str(exc) if isinstance(exc, TaskError) else format_exception(exc).rstrip()
                error = BatchError(f"{batch_name(job.time_ms)}, output operation {job.output_id} ({job.name}) "
                                   f"failed: {detail}")
                error.__cause__ = exc
                log.error("%s", error)
                self.on_error(error)
            op._completed(self.clock.now_ms(), failure)
            self.bus.post("onOutputOperationCompleted", op)
        info._completed(self.clock.now_ms())
        if log.isEnabledFor(logging.INFO):
            log.info("%s: %d records, scheduling delay %d ms, processing delay %d ms, total delay %d ms%s",
                     batch_name(job_set.time_ms), info.numRecords(), info.schedulingDelay(),
                     info.processingDelay(), info.totalDelay(),
                     f", {failed} of {len(job_set.jobs)} output operations failed" if failed else "")
        self.bus.post("onBatchCompleted", info)


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

    def start(self) -> int:
        """Start at the first interval boundary after now; return the zero time (one interval before)."""
        start = (self.clock.now_ms() // self.interval_ms + 1) * self.interval_ms
        zero = start - self.interval_ms
        self.graph.start(zero)
        self.loop.start()
        self.timer.start(start)
        return zero

    def restart(self, checkpoint_time_ms: int, pending_times: list[int]) -> list[int]:
        """Resume from a checkpoint: replay its pending batches and every batch that fell due while the
        driver was down, then go on with the timer. Returns the replayed batch times."""
        self.last_generated_ms = checkpoint_time_ms
        restart = (self.clock.now_ms() // self.interval_ms + 1) * self.interval_ms
        down = range(checkpoint_time_ms + self.interval_ms, restart, self.interval_ms)
        times = sorted(set(pending_times) | set(down))
        self.graph.restart()
        self.loop.start()
        if times:
            self.last_generated_ms = min(times) - self.interval_ms
            log.info("restarting from the checkpoint of %s: recomputing %d batches, %s to %s",
                     batch_name(checkpoint_time_ms), len(times), batch_name(times[0]), batch_name(times[-1]))
            self.loop.post(ReplayBatches(tuple(times)))
        self.timer.start(restart)
        return times

    def stop(self, graceful: bool) -> None:
        self.timer.stop()
        if graceful:
            # Batches already due on the clock are generated and run before stopping.
            now = self.clock.now_ms()
            t = (self.last_generated_ms or self.timer.next_time_ms - self.interval_ms) + self.interval_ms
            while t <= now:
                self.loop.post(GenerateJobs(t))
                t += self.interval_ms
        self.loop.stop(wait=True)

    def on_batch_completed(self, time_ms: int) -> None:
        self.loop.post(ClearMetadata(time_ms))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, GenerateJobs):
            self._generate(event.time_ms)
        elif isinstance(event, ClearMetadata):
            self.graph.clear_metadata(event.time_ms)
            self._checkpoint(event.time_ms, batch_completed=True)
        elif isinstance(event, ReplayBatches):
            # Recompute the lost batches' independent work together, in parallel, then run them in order.
            try:
                self.graph.prepare_replay(list(event.times_ms))
            except BaseException as exc:  # noqa: BLE001 - the batches themselves will report it
                log.warning("parallel recomputation before replay failed: %s", exc)
            for t in event.times_ms:
                self._generate(t)

    def _checkpoint(self, time_ms: int, batch_completed: bool) -> None:
        if self.checkpointer is None:
            return
        pending = self.scheduler.pending_times()
        if not batch_completed and time_ms not in pending:
            pending.append(time_ms)
        try:
            self.checkpointer.write(time_ms, sorted(pending), self.scheduler.last_completed_ms, batch_completed)
        except BaseException as exc:  # noqa: BLE001
            error = BatchError(f"writing the checkpoint of {batch_name(time_ms)} failed: {exc}")
            error.__cause__ = exc
            self.on_error(error)

    def _generate(self, time_ms: int) -> None:
        if self.last_generated_ms is not None and time_ms <= self.last_generated_ms:
            return
        self.last_generated_ms = time_ms
        submitted = self.clock.now_ms()
        try:
            jobs = self.graph.generate_jobs(time_ms)
        except BaseException as exc:  # noqa: BLE001
            error = BatchError(f"generating the jobs of {batch_name(time_ms)} failed: "
                               f"{format_exception(exc).rstrip()}")
            error.__cause__ = exc
            self.on_error(error)
            jobs = []
        info = BatchInfo(time_ms, submitted, self.graph.input_infos(time_ms),
                         {j.output_id: OutputOperationInfo(time_ms, j.output_id, j.name) for j in jobs})
        log.debug("generated %s: %d output operations", batch_name(time_ms), len(jobs))
        # The batch's input is recorded durably before any of its jobs runs.
        self._checkpoint(time_ms, batch_completed=False)
        self.scheduler.submit(JobSet(time_ms, jobs, info, functools.partial(self.graph.prepare_batch, time_ms)))
