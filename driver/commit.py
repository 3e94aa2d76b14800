"""Commit protocols for a directory of part files on fsspec storage (sink batches, data snapshots).

A directory is *committed* when its ``_SUCCESS`` object exists; dstream writes into it a JSON manifest of
the parts (name, size, SHA-256), so a reader trusts exactly the parts listed there and can check them::

    {"format": "dstream.manifest", "version": 1, "attempt": "3f2a9c1b7d4e",
     "parts": [{"name": "part-00000", "size": 12, "sha256": "..."}], "signature": "..."}

The name stays ``_SUCCESS`` so Spark/Hadoop-style readers, which skip names starting with ``_`` and treat
the marker as "job done", keep working; an empty ``_SUCCESS`` (Hadoop's marker) still counts as committed.
How the parts get there depends on the filesystem (``committer_for``):

- ``RenameCommitter`` (local disk, where rename is atomic): tasks write under ``_temporary/<attempt>/``,
  the driver renames each part into place and then writes ``_SUCCESS`` (temp name, then rename).
- ``ManifestCommitter`` (object stores: S3, GCS, ``memory://`` ..., where "rename" is copy + delete):
  tasks write each part once, directly under a final name unique to the attempt and the task
  (``part-00000-<attempt>-<task>``), and the driver publishes the batch with one small PUT of
  ``_SUCCESS``. Objects not listed (a dead attempt's, a speculative copy's) are never read through the
  manifest; the driver deletes them after the commit, and ``abort`` clears an uncommitted directory
  before the next attempt.

A manifest may be signed: ``Committer.commit`` and ``read_manifest`` take a ``Signer`` (an object with
``sign(payload) -> str`` and ``verify(payload, signature) -> bool``, e.g. an HMAC-SHA256 under the
checkpoint key); with a signer, a manifest whose signature is missing or wrong is refused. Manifests are
JSON: reading one never unpickles anything. Errors name the directory's URL, never its storage options.
"""
from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol, Sequence

from fsspec.implementations.local import LocalFileSystem

from dstream.driver.storage import Location

log = logging.getLogger(__name__)

__all__ = ["MARKER", "TEMPORARY", "Part", "Manifest", "Signer", "ManifestError", "ManifestSignatureError", "Committer",
           "RenameCommitter", "ManifestCommitter", "committer_for", "write_once", "read_manifest",
           "verify_parts", "committed_parts", "is_committed"]

#: the object that publishes a directory (the same name as ``dstream.sinks.SUCCESS``)
MARKER = "_SUCCESS"
#: where ``RenameCommitter``'s tasks write before the commit (hidden from Hadoop-style readers)
TEMPORARY = "_temporary"
FORMAT = "dstream.manifest"
VERSION = 1

#: what a task may hand to ``write_part``: bytes, or an Arrow buffer (anything with the buffer protocol)
Data = Any


class ManifestError(RuntimeError):
    """A directory is not committed, or its manifest is damaged, unsigned or does not match its parts."""


class ManifestSignatureError(ManifestError):
    """A signer was given and the manifest is not signed, or its signature does not verify."""


class Signer(Protocol):
    """Signs and verifies manifest payloads (the hook for checkpoint signing, issue 9 item 6)."""

    def sign(self, payload: bytes) -> str:
        """A signature of ``payload`` (text, stored in the manifest's JSON)."""

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether ``signature`` is this signer's signature of ``payload``."""


@dataclass(frozen=True)
class Part:
    """One committed part file: its name in the directory, its size in bytes and its SHA-256 (hex)."""

    name: str
    size: int
    sha256: str | None = None

    def check(self, data: bytes, where: str) -> None:
        """Raise ManifestError unless ``data`` (the part's bytes, read from ``where``) is this part."""
        if len(data) != self.size:
            raise ManifestError(f"{where}: the part {self.name} has {len(data)} bytes, the manifest says {self.size}")
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise ManifestError(f"{where}: the part {self.name} does not match its SHA-256 in the manifest")


@dataclass(frozen=True)
class Manifest:
    """What ``_SUCCESS`` holds: the parts of one committed attempt, optionally signed."""

    parts: tuple[Part, ...]
    attempt: str
    signature: str | None = None

    def payload(self) -> bytes:
        """The canonical bytes a signature covers (everything but the signature)."""
        body = {"format": FORMAT, "version": VERSION, "attempt": self.attempt,
                "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts]}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, signer: Signer | None) -> "Manifest":
        """This manifest with ``signer``'s signature (unchanged without a signer)."""
        if signer is None:
            return self
        return Manifest(self.parts, self.attempt, signer.sign(self.payload()))

    def to_bytes(self) -> bytes:
        body = json.loads(self.payload())
        if self.signature is not None:
            body["signature"] = self.signature
        return json.dumps(body, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Manifest":
        """Parse a manifest read from ``where``; ManifestError when it is not one."""
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                raise ValueError("not a dstream manifest")
            if body.get("version") != VERSION:
                raise ValueError(f"manifest version {body.get('version')!r}, this dstream reads {VERSION}")
            parts = tuple(Part(str(p["name"]), int(p["size"]), p.get("sha256")) for p in body["parts"])
            return cls(parts, str(body["attempt"]), body.get("signature"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{where}: damaged manifest {MARKER}: {exc}") from None

    def verified(self, signer: Signer | None, where: str) -> "Manifest":
        """This manifest, after checking its signature with ``signer`` (no check without a signer)."""
        if signer is not None:
            if self.signature is None:
                raise ManifestSignatureError(f"{where}: the manifest {MARKER} is not signed")
            if not signer.verify(self.payload(), self.signature):
                raise ManifestSignatureError(f"{where}: the manifest {MARKER} fails its signature check")
        return self


def _nbytes(data: Data) -> int:
    return memoryview(data).nbytes


def _part_of(name: str, data: Data) -> Part:
    return Part(name, _nbytes(data), hashlib.sha256(data).hexdigest())


def _is_local(where: Location) -> bool:
    return isinstance(where.fs, LocalFileSystem)


def write_once(where: Location, data: Data) -> int:
    """Write ``data`` as the file ``where`` so that no reader ever sees it half-written; its size.

    Local disk: a hidden temporary name in the same directory, then an atomic rename. Object stores: one
    PUT, which makes the object visible whole or not at all."""
    try:
        fs, path = where.fs, where.path
        if _is_local(where):
            directory, name = posixpath.split(path)
            fs.makedirs(directory, exist_ok=True)
            tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            with fs.open(tmp, "wb") as f:
                f.write(data)
            fs.mv(tmp, path)
        else:
            fs.pipe_file(path, bytes(data) if not isinstance(data, bytes) else data)
    except Exception as exc:  # noqa: BLE001 - any failure, named (never with a secret)
        raise where.failure("writing", exc) from None
    return _nbytes(data)


def _read_marker(directory: Location) -> bytes | None:
    """The bytes of ``directory``'s ``_SUCCESS`` (read afresh, never from a cached listing), or None."""
    try:
        return directory.join(MARKER).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def is_committed(directory: Location) -> bool:
    """Whether ``directory`` holds ``_SUCCESS`` (a manifest, or Hadoop's empty marker)."""
    return _read_marker(directory) is not None


def read_manifest(directory: Location, signer: Signer | None = None) -> Manifest | None:
    """``directory``'s manifest, its signature checked when a ``signer`` is given; None for Hadoop's empty
    ``_SUCCESS`` marker (which a signer refuses). ManifestError naming the directory when there is no
    ``_SUCCESS`` (the directory was never committed) or it is damaged."""
    data = _read_marker(directory)
    if data is None:
        raise ManifestError(f"{directory.url}: not committed: no {MARKER} manifest (a write that never finished)")
    if not data.strip():
        if signer is not None:
            raise ManifestSignatureError(f"{directory.url}: the manifest {MARKER} is empty, not signed")
        return None
    return Manifest.from_bytes(data, directory.url).verified(signer, directory.url)


def _listing(directory: Location) -> dict[str, dict[str, Any]]:
    """The entries directly under ``directory``, by base name, listed afresh."""
    return {posixpath.basename(e["name"].rstrip("/")): e for e in directory.list()}


def verify_parts(directory: Location, manifest: Manifest) -> list[Location]:
    """The manifest's parts as Locations, in order, after checking with one fresh listing that each is
    there with its size; ManifestError naming the directory and the part otherwise."""
    listed = _listing(directory)
    out = []
    for part in manifest.parts:
        entry = listed.get(part.name)
        if entry is None or entry.get("type") == "directory":
            raise ManifestError(f"{directory.url}: the part {part.name} listed in the manifest is missing")
        if entry.get("size") != part.size:
            raise ManifestError(f"{directory.url}: the part {part.name} has {entry.get('size')} bytes, "
                                f"the manifest says {part.size}")
        out.append(directory.join(part.name))
    return out


def committed_parts(directory: "str | Location", storage_options: Mapping[str, Any] | None = None,
                    signer: Signer | None = None) -> list[Location]:
    """The part files of a committed directory (a sink batch or a data snapshot), in order, to read.

    With a manifest, exactly the parts it lists, each checked to be there with its size; with Hadoop's
    empty ``_SUCCESS``, the directory's visible files (names not starting with ``_`` or ``.``). Raises
    ManifestError naming the directory when it is not committed or does not match its manifest."""
    where = Location.of(directory, storage_options)
    manifest = read_manifest(where, signer)
    if manifest is None:
        return [where.join(name) for name, e in sorted(_listing(where).items())
                if not name.startswith(("_", ".")) and e.get("type") != "directory"]
    return verify_parts(where, manifest)


class Committer(ABC):
    """How the part files of one directory are written by tasks and published by the driver at once.

    Tasks call ``write_part`` (it returns the ``Part`` the driver needs); the driver calls ``commit`` with
    every task's part once all succeeded, or ``abort`` to clear a directory that was never committed.
    A committer holds no state: it is picklable and travels to the tasks."""

    #: a short name for logs and reprs
    name: ClassVar[str] = "committer"

    def is_committed(self, directory: Location) -> bool:
        return is_committed(directory)

    def abort(self, directory: Location, tries: int = 5) -> None:
        """Delete everything under an uncommitted ``directory`` (leftovers of attempts that died).

        A task of a failed attempt may still be writing its part while this runs (a job fails at its
        first failed task), which can make a local recursive delete fail ("directory not empty"): the
        delete is tried again a few times."""
        fs, path = directory.fs, directory.path
        for attempt in range(tries):
            fs.invalidate_cache(path)
            try:
                if fs.exists(path):
                    fs.rm(path, recursive=True)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if attempt == tries - 1:
                    raise directory.failure("clearing the uncommitted directory", exc) from None
                time.sleep(0.05 * (attempt + 1))
            finally:
                fs.invalidate_cache(path)

    @abstractmethod
    def write_part(self, directory: Location, attempt: str, stem: str, extension: str, data: Data) -> Part:
        """Task: write one part (``stem`` like ``part-00003``) where no reader trusts it yet."""

    @abstractmethod
    def commit(self, directory: Location, attempt: str, parts: Sequence[Part],
               signer: Signer | None = None) -> Manifest:
        """Driver: publish ``parts`` (of ``attempt``) as the committed content of ``directory``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RenameCommitter(Committer):
    """For filesystems with an atomic rename (local disk): temporary directory, rename, ``_SUCCESS`` last."""

    name: ClassVar[str] = "rename"

    def write_part(self, directory: Location, attempt: str, stem: str, extension: str, data: Data) -> Part:
        name = f"{stem}{extension}"
        tmp = directory.join(TEMPORARY, attempt, name)
        try:
            tmp.fs.makedirs(posixpath.dirname(tmp.path), exist_ok=True)
            with tmp.open("wb") as f:
                f.write(data)
        except Exception as exc:  # noqa: BLE001 - any failure, named
            raise tmp.failure("writing", exc) from None
        return _part_of(name, data)

    def commit(self, directory: Location, attempt: str, parts: Sequence[Part],
               signer: Signer | None = None) -> Manifest:
        fs, path = directory.fs, directory.path
        tmp = posixpath.join(path, TEMPORARY)
        fs.makedirs(path, exist_ok=True)
        for part in parts:
            fs.mv(posixpath.join(tmp, attempt, part.name), posixpath.join(path, part.name))
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)
        manifest = Manifest(tuple(parts), attempt).signed(signer)
        write_once(directory.join(MARKER), manifest.to_bytes())
        return manifest


class ManifestCommitter(Committer):
    """For object stores (no atomic rename): parts written once under final unique names, then one PUT of
    the ``_SUCCESS`` manifest publishes them; unlisted objects are deleted after the commit."""

    name: ClassVar[str] = "manifest"

    def write_part(self, directory: Location, attempt: str, stem: str, extension: str, data: Data) -> Part:
        # unique per task too: a retried or speculative copy of a task never overwrites a part in place
        name = f"{stem}-{attempt}-{uuid.uuid4().hex[:8]}{extension}"
        write_once(directory.join(name), data)
        return _part_of(name, data)

    def commit(self, directory: Location, attempt: str, parts: Sequence[Part],
               signer: Signer | None = None) -> Manifest:
        manifest = Manifest(tuple(parts), attempt).signed(signer)
        write_once(directory.join(MARKER), manifest.to_bytes())
        self._sweep(directory, manifest)
        return manifest

    @staticmethod
    def _sweep(directory: Location, manifest: Manifest) -> None:
        """Best effort: delete what the manifest does not list (a losing speculative copy's part, ...)."""
        keep = {p.name for p in manifest.parts} | {MARKER}
        fs = directory.fs
        try:
            for name, entry in _listing(directory).items():
                if name not in keep:
                    fs.rm(entry["name"], recursive=entry.get("type") == "directory")
        except Exception as exc:  # noqa: BLE001 - readers go by the manifest; a leftover is only clutter
            log.warning("could not delete unlisted objects under %s: %s", directory.url, exc)
        finally:
            fs.invalidate_cache(directory.path)


def committer_for(directory: Location) -> Committer:
    """The commit protocol for ``directory``'s filesystem: rename on local disk, a manifest elsewhere."""
    return RenameCommitter() if _is_local(directory) else ManifestCommitter()
