"""Executor faults and stragglers, with real worker processes and real SIGKILLs.

- A worker killed mid-task: the task is retried on another worker and the batch's output is correct.
- Cached partitions whose blocks are lost are recomputed from lineage (a file counts computations);
  blocks outlive the worker that wrote them (they live in the shared directory).
- A task that kills its worker on every attempt fails its batch after ``max_attempts`` with the last
  error, raised from ``awaitTermination``; later batches still run.
- Speculation (``dstream.speculation``): a straggler gets one backup copy, the first result wins.

Task functions live at module level so that the workers import them by name; they talk to the test
through files (pid files, markers, counters), since they run in other processes.
"""
from __future__ import annotations

import datetime as dt
import functools
import glob
import os
import re
import signal
import threading
import time

import pytest

from dstream import Context, ManualClock, StreamingContext
from dstream.driver.jobs import BatchError
from dstream.testing import advance, collect
from dstream.executors import Task, TaskError
from dstream.executors.base import SpeculationConf, speculatable
from dstream.executors.processes import ProcessExecutor


# -- task functions ---------------------------------------------------------------------------------------
def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def _hang_on_first_attempt(pid_file: str, trigger: int, x: int) -> int:
    """For ``trigger``, the first attempt records its worker's pid and hangs (the test kills it)."""
    if x == trigger and not os.path.exists(pid_file):
        _write_atomically(pid_file, str(os.getpid()))
        time.sleep(60)
    return x * 10


def _kill_worker_on(attempts_file: str, poison: int, x: int) -> int:
    """For ``poison``, record the attempt and SIGKILL the worker running it, on every attempt."""
    if x == poison:
        with open(attempts_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def _counting(counter_file: str, pid_file: str | None, index: int, it):
    """Append "index pid" to ``counter_file`` each time a partition is computed; the first computation
    of partition 1 hangs when ``pid_file`` is given (the test kills its worker)."""
    with open(counter_file, "a") as f:
        f.write(f"{index} {os.getpid()}\n")
    if pid_file is not None and index == 1 and not os.path.exists(pid_file):
        _write_atomically(pid_file, str(os.getpid()))
        time.sleep(60)
    return (x * x for x in it)


def _straggle_on_first_attempt(marker: str, seconds: float, x: int) -> int:
    """For x == 0, the first attempt leaves a marker (its pid) and sleeps; any later copy returns at once."""
    if x == 0 and not os.path.exists(marker):
        _write_atomically(marker, str(os.getpid()))
        time.sleep(seconds)
    return x + 100


def _tagged_straggler(marker: str, seconds: float, tc) -> str:
    """Partition 0's first run sleeps and answers "original"; its backup copy answers "backup" at once."""
    if tc.partition_id == 0 and not os.path.exists(marker):
        _write_atomically(marker, str(os.getpid()))
        time.sleep(seconds)
        _write_atomically(marker + ".done", "")
        return "original"
    return "backup" if tc.partition_id == 0 else f"p{tc.partition_id}"


def _pid_after(seconds: float, tc) -> int:
    time.sleep(seconds)
    return os.getpid()


# -- helpers ----------------------------------------------------------------------------------------------
def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _read_pid(path: str) -> int:
    assert _wait_for(lambda: os.path.exists(path)), f"the task never wrote {path}"
    with open(path) as f:
        return int(f.read())


def _counts(counter_file: str) -> dict[int, int]:
    """How many times each partition was computed."""
    counts: dict[int, int] = {}
    if os.path.exists(counter_file):
        with open(counter_file) as f:
            for line in f:
                index = int(line.split()[0])
                counts[index] = counts.get(index, 0) + 1
    return counts


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def fctx():
    """A process-pool Context of our own: its workers get killed."""
    c = Context("local[2]")
    yield c
    c.stop()


@pytest.fixture
def fssc(fctx):
    s = StreamingContext(fctx, 1.0, clock=ManualClock())
    yield s
    s.stop(stopSparkContext=False)


# -- worker death in a streaming batch ---------------------------------------------------------------------
def test_worker_killed_mid_task_batch_is_retried_and_later_batches_run(fctx, fssc, tmp_path):
    pid_file = str(tmp_path / "pid")
    out = collect(fssc.queueStream([[1, 2, 3, 4], [5, 6], [7]])
                  .map(functools.partial(_hang_on_first_attempt, pid_file, 3)), sort=True)
    fssc.start()
    fssc.clock.advance(1.0)
    victim = _read_pid(pid_file)
    assert victim in fctx.executor.worker_pids()
    _kill(victim)
    assert fssc.wait_for_batch(fssc.clock.now_ms(), 30), "the batch did not finish after its worker died"
    advance(fssc, 2)
    assert out == [[10, 20, 30, 40], [50, 60], [70]]
    assert fssc.awaitTerminationOrTimeout(0) is False  # no batch failed
    assert victim not in fctx.executor.worker_pids()
    assert _wait_for(lambda: len(fctx.executor.worker_pids()) == 2)


def test_task_killing_its_worker_every_time_fails_its_batch_after_max_attempts(fctx, fssc, tmp_path):
    attempts_file = str(tmp_path / "attempts")
    out = collect(fssc.queueStream([[1, 2], [3, -1], [4]])
                  .map(functools.partial(_kill_worker_on, attempts_file, -1)), sort=True)
    fssc.start()
    advance(fssc, 3)
    with pytest.raises(BatchError, match=re.escape(f"batch {dt.datetime.fromtimestamp(2)} (2000 ms)")) as info:
        fssc.awaitTermination(5)
    cause = info.value.__cause__
    assert isinstance(cause, TaskError)
    assert "partition" in str(cause)
    assert f"died {fctx.executor.max_attempts} times" in str(cause)
    with open(attempts_file) as f:
        pids = f.read().split()
    assert len(pids) == fctx.executor.max_attempts  # bounded: no attempt after the last
    assert len(set(pids)) == len(pids)  # each attempt ran on a fresh worker
    assert out == [[10, 20], [40]]  # the failed batch output nothing; the next one ran
    assert _wait_for(lambda: len(fctx.executor.worker_pids()) == 2)


def test_shutdown_fails_the_tasks_still_running(tmp_path):
    """Nobody would deliver their results any more: waiting on them must not hang."""
    pid_file = str(tmp_path / "pid")
    ex = ProcessExecutor(1)
    future = ex.submit_task(Task(lambda tc: _hang_on_first_attempt(pid_file, 0, 0), 0, "stage 9 partition 0"))
    _read_pid(pid_file)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="shut down while running stage 9 partition 0"):
        future.result(timeout=5)


def test_max_attempts_must_be_positive():
    with pytest.raises(ValueError, match="max_attempts"):
        ProcessExecutor(1, max_attempts=0)


# -- lost cached partitions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("after_shuffle", [False, True], ids=["narrow", "after-shuffle"])
def test_deleted_cached_blocks_are_recomputed_from_lineage(fctx, tmp_path, after_shuffle):
    counter = str(tmp_path / "computed")
    source = fctx.parallelize(range(10), 2)
    if after_shuffle:
        source = source.map(lambda x: (x % 4, x)).reduceByKey(lambda a, b: a + b, 2).values()
    cached = source.mapPartitionsWithIndex(functools.partial(_counting, counter, None)).cache()
    derived = cached.map(lambda x: x + 1)
    expected = sorted(x * x + 1 for x in (range(10) if not after_shuffle else [12, 15, 8, 10]))

    assert sorted(derived.collect()) == expected
    assert _counts(counter) == {0: 1, 1: 1}
    assert sorted(derived.collect()) == expected
    assert _counts(counter) == {0: 1, 1: 1}, "the second action should have read the cache"

    block = os.path.join(fctx.executor.store.directory, f"rdd_{cached.id()}_1.arrow")
    assert os.path.exists(block)
    os.remove(block)  # the block is lost
    assert sorted(derived.collect()) == expected
    assert _counts(counter) == {0: 1, 1: 2}  # only the lost partition was recomputed
    assert os.path.exists(block)  # and cached again

    for path in glob.glob(os.path.join(fctx.executor.store.directory, f"rdd_{cached.id()}_*.arrow")):
        os.remove(path)
    assert derived.count() == len(expected)
    assert _counts(counter) == {0: 2, 1: 3}
    cached.unpersist()


def test_cached_rdd_survives_the_death_of_the_workers_that_computed_it(fctx, tmp_path):
    counter, pid_file = str(tmp_path / "computed"), str(tmp_path / "pid")
    cached = fctx.parallelize(range(6), 2).mapPartitionsWithIndex(
        functools.partial(_counting, counter, pid_file)).cache()
    # the worker computing partition 1 dies mid-task: the retry recomputes it from lineage
    result: list = []
    action = threading.Thread(target=lambda: result.append(sorted(cached.collect())))
    action.start()
    _kill(_read_pid(pid_file))
    action.join(30)
    assert not action.is_alive()
    assert result == [[0, 1, 4, 9, 16, 25]]
    assert _counts(counter) == {0: 1, 1: 2}

    # every worker that computed a block dies: the blocks outlive them, nothing is recomputed
    with open(counter) as f:
        computed_by = {int(line.split()[1]) for line in f}
    for pid in computed_by:
        _kill(pid)
    assert _wait_for(lambda: not computed_by & set(fctx.executor.worker_pids())
                     and len(fctx.executor.worker_pids()) == 2)
    assert sorted(cached.map(lambda x: -x).collect()) == [-25, -16, -9, -4, -1, 0]
    assert _counts(counter) == {0: 1, 1: 2}
    cached.unpersist()


# -- speculation ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sctx():
    """A process-pool Context with speculation on (settings given as strings, as Spark's conf holds them)."""
    c = Context("local[2]", conf={"dstream.speculation": "true", "dstream.speculation.multiplier": "1.5",
                                  "dstream.speculation.quantile": 0.75, "dstream.speculation.minRuntime": 0.2})
    _warm_up(c.executor)
    yield c
    c.stop()


def _warm_up(executor) -> None:
    """Have every worker import this module, so that a task's start-up does not count as straggling
    (a cold original could otherwise start its work after its backup copy; submit_task never speculates)."""
    for f in [executor.submit_task(Task(functools.partial(_pid_after, 0.1), i)) for i in range(2)]:
        f.result(timeout=20)


def test_straggler_gets_a_backup_copy_and_the_first_result_wins(sctx, tmp_path):
    marker = str(tmp_path / "straggler")
    ex = sctx.executor
    launches, wins = ex.speculative_launches, ex.speculative_wins
    rdd = sctx.parallelize(range(8), 4).map(functools.partial(_straggle_on_first_attempt, marker, 30.0))
    start = time.monotonic()
    try:
        assert rdd.collect() == [x + 100 for x in range(8)]
        assert time.monotonic() - start < 20, "the stage waited for its straggler"
        assert (ex.speculative_launches - launches, ex.speculative_wins - wins) == (1, 1)
    finally:
        _kill(_read_pid(marker))  # the losing copy would sleep on; its worker is replaced
    assert _wait_for(lambda: len(ex.worker_pids()) == 2)
    assert rdd.count() == 8  # the pool is back at full strength


def test_losing_copy_is_discarded_and_its_worker_freed(tmp_path):
    """The original finishes after its backup won: its answer is dropped and its worker takes new tasks."""
    marker = str(tmp_path / "straggler")
    with ProcessExecutor(2, speculation=SpeculationConf(enabled=True, min_runtime=0.5)) as ex:
        _warm_up(ex)
        results = ex.run_tasks([Task(functools.partial(_tagged_straggler, marker, 1.5), i) for i in range(2)])
        assert results == ["backup", "p1"]
        assert (ex.speculative_launches, ex.speculative_wins) == (1, 1)
        straggler = _read_pid(marker)
        assert _wait_for(lambda: os.path.exists(marker + ".done"))
        # its late "original" went nowhere, and its worker takes tasks again
        pids = ex.run_tasks([Task(functools.partial(_pid_after, 0.2), i) for i in range(6)])
        assert straggler in pids and len(set(pids)) == 2
        assert (ex.speculative_launches, ex.speculative_wins) == (1, 1)


def test_without_speculation_no_backup_is_launched(fctx, tmp_path):
    marker = str(tmp_path / "straggler")
    assert fctx.executor.speculation.enabled is False
    rdd = fctx.parallelize(range(8), 4).map(functools.partial(_straggle_on_first_attempt, marker, 1.0))
    assert rdd.collect() == [x + 100 for x in range(8)]
    assert (fctx.executor.speculative_launches, fctx.executor.speculative_wins) == (0, 0)


# -- the speculation rule and its settings -------------------------------------------------------------------
def test_speculatable_waits_for_the_quantile_then_picks_slow_tasks():
    conf = SpeculationConf(enabled=True, multiplier=1.5, quantile=0.75, min_runtime=0.1)
    # 4 tasks: 3 must finish first (floor(0.75 * 4))
    assert speculatable([1.0, 1.0], {2: 9.0, 3: 9.0}, 4, conf) == []
    assert speculatable([1.0, 1.0, 3.0], {3: 1.4}, 4, conf) == []  # median 1.0: threshold 1.5
    assert speculatable([1.0, 1.0, 3.0], {3: 1.6}, 4, conf) == [3]
    # slowest first
    assert speculatable([1.0, 1.0, 1.0, 1.0], {4: 2.0, 5: 7.0}, 6, conf) == [5, 4]
    # minRuntime: fast stages never speculate on tiny tasks
    assert speculatable([0.01, 0.01, 0.01], {3: 0.05}, 4, conf) == []
    assert speculatable([0.01, 0.01, 0.01], {3: 0.11}, 4, conf) == [3]
    # at least one task must have finished, whatever the quantile
    assert speculatable([], {0: 99.0}, 2, SpeculationConf(enabled=True, quantile=0.0)) == []
    assert speculatable([1.0], {0: 99.0}, 2, SpeculationConf(enabled=True, quantile=0.0)) == [0]
    # off: never
    assert speculatable([1.0, 1.0, 1.0], {3: 99.0}, 4, SpeculationConf()) == []


def test_speculation_conf_reads_context_keys():
    assert SpeculationConf.from_conf({}) == SpeculationConf(False, 1.5, 0.75, 0.1)
    conf = SpeculationConf.from_conf({"dstream.speculation": "True", "dstream.speculation.multiplier": "2",
                                      "dstream.speculation.quantile": 0.5, "dstream.speculation.minRuntime": 1,
                                      "dstream.other": "kept"})
    assert conf == SpeculationConf(True, 2.0, 0.5, 1.0)
    with Context("threads[1]", conf={"dstream.speculation": True, "dstream.speculation.quantile": 0.9}) as c:
        assert c.executor.speculation == SpeculationConf(True, 1.5, 0.9, 0.1)
        assert c.conf["dstream.speculation.quantile"] == 0.9


@pytest.mark.parametrize("key, value", [
    ("dstream.speculation", "maybe"),
    ("dstream.speculation", 2),
    ("dstream.speculation.multiplier", "fast"),
    ("dstream.speculation.multiplier", 0),
    ("dstream.speculation.quantile", 1.5),
    ("dstream.speculation.minRuntime", -1),
    ("dstream.speculation.minRuntime", float("nan")),
    ("dstream.speculation.multipler", 2),
])
def test_bad_speculation_settings_name_their_key(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Context("threads[1]", conf={key: value})
