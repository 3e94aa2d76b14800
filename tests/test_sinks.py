"""Sinks: saveAsTextFiles / saveAsParquetFiles commit each batch once; RDD.saveAsTextFile."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dstream import StreamingContext
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
