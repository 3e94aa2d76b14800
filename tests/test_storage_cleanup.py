"""Bounded storage: what a killed driver leaves in its checkpoint directory (data snapshots no checkpoint
refers to, temporary files of a checkpoint write) is found by listing when a driver starts, and deleted
once no kept checkpoint refers to it and it is older than the oldest kept checkpoint; everything a kept
checkpoint refers to, and everything newer, stays. On a local disk and on the S3 server.
"""
from __future__ import annotations

import os
import posixpath
import time

import pytest

from dstream import ManualClock, StreamingContext
from dstream.demo.harness import wait_until
from dstream.driver.retention import SnapshotJanitor, modified
from dstream.driver.storage import Location
from dstream.testing import advance


STATES: list[list] = []


def _record(rdd) -> None:
    """Module-level, so the restored graph reaches it by reference."""
    STATES.append(rdd.collect())


def _setup(ctx, checkpoint: str, clock: ManualClock):
    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=clock)
        ssc.checkpoint(checkpoint)
        state = ssc.queueStream([], default=[("k", 1)]).updateStateByKey(lambda new, old: sum(new) + (old or 0))
        state.checkpoint(2.0)
        state.foreachRDD(_record)
        return ssc
    return setup


def _put(where: Location, data: bytes = b"x") -> None:
    where.fs.makedirs(posixpath.dirname(where.path), exist_ok=True)
    where.fs.pipe_file(where.path, data)


def _mtime(where: Location) -> float:
    return modified(where.fs.info(where.path))


def _names(where: Location) -> set[str]:
    return {posixpath.basename(e["name"].rstrip("/")) for e in where.list()}


@pytest.fixture(params=["local", "s3"])
def checkpoint(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "cp")
    return request.getfixturevalue("s3_bucket") + "/cp"


def test_restart_deletes_only_orphans_older_than_the_oldest_kept_checkpoint(ctx, checkpoint, monkeypatch):
    cp = Location(checkpoint)
    data = cp.join("data")
    # left by an earlier run that was killed: a snapshot no checkpoint refers to, a torn checkpoint write
    _put(data.join("rdd-900-0ld0ld00", "part-00000.arrow"))
    _put(cp.join(".checkpoint-500.0ld0ld00.tmp"))
    time.sleep(1.1 if cp.protocol == "s3" else 0.05)  # S3 keeps modification times to the second
    STATES.clear()
    with monkeypatch.context() as m:  # a run that does not sweep, so the leftovers are still there
        m.setattr(SnapshotJanitor, "sweep_in_background", lambda self: None)
        ssc = StreamingContext.getOrCreate(checkpoint, _setup(ctx, checkpoint, ManualClock()))
        ssc.start()
        try:
            advance(ssc, 4)  # snapshots at 2000 and 4000; checkpoints 1000 to 4000
        finally:
            ssc.stop(stopSparkContext=False)
    referenced = {n for n in _names(data) if n != "rdd-900-0ld0ld00"}
    assert len(referenced) == 2, referenced
    oldest = min(modified(e) for e in cp.list() if posixpath.basename(e["name"]).startswith("checkpoint-"))
    assert _mtime(cp.join(".checkpoint-500.0ld0ld00.tmp")) < oldest
    # written while the driver is down, so newer than the oldest kept checkpoint: a writer may own them
    _put(data.join("rdd-901-9e99e900", "part-00000.arrow"))
    _put(cp.join(".checkpoint-5000.9e99e900.tmp"))

    restored = StreamingContext.getOrCreate(checkpoint, lambda: pytest.fail("must restore"),
                                            clock=ManualClock(4.0))
    restored.start()
    try:
        wait_until(lambda: "rdd-900-0ld0ld00" not in _names(data)
                   and ".checkpoint-500.0ld0ld00.tmp" not in _names(cp), 20, "the orphans to be deleted")
        assert _names(data) == referenced | {"rdd-901-9e99e900"}
        assert ".checkpoint-5000.9e99e900.tmp" in _names(cp)
        advance(restored)  # the state goes on from the kept snapshot
        assert STATES[-1] == [("k", 5)]
    finally:
        restored.stop(stopSparkContext=False)


def test_a_sweep_keeps_what_a_kept_checkpoint_refers_to(tmp_path):
    """The janitor alone: a snapshot a kept checkpoint refers to stays however old it is; one no kept
    checkpoint refers to goes once older than the oldest kept checkpoint; nothing goes while the
    references of a kept checkpoint are unknown."""
    cp = Location(str(tmp_path))
    for name in ("rdd-1-aaaaaaaa", "rdd-2-bbbbbbbb"):
        _put(cp.join("data", name, "part-00000.arrow"))
    time.sleep(0.05)
    for t in (1000, 2000):
        _put(cp.join(f"checkpoint-{t}"))
    referenced = {str(tmp_path / "data" / "rdd-1-aaaaaaaa")}
    unsure = SnapshotJanitor(10, cp, history={2000: referenced})  # the references of 1000 are unknown
    unsure.start()
    assert unsure.wait(10) and unsure.sweep() == []
    janitor = SnapshotJanitor(10, cp, history={1000: set(), 2000: referenced})
    janitor.start()
    assert janitor.wait(10)
    assert _names(cp.join("data")) == {"rdd-1-aaaaaaaa"}
    # one this process writes may be old and not referenced yet (batches queued behind its batch): kept
    _put(cp.join("data", "rdd-3-cccccccc", "part-00000.arrow"))
    for p in (tmp_path / "data" / "rdd-3-cccccccc", tmp_path / "data" / "rdd-3-cccccccc" / "part-00000.arrow"):
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    assert janitor.sweep() == [] and "rdd-3-cccccccc" in _names(cp.join("data"))
    assert janitor.references(3000, set()) == {1000: [], 2000: sorted(referenced), 3000: []}


def test_replayed_batches_older_than_every_kept_checkpoint_keep_their_snapshots(tmp_path):
    """After a restart, the kept checkpoints can be newer than the batches being replayed (batches the
    killed driver generated but never completed). A replayed batch's checkpoint is then older than all of
    them, yet the snapshots its graph refers to are in use and must stay until newer writes stop
    referring to them."""
    kept = {t: set() for t in range(11_000, 21_000, 1000)}  # the killed driver's newest 10, no snapshots
    janitor = SnapshotJanitor(10, history=kept)
    live = str(tmp_path / "data" / "rdd-7-dddddddd")
    _put(Location(live).join("part-00000.arrow"))
    janitor.collect({live}, 5000)  # replaying batch 5000: its state is snapshotted in rdd-7
    janitor.collect({live}, 5500)
    assert os.path.exists(live), "a snapshot the running graph refers to was deleted"
    for t in range(6000, 11_000, 500):  # ten more writes that no longer refer to it
        janitor.collect(set(), t)
    assert not os.path.exists(live), "a snapshot nothing refers to any more must go"
