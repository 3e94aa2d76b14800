"""Signed metadata checkpoints (HMAC-SHA256 with ``dstream.checkpoint.key`` or ``DSTREAM_CHECKPOINT_KEY``):
a restore verifies before it unpickles anything, refuses a file that fails (naming it) instead of rolling
back to an older one, and the header is readable without unpickling."""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest

from dstream import Context, ManualClock, StreamingContext
from dstream.driver import checkpoint as ckpt
from dstream.driver.checkpoint import (FORMAT_VERSION, KEY_CONF, KEY_ENV, MAGIC, Checkpoint, CheckpointError,
                                       CheckpointSignatureError, CheckpointWriter, HmacSigner, decode, read_header,
                                       read_latest, sign, signer, verify)
from dstream.testing import advance

KEY = "test-signing-key-3f1c9a"


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def _cp(t: int, **kw) -> Checkpoint:
    return Checkpoint(time_ms=t, interval_ms=1000, master=None, conf={}, pending_times=[t],
                      last_completed_ms=t - 1000, graph=b"g", **kw)


class _CreatesFile:
    """Unpickling this creates ``path``: proof that a payload was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _raw(header: dict, payload: bytes) -> bytes:
    h = json.dumps(header).encode()
    return MAGIC + len(h).to_bytes(4, "big") + h + payload


def _evil(marker: Path, t: int, **header) -> bytes:
    """A well-formed checkpoint file (length and checksum right) whose payload creates ``marker``."""
    payload = pickle.dumps(_CreatesFile(marker))
    return _raw({"format": FORMAT_VERSION, "dstream": "0.0.0", "time_ms": t, "interval_ms": 1000,
                 "pending_times": [t], "last_completed_ms": t - 1000,
                 "inputs": [{"id": 0, "name": "queueStream", "batches": [{"time_ms": t, "records": 3}]}],
                 "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "signature": None,
                 **header}, payload)


def test_sign_and_verify_helpers():
    sig = sign(b"manifest bytes", KEY)
    assert sig == sign(b"manifest bytes", KEY.encode()) and len(sig) == 64
    verify(b"manifest bytes", sig, KEY, "the manifest")
    with pytest.raises(CheckpointSignatureError, match="the manifest"):
        verify(b"manifest bytes!", sig, KEY, "the manifest")
    with pytest.raises(CheckpointSignatureError, match="another key"):
        verify(b"manifest bytes", sig, "other key", "the manifest")
    with pytest.raises(CheckpointSignatureError, match="not signed"):
        verify(b"manifest bytes", None, KEY, "the manifest")


def test_hmac_signer_for_snapshot_manifests():
    s = HmacSigner(KEY)
    sig = s.sign(b"manifest")
    assert s.verify(b"manifest", sig) and not s.verify(b"manifest!", sig)
    assert not HmacSigner("other key").verify(b"manifest", sig)
    assert not HmacSigner(KEY, purpose=b"something else\n").verify(b"manifest", sig)
    assert KEY not in repr(s)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(s)
    assert signer({KEY_CONF: KEY}).verify(b"manifest", sig) and signer({}) is None


def test_signed_checkpoint_round_trip(tmp_path):
    writer = CheckpointWriter(str(tmp_path), "0.1.0", key=KEY)
    writer.write(_cp(1000))
    writer.write(_cp(2000))
    cp = read_latest(str(tmp_path), key=KEY)
    assert cp.time_ms == 2000 and cp.pending_times == [2000]
    header = read_header(str(tmp_path), key=KEY)
    assert header["signature"] == "hmac-sha256" and header["verified"] and header["time_ms"] == 2000
    assert KEY.encode() not in (tmp_path / "checkpoint-2000").read_bytes()


def test_key_from_the_environment_signs_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    CheckpointWriter(str(tmp_path), "0.1.0").write(_cp(1000))
    assert read_latest(str(tmp_path)).time_ms == 1000
    assert read_header(str(tmp_path))["verified"]
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(CheckpointSignatureError, match="no key is set") as err:
        read_latest(str(tmp_path))
    assert "checkpoint-1000" in str(err.value)


def test_tampered_checkpoint_is_refused_naming_it_and_never_unpickled(tmp_path):
    CheckpointWriter(str(tmp_path), "0.1.0", key=KEY).write(_cp(1000))
    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint-2000").write_bytes(_evil(marker, 2000, signature="hmac-sha256", hmac="0" * 64))
    with pytest.raises(CheckpointSignatureError, match="tampered") as err:
        read_latest(str(tmp_path), key=KEY)  # refused loudly: no silent fallback to checkpoint-1000
    assert "checkpoint-2000" in str(err.value) and "nothing in it was unpickled" in str(err.value).lower()
    assert not marker.exists()
    # through getOrCreate, with the key from the environment
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        with pytest.raises(CheckpointSignatureError, match="checkpoint-2000"):
            StreamingContext.getOrCreate(str(tmp_path), lambda: None)
    assert not marker.exists()


def test_unsigned_checkpoint_is_refused_when_a_key_is_set(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint-1000").write_bytes(_evil(marker, 1000))
    with pytest.raises(CheckpointSignatureError, match="not signed") as err:
        read_latest(str(tmp_path), key=KEY)
    assert "checkpoint-1000" in str(err.value)
    assert not marker.exists()
    # control: the payload is live, so the refusal above is what kept it from running
    with pytest.raises(CheckpointError, match="does not hold a dstream Checkpoint"):
        decode((tmp_path / "checkpoint-1000").read_bytes(), "control")
    assert marker.exists()


def test_edited_header_of_a_signed_checkpoint_is_refused(tmp_path):
    CheckpointWriter(str(tmp_path), "0.1.0", key=KEY).write(_cp(1000))
    path = tmp_path / "checkpoint-1000"
    data = path.read_bytes()
    n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 4], "big")
    header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])
    header["pending_times"] = []  # e.g. to skip replaying a batch
    path.write_bytes(_raw(header, data[len(MAGIC) + 4 + n:]))
    with pytest.raises(CheckpointSignatureError, match="checkpoint-1000"):
        read_latest(str(tmp_path), key=KEY)
    with pytest.raises(CheckpointSignatureError, match="checkpoint-1000"):
        read_header(str(path), key=KEY)


def test_wrong_key_is_refused(tmp_path):
    CheckpointWriter(str(tmp_path), "0.1.0", key=KEY).write(_cp(1000))
    with pytest.raises(CheckpointSignatureError, match="another key") as err:
        read_latest(str(tmp_path), key="not the key")
    assert "checkpoint-1000" in str(err.value)


def test_signed_checkpoint_without_a_key_is_refused(tmp_path):
    CheckpointWriter(str(tmp_path), "0.1.0", key=KEY).write(_cp(1000))
    with pytest.raises(CheckpointSignatureError, match=KEY_ENV):
        read_latest(str(tmp_path))
    assert read_header(str(tmp_path))["verified"] is False  # inspection needs no key


def test_signed_checkpoint_under_another_name_is_refused(tmp_path):
    CheckpointWriter(str(tmp_path), "0.1.0", key=KEY).write(_cp(1000))
    (tmp_path / "checkpoint-9000").write_bytes((tmp_path / "checkpoint-1000").read_bytes())
    with pytest.raises(CheckpointError, match="checkpoint-9000"):
        read_latest(str(tmp_path), key=KEY)


def test_header_is_readable_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "checkpoint-1000").write_bytes(_evil(marker, 1000))
    (tmp_path / "checkpoint-2000").write_bytes(_evil(marker, 2000))
    header = read_header(str(tmp_path))
    assert header["file"].endswith("checkpoint-2000") and header["time_ms"] == 2000
    assert header["interval_ms"] == 1000 and header["pending_times"] == [2000]
    assert header["last_completed_ms"] == 1000
    assert header["inputs"][0]["batches"] == [{"time_ms": 2000, "records": 3}]
    assert read_header(str(tmp_path / "checkpoint-1000"))["time_ms"] == 1000
    assert not marker.exists()
    assert read_header(str(tmp_path / "empty")) is None


def test_unsigned_checkpoints_warn_once_per_process(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ckpt, "_unsigned_warned", False)
    caplog.set_level(logging.WARNING, logger="dstream.driver.checkpoint")
    for name in ("a", "b"):
        writer = CheckpointWriter(str(tmp_path / name), "0.1.0")
        for t in (1000, 2000):
            writer.write(_cp(t))
        assert read_latest(str(tmp_path / name)).time_ms == 2000
    warnings = [r for r in caplog.records if "not signed" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert KEY_CONF in warnings[0].getMessage() and KEY_ENV in warnings[0].getMessage()


def test_stream_signs_with_the_conf_key_and_never_writes_it(tmp_path):
    """A StreamingContext signs with the key in its Context's conf; the checkpoint's conf does not hold it;
    getOrCreate verifies with the key of the active Context (or the environment)."""
    checkpoint = tmp_path / "cp"
    ctx = Context("threads[2]", conf={KEY_CONF: KEY})
    try:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(str(checkpoint))
        ssc.queueStream([[1, 2], [3, 4, 5]]).map(lambda x: x * 10).pprint()
        ssc.start()
        advance(ssc, 2)
        ssc.stop(stopSparkContext=False)
        files = sorted(checkpoint.glob("checkpoint-*"))
        assert files and all(KEY.encode() not in f.read_bytes() for f in files)
        header = read_header(str(checkpoint), key=KEY)
        assert header["verified"] and header["time_ms"] == 2000 and header["interval_ms"] == 1000
        assert header["last_completed_ms"] == 2000 and header["pending_times"] == []
        batches = {b["time_ms"]: b["records"] for b in header["inputs"][0]["batches"]}
        assert batches[2000] == 3 and header["inputs"][0]["name"]
        cp = read_latest(str(checkpoint), key=KEY)
        assert KEY_CONF not in cp.conf
        restored = StreamingContext.getOrCreate(str(checkpoint), lambda: None, clock=ManualClock(start=2.0))
        assert restored.restored_from.time_ms == 2000
        restored.stop(stopSparkContext=False)
    finally:
        ctx.stop()
    # no active Context and no key in the environment: refused, nothing unpickled
    with pytest.raises(CheckpointSignatureError, match="no key is set"):
        StreamingContext.getOrCreate(str(checkpoint), lambda: None)
