"""Reading and writing files on any fsspec URL: text inputs (``TextFileRDD``) and RDD data checkpoints
(Arrow IPC part files published by a ``_SUCCESS`` manifest, ``CheckpointRDD``; see ``dstream.driver.commit``).
The io layer: it builds on the core (``rdd``, ``records``)."""
from __future__ import annotations

import functools
import posixpath
import uuid
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import fsspec
import pyarrow as pa
import pyarrow.ipc as ipc

from dstream.driver.checkpoint import CheckpointError, CheckpointSignatureError
from dstream.driver.commit import (MARKER, Committer, Manifest, ManifestError, ManifestSignatureError, Part, Signer,
                                   committer_for, read_manifest, verify_parts, write_once)
from dstream.driver.storage import Location
from dstream.executors.base import TaskContext
from dstream.rdd import RDD
from dstream.records import Partition, as_table

if TYPE_CHECKING:
    from dstream.context import Context


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)


def expand_paths(name: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Files named by ``name``: comma-separated URLs, each a file, a directory (its files) or a glob,
    opened with ``storage_options``.

    As Hadoop's input formats do, names starting with ``_`` or ``.`` (``_SUCCESS``, ``_temporary/``,
    ``.crc``) are skipped, and a glob that matches nothing is an error naming it. Listings are fresh
    (fsspec's cached ones are dropped first); any failure names the URL, never a secret of the options.
    """
    out: list[str] = []
    for url in name.split(","):
        loc = Location(url, storage_options)
        try:
            out += _expand(loc)
        except Exception as exc:  # noqa: BLE001 - any failure, named
            if isinstance(exc, FileNotFoundError) and url in str(exc):
                raise  # ours: already names it
            raise loc.failure("listing", exc) from None
    return out


def _expand(loc: Location) -> list[str]:
    """The files named by one URL (see ``expand_paths``)."""
    url, fs, path = loc.url, loc.fs, loc.path
    fs.invalidate_cache()  # s3fs and others answer exists/isdir/glob from cached listings
    protocol = url.split("://")[0] + "://" if "://" in url else ""
    if any(c in path for c in "*?["):
        matches = [p for p in sorted(fs.glob(path)) if not _hidden(posixpath.basename(p.rstrip("/")))]
        if not matches:
            raise FileNotFoundError(f"textFile: the pattern {url} matches no files")
    elif fs.exists(path):
        matches = [path]
    else:
        raise FileNotFoundError(f"textFile: no such file or directory: {url}")
    out: list[str] = []
    for match in matches:
        found = _files_under(fs, match) if fs.isdir(match) else [match]
        out += [_with_protocol(fs, protocol, p) for p in found]
    return out


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def _files_under(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """The files below ``directory``, leaving out hidden names and everything under hidden directories."""
    root = directory.rstrip("/")
    return sorted(p for p in fs.find(root)
                  if not any(_hidden(part) for part in posixpath.relpath(p, root).split("/")))


def _with_protocol(fs: fsspec.AbstractFileSystem, protocol: str, path: str) -> str:
    return fs.unstrip_protocol(path) if protocol else path


def split_lines(text: str) -> list[str]:
    """Lines as Hadoop's text input reads them: split on \\n, \\r\\n or \\r, no trailing empty line."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_text(url: "str | Location", encoding: str = "utf-8",
              storage_options: Mapping[str, Any] | None = None) -> str:
    """A file's text; a file that cannot be read raises an OSError naming its URL, one that does not
    decode a ValueError naming the file and the byte."""
    loc = Location.of(url, storage_options)
    data = loc.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"cannot decode the file {loc.url} as {encoding}: byte {exc.start} "
                         f"({data[exc.start:exc.start + 1]!r}): {exc.reason}") from None


def read_lines_table(url: "str | Location", encoding: str = "utf-8", chunk: int = 0,
                     chunks: int = 1) -> pa.Table:
    """The lines of a file (of its ``chunk``-th of ``chunks`` parts) as a ``value`` column."""
    lines = split_lines(read_text(url, encoding))
    if chunks > 1:
        n = len(lines)
        lines = lines[chunk * n // chunks:(chunk + 1) * n // chunks]
    return pa.table({"value": pa.array(lines, pa.string())})


class TextFileRDD(RDD):
    """The lines of text files: each file is read by one task (or ``chunks`` tasks for few files).

    ``paths`` are URLs (opened with ``storage_options``) or Locations; each task carries the storage
    options of its file, so executors open the same URLs the driver listed."""

    def __init__(self, ctx: "Context", paths: "Sequence[str | Location]", min_partitions: int, encoding: str,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        files = [Location.of(p, storage_options) for p in paths]
        chunks = max(1, -(-min_partitions // max(len(files), 1)))
        #: the files by URL, with their storage options
        self.files = {f.url: f for f in files}
        self.splits = [(f.url, c, chunks) for f in files for c in range(chunks)]
        self.encoding = encoding
        super().__init__(ctx, [], len(self.splits))

    def _compute(self, split: int, tc: TaskContext) -> pa.Table:
        url, chunk, chunks = self.splits[split]
        return read_lines_table(self.files[url], self.encoding, chunk, chunks)

    def _describe(self) -> str:
        return f"TextFileRDD ({len({s[0] for s in self.splits})} files)"


def arrow_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as the bytes of an Arrow IPC file."""
    out = pa.BufferOutputStream()
    with ipc.new_file(out, table.schema) as writer:
        writer.write_table(table)
    return out.getvalue()


def write_arrow_file(url: "str | Location", table: pa.Table) -> int:
    """Write ``table`` as an Arrow IPC file no reader sees half-written (a temporary name and a rename on
    local disk, one PUT on object stores); its size in bytes."""
    return write_once(Location.of(url), arrow_bytes(table))


def read_arrow_file(url: "str | Location", part: Part | None = None) -> pa.Table:
    """An Arrow IPC file's table; with ``part`` (its manifest entry), its size and SHA-256 are checked
    before anything is decoded."""
    where = Location.of(url)
    data = where.read_bytes()
    if part is not None:
        part.check(data, where.url)
    return ipc.open_file(pa.BufferReader(data)).read_all()


class BinaryRecordsRDD(RDD):
    """Fixed-length byte records of files, one partition per file (URLs opened with ``storage_options``,
    or Locations)."""

    def __init__(self, ctx: "Context", paths: "Sequence[str | Location]", record_length: int,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        #: the files, with their storage options
        self.files = [Location.of(p, storage_options) for p in paths]
        super().__init__(ctx, [], len(self.files))
        self.paths = [f.url for f in self.files]
        self.record_length = record_length

    def _compute(self, split: int, tc: TaskContext) -> pa.Table:
        loc = self.files[split]
        data = loc.read_bytes()
        n = self.record_length
        if len(data) % n:
            raise ValueError(f"the file {loc.url} has {len(data)} bytes, not a multiple of recordLength={n}")
        return pa.table({"value": pa.array([data[i:i + n] for i in range(0, len(data), n)], pa.binary())})


def snapshot_signer(ctx: "Context") -> Signer | None:
    """The signer of data snapshot manifests: the Context's ``checkpoint_signer`` (an ``HmacSigner`` under
    the checkpoint key, or any object with ``sign(payload) -> str`` and ``verify(payload, signature) ->
    bool``); None without a key: manifests are then written and read unsigned."""
    return getattr(ctx, "checkpoint_signer", None)


def _snapshot_location(ctx: "Context", directory: "str | Location") -> Location:
    """``directory`` with storage options: its own, or those of the Context's checkpoint location when the
    directory lies below it (a directory recorded in a checkpoint is a plain URL)."""
    if isinstance(directory, Location):
        return directory
    base = ctx.checkpoint_dir
    if isinstance(base, Location) and directory.startswith(base.url.rstrip("/") + "/"):
        return Location(directory, base.storage_options)
    return Location(directory)


def _verified_snapshot(where: Location, paths: list[str], signer: Signer | None) -> Manifest:
    """The manifest of the snapshot ``where``, checked against the recorded ``paths`` and the parts there."""
    try:
        manifest = read_manifest(where, signer)
        if manifest is None:
            raise ManifestError(f"{where.url}: {MARKER} is an empty marker, not a snapshot manifest")
        recorded = [posixpath.basename(p) for p in paths]
        listed = [p.name for p in manifest.parts]
        if len(recorded) != len(listed):
            raise ManifestError(f"{where.url}: the checkpoint records {len(recorded)} parts, "
                                f"the manifest lists {len(listed)}")
        for path, name, part in zip(paths, recorded, listed):
            if name != part or posixpath.dirname(path) != where.url.rstrip("/"):
                raise ManifestError(f"{where.url}: the checkpoint records the part {path}, "
                                    f"the manifest lists {part}")
        verify_parts(where, manifest)
        return manifest
    except ManifestSignatureError as exc:
        raise CheckpointSignatureError(f"refusing the data snapshot: {exc}") from None
    except ManifestError as exc:
        raise CheckpointError(f"cannot use the data snapshot: {exc}") from None


class CheckpointRDD(RDD):
    """Partitions read back from a committed data snapshot (Arrow IPC part files, any fsspec URL).

    Only a snapshot whose ``_SUCCESS`` manifest is there, matches the recorded ``paths`` and lists parts
    present with their sizes is used (and a signed one only when ``signer`` verifies it); otherwise the
    constructor raises CheckpointError naming the directory, so a restore never reads a snapshot that was
    half-written or changed. Each part's SHA-256 is checked when it is read.
    """

    def __init__(self, ctx: "Context", directory: "str | Location", paths: list[str],
                 signer: Signer | None = None) -> None:
        where = _snapshot_location(ctx, directory)
        manifest = _verified_snapshot(where, paths, signer if signer is not None else snapshot_signer(ctx))
        super().__init__(ctx, [], len(paths))
        #: the snapshot directory (a URL) and its part files, as a checkpoint records them
        self.directory = where.url
        self.paths = list(paths)
        #: the directory with its storage options (they travel to the executors with the tasks)
        self.location = where
        #: each part's manifest entry (size and SHA-256), in split order
        self.parts = list(manifest.parts)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        return read_arrow_file(Location(self.paths[split], self.location.storage_options), self.parts[split])

    def is_available(self) -> bool:
        return True


def _write_partition(rdd: RDD, where: Location, committer: Committer, attempt: str, split: int,
                     tc: TaskContext) -> Part:
    data = arrow_bytes(as_table(rdd._iterator(split, tc)))
    return committer.write_part(where, attempt, f"part-{split:05d}", ".arrow", data)


def write_rdd_checkpoint(rdd: RDD, checkpoint_dir: "str | Location", signer: Signer | None = None) -> CheckpointRDD:
    """Write every partition of ``rdd`` in parallel from the executors into a new snapshot directory under
    ``checkpoint_dir``, publish it with its manifest (signed by ``signer``, by default the Context's
    ``snapshot_signer``), and return the RDD that reads it back.

    Local disk: parts under ``_temporary/<attempt>``, renamed into place. Object stores: each part written
    once under a final unique name. Either way ``_SUCCESS`` (the manifest) comes last."""
    where = Location.of(checkpoint_dir).join(f"rdd-{rdd.id()}-{uuid.uuid4().hex[:8]}")
    committer = committer_for(where)
    attempt = uuid.uuid4().hex[:12]
    parts = rdd.ctx.run_job(rdd, functools.partial(_write_partition, rdd, where, committer, attempt),
                            description=f"checkpoint {rdd!r}")
    signer = signer if signer is not None else snapshot_signer(rdd.ctx)
    committer.commit(where, attempt, parts, signer)
    return CheckpointRDD(rdd.ctx, where, [where.join(p.name).url for p in parts], signer)
