"""Metadata checkpoints: what the driver needs to rebuild a streaming job after it dies.

A checkpoint file, ``checkpoint-<time ms>``, is ``MAGIC``, a 4-byte header length, a JSON header and a
cloudpickled payload (configuration, the DStream graph with each input's recorded input, pending and
failed batch times, where the data snapshots are). The header (``read_header``) holds everything needed to
inspect a checkpoint without unpickling it: format and dstream version, batch time and interval, pending
batch times, failed batch times (``failed_times``, and ``failures``: each one's attempts and reason), the
last completed batch, what each input took per batch, the payload's length and SHA-256, and, when a key
is set, an HMAC-SHA256 over the header (which binds the payload through its SHA-256).

A checkpoint holds pickled code, so reading one runs code: whoever can write the checkpoint location can
run code as the job. With a key (``dstream.checkpoint.key`` in the conf, or ``DSTREAM_CHECKPOINT_KEY``),
every checkpoint is signed, and a restore verifies the signature before it unpickles anything; a file that
fails (tampered, unsigned, signed with another key, renamed) stops the restore with a
``CheckpointSignatureError`` naming it, rather than rolling the job back to an older checkpoint. Without a
key, one warning per process says that checkpoints are unsigned.

Writing: on a local disk to a temporary name, then renamed; on a store without rename (S3, GCS, ...) in one
PUT under the final name, which readers never see half of. The newest ``keep`` are kept. Reading lists
the directory afresh (no cached listing), goes newest first and skips a damaged file (torn, truncated:
length or checksum mismatch) with a warning naming it. When every checkpoint file is damaged, reading
raises ``UnreadableCheckpointError`` naming each, rather than reporting "no checkpoint": a silent fresh
start would lose the job's state and the input already there (``on_unreadable="fresh"`` asks for it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import posixpath
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dstream.driver.storage import Location
from dstream.executors import serialization

log = logging.getLogger(__name__)

MAGIC = b"DSTREAMCKPT\n"
#: bump when the file layout or the payload changes; files of other formats than ``READABLE_FORMATS`` then
#: fail with a clear CheckpointError
FORMAT_VERSION = 5
#: the formats this version reads: 4 is 5 without failed batches (none failed)
READABLE_FORMATS = (4, 5)
_NAME = re.compile(r"^checkpoint-(\d+)$")

#: the SparkConf key and the environment variable holding the checkpoint signing key
KEY_CONF = "dstream.checkpoint.key"
KEY_ENV = "DSTREAM_CHECKPOINT_KEY"
#: the signature algorithm named in signed headers
SIGNATURE_ALGORITHM = "hmac-sha256"
#: what a checkpoint's MAC is computed over starts with this, so no other signed object passes for one
_DOMAIN = b"dstream metadata checkpoint\n"

_unsigned_warned = False
_warn_lock = threading.Lock()


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used to restore the job."""


class CheckpointSignatureError(CheckpointError):
    """A checkpoint (or another signed object) fails verification against the key; nothing of it was
    unpickled."""


#: what ``read_latest`` does when checkpoint files exist but none can be read
ON_UNREADABLE = ("raise", "fresh")


class UnreadableCheckpointError(CheckpointError):
    """Checkpoint files exist in a directory, but not one of them can be read (damaged, truncated, not a
    checkpoint), so there is nothing to restore. ``files`` holds each file's URL and why it cannot be read.

    Starting afresh instead would lose the job's state and, since file streams take only the files that
    arrive after they start, every input file already there: the caller has to ask for that.
    """

    def __init__(self, directory: str, files: list[tuple[str, str]]) -> None:
        #: the checkpoint directory's URL
        self.directory = directory
        #: (URL, why it cannot be read) for each checkpoint file, newest first
        self.files = list(files)
        listing = "\n".join(f"  {url}: {why}" for url, why in self.files)
        super().__init__(
            f"none of the {len(self.files)} checkpoint files in {directory} can be read, so nothing can be "
            f"restored:\n{listing}\n"
            f"To start the job afresh from its setup function anyway, pass onUnreadable=\"fresh\" to "
            f"StreamingContext.getOrCreate (the files are left where they are; the job's state starts from "
            f"nothing, and file streams ignore the files already in their directories); or move the "
            f"checkpoint files away, keeping them if you want to inspect them.")


@dataclass
class Checkpoint:
    """The driver's state at the end of generating one batch."""

    #: the batch time this checkpoint was written for
    time_ms: int
    #: the batch interval
    interval_ms: int
    #: the Context's master and configuration (without ``dstream.checkpoint.key``)
    master: Any
    conf: dict[str, Any]
    #: batch times generated but not known to be completed (failed ones excepted)
    pending_times: list[int]
    #: the newest batch time whose jobs all completed
    last_completed_ms: int | None
    #: the pickled DStream graph (streams, recorded inputs, data checkpoint locations)
    graph: bytes
    #: per input stream, what each recorded batch took (JSON values; also in the header)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    #: anything else the graph's owner wants back
    extra: dict[str, Any] = field(default_factory=dict)
    #: batch times that failed and stay pending until retried or discarded (their input stays recorded)
    failed_times: list[int] = field(default_factory=list)
    #: per failed batch: ``{"time_ms", "attempts", "reason"}`` (JSON values; also in the header)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a checkpoint of format 4 has no failed batches
        state.setdefault("failed_times", [])
        state.setdefault("failures", [])
        self.__dict__.update(state)


# -- signing ------------------------------------------------------------------------------------------------
def checkpoint_key(conf: Mapping[str, Any] | None = None) -> bytes | None:
    """The signing key: ``conf["dstream.checkpoint.key"]``, else ``$DSTREAM_CHECKPOINT_KEY``, as UTF-8
    bytes; None when neither is set. An empty key is an error (it would sign nothing)."""
    value = conf.get(KEY_CONF) if conf is not None else None
    source = KEY_CONF
    if value is None:
        value, source = os.environ.get(KEY_ENV), KEY_ENV
    if value is None:
        return None
    key = value if isinstance(value, bytes) else str(value).encode()
    if not key:
        raise ValueError(f"{source} is set but empty; set a secret key (or unset it for unsigned checkpoints)")
    return key


def _key_bytes(key: bytes | str | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


def sign(data: bytes, key: bytes | str) -> str:
    """The HMAC-SHA256 of ``data`` under ``key``, as hex. Prefix ``data`` with what it is (for example
    ``b"dstream snapshot manifest\\n"``) so that one kind of signed object cannot pass for another."""
    return hmac.new(_key_bytes(key), data, hashlib.sha256).hexdigest()


def verify(data: bytes, signature: str | None, key: bytes | str, what: str) -> None:
    """Check ``signature`` (from ``sign``) of ``data``; ``CheckpointSignatureError`` naming ``what`` when it
    is missing or does not match (compared in constant time)."""
    if not signature:
        raise CheckpointSignatureError(
            f"refusing {what}: it is not signed, but {KEY_CONF} (or {KEY_ENV}) is set")
    if not isinstance(signature, str) or not hmac.compare_digest(sign(data, key), signature):
        raise CheckpointSignatureError(
            f"refusing {what}: its HMAC-SHA256 signature does not match the key set in {KEY_CONF} (or "
            f"{KEY_ENV}): it was tampered with, or written with another key")


class HmacSigner:
    """Signs and verifies payloads with HMAC-SHA256 under a key (``driver.commit``'s ``Signer`` protocol, for
    snapshot manifests). ``purpose`` is put before every payload, so a signature made for one kind of object
    never verifies as another's. The key never shows in its repr, and it refuses to be pickled (so it
    cannot end up in a checkpoint or a task)."""

    __slots__ = ("_key", "purpose")

    def __init__(self, key: bytes | str, purpose: bytes = b"dstream manifest\n") -> None:
        self._key = _key_bytes(key)
        self.purpose = purpose

    def sign(self, payload: bytes) -> str:
        """The hex HMAC-SHA256 of ``purpose + payload``."""
        return sign(self.purpose + payload, self._key)

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether ``signature`` is the signature of ``payload`` (compared in constant time)."""
        return isinstance(signature, str) and hmac.compare_digest(self.sign(payload), signature)

    def __reduce__(self) -> tuple:
        raise TypeError("an HmacSigner holds the checkpoint key and is not pickled; make it where it is used")

    def __repr__(self) -> str:
        return f"HmacSigner(purpose={self.purpose!r})"


def signer(conf: Mapping[str, Any] | None = None, purpose: bytes = b"dstream manifest\n") -> HmacSigner | None:
    """An ``HmacSigner`` with the key of ``conf`` or the environment (``checkpoint_key``); None without one."""
    key = checkpoint_key(conf)
    return None if key is None else HmacSigner(key, purpose)


def warn_unsigned(where: str) -> None:
    """Log, once per process, that checkpoints are written or read without a signature."""
    global _unsigned_warned
    with _warn_lock:
        if _unsigned_warned:
            return
        _unsigned_warned = True
    log.warning("metadata checkpoints (%s) are not signed: anyone who can write the checkpoint location can "
                "run code as this job when it restores. Set %s in the conf or the environment variable %s to "
                "sign and verify them.", where, KEY_CONF, KEY_ENV)


# -- the file format ----------------------------------------------------------------------------------------
def _canonical(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _json_values(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def encode(cp: Checkpoint, dstream_version: str, key: bytes | str | None = None) -> bytes:
    """A checkpoint file's bytes, signed with ``key`` when given (``None``: unsigned). The conf entry
    ``dstream.checkpoint.key`` is never written."""
    if KEY_CONF in cp.conf:
        cp = dataclasses.replace(cp, conf={k: v for k, v in cp.conf.items() if k != KEY_CONF})
    payload = serialization.dumps(cp)
    header = {"format": FORMAT_VERSION, "dstream": dstream_version, "time_ms": cp.time_ms,
              "interval_ms": cp.interval_ms, "pending_times": list(cp.pending_times),
              "last_completed_ms": cp.last_completed_ms, "inputs": _json_values(cp.inputs),
              "failed_times": list(cp.failed_times), "failures": _json_values(cp.failures),
              "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
              "signature": SIGNATURE_ALGORITHM if key is not None else None}
    if key is not None:
        header["hmac"] = sign(_DOMAIN + _canonical(header), _key_bytes(key))
    h = _canonical(header)
    return MAGIC + len(h).to_bytes(4, "big") + h + payload


def _parse_header(data: bytes, name: str) -> tuple[dict[str, Any], int]:
    """The header of a checkpoint file's first bytes, and where the payload starts; ValueError if damaged."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{name}: not a dstream checkpoint (bad magic)")
    start = len(MAGIC)
    if len(data) < start + 4:
        raise ValueError(f"{name}: damaged or truncated (no header)")
    n = int.from_bytes(data[start:start + 4], "big")
    try:
        header = json.loads(data[start + 4:start + 4 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: damaged header: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name}: damaged header (not a JSON object)")
    return header, start + 4 + n


def _check_format(header: Mapping[str, Any], name: str) -> None:
    if header.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{name} was written by dstream {header.get('dstream')} in checkpoint format "
            f"{header.get('format')}; this dstream reads formats {', '.join(map(str, READABLE_FORMATS))}. Start "
            f"the job from a new checkpoint directory (or run the dstream version that wrote it).")


def _check_signature(header: Mapping[str, Any], name: str, key: bytes | None) -> None:
    """Verify a header's signature; without a key, refuse a signed file and warn about unsigned ones."""
    algorithm = header.get("signature")
    if key is None:
        if algorithm is not None:
            raise CheckpointSignatureError(
                f"refusing {name}: it is signed ({algorithm}) but no key is set; set {KEY_CONF} in the conf "
                f"of the active Context, or {KEY_ENV}, to the key the job was started with. Nothing in it was "
                f"unpickled.")
        warn_unsigned(name)
        return
    if algorithm is None:
        raise CheckpointSignatureError(
            f"refusing {name}: it is not signed, but {KEY_CONF} (or {KEY_ENV}) is set, so it may have been "
            f"written by someone without the key. Nothing in it was unpickled, and the restore stops rather "
            f"than fall back to an older checkpoint. To adopt a key for a job whose checkpoints are unsigned, "
            f"start it from a new checkpoint directory.")
    if algorithm != SIGNATURE_ALGORITHM:
        raise CheckpointSignatureError(f"refusing {name}: unknown signature algorithm {algorithm!r}")
    unsigned = {k: v for k, v in header.items() if k != "hmac"}
    mac = header.get("hmac")
    if not isinstance(mac, str) or not hmac.compare_digest(sign(_DOMAIN + _canonical(unsigned), key), mac):
        raise CheckpointSignatureError(
            f"refusing {name}: its HMAC-SHA256 signature does not match the key set in {KEY_CONF} (or "
            f"{KEY_ENV}): it was tampered with, or written with another key. Nothing in it was unpickled, and "
            f"the restore stops rather than fall back to an older checkpoint (remove the file only if you "
            f"trust the ones before it).")


def decode(data: bytes, name: str, key: bytes | str | None = None, expect_time_ms: int | None = None) -> Checkpoint:
    """Parse a checkpoint file: ValueError if it is damaged (torn, truncated), CheckpointError if it is
    incompatible, ``CheckpointSignatureError`` if it fails verification against ``key`` (``None``: no key,
    and a signed file is refused). Nothing is unpickled before the checks pass."""
    key = _key_bytes(key)
    header, start = _parse_header(data, name)
    _check_format(header, name)
    payload = data[start:]
    if len(payload) != header.get("length") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError(f"{name}: damaged or truncated (length or checksum mismatch)")
    _check_signature(header, name, key)
    if expect_time_ms is not None and header.get("time_ms") != expect_time_ms:
        raise CheckpointError(f"refusing {name}: it holds the checkpoint of time {header.get('time_ms')} "
                              f"under the name of {expect_time_ms} (renamed or copied)")
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


# -- writing and reading a checkpoint directory ------------------------------------------------------------
def has_rename(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` renames atomically (a local disk); elsewhere an object is written in one PUT."""
    return isinstance(fs, LocalFileSystem)


class CheckpointWriter:
    """Writes metadata checkpoints atomically and keeps the newest ``keep``.

    ``key`` signs them (``None``: the key in ``$DSTREAM_CHECKPOINT_KEY``, if any)."""

    def __init__(self, directory: str | Location, dstream_version: str, keep: int = 10,
                 key: bytes | str | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        self.location = Location.of(directory, storage_options)
        #: the directory's URL (no storage options, so no secrets)
        self.directory = self.location.url
        self.dstream_version = dstream_version
        self.keep = keep
        self._key = _key_bytes(key) if key is not None else checkpoint_key()
        try:
            self.fs, self.path = self.location.fs, self.location.path
            self.fs.makedirs(self.path, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - named by URL, secrets masked
            raise self.location.failure("creating the checkpoint directory", exc) from None

    @property
    def signed(self) -> bool:
        """Whether the checkpoints are signed (a key is set)."""
        return self._key is not None

    def write(self, cp: Checkpoint) -> str:
        """Write ``cp`` as ``checkpoint-<time>``; its URL."""
        if self._key is None:
            warn_unsigned(self.directory)
        data = encode(cp, self.dstream_version, self._key)
        name = f"checkpoint-{cp.time_ms}"
        final = posixpath.join(self.path, name)
        try:
            if has_rename(self.fs):
                tmp = posixpath.join(self.path, f".checkpoint-{cp.time_ms}.{uuid.uuid4().hex[:8]}.tmp")
                with self.fs.open(tmp, "wb") as f:
                    f.write(data)
                self.fs.mv(tmp, final)
            else:
                self.fs.pipe_file(final, data)  # one PUT: readers see all of it or nothing
        except Exception as exc:  # noqa: BLE001 - named by URL, secrets masked
            raise self.location.join(name).failure("writing", exc) from None
        self._prune()
        return self.location.join(name).url

    def _prune(self) -> None:
        for t in checkpoint_times(self.location)[self.keep:]:
            try:
                self.fs.rm(posixpath.join(self.path, f"checkpoint-{t}"))
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return f"CheckpointWriter({self.location!r}, keep={self.keep}, signed={self.signed})"


def checkpoint_times(where: str | Location | fsspec.AbstractFileSystem, path: str | None = None) -> list[int]:
    """Batch times of the checkpoint files in a directory (a URL or Location; or a filesystem and a path),
    newest first, from a fresh listing."""
    if isinstance(where, fsspec.AbstractFileSystem):
        where.invalidate_cache(path)
        try:
            entries = where.ls(path, detail=False)
        except FileNotFoundError:
            return []
    else:
        entries = Location.of(where).list()
    names = [posixpath.basename((e["name"] if isinstance(e, dict) else e).rstrip("/")) for e in entries]
    times = [int(m.group(1)) for m in map(_NAME.match, names) if m]
    return sorted(times, reverse=True)


def _why(exc: BaseException, url: str) -> str:
    """An error's message without the file's URL in front (it is named once, before it)."""
    text = str(exc)
    return text[len(url) + 2:] if text.startswith(f"{url}: ") else text


def read_latest(directory: str | Location, storage_options: Mapping[str, Any] | None = None,
                key: bytes | str | None = None, on_unreadable: str = "raise") -> Checkpoint | None:
    """The newest readable checkpoint under ``directory``; None when there is no checkpoint file.

    ``key`` verifies signatures (``None``: the key in ``$DSTREAM_CHECKPOINT_KEY``, if any). A damaged or
    truncated file (or one that is not a checkpoint) is skipped, with a warning naming it, when an older
    one can be read. When checkpoint files exist but none can be read, ``on_unreadable`` decides:
    ``"raise"`` (the default) raises ``UnreadableCheckpointError`` naming each file and why;
    ``"fresh"`` logs a warning naming them and returns None (the caller starts afresh; the files stay).
    An incompatible file raises CheckpointError, and one that fails verification
    ``CheckpointSignatureError`` (restoring an older one would silently roll the job back).
    """
    if on_unreadable not in ON_UNREADABLE:
        raise ValueError(f"on_unreadable must be one of {', '.join(map(repr, ON_UNREADABLE))}, "
                         f"got {on_unreadable!r}")
    location = Location.of(directory, storage_options)
    key = _key_bytes(key) if key is not None else checkpoint_key()
    damaged: list[tuple[str, str]] = []
    for t in checkpoint_times(location):
        file = location.join(f"checkpoint-{t}")
        try:
            data = file.read_bytes()  # a failure other than "gone" names the URL, secrets masked
        except FileNotFoundError:
            continue  # pruned since the listing
        try:
            cp = decode(data, file.url, key, expect_time_ms=t)
        except ValueError as exc:
            damaged.append((file.url, _why(exc, file.url)))
            continue
        for url, why in damaged:
            log.warning("skipping damaged checkpoint %s: %s", url, why)
        return cp
    if not damaged:
        return None
    error = UnreadableCheckpointError(location.url, damaged)
    if on_unreadable == "raise":
        raise error
    log.warning("none of the %d checkpoint files in %s can be read; starting afresh, as asked "
                "(onUnreadable=\"fresh\"), and leaving them there:\n%s", len(damaged), location.url,
                "\n".join(f"  {url}: {why}" for url, why in damaged))
    return None


def read_header(where: str | Location, storage_options: Mapping[str, Any] | None = None,
                key: bytes | str | None = None) -> dict[str, Any] | None:
    """The JSON header of a checkpoint file, or of the newest checkpoint in a directory (None when there is
    none), read without reading or unpickling the payload.

    It holds ``time_ms``, ``interval_ms``, ``pending_times``, ``failed_times`` and ``failures`` (the failed
    batches, each with its attempts and reason; absent in format 4), ``last_completed_ms``, ``inputs`` (per
    input stream, each recorded batch's records and metadata), ``format``, ``dstream``, ``length``,
    ``sha256`` and ``signature``; ``file`` (its URL) and ``verified`` are added. With a key (``None``: the
    key in ``$DSTREAM_CHECKPOINT_KEY``, if any), the header's signature is checked
    (``CheckpointSignatureError`` when it fails) and ``verified`` is True; the payload is not read, so its
    checksum is not checked.
    """
    location = Location.of(where, storage_options)
    key = _key_bytes(key) if key is not None else checkpoint_key()
    if _NAME.match(posixpath.basename(location.url.rstrip("/"))):
        files = [location]
    else:
        files = [location.join(f"checkpoint-{t}") for t in checkpoint_times(location)]
    for file in files:
        try:
            fs, path = file.fs, file.path
            prefix = fs.cat_file(path, start=0, end=len(MAGIC) + 4)
            n = int.from_bytes(prefix[len(MAGIC):], "big") if len(prefix) == len(MAGIC) + 4 else 0
            header, _ = _parse_header(prefix + fs.cat_file(path, start=len(prefix), end=len(prefix) + n),
                                      file.url)
        except FileNotFoundError:
            continue
        except ValueError as exc:
            if len(files) == 1:
                raise
            log.warning("skipping damaged checkpoint %s: %s", file.url, exc)
            continue
        verified = False
        if key is not None and header.get("signature") is not None:
            _check_signature(header, file.url, key)
            verified = True
        return {**header, "file": file.url, "verified": verified}
    return None
