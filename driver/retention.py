"""Bounded storage under a checkpoint directory (any fsspec URL, as a ``Location``).

A job keeps its newest metadata checkpoints; each refers to the data snapshot directories
(``<checkpoint>/data/rdd-*``) its DStream graph needs. ``SnapshotJanitor`` deletes a snapshot directory
this process knows as soon as neither a kept checkpoint (the newest ``keep`` checkpoint times; each batch
writes its checkpoint twice, when generated and when completed, and the second write replaces the first)
nor one of the newest ``keep`` checkpoint writes (the running graph's among them) refers to it: falling back
to an older kept checkpoint finds its snapshots, and so does a graph replaying batches older than the kept
checkpoints after a restart. A driver killed at the wrong moment also
leaves things no checkpoint refers to (a snapshot written after the last checkpoint, the temporary file
``.checkpoint-*.tmp`` of a checkpoint write); a later process does not know them, so on start and every
``sweep_every`` checkpoints the janitor lists the directory and deletes each such orphan that no kept
checkpoint refers to and that is older than the oldest kept checkpoint (anything newer may belong to a
write still in progress). The references of every kept checkpoint travel in the newest checkpoint
(``references``), so a restarted driver knows them without reading older checkpoints.

Only snapshot directories that were there when the janitor started are orphan candidates: one this
process creates may be older than every kept checkpoint and still unreferenced when enough batches queue
up behind the batch writing it; this process deletes its own once the checkpoints stop referring to them.
"""
from __future__ import annotations

import datetime
import logging
import posixpath
import re
import threading
from collections import deque
from typing import Any, Iterable, Mapping

from dstream.driver.storage import Location

log = logging.getLogger(__name__)

#: the key of ``Checkpoint.extra`` that holds the snapshot directories of each kept checkpoint
SNAPSHOTS = "snapshots"
#: a metadata checkpoint's name (``driver.checkpoint``) and a temporary file of a checkpoint write
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_CHECKPOINT_TMP = re.compile(r"^\.checkpoint-.*\.tmp$")
#: a data snapshot directory (``io.write_rdd_checkpoint``)
_SNAPSHOT_PREFIX = "rdd-"
#: listing-entry keys that hold a modification time (local, memory, s3fs, gcsfs, adlfs, ...)
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


def modified(entry: Mapping[str, Any]) -> float | None:
    """An fsspec listing entry's modification time (seconds since the epoch), or None when not given."""
    for key in _TIME_KEYS:
        value = entry.get(key)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def basename(entry: Mapping[str, Any]) -> str:
    """The last part of a listing entry's name."""
    return posixpath.basename(str(entry["name"]).rstrip("/"))


class SnapshotJanitor:
    """Deletes data snapshot directories this process knows once none of the newest ``keep`` checkpoint
    times refers to them; given the ``checkpoint`` directory, also sweeps orphans found by listing
    (``start``, then every ``sweep_every`` new checkpoint times, in a background thread).

    ``history`` (checkpoint time -> snapshot directories, from ``references`` of the checkpoint the job was
    restored from) is what the kept checkpoints of an earlier process refer to.
    """

    #: sweep orphans every this many new checkpoint times
    sweep_every = 10

    def __init__(self, keep: int, checkpoint: "str | Location | None" = None,
                 history: Mapping[int, Iterable[str]] | None = None) -> None:
        self.keep = keep
        self.checkpoint = None if checkpoint is None else Location.of(checkpoint)
        self.data = None if self.checkpoint is None else self.checkpoint.join("data")
        self._lock = threading.Lock()
        #: snapshot directories each kept checkpoint time refers to (its newest write)
        self._by_time: dict[int, set[str]] = {int(t): set(dirs) for t, dirs in (history or {}).items()}
        self._trim()
        #: what the newest ``keep`` checkpoint writes refer to, the live graph's last: a replayed batch's
        #: checkpoint may be older than every kept one (and pruned at once), yet its graph runs on
        self._recent: deque[set[str]] = deque(maxlen=keep)
        #: every directory referred to by a checkpoint this janitor saw and did not delete yet
        self._known: set[str] = set().union(*self._by_time.values())
        #: snapshot directories (names) there at ``start``, not known to be referenced: orphan candidates
        self._candidates: set[str] = set()
        self._writes = 0
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        """List the snapshot directories there before this process writes any, then sweep in the background."""
        if self.data is None:
            return
        try:
            names = {basename(e) for e in self.data.list()}
        except Exception as exc:  # noqa: BLE001 - the job runs anyway; only its orphans stay
            log.warning("could not list %s to clean it up: %s", self.data, exc)
            return
        with self._lock:
            self._candidates = {n for n in names if n.startswith(_SNAPSHOT_PREFIX)}
        self.sweep_in_background()

    def _trim(self) -> None:
        for t in sorted(self._by_time, reverse=True)[self.keep:]:
            del self._by_time[t]

    def references(self, time_ms: int, referenced: set[str]) -> dict[int, list[str]]:
        """What the kept checkpoints refer to once the checkpoint of ``time_ms`` refers to ``referenced``:
        for ``Checkpoint.extra[SNAPSHOTS]``, so a restarted driver knows them."""
        with self._lock:
            refs = {**self._by_time, time_ms: referenced}
        newest = sorted(refs, reverse=True)[:self.keep]
        return {t: sorted(refs[t]) for t in sorted(newest)}

    def collect(self, referenced: set[str], time_ms: int | None = None) -> None:
        """The checkpoint of ``time_ms`` (by default: a new one) was written and refers to ``referenced``:
        delete the known directories no kept checkpoint and no recent write refers to; start a sweep when due."""
        with self._lock:
            if time_ms is None:
                time_ms = max(self._by_time, default=0) + 1
            new_time = time_ms not in self._by_time
            self._by_time[time_ms] = set(referenced)
            self._trim()
            self._recent.append(set(referenced))
            self._known |= referenced
            alive = set().union(*self._by_time.values(), *self._recent)
            dead = self._known - alive
            self._known &= alive
            if new_time:
                self._writes += 1
            due = self.checkpoint is not None and new_time and self._writes % self.sweep_every == 0
        for directory in dead:
            where = self._location(directory)
            self._remove(where.fs, where.path, directory, recursive=True)
        if due:
            self.sweep_in_background()

    def _location(self, directory: str) -> Location:
        """A snapshot directory, with the checkpoint's storage options when it lies under its data dir."""
        if self.data is not None and posixpath.dirname(directory.rstrip("/")) == self.data.url.rstrip("/"):
            return self.data.join(posixpath.basename(directory.rstrip("/")))
        return Location.of(directory)

    def sweep_in_background(self) -> None:
        """Start a sweep in a daemon thread, unless one is still running."""
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._sweeper = threading.Thread(target=self._sweep_logged, name="dstream-storage-janitor",
                                             daemon=True)
            self._sweeper.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running sweep, if any; False if it is still running after ``timeout`` seconds."""
        sweeper = self._sweeper
        if sweeper is not None:
            sweeper.join(timeout)
            return not sweeper.is_alive()
        return True

    def _sweep_logged(self) -> None:
        try:
            deleted = self.sweep()
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("could not clean up the checkpoint directory %s: %s", self.checkpoint, exc)
            return
        if deleted:
            log.info("deleted %d leftovers no kept checkpoint refers to in %s", len(deleted), self.checkpoint)

    def sweep(self) -> list[str]:
        """Delete the orphans under the checkpoint directory: temporary checkpoint files, and snapshot
        directories there at ``start``, that no kept checkpoint refers to and that are older than the
        oldest kept checkpoint. Returns their names. Snapshots are left alone while a kept checkpoint's
        references are unknown."""
        if self.checkpoint is None or self.data is None:
            return []
        entries = self.checkpoint.list()
        kept = {int(m.group(1)): modified(e) for e in entries if (m := _CHECKPOINT.match(basename(e)))}
        if not kept or any(t is None for t in kept.values()):
            return []
        oldest = min(t for t in kept.values() if t is not None)
        with self._lock:
            known_times = set(self._by_time)
            alive = {posixpath.basename(d.rstrip("/"))
                     for d in set().union(*self._by_time.values(), *self._recent, self._known)}
            candidates = self._candidates - alive
        deleted: list[str] = []
        fs = self.checkpoint.fs
        for e in entries:
            name = basename(e)
            if _CHECKPOINT_TMP.match(name) and (t := modified(e)) is not None and t < oldest:
                if self._remove(fs, e["name"], name, recursive=False):
                    deleted.append(name)
        if not candidates:
            return deleted
        if not set(kept) <= known_times:
            log.debug("not sweeping %s yet: the references of checkpoints %s are unknown", self.data,
                      sorted(set(kept) - known_times))
            return deleted
        listed = {basename(e): e for e in self.data.list()}
        with self._lock:
            self._candidates &= set(listed)  # forget the ones gone
        for name in sorted(candidates & set(listed)):
            t = self._newest_change(listed[name])
            if t is not None and t < oldest and self._remove(fs, listed[name]["name"], f"data/{name}", True):
                deleted.append(f"data/{name}")
                with self._lock:
                    self._candidates.discard(name)
        return deleted

    def _newest_change(self, entry: Mapping[str, Any]) -> float | None:
        """When a snapshot directory last changed: the newest time of it and its entries."""
        assert self.data is not None
        times = [modified(entry)]
        if entry.get("type") == "directory":
            times += [modified(e) for e in self.data.join(basename(entry)).list()]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    @staticmethod
    def _remove(fs: Any, path: str, name: str, recursive: bool) -> bool:
        try:
            fs.rm(path, recursive=recursive)
            return True
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - a leftover is harmless; the next sweep tries again
            log.warning("could not delete %s: %s", name, exc)
            return False
