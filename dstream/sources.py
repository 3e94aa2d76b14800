"""Input streams: queueStream, textFileStream, binaryRecordsStream, socketTextStream.

An input stream's ``_compute(t)`` runs on the job generator when batch t falls due, so each batch takes
its input exactly once: the queue items, the new files, the socket lines that arrived in (t - interval, t].
"""
from __future__ import annotations

import logging
import posixpath
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from dstream.driver.jobs import BatchError, records_wanted
from dstream.driver.listener import ReceiverInfo
from dstream.driver.rate import RateConf, RateController, RateLimiter
from dstream.driver.storage import Location, file_version, modified_time
from dstream.driver.times import batch_name
from dstream.dstream import DStream
from dstream.executors.threads import ThreadExecutor
from dstream.io import BinaryRecordsRDD, TextFileRDD
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

    def recorded_times(self) -> list[int]:
        """The batch times whose input this stream still records (for the checkpoint's header)."""
        return sorted(self.records_per_batch)

    def _expired(self, recorded: dict[int, Any], time_ms: int) -> list[int]:
        """The batch times in ``recorded`` that batch ``time_ms`` lets this input forget: older than it
        remembers, and not needed to recompute a failed or pending batch (``DStream._retained``)."""
        limit = time_ms - (self.remember_ms or self.slide_ms)
        return [t for t in recorded if t <= limit and not self._retained(t)]

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        for t in self._expired(self.records_per_batch, time_ms):
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

    def recorded_times(self) -> list[int]:
        return sorted(set(self.records_per_batch) | set(self.batch_items))

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        for t in self._expired(self.batch_items, time_ms):
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


class InputError(BatchError):
    """An input stream could not take its batch (its directory could not be listed). The batch runs
    without that input, and a later batch takes it."""


class FileInputDStream(InputDStream):
    """New files in a directory (any fsspec URL); a file counts once, in the batch in which it appears.

    The directory is listed afresh every batch (fsspec's cached listings are dropped first). A file is
    known by its name and version: size plus modification time or ETag (what the filesystem's listing
    gives), so an object replaced under the same name counts again, as a new file. A listing that fails
    (no permission, no bucket, no network) fails its batch with an ``InputError`` naming the URL; that batch
    takes no file from the directory, and nothing is marked as taken, so the next batch takes the files.
    A file that cannot be read fails its batch's task, naming the URL; the file stays that batch's recorded
    input (a later batch does not take it), and the failed batch, kept pending, reads it again when it is
    retried (``StreamingContext.retryFailedBatches``, or a restart).

    Files must appear atomically (written elsewhere, then renamed in; an object store's PUT is atomic).
    Names starting with ``.`` or ``_`` and ending in ``.tmp`` or ``._COPYING_`` are ignored. With
    ``newFilesOnly`` (the default), files already there when the stream starts are ignored, as in Spark.

    ``storage_options`` (fsspec's) open the directory on the driver and, pickled with the tasks, its files
    on the executors. Their secrets are masked in reprs and errors and left out of checkpoints: a stream
    restored from a checkpoint takes them from the environment or fsspec's configuration.

    ``memory://`` directories work only with the thread executor (``threads[N]``): the files live in
    the driver process's memory, which executor processes cannot see.

    ``max_files_per_trigger`` (Structured Streaming's ``maxFilesPerTrigger``) takes at most that many new
    files a batch: the oldest (by modification time, then name); the others are not marked as taken, so
    they stay new and go into later batches (also after a restart from the checkpoint). Nothing is dropped.
    """

    def __init__(self, ssc: "StreamRuntime", directory: "str | Location", kind: str, record_length: int = 0,
                 new_files_only: bool = True, storage_options: dict[str, Any] | None = None,
                 max_files_per_trigger: int | None = None) -> None:
        if not isinstance(directory, (str, Location)) or not str(directory):
            raise ValueError(f"{kind}: directory must be a path or URL string, got {directory!r}")
        if max_files_per_trigger is not None and (
                isinstance(max_files_per_trigger, bool) or not isinstance(max_files_per_trigger, int)
                or max_files_per_trigger < 1):
            raise ValueError(f"{kind}: maxFilesPerTrigger must be a positive integer or None, "
                             f"got {max_files_per_trigger!r}")
        location = Location.of(directory, storage_options)
        if location.url.startswith("memory://"):
            if not isinstance(ssc.sparkContext.executor, ThreadExecutor):
                raise ValueError(f"{kind}({location.url}): memory:// directories need the thread executor "
                                 f"(Context('threads[N]')); executor processes cannot see the driver's memory")
        super().__init__(ssc, f"{kind}({location.url})")
        #: the directory with the storage options to list and read it (secrets stay out of checkpoints)
        self.location = location
        self.directory = location.url
        self.kind = kind
        self.record_length = record_length
        self.new_files_only = new_files_only
        #: the most new files a batch takes (None: all); the others wait for later batches
        self.max_files_per_trigger = max_files_per_trigger
        #: the files taken (or there at start), by URL, with the version taken (``file_version``)
        self.seen: dict[str, str] = {}
        #: the files each remembered batch took (recorded input, replayed after a restart)
        self.batch_files: dict[int, list[str]] = {}
        #: why a remembered batch took nothing from the directory: its listing failed
        self.batch_errors: dict[int, str] = {}
        #: the newest batch time that listed the directory
        self.last_listed_ms: int | None = None

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "location" not in state:  # a checkpoint from before storage options
            self.location = Location(self.directory)
        if isinstance(self.seen, set):  # ... from before versions: the files seen count as taken as they are
            self.seen = dict.fromkeys(self.seen, "")
        self.__dict__.setdefault("batch_errors", {})
        self.__dict__.setdefault("max_files_per_trigger", None)

    def _list(self) -> dict[str, tuple[int, str, float]]:
        """The directory's visible files, listed afresh: URL (in the directory's form) -> (size, version,
        modification time; 0 where the listing has none)."""
        out = {}
        for e in self.location.list():
            name = posixpath.basename(e["name"].rstrip("/"))
            if e.get("type") == "directory" or name.startswith((".", "_")) or name.endswith((".tmp", "._COPYING_")):
                continue
            out[self.location.at(e["name"]).url] = (e.get("size") or 0, file_version(e), modified_time(e) or 0.0)
        return dict(sorted(out.items()))

    def _file(self, url: str) -> Location:
        return Location(url, self.location.storage_options)

    def start(self) -> None:
        if self.new_files_only:
            try:
                self.seen = {url: version for url, (_, version, _) in self._list().items()}
            except Exception as exc:  # noqa: BLE001 - the batches report it; nothing found later is old
                log.warning("%s: cannot list the files there at start, so every file found later is new: %s",
                            self.name, exc)

    def restart(self) -> None:
        """After a restart the files taken before are known from the checkpoint: none is taken twice,
        and files that arrived while the driver was down are new."""

    def recorded_times(self) -> list[int]:
        return sorted(set(self.records_per_batch) | set(self.batch_files))

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        for t in self._expired(self.batch_files, time_ms):
            del self.batch_files[t]
        for t in self._expired(self.batch_errors, time_ms):
            del self.batch_errors[t]

    def input_metadata(self, time_ms: int) -> dict[str, Any]:
        """The batch's new files, as Spark's file streams report them (and ``error`` if the listing failed)."""
        files = list(self.batch_files.get(time_ms, []))
        meta: dict[str, Any] = {"files": files, "Description": "\n".join(files)}
        if time_ms in self.batch_errors:
            meta["error"] = self.batch_errors[time_ms]
        return meta

    def _compute(self, time_ms: int) -> RDD | None:
        ctx = self._ssc.sparkContext
        sizes: dict[str, int] = {}
        if time_ms in self.batch_files:
            # a batch replayed after a restart takes exactly the files it took before
            new = self.batch_files[time_ms]
        elif self.last_listed_ms is not None and time_ms <= self.last_listed_ms:
            log.warning("%s: the input of %s is no longer recorded; it is empty", self.name, batch_name(time_ms))
            return ctx.emptyRDD()
        else:
            self.last_listed_ms = time_ms
            try:
                listed = self._list()
            except Exception as exc:  # noqa: BLE001 - this batch fails; the files stay new for the next
                return self._listing_failed(time_ms, exc)
            # New: not taken yet, or replaced since ("" is a version unknown, from an old checkpoint).
            new = [url for url, (_, version, _) in listed.items() if self.seen.get(url) not in (version, "")]
            later = self._beyond_limit(new, listed)
            if later:
                new = [url for url in new if url not in later]
            # Forget files that are gone so the map stays as small as the directory; files left for a later
            # batch keep the version taken before (if any), so they stay new.
            self.seen = {url: self.seen[url] if url in later else version
                         for url, (_, version, _) in listed.items() if url not in later or url in self.seen}
            sizes = {url: listed[url][0] for url in new}
            self.batch_files[time_ms] = new
        files = [self._file(url) for url in new]
        if self.kind == "binaryRecordsStream":
            self.records_per_batch[time_ms] = sum(sizes.get(url, 0) // self.record_length for url in new)
        elif records_wanted(self._ssc.listener_bus):  # counting reads the files once more, on the driver
            self.records_per_batch[time_ms] = sum(_count_lines(f) for f in files)
        if not new:
            return ctx.emptyRDD()
        if self.kind == "binaryRecordsStream":
            return BinaryRecordsRDD(ctx, files, self.record_length)
        return TextFileRDD(ctx, files, 1, "utf-8")

    def _beyond_limit(self, new: list[str], listed: dict[str, tuple[int, str, float]]) -> set[str]:
        """The new files over ``max_files_per_trigger``: all but the oldest (by modification time, then
        name), which wait for a later batch."""
        limit = self.max_files_per_trigger
        if limit is None or len(new) <= limit:
            return set()
        oldest_first = sorted(new, key=lambda url: (listed[url][2], url))
        return set(oldest_first[limit:])

    def _listing_failed(self, time_ms: int, exc: BaseException) -> RDD:
        """Batch ``time_ms`` takes no file and fails; nothing is marked as taken, so a later batch takes
        the files (a replay of this batch takes none, as it did)."""
        reason = self.location.scrub(str(exc))  # names the URL
        error = InputError(f"{batch_name(time_ms)}: {self.name} took no input, its new files go into a "
                           f"later batch: {reason}")
        log.error("%s", error)
        self.batch_files[time_ms] = []
        self.batch_errors[time_ms] = reason
        self.records_per_batch[time_ms] = 0
        self._ssc.report_error(error)
        return self._ssc.sparkContext.emptyRDD()


def _count_lines(url: "str | Location") -> int:
    """Lines of a file as ``io.split_lines`` cuts them (\\n, \\r\\n or \\r), counted on the raw bytes.

    For BatchInfo.numRecords only: a file that cannot be read counts 0 (its task reports the error).
    """
    n, last = 0, b""
    try:
        with Location.of(url).open("rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
                if last == b"\r" and chunk[:1] == b"\n":
                    n -= 1  # a \r\n split across two chunks
                last = chunk[-1:]
    except Exception:  # noqa: BLE001 - informational only; never fail the batch here
        return 0
    return n + (1 if last not in (b"", b"\n", b"\r") else 0)


#: the conf key of the longest wait between two failed connection attempts of a receiver, and its default
MAX_RETRY_DELAY_KEY = "dstream.receiver.maxRetryDelay"
MAX_RETRY_DELAY = 30.0
#: while a receiver keeps failing with the same delay, it warns at most this often (seconds)
WARN_EVERY = 30.0


def _max_retry_delay(conf: Any) -> float:
    value = conf.get(MAX_RETRY_DELAY_KEY) if conf is not None else None
    if value is None:
        return MAX_RETRY_DELAY
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{MAX_RETRY_DELAY_KEY} must be a positive number of seconds, got {value!r}")
    return seconds


def _error_text(error: BaseException) -> str:
    """``ConnectionRefusedError: [Errno 111] Connection refused``."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class SocketInputDStream(InputDStream):
    """Lines from a TCP server; lines arriving in (t - interval, t] form batch t.

    A receiver thread connects, and stamps each line with the streaming clock when it arrives. A
    connection that cannot be made is retried after ``retry`` seconds, doubling while it keeps failing up
    to ``max_retry_delay`` (``dstream.receiver.maxRetryDelay``, 30 s); each failure is logged at WARNING
    (the first, then whenever the delay changes, and at most every 30 s at the cap) and reported to
    listeners as ``onReceiverError``, as is a connection lost. Lines are decoded as UTF-8; an undecodable
    byte sequence becomes U+FFFD, and each batch that got any logs one warning with their number (also its
    input metadata's ``undecodable``).

    With checkpointing, each line is first written to a write-ahead log under
    ``<checkpoint>/wal/<stream id>/``, then buffered; each batch records the range of log lines it took.
    On a local disk every received chunk is appended and fsynced; on an object store the lines received
    in one block interval (``wal_block_interval``) become one immutable segment object. After a restart a
    replayed batch takes exactly the lines it took before, lines received but not yet in a recorded batch
    go into the first batches after the restart, and segments the checkpoint no longer needs are deleted.
    """

    #: with checkpointing: a write-ahead log segment is closed once it holds this many lines or bytes
    wal_segment_lines = 10_000
    wal_segment_bytes = 16 << 20
    #: a segment is deleted once the batches remembered at the last ``wal_keep`` cleanups no longer need
    #: it (older metadata checkpoints, read when a newer one is damaged, may need what the newest does not)
    wal_keep = 10
    #: on object stores: seconds of received lines gathered into one segment object (Spark's block interval)
    wal_block_interval = 0.2

    def __init__(self, ssc: "StreamRuntime", host: str, port: int, retry: float = 0.5,
                 max_retry_delay: float | None = None) -> None:
        if max_retry_delay is None:
            max_retry_delay = _max_retry_delay(ssc.sparkContext.conf)
        super().__init__(ssc, f"socketTextStream({host}:{port})")
        self.host, self.port, self.retry = host, port, retry
        #: the longest wait between two failed connection attempts (seconds)
        self.max_retry_delay = max_retry_delay
        #: undecodable byte sequences (each now a U+FFFD) in the lines each remembered batch took
        self.batch_undecodable: dict[int, int] = {}
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
        self.__dict__.setdefault("batch_undecodable", {})  # (a checkpoint from before it was recorded)
        #: lines decoded by the receiver, and taken by batches, counted in one sequence with the buffer's
        #: (restart puts the logged lines first); (line number, undecodable sequences) of lines that had any
        self._received = self._taken = 0
        self._undecodable: deque[tuple[int, int]] = deque()
        self._up, self._failures = False, 0  # the receiver thread's: connected now; attempts failed in a row
        self._lines: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wal: WriteAheadLog | None = None
        #: the rate settings of the context's conf (``spark.streaming.receiver.maxRate``, backpressure)
        self._rates = RateConf.from_conf(self._ssc.sparkContext.conf)
        #: lets received lines in at the current rate limit (None: no limit)
        self._limiter = RateLimiter(self._rates.initial_limit())

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for k in ("_lines", "_lock", "_stop", "_thread", "_wal", "_rates", "_limiter", "_undecodable"):
            state[k] = None
        return state

    def _attach(self, ssc: "StreamRuntime") -> None:
        super()._attach(ssc)
        self._init_receiver()

    def _open_wal(self, fresh: bool) -> WriteAheadLog | None:
        directory = self._ssc.checkpoint_location  # with the checkpoint's storage options
        if directory is None:
            return None
        return WriteAheadLog(wal_dir(directory, self.stream_id), self.wal_segment_lines, self.wal_segment_bytes,
                             start=self.wal_taken, fresh=fresh, block_interval=self.wal_block_interval)

    def start(self) -> None:
        self._wal = self._open_wal(fresh=True)
        self._start_receiver()

    def restart(self) -> None:
        """Put the logged lines no recorded batch took back into the buffer, then receive again."""
        self._wal = self._open_wal(fresh=False)
        if self._wal is not None:
            if self.wal_needed:  # segments of the earlier run that no kept checkpoint needs
                self._wal.delete_before(min(self.wal_needed))
            lines = self._wal.read(self.wal_taken, self._wal.next_line)
            if lines:
                log.info("%s: %d lines from the write-ahead log go into the next batch", self.name, len(lines))
            self._lines.extend((self._last_batch_ms + 1, ln) for ln in lines)
            self._received += len(lines)
        self._start_receiver()

    def _start_receiver(self) -> None:
        self._start_rate_controller()
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

    # -- rate limits (spark.streaming.receiver.maxRate, backpressure: dstream.driver.rate) ----------------
    @property
    def rate_limit(self) -> float | None:
        """The receiver's current limit in lines per second, or None when it is not limited."""
        return self._limiter.rate

    def _start_rate_controller(self) -> None:
        """With backpressure, a listener estimates the rate the processing sustains from each completed
        batch and sets the limit to it (never above ``maxRate``), as Spark's ReceiverRateController."""
        if self._rates.backpressure:
            controller = RateController(self._ssc.graph.inputs.index(self),
                                        self._rates.estimator(self._ssc.interval_ms), self._set_rate)
            self._ssc.listener_bus.add(controller)

    def _set_rate(self, estimated: int) -> None:
        self._limiter.set_rate(self._rates.limit(estimated), time.monotonic())

    def _deliver(self, lines: list[str]) -> None:
        """Store the lines as the rate limit lets them in (Spark's ``BlockGenerator.waitToPush``): wait
        for permits before each group, reading nothing from the socket meanwhile, so the kernel's buffer
        fills and TCP makes the sender wait. A group is the write-ahead log's block interval's worth of
        lines (else a few ms' worth). Nothing is dropped: once the stream stops, the rest is stored at once."""
        limiter = self._limiter
        gather = self._wal.block_interval if self._wal is not None else 0.0
        i = 0
        while i < len(lines) and limiter.rate is not None and not self._stop.is_set():
            n = limiter.group(len(lines) - i, gather)
            wait = limiter.reserve(n, time.monotonic())
            if wait > 0:
                self._stop.wait(wait)
            self._store(lines[i:i + n])
            i += n
        if i < len(lines):
            self._store(lines[i:] if i else lines)

    def _store(self, lines: list[str]) -> None:
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
        self._post("onReceiverStarted", self._receiver_info())
        failed: WriteAheadLogError | None = None
        try:
            self._receive_until_stopped()
        except WriteAheadLogError as exc:
            log.error("%s", exc)
            self._ssc.report_error(exc)
            failed = exc
        finally:
            self._post("onReceiverStopped", self._receiver_info(
                False, "the write-ahead log failed, so the receiver stopped" if failed else "", failed))

    def _receive_until_stopped(self) -> None:
        warned: tuple[float, float] | None = None  # (delay, monotonic time) of the last connection warning
        while not self._stop.is_set():
            pending: list[str] = []  # received, not yet logged and buffered
            self._up = False  # until _connected
            error: OSError | None = None
            try:
                self._receive_connection(pending)
            except OSError as exc:
                error = exc
            if pending:
                self._deliver(pending)
            if self._stop.is_set():
                break
            if self._up:
                self._failures, delay = 0, self.retry
                self._connection_ended(error, delay)
            else:
                self._failures += 1
                delay = self._retry_delay(self._failures)
                warned = self._connect_failed(error, delay, warned)
            self._stop.wait(delay)

    def _receive_connection(self, pending: list[str]) -> None:
        """Receive from one connection until it closes or the stream stops. Lines gather in ``pending``
        for the write-ahead log's block interval (on local disks: none), then are delivered together."""
        interval = self._wal.block_interval if self._wal is not None else 0.0
        since = 0.0  # when the oldest pending line arrived
        with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
            self._connected()
            buf = b""
            while not self._stop.is_set():
                left = since + interval - time.monotonic() if pending else 0.2
                sock.settimeout(min(max(left, 0.001), 0.2))
                try:
                    chunk: bytes | None = sock.recv(65536)
                except socket.timeout:
                    chunk = None
                if chunk == b"":
                    break
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    if lines and not pending:
                        since = time.monotonic()
                    pending += self._decode(lines)
                # (with a rate limit, at most one group's worth is read ahead before it is let in)
                if pending and (time.monotonic() - since >= interval
                                or len(pending) >= self._limiter.group_size(interval)):
                    self._deliver(pending)
                    pending.clear()
            if buf:
                pending += self._decode([buf], strip_cr=False)

    # -- faults heard: connection failures, lost connections, undecodable bytes --------------------------
    def _receiver_info(self, active: bool = True, message: str = "",
                       error: BaseException | None = None) -> ReceiverInfo:
        return ReceiverInfo(self._ssc.graph.inputs.index(self), self.name, active, socket.gethostname(), "driver",
                            message, _error_text(error) if error is not None else "",
                            self._ssc.clock.now_ms() if error is not None else -1)

    def _post(self, method: str, info: ReceiverInfo) -> None:
        self._ssc.listener_bus.post(method, info)

    def _retry_delay(self, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed in a row: ``retry``, doubling, at most
        ``max_retry_delay``."""
        cap = getattr(self, "max_retry_delay", MAX_RETRY_DELAY)  # (a checkpoint from before it was kept)
        return min(self.retry * 2 ** min(failures - 1, 60), cap)

    def _connected(self) -> None:
        self._up = True
        if self._failures:
            log.info("%s: connected, after %d failed attempts", self.name, self._failures)
        else:
            log.info("%s: connected", self.name)

    def _connect_failed(self, error: OSError | None, delay: float,
                        warned: tuple[float, float] | None) -> tuple[float, float] | None:
        """Log a failed attempt (WARNING: the first, whenever the delay changes, else at most every
        ``WARN_EVERY`` seconds) and report it to listeners; the (delay, time) of the last warning."""
        text = _error_text(error) if error is not None else "no connection"
        failures = f" ({self._failures} failed attempts in a row)" if self._failures > 1 else ""
        now = time.monotonic()
        if warned is None or warned[0] != delay or now - warned[1] >= WARN_EVERY:
            log.warning("%s: cannot connect: %s; retrying in %g s%s", self.name, text, delay, failures)
            warned = (delay, now)
        else:
            log.debug("%s: cannot connect: %s; retrying in %g s%s", self.name, text, delay, failures)
        self._post("onReceiverError", self._receiver_info(True, f"cannot connect to {self.host}:{self.port}", error))
        return warned

    def _connection_ended(self, error: OSError | None, delay: float) -> None:
        """The connection closed: by the server (INFO), or with an error (WARNING, and ``onReceiverError``)."""
        if error is None:
            log.info("%s: the server closed the connection; reconnecting in %g s", self.name, delay)
            return
        log.warning("%s: connection lost: %s; reconnecting in %g s", self.name, _error_text(error), delay)
        self._post("onReceiverError", self._receiver_info(True, f"connection to {self.host}:{self.port} lost",
                                                          error))

    def _decode(self, raw: list[bytes], strip_cr: bool = True) -> list[str]:
        """Received lines as text (UTF-8, without a trailing \\r). An undecodable byte sequence becomes one
        U+FFFD and is counted, by line, for the batch that takes the line (``_count_undecodable``)."""
        try:
            if strip_cr:
                text = [ln.rstrip(b"\r").decode("utf-8") for ln in raw]
            else:
                text = [ln.decode("utf-8") for ln in raw]
        except UnicodeDecodeError:
            text = []
            for i, ln in enumerate(raw):
                ln = ln.rstrip(b"\r") if strip_cr else ln
                try:
                    text.append(ln.decode("utf-8"))
                except UnicodeDecodeError:
                    line = ln.decode("utf-8", "replace")
                    # one U+FFFD per undecodable sequence, less the U+FFFDs the sender encoded itself
                    self._undecodable.append((self._received + i, line.count("\ufffd") - ln.count(b"\xef\xbf\xbd")))
                    text.append(line)
        self._received += len(raw)
        return text

    def _count_undecodable(self, time_ms: int, taken: int) -> None:
        """Batch ``time_ms`` took the next ``taken`` buffered lines: one warning if they had undecodable
        bytes, with their number (kept for ``input_metadata``)."""
        self._taken += taken
        n = 0
        while self._undecodable and self._undecodable[0][0] < self._taken:
            n += self._undecodable.popleft()[1]
        if n:
            self.batch_undecodable[time_ms] = n
            log.warning("%s: %s: %d undecodable byte sequence%s replaced with U+FFFD", self.name,
                        batch_name(time_ms), n, "" if n == 1 else "s")

    def input_metadata(self, time_ms: int) -> dict[str, Any]:
        """``undecodable``: the byte sequences of the batch's lines that were not UTF-8 (when there were)."""
        n = self.batch_undecodable.get(time_ms)
        return {"undecodable": n} if n else {}

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
            self._count_undecodable(time_ms, len(taken))
            if self._wal is not None:
                self.batch_wal[time_ms] = (self.wal_taken, self.wal_taken + len(taken))
                self.wal_taken += len(taken)
        self.records_per_batch[time_ms] = len(taken)
        if not taken:
            return ctx.emptyRDD()
        return ctx.parallelize(taken, min(len(taken), ctx.defaultParallelism))

    def recorded_times(self) -> list[int]:
        return sorted(set(self.records_per_batch) | set(self.batch_wal))

    def _clear_metadata(self, time_ms: int) -> None:
        super()._clear_metadata(time_ms)
        for t in self._expired(self.batch_wal, time_ms):
            del self.batch_wal[t]
        for t in self._expired(self.batch_undecodable, time_ms):
            del self.batch_undecodable[t]
        if self._wal is not None:
            needed = min([first for first, _ in self.batch_wal.values()] + [self.wal_taken])
            self.wal_needed = (self.wal_needed + [needed])[-self.wal_keep:]
            self._wal.delete_before(min(self.wal_needed))
