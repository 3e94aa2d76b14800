"""The state of a key in ``mapWithState`` (Spark's ``State``) and the per-key function that runs the user's
mapping function over a batch's values. The stateful streams themselves (``StateDStream``,
``MapWithStateDStream``) are operators in ``dstream.dstream``.
"""
from __future__ import annotations

from typing import Any, Callable


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


def map_key(func: Callable, timeout_ms: int | None, time_ms: int,
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
