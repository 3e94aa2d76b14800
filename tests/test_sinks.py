"""Sinks: saveAsTextFiles / saveAsParquetFiles commit each batch once; RDD.saveAsTextFile.

As executor backends are, sinks are tested as a family: ``SinkSuite`` holds the contract every sink keeps
(write partitions, commit a batch atomically, skip a committed batch) and is mixed into one test class per
implementation, each providing ``sink`` and ``target`` fixtures and a ``read_back`` hook.
"""
from __future__ import annotations

import ast
import os
import pickle
import posixpath
import re
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dstream import ManualClock, StreamingContext
from dstream import sinks
from dstream.driver.commit import MARKER, ManifestCommitter, ManifestError, committed_parts, read_manifest
from dstream.driver.storage import Location
from dstream.sinks import Sink, WriteJob, batch_path, get_sink, register_sink
from dstream.sinks.files import ParquetSink, TextSink
from dstream.sinks.foreach_batch import ForeachBatchSink
from dstream.testing import advance



def _read_text_dir(path) -> list[str]:
    lines = []
    for name in sorted(os.listdir(path)):
        if name.startswith("part-"):
            with open(os.path.join(path, name)) as f:
                lines += f.read().splitlines()
    return lines


def test_save_as_text_files_one_directory_per_batch(ssc, tmp_path):
    prefix = str(tmp_path / "out")
    ssc.queueStream([["a", "b", "c"], [1, 2], []]).saveAsTextFiles(prefix, "txt")
    ssc.start()
    advance(ssc, 3)
    assert sorted(os.listdir(tmp_path)) == ["out-1000.txt", "out-2000.txt", "out-3000.txt"]
    first = tmp_path / "out-1000.txt"
    assert sorted(os.listdir(first)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert _read_text_dir(first) == ["a", "b", "c"]
    assert _read_text_dir(tmp_path / "out-2000.txt") == ["1", "2"]
    assert _read_text_dir(tmp_path / "out-3000.txt") == []
    assert (tmp_path / "out-3000.txt" / "_SUCCESS").exists()


def test_save_as_text_files_without_suffix_and_pairs(ssc, tmp_path):
    prefix = str(tmp_path / "pairs")
    ssc.queueStream([[("k", 1)]]).saveAsTextFiles(prefix)
    ssc.start()
    advance(ssc)
    assert os.listdir(tmp_path) == ["pairs-1000"]
    assert _read_text_dir(tmp_path / "pairs-1000") == ["('k', 1)"]


def test_text_lines_are_str_of_records_and_bytes_as_they_are(ctx, tmp_path):
    """PySpark's saveAsTextFile writes str(x) in UTF-8, and bytes records unchanged."""
    ctx.parallelize([b"raw \xff", "caf\xe9", None, 2.5, [1, "a"]], 1).saveAsTextFile(str(tmp_path / "o"))
    assert (tmp_path / "o" / "part-00000").read_bytes() == b"raw \xff\ncaf\xc3\xa9\nNone\n2.5\n[1, 'a']\n"


def test_committed_batch_is_not_written_again(ssc, tmp_path):
    """A replayed batch whose directory has _SUCCESS is skipped (exactly-once output)."""
    committed = tmp_path / "out-1000"
    committed.mkdir()
    (committed / "part-00000").write_text("from the first run\n")
    (committed / "_SUCCESS").write_text("")
    before = {p.name: p.stat().st_mtime_ns for p in committed.iterdir()}
    ssc.queueStream([["replayed"], ["second"]]).saveAsTextFiles(str(tmp_path / "out"))
    ssc.start()
    advance(ssc, 2)
    assert {p.name: p.stat().st_mtime_ns for p in committed.iterdir()} == before
    assert _read_text_dir(committed) == ["from the first run"]
    assert _read_text_dir(tmp_path / "out-2000") == ["second"]


def test_uncommitted_leftovers_are_replaced(ssc, tmp_path):
    """An attempt that died before _SUCCESS left parts behind: they are replaced, not kept."""
    partial = tmp_path / "out-1000"
    (partial / "_temporary" / "dead").mkdir(parents=True)
    (partial / "part-00000").write_text("half-written\n")
    (partial / "part-00007").write_text("stale part of a wider attempt\n")
    ssc.queueStream([["fresh"]]).saveAsTextFiles(str(tmp_path / "out"))
    ssc.start()
    advance(ssc)
    assert sorted(os.listdir(partial)) == ["_SUCCESS", "part-00000", "part-00001"]  # two partitions
    assert _read_text_dir(partial) == ["fresh"]


def test_save_as_text_files_from_process_executor(pctx, clock, tmp_path):
    s = StreamingContext(pctx, 1.0, clock=clock)
    try:
        s.queueStream([[1, 2, 3, 4]]).map(lambda x: x * x).saveAsTextFiles(str(tmp_path / "sq"))
        s.start()
        advance(s)
    finally:
        s.stop(stopSparkContext=False)
    assert _read_text_dir(tmp_path / "sq-1000") == ["1", "4", "9", "16"]
    assert (tmp_path / "sq-1000" / "_SUCCESS").exists()


def test_save_as_text_files_to_memory_url(ssc):
    import fsspec
    fs = fsspec.filesystem("memory")
    ssc.queueStream([["m1", "m2"]]).saveAsTextFiles("memory://dstream-sink-test/out")
    ssc.start()
    advance(ssc)
    try:
        assert fs.exists("/dstream-sink-test/out-1000/_SUCCESS")
        text = b"".join(fs.cat_file(p) for p in sorted(fs.glob("/dstream-sink-test/out-1000/part-*")))
        assert text == b"m1\nm2\n"
    finally:
        fs.rm("/dstream-sink-test", recursive=True)


def test_save_as_parquet_files_keeps_types(ssc, tmp_path):
    prefix = str(tmp_path / "pq")
    ssc.queueStream([[("a", 1.5), ("b", 2.0), ("c", -1.0)], [7]]).saveAsParquetFiles(prefix)
    ssc.start()
    advance(ssc, 2)
    first = tmp_path / "pq-1000.parquet"
    assert (first / "_SUCCESS").exists()
    table = pq.read_table(str(first))
    assert table.schema.field("key").type == pa.string()
    assert table.schema.field("value").type == pa.float64()
    assert sorted(zip(table["key"].to_pylist(), table["value"].to_pylist())) == [
        ("a", 1.5), ("b", 2.0), ("c", -1.0)]
    second = pq.read_table(str(tmp_path / "pq-2000.parquet"))
    assert second.schema.field("value").type == pa.int64()
    assert second["value"].to_pylist() == [7]


def test_save_as_parquet_files_custom_suffix(ssc, tmp_path):
    ssc.queueStream([[1, 2]]).saveAsParquetFiles(str(tmp_path / "p"), "pq")
    ssc.start()
    advance(ssc)
    assert os.listdir(tmp_path) == ["p-1000.pq"]
    assert sorted(pq.read_table(str(tmp_path / "p-1000.pq"))["value"].to_pylist()) == [1, 2]


def test_rdd_save_as_text_file(ctx, tmp_path):
    out = tmp_path / "rdd"
    ctx.parallelize(["x", "y", "z"], 3).saveAsTextFile(str(out))
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    assert _read_text_dir(out) == ["x", "y", "z"]


@pytest.mark.parametrize("existing", ["committed", "non-empty", "empty"])
def test_rdd_save_as_text_file_refuses_existing_directory(ctx, tmp_path, existing):
    """As Hadoop's FileOutputFormat: the output directory must not exist."""
    out = tmp_path / "rdd"
    out.mkdir()
    if existing == "committed":
        (out / "_SUCCESS").write_text("")
    if existing == "non-empty":
        (out / "part-00000").write_text("keep me\n")
    with pytest.raises(FileExistsError, match="rdd"):
        ctx.parallelize(["x"], 1).saveAsTextFile(str(out))
    if existing == "non-empty":
        assert (out / "part-00000").read_text() == "keep me\n"


def test_batches_after_the_queue_runs_dry_are_committed_empty(ssc, tmp_path):
    """Batches with no partitions at all (the queue's empty RDD) still commit an empty directory."""
    ssc.queueStream([["only"]]).saveAsTextFiles(str(tmp_path / "t"))
    ssc.queueStream([[1]]).saveAsParquetFiles(str(tmp_path / "p"))
    ssc.start()
    advance(ssc, 2)
    assert sorted(os.listdir(tmp_path / "t-2000")) == ["_SUCCESS"]
    assert sorted(os.listdir(tmp_path / "p-2000.parquet")) == ["_SUCCESS"]
    assert _read_text_dir(tmp_path / "t-1000") == ["only"]


# -- the suite every sink passes ------------------------------------------------------------------------
def _fail_on_c(x):
    if x == "c" or (isinstance(x, tuple) and x[0] == "c"):
        raise ValueError("the task writing 'c' fails")
    return x


class SinkSuite:
    """The contract every sink keeps; subclasses provide ``sink`` and ``target`` fixtures and ``read_back``.

    ``read_back`` returns the records of a committed target, in any order; ``records`` are what the tests
    write (a subclass may choose ones its format keeps exactly).
    """

    records: list[Any] = ["a", "b", "c", "d", "e"]

    def read_back(self, sink: Sink, target: str) -> list[Any]:
        raise NotImplementedError

    def _rdd(self, ctx, records=None, slices: int = 2):
        return ctx.parallelize(self.records if records is None else records, slices)

    def _assert_holds(self, sink, target, records):
        assert sink.is_committed(target)
        assert sorted(self.read_back(sink, target)) == sorted(records)

    def test_not_committed_before_a_save(self, sink, target):
        assert not sink.is_committed(target)

    def test_saved_batch_is_committed_and_records_round_trip(self, sink, target, any_ctx):
        assert sink.save(self._rdd(any_ctx), target) is True
        self._assert_holds(sink, target, self.records)

    def test_empty_batch_is_committed_empty(self, sink, target, ctx):
        assert sink.save(ctx.emptyRDD(), target) is True
        self._assert_holds(sink, target, [])

    def test_second_save_of_a_committed_batch_is_skipped_and_runs_nothing(self, sink, target, ctx):
        sink.save(self._rdd(ctx), target)
        computed = ctx.accumulator(0)

        def count(x):
            computed.add(1)
            return x
        assert sink.save(self._rdd(ctx, self.records[:1]).map(count), target, "skip") is False
        assert computed.value == 0
        self._assert_holds(sink, target, self.records)

    def test_saving_a_committed_batch_again_is_refused_by_default(self, sink, target, ctx):
        sink.save(self._rdd(ctx), target)
        with pytest.raises(FileExistsError, match="already exists"):
            sink.save(self._rdd(ctx, self.records[:1]), target)
        self._assert_holds(sink, target, self.records)

    def test_a_failed_task_leaves_no_committed_batch(self, sink, target, ctx):
        with pytest.raises(Exception, match="the task writing 'c' fails"):
            sink.save(self._rdd(ctx).map(_fail_on_c), target, "skip")
        assert not sink.is_committed(target)
        assert sink.save(self._rdd(ctx), target, "skip") is True  # the replay
        self._assert_holds(sink, target, self.records)

    def test_replay_after_a_crash_between_write_and_commit_writes_one_copy(self, sink, target, ctx):
        job = sink.setup(target, "skip")
        sink.write(self._rdd(ctx), job)  # the driver dies here, before commit
        assert not sink.is_committed(target)
        assert sink.save(self._rdd(ctx), target, "skip") is True
        self._assert_holds(sink, target, self.records)

    def test_setup_returns_a_picklable_write_job(self, sink, target):
        job = sink.setup(target, "skip")
        assert isinstance(job, WriteJob) and job.target == target
        assert pickle.loads(pickle.dumps(job)) == job


def _part_files(target: str) -> list[str]:
    return sorted(os.path.join(target, n) for n in os.listdir(target) if n.startswith("part-"))


class TestTextSink(SinkSuite):
    @pytest.fixture
    def sink(self):
        return get_sink("text")()

    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "out-1000")

    def read_back(self, sink, target):
        return _read_text_dir(target)


class TestParquetSink(SinkSuite):
    records = [("a", 1.5), ("b", 2.0), ("c", -1.0), ("d", 0.25)]

    @pytest.fixture
    def sink(self):
        return get_sink("parquet")()

    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "out-1000.parquet")

    def read_back(self, sink, target):
        rows = []
        for path in _part_files(target):
            table = pq.read_table(path)
            assert table.schema.field("value").type == pa.float64()
            rows += zip(table["key"].to_pylist(), table["value"].to_pylist())
        return rows


def _committed_bytes(target, storage_options=None) -> list[bytes]:
    """The committed parts of a batch, read through its manifest (sizes checked)."""
    return [p.fs.cat_file(p.path) for p in committed_parts(target, storage_options)]


def _committed_lines(target, storage_options=None) -> list[str]:
    return [line for data in _committed_bytes(target, storage_options) for line in data.decode().splitlines()]


def _committed_rows(target, storage_options=None) -> list[tuple]:
    rows = []
    for data in _committed_bytes(target, storage_options):
        table = pq.read_table(pa.BufferReader(data))
        assert table.schema.field("value").type == pa.float64()
        rows += zip(table["key"].to_pylist(), table["value"].to_pylist())
    return rows


class TestTextSinkOnS3(SinkSuite):
    """The text sink on a real S3 server: parts written once by the executors (threads and processes) under
    unique names, the batch published by its ``_SUCCESS`` manifest."""

    @pytest.fixture
    def sink(self):
        return get_sink("text")()

    @pytest.fixture
    def target(self, s3_bucket, s3_options):
        return Location(f"{s3_bucket}/out-1000", s3_options)

    def read_back(self, sink, target):
        return _committed_lines(target)


class TestParquetSinkOnS3(SinkSuite):
    records = TestParquetSink.records

    @pytest.fixture
    def sink(self):
        return get_sink("parquet")()

    @pytest.fixture
    def target(self, s3_bucket, s3_options):
        return Location(f"{s3_bucket}/out-1000.parquet", s3_options)

    def read_back(self, sink, target):
        return _committed_rows(target)


class TestTextSinkWithManifestOnLocalDisk(SinkSuite):
    """The object-store protocol on local disk (a sink given its committer), without a server."""

    @pytest.fixture
    def sink(self):
        return TextSink(committer=ManifestCommitter())

    @pytest.fixture
    def target(self, tmp_path):
        return str(tmp_path / "out-1000")

    def read_back(self, sink, target):
        return _committed_lines(target)


def _listed(where: Location) -> list[str]:
    return sorted(posixpath.basename(e["name"]) for e in where.list())


def test_s3_crash_between_task_writes_and_commit(pctx, s3_bucket, s3_options):
    """Executor processes wrote the parts, the driver died before the commit: nothing is readable as a
    complete batch; the replay publishes exactly one copy, without the dead attempt's parts."""
    sink = get_sink("text")()
    target = Location(f"{s3_bucket}/out-1000", s3_options)
    dead = sink.setup(target, "skip")
    sink.write(pctx.parallelize(["a", "b", "c"], 3), dead)  # the driver dies here
    assert len(_listed(target)) == 3 and all(dead.attempt in name for name in _listed(target))
    assert not sink.is_committed(target)
    with pytest.raises(ManifestError, match=re.escape(f"{target.url}: not committed")):
        committed_parts(target)
    assert sink.save(pctx.parallelize(["a", "b", "c"], 3), target, "skip") is True  # the replay
    manifest = read_manifest(target)
    assert len(manifest.parts) == 3 and manifest.attempt != dead.attempt
    assert not any(dead.attempt in p.name for p in manifest.parts)
    assert _listed(target) == sorted([MARKER] + [p.name for p in manifest.parts])  # the dead parts are gone
    assert sorted(_committed_lines(target)) == ["a", "b", "c"]
    assert sink.save(pctx.parallelize(["again"], 1), target, "skip") is False  # published: not written again
    assert read_manifest(target) == manifest


def test_a_dead_attempts_parts_are_never_in_the_manifest(ctx, s3_bucket, s3_options):
    """A task of a dead attempt still writing after the next attempt's setup: its part is not published,
    and the commit deletes it."""
    sink = get_sink("text")()
    target = Location(f"{s3_bucket}/out-2000", s3_options)
    live = sink.setup(target, "skip")
    zombie = WriteJob(target)
    sink.write(ctx.parallelize(["zombie"], 1), zombie)
    sink.commit(live, sink.write(ctx.parallelize(["live"], 1), live))
    manifest = read_manifest(target)
    assert [p.name.split("-")[2] for p in manifest.parts] == [live.attempt]
    assert _committed_lines(target) == ["live"]
    assert not any(zombie.attempt in name for name in _listed(target))


def test_save_as_files_to_s3_from_executor_processes(pctx, clock, s3_bucket, s3_options):
    s = StreamingContext(pctx, 1.0, clock=clock)
    try:
        s.queueStream([["a", "b"], ["c"]]).saveAsTextFiles(f"{s3_bucket}/out", "txt", storage_options=s3_options)
        s.queueStream([[("k", 1.5), ("m", 2.0)]]).saveAsParquetFiles(f"{s3_bucket}/pq", storage_options=s3_options)
        s.start()
        advance(s, 2)
    finally:
        s.stop(stopSparkContext=False)
    assert _committed_lines(f"{s3_bucket}/out-1000.txt", s3_options) == ["a", "b"]
    assert _committed_lines(f"{s3_bucket}/out-2000.txt", s3_options) == ["c"]
    assert sorted(_committed_rows(f"{s3_bucket}/pq-1000.parquet", s3_options)) == [("k", 1.5), ("m", 2.0)]
    assert _committed_rows(f"{s3_bucket}/pq-2000.parquet", s3_options) == []


def test_s3_credentials_from_the_environment(ctx, s3_bucket):
    """No storage options: s3fs finds the endpoint and keys in AWS_* (set by the server fixture)."""
    ctx.parallelize(["env"], 1).saveAsTextFile(f"{s3_bucket}/env")
    assert _committed_lines(f"{s3_bucket}/env") == ["env"]


SECRET = "s3cr3t-never-shown-7f3a"


def test_s3_storage_options_without_aws_environment_never_show_the_secret(ctx, s3_server, s3_bucket,
                                                                         monkeypatch):
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    options = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": SECRET}
    ctx.parallelize(["x", "y"], 2).saveAsTextFile(f"{s3_bucket}/rdd", storage_options=options)
    ctx.parallelize([("k", 1.5)], 1).saveAsParquetFile(f"{s3_bucket}/rdd.parquet", storage_options=options)
    assert sorted(_committed_lines(f"{s3_bucket}/rdd", options)) == ["x", "y"]
    assert _committed_rows(f"{s3_bucket}/rdd.parquet", options) == [("k", 1.5)]
    with pytest.raises(FileExistsError, match="already exists") as exists:
        ctx.parallelize(["x"], 1).saveAsTextFile(f"{s3_bucket}/rdd", storage_options=options)
    with pytest.raises(Exception) as missing:  # noqa: PT011 - whatever S3 answers for a missing bucket
        ctx.parallelize(["x"], 1).saveAsTextFile("s3://no-such-bucket-dstream/out", storage_options=options)
    assert "s3://no-such-bucket-dstream/out" in str(missing.value)  # the failure names the URL
    for err in (exists, missing):
        text = "".join(traceback.format_exception(err.value)) + repr(err.value)
        assert SECRET not in text
    where = Location(f"{s3_bucket}/rdd", options)
    job = get_sink("text")().setup(Location(f"{s3_bucket}/other", options), "skip")
    for shown in (repr(where), str(where), repr(job), repr(get_sink("text")())):
        assert SECRET not in shown
    assert "***" in repr(where) and "***" in repr(job)


def test_sink_storage_options_keep_their_secrets_out_of_checkpoints(ctx, tmp_path):
    """saveAsTextFiles' options travel to the tasks, but a metadata checkpoint stores them without secrets."""
    options = {"secret": SECRET}
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path / "cp"))
    ssc.queueStream([["a", "b"]]).saveAsTextFiles("memory://dstream-secret-test/out", storage_options=options)
    ssc.start()
    try:
        advance(ssc)
    finally:
        ssc.stop(stopSparkContext=False)
    try:
        assert _committed_lines("memory://dstream-secret-test/out-1000", options) == ["a", "b"]
        files = list((tmp_path / "cp").glob("checkpoint-*"))
        assert files and all(b"memory://dstream-secret-test/out" in f.read_bytes() for f in files)
        assert not any(SECRET.encode() in f.read_bytes() for f in files)
    finally:
        fsspec.filesystem("memory").rm("/dstream-secret-test", recursive=True)


def test_local_batches_carry_a_manifest_too(ctx, tmp_path):
    out = tmp_path / "rdd"
    ctx.parallelize(["x", "y", "z"], 3).saveAsTextFile(str(out))
    manifest = read_manifest(Location(str(out)))
    assert [p.name for p in manifest.parts] == ["part-00000", "part-00001", "part-00002"]
    assert [p.size for p in manifest.parts] == [2, 2, 2]
    assert [p.path for p in committed_parts(str(out))] == _part_files(str(out))


class _BatchesByTime:
    """An idempotent foreachBatch function: each batch's records, by batch time (a replay overwrites)."""

    def __init__(self) -> None:
        self.batches: dict[int, list] = {}

    def __call__(self, rdd, batch_time_ms: int) -> None:
        self.batches[batch_time_ms] = rdd.collect()


class TestForeachBatchSink(SinkSuite):
    """With a commit directory; the user function is idempotent by batch time, as foreachBatch asks."""

    @pytest.fixture
    def sink(self, tmp_path):
        return get_sink("foreachBatch")(_BatchesByTime(), commit_dir=str(tmp_path / "commits"))

    @pytest.fixture
    def target(self):
        return "1000"

    def read_back(self, sink, target):
        return sink.func.batches[int(target)]

    def test_commit_marks_the_batch_in_the_commit_directory(self, sink, target, ctx, tmp_path):
        sink.save(self._rdd(ctx), target)
        assert os.listdir(tmp_path / "commits") == ["batch-1000"]


class ListSink(Sink):
    """A plugin sink (registered by name in the tests): tasks return their records, commit keeps them."""

    name = "list"
    committed: dict[str, list] = {}

    def is_committed(self, target):
        return target in self.committed

    def write_partition(self, job, rdd, split, tc):
        part = rdd._iterator(split, tc)
        return list(part.column(0).to_pylist() if isinstance(part, pa.Table) else part)

    def commit(self, job, results):
        self.committed[job.target] = [x for rows in results for x in rows]


@pytest.fixture
def registry(monkeypatch):
    """The sink registry, restored after the test."""
    monkeypatch.setattr(sinks.SINKS, "entries", dict(sinks.SINKS.entries))
    return sinks.SINKS.entries


class TestRegisteredPluginSink(SinkSuite):
    @pytest.fixture
    def sink(self, registry):
        register_sink("list", "tests.test_sinks:ListSink")
        yield get_sink("list")()
        ListSink.committed.clear()

    @pytest.fixture
    def target(self):
        return "batch-1000"

    def read_back(self, sink, target):
        return sink.committed[target]


# -- foreachBatch without a commit directory: today's foreachBatch --------------------------------------
def test_foreach_batch_without_commit_dir_runs_every_time(ctx):
    calls = []
    sink = ForeachBatchSink(lambda rdd, t: calls.append((t, rdd.collect())))
    rdd = ctx.parallelize([1, 2], 2)
    assert not sink.is_committed("1000")
    assert sink.save(rdd, "1000", "skip") is True
    assert sink.save(rdd, "1000", "skip") is True  # a replay runs the function again
    assert not sink.is_committed("1000")
    assert calls == [(1000, [1, 2]), (1000, [1, 2])]


def test_foreach_batch_stream_calls_func_with_rdd_and_batch_time(ssc):
    seen = []
    ssc.queueStream([["x"], ["y", "z"]]).foreachBatch(lambda rdd, t: seen.append((t, sorted(rdd.collect()))))
    ssc.start()
    advance(ssc, 2)
    assert seen == [(1000, ["x"]), (2000, ["y", "z"])]


def test_parquet_skips_empty_partitions_and_text_writes_them(ctx, tmp_path):
    get_sink("parquet")().save(ctx.parallelize([1], 3), str(tmp_path / "p"))
    get_sink("text")().save(ctx.parallelize([1], 3), str(tmp_path / "t"))
    assert sorted(os.listdir(tmp_path / "p")) == ["_SUCCESS", "part-00002.parquet"]
    assert sorted(os.listdir(tmp_path / "t")) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]


def test_batch_path():
    assert batch_path("out", 1000, None) == "out-1000"
    assert batch_path("s3://b/out", 2000, "parquet") == "s3://b/out-2000.parquet"


# -- the registry -------------------------------------------------------------------------------------
def test_registered_sinks():
    assert get_sink("text") is TextSink
    assert get_sink("parquet") is ParquetSink
    assert get_sink("foreachBatch") is ForeachBatchSink


def test_unknown_sink_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown sink 'csv'; known: \['foreachBatch', 'parquet', 'text'\]"):
        get_sink("csv")


def test_a_sink_that_cannot_be_imported_is_named(registry):
    register_sink("broken", "dstream.no_such_module:BrokenSink")
    with pytest.raises(ImportError, match=r"sink 'broken' \(dstream.no_such_module:BrokenSink\) cannot be loaded"):
        get_sink("broken")
    register_sink("misnamed", "dstream.sinks.files:NoSuchSink")
    with pytest.raises(ImportError, match="sink 'misnamed'"):
        get_sink("misnamed")


def test_sink_implementations_are_imported_on_first_use():
    code = textwrap.dedent("""
        import sys
        import dstream.rdd, dstream.sinks
        assert "dstream.io" not in sys.modules, "dstream.sinks or dstream.rdd imported the io layer"
        assert not [m for m in sys.modules if m.startswith("dstream.sinks.")], sorted(sys.modules)
        from dstream.sinks import get_sink
        get_sink("parquet")
        assert "dstream.sinks.files" in sys.modules and "dstream.sinks.foreach_batch" not in sys.modules
        get_sink("foreachBatch")
        assert "dstream.sinks.foreach_batch" in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _runtime_imports(path: Path) -> list[str]:
    """Modules a file imports when it runs: every import but those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
    return found


def test_the_sink_interface_is_core_layer():
    """``dstream.sinks`` is imported by ``dstream.rdd``: it may use only the executors and records."""
    modules = _runtime_imports(Path(sinks.__file__))
    dstream_modules = [m for m in modules if m == "dstream" or m.startswith("dstream.")]
    assert all(m.startswith(("dstream.executors", "dstream.records")) for m in dstream_modules), dstream_modules
