"""Metadata checkpoints: what the driver needs to rebuild a streaming job after it dies.

A checkpoint file holds a small JSON header (format version, dstream version, batch time, payload length
and SHA-256) and a cloudpickled payload (configuration, the DStream graph with each input's recorded
input, pending batch times, where the data snapshots are). Files are written to a temporary name and
renamed, ``checkpoint-<time ms>``; the newest ``keep`` are kept. Reading goes newest first and skips a
damaged file with a warning naming it.

A checkpoint holds pickled code, so reading one runs code: a checkpoint location must be writable only
by the job's owner.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import fsspec

from dstream.executors import serialization

log = logging.getLogger(__name__)

MAGIC = b"DSTREAMCKPT\n"
#: bump when the payload layout changes; older files then fail with a clear CheckpointError
FORMAT_VERSION = 3
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used to restore the job."""


@dataclass
class Checkpoint:
    """The driver's state at the end of generating one batch."""

    #: the batch time this checkpoint was written for
    time_ms: int
    #: the batch interval
    interval_ms: int
    #: the Context's master and configuration
    master: Any
    conf: dict[str, Any]
    #: batch times generated but not known to be completed
    pending_times: list[int]
    #: the newest batch time whose jobs all completed
    last_completed_ms: int | None
    #: the pickled DStream graph (streams, recorded inputs, data checkpoint locations)
    graph: bytes
    #: anything else the graph's owner wants back
    extra: dict[str, Any] = field(default_factory=dict)


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def encode(cp: Checkpoint, dstream_version: str) -> bytes:
    payload = serialization.dumps(cp)
    header = {"format": FORMAT_VERSION, "dstream": dstream_version, "time_ms": cp.time_ms,
              "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    h = json.dumps(header).encode()
    return MAGIC + len(h).to_bytes(4, "big") + h + payload


def decode(data: bytes, name: str) -> Checkpoint:
    """Parse a checkpoint file; ValueError if it is damaged, CheckpointError if it is incompatible."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{name} is not a dstream checkpoint (bad magic)")
    start = len(MAGIC)
    n = int.from_bytes(data[start:start + 4], "big")
    try:
        header = json.loads(data[start + 4:start + 4 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: damaged header: {exc}") from None
    payload = data[start + 4 + n:]
    if len(payload) != header.get("length") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError(f"{name}: damaged or truncated (length or checksum mismatch)")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{name} was written by dstream {header.get('dstream')} in checkpoint format "
            f"{header.get('format')}; this dstream reads format {FORMAT_VERSION}. Start the job from a new "
            f"checkpoint directory (or run the dstream version that wrote it).")
    cp = unpickle(payload, name)
    if not isinstance(cp, Checkpoint):
        raise CheckpointError(f"{name} does not hold a dstream Checkpoint")
    return cp


def unpickle(data: bytes, what: str) -> Any:
    """Unpickle checkpointed code; a CheckpointError saying what to do when the code no longer loads."""
    try:
        return serialization.loads(data)
    except Exception as exc:  # noqa: BLE001 - code that changed or vanished since it was written
        raise CheckpointError(
            f"{what} cannot be restored: it no longer loads with the current code ({type(exc).__name__}: "
            f"{exc}). The job's code changed in a way the checkpoint cannot follow; start the job from a "
            f"new checkpoint directory.") from exc


class CheckpointWriter:
    """Writes metadata checkpoints atomically and keeps the newest ``keep``."""

    def __init__(self, directory: str, dstream_version: str, keep: int = 10) -> None:
        self.directory = directory
        self.dstream_version = dstream_version
        self.keep = keep
        self.fs, self.path = _fs(directory)
        self.fs.makedirs(self.path, exist_ok=True)

    def write(self, cp: Checkpoint) -> str:
        data = encode(cp, self.dstream_version)
        final = posixpath.join(self.path, f"checkpoint-{cp.time_ms}")
        tmp = posixpath.join(self.path, f".checkpoint-{cp.time_ms}.{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)
        self._prune()
        return final

    def _prune(self) -> None:
        for t in checkpoint_times(self.fs, self.path)[self.keep:]:
            try:
                self.fs.rm(posixpath.join(self.path, f"checkpoint-{t}"))
            except FileNotFoundError:
                pass


def checkpoint_times(fs: fsspec.AbstractFileSystem, path: str) -> list[int]:
    """Batch times of the checkpoint files under ``path``, newest first."""
    try:
        names = [posixpath.basename(p) for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    times = [int(m.group(1)) for m in map(_NAME.match, names) if m]
    return sorted(times, reverse=True)


def read_latest(directory: str) -> Checkpoint | None:
    """The newest readable checkpoint under ``directory``; None when there is none.

    A damaged or truncated file is skipped with a warning naming it; an incompatible one raises
    CheckpointError (restoring an older one would silently lose progress).
    """
    fs, path = _fs(directory)
    for t in checkpoint_times(fs, path):
        name = posixpath.join(directory, f"checkpoint-{t}")
        try:
            with fs.open(posixpath.join(path, f"checkpoint-{t}"), "rb") as f:
                data = f.read()
            return decode(data, name)
        except ValueError as exc:
            log.warning("skipping damaged checkpoint %s: %s", name, exc)
        except FileNotFoundError:
            continue
    return None
