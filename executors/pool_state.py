"""The process pool's decisions as a state machine, in the style of Dask's worker state machine.

``PoolState.handle(*events)`` takes what happened (a task was submitted, a worker is ready, a worker died,
a copy of a task finished, a stage may have stragglers, ...) and returns what to do (send a task to a
worker, start a worker, launch a speculative copy, take a result, fail a task, ...). It does no I/O, starts
no threads and reads no clock: every event carries the time it happened (``now``, monotonic seconds), so
unit tests drive it with plain events. ``ProcessExecutor`` (``executors/processes.py``) is the shell around
it: it owns the processes, pipes, futures and the lock, feeds events and carries out the instructions.

The decisions:

- Tasks run in submission order on idle workers (in the order the workers became ready); a task whose
  worker died goes to the front of the queue.
- A worker that dies mid-task is replaced (``StartWorker``) and its task retried (``RetryTask``), unless
  another copy of the task still runs; after ``max_attempts`` runs it fails (``FailTask``).
- Within a stage (``FindStragglers``), once the quantile of its tasks has finished, a task running longer
  than the multiplier times their median duration gets one speculative copy (``LaunchCopy``) on an idle
  worker, as ``SpeculationConf`` and ``speculatable`` say; copies go after queued tasks, never before.
- The first copy of a task to finish gives its result (``AcceptResult``); a later copy's is ignored, and
  so is anything that comes back for a cancelled task.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from dstream.executors.base import SpeculationConf, speculatable


# -- events: what happened ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PoolEvent:
    """Something that happened to the pool; ``now`` is when (monotonic seconds)."""

    now: float


@dataclass(frozen=True)
class TaskSubmitted(PoolEvent):
    """A task was submitted; ``stage`` groups the tasks of one ``run_tasks`` call for speculation."""

    task_id: int
    stage: int | None = None


@dataclass(frozen=True)
class WorkerReady(PoolEvent):
    """A worker process was started and takes tasks."""

    worker_id: int


@dataclass(frozen=True)
class WorkerDied(PoolEvent):
    """A worker's pipe closed: the process is gone, with whatever it was running."""

    worker_id: int


@dataclass(frozen=True)
class TaskFinished(PoolEvent):
    """A worker sent back the result (a value or the task's own error) of the task it ran."""

    worker_id: int
    task_id: int


@dataclass(frozen=True)
class TaskCancelled(PoolEvent):
    """Nobody wants the task's result any more (its future was cancelled)."""

    task_id: int


@dataclass(frozen=True)
class FindStragglers(PoolEvent):
    """Time passed while ``stage`` runs: its slow tasks may deserve a speculative copy under ``conf``."""

    stage: int
    conf: SpeculationConf


@dataclass(frozen=True)
class StageDone(PoolEvent):
    """``run_tasks`` returned or raised for ``stage``: its tasks' durations are no longer needed."""

    stage: int


@dataclass(frozen=True)
class PoolClosed(PoolEvent):
    """Shutdown began: no new tasks, and queued ones never run."""


@dataclass(frozen=True)
class PoolStopped(PoolEvent):
    """Shutdown stopped listening to the workers: results of tasks still running will never come."""


# -- instructions: what to do ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """Something the shell must do."""


@dataclass(frozen=True)
class SendTask(Instruction):
    """Send a task to an idle worker (its first run, or a retry)."""

    worker_id: int
    task_id: int


@dataclass(frozen=True)
class LaunchCopy(SendTask):
    """Send a speculative copy of a slow task to an idle worker; the task's other copy runs on."""


@dataclass(frozen=True)
class StartWorker(Instruction):
    """Start a worker process (to replace a dead one) and report it with ``WorkerReady``."""


@dataclass(frozen=True)
class RetryTask(Instruction):
    """A task lost its worker and is queued again; ``attempt`` is the run it will be."""

    task_id: int
    attempt: int


@dataclass(frozen=True)
class EndTask(Instruction):
    """The task is over for the pool: tell whoever waits for it how it ended (one of the kinds below)."""

    task_id: int


@dataclass(frozen=True)
class AcceptResult(EndTask):
    """The result just received is the task's result; ``copy`` when a speculative copy sent it."""

    copy: bool = False


@dataclass(frozen=True)
class FailTask(EndTask):
    """The task failed for good, and with it its stage: ``reason``, the last loss being ``worker_id``."""

    reason: str
    worker_id: int


@dataclass(frozen=True)
class CancelTask(EndTask):
    """The task never ran and never will: cancel it."""


@dataclass(frozen=True)
class AbortTask(EndTask):
    """The task was running when the pool stopped: its result will never come."""


# -- state ----------------------------------------------------------------------------------------------------
@dataclass
class TaskState:
    """What the pool knows of one submitted task."""

    task_id: int
    #: the stage it belongs to, while that stage runs (None: a lone task)
    stage: int | None = None
    #: how many times a worker was given it (first run, retries, speculative copy)
    attempts: int = 0
    #: the workers running a copy of it now (two while a speculative copy runs beside the original)
    workers: set[int] = field(default_factory=set)
    #: when its latest first run or retry started
    started: float | None = None
    #: seconds the winning copy took
    duration: float | None = None
    #: whether it was ever given a speculative copy
    speculated: bool = False
    #: finished, failed or cancelled: no copy starts any more and later results are ignored
    done: bool = False


@dataclass
class WorkerState:
    """What the pool knows of one worker."""

    worker_id: int
    #: the task it runs now (None: idle)
    task_id: int | None = None
    #: whether that run is a speculative copy
    copy: bool = False
    #: when that run started
    started: float = 0.0


class PoolState:
    """The decisions of a pool of workers: which task runs where, retries, speculative copies."""

    def __init__(self, max_attempts: int = 4) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        #: how many runs a task gets when its workers keep dying under it
        self.max_attempts = max_attempts
        #: tasks not yet forgotten, by id
        self.tasks: dict[int, TaskState] = {}
        #: live workers by id, in the order they became ready
        self.workers: dict[int, WorkerState] = {}
        #: task ids waiting for a first run or a retry (stale ids are skipped)
        self.queued: deque[int] = deque()
        #: task ids waiting for a speculative copy, served after all queued tasks
        self.copies: deque[int] = deque()
        #: task ids of each running stage, in submission order
        self.stages: dict[int, list[int]] = {}
        #: whether shutdown began
        self.closed = False

    def handle(self, *events: PoolEvent) -> list[Instruction]:
        """Apply ``events`` in order; the instructions they call for, in order."""
        instructions: list[Instruction] = []
        for event in events:
            handler = self._HANDLERS.get(type(event))
            if handler is None:
                raise TypeError(f"not a pool event: {event!r}")
            instructions += handler(self, event)
        return instructions

    # -- one method per event ---------------------------------------------------------------------------------
    def _task_submitted(self, event: TaskSubmitted) -> list[Instruction]:
        if self.closed:
            raise RuntimeError("the executor has been shut down")
        if event.task_id in self.tasks:
            raise ValueError(f"task {event.task_id} was submitted already")
        self.tasks[event.task_id] = TaskState(event.task_id, event.stage)
        if event.stage is not None:
            self.stages.setdefault(event.stage, []).append(event.task_id)
        self.queued.append(event.task_id)
        return self._assign(event.now)

    def _worker_ready(self, event: WorkerReady) -> list[Instruction]:
        if event.worker_id in self.workers:
            raise ValueError(f"worker {event.worker_id} is ready already")
        self.workers[event.worker_id] = WorkerState(event.worker_id)
        return self._assign(event.now)

    def _worker_died(self, event: WorkerDied) -> list[Instruction]:
        worker = self.workers.pop(event.worker_id, None)
        if worker is None:
            return []
        out: list[Instruction] = []
        task = self.tasks.get(worker.task_id) if worker.task_id is not None else None
        if task is not None:
            task.workers.discard(worker.worker_id)
            if not task.done and not task.workers:  # no other copy of it still runs
                if task.attempts < self.max_attempts and not self.closed:
                    self.queued.appendleft(task.task_id)
                    out.append(RetryTask(task.task_id, task.attempts + 1))
                else:
                    task.done = True
                    out.append(FailTask(task.task_id, f"its worker process died {task.attempts} times",
                                        worker.worker_id))
            self._forget_if_finished(task)
        out += self._assign(event.now)
        if not self.closed:
            out.append(StartWorker())
        return out

    def _task_finished(self, event: TaskFinished) -> list[Instruction]:
        worker = self.workers.get(event.worker_id)
        if worker is None:
            return []
        running, worker.task_id = worker.task_id, None
        out: list[Instruction] = []
        task = self.tasks.get(event.task_id) if running == event.task_id else None
        if task is not None:
            task.workers.discard(worker.worker_id)
            if not task.done:  # the first copy to finish wins
                task.done = True
                task.duration = event.now - worker.started
                out.append(AcceptResult(task.task_id, worker.copy))
            self._forget_if_finished(task)
        return out + self._assign(event.now)

    def _task_cancelled(self, event: TaskCancelled) -> list[Instruction]:
        task = self.tasks.get(event.task_id)
        if task is not None and not task.done:
            task.done = True
            self._forget_if_finished(task)
        return []

    def _find_stragglers(self, event: FindStragglers) -> list[Instruction]:
        stage = [self.tasks[i] for i in self.stages.get(event.stage, ()) if i in self.tasks]
        if self.closed or not stage:
            return []
        # as many copies as idle workers (so never ahead of queued work: a queued task would have taken one)
        idle = sum(1 for w in self.workers.values() if w.task_id is None)
        finished = [t.duration for t in stage if t.duration is not None]
        running = {i: event.now - t.started for i, t in enumerate(stage)
                   if t.workers and t.started is not None and not t.speculated and not t.done}
        for i in speculatable(finished, running, len(stage), event.conf)[:idle]:
            stage[i].speculated = True
            self.copies.append(stage[i].task_id)
        return self._assign(event.now)

    def _stage_done(self, event: StageDone) -> list[Instruction]:
        for task_id in self.stages.pop(event.stage, ()):
            task = self.tasks.get(task_id)
            if task is not None:
                task.stage = None
                self._forget_if_finished(task)
        return []

    def _pool_closed(self, event: PoolClosed) -> list[Instruction]:
        if self.closed:
            return []
        self.closed = True
        out: list[Instruction] = []
        for task_id in self.queued:
            task = self.tasks.get(task_id)
            if task is not None and not task.done:
                task.done = True
                out.append(CancelTask(task_id))
                self._forget_if_finished(task)
        self.queued.clear()
        self.copies.clear()
        return out

    def _pool_stopped(self, event: PoolStopped) -> list[Instruction]:
        out: list[Instruction] = []
        for worker in self.workers.values():
            task = self.tasks.get(worker.task_id) if worker.task_id is not None else None
            if task is not None and not task.done:
                task.done = True
                out.append(AbortTask(task.task_id))
        return out

    #: the method handling each kind of event
    _HANDLERS = {TaskSubmitted: _task_submitted, WorkerReady: _worker_ready, WorkerDied: _worker_died,
                 TaskFinished: _task_finished, TaskCancelled: _task_cancelled, FindStragglers: _find_stragglers,
                 StageDone: _stage_done, PoolClosed: _pool_closed, PoolStopped: _pool_stopped}

    # -- helpers ----------------------------------------------------------------------------------------------
    def _assign(self, now: float) -> list[Instruction]:
        """Give waiting work to idle workers, in worker order."""
        out: list[Instruction] = []
        if not self.queued and not self.copies:
            return out
        for worker in self.workers.values():
            if worker.task_id is not None:
                continue
            picked = self._next()
            if picked is None:
                break
            task, copy = picked
            task.attempts += 1
            task.workers.add(worker.worker_id)
            if not copy:
                task.started = now
            worker.task_id, worker.copy, worker.started = task.task_id, copy, now
            out.append(LaunchCopy(worker.worker_id, task.task_id) if copy else SendTask(worker.worker_id, task.task_id))
        return out

    def _next(self) -> tuple[TaskState, bool] | None:
        """The next task to run and whether it runs as a speculative copy; skips stale queue entries."""
        while self.queued:
            task = self.tasks.get(self.queued.popleft())
            if task is not None and not task.done:
                return task, False
        while self.copies:
            task = self.tasks.get(self.copies.popleft())
            if task is not None and not task.done and task.workers:  # pointless once no original runs
                return task, True
        return None

    def _forget_if_finished(self, task: TaskState) -> None:
        """Drop a task nothing will ask about any more: done, no copy running, its stage over."""
        if task.done and not task.workers and (task.stage is None or task.stage not in self.stages):
            del self.tasks[task.task_id]
