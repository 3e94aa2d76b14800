"""Batch statistics: what the Streaming tab of Spark's UI shows, kept by a listener on the driver.

``StreamStatistics`` is a ``StreamingListener`` that keeps the newest completed batches (a bounded window,
Spark's ``spark.streaming.ui.retainedBatches``) as ``BatchRecord`` rows: batch time, records per input,
scheduling, processing and total delay, output operations with their durations and failures. Everything
that shows a running stream reads from it: ``StreamingContext.statistics()`` (a pandas DataFrame),
``plot()``, the live views in a notebook and a terminal, and the web status page with its JSON and
Prometheus endpoints (``summary()`` and ``snapshot()``). It never makes an input count records: inputs
that must read files to count them do so only for listeners that ask (``wants_record_counts``).
"""
from __future__ import annotations

import statistics as stats
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from dstream.driver.listener import BatchInfo, StreamingListener
from dstream.driver.times import batch_name

if TYPE_CHECKING:
    import pandas as pd

#: batches kept by default (Spark's spark.streaming.ui.retainedBatches)
RETAINED_BATCHES = 1000
#: batches the summary's rates and averages are taken over
RECENT = 10


@dataclass(frozen=True)
class OutputRecord:
    """One output operation of one batch."""

    id: int
    name: str
    duration_ms: int | None
    failure: str | None


@dataclass(frozen=True)
class BatchRecord:
    """One completed run of a batch (times in ms of the streaming clock)."""

    batch_time_ms: int
    submission_time_ms: int
    processing_start_ms: int | None
    processing_end_ms: int | None
    #: records each input took for the batch, by input name (None where the input did not count)
    input_records: dict[str, int | None]
    outputs: tuple[OutputRecord, ...]
    #: 1 for the first run, n for the (n-1)th retry of a failed batch
    attempt: int = 1
    #: failed task attempts that were run again
    task_retries: int = 0
    #: why the batch failed (its first failed output operation), None when it succeeded
    failure: str | None = None

    @property
    def scheduling_delay_ms(self) -> int | None:
        if self.processing_start_ms is None:
            return None
        return self.processing_start_ms - self.submission_time_ms

    @property
    def processing_delay_ms(self) -> int | None:
        if self.processing_start_ms is None or self.processing_end_ms is None:
            return None
        return self.processing_end_ms - self.processing_start_ms

    @property
    def total_delay_ms(self) -> int | None:
        if self.processing_end_ms is None:
            return None
        return self.processing_end_ms - self.submission_time_ms

    @property
    def records(self) -> int | None:
        """Records of all inputs together; None when no input counted."""
        counted = [n for n in self.input_records.values() if n is not None]
        return sum(counted) if counted else None

    @classmethod
    def from_info(cls, info: BatchInfo, input_name: Callable[[int], str]) -> "BatchRecord":
        """The record of a completed ``BatchInfo``; ``input_name`` names an input by its stream id. An
        input whose metadata says ``records_counted: False`` (it counts only on demand) records None."""
        inputs = {input_name(sid): (i.numRecords() if i.metadata().get("records_counted", True) else None)
                  for sid, i in sorted(info.streamIdToInputInfo().items())}
        outputs = tuple(OutputRecord(op.id(), op.name(), None if op.duration() < 0 else op.duration(),
                                     op.failureReason())
                        for op in info.outputOperationInfos().values())
        return cls(int(info.batch_time), info.submission_time, info.processing_start_time,
                   info.processing_end_time, inputs, outputs, info.attempt(), info.taskRetries(),
                   info.failureReason())


@dataclass
class Summary:
    """The state of a stream at a glance (what a live view shows)."""

    batches: int
    failed_batches: int
    #: records per second over the recent batches (None when no input counted)
    input_rate: float | None
    scheduling_delay_ms: float | None
    processing_delay_ms: float | None
    total_delay_ms: float | None
    #: total delays of the recent batches, oldest first (for a sparkline)
    recent_total_delays_ms: list[int] = field(default_factory=list)
    last_batch: str | None = None
    last_error: str | None = None
    #: False when batches take longer than the interval or wait longer and longer to start
    keeping_up: bool = True


class StreamStatistics(StreamingListener):
    """The newest completed batches of one stream, for tables, plots, live views and the status page."""

    #: a built-in listener: its presence alone does not make file inputs count their records
    wants_record_counts = False

    def __init__(self, interval_ms: int, retained: int = RETAINED_BATCHES,
                 input_name: Callable[[int], str] = lambda sid: f"input-{sid}") -> None:
        if retained < 1:
            raise ValueError(f"retained batches must be at least 1, got {retained}")
        self.interval_ms = interval_ms
        self._input_name = input_name
        self._batches: deque[BatchRecord] = deque(maxlen=retained)
        self._lock = threading.Lock()
        self._completed = 0
        self._failed = 0
        self._last_error: str | None = None
        #: wall-clock time (s) when the stream started, None before
        self.started_at: float | None = None
        #: incremented on every completed batch (live views redraw when it changes)
        self.version = 0

    # -- listener -------------------------------------------------------------------------------------
    def onStreamingStarted(self, streamingStarted: Any) -> None:  # noqa: N802 - PySpark's name
        self.started_at = time.time()

    def onBatchCompleted(self, batchCompleted: Any) -> None:  # noqa: N802 - PySpark's name
        self.add(BatchRecord.from_info(batchCompleted.batchInfo(), self._input_name))

    def add(self, record: BatchRecord) -> None:
        """Keep ``record`` (the newest batch run); the oldest goes when the window is full."""
        with self._lock:
            self._batches.append(record)
            self._completed += 1
            if record.failure is not None:
                self._failed += 1
                self._last_error = f"{batch_name(record.batch_time_ms)}: {record.failure}"
            self.version += 1

    # -- views ----------------------------------------------------------------------------------------
    def batches(self) -> list[BatchRecord]:
        """The retained batch runs, oldest first."""
        with self._lock:
            return list(self._batches)

    def to_frame(self) -> "pd.DataFrame":
        """One row per retained batch run, oldest first (what ``StreamingContext.statistics()`` returns)."""
        import pandas as pd  # here, not at import: a driver that never asks does not pay for it

        rows = []
        for b in self.batches():
            row: dict[str, Any] = {
                "batch_time": pd.Timestamp(b.batch_time_ms, unit="ms"),
                "records": b.records,
                "scheduling_delay_ms": b.scheduling_delay_ms,
                "processing_delay_ms": b.processing_delay_ms,
                "total_delay_ms": b.total_delay_ms,
                "output_operations": len(b.outputs),
                "output_durations_ms": {f"{o.id}: {o.name}": o.duration_ms for o in b.outputs},
                "attempt": b.attempt,
                "task_retries": b.task_retries,
                "failed": b.failure is not None,
                "failure": b.failure,
            }
            row.update({f"records[{name}]": n for name, n in b.input_records.items()})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=_COLUMNS if not rows else None)
        for column in ("records", "scheduling_delay_ms", "processing_delay_ms", "total_delay_ms",
                       *[c for c in frame.columns if c.startswith("records[")]):
            frame[column] = frame[column].astype("Int64")  # counts and delays stay integers, NA where unknown
        return frame

    def summary(self, recent: int = RECENT) -> Summary:
        """Counts, the input rate and the average delays of the ``recent`` newest batches."""
        with self._lock:
            window = list(self._batches)[-recent:]
            completed, failed, last_error = self._completed, self._failed, self._last_error
        counted = [b.records for b in window if b.records is not None]
        rate = sum(counted) / (len(counted) * self.interval_ms / 1000) if counted else None
        totals = [b.total_delay_ms for b in window if b.total_delay_ms is not None]
        return Summary(
            batches=completed, failed_batches=failed, input_rate=rate,
            scheduling_delay_ms=_mean(b.scheduling_delay_ms for b in window),
            processing_delay_ms=_mean(b.processing_delay_ms for b in window),
            total_delay_ms=_mean(totals), recent_total_delays_ms=totals,
            last_batch=batch_name(window[-1].batch_time_ms) if window else None, last_error=last_error,
            keeping_up=_keeping_up(window, self.interval_ms))

    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        """Everything as JSON-ready values: the summary and the newest ``limit`` batches, newest first."""
        batches = self.batches()[::-1][:limit]
        return {"interval_ms": self.interval_ms, "started_at": self.started_at,
                "summary": asdict(self.summary()),
                "batches": [{**asdict(b), "scheduling_delay_ms": b.scheduling_delay_ms,
                             "processing_delay_ms": b.processing_delay_ms, "total_delay_ms": b.total_delay_ms,
                             "records": b.records, "batch": batch_name(b.batch_time_ms)} for b in batches]}


_COLUMNS = ["batch_time", "records", "scheduling_delay_ms", "processing_delay_ms", "total_delay_ms",
            "output_operations", "output_durations_ms", "attempt", "task_retries", "failed", "failure"]


def _mean(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return stats.fmean(known) if known else None


def _keeping_up(window: list[BatchRecord], interval_ms: int) -> bool:
    """Whether the stream keeps up: the recent batches run within the interval on average, and the wait
    before a batch starts is not growing from one batch to the next."""
    processing = [b.processing_delay_ms for b in window if b.processing_delay_ms is not None]
    if not processing:
        return True
    if stats.fmean(processing) > interval_ms:
        return False
    waits = [b.scheduling_delay_ms for b in window if b.scheduling_delay_ms is not None]
    growing = len(waits) >= 3 and all(b > a for a, b in zip(waits, waits[1:])) and waits[-1] > interval_ms
    return not growing
