"""Accumulators: variables that tasks only add to and the driver reads (PySpark's ``pyspark.accumulators``).

``acc = ctx.accumulator(0)``; tasks call ``acc.add(x)`` or ``acc += x``; the driver reads ``acc.value``.
Inside a task an add goes into the task's own partial value (``TaskContext.accumulator_updates``, started
from ``accum_param.zero(...)``), which travels back with the task's result; the driver merges it with
``accum_param.addInPlace`` only from the result it accepts for a partition, so a task attempt that died
and was retried, or the losing copy of a speculative task, counts nothing. That holds on every executor,
the thread pool included: a task never touches the driver's value directly. As in Spark, an update made in
a transformation counts again if that stage is computed again (say an uncached RDD used by two jobs);
updates made in actions (``foreach``) count once.

A custom type needs an ``AccumulatorParam``: ``zero(value)`` gives its zero (a new object each call, since
each task adds to its own zero in place), ``addInPlace(v1, v2)`` adds ``v2`` to ``v1`` (in place where it
can) and returns the result.
"""
from __future__ import annotations

import copy
import itertools
import threading
import weakref
from typing import Any, Generic, TypeVar

from dstream.executors.base import TaskContext
from dstream.broadcast import PROCESS_TOKEN, refuse_in_checkpoint

T = TypeVar("T")

_ids = itertools.count()
#: this process's accumulators by id; the driver merges task updates into them
_registry: "weakref.WeakValueDictionary[int, Accumulator]" = weakref.WeakValueDictionary()


class AccumulatorParam(Generic[T]):
    """How to add values of an accumulator's type."""

    def zero(self, value: T) -> T:
        """The zero of the type, shaped like ``value`` (e.g. a vector of zeros of its length)."""
        raise NotImplementedError

    def addInPlace(self, value1: T, value2: T) -> T:
        """Add ``value2`` to ``value1``, in place where possible, and return the result."""
        raise NotImplementedError


class AddingAccumulatorParam(AccumulatorParam[T]):
    """Adds with ``+=`` from a fixed zero (PySpark's params for int, float and complex)."""

    def __init__(self, zero_value: T) -> None:
        self.zero_value = zero_value

    def zero(self, value: T) -> T:
        # a copy: tasks add to their zero in place, and on the thread executor they share this param
        return copy.copy(self.zero_value)

    def addInPlace(self, value1: T, value2: T) -> T:
        value1 += value2  # type: ignore[operator]
        return value1


INT_ACCUMULATOR_PARAM: AccumulatorParam[int] = AddingAccumulatorParam(0)
FLOAT_ACCUMULATOR_PARAM: AccumulatorParam[float] = AddingAccumulatorParam(0.0)
COMPLEX_ACCUMULATOR_PARAM: AccumulatorParam[complex] = AddingAccumulatorParam(0.0j)


def default_param(value: Any) -> AccumulatorParam:
    """The param ``Context.accumulator`` uses when none is given: for int, float or complex values."""
    if isinstance(value, bool):
        raise TypeError("No default accumulator param for type bool: pass an AccumulatorParam")
    if isinstance(value, int):
        return INT_ACCUMULATOR_PARAM
    if isinstance(value, float):
        return FLOAT_ACCUMULATOR_PARAM
    if isinstance(value, complex):
        return COMPLEX_ACCUMULATOR_PARAM
    raise TypeError(f"No default accumulator param for type {type(value)}: pass an AccumulatorParam")


class Accumulator(Generic[T]):
    """A shared variable tasks add to (``add``, ``+=``) and only the driver reads (``value``)."""

    def __init__(self, aid: int, value: T, accum_param: AccumulatorParam[T]) -> None:
        #: unique within this process
        self.aid = aid
        self.accum_param = accum_param
        self._value = value
        self._lock = threading.Lock()
        #: True for a copy unpickled on an executor
        self._deserialized = False
        _registry[aid] = self

    @property
    def value(self) -> T:
        """The merged value; only the driver may read it, outside tasks."""
        self._check_not_in_task()
        return self._value

    @value.setter
    def value(self, value: T) -> None:
        self._check_not_in_task()
        with self._lock:
            self._value = value

    def add(self, term: T) -> None:
        """Add ``term``: in a task to the task's update, on the driver to the value itself."""
        tc = TaskContext.get()
        if tc is not None:
            updates = tc.accumulator_updates
            partial = updates[self.aid] if self.aid in updates else self.accum_param.zero(self._value)
            updates[self.aid] = self.accum_param.addInPlace(partial, term)
        else:
            with self._lock:
                self._value = self.accum_param.addInPlace(self._value, term)

    def __iadd__(self, term: T) -> "Accumulator[T]":
        self.add(term)
        return self

    def _merge(self, update: T) -> None:
        """Merge one accepted task's update (on the driver)."""
        with self._lock:
            self._value = self.accum_param.addInPlace(self._value, update)

    def _check_not_in_task(self) -> None:
        if self._deserialized or TaskContext.get() is not None:
            raise RuntimeError("Accumulator.value cannot be accessed inside tasks")

    def __reduce__(self) -> Any:
        refuse_in_checkpoint(repr(self))
        return _rebuild, (self.aid, self.accum_param.zero(self._value), self.accum_param, PROCESS_TOKEN)

    def __str__(self) -> str:
        return str(self._value)

    def __repr__(self) -> str:
        return f"Accumulator<id={self.aid}, value={self._value}>"


def accumulator(value: T, accum_param: AccumulatorParam[T] | None = None) -> Accumulator[T]:
    """A new accumulator starting at ``value`` (what ``Context.accumulator`` returns)."""
    return Accumulator(next(_ids), value, default_param(value) if accum_param is None else accum_param)


def merge_updates(updates: dict[int, Any]) -> None:
    """Merge one accepted task's updates into this process's accumulators (ids it does not know are
    accumulators that have been garbage-collected: their updates are dropped)."""
    for aid, update in updates.items():
        acc = _registry.get(aid)
        if acc is not None:
            acc._merge(update)


def _rebuild(aid: int, zero: Any, accum_param: AccumulatorParam, origin: str) -> Accumulator:
    """Unpickle an accumulator: the original in the process that made it, else an executor copy."""
    if origin == PROCESS_TOKEN:
        original = _registry.get(aid)
        if original is not None:
            return original
    copy = Accumulator.__new__(Accumulator)
    copy.aid, copy.accum_param, copy._value, copy._lock, copy._deserialized = aid, accum_param, zero, \
        threading.Lock(), True
    return copy
