"""Input streams: queueStream, textFileStream, binaryRecordsStream, socketTextStream.

An input stream's ``_compute(t)`` runs on the job generator when batch t falls due, so each batch takes
its input exactly once: the queue items, the new files, the socket lines that arrived in (t - interval, t].
"""
from __future__ import annotations

import logging
import posixpath
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

import fsspec

from dstream.driver.jobs import records_wanted
from dstream.driver.times import batch_name
from dstream.dstream import DStream
from dstream.executors.threads import ThreadExecutor
from dstream.io import BinaryRecordsRDD, TextFileRDD, url_to_fs
from dstream.rdd import RDD
from dstream.wal import WriteAheadLog, WriteAheadLogError, wal_dir

if TYPE_CHECKING:
    from dstream.graph import StreamRuntime

log = logging.getLogger(__name__)


class InputDStream(DStream):
    """A stream with no parents; one RDD per batch interval.

    Its input stream id (``StreamInputInfo.inputStreamId``) is its position among the context's inputs.
    """

    def __init__(self, ssc: "StreamRuntime", name: str) -> None:
        super().__init__(ssc, [], ssc.interval_ms, name=name)
        #: records taken per batch time, for BatchInfo.numRecords
        self.records_per_batch: dict[int, int] = {}
        ssc.graph.add_input(self)

    def start(self) -> None:
        """Called when the context starts."""

    def restart(self) -> None:
        """Called when a context restored from a checkpoint starts."""
        self.start()

    def stop(self) -> None:
        """Called when the context stops."""

    def input_metadata(self, time_ms: int) -> dict[str, Any]:
        """What listeners see as ``StreamInputInfo.metadata()`` for batch ``time_ms``."""
        return {}

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        limit = time_ms - (self.remember_ms or self.slide_ms)
        for t in [t for t in self.records_per_batch if t <= limit]:
            del self.records_per_batch[t]


class QueueInputDStream(InputDStream):
    """Batches from a queue of RDDs (or lists): one per batch, or all at once; ``default`` when empty."""

    def __init__(self, ssc: "StreamRuntime", items: Iterable[Any], one_at_a_time: bool, default: Any) -> None:
        super().__init__(ssc, "queueStream")
        ctx = ssc.sparkContext
        #: records of the queued RDDs made from lists, by RDD id (an RDD given as such is not counted)
        self._sizes: dict[int, int] = {}
        self.queue: deque[RDD | list] = deque(self._take(ctx, x) for x in items)
        self.one_at_a_time = one_at_a_time
        self.default = None if default is None else self._take(ctx, default)
        #: the item each remembered batch took (recorded input, replayed after a restart)
        self.batch_items: dict[int, RDD | list] = {}

    def __getstate__(self) -> dict:
        # A checkpoint keeps queued and taken items as records (Spark cannot checkpoint queueStream).
        # The live stream keeps its RDDs; each is collected once, then remembered.
        state = super().__getstate__()
        state["queue"] = deque(self._records(x) for x in self.queue)
        state["batch_items"] = {t: self._records(x) for t, x in self.batch_items.items()}
        state["default"] = None if self.default is None else self._records(self.default)
        state["_collected"] = {}
        state["_sizes"] = {}  # by RDD id; a checkpoint holds lists, whose sizes are their lengths
        return state

    def _records(self, item: RDD | list) -> list:
        if not isinstance(item, RDD):
            return item
        cache = self.__dict__.setdefault("_collected", {})
        if item.id() not in cache:
            cache[item.id()] = item.collect()
        return cache[item.id()]

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        limit = time_ms - (self.remember_ms or self.slide_ms)
        for t in [t for t in self.batch_items if t <= limit]:
            del self.batch_items[t]
        live = {x.id() for x in [*self.queue, *self.batch_items.values(), self.default] if isinstance(x, RDD)}
        cache = self.__dict__.get("_collected", {})
        for rdd_id in [i for i in cache if i not in live]:
            del cache[rdd_id]

    @staticmethod
    def _to_rdd(ctx: Any, item: Any) -> RDD:
        return item if isinstance(item, RDD) else ctx.parallelize(list(item))

    def _take(self, ctx: Any, item: Any) -> RDD:
        """``item`` as an RDD, remembering its number of records when it was a list."""
        if isinstance(item, RDD):
            return item
        records = list(item)
        rdd = ctx.parallelize(records)
        self.__dict__.setdefault("_sizes", {})[rdd.id()] = len(records)
        return rdd

    def _size(self, item: RDD | list, forget: bool = False) -> int:
        """Records of a queue item: known for lists, 0 for RDDs given as such (Spark counts none)."""
        if not isinstance(item, RDD):
            return len(item)
        sizes = self.__dict__.get("_sizes", {})
        return (sizes.pop(item.id(), 0) if forget else sizes.get(item.id(), 0))

    def _compute(self, time_ms: int) -> RDD | None:
        ctx = self._ssc.sparkContext
        if time_ms in self.batch_items:
            item = self.batch_items[time_ms]
            if not isinstance(item, RDD):  # replayed after a restart: its records were checkpointed
                self.records_per_batch[time_ms] = len(item)
            return self._to_rdd(ctx, item)
        if self.queue:
            if self.one_at_a_time:
                item = self.queue.popleft()
                records = self._size(item, forget=True)
                rdd = self._to_rdd(ctx, item)
            else:
                records = sum(self._size(x, forget=True) for x in self.queue)
                rdd = ctx.union([self._to_rdd(ctx, x) for x in self.queue])
                self.queue.clear()
            self.batch_items[time_ms] = rdd
        else:
            if self.default is not None and not isinstance(self.default, RDD):
                self.default = self._take(ctx, self.default)  # a restored list: parallelised once
            rdd = self.default if self.default is not None else ctx.emptyRDD()
            records = 0 if self.default is None else self._size(self.default)
        self.records_per_batch[time_ms] = records
        return rdd


class FileInputDStream(InputDStream):
    """New files in a directory (any fsspec URL); a file counts once, in the batch in which it appears.

    Files must appear atomically (written elsewhere, then renamed in). Names starting with ``.`` or
    ``_`` and ending in ``.tmp`` or ``._COPYING_`` are ignored. With ``newFilesOnly`` (the default),
    files already there when the stream starts are ignored, as in Spark.

    ``memory://`` directories work only with the thread executor (``threads[N]``): the files live in
    the driver process's memory, which executor processes cannot see.
    """

    def __init__(self, ssc: "StreamRuntime", directory: str, kind: str, record_length: int = 0,
                 new_files_only: bool = True) -> None:
        if not isinstance(directory, str) or not directory:
            raise ValueError(f"{kind}: directory must be a path or URL string, got {directory!r}")
        if directory.startswith("memory://"):
            if not isinstance(ssc.sparkContext.executor, ThreadExecutor):
                raise ValueError(f"{kind}({directory}): memory:// directories need the thread executor "
                                 f"(Context('threads[N]')); executor processes cannot see the driver's memory")
        super().__init__(ssc, f"{kind}({directory})")
        self.directory = directory
        self.kind = kind
        self.record_length = record_length
        self.new_files_only = new_files_only
        #: files already taken
        self.seen: set[str] = set()
        #: the files each remembered batch took (recorded input, replayed after a restart)
        self.batch_files: dict[int, list[str]] = {}
        #: the newest batch time that listed the directory
        self.last_listed_ms: int | None = None

    def __getstate__(self) -> dict:
        return super().__getstate__()

    def _list(self) -> dict[str, int]:
        """The directory's visible files (URLs in the directory's form) and their sizes."""
        fs, path = url_to_fs(self.directory)
        try:
            entries = fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        protocol = "://" in self.directory
        out = {}
        for e in entries:
            name = posixpath.basename(e["name"].rstrip("/"))
            if e.get("type") == "directory" or name.startswith((".", "_")) or name.endswith((".tmp", "._COPYING_")):
                continue
            out[fs.unstrip_protocol(e["name"]) if protocol else e["name"]] = e.get("size") or 0
        return dict(sorted(out.items()))

    def start(self) -> None:
        if self.new_files_only:
            self.seen = set(self._list())

    def restart(self) -> None:
        """After a restart the files taken before are known from the checkpoint: none is taken twice,
        and files that arrived while the driver was down are new."""

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        limit = time_ms - (self.remember_ms or self.slide_ms)
        for t in [t for t in self.batch_files if t <= limit]:
            del self.batch_files[t]

    def input_metadata(self, time_ms: int) -> dict[str, Any]:
        """The batch's new files, as Spark's file streams report them."""
        files = list(self.batch_files.get(time_ms, []))
        return {"files": files, "Description": "\n".join(files)}

    def _compute(self, time_ms: int) -> RDD | None:
        ctx = self._ssc.sparkContext
        if time_ms in self.batch_files:
            # a batch replayed after a restart takes exactly the files it took before
            new = self.batch_files[time_ms]
            listed = {f: 0 for f in new}
        elif self.last_listed_ms is not None and time_ms <= self.last_listed_ms:
            log.warning("%s: the input of %s is no longer recorded; it is empty", self.name, batch_name(time_ms))
            return ctx.emptyRDD()
        else:
            listed = self._list()
            new = [f for f in listed if f not in self.seen]
            # Forget files that are gone so the set stays as small as the directory.
            self.seen = self.seen.intersection(listed) | set(new)
            self.batch_files[time_ms] = new
            self.last_listed_ms = time_ms
        if self.kind == "binaryRecordsStream":
            self.records_per_batch[time_ms] = sum(listed[f] // self.record_length for f in new)
        elif records_wanted(self._ssc.listener_bus):  # counting reads the files once more, on the driver
            self.records_per_batch[time_ms] = sum(_count_lines(f) for f in new)
        if not new:
            return ctx.emptyRDD()
        if self.kind == "binaryRecordsStream":
            return BinaryRecordsRDD(ctx, new, self.record_length)
        return TextFileRDD(ctx, new, 1, "utf-8")


def _count_lines(url: str) -> int:
    """Lines of a file as ``io.split_lines`` cuts them (\\n, \\r\\n or \\r), counted on the raw bytes.

    For BatchInfo.numRecords only: a file that cannot be read counts 0 (its task reports the error).
    """
    n, last = 0, b""
    try:
        with fsspec.open(url, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
                if last == b"\r" and chunk[:1] == b"\n":
                    n -= 1  # a \r\n split across two chunks
                last = chunk[-1:]
    except Exception:  # noqa: BLE001 - informational only; never fail the batch here
        return 0
    return n + (1 if last not in (b"", b"\n", b"\r") else 0)


class SocketInputDStream(InputDStream):
    """Lines from a TCP server; lines arriving in (t - interval, t] form batch t.

    A receiver thread connects (and reconnects after errors, every ``retry`` seconds), and stamps each
    line with the streaming clock when it arrives.

    With checkpointing, each line is first written to a write-ahead log under
    ``<checkpoint>/wal/<stream id>/``, then buffered; each batch records the range of log lines it took.
    After a restart a replayed batch takes exactly the lines it took before, and lines received but not
    yet in a recorded batch go into the first batches after the restart.
    """

    #: with checkpointing: a write-ahead log segment is closed once it holds this many lines or bytes
    wal_segment_lines = 10_000
    wal_segment_bytes = 16 << 20
    #: a segment is deleted once the batches remembered at the last ``wal_keep`` cleanups no longer need
    #: it (older metadata checkpoints, read when a newer one is damaged, may need what the newest does not)
    wal_keep = 10

    def __init__(self, ssc: "StreamRuntime", host: str, port: int, retry: float = 0.5) -> None:
        super().__init__(ssc, f"socketTextStream({host}:{port})")
        self.host, self.port, self.retry = host, port, retry
        #: the write-ahead log's directory name: the stream's position among the context's inputs
        self.stream_id = f"input-{ssc.graph.inputs.index(self)}"
        #: with the write-ahead log: the log lines [first, end) each remembered batch took
        self.batch_wal: dict[int, tuple[int, int]] = {}
        #: the first log line not yet taken by a batch (the buffered lines follow it, in order)
        self.wal_taken = 0
        #: the oldest log line needed at each of the last ``wal_keep`` cleanups
        self.wal_needed: list[int] = []
        self._last_batch_ms = -1
        self._init_receiver()

    def _init_receiver(self) -> None:
        self._lines: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wal: WriteAheadLog | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for k in ("_lines", "_lock", "_stop", "_thread", "_wal"):
            state[k] = None
        return state

    def _attach(self, ssc: "StreamRuntime") -> None:
        super()._attach(ssc)
        self._init_receiver()

    def _open_wal(self, fresh: bool) -> WriteAheadLog | None:
        directory = self._ssc.checkpoint_dir
        if directory is None:
            return None
        return WriteAheadLog(wal_dir(directory, self.stream_id), self.wal_segment_lines,
                              self.wal_segment_bytes, start=self.wal_taken, fresh=fresh)

    def start(self) -> None:
        self._wal = self._open_wal(fresh=True)
        self._start_receiver()

    def restart(self) -> None:
        """Put the logged lines no recorded batch took back into the buffer, then receive again."""
        self._wal = self._open_wal(fresh=False)
        if self._wal is not None:
            lines = self._wal.read(self.wal_taken, self._wal.next_line)
            if lines:
                log.info("%s: %d lines from the write-ahead log go into the next batch", self.name, len(lines))
            self._lines.extend((self._last_batch_ms + 1, ln) for ln in lines)
        self._start_receiver()

    def _start_receiver(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._receive, name=f"dstream-receiver-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._wal is not None:
            self._wal.close()

    def buffered(self) -> int:
        """Lines received and not yet taken by a batch."""
        with self._lock:
            return len(self._lines)

    def _deliver(self, lines: list[str]) -> None:
        """Log the lines (with checkpointing), then buffer them for the next batch to be cut."""
        if self._wal is not None:
            try:
                self._wal.append(lines)
            except Exception as exc:  # noqa: BLE001
                raise WriteAheadLogError(f"{self.name}: writing the write-ahead log in {self._wal.url} failed, "
                                         f"so the receiver stopped: {exc}") from exc
        with self._lock:
            # A line never joins a batch that has already been cut.
            t = max(self._ssc.clock.now_ms(), self._last_batch_ms + 1)
            self._lines.extend((t, ln) for ln in lines)

    def _receive(self) -> None:
        try:
            self._receive_until_stopped()
        except WriteAheadLogError as exc:
            log.error("%s", exc)
            self._ssc.report_error(exc)

    def _receive_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                    sock.settimeout(0.2)
                    buf = b""
                    while not self._stop.is_set():
                        try:
                            chunk = sock.recv(65536)
                        except socket.timeout:
                            continue
                        if not chunk:
                            break
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        if lines:
                            self._deliver([ln.rstrip(b"\r").decode("utf-8", "replace") for ln in lines])
                    if buf:
                        self._deliver([buf.decode("utf-8", "replace")])
            except OSError as exc:
                log.debug("socketTextStream %s:%s: %s", self.host, self.port, exc)
            self._stop.wait(self.retry)

    def _compute(self, time_ms: int) -> RDD | None:
        ctx = self._ssc.sparkContext
        if time_ms in self.batch_wal:
            # a batch replayed after a restart takes exactly the lines it took before
            first, end = self.batch_wal[time_ms]
            taken = self._wal.read(first, end) if self._wal is not None else []
            if len(taken) != end - first:
                raise WriteAheadLogError(f"{self.name}: the write-ahead log no longer holds lines {first} to "
                                         f"{end - 1}, taken by {batch_name(time_ms)}")
        elif self._wal is not None and time_ms <= self._last_batch_ms:
            log.warning("%s: the input of %s is no longer recorded; it is empty", self.name, batch_name(time_ms))
            return ctx.emptyRDD()
        else:
            with self._lock:
                taken = []
                while self._lines and self._lines[0][0] <= time_ms:
                    taken.append(self._lines.popleft()[1])
                self._last_batch_ms = max(self._last_batch_ms, time_ms)
            if self._wal is not None:
                self.batch_wal[time_ms] = (self.wal_taken, self.wal_taken + len(taken))
                self.wal_taken += len(taken)
        self.records_per_batch[time_ms] = len(taken)
        if not taken:
            return ctx.emptyRDD()
        return ctx.parallelize(taken, min(len(taken), ctx.defaultParallelism))

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        limit = time_ms - (self.remember_ms or self.slide_ms)
        for t in [t for t in self.batch_wal if t <= limit]:
            del self.batch_wal[t]
        if self._wal is not None:
            needed = min([first for first, _ in self.batch_wal.values()] + [self.wal_taken])
            self.wal_needed = (self.wal_needed + [needed])[-self.wal_keep:]
            self._wal.delete_before(min(self.wal_needed))
