"""Blocks on a Dask cluster whose workers share nothing but the network.

A block (driver data, a cached partition, a shuffle bucket, a broadcast value) is an Arrow table held in a
Dask worker's memory under a Dask key. The driver holds only ``distributed.Future`` objects, one per block
(``DaskBlockStore``): Dask moves a block to the worker of a task that declares it (``Task.reads``) and frees
it when the driver drops its future. Every block is the output of a Dask task, so when a worker dies the
scheduler makes its blocks again from their lineage: a task's blocks by rerunning the task, a block the
driver made (``put``) from the copy of its data that its task carries (Spark keeps a parallelized
collection in the driver for the same reason; here the Dask scheduler holds it, until the block is freed).

On a worker, a task sees its declared inputs and the blocks it puts itself through a ``TaskBlocks`` store;
the blocks it put travel back in its output, and the driver splits each into its own key on the same
worker (``block_of``), so a later task fetches one bucket, not the whole map output.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any, Iterable, NamedTuple

import distributed
import pyarrow as pa
import pyarrow.ipc as ipc

from dstream.executors.blockstore import BlockStore

class TaskOutput(NamedTuple):
    """What a task leaves on its worker: its encoded result (``results.encode_result``) and the blocks it put."""

    result: tuple[str, Any]
    blocks: dict[str, pa.Table]


def result_of(output: TaskOutput) -> tuple[tuple[str, Any], list[str]]:
    """Run on the worker holding ``output``: the part the driver fetches (result and block names)."""
    return output.result, sorted(output.blocks)


def _made_on_driver(table: pa.Table) -> pa.Table:
    """The task behind a block the driver made: it holds the block's data."""
    return aligned(table)


def block_of(output: TaskOutput, block_id: str) -> pa.Table:
    """Run on the worker holding ``output``: one block it put, as a key of its own (no copy)."""
    return output.blocks[block_id]


def aligned(table: pa.Table) -> pa.Table:
    """``table``, copied once into freshly allocated memory if Dask's transfer left any of its buffers
    misaligned (Arrow IPC frames land at any offset of a network message; Acero warns on them)."""
    for column in table.columns:
        for chunk in column.chunks:
            if any(b is not None and b.address % 8 for b in chunk.buffers()):
                sink = pa.BufferOutputStream()
                with ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
                return ipc.open_stream(sink.getvalue()).read_all()
    return table


class DroppedBlocks(BlockStore):
    """What outlives a task on a worker: the blocks the driver is known to have dropped. A broadcast value
    cached in the worker process is checked against it (``broadcasts.evict_removed``), not against the
    task that loaded it, so the cache pins no task's blocks."""

    def __init__(self) -> None:
        self._dropped: set[str] = set()

    def drop(self, block_ids: Iterable[str]) -> None:
        """A task declared these blocks and the driver no longer had them."""
        self._dropped.update(block_ids)

    def put(self, block_id: str, table: pa.Table) -> None:
        raise TypeError("blocks are put through a task's TaskBlocks")

    def get(self, block_id: str) -> pa.Table | None:
        return None

    def contains(self, block_id: str) -> bool:
        return block_id not in self._dropped

    def remove_prefix(self, prefix: str) -> int:
        return 0


#: this worker process's record of dropped blocks
DROPPED = DroppedBlocks()


class TaskBlocks(BlockStore):
    """A task's view of the blocks on a worker: the inputs it declared, and the ones it puts."""

    def __init__(self, inputs: dict[str, pa.Table]) -> None:
        self.inputs = {block_id: aligned(table) for block_id, table in inputs.items()}
        #: blocks this task put, returned in its TaskOutput
        self.outputs: dict[str, pa.Table] = {}
        #: where values cached beyond this task check whether their block still exists
        self.lasting: BlockStore = DROPPED

    def put(self, block_id: str, table: pa.Table) -> None:
        self.outputs[block_id] = table

    def get(self, block_id: str) -> pa.Table | None:
        table = self.outputs.get(block_id)
        return self.inputs.get(block_id) if table is None else table

    def contains(self, block_id: str) -> bool:
        return block_id in self.outputs or block_id in self.inputs

    def remove_prefix(self, prefix: str) -> int:
        gone = [b for b in self.outputs if b.startswith(prefix)]
        for b in gone:
            del self.outputs[b]
        return len(gone)


class DaskBlockStore(BlockStore):
    """The driver's map from block id to the Dask future holding the block on some worker."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        #: names this store's keys on the cluster (several drivers may share one)
        self.token = uuid.uuid4().hex[:8]
        self._futures: dict[str, distributed.Future] = {}
        self._lock = threading.Lock()

    def key(self, block_id: str) -> str:
        """A fresh Dask key for a block (fresh, so replacing a block never races with freeing it)."""
        return f"dstream-{self.token}-{block_id}-{uuid.uuid4().hex[:8]}"

    def put(self, block_id: str, table: pa.Table) -> None:
        """Send a driver-made block to the cluster as a task that returns it: the data travels in the task,
        so the scheduler can make it again when the worker holding it dies (a scattered block could not
        be: Dask keeps one copy of it, and it would be lost with that worker)."""
        self.register(block_id, self.client.submit(_made_on_driver, table, pure=False, key=self.key(block_id)))

    def register(self, block_id: str, future: distributed.Future) -> None:
        """Hold ``future`` as the block ``block_id`` (a task's output split off on its worker)."""
        with self._lock:
            old, self._futures[block_id] = self._futures.get(block_id), future
        if old is not None:
            old.release()

    def future(self, block_id: str) -> distributed.Future | None:
        """The future holding ``block_id``, if the block is there (not lost with its workers)."""
        with self._lock:
            future = self._futures.get(block_id)
        if future is None or future.status in ("error", "cancelled", "lost"):
            return None
        return future

    def get(self, block_id: str) -> pa.Table | None:
        future = self.future(block_id)
        if future is None:
            return None
        try:
            return aligned(future.result())
        except Exception:  # noqa: BLE001 - lost with its workers, or cancelled meanwhile
            return None

    def contains(self, block_id: str) -> bool:
        return self.future(block_id) is not None

    def remove_prefix(self, prefix: str) -> int:
        with self._lock:
            gone = [b for b in self._futures if b.startswith(prefix)]
            futures = [self._futures.pop(b) for b in gone]
        for future in futures:
            future.release()
        return len(gone)
