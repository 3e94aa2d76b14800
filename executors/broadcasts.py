"""Broadcast blocks: a value stored once in the block store, loaded at most once per executor process.

The driver pickles a broadcast value once and puts the bytes in the executor's block store as a one-row
Arrow table (``put``) under a fresh ``block_ids.broadcast_block`` name; a task refers to it only by that
block id. In a worker process the first task that asks for it (``value``) reads the block (memory-mapped
from the shared directory), unpickles it and caches it in this module, keyed by block id, so every later
task in that process gets the same object: a value shipped to 100 tasks on 2 workers is unpickled twice.
A cached value whose block has been removed from its store (the broadcast was unpersisted or destroyed,
or its executor shut down) is dropped at the start of the next task in that process (``evict_removed``).
This module knows ids, bytes and tables only.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dstream.executors import serialization
from dstream.executors.blockstore import BlockStore

#: the one column of a broadcast block: the pickled value
COLUMN = "pickled"


class BroadcastMissingError(RuntimeError):
    """A task asked for a broadcast block that is not in its executor's store."""


@dataclass
class _Loaded:
    value: Any
    #: the store the block came from; the value is dropped once the block is gone from it
    store: BlockStore


#: values loaded in this process, by block id
_cache: dict[str, _Loaded] = {}
#: one lock per block id being loaded, so concurrent tasks of one process unpickle a value once
_loading: dict[str, threading.Lock] = {}
_lock = threading.Lock()
#: how many values this process has unpickled (for tests)
loads = 0


def to_table(data: bytes) -> pa.Table:
    """The block holding a pickled value (``large_binary``: values over 2 GiB fit)."""
    return pa.table({COLUMN: pa.array([data], type=pa.large_binary())})


def put(store: BlockStore, block_id: str, data: bytes) -> None:
    """Store a pickled broadcast value under ``block_id`` (done once, on the driver)."""
    store.put(block_id, to_table(data))


def value(store: BlockStore, block_id: str, name: str = "") -> Any:
    """The value of broadcast block ``block_id``: unpickled from ``store`` the first time this process
    asks, then the cached object. ``name`` (e.g. ``Broadcast(3)``) is used in the error when it is gone."""
    global loads
    loaded = _cache.get(block_id)
    if loaded is not None:
        return loaded.value
    with _lock:
        lock = _loading.setdefault(block_id, threading.Lock())
    with lock:
        loaded = _cache.get(block_id)
        if loaded is None:
            table = store.get(block_id)
            if table is None:
                raise BroadcastMissingError(
                    f"{name or 'a broadcast variable'} is not in the executor's block store (block {block_id}): "
                    f"it was destroyed, or its Context was stopped, while a task still used it")
            data = table.column(COLUMN).chunk(0)[0].as_buffer()
            # a task's own view of a store (a Dask worker's) names the store that outlives it
            loaded = _Loaded(serialization.loads(data), getattr(store, "lasting", store))
            with _lock:
                _cache[block_id] = loaded
                loads += 1
    with _lock:
        _loading.pop(block_id, None)
    return loaded.value


def evict_removed() -> None:
    """Drop cached values whose blocks are no longer in their stores (called as each task starts)."""
    if not _cache:
        return
    for block_id, loaded in list(_cache.items()):
        if not loaded.store.contains(block_id):
            with _lock:
                if _cache.get(block_id) is loaded:
                    del _cache[block_id]


def cached_ids() -> list[str]:
    """Block ids of the values cached in this process (for tests)."""
    with _lock:
        return sorted(_cache)
