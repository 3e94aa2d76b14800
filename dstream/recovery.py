"""Checkpointing a streaming job and restoring it after the driver dies.

Layout of a checkpoint directory (any fsspec URL)::

    <dir>/checkpoint-<batch ms>   metadata checkpoints, newest 10 kept (driver.checkpoint)
    <dir>/data/rdd-<id>-<uid>/    data snapshots of stateful streams (Arrow IPC part files)
    <dir>/wal/<stream>/           socketTextStream's write-ahead log (dstream.wal)

The metadata checkpoint is written after each batch is generated (so its input is recorded before any of
its jobs runs) and after it completes. Data snapshot directories are deleted once no kept metadata
checkpoint refers to them.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from dstream.broadcast import pickling_for_checkpoint
from dstream.driver.checkpoint import Checkpoint, CheckpointError, CheckpointWriter, read_latest, unpickle
from dstream.driver.times import batch_name
from dstream.executors import serialization
from dstream.graph import DStreamGraph, StreamRuntime
from dstream.io import join, url_to_fs
from dstream.version import __version__

log = logging.getLogger(__name__)


def data_dir(directory: str) -> str:
    return join(directory, "data")


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

    def __init__(self, ssc: StreamRuntime, directory: str, keep: int = 10) -> None:
        self.ssc = ssc
        self.directory = directory
        self.writer = CheckpointWriter(directory, __version__, keep)
        self._janitor = SnapshotJanitor(keep)

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool) -> None:
        graph = self.ssc.graph
        if batch_completed:
            graph.update_checkpoint_data()
        ctx = self.ssc.sparkContext
        master = ctx.master if isinstance(ctx.master, str) else None
        with pickling_for_checkpoint():  # a captured broadcast or accumulator fails here, not after a restart
            pickled_graph = serialization.dumps(graph)
        cp = Checkpoint(time_ms=time_ms, interval_ms=self.ssc.interval_ms, master=master,
                        conf=dict(ctx.conf), pending_times=pending_times, last_completed_ms=last_completed_ms,
                        graph=pickled_graph)
        self.writer.write(cp)
        self._janitor.collect(graph.data_checkpoint_dirs())


class SnapshotOnlyCheckpointer:
    """The Checkpointer when only ``Context.setCheckpointDir`` is set (Spark's behaviour then): stateful
    streams snapshot their data there to cut lineage, but no metadata is written, so there is nothing to
    restart from; snapshots are deleted once the streams no longer refer to them."""

    def __init__(self, ssc: StreamRuntime) -> None:
        self.ssc = ssc
        self._janitor = SnapshotJanitor(keep=1)

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool) -> None:
        if batch_completed:
            graph = self.ssc.graph
            graph.update_checkpoint_data()
            self._janitor.collect(graph.data_checkpoint_dirs())


@dataclass(frozen=True)
class Restored:
    """What a StreamingContext is rebuilt from: the newest readable checkpoint, its directory and the DStream
    graph unpickled from it (``StreamingContext(..., restored=...)`` attaches the graph)."""

    checkpoint: Checkpoint
    directory: str
    graph: DStreamGraph


def read_checkpoint(directory: str) -> Restored | None:
    """The newest readable checkpoint under ``directory`` with its graph, or None when there is none.

    Raises ``CheckpointError`` when a checkpoint exists but cannot be restored (another dstream version,
    or changed code)."""
    cp = read_latest(directory)
    if cp is None:
        return None
    graph = unpickle(cp.graph, f"the DStream graph of the checkpoint of {batch_name(cp.time_ms)} in {directory}")
    if not isinstance(graph, DStreamGraph):
        raise CheckpointError(f"the checkpoint in {directory} does not hold a DStream graph")
    return Restored(cp, directory, graph)
