"""The process pool's state machine, driven by events alone: no processes, no threads, no clock.

Each test feeds ``PoolState.handle`` events (times given in the events) and checks the instructions that
come out: where tasks are sent, retries and replacement workers after a death, failure once attempts run
out, speculative copies of slow tasks, and which copy's result counts.
"""
from __future__ import annotations

import pytest

from dstream.executors.base import SpeculationConf
from dstream.executors.pool_state import (AbortTask, AcceptResult, CancelTask, FailTask, FindStragglers,
                                          LaunchCopy, PoolClosed, PoolState, PoolStopped, RetryTask, SendTask,
                                          StageDone, StartWorker, TaskCancelled, TaskFinished, TaskSubmitted,
                                          WorkerDied, WorkerReady)

SPECULATE = SpeculationConf(enabled=True, multiplier=1.5, quantile=0.75, min_runtime=0.1)


def _pool(workers: int, max_attempts: int = 4) -> PoolState:
    state = PoolState(max_attempts)
    assert state.handle(*(WorkerReady(w, now=0.0) for w in range(workers))) == []
    return state


def _stage_of_four(state: PoolState, stage: int = 7) -> None:
    """Tasks 0-3 of ``stage`` start at t=0 on workers 0-3; tasks 1-3 finish at t=1 (1 s each)."""
    assert state.handle(*(TaskSubmitted(t, stage, now=0.0) for t in range(4))) == \
        [SendTask(t, t) for t in range(4)]
    assert state.handle(*(TaskFinished(t, t, now=1.0) for t in (1, 2, 3))) == \
        [AcceptResult(1), AcceptResult(2), AcceptResult(3)]


# -- sending tasks ------------------------------------------------------------------------------------------
def test_submitted_task_is_sent_to_an_idle_worker():
    state = _pool(2)
    assert state.handle(TaskSubmitted(10, now=0.0)) == [SendTask(0, 10)]
    assert state.handle(TaskSubmitted(11, now=0.0)) == [SendTask(1, 11)]


def test_tasks_wait_for_a_ready_worker_in_submission_order():
    state = _pool(0)
    assert state.handle(TaskSubmitted(1, now=0.0), TaskSubmitted(2, now=0.0)) == []
    assert state.handle(WorkerReady(5, now=1.0)) == [SendTask(5, 1)]
    assert state.handle(TaskFinished(5, 1, now=2.0)) == [AcceptResult(1), SendTask(5, 2)]
    assert state.handle(TaskFinished(5, 2, now=3.0)) == [AcceptResult(2)]


def test_a_finished_task_is_forgotten():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0), TaskFinished(0, 1, now=1.0))
    assert state.tasks == {}
    assert state.workers[0].task_id is None


def test_a_result_from_a_worker_not_running_that_task_is_ignored():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0))
    assert state.handle(TaskFinished(0, 99, now=1.0)) == []


# -- worker deaths ------------------------------------------------------------------------------------------
def test_worker_died_mid_task_retries_it_on_another_worker_and_starts_a_replacement():
    state = _pool(2)
    state.handle(TaskSubmitted(1, now=0.0))  # on worker 0; worker 1 idle
    assert state.handle(WorkerDied(0, now=1.0)) == [RetryTask(1, attempt=2), SendTask(1, 1), StartWorker()]
    assert state.tasks[1].attempts == 2
    assert 0 not in state.workers


def test_retry_waits_for_the_replacement_when_no_worker_is_idle():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0))
    assert state.handle(WorkerDied(0, now=1.0)) == [RetryTask(1, attempt=2), StartWorker()]
    assert state.handle(WorkerReady(1, now=2.0)) == [SendTask(1, 1)]


def test_a_retried_task_goes_before_tasks_queued_after_it():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0), TaskSubmitted(2, now=0.0))
    state.handle(WorkerDied(0, now=1.0))
    assert state.handle(WorkerReady(1, now=2.0)) == [SendTask(1, 1)]


def test_task_fails_once_its_attempts_are_used_up():
    state = _pool(1, max_attempts=2)
    state.handle(TaskSubmitted(1, now=0.0))
    state.handle(WorkerDied(0, now=1.0), WorkerReady(1, now=1.0))
    assert state.handle(WorkerDied(1, now=2.0)) == [FailTask(1, "its worker process died 2 times", 1), StartWorker()]
    assert state.tasks == {}
    assert state.handle(WorkerReady(2, now=3.0)) == []  # nothing is retried


def test_an_idle_worker_that_dies_is_only_replaced():
    state = _pool(2)
    assert state.handle(WorkerDied(1, now=1.0)) == [StartWorker()]
    assert state.handle(WorkerDied(1, now=1.0)) == []  # reported twice: nothing more


# -- speculation ----------------------------------------------------------------------------------------------
def test_slow_task_gets_a_speculative_copy_on_an_idle_worker():
    state = _pool(4)
    _stage_of_four(state)
    # median 1 s, multiplier 1.5: task 0 is slow only after 1.5 s
    assert state.handle(FindStragglers(7, SPECULATE, now=1.4)) == []
    assert state.handle(FindStragglers(7, SPECULATE, now=1.6)) == [LaunchCopy(1, 0)]
    assert state.tasks[0].attempts == 2 and state.tasks[0].workers == {0, 1}


def test_no_copy_before_the_quantile_of_the_stage_finished():
    state = _pool(4)
    state.handle(*(TaskSubmitted(t, 7, now=0.0) for t in range(4)))
    state.handle(TaskFinished(2, 2, now=1.0), TaskFinished(3, 3, now=1.0))  # 2 of 4 < floor(0.75 * 4)
    assert state.handle(FindStragglers(7, SPECULATE, now=60.0)) == []


def test_no_copy_shorter_than_min_runtime():
    state = _pool(4)
    state.handle(*(TaskSubmitted(t, 7, now=0.0) for t in range(4)))
    state.handle(*(TaskFinished(t, t, now=0.01) for t in (1, 2, 3)))
    assert state.handle(FindStragglers(7, SPECULATE, now=0.09)) == []  # 9 x the median, under 0.1 s
    assert state.handle(FindStragglers(7, SPECULATE, now=0.11)) == [LaunchCopy(1, 0)]


def test_no_copy_with_speculation_off():
    state = _pool(4)
    _stage_of_four(state)
    assert state.handle(FindStragglers(7, SpeculationConf(), now=60.0)) == []


def test_a_task_gets_one_copy_only():
    state = _pool(4)
    _stage_of_four(state)
    assert state.handle(FindStragglers(7, SPECULATE, now=2.0)) == [LaunchCopy(1, 0)]
    assert state.handle(FindStragglers(7, SPECULATE, now=9.0)) == []


def test_copies_go_slowest_first_once_the_quantile_finished():
    state = _pool(8)
    state.handle(*(TaskSubmitted(t, 7, now=0.0) for t in range(6)))  # workers 0-5
    state.handle(TaskSubmitted(6, 7, now=0.5))  # worker 6, started later
    state.handle(*(TaskFinished(t, t, now=1.0) for t in range(1, 5)))
    assert state.handle(FindStragglers(7, SPECULATE, now=9.0)) == []  # 4 of 7 finished, floor(0.75 * 7) = 5
    state.handle(TaskFinished(5, 5, now=1.0))
    # tasks 0 (9 s) and 6 (8.5 s) are slow; copies go to the idle workers in order, the slowest first
    assert state.handle(FindStragglers(7, SPECULATE, now=9.0)) == [LaunchCopy(1, 0), LaunchCopy(2, 6)]


def test_the_number_of_copies_is_bounded_by_idle_workers():
    state = _pool(5)
    state.handle(*(TaskSubmitted(t, 7, now=0.0) for t in range(5)))
    state.handle(*(TaskFinished(t, t, now=1.0) for t in (2, 3, 4)))  # 3 of 5: floor(0.75 * 5) = 3
    state.handle(TaskSubmitted(50, now=1.0), TaskSubmitted(51, now=1.0))  # occupy workers 2 and 3
    assert state.handle(FindStragglers(7, SPECULATE, now=9.0)) == [LaunchCopy(4, 0)]  # one idle worker: one copy
    assert state.handle(TaskFinished(2, 50, now=9.5)) == [AcceptResult(50)]  # task 1 was not queued for later
    assert state.handle(FindStragglers(7, SPECULATE, now=9.6)) == [LaunchCopy(2, 1)]  # but is copied next time


def test_no_copy_while_tasks_wait_for_a_worker():
    state = _pool(4)
    _stage_of_four(state)
    state.handle(*(TaskSubmitted(t, now=1.0) for t in (50, 51, 52, 53)))  # workers 1-3 busy, 53 queued
    assert state.handle(FindStragglers(7, SPECULATE, now=9.0)) == []
    assert state.handle(TaskFinished(1, 50, now=9.1)) == [AcceptResult(50), SendTask(1, 53)]
    assert state.handle(TaskFinished(2, 51, now=9.2)) == [AcceptResult(51)]  # no copy was queued meanwhile
    assert state.handle(FindStragglers(7, SPECULATE, now=9.3)) == [LaunchCopy(2, 0)]


def test_first_finished_copy_wins_and_the_other_result_is_ignored():
    state = _pool(4)
    _stage_of_four(state)
    state.handle(FindStragglers(7, SPECULATE, now=2.0))  # copy of task 0 on worker 1
    assert state.handle(TaskFinished(1, 0, now=2.5)) == [AcceptResult(0, copy=True)]
    assert state.tasks[0].duration == 0.5
    assert state.handle(TaskFinished(0, 0, now=30.0)) == []  # the original, late: ignored
    state.handle(TaskSubmitted(8, now=31.0))
    assert state.workers[0].task_id == 8  # the original's worker takes work again


def test_original_finishing_first_wins_over_its_copy():
    state = _pool(4)
    _stage_of_four(state)
    state.handle(FindStragglers(7, SPECULATE, now=2.0))
    assert state.handle(TaskFinished(0, 0, now=2.1)) == [AcceptResult(0, copy=False)]
    assert state.handle(TaskFinished(1, 0, now=2.2)) == []


def test_a_copy_is_not_retried_while_the_other_copy_runs():
    state = _pool(4)
    _stage_of_four(state)
    state.handle(FindStragglers(7, SPECULATE, now=2.0))  # original on 0, copy on 1
    assert state.handle(WorkerDied(0, now=2.5)) == [StartWorker()]
    assert state.handle(TaskFinished(1, 0, now=3.0)) == [AcceptResult(0, copy=True)]


def test_stage_tasks_are_kept_for_their_durations_until_the_stage_is_done():
    state = _pool(4)
    _stage_of_four(state)
    assert set(state.tasks) == {0, 1, 2, 3}  # the finished ones give the median
    state.handle(TaskFinished(0, 0, now=1.2))
    assert state.handle(StageDone(7, now=1.3)) == []
    assert state.tasks == {} and state.stages == {}


# -- cancelling and shutting down ------------------------------------------------------------------------------
def test_cancelled_task_is_not_sent_and_its_result_and_death_are_ignored():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0), TaskSubmitted(2, now=0.0), TaskSubmitted(3, now=0.0))
    state.handle(TaskCancelled(1, now=0.5), TaskCancelled(2, now=0.5))
    assert state.handle(TaskFinished(0, 1, now=1.0)) == [SendTask(0, 3)]  # 1's result dropped, 2 skipped
    state.handle(TaskCancelled(3, now=1.5))
    assert state.handle(WorkerDied(0, now=2.0)) == [StartWorker()]  # 3 is not retried
    assert state.tasks == {}


def test_closing_cancels_queued_tasks_and_refuses_new_ones():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0), TaskSubmitted(2, now=0.0), TaskSubmitted(3, now=0.0))
    assert state.handle(PoolClosed(now=1.0)) == [CancelTask(2), CancelTask(3)]
    with pytest.raises(RuntimeError, match="shut down"):
        state.handle(TaskSubmitted(4, now=1.0))
    assert state.handle(PoolStopped(now=2.0)) == [AbortTask(1)]


def test_after_closing_a_dead_worker_is_not_replaced_and_its_task_fails():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0), PoolClosed(now=1.0))
    assert state.handle(WorkerDied(0, now=2.0)) == [FailTask(1, "its worker process died 1 times", 0)]


def test_duplicate_ids_are_refused():
    state = _pool(1)
    state.handle(TaskSubmitted(1, now=0.0))
    with pytest.raises(ValueError, match="task 1"):
        state.handle(TaskSubmitted(1, now=0.0))
    with pytest.raises(ValueError, match="worker 0"):
        state.handle(WorkerReady(0, now=0.0))
    with pytest.raises(ValueError, match="max_attempts"):
        PoolState(0)
