"""Persistence and lineage: cache/persist/unpersist in the block store, checkpoint cutting lineage,
shuffle blocks freed with their ShuffledRDD, and toDebugString's layout."""
from __future__ import annotations

import gc
import operator
import os

import pytest

from dstream.driver.dag import NarrowDependency, ShuffleDependency
from dstream.io import CheckpointRDD

#: records seen by `_count_call` (thread executor: the tasks share this module)
CALLS: list = []


def _count_call(x):
    CALLS.append(x)
    return x


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()
    yield
    CALLS.clear()


def _file_counter(path):
    """A map function that appends each record to ``path``: counts computations in any process."""
    def seen(x):
        with open(path, "a") as f:
            f.write(f"{x}\n")
        return x
    return seen


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _blocks(rdd) -> list[bool]:
    store = rdd.ctx.executor.store
    return [store.contains(rdd._block_id(i)) for i in range(rdd.getNumPartitions())]


# -- cache / persist / unpersist ---------------------------------------------------------------------


def test_cache_computes_the_parent_once(ctx):
    rdd = ctx.parallelize(range(6), 3).map(_count_call).cache()
    assert rdd.is_cached
    assert rdd.count() == 6
    assert sorted(CALLS) == list(range(6))
    assert rdd.collect() == list(range(6))
    assert rdd.map(lambda x: x + 1).sum() == 21
    assert sorted(CALLS) == list(range(6))  # not recomputed
    assert _blocks(rdd) == [True, True, True]


def test_without_cache_the_parent_is_recomputed(ctx):
    rdd = ctx.parallelize(range(4), 2).map(_count_call)
    rdd.count()
    rdd.count()
    assert len(CALLS) == 8


def test_cache_on_processes_keeps_blocks_in_the_shared_store(pctx, tmp_path):
    log = tmp_path / "calls"
    rdd = pctx.parallelize(range(6), 3).map(_file_counter(str(log))).persist()
    assert rdd.collect() == list(range(6))
    assert rdd.count() == 6
    assert rdd.filter(lambda x: x % 2).collect() == [1, 3, 5]
    assert _lines(log) == 6
    assert _blocks(rdd) == [True, True, True]


def test_cache_keeps_only_the_partitions_an_action_computed(ctx):
    rdd = ctx.parallelize(range(40), 4).map(_count_call).cache()
    assert rdd.first() == 0
    assert _blocks(rdd) == [True, False, False, False]
    assert rdd.count() == 40
    assert len(CALLS) == 40  # partition 0 came from the cache


def test_unpersist_frees_the_blocks(any_ctx, tmp_path):
    log = tmp_path / "calls"
    rdd = any_ctx.parallelize(range(4), 2).map(_file_counter(str(log))).cache()
    rdd.count()
    assert _blocks(rdd) == [True, True]
    assert rdd.unpersist() is rdd
    assert not rdd.is_cached
    assert _blocks(rdd) == [False, False]
    assert rdd.collect() == [0, 1, 2, 3]
    assert _lines(log) == 8  # computed again
    assert _blocks(rdd) == [False, False]


def test_cache_again_after_unpersist(ctx):
    rdd = ctx.parallelize(range(4), 2).map(_count_call).cache()
    rdd.count()
    rdd.unpersist().cache()
    rdd.count()
    rdd.count()
    assert len(CALLS) == 8
    assert _blocks(rdd) == [True, True]


def test_cached_blocks_go_when_the_rdd_is_collected(ctx):
    rdd = ctx.parallelize(range(4), 2).map(_count_call).cache()
    rdd.count()
    store, ids = ctx.executor.store, [rdd._block_id(i) for i in range(2)]
    assert all(store.contains(b) for b in ids)
    del rdd
    gc.collect()
    assert not any(store.contains(b) for b in ids)


def test_cached_shuffle_output_skips_the_map_stage(ctx):
    rdd = ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).map(_count_call).reduceByKey(operator.add).cache()
    assert sorted(rdd.collect()) == [("a", 4), ("b", 2)]
    assert sorted(rdd.mapValues(lambda v: v * 10).collect()) == [("a", 40), ("b", 20)]
    assert len(CALLS) == 3


# -- checkpoint --------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint_dir(ctx, pctx, tmp_path, monkeypatch):
    """Both session Contexts checkpoint under tmp_path for this test only."""
    for c in (ctx, pctx):
        monkeypatch.setattr(c, "checkpoint_dir", None)
        c.setCheckpointDir(str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


def test_checkpoint_needs_a_checkpoint_dir(ctx, monkeypatch):
    monkeypatch.setattr(ctx, "checkpoint_dir", None)
    with pytest.raises(ValueError, match="setCheckpointDir"):
        ctx.parallelize([1]).checkpoint()


def test_checkpoint_cuts_lineage_and_keeps_the_data(any_ctx, checkpoint_dir):
    rdd = any_ctx.parallelize([("a", 1), ("b", 2), ("a", 3)], 2).reduceByKey(operator.add).mapValues(str)
    before = rdd.toDebugString()
    assert "+-" in before and "ParallelCollectionRDD" in before
    rdd.checkpoint()
    assert not rdd.isCheckpointed()
    expected = sorted(rdd.collect())
    assert expected == [("a", "4"), ("b", "2")]
    assert rdd.isCheckpointed()
    assert rdd.getCheckpointFile().startswith(str(checkpoint_dir))
    assert os.listdir(rdd.getCheckpointFile())
    after = rdd.toDebugString()
    assert "+-" not in after and "ParallelCollectionRDD" not in after and "CheckpointRDD" in after
    assert [type(d) for d in rdd.dependencies] == [NarrowDependency]
    assert isinstance(rdd.dependencies[0].rdd, CheckpointRDD)
    assert sorted(rdd.collect()) == expected
    assert sorted(rdd.map(lambda kv: kv[0]).collect()) == ["a", "b"]


def test_checkpointed_rdd_is_not_recomputed(ctx, checkpoint_dir):
    rdd = ctx.parallelize(range(5), 2).map(_count_call).cache()
    rdd.checkpoint()
    rdd.count()
    assert len(CALLS) == 5  # the checkpoint job read the cached blocks
    rdd.unpersist()
    assert rdd.collect() == list(range(5))
    assert rdd.map(lambda x: x * 2).collect() == [0, 2, 4, 6, 8]
    assert len(CALLS) == 5  # read back from the checkpoint files


def test_checkpoint_of_an_ancestor_is_written_by_a_child_action(ctx, checkpoint_dir):
    parent = ctx.parallelize([("a", 1), ("a", 2)], 2).reduceByKey(operator.add)
    parent.checkpoint()
    child = parent.mapValues(lambda v: v * 10)
    assert child.collect() == [("a", 30)]
    assert parent.isCheckpointed()
    assert "+-" not in child.toDebugString()
    assert child.collect() == [("a", 30)]


def test_checkpoint_keeps_record_types(pctx, checkpoint_dir):
    data = [(1, 2), None, {"a": [1]}, 2 ** 70, "x"]
    rdd = pctx.parallelize(data, 2).map(lambda x: x)
    rdd.checkpoint()
    assert rdd.collect() == data
    assert rdd.isCheckpointed()
    assert rdd.collect() == data


# -- shuffle blocks ----------------------------------------------------------------------------------


def _shuffle_blocks(rdd) -> list[str]:
    dep = next(d for d in rdd.dependencies if isinstance(d, ShuffleDependency))
    store = rdd.ctx.executor.store
    return [b for m in range(dep.num_maps) for r in range(dep.num_partitions)
            if store.contains(b := ShuffleDependency.block_id(dep.shuffle_id, m, r))]


def test_shuffle_blocks_removed_when_the_shuffled_rdd_is_collected(any_ctx):
    shuffled = any_ctx.parallelize([(i % 3, i) for i in range(12)], 2).reduceByKey(operator.add, 3)
    assert sorted(shuffled.collect()) == [(0, 18), (1, 22), (2, 26)]
    blocks = _shuffle_blocks(shuffled)
    assert len(blocks) == 6
    store = any_ctx.executor.store
    child = shuffled.mapValues(str)
    del shuffled
    gc.collect()
    assert all(store.contains(b) for b in blocks)  # the child still reads the shuffle
    assert sorted(child.collect()) == [(0, "18"), (1, "22"), (2, "26")]
    del child
    gc.collect()
    assert not any(store.contains(b) for b in blocks)


def test_shuffle_runs_its_map_stage_once(ctx):
    rdd = ctx.parallelize([(i % 2, i) for i in range(6)], 2).map(_count_call).groupByKey()
    rdd.collect()
    rdd.count()
    rdd.mapValues(len).collect()
    assert len(CALLS) == 6


# -- toDebugString -----------------------------------------------------------------------------------


def test_to_debug_string_indents_shuffle_boundaries_as_spark(ctx):
    source = ctx.parallelize([("a", 1)], 2)
    reduced = source.reduceByKey(operator.add)
    mapped = reduced.map(lambda kv: kv)
    grouped = mapped.groupByKey(3)
    lines = grouped.toDebugString().splitlines()
    assert lines == [
        f"(3) ShuffledRDD groupByKey[{grouped.id()}]",
        f" +-(2) {mapped._describe()}[{mapped.id()}]",
        f"    |  ShuffledRDD reduceByKey(add)[{reduced.id()}]",
        f"    +-(2) ParallelCollectionRDD[{source.id()}]",
    ]


def test_to_debug_string_union_and_cache(ctx):
    a = ctx.parallelize([1], 1)
    b = ctx.parallelize([(1, 2)], 2).partitionBy(2).cache()
    u = a.union(b.keys())
    lines = u.toDebugString().splitlines()
    assert lines[0] == f"(3) UnionRDD[{u.id()}]"
    assert lines[1] == f" |  ParallelCollectionRDD[{a.id()}]"
    assert lines[3] == f" |  ShuffledRDD partitionBy[{b.id()}] [cached]"
    assert lines[4].startswith(" +-(2) ParallelCollectionRDD")
    assert len(lines) == 5
