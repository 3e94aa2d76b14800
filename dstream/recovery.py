"""Checkpointing a streaming job and restoring it after the driver dies.

Layout of a checkpoint directory (any fsspec URL)::

    <dir>/checkpoint-<batch ms>   metadata checkpoints, newest 10 kept (driver.checkpoint)
    <dir>/data/rdd-<id>-<uid>/    data snapshots of stateful streams (Arrow IPC part files)
    <dir>/wal/<stream>/           socketTextStream's write-ahead log

The metadata checkpoint is written after each batch is generated (so its input is recorded before any of
its jobs runs) and after it completes. Data snapshot directories are deleted once no kept metadata
checkpoint refers to them.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from dstream.driver.checkpoint import Checkpoint, CheckpointWriter
from dstream.driver.times import batch_name
from dstream.broadcast import pickling_for_checkpoint
from dstream.io import join, url_to_fs
from dstream.executors import serialization

if TYPE_CHECKING:
    from dstream.streaming import StreamingContext

log = logging.getLogger(__name__)


def data_dir(directory: str) -> str:
    return join(directory, "data")


def wal_dir(directory: str, stream_id: str | None = None) -> str:
    """The write-ahead log directory of a checkpoint, or of one receiver stream in it."""
    return join(directory, "wal") if stream_id is None else join(directory, "wal", stream_id)


class SnapshotJanitor:
    """Deletes data snapshot directories once no kept checkpoint (of the newest ``keep``) refers to them."""

    def __init__(self, keep: int) -> None:
        #: data snapshot directories referred to by each kept checkpoint, oldest first
        self._referenced: deque[set[str]] = deque(maxlen=keep)
        self._known: set[str] = set()

    def collect(self, referenced: set[str]) -> None:
        self._referenced.append(referenced)
        self._known |= referenced
        alive = set().union(*self._referenced)
        for directory in self._known - alive:
            try:
                fs, path = url_to_fs(directory)
                fs.rm(path, recursive=True)
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001 - a leftover directory is harmless
                log.warning("could not delete old data checkpoint %s: %s", directory, exc)
        self._known &= alive


class StreamCheckpointer:
    """The driver's Checkpointer for a StreamingContext: graph + configuration -> checkpoint files."""

    def __init__(self, ssc: "StreamingContext", directory: str, keep: int = 10) -> None:
        from dstream import __version__
        self.ssc = ssc
        self.directory = directory
        self.writer = CheckpointWriter(directory, __version__, keep)
        self._janitor = SnapshotJanitor(keep)

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool) -> None:
        graph = self.ssc._graph
        if batch_completed:
            graph.update_checkpoint_data()
        ctx = self.ssc.sparkContext
        master = ctx.master if isinstance(ctx.master, str) else None
        with pickling_for_checkpoint():  # a captured broadcast or accumulator fails here, not after a restart
            pickled_graph = serialization.dumps(graph)
        cp = Checkpoint(time_ms=time_ms, interval_ms=self.ssc._interval_ms, master=master,
                        conf=dict(ctx.conf), pending_times=pending_times, last_completed_ms=last_completed_ms,
                        graph=pickled_graph)
        self.writer.write(cp)
        self._janitor.collect(graph.data_checkpoint_dirs())


class SnapshotOnlyCheckpointer:
    """The Checkpointer when only ``Context.setCheckpointDir`` is set (Spark's behaviour then): stateful
    streams snapshot their data there to cut lineage, but no metadata is written, so there is nothing to
    restart from; snapshots are deleted once the streams no longer refer to them."""

    def __init__(self, ssc: "StreamingContext") -> None:
        self.ssc = ssc
        self._janitor = SnapshotJanitor(keep=1)

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool) -> None:
        if batch_completed:
            graph = self.ssc._graph
            graph.update_checkpoint_data()
            self._janitor.collect(graph.data_checkpoint_dirs())


def restore(checkpoint: Checkpoint, directory: str, context: Any = None, clock: Any = None) -> "StreamingContext":
    """A StreamingContext rebuilt from ``checkpoint``; ``start()`` then replays the lost batches."""
    from dstream.driver.checkpoint import CheckpointError, unpickle
    from dstream.context import Context
    from dstream.streaming import DStreamGraph, StreamingContext
    ctx = context
    if ctx is None:
        active = Context._active
        ctx = active if active is not None and not active._stopped else \
            Context(checkpoint.master or "local[*]", conf=checkpoint.conf)
    ssc = StreamingContext(ctx, checkpoint.interval_ms / 1000.0, clock=clock)
    graph = unpickle(checkpoint.graph, f"the DStream graph of the checkpoint of {batch_name(checkpoint.time_ms)} in "
                                       f"{directory}")
    if not isinstance(graph, DStreamGraph):
        raise CheckpointError(f"the checkpoint in {directory} does not hold a DStream graph")
    graph.attach(ssc)
    ssc._graph = graph
    ssc._generator.graph = graph
    ssc.checkpoint(directory)
    ssc._restored_from = checkpoint
    return ssc
