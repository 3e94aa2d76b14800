"""Driver-kill recovery: real driver processes killed with SIGKILL, restarted from their checkpoints.

The output must equal a failure-free run's (the true word counts of every file written, including files
that arrived while the driver was down), and every committed batch must be written exactly once.
"""
from __future__ import annotations

import ast
import hashlib
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import fsspec
import pytest

from dstream.driver.checkpoint import MAGIC, Checkpoint, CheckpointError, CheckpointWriter, read_latest
from dstream.driver.retention import SNAPSHOTS
from dstream import ManualClock, StreamingContext
from dstream.demo.harness import pid_alive, wait_until
from dstream.testing import advance

from .recovery_harness import WordCountDriver

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape"]


@pytest.fixture
def driver(tmp_path):
    d = WordCountDriver(tmp_path)
    yield d
    d.close()


def test_killed_driver_recovers_with_exactly_once_output(driver):
    rng = random.Random(20261121)
    driver.start()
    committed_before: dict[str, tuple] = {}
    for kill in range(3):
        for _ in range(rng.randint(2, 4)):
            driver.write_file(rng.sample(WORDS, 3), lines=rng.randint(1, 3))
            time.sleep(rng.uniform(0.05, 0.4))
        time.sleep(rng.uniform(0.0, 0.6))
        committed_before.update(driver.committed())
        workers = driver.kill()
        # the killed driver's executors exit by themselves: no orphans
        wait_until(lambda: not any(pid_alive(p) for p in workers), 10, f"workers {workers} to exit")
        for _ in range(rng.randint(1, 3)):  # input arriving while the driver is down
            driver.write_file(rng.sample(WORDS, 2))
        time.sleep(rng.uniform(0.3, 1.0))  # batches fall due while it is down
        started = driver.start()
        assert started["restored"], "the restarted driver must rebuild itself from its checkpoint"
    driver.write_file(["fig", "fig"])
    driver.wait_caught_up()
    after = driver.committed()
    # every batch committed before a kill is still exactly as it was: never written twice
    changed = [name for name, files in committed_before.items() if after.get(name) != files]
    assert not changed, f"committed batches rewritten after a restart: {changed}"
    assert "Traceback" not in driver.stderr(), driver.stderr()


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(driver):
    driver.start()
    for i in range(3):
        driver.write_file(WORDS[i:i + 3])
        time.sleep(0.35)
    wait_until(lambda: len(driver.batches_done()) >= 4, 20, "four batches")
    driver.kill()
    newest = max(driver.checkpoint.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a torn write
    driver.write_file(["elder"])
    driver.start()
    driver.wait_caught_up()
    err = driver.stderr()
    assert "skipping damaged checkpoint" in err and newest.name in err, err


def test_parallel_recovery_runs_lost_batches_tasks_at_once(tmp_path):
    """No data snapshot before the kill: the restart recomputes every batch's input-side work, and those
    independent tasks run on both executors at the same time (task timestamps overlap)."""
    task_log = tmp_path / "tasks.json"
    driver = WordCountDriver(tmp_path, "--work", "0.1", "--snapshot-every", "1000", "--interval", "0.2",
                             "--task-log", str(task_log))
    try:
        driver.start()
        for i in range(5):
            driver.write_file(WORDS[i:i + 2], lines=3)
            wait_until(lambda n=i: len(driver.batches_done()) >= 2 * (n + 1), 20, "the file's batch")
        driver.kill()
        driver.write_file(["grape"], lines=3)
        time.sleep(0.5)
        driver.start()
        driver.wait_caught_up()
        records = wait_until(lambda: task_log.exists() and json.loads(task_log.read_text() or "[]"), 10,
                             "the task log")
    finally:
        driver.close()
    assert len(records) >= 5, records
    overlapping = [(a, b) for a in records for b in records
                   if a["worker"] != b["worker"] and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, f"recovery tasks never ran at the same time on two executors: {records}"


# -- in-process: getOrCreate and checkpoints that cannot be restored ---------------------------------------
def _setup(ctx, checkpoint: str, out_prefix: str, clock: ManualClock):
    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=clock)
        ssc.checkpoint(checkpoint)
        state = ssc.queueStream([[("a", 1)], [("a", 2), ("b", 1)], [("b", 5)], [("a", 10)]]).updateStateByKey(
            lambda new, old: sum(new) + (old or 0))
        state.saveAsTextFiles(out_prefix)
        return ssc
    return setup


def _read_batch(prefix: str, t_ms: int) -> list:
    fs, d = fsspec.core.url_to_fs(f"{prefix}-{t_ms}")
    assert fs.exists(f"{d}/_SUCCESS"), f"batch {t_ms} not committed"
    parts = sorted(p for p in fs.ls(d, detail=False) if p.rsplit("/", 1)[-1].startswith("part-"))
    return sorted(ast.literal_eval(line) for p in parts for line in fs.cat_file(p).decode().splitlines())


@pytest.fixture(params=["local", "memory"])
def storage_root(request, tmp_path) -> Iterator[str]:
    """Where an in-process recovery test keeps its checkpoint and output: local disk, or fsspec's in-memory
    filesystem (an object store without a directory tree; the thread executor shares the driver's memory)."""
    if request.param == "local":
        yield str(tmp_path)
        return
    root = f"memory://recovery-{uuid.uuid4().hex[:12]}"
    yield root
    fs, path = fsspec.core.url_to_fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_getOrCreate_calls_setup_only_when_there_is_no_checkpoint(ctx, storage_root):
    checkpoint, prefix = f"{storage_root}/cp", f"{storage_root}/out/state"
    clock = ManualClock()
    calls = []

    def counting_setup():
        calls.append(1)
        return _setup(ctx, checkpoint, prefix, clock)()

    ssc = StreamingContext.getOrCreate(checkpoint, counting_setup)
    assert calls == [1] and ssc.restored_from is None
    ssc.start()
    advance(ssc, 2)  # batches 1000 and 2000 run; then the "driver dies"
    ssc.stop(stopSparkContext=False)

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    restored = StreamingContext.getOrCreate(checkpoint, must_not_run, clock=ManualClock(start=4.0))
    assert restored.restored_from is not None
    restored.start()
    try:
        # batches 3000 and 4000 fell due while it was down: both are replayed at start
        assert restored.replayed_times == [3000, 4000]
        assert restored.wait_for_batch(4000, 30)
    finally:
        restored.stop(stopSparkContext=False)
    assert _read_batch(prefix, 2000) == [("a", 3), ("b", 1)]
    assert _read_batch(prefix, 3000) == [("a", 3), ("b", 6)]
    assert _read_batch(prefix, 4000) == [("a", 13), ("b", 6)]


def test_getActiveOrCreate_restores_from_the_checkpoint_when_none_is_active(ctx, storage_root):
    checkpoint, prefix = f"{storage_root}/cp", f"{storage_root}/out/state"
    ssc = StreamingContext.getActiveOrCreate(checkpoint, _setup(ctx, checkpoint, prefix, ManualClock()))
    ssc.start()
    advance(ssc, 1)
    assert StreamingContext.getActiveOrCreate(checkpoint, lambda: None) is ssc  # the active one
    ssc.stop(stopSparkContext=False)

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    restored = StreamingContext.getActiveOrCreate(checkpoint, must_not_run)
    try:
        assert restored is not ssc and restored.restored_from.time_ms == 1000
    finally:
        restored.stop(stopSparkContext=False)


def _write_raw(directory: Path, t_ms: int, header: dict, payload: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    h = json.dumps(header).encode()
    (directory / f"checkpoint-{t_ms}").write_bytes(MAGIC + len(h).to_bytes(4, "big") + h + payload)


def test_checkpoint_of_another_format_version_fails_with_advice(tmp_path):
    payload = b"whatever"
    _write_raw(tmp_path, 1000, {"format": 999, "dstream": "9.9.9", "time_ms": 1000, "length": len(payload),
                                "sha256": hashlib.sha256(payload).hexdigest()}, payload)
    with pytest.raises(CheckpointError, match="new checkpoint directory") as err:
        StreamingContext.getOrCreate(str(tmp_path), lambda: None)
    assert "9.9.9" in str(err.value) and "checkpoint-1000" in str(err.value)


def test_checkpoint_whose_code_changed_fails_with_advice(ctx, tmp_path, monkeypatch):
    """A graph that pickled a class from a module that no longer exists cannot be restored."""
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "vanishing_udf.py").write_text("class Doubler:\n    def __call__(self, x):\n        return 2 * x\n")
    monkeypatch.syspath_prepend(str(module_dir))
    import vanishing_udf
    import cloudpickle
    graph_bytes = cloudpickle.dumps(vanishing_udf.Doubler())
    del sys.modules["vanishing_udf"]
    (module_dir / "vanishing_udf.py").unlink()
    monkeypatch.syspath_prepend(str(tmp_path / "nowhere"))
    sys.path.remove(str(module_dir))
    cp = Checkpoint(time_ms=1000, interval_ms=1000, master=None, conf={}, pending_times=[], last_completed_ms=1000,
                    graph=graph_bytes)
    CheckpointWriter(str(tmp_path / "cp"), "0.1.0").write(cp)
    with pytest.raises(CheckpointError, match="new checkpoint directory") as err:
        StreamingContext.getOrCreate(str(tmp_path / "cp"), lambda: None)
    assert "vanishing_udf" in str(err.value)


def test_damaged_checkpoint_is_skipped_in_process(tmp_path, caplog):
    writer = CheckpointWriter(str(tmp_path), "0.1.0")
    for t in (1000, 2000):
        writer.write(Checkpoint(time_ms=t, interval_ms=1000, master=None, conf={}, pending_times=[],
                                last_completed_ms=t, graph=b"g"))
    newest = tmp_path / "checkpoint-2000"
    newest.write_bytes(newest.read_bytes()[:-3])
    cp = read_latest(str(tmp_path))
    assert cp.time_ms == 1000
    assert "checkpoint-2000" in caplog.text and "damaged" in caplog.text


def test_newest_checkpoints_are_kept_and_older_ones_deleted(tmp_path):
    writer = CheckpointWriter(str(tmp_path), "0.1.0", keep=3)
    for t in range(1, 8):
        writer.write(Checkpoint(time_ms=t * 1000, interval_ms=1000, master=None, conf={}, pending_times=[],
                                last_completed_ms=t * 1000, graph=b"g"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5000", "checkpoint-6000", "checkpoint-7000"]


def test_old_data_snapshots_are_deleted_once_no_checkpoint_refers_to_them(ctx, tmp_path):
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path))
    state = ssc.queueStream([], default=[("k", 1)]).updateStateByKey(lambda new, old: sum(new) + (old or 0))
    state.checkpoint(2.0)
    seen = []
    state.foreachRDD(lambda rdd: seen.append(rdd.collect()))
    ssc.start()
    snapshots = []
    try:
        for _ in range(30):
            advance(ssc, 1)
            data = tmp_path / "data"
            snapshots.append(sorted(p.name for p in data.iterdir()) if data.exists() else [])
    finally:
        ssc.stop(stopSparkContext=False)
    assert seen[-1] == [("k", 30)]
    # a snapshot every 2 batches, but only those the 10 kept metadata checkpoints (10 batches: 5 snapshots,
    # plus the one before their window that the oldest still refers to, plus the one being written) stay
    assert max(len(s) for s in snapshots) <= 7, snapshots[-1]
    assert not set(snapshots[5]) & set(snapshots[-1]), "the early snapshots must be gone"
    cp = read_latest(str(tmp_path))
    assert cp.time_ms == 30_000
    # and every snapshot a kept checkpoint refers to is still there, so falling back to it works
    referenced = {d.rstrip("/").rsplit("/", 1)[-1] for dirs in cp.extra[SNAPSHOTS].values() for d in dirs}
    assert referenced == set(snapshots[-1]), (referenced, snapshots[-1])
