"""Failed batches stay pending: a batch whose output operation fails (after ``spark.task.maxFailures``
attempts of a failing task) is recorded as failed, not completed. Its input stays recorded (in memory and
in the checkpoint), later batches of stateless streams still run, and ``retryFailedBatches()`` or a
restart from the checkpoint recomputes it, so that its output is there exactly once once the fault is
gone; ``discardFailedBatches()`` gives it up. A failed batch of a stateful stream stops the context."""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import operator
import os
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile

from dstream import Context, ManualClock, SparkConf, StreamingContext, StreamingListener
from dstream.demo.harness import wait_until
from dstream.driver.checkpoint import MAGIC, Checkpoint, read_header, read_latest
from dstream.driver.commit import committed_parts
from dstream.driver.jobs import BatchError
from dstream.driver.retries import TaskRetries
from dstream.driver.times import batch_name
from dstream.executors import serialization
from dstream.executors.base import Task, TaskError
from dstream.executors.blockstore import MemoryBlockStore
from dstream.testing import advance, collect


# -- helpers -----------------------------------------------------------------------------------------------
def _call_dependency(down: str, line: str) -> str:
    """A map function calling an external dependency, which is down while the file ``down`` exists."""
    if os.path.exists(down):
        raise ConnectionError("the external dependency is down")
    return line.upper()


def _through_dependency(down: str, pair: tuple) -> tuple:
    if os.path.exists(down):
        raise ConnectionError("the external dependency is down")
    return pair


def _add(new: list, old: int | None) -> int:
    return sum(new) + (old or 0)


def _put(watched: Path, name: str, lines: list[str]) -> None:
    """A new file in the watched directory, renamed in whole."""
    staging = watched.parent / f".{name}.staging"
    staging.write_text("".join(f"{line}\n" for line in lines))
    os.rename(staging, watched / name)


def _committed(prefix: str) -> dict[int, list[str]]:
    """Batch time -> the lines of its committed output directory ``prefix-<ms>`` (only committed ones)."""
    parent, base = prefix.rsplit("/", 1)
    fs, path = fsspec.core.url_to_fs(parent)
    fs.invalidate_cache()
    out = {}
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith(base + "-") or not fs.exists(f"{entry}/_SUCCESS"):
            continue
        url = f"{parent}/{name}"
        out[int(name[len(base) + 1:])] = [line for part in committed_parts(url)
                                          for line in part.read_bytes().decode().splitlines()]
    return dict(sorted(out.items()))


class Batches(StreamingListener):
    """Each completed run of a batch: (time, attempt, failure reason, task retries)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[int, int, str | None, int]] = []

    def onBatchCompleted(self, batchCompleted):
        info = batchCompleted.batchInfo()
        self.runs.append((info.batchTime().milliseconds(), info.attempt(), info.failureReason(),
                          info.taskRetries()))


def _must_not_run():
    raise AssertionError("setup must not be called when a checkpoint exists")


# -- (a) stateless: later batches run, retryFailedBatches recomputes the failed ones -------------------------
def test_failed_batches_stay_pending_and_a_retry_outputs_each_line_exactly_once(ssc, tmp_path):
    watched, down, prefix = tmp_path / "in", tmp_path / "dependency-down", str(tmp_path / "out" / "upper")
    watched.mkdir()
    runs = Batches()
    ssc.addStreamingListener(runs)
    ssc.textFileStream(str(watched)).map(functools.partial(_call_dependency, str(down))).saveAsTextFiles(prefix)
    ssc.start()
    _put(watched, "f1.txt", ["a1", "a2"])
    advance(ssc)
    down.touch()  # the dependency goes down for three batches
    for i in (2, 3, 4):
        _put(watched, f"f{i}.txt", [f"b{i}"])
        advance(ssc)
    assert ssc.failedBatches() == [2000, 3000, 4000]
    with pytest.raises(BatchError, match="the external dependency is down"):
        ssc.awaitTerminationOrTimeout(0)

    # still down: the retry fails again, and the batches stay failed
    assert ssc.retryFailedBatches(timeout=30) == [2000, 3000, 4000]
    assert ssc.failedBatches() == [2000, 3000, 4000]

    down.unlink()  # the dependency is back; a later batch runs as usual
    _put(watched, "f5.txt", ["c5"])
    advance(ssc)
    assert ssc.failedBatches() == [2000, 3000, 4000]
    assert ssc.retryFailedBatches(timeout=30) == [2000, 3000, 4000]
    assert ssc.failedBatches() == []
    assert ssc.awaitTerminationOrTimeout(0) is False  # the retried batches' errors are gone
    ssc.stop(stopSparkContext=False)  # delivers the listener events still queued

    out = _committed(prefix)
    assert out == {1000: ["A1", "A2"], 2000: ["B2"], 3000: ["B3"], 4000: ["B4"], 5000: ["C5"]}
    by_time: dict[int, list] = {}
    for t, attempt, reason, _ in runs.runs:
        by_time.setdefault(t, []).append((attempt, reason is not None))
    assert by_time[2000] == by_time[4000] == [(1, True), (2, True), (3, False)]
    assert by_time[1000] == by_time[5000] == [(1, False)]
    reason = next(r for t, _, r, _ in runs.runs if t == 3000 and r)
    assert "saveAsTextFiles" in reason and "the external dependency is down" in reason


def test_a_failed_window_is_retried_after_the_window_has_moved_on(ssc, tmp_path):
    """The batches a failed window reads are kept past the remember duration until it is retried."""
    down = tmp_path / "dependency-down"
    windows = []
    ssc.queueStream([[f"b{i}"] for i in range(1, 7)]).map(functools.partial(_call_dependency, str(down))) \
        .window(2.0, 1.0).foreachRDD(lambda t, rdd: windows.append((t.timestamp(), sorted(rdd.collect()))))
    ssc.start()
    advance(ssc)
    down.touch()
    advance(ssc)  # the window of 2000 (batches 1000 and 2000) fails
    down.unlink()
    advance(ssc, 4)
    assert ssc.failedBatches() == [2000]
    assert ssc.retryFailedBatches(timeout=30) == [2000]
    assert sorted(windows) == [(1.0, ["B1"]), (2.0, ["B1", "B2"]), (3.0, ["B2", "B3"]), (4.0, ["B3", "B4"]),
                               (5.0, ["B4", "B5"]), (6.0, ["B5", "B6"])]


# -- (b) across a restart from the checkpoint ----------------------------------------------------------------
def test_failed_batches_are_recomputed_first_after_a_restart_from_the_checkpoint(ctx, tmp_path):
    checkpoint, watched = str(tmp_path / "cp"), tmp_path / "in"
    down, prefix = tmp_path / "dependency-down", str(tmp_path / "out" / "upper")
    watched.mkdir()

    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(checkpoint)
        ssc.textFileStream(str(watched)).map(functools.partial(_call_dependency, str(down))).saveAsTextFiles(prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    try:
        _put(watched, "f1.txt", ["a1"])
        advance(ssc)
        down.touch()
        for i in (2, 3, 4):
            _put(watched, f"f{i}.txt", [f"b{i}", f"c{i}"])
            advance(ssc)
    finally:
        ssc.stop(stopSparkContext=False)  # the driver "dies" with three failed batches

    header = read_header(checkpoint)
    assert header["failed_times"] == [2000, 3000, 4000] and header["pending_times"] == []
    assert [f["attempts"] for f in header["failures"]] == [1, 1, 1]
    assert "the external dependency is down" in header["failures"][0]["reason"]
    recorded = {b["time_ms"]: b.get("metadata", {}).get("files") for b in header["inputs"][0]["batches"]}
    assert [f.rsplit("/", 1)[-1] for f in recorded[2000]] == ["f2.txt"]  # the failed batch's input is kept

    down.unlink()
    restored = StreamingContext.getOrCreate(checkpoint, _must_not_run, clock=ManualClock(start=4.0))
    assert restored.failedBatches() == [2000, 3000, 4000]
    restored.start()
    try:
        assert restored.replayed_times == [2000, 3000, 4000]
        assert restored.wait_for_batch(4000, 30)
        assert restored.failedBatches() == []
        _put(watched, "f5.txt", ["d5"])
        advance(restored)
        assert restored.awaitTerminationOrTimeout(0) is False
    finally:
        restored.stop(stopSparkContext=False)
    assert _committed(prefix) == {1000: ["A1"], 2000: ["B2", "C2"], 3000: ["B3", "C3"], 4000: ["B4", "C4"],
                                  5000: ["D5"]}
    assert read_header(checkpoint)["failed_times"] == []


# -- (c) task retries: spark.task.maxFailures ----------------------------------------------------------------
@pytest.mark.parametrize("max_failures, failed", [(2, []), (1, [1000])])
def test_a_task_failing_once_succeeds_on_its_second_attempt_with_maxFailures_2(tmp_path, max_failures, failed):
    own = Context("threads[2]", conf={"spark.task.maxFailures": str(max_failures),
                                      "dstream.task.retryBackoff": "0.01"})
    marker = tmp_path / "failed-once"

    def flaky(x):
        if x == 3 and not marker.exists():
            marker.touch()
            raise ConnectionError("a flaky connection")
        return x * 10

    ssc = StreamingContext(own, 1.0, clock=ManualClock())
    runs = Batches()
    ssc.addStreamingListener(runs)
    try:
        out = collect(ssc.queueStream([[1, 2, 3, 4]]).map(flaky), sort=True)
        ssc.start()
        advance(ssc)
        assert ssc.failedBatches() == failed
        if failed:
            assert out == []
            with pytest.raises(BatchError, match="a flaky connection"):
                ssc.awaitTerminationOrTimeout(0)
        else:
            assert out == [[10, 20, 30, 40]]
            assert ssc.awaitTerminationOrTimeout(0) is False
    finally:
        ssc.stop(stopSparkContext=False)
        own.stop()
    assert [(t, attempt, reason is None, retries) for t, attempt, reason, retries in runs.runs] == \
        [(1000, 1, not failed, 1 if not failed else 0)]


def _flaky_partition(runs: str, fail_times: int, acc, index: int, it):
    """Records each run of partition ``index``; partition 1 fails its first ``fail_times`` runs."""
    n = len([p for p in os.listdir(runs) if p.startswith(f"{index}-")])
    Path(runs, f"{index}-{n}").touch()
    acc.add(1)
    if index == 1 and n < fail_times:
        raise OSError(f"flaky storage (run {n + 1})")
    return [x * 2 for x in it]


def test_only_the_failed_tasks_run_again_and_accumulators_count_the_accepted_attempt(tmp_path):
    ctx = Context("local[2]", conf=SparkConf().set("spark.task.maxFailures", "3")
                  .set("dstream.task.retryBackoff", "0.01"))
    try:
        acc = ctx.accumulator(0)
        runs = tmp_path / "ok"
        runs.mkdir()
        rdd = ctx.parallelize(range(8), 4).mapPartitionsWithIndex(
            functools.partial(_flaky_partition, str(runs), 2, acc))
        assert rdd.collect() == [x * 2 for x in range(8)]
        counts = {i: len(list(runs.glob(f"{i}-*"))) for i in range(4)}
        assert counts == {0: 1, 1: 3, 2: 1, 3: 1}  # the stage's other tasks ran once
        assert acc.value == 4  # one accepted attempt per partition

        gives_up = tmp_path / "gives-up"
        gives_up.mkdir()
        with pytest.raises(TaskError, match=r"partition 1 \(attempt 3 of 3, spark.task.maxFailures\)") as info:
            ctx.parallelize(range(8), 4).mapPartitionsWithIndex(
                functools.partial(_flaky_partition, str(gives_up), 99, acc)).collect()
        assert "flaky storage (run 3)" in str(info.value)
        assert len(list(gives_up.glob("1-*"))) == 3
        assert acc.value == 4  # a failed job counts nothing
    finally:
        ctx.stop()


def test_task_retries_on_the_driver_rerun_only_the_failed_tasks():
    """``TaskRetries.run_local``: the rule for stages that run in the driver's process."""
    calls: list[int] = []

    def fn(i, tc):
        calls.append(i)
        if i == 1 and calls.count(1) < 3:
            raise ValueError(f"try {calls.count(1)}")
        return i * 10

    tasks = [Task(functools.partial(fn, i), i, f"stage 9 partition {i}") for i in range(3)]
    store = MemoryBlockStore()
    assert TaskRetries(max_failures=3, backoff=0).run_local(store, "stage 9", tasks) == [0, 10, 20]
    assert sorted(calls) == [0, 1, 1, 1, 2]
    calls.clear()
    with pytest.raises(TaskError, match=r"partition 1 \(attempt 2 of 2, spark.task.maxFailures\) failed: "
                                        r"ValueError: try 2"):
        TaskRetries(max_failures=2, backoff=0).run_local(store, "stage 9", tasks)
    calls.clear()
    with pytest.raises(TaskError, match="try 1"):
        TaskRetries().run_local(store, "stage 9", tasks)  # the default: one attempt
    assert calls.count(1) == 1


@pytest.mark.parametrize("conf", [{"spark.task.maxFailures": "0"}, {"dstream.task.maxFailures": "many"},
                                  {"dstream.task.retryBackoff": "-1"}])
def test_bad_retry_settings_fail_the_context_naming_the_key(conf):
    with pytest.raises(ValueError, match=next(iter(conf)).replace(".", r"\.")):
        Context("threads[1]", conf=conf)


# -- (d) stateful streams stop with the error; a restart recomputes from the last good state ----------------
def test_a_failed_stateful_batch_stops_the_context_and_a_restart_recomputes_it_once(ctx, tmp_path):
    checkpoint, down, prefix = str(tmp_path / "cp"), tmp_path / "dependency-down", str(tmp_path / "out" / "state")
    items = [[("a", 1)], [("a", 2), ("b", 1)], [("b", 5)], [("a", 10)]]

    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(checkpoint)
        ssc.queueStream(items).map(functools.partial(_through_dependency, str(down))) \
            .updateStateByKey(_add).saveAsTextFiles(prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    try:
        advance(ssc, 2)
        down.touch()
        advance(ssc)  # batch 3000 fails: the context stops rather than build batch 4000 on a wrong state
        with pytest.raises(BatchError, match="the external dependency is down") as info:
            ssc.awaitTermination(30)
        assert "dstream.stopOnStatefulFailure" in str(info.value) and "updateStateByKey" in str(info.value)
        assert StreamingContext.getActive() is None
    finally:
        ssc.stop(stopSparkContext=False)
    assert read_header(checkpoint)["failed_times"] == [3000]
    before = {t: os.stat(f"{prefix}-{t}/_SUCCESS").st_mtime_ns for t in (1000, 2000)}

    down.unlink()
    restored = StreamingContext.getOrCreate(checkpoint, _must_not_run, clock=ManualClock(start=4.0))
    restored.start()
    try:
        assert restored.replayed_times == [3000, 4000]
        assert restored.wait_for_batch(4000, 30)
        assert restored.awaitTerminationOrTimeout(0) is False
    finally:
        restored.stop(stopSparkContext=False)
    out = {t: sorted(ast.literal_eval(line) for line in lines) for t, lines in _committed(prefix).items()}
    assert out == {1000: [("a", 1)], 2000: [("a", 3), ("b", 1)], 3000: [("a", 3), ("b", 6)],
                   4000: [("a", 13), ("b", 6)]}
    assert {t: os.stat(f"{prefix}-{t}/_SUCCESS").st_mtime_ns for t in (1000, 2000)} == before


def test_without_stopOnStatefulFailure_a_stateful_stream_runs_on_and_the_retry_catches_up(tmp_path):
    own = Context("threads[2]", conf={"dstream.stopOnStatefulFailure": "false"})
    down = tmp_path / "dependency-down"
    ssc = StreamingContext(own, 1.0, clock=ManualClock())
    try:
        ssc.checkpoint(str(tmp_path / "cp"))
        state = ssc.queueStream([[("a", 1)], [("a", 2)], [("a", 4)]]) \
            .map(functools.partial(_through_dependency, str(down))).updateStateByKey(_add)
        out = []
        state.foreachRDD(lambda t, rdd: out.append((t.timestamp(), rdd.collect())))
        ssc.start()
        advance(ssc)
        down.touch()
        advance(ssc)
        down.unlink()
        advance(ssc)
        assert ssc.failedBatches() == [2000]
        assert StreamingContext.getActive() is ssc
        assert ssc.retryFailedBatches(timeout=30) == [2000]
        assert sorted(out) == [(1.0, [("a", 1)]), (2.0, [("a", 3)]), (3.0, [("a", 7)])]
    finally:
        ssc.stop(stopSparkContext=False)
        own.stop()


# -- (e) discardFailedBatches ----------------------------------------------------------------------------------
def test_discarded_failed_batches_are_returned_logged_and_not_recomputed(ctx, tmp_path, caplog):
    checkpoint, watched = str(tmp_path / "cp"), tmp_path / "in"
    down, prefix = tmp_path / "dependency-down", str(tmp_path / "out" / "upper")
    watched.mkdir()
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(checkpoint)
    ssc.textFileStream(str(watched)).map(functools.partial(_call_dependency, str(down))).saveAsTextFiles(prefix)
    ssc.start()
    try:
        _put(watched, "f1.txt", ["a1"])
        advance(ssc)
        down.touch()
        _put(watched, "lost2.txt", ["b2"])
        advance(ssc)
        _put(watched, "lost3.txt", ["b3"])
        advance(ssc)
        down.unlink()
        _put(watched, "f4.txt", ["c4"])
        advance(ssc)
        with caplog.at_level(logging.WARNING, logger="dstream"):
            assert ssc.discardFailedBatches() == [2000, 3000]
        warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "discarding 2 failed batches" in warning
        for t, name in ((2000, "lost2.txt"), (3000, "lost3.txt")):
            assert batch_name(t) in warning and name in warning
        assert ssc.failedBatches() == [] and ssc.retryFailedBatches() == [] and ssc.discardFailedBatches() == []
        assert ssc.awaitTerminationOrTimeout(0) is False
        advance(ssc)
    finally:
        ssc.stop(stopSparkContext=False)
    header = read_header(checkpoint)
    assert header["failed_times"] == []
    assert not {b["time_ms"] for b in header["inputs"][0]["batches"]} & {2000, 3000}  # their input is forgotten
    restored = StreamingContext.getOrCreate(checkpoint, _must_not_run, clock=ManualClock(start=5.0))
    assert restored.failedBatches() == []
    restored.stop(stopSparkContext=False)
    assert _committed(prefix) == {1000: ["A1"], 4000: ["C4"], 5000: []}


def test_failed_batches_of_a_rebuilt_context_can_be_discarded_before_start(ctx, tmp_path):
    checkpoint, down, seen = str(tmp_path / "cp"), tmp_path / "dependency-down", []
    down.touch()

    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.queueStream([["x"], ["y"]]).map(functools.partial(_call_dependency, str(down))).foreachRDD(
            lambda rdd: rdd.collect())
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)
    down.unlink()
    restored = StreamingContext.getOrCreate(checkpoint, _must_not_run, clock=ManualClock(start=2.0))
    assert restored.failedBatches() == [1000, 2000]
    assert restored.discardFailedBatches() == [1000, 2000]
    restored.start()
    try:
        assert restored.replayed_times == []
    finally:
        restored.stop(stopSparkContext=False)


# -- (f) object storage: a file that cannot be read is read again when its batch is retried -----------------
class _LockedFile(MemoryFile):
    """An object of fsspec's memory filesystem that is listed but cannot be read while ``locked``."""

    locked = True

    @property
    def size(self):
        return super().getbuffer().nbytes

    def getbuffer(self):
        if self.locked:
            raise PermissionError("Access Denied")
        return super().getbuffer()


def test_a_file_that_cannot_be_read_fails_its_batch_and_a_retry_reads_it_once(ssc):
    root = f"memory://unreadable-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    watched, prefix = f"{root}/in", f"{root}/out/lines"
    fs.makedirs(watched, exist_ok=True)
    try:
        ssc.textFileStream(watched).saveAsTextFiles(prefix)
        ssc.start()
        fs.pipe(f"{watched}/first.txt", b"x1\nx2\n")
        advance(ssc)
        locked = _LockedFile(fs, fs._strip_protocol(f"{watched}/locked.txt"), b"y1\ny2\n")
        fs.store[locked.path] = locked  # listed, but reading it is denied
        advance(ssc)
        with pytest.raises(BatchError) as info:
            ssc.awaitTerminationOrTimeout(0)
        text = str(info.value)  # the error names the file's URL
        assert f"{root.split('://')[1]}/in/locked.txt failed: PermissionError" in text and "memory://" in text
        assert ssc.failedBatches() == [2000]
        fs.pipe(f"{watched}/third.txt", b"z1\n")
        advance(ssc)  # a later batch does not take the file again
        locked.locked = False  # the permission is granted
        assert ssc.retryFailedBatches(timeout=30) == [2000]
        assert ssc.failedBatches() == []
        ssc.stop(stopSparkContext=False)
        assert _committed(prefix) == {1000: ["x1", "x2"], 2000: ["y1", "y2"], 3000: ["z1"]}
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)


# -- the checkpoint format ---------------------------------------------------------------------------------------
def test_a_checkpoint_of_the_previous_format_is_read_without_failed_batches(tmp_path):
    cp = Checkpoint(time_ms=1000, interval_ms=1000, master=None, conf={}, pending_times=[1000],
                    last_completed_ms=None, graph=b"g")
    del cp.__dict__["failed_times"], cp.__dict__["failures"]  # as format 4 pickled it
    payload = serialization.dumps(cp)
    header = json.dumps({"format": 4, "dstream": "0.0.0", "time_ms": 1000, "interval_ms": 1000,
                         "pending_times": [1000], "last_completed_ms": None, "inputs": [], "length": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest(), "signature": None}).encode()
    (tmp_path / "checkpoint-1000").write_bytes(MAGIC + len(header).to_bytes(4, "big") + header + payload)
    read = read_latest(str(tmp_path))
    assert read.pending_times == [1000] and read.failed_times == [] and read.failures == []


def test_a_final_stage_run_on_the_driver_is_retried_too(tmp_path):
    """A small final stage after a shuffle runs in the driver's process; its tasks get the same attempts."""
    marker = tmp_path / "failed-once"

    def flaky(kv):
        if not marker.exists():
            marker.touch()
            raise ValueError("the service blinked")
        return kv

    with Context("threads[2]", conf={"spark.task.maxFailures": 2}) as ctx:
        before = ctx.scheduler.local_result_stages
        out = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).reduceByKey(operator.add).map(flaky).collect()
        assert sorted(out) == [("a", 4), ("b", 2)]
        assert ctx.scheduler.local_result_stages == before + 1
