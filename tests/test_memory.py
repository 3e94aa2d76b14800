"""Memory stays flat on an unbounded stream: old batches are forgotten after the remember duration, their
cached blocks and shuffle buckets go with them, and stateful streams read the previous state from its
cached blocks (``RDD.truncated``) so lineage does not grow. ``StreamingContext.remember`` extends what
``slice`` can reach.
"""
from __future__ import annotations

import contextlib
import io
import operator
import os

import pytest

from dstream import ManualClock, StreamingContext
from dstream.io import CheckpointRDD
from dstream.rdd import BlockRDD
from dstream.testing import advance


def num_blocks(store) -> int:
    directory = getattr(store, "directory", None)  # SharedDirBlockStore: one file a block
    return len(os.listdir(directory)) if directory else len(store._blocks)


def lineage(rdd) -> list:
    """Every RDD ``rdd`` depends on, itself included."""
    seen: dict[int, object] = {}
    stack = [rdd]
    while stack:
        r = stack.pop()
        if id(r) not in seen:
            seen[id(r)] = r
            stack.extend(dep.rdd for dep in r.dependencies if dep.rdd is not None)
    return list(seen.values())


def depth(rdd) -> int:
    parents = [dep.rdd for dep in rdd.dependencies if dep.rdd is not None]
    return 1 + max((depth(p) for p in parents), default=0)


def newest(stream):
    return stream.generated[max(stream.generated)]


def test_memory_stays_flat_over_200_batches(ctx, tmp_path):
    batches, keys, per_batch = 200, 17, 20
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path))
    try:
        # an unbounded source: the same 20 numbers each batch, keyed differently in every batch
        pairs = ssc.queueStream([], default=list(range(per_batch))).transform(
            lambda t, rdd: rdd.map(lambda x, n=int(t.timestamp()): (f"k{x * n % keys}", 1)))
        state = pairs.updateStateByKey(lambda vs, s: (s or 0) + sum(vs))
        windowed = pairs.reduceByKeyAndWindow(operator.add, operator.sub, 5, 1)
        counts = pairs.window(3, 1).count()
        mapped = pairs.mapWithState(
            lambda k, v, st: k if st.isTimingOut() else st.update((st.getOption() or 0) + v), timeout=2)
        last: dict[str, list] = {}
        for name, stream in [("state", state), ("windowed", windowed), ("counts", counts),
                             ("snapshots", mapped.stateSnapshots())]:
            stream.foreachRDD(lambda rdd, name=name: last.__setitem__(name, rdd.collect()))
        ssc.start()
        streams = ssc.graph.all_streams()
        blocks, depths, generated = [], [], []
        for _ in range(batches):
            advance(ssc, 1)
            blocks.append(num_blocks(ctx.executor.store))
            generated.append(max(len(s.generated) for s in streams))
            depths.append((depth(newest(state)), depth(newest(windowed)), depth(newest(mapped.internal))))
            for s in streams:
                # no more than its remember duration's worth of batches (+1: the newest batch's clean-up
                # runs on the job generator right after the batch completes)
                assert len(s.generated) <= s.remember_ms // s.slide_ms + 1, s
        state_lineage = lineage(newest(state))
    finally:
        ssc.stop(stopSparkContext=False)

    # the answers are still right after 200 batches
    assert sum(v for _, v in last["state"]) == batches * per_batch
    assert last["counts"] == [3 * per_batch]
    assert sum(v for _, v in last["windowed"]) == 5 * per_batch
    # remembered batches: bounded by the 20 s the stateful streams keep (+ the 5 s window on their parent)
    assert max(generated) <= 26
    # blocks in the executors' store do not grow once the remember durations are reached
    assert max(blocks[100:]) <= max(blocks[40:100]) * 1.1
    # the state's lineage does not grow: each batch reads the previous state from its cached blocks or
    # its data snapshot (a snapshotted RDD's lineage is cut to its files, so it is shallower still)
    for i in range(3):
        assert max(d[i] for d in depths[100:]) <= max(d[i] for d in depths[40:100]), depths[40:]
    assert any(isinstance(r, (BlockRDD, CheckpointRDD)) for r in state_lineage)


def test_state_lineage_stays_flat_when_outputs_take_only_some_partitions(ctx, tmp_path):
    """pprint() computes only the first partitions (take); the other state partitions must still be
    materialised for the next batch, or each batch's lineage would hold every batch before it."""
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(tmp_path))
    try:
        state = ssc.queueStream([], default=[(i, 1) for i in range(100)]).updateStateByKey(
            lambda vs, s: (s or 0) + sum(vs))
        state.pprint(3)
        mapped = ssc.queueStream([], default=[(i, 1) for i in range(100)]).mapWithState(
            lambda k, v, st: st.update((st.getOption() or 0) + v))
        mapped.pprint(3)
        ssc.start()
        depths = []
        with contextlib.redirect_stdout(io.StringIO()):
            for _ in range(25):
                advance(ssc, 1)
                depths.append((depth(newest(state)), depth(newest(mapped.internal))))
        final = sorted(newest(state).collect())
    finally:
        ssc.stop(stopSparkContext=False)
    assert depths[-1] == depths[5], depths
    assert final == [(i, 25) for i in range(100)]


def test_remember_extends_what_slice_can_reach(ctx):
    def run(remember):
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        try:
            if remember is not None:
                ssc.remember(remember)
            stream = ssc.queueStream([[i] for i in range(1, 11)])
            stream.foreachRDD(lambda rdd: None)
            ssc.start()
            advance(ssc, 10)
            kept = sorted(stream.generated)
            try:
                sliced = [r for rdd in stream.slice(5.0, 10.0) for r in rdd.collect()]
            except ValueError as exc:
                sliced = exc
        finally:
            ssc.stop(stopSparkContext=False)
        return kept, sliced

    # (the newest batch's clean-up may still be pending when advance() returns: hence the ranges)
    kept, sliced = run(None)
    assert kept[-1] == 10000 and len(kept) <= 2  # the default: the batch interval
    assert isinstance(sliced, ValueError) and "remember" in str(sliced)
    kept, sliced = run(6.0)  # batches newer than now - 6 s: 5 s .. 10 s
    assert kept[-6:] == list(range(5000, 11000, 1000)) and len(kept) <= 7
    assert sliced == [5, 6, 7, 8, 9, 10]


def test_slicing_a_forgotten_batch_does_not_take_new_input(ssc):
    """Recomputing a forgotten batch of a queueStream would pop the next queue item: refuse instead."""
    stream = ssc.queueStream([[i] for i in range(1, 6)])
    out = []
    stream.foreachRDD(lambda rdd: out.append(rdd.collect()))
    ssc.start()
    advance(ssc, 3)
    with pytest.raises(ValueError, match="forgotten"):
        stream.slice(1.0, 3.0)
    advance(ssc, 2)
    assert out == [[1], [2], [3], [4], [5]]


def test_windows_keep_their_parents_batches_and_free_them_after(ctx):
    """A window 4 batches wide makes its parent keep (and cache) the batches the window needs, and no
    more than its window plus its own remember duration (1 batch)."""
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        source = ssc.queueStream([], default=[1, 2])
        source.window(4, 1).foreachRDD(lambda rdd: rdd.count())
        ssc.start()
        sizes = []
        for _ in range(12):
            advance(ssc, 1)
            sizes.append(len(source.generated))
        remembered = list(source.generated.values())
    finally:
        ssc.stop(stopSparkContext=False)
    assert min(sizes[4:]) >= 4 and max(sizes) <= 6
    assert all(rdd.is_cached for rdd in remembered)
