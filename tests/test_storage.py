"""``Location`` (driver/storage.py): an fsspec URL with its storage options, secrets masked and kept out of
checkpoints, listings always fresh."""
from __future__ import annotations

import pickle
import re
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from dstream.broadcast import pickling_for_checkpoint
from dstream.driver.storage import Location, StorageError, file_version, is_secret, masked, without_secrets
from dstream.executors import serialization

SECRET = "s3cr3t-Value-42"
OPTIONS = {"endpoint_url": "http://127.0.0.1:9", "key": "AKIA-id-77", "secret": SECRET,
           "client_kwargs": {"region_name": "eu-west-1", "aws_session_token": "tok-9"}}


class CachingMemoryFileSystem(MemoryFileSystem):
    """memory:// whose listings are cached in ``dircache`` until invalidated, as s3fs's are."""

    protocol = "cachingmem"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("cachingmem://"))

    def invalidate_cache(self, path=None):
        if path is None:
            self.dircache.clear()
        else:
            self.dircache.pop(self._strip_protocol(path), None)

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        if path not in self.dircache:
            self.dircache[path] = super().ls(path, detail=True, **kwargs)
        return self.dircache[path] if detail else [e["name"] for e in self.dircache[path]]


class FailingFileSystem(MemoryFileSystem):
    """A filesystem whose every listing and read fails with an error that quotes its secret option."""

    protocol = "failingmem"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("failingmem://"))

    def ls(self, path, detail=True, **kwargs):
        raise PermissionError(f"denied for secret={self.storage_options.get('secret')}")

    def cat_file(self, path, start=None, end=None, **kwargs):
        raise ConnectionError(f"reset while using {self.storage_options.get('secret')}")


fsspec.register_implementation("cachingmem", CachingMemoryFileSystem, clobber=True)
fsspec.register_implementation("failingmem", FailingFileSystem, clobber=True)


@pytest.fixture
def memdir():
    fs = fsspec.filesystem("memory")
    base = f"/storage-test-{uuid.uuid4().hex[:8]}"
    fs.makedirs(base, exist_ok=True)
    yield f"memory://{base}", fs
    fs.rm(base, recursive=True)


def test_secret_option_names():
    for name in ("key", "secret", "token", "password", "aws_secret_access_key", "aws_session_token",
                 "account_key", "sas_token", "credentials", "SSECustomerKey", "apiKey", "connection_string"):
        assert is_secret(name), name
    for name in ("endpoint_url", "region_name", "anon", "keyspace", "KeyspaceName", "use_ssl", "skip_instance_cache"):
        assert not is_secret(name), name


def test_repr_masks_secrets_at_every_depth():
    loc = Location("s3://bucket/in", OPTIONS)
    text = repr(loc)
    for secret in (SECRET, "AKIA-id-77", "tok-9"):
        assert secret not in text
    assert "***" in text and "eu-west-1" in text and "http://127.0.0.1:9" in text
    assert str(loc) == "s3://bucket/in" and repr(Location("/tmp/x")) == "Location('/tmp/x')"
    assert masked(OPTIONS)["client_kwargs"] == {"region_name": "eu-west-1", "aws_session_token": "***"}
    assert without_secrets(OPTIONS) == {"endpoint_url": "http://127.0.0.1:9",
                                        "client_kwargs": {"region_name": "eu-west-1"}}
    assert loc.scrub(f"failed with {SECRET} and tok-9") == "failed with *** and ***"


def test_equality_and_hash_cover_url_and_options():
    a = Location("s3://b/in", {"key": "k", "anon": False})
    same = Location("s3://b/in", {"anon": False, "key": "k"})
    assert a == same and hash(a) == hash(same)
    assert a != Location("s3://b/in", {"key": "other", "anon": False})
    assert a != Location("s3://b/out", {"key": "k", "anon": False}) and a != "s3://b/in"
    assert len({a, Location("s3://b/in", {"key": "k", "anon": False})}) == 1


def test_of_and_join_keep_the_options():
    a = Location("s3://b/in/", {"anon": True})
    assert Location.of(a) is a
    assert Location.of(a, {"key": "k"}).storage_options == {"anon": True, "key": "k"}
    assert Location.of("memory://x").storage_options == {}
    child = a.join("day=1", "part-0")
    assert child.url == "s3://b/in/day=1/part-0" and child.storage_options == {"anon": True}
    assert Location("/tmp/x").protocol == "file" and a.protocol == "s3"
    with pytest.raises(ValueError, match="path or URL"):
        Location("")
    with pytest.raises(TypeError, match="storage_options"):
        Location("s3://b", ["key"])


def test_listing_is_fresh_even_on_a_caching_filesystem():
    loc = Location(f"cachingmem:///d-{uuid.uuid4().hex[:8]}")
    fs = loc.fs
    fs.pipe_file(f"{loc.path}/a", b"1")
    assert [e["name"].rsplit("/", 1)[1] for e in loc.list()] == ["a"]
    fs.pipe_file(f"{loc.path}/b", b"22")
    assert fs.ls(loc.path, detail=False) == [f"{loc.path}/a"]  # the filesystem's own listing is stale
    entries = loc.list()
    assert [(e["name"].rsplit("/", 1)[1], e["size"]) for e in entries] == [("a", 1), ("b", 2)]
    assert loc.at(entries[1]["name"]).url == f"cachingmem://{loc.path}/b"


def test_listing_and_reading_on_memory(memdir):
    url, fs = memdir
    loc = Location(url)
    assert loc.list() == []
    fs.pipe_file(f"{loc.path}/f.txt", b"hello")
    (entry,) = loc.list()
    assert entry["size"] == 5
    child = loc.at(entry["name"])
    assert child.url == f"{url}/f.txt" and child.read_bytes() == b"hello"
    assert Location(f"{url}/missing/deeper").list() == []  # a directory not made yet
    with pytest.raises(FileNotFoundError, match=re.escape(f"reading {url}/nope")):
        loc.join("nope").read_bytes()


def test_errors_name_the_url_and_never_the_secret():
    loc = Location("failingmem:///x", {"secret": SECRET})
    with pytest.raises(PermissionError) as listing:
        loc.list()
    with pytest.raises(OSError) as reading:
        loc.join("f").read_bytes()
    for info in (listing, reading):
        text = f"{info.value} {info.value!r}"
        assert "failingmem:///x" in text and SECRET not in text and "***" in text
    assert isinstance(reading.value, (ConnectionError, StorageError))


def test_file_version_changes_with_size_time_or_etag():
    local = {"name": "/d/a", "size": 3, "type": "file", "mtime": 1.5, "created": 1.0}
    assert file_version(local) == file_version(dict(local, created=9.0))  # local files: size and mtime
    assert file_version(local) != file_version(dict(local, mtime=2.5))
    assert file_version(local) != file_version(dict(local, size=4))
    s3 = {"name": "b/a", "size": 3, "type": "file", "LastModified": "2026-01-01T00:00:00Z", "ETag": '"abc"'}
    assert file_version(s3) != file_version(dict(s3, ETag='"def"'))  # same second, same size, new content
    assert file_version(s3) != file_version(dict(s3, LastModified="2026-01-01T00:00:01Z"))
    memory = {"name": "/a", "size": 3, "type": "file", "created": 100.25}
    assert file_version(memory) != file_version(dict(memory, created=100.5))


def test_pickled_for_a_task_the_secrets_travel():
    loc = Location("s3://b/in", OPTIONS)
    for copy in (pickle.loads(pickle.dumps(loc)), serialization.loads(serialization.dumps(loc))):
        assert copy == loc and copy.storage_options["secret"] == SECRET


def test_pickled_into_a_checkpoint_the_secrets_stay_out():
    loc = Location("s3://b/in", OPTIONS)
    with pickling_for_checkpoint():
        data = serialization.dumps({"input": loc})
    for secret in (SECRET, "AKIA-id-77", "tok-9"):
        assert secret.encode() not in data
    copy = serialization.loads(data)["input"]
    assert copy.url == "s3://b/in" and copy.storage_options == without_secrets(OPTIONS)
    assert serialization.loads(serialization.dumps(loc)) == loc  # outside the checkpoint: all of it again
