"""Stateful streams: updateStateByKey and mapWithState.

Each batch's state RDD is built from the previous batch's state and the batch's new records. State RDDs
are cached, and the next batch reads the previous state from its cached blocks (``materialised``, which
uses ``RDD.truncated``), so lineage does not grow with the stream; data checkpoints cut it on disk.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from dstream.dstream import DStream, materialised
from dstream.rdd import RDD, _fn_name


def _as_rdd(ssc: Any, initial: RDD | Iterable | None) -> RDD | None:
    if initial is None or isinstance(initial, RDD):
        return initial
    return ssc.sparkContext.parallelize(list(initial))


class _KeyedStateDStream(DStream):
    """A stream whose RDD at each batch is per-key state built on the previous batch's: cached, and
    snapshotted every checkpoint interval (so it needs ``StreamingContext.checkpoint``)."""

    def __init__(self, parent: DStream, name: str, initial: RDD | Iterable | None,
                 num_partitions: int | None) -> None:
        super().__init__(parent._ssc, [parent], name=name)
        self._initial = _as_rdd(parent._ssc, initial)
        self._num_partitions = num_partitions
        self.must_checkpoint = True
        self.must_cache = True

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_initial"] = None  # used by the first batch only; a restored stream has snapshots
        return state


class StateDStream(_KeyedStateDStream):
    """updateStateByKey: ``update(new_values, old_state_or_None)`` for every key with new values or state."""

    def __init__(self, parent: DStream, update: Callable[[list, Any], Any], num_partitions: int | None,
                 initial: RDD | Iterable | None) -> None:
        super().__init__(parent, f"updateStateByKey({_fn_name(update)})", initial, num_partitions)
        self.update = update

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        previous = self._get_or_compute(time_ms - self.slide_ms) if time_ms - self.slide_ms > self.zero_ms \
            else self._initial
        ctx = self._ssc.sparkContext
        new = parent._get_or_compute(time_ms) or ctx.emptyRDD()
        n = self._num_partitions or ctx.defaultParallelism
        update = self.update
        if previous is None:
            grouped = new.groupByKey(n).mapValues(lambda vs: (vs, None))
        else:
            grouped = materialised(previous).cogroup(new, n).mapValues(
                lambda sv: (sv[1], sv[0][0] if sv[0] else None))
        return grouped.mapValues(lambda vs_s: update(vs_s[0], vs_s[1])).filter(lambda kv: kv[1] is not None)


class State:
    """The state of one key inside a mapWithState function (Spark's ``State``)."""

    __slots__ = ("_value", "_exists", "_removed", "_updated", "_timing_out")

    def __init__(self, value: Any = None, exists: bool = False, timing_out: bool = False) -> None:
        self._value = value
        self._exists = exists
        self._removed = False
        self._updated = False
        self._timing_out = timing_out

    def exists(self) -> bool:
        return self._exists

    def get(self) -> Any:
        if not self._exists:
            raise KeyError("State.get(): the state does not exist (check State.exists() first)")
        return self._value

    def getOption(self) -> Any:
        return self._value if self._exists else None

    def update(self, newState: Any) -> None:
        if self._removed:
            raise RuntimeError("State.update(): the state has already been removed")
        if self._timing_out:
            raise RuntimeError("State.update(): a state that is timing out cannot be updated")
        self._value, self._exists, self._updated = newState, True, True

    def remove(self) -> None:
        if self._timing_out:
            raise RuntimeError("State.remove(): a state that is timing out is removed anyway")
        if self._removed:
            raise RuntimeError("State.remove(): the state has already been removed")
        self._value, self._exists, self._removed, self._updated = None, False, True, False

    def isTimingOut(self) -> bool:
        return self._timing_out


def _map_key(func: Callable, timeout_ms: int | None, time_ms: int,
             key: Any, values_and_state: tuple[list, list]) -> tuple[Any, Any, list]:
    """Run ``func`` for one key; return (state value, last update time, mapped records)."""
    values, old = values_and_state
    value, updated_at = old[0] if old else (None, None)
    exists = bool(old)
    mapped: list = []
    if values:
        for v in values:
            state = State(value, exists)
            mapped.append(func(key, v, state))
            if state._updated:
                value, exists, updated_at = state._value, True, time_ms
            elif state._removed:
                value, exists, updated_at = None, False, None
        # A key with new data is not idle: its timeout starts again from this batch.
        return (value, time_ms, mapped) if exists else (None, None, mapped)
    if exists and timeout_ms is not None and time_ms - updated_at >= timeout_ms:
        state = State(value, True, timing_out=True)
        mapped.append(func(key, None, state))
        return (None, None, mapped)
    return (value, updated_at, mapped) if exists else (None, None, mapped)


class MapWithStateDStream(DStream):
    """The mapped records of mapWithState; ``stateSnapshots()`` gives the (key, state) pairs."""

    def __init__(self, parent: DStream, func: Callable[[Any, Any, State], Any], timeout: float | None,
                 initial: RDD | Iterable | None, num_partitions: int | None) -> None:
        from dstream.durations import to_ms
        timeout_ms = None if timeout is None else to_ms(timeout, "timeout")
        self.internal = _MapWithStateInternal(parent, func, timeout_ms, initial, num_partitions)
        super().__init__(parent._ssc, [self.internal], name=f"mapWithState({_fn_name(func)})")

    def _compute(self, time_ms: int) -> RDD | None:
        rdd = self.internal._get_or_compute(time_ms)
        return None if rdd is None else rdd.flatMap(lambda kv: kv[1][2])

    def stateSnapshots(self) -> DStream:
        """The stream of every key's current state, (key, state), after each batch."""
        return _StateSnapshots(self.internal)


class _StateSnapshots(DStream):
    def __init__(self, internal: "_MapWithStateInternal") -> None:
        super().__init__(internal._ssc, [internal], name="stateSnapshots")

    def _compute(self, time_ms: int) -> RDD | None:
        rdd = self.dependencies[0]._get_or_compute(time_ms)
        return None if rdd is None else rdd.filter(lambda kv: kv[1][1] is not None).mapValues(lambda s: s[0])


class _MapWithStateInternal(_KeyedStateDStream):
    """Per key: (state value, last update time or None when gone, mapped records of this batch)."""

    def __init__(self, parent: DStream, func: Callable, timeout_ms: int | None,
                 initial: RDD | Iterable | None, num_partitions: int | None) -> None:
        super().__init__(parent, f"mapWithState({_fn_name(func)}) state", initial, num_partitions)
        self.func = func
        self.timeout_ms = timeout_ms

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        ctx = self._ssc.sparkContext
        if time_ms - self.slide_ms > self.zero_ms:
            previous = self._get_or_compute(time_ms - self.slide_ms)
            states = None if previous is None else materialised(previous).filter(
                lambda kv: kv[1][1] is not None).mapValues(lambda s: (s[0], s[1]))
        else:
            states = None if self._initial is None else self._initial.mapValues(lambda v: (v, time_ms))
        new = parent._get_or_compute(time_ms) or ctx.emptyRDD()
        n = self._num_partitions or ctx.defaultParallelism
        states = states if states is not None else ctx.emptyRDD()
        func, timeout_ms = self.func, self.timeout_ms
        return new.cogroup(states, n).map(lambda kv: (kv[0], _map_key(func, timeout_ms, time_ms, kv[0], kv[1])))
