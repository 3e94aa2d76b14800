"""The file sources on object storage: a real S3 server (moto's, tests/s3server.py) and memory:// with the
thread executor. Files arriving while the stream runs are each taken once, a replaced object is taken
again, storage options reach every filesystem call, and a listing or read error fails its batch, names the
URL (never a secret) and loses no input.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from dstream import StreamingContext
from dstream.broadcast import pickling_for_checkpoint
from dstream.executors import serialization
from dstream.testing import advance, collect


SECRET = "Sup3r-s3cret-for-tests"
KEY_ID = "AKIA-explicit-id"


class Store:
    """A watched directory on some filesystem, and a writer that is not the stream's filesystem object."""

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem) -> None:
        self.url = url
        self.fs = fs

    def put(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.url}/{name}", data)


def _s3_writer(endpoint: str) -> fsspec.AbstractFileSystem:
    import s3fs  # the [test] extra; only the S3 tests need it
    # its own instance: a writer elsewhere, whose writes do not touch the stream's cached listings
    return s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)


@pytest.fixture(params=["s3", "memory"])
def store(request):
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield Store(f"{bucket}/in", _s3_writer(server.endpoint))
    else:
        fs = fsspec.filesystem("memory")
        base = f"/s3like-{uuid.uuid4().hex[:8]}"
        fs.makedirs(base + "/in", exist_ok=True)
        yield Store(f"memory://{base}/in", fs)
        fs.rm(base, recursive=True)


def test_files_arriving_while_the_stream_runs_are_each_taken_once(ssc, store):
    store.put("before.txt", b"old\n")
    out = collect(ssc.textFileStream(store.url), sort=True)
    ssc.start()  # lists the directory (s3fs would now serve that listing from its cache)
    for i in range(3):
        store.put(f"f{i}.txt", f"a{i}\nb{i}\n".encode())
        if i == 1:
            store.put("g1.txt", b"c1")
        advance(ssc)
    advance(ssc)
    assert out == [["a0", "b0"], ["a1", "b1", "c1"], ["a2", "b2"], []]


def test_an_object_replaced_under_the_same_name_is_taken_again(ssc, store):
    out = collect(ssc.textFileStream(store.url))
    ssc.start()
    for data in (b"v1\n", b"v2\n", b"version 3\n"):  # v2: same size; S3's ETag (or the new time) tells
        store.put("a.txt", data)
        advance(ssc)
    advance(ssc)
    assert out == [["v1"], ["v2"], ["version 3"], []]


def test_binary_records_stream(ssc, store):
    out = collect(ssc.binaryRecordsStream(store.url, 3), sort=True)
    ssc.start()
    store.put("r1.bin", b"abcdef")
    store.put("r2.bin", b"ghi")
    advance(ssc)
    store.put("r3.bin", b"jkl")
    advance(ssc)
    assert out == [[b"abc", b"def", b"ghi"], [b"jkl"]]


def test_context_text_file(ctx, store):
    store.put("a.txt", b"1\n2\n")
    store.put("_SUCCESS", b"")
    store.put("sub/b.txt", b"3\n")
    assert sorted(ctx.textFile(store.url).collect()) == ["1", "2", "3"]
    store.put("c.txt", b"4\n")  # a second read lists afresh
    assert sorted(ctx.textFile(store.url, minPartitions=3).collect()) == ["1", "2", "3", "4"]
    assert sorted(ctx.textFile(f"{store.url}/*.txt").collect()) == ["1", "2", "4"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{store.url}/nothing*")):
        ctx.textFile(f"{store.url}/nothing*")


def test_missing_bucket_fails_the_batch_and_its_files_come_later(ssc, s3_server):
    name = f"t-{uuid.uuid4().hex[:16]}"
    url = f"s3://{name}/in"
    out = collect(ssc.textFileStream(url))
    ssc.start()
    advance(ssc)
    with pytest.raises(Exception, match=re.escape(url)) as info:
        ssc.awaitTerminationOrTimeout(0)
    assert "batch" in str(info.value)
    writer = _s3_writer(s3_server.endpoint)
    writer.mkdir(name)
    writer.pipe_file(f"{url}/a.txt", b"late\n")
    advance(ssc)
    assert out == [[], ["late"]]


@pytest.fixture
def no_aws_environment(s3_server, monkeypatch, tmp_path):
    """The environment without any AWS setting: only explicit storage options can reach the server."""
    for name in list(s3_server.env) + ["AWS_PROFILE", "FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    return {"endpoint_url": s3_server.endpoint, "key": KEY_ID, "secret": SECRET}


def test_explicit_storage_options_without_the_environment(ctx, pctx, clock, s3_bucket, s3_server,
                                                          no_aws_environment, tmp_path):
    options = no_aws_environment
    writer = _s3_writer(s3_server.endpoint)
    url = f"{s3_bucket}/in"
    writer.pipe_file(f"{url}/old.txt", b"old\n")
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    try:
        ssc.checkpoint(str(tmp_path / "checkpoint"))
        stream = ssc.textFileStream(url, storage_options=options)
        out = collect(stream, sort=True)
        missing = ssc.binaryRecordsStream(f"s3://t-missing-{uuid.uuid4().hex[:8]}/in", 2, storage_options=options)
        collect(missing)
        ssc.start()
        writer.pipe_file(f"{url}/new.txt", b"x\ny\n")
        advance(ssc)
        with pytest.raises(Exception, match="t-missing-") as info:
            ssc.awaitTerminationOrTimeout(0)
    finally:
        ssc.stop(stopSparkContext=False)
    assert out == [["x", "y"]]
    for text in (str(info.value), repr(info.value), repr(stream), stream.name, repr(stream.location)):
        assert SECRET not in text and KEY_ID not in text
    assert "***" in repr(stream.location)
    for path in Path(tmp_path / "checkpoint").rglob("*"):  # the metadata checkpoints leave the secrets out
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes() and KEY_ID.encode() not in path.read_bytes()
    with pickling_for_checkpoint():
        assert SECRET.encode() not in serialization.dumps(stream)
    # Context.textFile: listed on the driver, read by executor processes, with the options pickled in the task
    assert sorted(pctx.textFile(url, storage_options=options).collect()) == ["old", "x", "y"]
    with pytest.raises(FileNotFoundError, match=re.escape(f"{url}/absent.txt")) as info:
        ctx.textFile(f"{url}/absent.txt", storage_options=options)
    assert SECRET not in str(info.value)


# -- memory:// with the thread executor: options, failing listings and reads -----------------------------

TOKEN = "tok-" + "7" * 12


class GuardedMemoryFileSystem(MemoryFileSystem):
    """memory:// that wants ``token`` in its storage options, as a remote store wants credentials. Its
    errors quote the token it got (a careless filesystem): the engine must mask it. Listings and reads can
    be made to fail, as over a broken network."""

    protocol = "guardedmem"
    store: dict = {}
    pseudo_dirs = [""]
    fail_listings = 0
    fail_reads = False

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("guardedmem://"))

    def _check(self, path: str) -> None:
        if self.storage_options.get("token") != TOKEN:
            raise PermissionError(f"token {self.storage_options.get('token')!r} may not read {path}")

    def ls(self, path, detail=True, **kwargs):
        self._check(path)
        if GuardedMemoryFileSystem.fail_listings:
            GuardedMemoryFileSystem.fail_listings -= 1
            raise ConnectionError(f"connection reset (token {TOKEN})")
        return super().ls(path, detail=detail, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._check(path)
        if GuardedMemoryFileSystem.fail_reads:
            raise ConnectionError(f"connection reset (token {TOKEN})")
        return super().cat_file(path, start, end, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        self._check(path)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("guardedmem", GuardedMemoryFileSystem, clobber=True)


@pytest.fixture
def guarded():
    fs = GuardedMemoryFileSystem(token=TOKEN)
    base = f"/guarded-{uuid.uuid4().hex[:8]}"
    fs.makedirs(base + "/in", exist_ok=True)
    yield Store(f"guardedmem://{base}/in", fs)
    GuardedMemoryFileSystem.fail_listings, GuardedMemoryFileSystem.fail_reads = 0, False
    fs.rm(base, recursive=True)


def _no_token(text: str) -> bool:
    return TOKEN not in text


def test_storage_options_reach_listing_and_reading_on_the_thread_executor(ssc, ctx, guarded):
    stream = ssc.textFileStream(guarded.url, storage_options={"token": TOKEN})
    out = collect(stream.map(str.upper), sort=True)
    ssc.start()
    guarded.put("a.txt", b"x\ny\n")
    advance(ssc)
    assert out == [["X", "Y"]]
    assert sorted(ctx.textFile(guarded.url, storage_options={"token": TOKEN}).collect()) == ["x", "y"]
    assert _no_token(repr(stream.location)) and _no_token(stream.name)
    with pytest.raises(Exception, match=re.escape(f"{guarded.url}/a.txt")) as info:
        ctx.textFile(guarded.url, storage_options={"token": "wrong-token"}).collect()
    assert "wrong-token" not in str(info.value) and "PermissionError" in str(info.value)


def test_a_failed_listing_fails_its_batch_and_the_files_come_later(ssc, guarded):
    out = collect(ssc.textFileStream(guarded.url, storage_options={"token": TOKEN}), sort=True)
    ssc.start()
    guarded.put("a.txt", b"1\n")
    advance(ssc)
    guarded.put("b.txt", b"2\n")
    GuardedMemoryFileSystem.fail_listings = 1
    advance(ssc)
    with pytest.raises(Exception, match=re.escape(guarded.url)) as info:
        ssc.awaitTerminationOrTimeout(0)
    assert _no_token(str(info.value)) and "***" in str(info.value)
    advance(ssc)
    assert out == [["1"], [], ["2"]]


def test_a_read_error_in_a_task_names_the_file(ssc, guarded):
    out = collect(ssc.textFileStream(guarded.url, storage_options={"token": TOKEN}))
    ssc.start()
    guarded.put("bad.txt", b"1\n")
    GuardedMemoryFileSystem.fail_reads = True
    advance(ssc)
    with pytest.raises(Exception, match=re.escape(f"{guarded.url}/bad.txt")) as info:
        ssc.awaitTerminationOrTimeout(0)
    assert _no_token(str(info.value))
    assert out == []


def test_what_a_checkpoint_keeps_of_a_file_stream(ssc, guarded):
    """The files taken, with their versions, and the batches' files survive the checkpoint; the token does
    not. A stream from a checkpoint of an older version (names only) takes none of its files again."""
    stream = ssc.textFileStream(guarded.url, storage_options={"token": TOKEN})
    collect(stream)
    ssc.start()
    guarded.put("a.txt", b"1\n")
    advance(ssc)
    with pickling_for_checkpoint():
        data = serialization.dumps(stream)
    assert TOKEN.encode() not in data
    copy = serialization.loads(data)
    assert copy.location.url == guarded.url and copy.location.storage_options == {}
    assert copy.seen == stream.seen and list(copy.seen) == [f"{guarded.url}/a.txt"]
    assert copy.batch_files == {1000: [f"{guarded.url}/a.txt"]}
    old = dict(copy.__dict__, seen=set(copy.seen))
    del old["location"], old["batch_errors"]
    upgraded = type(stream).__new__(type(stream))
    upgraded.__setstate__(old)
    assert upgraded.seen == {f"{guarded.url}/a.txt": ""} and upgraded.location.url == guarded.url
