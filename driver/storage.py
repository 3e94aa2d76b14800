"""Where files live: an fsspec URL together with its storage options (``Location``).

Every place that reads or writes files (checkpoints, sources, sinks, the write-ahead log) takes a Location,
so that ``storage_options`` given once reach every filesystem call, on the driver and, pickled with a task,
on the executors. Secrets in the options (keys, tokens, passwords) never show: ``repr`` masks them, and a
Location pickled into a checkpoint leaves them out (after a restart they come from the environment or
fsspec's configuration, or from the options passed again).
"""
from __future__ import annotations

import json
import posixpath
import re
from datetime import datetime, timezone
from typing import Any, Mapping

import fsspec

from dstream.executors import serialization

#: option names that hold secrets (s3fs ``key``/``secret``/``token``, botocore ``aws_secret_access_key``,
#: ``password``, Azure ``account_key``/``sas_token``, GCS ``credentials``)
SECRET_NAME = re.compile(r"(^|_)(key|secret|token|password|passwd|credentials?|sas)(_|$)", re.IGNORECASE)
MASK = "***"


#: words of option names that hold secrets, also in camelCase (``SSECustomerKey``, ``apiKey``)
SECRET_WORDS = {"key", "secret", "token", "password", "passwd", "credential", "credentials", "sas"}
#: whole option names that hold secrets without saying so (an Azure connection string holds its key)
SECRET_NAMES = {"connection_string", "conn_str", "connectionstring"}


def is_secret(name: str) -> bool:
    """Whether an option of this name holds a secret: a word of it (split at ``_``, ``-`` and camelCase) is
    one of ``SECRET_WORDS``, or it is one of ``SECRET_NAMES``."""
    if SECRET_NAME.search(name) or name.lower() in SECRET_NAMES:
        return True
    return any(w.lower() in SECRET_WORDS for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name))


def masked(options: Any) -> Any:
    """``options`` with every secret value replaced by ``***`` (nested dicts included)."""
    if isinstance(options, Mapping):
        return {k: MASK if is_secret(str(k)) else masked(v) for k, v in options.items()}
    return options


def without_secrets(options: Any) -> Any:
    """``options`` without its secret entries (nested dicts included)."""
    if isinstance(options, Mapping):
        return {k: without_secrets(v) for k, v in options.items() if not is_secret(str(k))}
    return options


def secret_values(options: Any, secret: bool = False) -> list[str]:
    """The secret values in ``options`` (everything under a secret name, nested dicts included), as text;
    values shorter than 4 characters are left out (too short to look for in a message)."""
    if isinstance(options, Mapping):
        return [v for k, x in options.items() for v in secret_values(x, secret or is_secret(str(k)))]
    if isinstance(options, (list, tuple)):
        return [v for x in options for v in secret_values(x, secret)]
    return [str(options)] if secret and options is not None and len(str(options)) >= 4 else []


class StorageError(OSError):
    """Listing, reading or writing a Location failed; the message names its URL, never its secrets."""


#: listing fields that change when a file is replaced: the modification time (local ``mtime``, S3
#: ``LastModified``, Azure ``last_modified``, GCS ``updated``; memory:// has only ``created``) ...
MODIFIED_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "created")
#: ... and the content tag (S3/Azure ``ETag``, GCS ``generation``/``md5Hash``), where the store has one
CONTENT_FIELDS = ("ETag", "etag", "generation", "md5Hash", "VersionId", "version_id")
#: the builtin error types a Location's failure keeps (callers may catch them); others become StorageError
KEPT_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
               ConnectionError, TimeoutError)


def file_version(entry: Mapping[str, Any]) -> str:
    """A file's version as an ``ls(detail=True)`` entry gives it: size, modification time and content tag
    (the ones the filesystem has). Two listings of an unchanged file give the same version; a file
    replaced under the same name gives another (on S3, the ETag tells even within the same second)."""
    modified = next((entry[k] for k in MODIFIED_FIELDS if entry.get(k) is not None), None)
    content = next((entry[k] for k in CONTENT_FIELDS if entry.get(k)), None)
    return f"{entry.get('size')}|{modified}|{content}"


def modified_time(entry: Mapping[str, Any]) -> float | None:
    """A file's modification time in seconds since the epoch, as an ``ls(detail=True)`` entry gives it (a
    number, a ``datetime`` or an ISO string, by filesystem); None when the entry has none."""
    value = next((entry[k] for k in MODIFIED_FIELDS if entry.get(k) is not None), None)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)).timestamp()
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class Location:
    """An fsspec URL plus the storage options to open it with; the filesystem is opened on first use."""

    __slots__ = ("url", "storage_options", "_fs", "_path")

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"a location must be a path or URL string, got {url!r}")
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise TypeError(f"storage_options of {url} must be a dict, got {type(storage_options).__name__}")
        #: the URL (or local path) as given
        self.url = url
        #: keyword arguments for the fsspec filesystem (``endpoint_url``, ``key``, ``anon``, ...)
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self._fs: fsspec.AbstractFileSystem | None = None
        self._path: str | None = None

    @classmethod
    def of(cls, where: "str | Location", storage_options: Mapping[str, Any] | None = None) -> "Location":
        """``where`` as a Location: a Location as it is (options given here are added), or a URL."""
        if isinstance(where, Location):
            if not storage_options:
                return where
            return cls(where.url, {**where.storage_options, **storage_options})
        return cls(where, storage_options)

    def _open(self) -> None:
        self._fs, self._path = fsspec.core.url_to_fs(self.url, **self.storage_options)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The filesystem (fsspec caches one per protocol and options)."""
        if self._fs is None:
            self._open()
        return self._fs

    @property
    def path(self) -> str:
        """The path within ``fs``."""
        if self._path is None:
            self._open()
        return self._path

    @property
    def protocol(self) -> str:
        """``s3``, ``memory``, ``file``, ..."""
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    def join(self, *parts: str) -> "Location":
        """A location below this one, with the same options."""
        return Location(posixpath.join(self.url.rstrip("/"), *parts), self.storage_options)

    def at(self, path: str) -> "Location":
        """The location of ``path``, a path within ``fs`` as its listings name it, with the same options
        (and URL form: a protocol if this location's URL has one)."""
        fs = self.fs
        loc = Location(fs.unstrip_protocol(path) if "://" in self.url else path, self.storage_options)
        loc._fs, loc._path = fs, path
        return loc

    def list(self) -> list[dict[str, Any]]:
        """The entries directly below (``ls(detail=True)``), listed afresh: fsspec's cached listing is
        dropped first, so objects that appeared since the last listing are seen.

        ``[]`` when the directory does not exist (yet); FileNotFoundError when its bucket does not (on
        object stores); any other failure (permissions, network) as an OSError naming the URL."""
        try:
            fs, path = self.fs, self.path
            fs.invalidate_cache(path)
            return fs.ls(path, detail=True)
        except FileNotFoundError as exc:
            bucket = self._bucket()
            if bucket is None or (bucket != path.strip("/") and self._exists(bucket)):
                return []
            raise FileNotFoundError(f"listing {self.url} failed: the bucket {self.protocol}://{bucket} does "
                                    f"not exist or cannot be reached ({self.scrub(str(exc))})") from None
        except Exception as exc:  # noqa: BLE001 - any failure, named
            raise self.failure("listing", exc) from None

    def read_bytes(self) -> bytes:
        """The whole file, read afresh (no cached listing or size is trusted); a failure names the URL."""
        try:
            return self.fs.cat_file(self.path)
        except Exception as exc:  # noqa: BLE001 - any failure, named
            raise self.failure("reading", exc) from None

    def open(self, mode: str = "rb") -> Any:
        """The file opened with fsspec (a context manager)."""
        return self.fs.open(self.path, mode)

    def _bucket(self) -> str | None:
        """The bucket (container) holding this location on an object store; None on filesystems with a
        root directory (local disk, memory://), where a missing directory is just not made yet."""
        path = self.path
        if getattr(self.fs, "root_marker", "/") or path.startswith("/"):
            return None
        return path.split("/", 1)[0] or None

    def _exists(self, path: str) -> bool:
        try:
            return bool(self.fs.exists(path))
        except Exception:  # noqa: BLE001 - cannot be reached: as good as missing
            return False

    def failure(self, action: str, exc: BaseException) -> OSError:
        """``exc`` as an OSError whose message names this URL and masks its secrets: ``"{action} {url}
        failed: ..."``, of the same builtin type (FileNotFoundError, PermissionError, ...) or StorageError."""
        kind = next((t for t in KEPT_ERRORS if isinstance(exc, t)), StorageError)
        return kind(f"{action} {self.url} failed: {self.scrub(f'{type(exc).__name__}: {exc}')}")

    def scrub(self, text: str) -> str:
        """``text`` with the secret values of this location's options masked (for libraries' messages)."""
        for value in sorted(set(secret_values(self.storage_options)), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        options = f", storage_options={masked(self.storage_options)!r}" if self.storage_options else ""
        return f"Location({self.url!r}{options})"

    def _key(self) -> tuple[str, str]:
        return self.url, json.dumps(self.storage_options, sort_keys=True, default=repr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple:
        options = self.storage_options
        if serialization.pickling_for_checkpoint_active():
            options = without_secrets(options)
        return Location, (self.url, options)
