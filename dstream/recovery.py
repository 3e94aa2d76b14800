"""Checkpointing a streaming job and restoring it after the driver dies.

Layout of a checkpoint directory (any fsspec URL)::

    <dir>/checkpoint-<batch ms>   metadata checkpoints, newest 10 kept (driver.checkpoint)
    <dir>/data/rdd-<id>-<uid>/    data snapshots of stateful streams (Arrow IPC part files)
    <dir>/wal/<stream>/           socketTextStream's write-ahead log (dstream.wal)

The metadata checkpoint is written after each batch is generated (so its input is recorded before any of
its jobs runs) and after it completes (or fails: a failed batch is listed in ``failed_times``, and the
graph keeps its recorded input, so a restart recomputes it). Data snapshot directories are deleted once no
kept metadata checkpoint refers to them; on start and every few checkpoints, the orphans a killed driver
left (snapshots and ``.checkpoint-*.tmp`` files no kept checkpoint refers to, older than the oldest kept
checkpoint) are found by listing and deleted too (``dstream.driver.retention``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dstream.broadcast import pickling_for_checkpoint
from dstream.driver.checkpoint import (Checkpoint, CheckpointError, CheckpointWriter, checkpoint_key, read_latest,
                                       unpickle)
from dstream.driver.jobs import FailedBatch
from dstream.driver.retention import SNAPSHOTS, SnapshotJanitor
from dstream.driver.storage import Location
from dstream.driver.times import batch_name
from dstream.executors import serialization
from dstream.graph import DStreamGraph, StreamRuntime
from dstream.io import join
from dstream.version import __version__

log = logging.getLogger(__name__)


def data_dir(directory: str) -> str:
    return join(directory, "data")


class StreamCheckpointer:
    """The driver's Checkpointer for a StreamingContext: graph + configuration -> checkpoint files."""

    def __init__(self, ssc: StreamRuntime, directory: str | Location, keep: int = 10) -> None:
        self.ssc = ssc
        #: the checkpoint directory with its storage options
        self.location = Location.of(directory)
        #: its URL (no storage options)
        self.directory = self.location.url
        # signed with the key in the Context's conf or the environment; the key itself is never written
        self.writer = CheckpointWriter(self.location, __version__, keep, key=checkpoint_key(ssc.sparkContext.conf))
        restored = getattr(ssc, "restored_from", None)  # what the kept checkpoints of the last run refer to
        self._janitor = SnapshotJanitor(keep, self.location, restored.extra.get(SNAPSHOTS) if restored else None)
        self._janitor.start()  # on start: the orphans a killed driver left

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool, failed: Sequence[FailedBatch] = ()) -> None:
        graph = self.ssc.graph
        if batch_completed:
            graph.update_checkpoint_data()
        ctx = self.ssc.sparkContext
        master = ctx.master if isinstance(ctx.master, str) else None
        with pickling_for_checkpoint():  # a captured broadcast or accumulator fails here, not after a restart
            pickled_graph = serialization.dumps(graph)
        snapshots = graph.data_checkpoint_dirs()
        cp = Checkpoint(time_ms=time_ms, interval_ms=self.ssc.interval_ms, master=master,
                        conf=dict(ctx.conf), pending_times=pending_times, last_completed_ms=last_completed_ms,
                        graph=pickled_graph, inputs=input_records(graph),
                        extra={SNAPSHOTS: self._janitor.references(time_ms, snapshots)},
                        failed_times=[f.time_ms for f in failed], failures=failure_records(failed))
        self.writer.write(cp)
        self._janitor.collect(snapshots, time_ms)


def input_records(graph: DStreamGraph) -> list[dict[str, Any]]:
    """Per input stream, what each batch it still records took (time, records, metadata such as files),
    for the checkpoint's JSON header: inspectable without unpickling the graph. ``records`` is 0 where the
    input does not count them (text files while nobody reads the counts)."""
    out = []
    for i, inp in enumerate(graph.inputs):
        batches = []
        for t in inp.recorded_times():
            metadata = {k: v for k, v in inp.input_metadata(t).items() if k != "Description"}
            batches.append({"time_ms": t, "records": inp.records_per_batch.get(t, 0),
                            **({"metadata": metadata} if metadata else {})})
        out.append({"id": i, "name": inp.name, "batches": batches})
    return out


def failure_records(failed: Sequence[FailedBatch]) -> list[dict[str, Any]]:
    """The failed batches as the checkpoint keeps them (JSON values, in the header too)."""
    return [{"time_ms": f.time_ms, "attempts": f.attempts, "reason": f.reason} for f in failed]


def failed_batches(cp: Checkpoint) -> list[FailedBatch]:
    """The failed batches a checkpoint lists, oldest first (``failed_times``; details from ``failures``)."""
    details = {int(r["time_ms"]): r for r in cp.failures if isinstance(r, dict) and "time_ms" in r}
    return [FailedBatch(t, int(details.get(t, {}).get("attempts", 1)), str(details.get(t, {}).get("reason", "")))
            for t in sorted(cp.failed_times)]


class SnapshotOnlyCheckpointer:
    """The Checkpointer when only ``Context.setCheckpointDir`` is set (Spark's behaviour then): stateful
    streams snapshot their data there to cut lineage, but no metadata is written, so there is nothing to
    restart from; snapshots are deleted once the streams no longer refer to them."""

    def __init__(self, ssc: StreamRuntime) -> None:
        self.ssc = ssc
        self._janitor = SnapshotJanitor(keep=1)

    def write(self, time_ms: int, pending_times: list[int], last_completed_ms: int | None,
              batch_completed: bool, failed: Sequence[FailedBatch] = ()) -> None:
        if batch_completed:
            graph = self.ssc.graph
            graph.update_checkpoint_data()
            self._janitor.collect(graph.data_checkpoint_dirs())


@dataclass(frozen=True)
class Restored:
    """What a StreamingContext is rebuilt from: the newest readable checkpoint, its directory and the DStream
    graph unpickled from it (``StreamingContext(..., restored=...)`` attaches the graph)."""

    checkpoint: Checkpoint
    #: the checkpoint directory, with the storage options it was read with
    directory: Location
    graph: DStreamGraph


def read_checkpoint(directory: str | Location, storage_options: Mapping[str, Any] | None = None,
                    key: bytes | str | None = None, on_unreadable: str = "raise") -> Restored | None:
    """The newest readable checkpoint under ``directory`` with its graph, or None when there is none.

    ``key`` verifies the checkpoint's signature before anything is unpickled (``None``: the key in
    ``$DSTREAM_CHECKPOINT_KEY``, if any). Raises ``CheckpointError`` when a checkpoint exists but cannot be
    restored (another dstream version, or changed code), ``CheckpointSignatureError`` when it fails
    verification, ``UnreadableCheckpointError`` when checkpoint files exist but none can be read (with
    ``on_unreadable="fresh"``: a warning, and None)."""
    location = Location.of(directory, storage_options)
    cp = read_latest(location, key=key, on_unreadable=on_unreadable)
    if cp is None:
        return None
    graph = unpickle(cp.graph, f"the DStream graph of the checkpoint of {batch_name(cp.time_ms)} in {location}")
    if not isinstance(graph, DStreamGraph):
        raise CheckpointError(f"the checkpoint in {location} does not hold a DStream graph")
    return Restored(cp, location, graph)
