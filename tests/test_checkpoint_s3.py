"""Metadata checkpoints on a real S3 server (moto's, on loopback): written in one PUT (no rename), listed
afresh, restored by getOrCreate, damaged ones skipped, signed ones verified, and storage options given
explicitly (no AWS environment) reach every call without their secrets showing anywhere."""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import pickle
import uuid
from pathlib import Path

import pytest

from dstream import Context, ManualClock, StreamingContext
from dstream.driver.checkpoint import (FORMAT_VERSION, KEY_ENV, MAGIC, Checkpoint, CheckpointSignatureError,
                                       CheckpointWriter, read_header, read_latest)
from dstream.driver.storage import Location
from dstream.testing import advance


s3fs = pytest.importorskip("s3fs")

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


@pytest.fixture
def own_ctx():
    """A Context of its own: StreamingContext.checkpoint points its data snapshots at the bucket."""
    c = Context("threads[2]")
    yield c
    c.stop()


def _fs(server) -> "s3fs.S3FileSystem":
    return s3fs.S3FileSystem(endpoint_url=server.endpoint, key="testing", secret="testing",
                             skip_instance_cache=True)


def _cp(t: int) -> Checkpoint:
    return Checkpoint(time_ms=t, interval_ms=1000, master=None, conf={}, pending_times=[], last_completed_ms=t,
                      graph=b"g")


def _read_batch(prefix: str, t_ms: int) -> list:
    d = Path(f"{prefix}-{t_ms}")
    assert (d / "_SUCCESS").exists(), f"batch {t_ms} not committed"
    return sorted(ast.literal_eval(line) for p in sorted(d.glob("part-*")) for line in p.read_text().splitlines())


def _stateful_setup(ctx, checkpoint: str, prefix: str, clock, storage_options=None):
    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=clock)
        ssc.checkpoint(checkpoint, storage_options=storage_options)
        state = ssc.queueStream([[("a", 1)], [("a", 2), ("b", 1)], [("b", 5)], [("a", 10)]]).updateStateByKey(
            lambda new, old: sum(new) + (old or 0))
        state.saveAsTextFiles(prefix)
        return ssc
    return setup


def test_stateful_stream_checkpoints_to_s3_and_getOrCreate_restores_it(own_ctx, s3_server, s3_bucket, tmp_path):
    checkpoint, prefix = f"{s3_bucket}/job/checkpoint", str(tmp_path / "out" / "state")
    ssc = StreamingContext.getOrCreate(checkpoint, _stateful_setup(own_ctx, checkpoint, prefix, ManualClock()))
    assert ssc.restored_from is None
    ssc.start()
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)  # the "driver dies"

    names = [n.rsplit("/", 1)[-1] for n in _fs(s3_server).ls(checkpoint.removeprefix("s3://"))]
    assert "checkpoint-2000" in names and not [n for n in names if n.endswith(".tmp")], names
    assert read_header(checkpoint)["time_ms"] == 2000

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    restored = StreamingContext.getOrCreate(checkpoint, must_not_run, clock=ManualClock(start=4.0))
    assert restored.restored_from is not None and restored.restored_from.time_ms == 2000
    restored.start()
    try:
        assert restored.replayed_times == [3000, 4000]
        assert restored.wait_for_batch(4000, 30)
    finally:
        restored.stop(stopSparkContext=False)
    assert _read_batch(prefix, 2000) == [("a", 3), ("b", 1)]
    assert _read_batch(prefix, 3000) == [("a", 3), ("b", 6)]
    assert _read_batch(prefix, 4000) == [("a", 13), ("b", 6)]
    assert read_latest(checkpoint).time_ms == 4000


def test_damaged_newest_checkpoint_on_s3_falls_back_to_the_previous_one(s3_server, s3_bucket, caplog):
    url = f"{s3_bucket}/cp"
    writer = CheckpointWriter(url, "0.1.0")
    writer.write(_cp(1000))
    writer.write(_cp(2000))
    fs = _fs(s3_server)
    key = f"{url.removeprefix('s3://')}/checkpoint-2000"
    data = fs.cat_file(key)
    fs.pipe_file(key, data[: len(data) // 2])
    assert read_latest(url).time_ms == 1000
    assert "skipping damaged checkpoint" in caplog.text and f"{url}/checkpoint-2000" in caplog.text


def test_s3_checkpoints_are_written_in_one_put_without_rename(s3_bucket, monkeypatch):
    url = f"{s3_bucket}/cp"
    writer = CheckpointWriter(url, "0.1.0", keep=2)

    def no_rename(*args, **kwargs):
        raise AssertionError("an object store has no rename: write the object under its final name")

    for name in ("mv", "move", "rename", "copy"):
        monkeypatch.setattr(writer.fs, name, no_rename)
    for t in (1000, 2000, 3000):
        writer.write(_cp(t))
    names = sorted(e["name"].rsplit("/", 1)[-1] for e in Location(url).list())
    assert names == ["checkpoint-2000", "checkpoint-3000"]


def test_listing_is_fresh_so_a_restart_sees_the_newest_checkpoint(s3_server, s3_bucket):
    url = f"{s3_bucket}/cp"
    CheckpointWriter(url, "0.1.0").write(_cp(1000))
    assert read_latest(url).time_ms == 1000  # lists (and would cache) the directory
    other = CheckpointWriter(Location(url, {"endpoint_url": s3_server.endpoint, "key": "testing",
                                            "secret": "testing", "skip_instance_cache": True}), "0.1.0")
    other.write(_cp(2000))  # written through another S3 client, as another driver would
    assert read_latest(url).time_ms == 2000


def test_tampered_signed_checkpoint_on_s3_is_refused_and_never_unpickled(s3_server, s3_bucket, tmp_path):
    url = f"{s3_bucket}/cp"
    CheckpointWriter(url, "0.1.0", key="k1").write(_cp(1000))
    marker = tmp_path / "pwned"

    class CreatesFile:
        def __reduce__(self):
            return open, (str(marker), "w")

    payload = pickle.dumps(CreatesFile())
    header = json.dumps({"format": FORMAT_VERSION, "dstream": "0.0.0", "time_ms": 2000, "interval_ms": 1000,
                         "pending_times": [], "last_completed_ms": 2000, "inputs": [], "length": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest(), "signature": "hmac-sha256",
                         "hmac": "1" * 64}).encode()
    _fs(s3_server).pipe_file(f"{url.removeprefix('s3://')}/checkpoint-2000",
                             MAGIC + len(header).to_bytes(4, "big") + header + payload)
    with pytest.raises(CheckpointSignatureError) as err:
        read_latest(url, key="k1")
    assert f"{url}/checkpoint-2000" in str(err.value)
    assert not marker.exists()
    _fs(s3_server).rm(f"{url.removeprefix('s3://')}/checkpoint-2000")
    assert read_latest(url, key="k1").time_ms == 1000
    with pytest.raises(CheckpointSignatureError, match="another key"):
        read_latest(url, key="k2")


def test_explicit_storage_options_without_aws_environment(own_ctx, s3_server, s3_bucket, tmp_path, monkeypatch,
                                                          caplog):
    """Storage options given to getOrCreate reach the checkpoints and the data snapshots, on the first run
    and after a restart in a fresh Context (no AWS environment at all); their secret shows nowhere."""
    secret = f"explicit-secret-{uuid.uuid4().hex}"
    options = {"key": "AKIAEXPLICIT", "secret": secret, "endpoint_url": s3_server.endpoint,
               "client_kwargs": {"region_name": "us-east-1"}}
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # no filesystem made from the environment is reused
    caplog.set_level(logging.DEBUG, logger="dstream")
    checkpoint, prefix = f"{s3_bucket}/explicit/cp", str(tmp_path / "out" / "state")

    def setup() -> StreamingContext:
        ssc = StreamingContext(own_ctx, 1.0, clock=ManualClock())
        state = ssc.queueStream([[("a", 1)], [("a", 2), ("b", 1)], [("b", 5)]]).updateStateByKey(
            lambda new, old: sum(new) + (old or 0))
        state.checkpoint(1.0)  # a data snapshot every batch, below the checkpoint directory
        state.saveAsTextFiles(prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup, storage_options=options)
    assert ssc.checkpoint_location == Location(checkpoint, options)
    assert secret not in repr(ssc.checkpoint_location)
    ssc.start()
    advance(ssc, 2)
    ssc.stop()  # the Context too: the restart builds a fresh one, whose snapshot directory is not set yet

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    restored = StreamingContext.getOrCreate(checkpoint, must_not_run, clock=ManualClock(start=3.0),
                                            storage_options=options)
    try:
        assert restored.sparkContext is not own_ctx
        restored.start()
        assert restored.replayed_times == [3000]
        assert restored.wait_for_batch(3000, 30)
    finally:
        restored.stop()
    assert _read_batch(prefix, 2000) == [("a", 3), ("b", 1)]
    assert _read_batch(prefix, 3000) == [("a", 3), ("b", 6)]

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    objects = fs.find(s3_bucket.removeprefix("s3://"))
    assert any(o.endswith("checkpoint-3000") for o in objects), objects
    assert any("/data/rdd-" in o for o in objects), objects
    for o in objects:
        assert secret.encode() not in fs.cat_file(o), o
    with pytest.raises(CheckpointSignatureError) as err:
        read_latest(checkpoint, storage_options=options, key="a key these were not signed with")
    assert checkpoint in str(err.value) and secret not in str(err.value)
    assert secret not in caplog.text
