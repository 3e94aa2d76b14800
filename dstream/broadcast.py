"""Broadcast variables: a read-only value sent to each executor once, not with every task (PySpark's Broadcast).

``ctx.broadcast(value)`` pickles the value once into the executors' block store (``executors.broadcasts``);
the Broadcast object itself pickles as its id and block id only, so a task that uses it ships a few bytes,
and each worker process unpickles the value the first time a task reads ``.value`` and keeps it for the
tasks after. On the thread executor tasks share the driver's memory: nothing is pickled and ``.value`` is
the driver's object.

Broadcasts (and accumulators) cannot be recovered from a streaming checkpoint: a checkpointed DStream
function that captures one fails when it is pickled into the checkpoint (``SharedVariableInCheckpointError``).
Create them lazily instead, as singletons, from ``rdd.context`` inside ``foreachRDD`` or ``transform``, as
Spark Streaming's guide recommends; after a restart the singleton is created afresh.
"""
from __future__ import annotations

import itertools
import pickle
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dstream.executors import block_ids, broadcasts, serialization
from dstream.executors.base import TaskContext

if TYPE_CHECKING:
    from dstream.context import Context

T = TypeVar("T")

#: identifies this process in pickled broadcasts and accumulators, so that unpickling one in the process
#: that made it gives back the original object
PROCESS_TOKEN = uuid.uuid4().hex
_ids = itertools.count()
#: the broadcasts this process made, by id
_registry: "weakref.WeakValueDictionary[int, Broadcast]" = weakref.WeakValueDictionary()
_NOT_LOADED: Any = object()


class SharedVariableInCheckpointError(pickle.PicklingError):
    """A broadcast variable or an accumulator was about to be pickled into a streaming checkpoint."""


#: while active, pickling a Broadcast or an Accumulator in this thread raises SharedVariableInCheckpointError
#: (used around writing and checking checkpointed code)
pickling_for_checkpoint = serialization.pickling_for_checkpoint


def refuse_in_checkpoint(what: str) -> None:
    """Raise if ``what`` (a broadcast or accumulator) is being pickled into a checkpoint."""
    if serialization.pickling_for_checkpoint_active():
        raise SharedVariableInCheckpointError(
            f"{what} is captured by a function of a checkpointed stream, but broadcast variables and "
            f"accumulators cannot be recovered from a checkpoint. Create it lazily instead, as a singleton "
            f"got from rdd.context inside foreachRDD or transform, so that it is made afresh after a restart "
            f"(Spark Streaming guide: 'Accumulators, Broadcast Variables, and Checkpoints')")


class Broadcast(Generic[T]):
    """A read-only value cached on each executor (``Context.broadcast(value)``); read it with ``.value``."""

    def __init__(self, ctx: "Context", value: T) -> None:
        #: unique within this process (Spark's ``Broadcast.id``)
        self._id = next(_ids)
        self._ctx: "Context | None" = ctx
        self._value: Any = value
        self._lock = threading.Lock()
        #: the block holding the pickled value, None until it is stored (and after unpersist)
        self._block_id: str | None = None
        self._lease: Any = None
        self._destroyed = False
        #: False for a copy unpickled on an executor
        self._on_driver = True
        _registry[self._id] = self
        if not ctx.executor.shares_driver_memory:
            self._store()  # pickled now, so a value that cannot be pickled fails here, as in PySpark

    @property
    def id(self) -> int:
        return self._id

    @property
    def value(self) -> T:
        """The value: on the driver its own object; in a task, this process's cached copy."""
        if self._on_driver:
            if self._destroyed:
                raise self._destroyed_error()
            return self._value
        value = self._value
        if value is _NOT_LOADED:
            tc = TaskContext.get()
            if tc is None:
                raise RuntimeError(f"{self!r} can be read on the driver or inside a task, not elsewhere")
            value = self._value = broadcasts.value(tc.store, self._block_id or "", repr(self))
        return value

    def unpersist(self, blocking: bool = False) -> None:
        """Delete the value's copies on the executors; using it again sends it again. ``blocking`` is
        accepted for PySpark compatibility (removal is immediate)."""
        self._check_driver("unpersisted")
        with self._lock:
            if self._destroyed:
                raise self._destroyed_error()
            lease, self._lease, self._block_id = self._lease, None, None
        if lease is not None:
            lease.release()

    def destroy(self, blocking: bool = False) -> None:
        """Delete the value everywhere, the driver included; the broadcast cannot be used afterwards."""
        self._check_driver("destroyed")
        with self._lock:
            self._destroyed = True
            self._value = None
            lease, self._lease, self._block_id = self._lease, None, None
        if lease is not None:
            lease.release()

    # -- shipping --------------------------------------------------------------------------------------------
    def _store(self) -> str:
        """The id of the block holding the pickled value, writing it first if needed."""
        with self._lock:
            if self._destroyed:
                raise self._destroyed_error()
            if self._block_id is None:
                ctx = self._ctx
                if ctx is None or ctx._stopped:
                    raise RuntimeError(f"{self!r} belongs to a Context that has been stopped: create broadcasts "
                                       f"on the running Context")
                try:
                    data = serialization.dumps(self._value)
                except Exception as exc:
                    raise pickle.PicklingError(f"Could not serialize broadcast: {type(exc).__name__}: {exc}") \
                        from exc
                # a new name each time: see unpersist
                block_id = block_ids.broadcast_block(self._id, uuid.uuid4().hex[:12])
                broadcasts.put(ctx.executor.store, block_id, data)
                self._lease = ctx._lease_blocks(block_id)
                self._block_id = block_id
            return self._block_id

    def __reduce__(self) -> Any:
        refuse_in_checkpoint(repr(self))
        block_id = self._store() if self._on_driver else self._block_id
        if block_id:
            serialization.note_block_read(block_id)
        return _rebuild, (self._id, block_id, PROCESS_TOKEN)

    def _check_driver(self, what: str) -> None:
        if not self._on_driver:
            raise RuntimeError(f"{self!r} can only be {what} on the driver")

    def _destroyed_error(self) -> RuntimeError:
        return RuntimeError(f"Attempted to use {self!r} after it was destroyed")

    def __repr__(self) -> str:
        return f"Broadcast({self._id})"


def _rebuild(bid: int, block_id: str, origin: str) -> Broadcast:
    """Unpickle a broadcast: the original in the process that made it, else a copy reading the block."""
    if origin == PROCESS_TOKEN:
        original = _registry.get(bid)
        if original is not None:
            return original
    copy = Broadcast.__new__(Broadcast)
    copy._id, copy._ctx, copy._value, copy._lock = bid, None, _NOT_LOADED, threading.Lock()
    copy._block_id, copy._lease, copy._destroyed, copy._on_driver = block_id, None, False, False
    return copy
