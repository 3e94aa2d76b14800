"""Block ids come from one module (``executors/block_ids.py``); shuffle map tasks report a ``MapStatus``."""
from __future__ import annotations

import operator

import pyarrow as pa
import pytest

from dstream.driver.dag import MapStatus, ShuffleDependency
from dstream.executors import block_ids
from dstream.executors.base import TaskContext
from dstream.executors.blockstore import MemoryBlockStore
from dstream.shuffle import read_bucket, write_map_output


# -- names -------------------------------------------------------------------------------------------------
def test_names_of_each_kind():
    assert block_ids.rdd_block(3, 1) == "rdd_3_1"
    assert block_ids.data_block(3, 0) == "data_3_0"
    assert block_ids.shuffle_block(4, 2, 7) == "shuffle_4_2_7"
    assert block_ids.broadcast_block(5, "ab12") == "broadcast_5_ab12"
    assert ShuffleDependency.block_id(4, 2, 7) == "shuffle_4_2_7"  # the scheduler's name is the same


def test_a_prefix_covers_its_own_blocks_only():
    assert block_ids.rdd_block(1, 0).startswith(block_ids.rdd_prefix(1))
    assert not block_ids.rdd_block(10, 0).startswith(block_ids.rdd_prefix(1))
    assert block_ids.data_block(2, 5).startswith(block_ids.data_prefix(2))
    assert not block_ids.data_block(2, 5).startswith(block_ids.rdd_prefix(2))
    assert block_ids.shuffle_block(3, 0, 1).startswith(block_ids.shuffle_prefix(3))
    assert not block_ids.shuffle_block(30, 0, 1).startswith(block_ids.shuffle_prefix(3))


@pytest.mark.parametrize("name, kind, numbers, tag", [
    ("rdd_3_1", "rdd", (3, 1), ""),
    ("data_0_12", "data", (0, 12), ""),
    ("shuffle_4_2_7", "shuffle", (4, 2, 7), ""),
    ("broadcast_5_9f3a0c", "broadcast", (5,), "9f3a0c"),
])
def test_parse_reads_back_what_was_formatted(name, kind, numbers, tag):
    parsed = block_ids.parse(name)
    assert (parsed.kind, parsed.numbers, parsed.tag) == (kind, numbers, tag)
    assert parsed.name == name


@pytest.mark.parametrize("name", ["rdd_3", "rdd_3_1_2", "shuffle_1_2", "mmap_0", "rdd_a_1", "broadcast_1_"])
def test_parse_refuses_other_names(name):
    with pytest.raises(ValueError, match="not a block id"):
        block_ids.parse(name)


def test_a_broadcast_tag_is_letters_and_digits():
    with pytest.raises(ValueError, match="tag"):
        block_ids.broadcast_block(1, "a_b")


# -- map output status --------------------------------------------------------------------------------------
class _Parent:
    """A stand-in for an RDD: one partition of (key, value) pairs."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def _iterator(self, split: int, tc: TaskContext) -> pa.Table:
        return self.table


def test_a_map_task_reports_a_map_status_naming_the_blocks_it_wrote():
    store = MemoryBlockStore()
    tc = TaskContext(store=store, partition_id=1)
    parent = _Parent(pa.table({"key": [1, 2, 3, 4, 5], "value": [1, 1, 1, 1, 1]}))
    status = write_map_output(parent, 1, 8, 3, lambda k: 0 if k < 5 else 2, None, False, "test", tc)
    assert status == MapStatus(shuffle_id=8, map_index=1, bucket_rows=(4, 0, 1))
    assert status.rows == 5
    assert status.block_ids() == ["shuffle_8_1_0", "shuffle_8_1_2"]  # the empty bucket wrote nothing
    assert all(store.contains(b) for b in status.block_ids())
    assert read_bucket(tc, 8, 2, 0).num_rows == 4


def test_the_scheduler_counts_shuffle_rows_from_map_statuses(ctx):
    sched = ctx.scheduler
    rdd = ctx.parallelize([(i % 3, 1) for i in range(30)], 3).reduceByKey(operator.add)
    assert sorted(rdd.collect()) == [(0, 10), (1, 10), (2, 10)]
    dep = next(d for d in rdd.dependencies if isinstance(d, ShuffleDependency))
    assert sched._shuffle_rows[dep.shuffle_id] == 3 * 3  # map-side combine: 3 keys in each of 3 maps
