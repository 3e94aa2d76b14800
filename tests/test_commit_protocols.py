"""Commit protocols for stores without rename (issue 9, item 3): manifests, and data snapshots on them.

A directory of part files (a sink batch, a data snapshot) is published by one small object, ``_SUCCESS``,
holding a JSON manifest of its parts with their sizes and SHA-256. On local disk the parts are renamed
into place first; on object stores they are written once under final unique names. These tests run both
protocols on local disk and on a real S3 server (moto's, ``tests/s3server.py``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import posixpath
import re

import pyarrow as pa
import pytest

from dstream import ManualClock, StreamingContext
from dstream.driver.checkpoint import CheckpointError
from dstream.driver.commit import (MARKER, ManifestCommitter, ManifestError, Manifest, Part, RenameCommitter,
                                   committed_parts, committer_for, read_manifest, write_once)
from dstream.driver.storage import Location
from dstream.io import CheckpointRDD, read_arrow_file, write_arrow_file, write_rdd_checkpoint
from dstream.testing import advance



@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Location:
    """A directory to commit into: on local disk, or on the S3 server."""
    if request.param == "local":
        return Location(str(tmp_path / "data"))
    bucket = request.getfixturevalue("s3_bucket")
    return Location(f"{bucket}/cp/data", request.getfixturevalue("s3_options"))


class HmacSigner:
    """A stand-in for the checkpoint key's signer (issue 9, item 6): HMAC-SHA256, hex."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def sign(self, payload: bytes) -> str:
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature)


def _names(where: Location) -> list[str]:
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in where.list())


def _cat(where: Location) -> bytes:
    return where.fs.cat_file(where.path)


# -- the committers --------------------------------------------------------------------------------
def test_the_protocol_is_chosen_by_the_filesystem(tmp_path):
    assert isinstance(committer_for(Location(str(tmp_path))), RenameCommitter)
    assert isinstance(committer_for(Location(f"file://{tmp_path}")), RenameCommitter)
    assert isinstance(committer_for(Location("memory://dstream-commit/x")), ManifestCommitter)


@pytest.mark.parametrize("committer", [RenameCommitter(), ManifestCommitter()], ids=["rename", "manifest"])
def test_parts_are_published_only_by_the_manifest(root, committer):
    where = root.join("batch")
    parts = [committer.write_part(where, "att1", f"part-{i:05d}", ".txt", f"data {i}\n".encode())
             for i in range(3)]
    assert not committer.is_committed(where)
    with pytest.raises(ManifestError, match=re.escape(where.url) + ": not committed"):
        committed_parts(where)
    manifest = committer.commit(where, "att1", parts)
    assert committer.is_committed(where)
    assert read_manifest(where) == manifest and manifest.attempt == "att1"
    assert [_cat(p) for p in committed_parts(where)] == [b"data 0\n", b"data 1\n", b"data 2\n"]
    assert _names(where) == sorted([MARKER] + [p.name for p in parts])  # nothing else (no _temporary)
    body = json.loads(_cat(where.join(MARKER)))
    assert [(p["name"], p["size"]) for p in body["parts"]] == [(p.name, 7) for p in parts]
    if isinstance(committer, ManifestCommitter):
        assert all(re.fullmatch(r"part-0000\d-att1-[0-9a-f]{8}\.txt", p.name) for p in parts)
    else:
        assert [p.name for p in parts] == ["part-00000.txt", "part-00001.txt", "part-00002.txt"]


def test_a_retried_task_never_overwrites_a_part_on_an_object_store(root):
    where = root.join("batch")
    first = ManifestCommitter().write_part(where, "att", "part-00000", "", b"first copy\n")
    second = ManifestCommitter().write_part(where, "att", "part-00000", "", b"second, longer copy\n")
    assert first.name != second.name
    ManifestCommitter().commit(where, "att", [second])
    assert [_cat(p) for p in committed_parts(where)] == [b"second, longer copy\n"]
    assert _names(where) == sorted([MARKER, second.name])  # the losing copy was swept


@pytest.mark.parametrize("damage", ["resized", "missing", "garbage", "other format"])
def test_a_manifest_that_does_not_match_is_refused_naming_the_directory(root, damage):
    where = root.join("batch")
    committer = ManifestCommitter()
    parts = [committer.write_part(where, "a", f"part-{i:05d}", "", b"12345\n") for i in range(2)]
    committer.commit(where, "a", parts)
    victim = where.join(parts[1].name)
    if damage == "resized":
        write_once(victim, b"123\n")
        expected = f"the part {parts[1].name} has 4 bytes, the manifest says 6"
    elif damage == "missing":
        victim.fs.rm(victim.path)
        expected = f"the part {parts[1].name} listed in the manifest is missing"
    elif damage == "garbage":
        write_once(where.join(MARKER), b"{not json")
        expected = "damaged manifest"
    else:
        write_once(where.join(MARKER), json.dumps({"format": "elsewhere"}).encode())
        expected = "damaged manifest _SUCCESS: not a dstream manifest"
    with pytest.raises(ManifestError, match=re.escape(f"{where.url}: {expected}")):
        committed_parts(where)


def test_hadoop_empty_success_marker_reads_the_visible_files(tmp_path):
    (tmp_path / "part-00000").write_text("a\n")
    (tmp_path / "part-00001").write_text("b\n")
    (tmp_path / ".part-00001.crc").write_text("x")
    (tmp_path / "_temporary").mkdir()
    (tmp_path / MARKER).write_text("")
    assert [posixpath.basename(p.path) for p in committed_parts(str(tmp_path))] == ["part-00000", "part-00001"]
    with pytest.raises(ManifestError, match="is empty, not signed"):
        committed_parts(str(tmp_path), signer=HmacSigner(b"k"))


def test_signed_manifests(tmp_path):
    where = Location(str(tmp_path / "b"))
    committer = committer_for(where)
    parts = [committer.write_part(where, "a", "part-00000", "", b"x\n")]
    manifest = committer.commit(where, "a", parts, signer=HmacSigner(b"key"))
    assert manifest.signature and json.loads(_cat(where.join(MARKER)))["signature"] == manifest.signature
    assert committed_parts(where, signer=HmacSigner(b"key"))
    assert committed_parts(where)  # without a key, a signed manifest is still read
    with pytest.raises(ManifestError, match="fails its signature check"):
        committed_parts(where, signer=HmacSigner(b"another key"))
    tampered = json.loads(_cat(where.join(MARKER)))
    tampered["parts"][0]["size"] = 3
    write_once(where.join(MARKER), json.dumps(tampered).encode())
    with pytest.raises(ManifestError, match="fails its signature check"):
        committed_parts(where, signer=HmacSigner(b"key"))


def test_manifest_round_trip_and_part_check():
    m = Manifest((Part("part-00000", 2, hashlib.sha256(b"ab").hexdigest()),), "att", "sig")
    assert Manifest.from_bytes(m.to_bytes(), "somewhere") == m
    m.parts[0].check(b"ab", "somewhere")
    with pytest.raises(ManifestError, match="somewhere: the part part-00000 does not match its SHA-256"):
        m.parts[0].check(b"ba", "somewhere")


def test_write_arrow_file_is_never_seen_half_written(root):
    table = pa.table({"value": [1, 2, 3]})
    size = write_arrow_file(root.join("t.arrow"), table)
    assert read_arrow_file(root.join("t.arrow")).equals(table)
    assert _names(root) == ["t.arrow"]  # no temporary name left behind
    assert size == len(_cat(root.join("t.arrow")))


# -- data snapshots --------------------------------------------------------------------------------
def _snapshot(ctx, root, signer=None):
    rdd = ctx.parallelize(range(12), 3).map(lambda x: x * x)
    return write_rdd_checkpoint(rdd, root, signer=signer)


def _where(cp: CheckpointRDD, root: Location) -> Location:
    return Location(cp.directory, root.storage_options)


def test_a_snapshot_is_published_by_its_manifest(root, pctx):
    """Written by executor processes (on S3 too), read back through the manifest, restorable."""
    cp = _snapshot(pctx, root)
    assert sorted(cp.collect()) == [x * x for x in range(12)]
    where = _where(cp, root)
    manifest = read_manifest(where)
    assert [p.name for p in manifest.parts] == [posixpath.basename(p) for p in cp.paths]
    assert _names(where) == sorted([MARKER] + [p.name for p in manifest.parts])
    if root.protocol == "file":
        assert [p.name for p in manifest.parts] == ["part-00000.arrow", "part-00001.arrow", "part-00002.arrow"]
    restored = CheckpointRDD(pctx, cp.directory if root.protocol == "file" else where, cp.paths)  # as a restart
    assert sorted(restored.collect()) == [x * x for x in range(12)]


@pytest.mark.parametrize("damage", ["no manifest", "resized part", "missing part", "other parts recorded"])
def test_a_snapshot_that_does_not_match_its_manifest_is_refused(root, ctx, damage):
    cp = _snapshot(ctx, root)
    where = _where(cp, root)
    paths = list(cp.paths)
    if damage == "no manifest":  # as a snapshot whose driver died before the commit
        where.fs.rm(where.join(MARKER).path)
        expected = "not committed"
    elif damage == "resized part":
        write_once(Location(paths[1], root.storage_options), b"short")
        expected = "has 5 bytes"
    elif damage == "missing part":
        victim = Location(paths[2], root.storage_options)
        victim.fs.rm(victim.path)
        expected = "is missing"
    else:
        paths = paths[:2]
        expected = "the checkpoint records 2 parts"
    with pytest.raises(CheckpointError, match=re.escape(cp.directory)) as err:
        CheckpointRDD(ctx, where, paths)
    assert expected in str(err.value)


def test_a_snapshot_part_replaced_by_same_size_bytes_fails_when_read(root, ctx):
    cp = _snapshot(ctx, root)
    victim = Location(cp.paths[0], root.storage_options)
    data = bytearray(_cat(victim))
    data[-1] ^= 0xFF
    write_once(victim, bytes(data))
    restored = CheckpointRDD(ctx, _where(cp, root), cp.paths)  # names and sizes match
    with pytest.raises(Exception, match="does not match its SHA-256"):
        restored.collect()


def test_signed_snapshots(tmp_path, ctx):
    root = Location(str(tmp_path / "data"))
    cp = _snapshot(ctx, root, signer=HmacSigner(b"key"))
    assert sorted(CheckpointRDD(ctx, cp.directory, cp.paths, signer=HmacSigner(b"key")).collect())[-1] == 121
    with pytest.raises(CheckpointError, match=re.escape(cp.directory) + ".*fails its signature check"):
        CheckpointRDD(ctx, cp.directory, cp.paths, signer=HmacSigner(b"wrong"))
    unsigned = _snapshot(ctx, root)
    with pytest.raises(CheckpointError, match=re.escape(unsigned.directory) + ".*not signed"):
        CheckpointRDD(ctx, unsigned.directory, unsigned.paths, signer=HmacSigner(b"key"))


def _run_snapshotted_stream(ctx, checkpoint: str, batches: int) -> None:
    """Run a state stream snapshotted every batch for ``batches`` batches, then stop it (the "driver dies")."""
    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(checkpoint)
        state = ssc.queueStream([[("a", 1)], [("a", 2)], [("b", 1)]]).updateStateByKey(
            lambda new, old: sum(new) + (old or 0))
        state.checkpoint(1.0)
        state.foreachRDD(lambda rdd: None)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    advance(ssc, batches)
    ssc.stop(stopSparkContext=False)


def test_restore_refuses_a_snapshot_without_its_manifest(ctx, tmp_path):
    """getOrCreate trusts only snapshots whose manifest is there; it fails naming the directory."""
    checkpoint = str(tmp_path / "cp")

    _run_snapshotted_stream(ctx, checkpoint, batches=2)
    snapshots = [d for d in (tmp_path / "cp" / "data").iterdir() if (d / MARKER).exists()]
    assert snapshots
    for d in snapshots:
        (d / MARKER).unlink()
    with pytest.raises(CheckpointError, match="not committed") as err:
        StreamingContext.getOrCreate(checkpoint, lambda: None, clock=ManualClock(start=3.0))
    assert any(str(d) in str(err.value) for d in snapshots), str(err.value)


def test_restore_from_intact_snapshots_still_works(ctx, tmp_path):
    checkpoint = str(tmp_path / "cp")

    _run_snapshotted_stream(ctx, checkpoint, batches=2)
    restored = StreamingContext.getOrCreate(checkpoint, lambda: None, clock=ManualClock(start=2.0))
    try:
        assert restored.restored_from is not None
        state = next(s for s in restored.graph.all_streams() if s.checkpoint_data)
        rdd = state.generated[max(state.generated)]
        assert isinstance(rdd, CheckpointRDD) and sorted(rdd.collect()) == [("a", 3)]
    finally:
        restored.stop(stopSparkContext=False)
    assert os.path.isdir(checkpoint)


def test_abort_retries_a_delete_that_races_a_straggler_task(tmp_path, monkeypatch):
    """A task of the failed attempt still writing makes a local recursive delete fail once: tried again."""
    (tmp_path / "b" / "_temporary" / "dead").mkdir(parents=True)
    where = Location(str(tmp_path / "b"))
    fs, real, calls = where.fs, where.fs.rm, []

    def racing_rm(path, recursive=False, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(39, "Directory not empty")
        return real(path, recursive=recursive, **kwargs)

    monkeypatch.setattr(fs, "rm", racing_rm)
    RenameCommitter().abort(where)
    assert len(calls) == 2 and not (tmp_path / "b").exists()
