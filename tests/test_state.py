"""Stateful streams: updateStateByKey (PySpark's semantics and tests) and mapWithState (Spark's
``State``/``StateSpec`` semantics: exists/get/update/remove/isTimingOut, idle timeout, stateSnapshots).
"""
from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

from dstream.driver.jobs import BatchError
from dstream import ManualClock, StreamingContext
from dstream.state import State
from dstream.testing import advance, collect, run_stream


def appender(values, state):
    """PySpark's updater: the list of every value seen."""
    if not state:
        state = []
    state.extend(values)
    return state


# -- updateStateByKey --------------------------------------------------------------------------------


def test_updateStateByKey(any_ctx):
    out = run_stream(any_ctx, [[("k", i)] for i in range(5)], lambda s: s.updateStateByKey(appender))
    assert out == [[("k", v)] for v in [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]]


def test_updateStateByKey_initialRDD(any_ctx):
    initial = any_ctx.parallelize([("k", [0, 1])], 1)
    out = run_stream(any_ctx, [[("k", i)] for i in range(2, 5)],
                     lambda s: s.updateStateByKey(appender, initialRDD=initial))
    assert out == [[("k", v)] for v in [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]]


def test_updateStateByKey_initial_state_as_a_list_and_keys_only_in_it(ctx):
    out = run_stream(ctx, [[("a", 1)], []], lambda s: s.updateStateByKey(
        lambda vs, st: st + sum(vs), initialRDD=[("a", 10), ("z", 100)]))
    assert out == [[("a", 11), ("z", 100)], [("a", 11), ("z", 100)]]


def test_updateStateByKey_calls_update_for_keys_without_new_values(ctx):
    calls = []

    def update(values, state):
        calls.append((values, state))
        return (state or 0) + sum(values)

    out = run_stream(ctx, [[("a", 1), ("a", 2)], [], [("a", 4)]], lambda s: s.updateStateByKey(update))
    assert out == [[("a", 3)], [("a", 3)], [("a", 7)]]
    assert calls == [([1, 2], None), ([], 3), ([4], 3)]


def test_updateStateByKey_returning_None_removes_the_key(ctx):
    def update(values, state):
        total = (state or 0) + sum(values)
        return None if total > 5 else total

    inputs = [[("a", 1), ("b", 3)], [("b", 4)], [], [("a", 2), ("b", 1)]]
    out = run_stream(ctx, inputs, lambda s: s.updateStateByKey(update))
    # b goes at batch 2; when it comes back at batch 4 it starts again from None
    assert out == [[("a", 1), ("b", 3)], [("a", 1)], [("a", 1)], [("a", 3), ("b", 1)]]


def test_updateStateByKey_with_state_of_any_python_type(ctx):
    def update(values, state):
        state = state or {"n": 0, "seen": ()}
        return {"n": state["n"] + len(values), "seen": state["seen"] + tuple(values)}

    out = run_stream(ctx, [[(1, "x"), ("1", None)], [(1, (2, 3))]], lambda s: s.updateStateByKey(update),
                     sort=False)
    assert sorted(out[1], key=repr) == sorted([(1, {"n": 2, "seen": ("x", (2, 3))}),
                                               ("1", {"n": 1, "seen": (None,)})], key=repr)


def test_updateStateByKey_numPartitions(ctx):
    out = run_stream(ctx, [[(i, 1) for i in range(6)]],
                     lambda s: s.updateStateByKey(lambda vs, st: sum(vs), numPartitions=3).glom().map(len),
                     sort=False)
    assert out == [[2, 2, 2]]


def test_updateStateByKey_function_error_reaches_awaitTermination(ssc, tmp_path):
    ssc.checkpoint(str(tmp_path))
    def update(values, state):
        raise ValueError("bad update")

    ssc.queueStream([[("a", 1)]]).updateStateByKey(update).foreachRDD(lambda rdd: rdd.collect())
    ssc.start()
    advance(ssc, 1)
    with pytest.raises(BatchError, match="bad update"):
        ssc.awaitTerminationOrTimeout(0)


# -- mapWithState: the State object -----------------------------------------------------------------


def test_state_object():
    state = State()
    assert not state.exists() and state.getOption() is None and not state.isTimingOut()
    with pytest.raises(KeyError, match="exists"):
        state.get()
    state.update(5)
    assert state.exists() and state.get() == 5
    state.remove()
    assert not state.exists()
    with pytest.raises(RuntimeError, match="removed"):
        state.update(1)
    with pytest.raises(RuntimeError, match="removed"):
        state.remove()


def test_state_timing_out_cannot_be_updated_or_removed():
    state = State(3, True, timing_out=True)
    assert state.isTimingOut() and state.get() == 3
    with pytest.raises(RuntimeError, match="timing out"):
        state.update(4)
    with pytest.raises(RuntimeError, match="timing out"):
        state.remove()


# -- mapWithState ------------------------------------------------------------------------------------


def running_sum(key, value, state):
    if state.isTimingOut():
        return ("timeout", key, state.get())
    total = (state.get() if state.exists() else 0) + value
    state.update(total)
    return (key, total)


def map_with_state(ctx, inputs, num_batches=None, **kwargs):
    """(mapped records, state snapshots) of each batch."""
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(tempfile.mkdtemp(prefix="dstream-test-"))
    try:
        mapped = ssc.queueStream([list(b) for b in inputs]).mapWithState(running_sum, **kwargs)
        out, snapshots = collect(mapped, sort=True), collect(mapped.stateSnapshots(), sort=True)
        ssc.start()
        advance(ssc, num_batches or len(inputs))
    finally:
        ssc.stop(stopSparkContext=False)
    return out, snapshots


def test_mapWithState_running_sum_and_snapshots(any_ctx):
    out, snapshots = map_with_state(any_ctx, [[("a", 1), ("b", 2), ("a", 3)], [("b", 1)], []])
    # every value is mapped, in order within its key; the state carries over batches
    assert out == [[("a", 1), ("a", 4), ("b", 2)], [("b", 3)], []]
    assert snapshots == [[("a", 4), ("b", 2)], [("a", 4), ("b", 3)], [("a", 4), ("b", 3)]]


def test_mapWithState_initialState(ctx):
    out, snapshots = map_with_state(ctx, [[("a", 1)], [("b", 2)]], initialState=[("a", 10), ("c", 5)])
    assert out == [[("a", 11)], [("b", 2)]]
    assert snapshots == [[("a", 11), ("c", 5)], [("a", 11), ("b", 2), ("c", 5)]]


def test_mapWithState_initialState_rdd(ctx):
    out, _ = map_with_state(ctx, [[("a", 1)]], initialState=ctx.parallelize([("a", 100)], 1))
    assert out == [[("a", 101)]]


def test_mapWithState_timeout(ctx):
    """timeout=2: a key idle for 2 s (two 1 s batches without data) gets one last call with value None and
    isTimingOut() True, and is then removed; new data restarts the idle time.

    batch:  b1        b2   b3   b4   b5   b6   b7   b8
    a:      1, 3      -    -    -    -    -    -    -      times out at b3
    b:      2         1    -    -    5    -    -    -      times out at b4, comes back at b5, out at b7
    """
    inputs = [[("a", 1), ("b", 2), ("a", 3)], [("b", 1)], [], [], [("b", 5)], [], [], []]
    out, snapshots = map_with_state(ctx, inputs, timeout=2)
    assert out == [[("a", 1), ("a", 4), ("b", 2)], [("b", 3)], [("timeout", "a", 4)], [("timeout", "b", 3)],
                   [("b", 5)], [], [("timeout", "b", 5)], []]
    assert snapshots == [[("a", 4), ("b", 2)], [("a", 4), ("b", 3)], [("b", 3)], [], [("b", 5)], [("b", 5)],
                         [], []]


def test_mapWithState_without_timeout_keeps_idle_keys(ctx):
    out, snapshots = map_with_state(ctx, [[("a", 1)]], num_batches=5)
    assert out == [[("a", 1)], [], [], [], []]
    assert snapshots == [[("a", 1)]] * 5


def test_mapWithState_remove(ctx):
    def func(key, value, state):
        if value == "rm":
            state.remove()
            return ("removed", key, state.exists())
        had = state.getOption()
        state.update(value)
        return (key, had, value)

    inputs = [[("a", 1), ("b", 2)], [("a", "rm")], [("a", 3)]]
    out = run_stream(ctx, inputs, lambda s: s.mapWithState(func))
    snapshots = run_stream(ctx, inputs, lambda s: s.mapWithState(func).stateSnapshots())
    assert out == [[("a", None, 1), ("b", None, 2)], [("removed", "a", False)], [("a", None, 3)]]
    assert snapshots == [[("a", 1), ("b", 2)], [("b", 2)], [("a", 3), ("b", 2)]]


def test_mapWithState_update_then_remove_in_one_call_removes(ctx):
    def func(key, value, state):
        state.update(value)
        state.remove()
        return value

    out = run_stream(ctx, [[("a", 1)], []], lambda s: s.mapWithState(func).stateSnapshots())
    assert out == [[], []]


def test_mapWithState_state_of_any_python_type(ctx):
    def func(key, value, state):
        seen = state.getOption() or []
        state.update(seen + [value])
        return len(seen)

    out = run_stream(ctx, [[((1, "k"), None), ((1, "k"), {"x": 1})], [((1, "k"), 2.5)]],
                     lambda s: s.mapWithState(func).stateSnapshots(), sort=False)
    assert out == [[((1, "k"), [None, {"x": 1}])], [((1, "k"), [None, {"x": 1}, 2.5])]]


def test_mapWithState_function_error_reaches_awaitTermination(ssc, tmp_path):
    ssc.checkpoint(str(tmp_path))
    def func(key, value, state):
        state.get()  # no state yet: raises

    ssc.queueStream([[("a", 1)]]).mapWithState(func).foreachRDD(lambda rdd: rdd.collect())
    ssc.start()
    advance(ssc, 1)
    with pytest.raises(BatchError, match="State.get"):
        ssc.awaitTerminationOrTimeout(0)


def test_mapWithState_timeout_must_be_positive(ssc):
    with pytest.raises(ValueError, match="timeout"):
        ssc.queueStream([]).mapWithState(running_sum, timeout=0)


def _add_to_state(values, state):
    return (state or 0) + sum(values)


def _sum_with_state(key, value, state):
    total = (state.get() if state.exists() else 0) + (value or 0)
    state.update(total)
    return (key, total)


@pytest.mark.parametrize("operator", ["updateStateByKey", "mapWithState"])
def test_initial_state_survives_a_restart_before_the_first_snapshot(ctx, tmp_path, operator):
    """The first batch builds on the initial state; a restart before any data snapshot recomputes it, so
    the checkpoint must carry the initial state (its records) until a snapshot exists."""
    checkpoint, prefix = str(tmp_path / "cp"), str(tmp_path / "out" / "state")

    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(checkpoint)
        pairs = ssc.queueStream([[("a", 1)], [("a", 2)], [("b", 1)], [("a", 4)]])
        if operator == "updateStateByKey":
            state = pairs.updateStateByKey(_add_to_state, initialRDD=[("a", 100)])
        else:
            state = pairs.mapWithState(_sum_with_state, initialState=[("a", 100)]).stateSnapshots()
        state.saveAsTextFiles(prefix)
        return ssc

    ssc = StreamingContext.getOrCreate(checkpoint, setup)
    ssc.start()
    advance(ssc, 2)
    ssc.stop(stopSparkContext=False)  # no data snapshot yet (every 10 batches)

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    restored = StreamingContext.getOrCreate(checkpoint, must_not_run, clock=ManualClock(start=4.0))
    restored.start()
    try:
        assert restored.wait_for_batch(4000, 30)
    finally:
        restored.stop(stopSparkContext=False)
    last = sorted(ast.literal_eval(line) for part in sorted(Path(f"{prefix}-4000").glob("part-*"))
                  for line in part.read_text().splitlines())
    assert last == [("a", 107), ("b", 1)]
