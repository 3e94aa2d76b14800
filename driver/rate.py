"""Backpressure and rate limits, as Spark Streaming has them: how fast a receiver lets records in.

- ``PIDRateEstimator``: Spark's PID controller. From each completed batch (records, processing delay,
  scheduling delay) it estimates the rate, in records per second, that the processing sustains. Pure: no
  I/O, no threads, no clock.
- ``RateLimiter``: a token bucket that lets records through at most ``rate`` per second (Spark's receivers
  use Guava's ``RateLimiter`` in ``BlockGenerator.waitToPush``). ``reserve(n, now)`` takes ``n`` permits and
  says how long to wait before using them; the caller sleeps. It reads no clock itself (``now`` is given).
  The socket receiver waits there before it stores lines, and reads nothing from its socket meanwhile, so
  the kernel's buffer fills and TCP makes the sender wait: nothing is dropped, and memory stays bounded.
- ``RateController``: a ``StreamingListener`` for one input stream (Spark's ``ReceiverRateController``):
  on each completed batch it feeds the estimator and publishes the new rate.
- ``RateConf``: the configuration keys (Spark's, or dstream's equivalents, which win when both are set).

=====================================================  ==================  ================================
key (dstream's equivalent)                             default             what
=====================================================  ==================  ================================
``spark.streaming.receiver.maxRate``                   0 (no limit)        records/s per receiver, always
(``dstream.receiver.maxRate``)                                             an upper bound
``spark.streaming.backpressure.enabled``               false               estimate the rate from batches
(``dstream.backpressure.enabled``)
``spark.streaming.backpressure.initialRate``           none (maxRate)      the limit until the first estimate
``spark.streaming.backpressure.rateEstimator``         ``pid``             the only estimator
``spark.streaming.backpressure.pid.proportional``      1.0                 PID gains, all >= 0
``spark.streaming.backpressure.pid.integral``          0.2
``spark.streaming.backpressure.pid.derived``           0.0
``spark.streaming.backpressure.pid.minRate``           100                 the lowest rate estimated (> 0)
=====================================================  ==================  ================================

The ``dstream.`` keys drop ``spark.`` and ``streaming.`` (``dstream.backpressure.pid.minRate``), as
``dstream.ui.retainedBatches`` does for ``spark.streaming.ui.retainedBatches``.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dstream.driver.listener import StreamingListener
from dstream.executors.conf_values import conf_bool, parse_float

log = logging.getLogger(__name__)


def _keys(name: str) -> tuple[str, str]:
    """The dstream key and the Spark key of one setting (the dstream one wins when both are set)."""
    return f"dstream.{name}", f"spark.streaming.{name}"


MAX_RATE_KEYS = _keys("receiver.maxRate")
BACKPRESSURE_KEYS = _keys("backpressure.enabled")
INITIAL_RATE_KEYS = _keys("backpressure.initialRate")
ESTIMATOR_KEYS = _keys("backpressure.rateEstimator")
PROPORTIONAL_KEYS = _keys("backpressure.pid.proportional")
INTEGRAL_KEYS = _keys("backpressure.pid.integral")
DERIVED_KEYS = _keys("backpressure.pid.derived")
MIN_RATE_KEYS = _keys("backpressure.pid.minRate")


class PIDRateEstimator:
    """Spark's PID rate estimator (``org.apache.spark.streaming.scheduler.rate.PIDRateEstimator``).

    The error is the difference between the rate estimated last time and the processing rate just
    measured (records / processing delay); the integral term is the rate at which the records behind the
    scheduling delay would be worked off within one batch interval::

        processing_rate = records / processing_delay_ms * 1000
        error = latest_rate - processing_rate
        historical_error = scheduling_delay_ms * processing_rate / batch_interval_ms
        d_error = (error - latest_error) / ((time_ms - latest_time_ms) / 1000)
        new_rate = max(latest_rate - proportional * error - integral * historical_error
                       - derivative * d_error, min_rate)

    A batch is ignored (``compute`` returns None) unless its time is later than the last one used and it
    had records and a positive processing delay. The first batch used only sets the starting point (its
    processing rate) and returns None. Not thread-safe: one listener thread calls it.
    """

    def __init__(self, batch_interval_ms: int, proportional: float = 1.0, integral: float = 0.2,
                 derivative: float = 0.0, min_rate: float = 100.0) -> None:
        if not batch_interval_ms > 0:
            raise ValueError(f"the batch interval {batch_interval_ms} ms of the PID rate estimator is invalid")
        for name, value in (("proportional", proportional), ("integral", integral), ("derivative", derivative)):
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"the {name} term {value} of the PID rate estimator must be >= 0")
        if not min_rate > 0:
            raise ValueError(f"the minimum rate {min_rate} of the PID rate estimator must be > 0")
        self.batch_interval_ms = batch_interval_ms
        self.proportional, self.integral, self.derivative = float(proportional), float(integral), float(derivative)
        self.min_rate = float(min_rate)
        self._first_run = True
        self._latest_time = -1
        self._latest_rate = -1.0
        self._latest_error = -1.0

    def compute(self, time_ms: int, num_elements: int, processing_delay_ms: int,
                scheduling_delay_ms: int) -> float | None:
        """The new rate (records/s) after a batch that ended at ``time_ms`` having processed
        ``num_elements`` records in ``processing_delay_ms`` after waiting ``scheduling_delay_ms``; None
        when the batch is skipped or is the first one used."""
        if not (time_ms > self._latest_time and num_elements > 0 and processing_delay_ms > 0):
            return None
        delay_since_update = (time_ms - self._latest_time) / 1000
        processing_rate = num_elements / processing_delay_ms * 1000
        error = self._latest_rate - processing_rate
        historical_error = scheduling_delay_ms * processing_rate / self.batch_interval_ms
        d_error = (error - self._latest_error) / delay_since_update
        new_rate = max(self._latest_rate - self.proportional * error - self.integral * historical_error
                       - self.derivative * d_error, self.min_rate)
        self._latest_time = time_ms
        if self._first_run:
            self._latest_rate = processing_rate
            self._latest_error = 0.0
            self._first_run = False
            return None
        self._latest_rate = new_rate
        self._latest_error = error
        return new_rate


class RateLimiter:
    """At most ``rate`` records per second (None: no limit), as a token bucket that is paid before use.

    ``reserve(n, now)`` takes ``n`` permits at time ``now`` (seconds on any monotonic clock) and returns how
    many seconds the caller must wait before letting the ``n`` records through. Unused permits add up to at
    most ``burst`` seconds' worth (and one record), so a receiver that was idle lets at most that much
    through at once. ``set_rate`` changes the rate at once for later reservations; a reservation not yet
    paid keeps the time it had left. Thread-safe (the receiver reserves, the rate controller sets).
    """

    #: seconds of unused permits kept; also the least records a receiver gathers into one store
    burst = 0.02

    def __init__(self, rate: float | None = None, burst: float | None = None) -> None:
        if burst is not None:
            self.burst = burst
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._tokens = 0.0  # negative: permits reserved and not paid yet
        self._stamp: float | None = None
        self.set_rate(rate)

    @property
    def rate(self) -> float | None:
        """Records per second, or None when not limited."""
        return self._rate

    def set_rate(self, rate: float | None, now: float | None = None) -> None:
        """Limit to ``rate`` records per second from ``now`` on (None or <= 0: no limit)."""
        new = None if rate is None or not rate > 0 or math.isinf(rate) else float(rate)
        with self._lock:
            old = self._rate
            if old is not None and now is not None:
                self._refill(now)
            if old is None or new is None:
                self._tokens = 0.0
            elif self._tokens < 0:
                self._tokens *= new / old  # what is owed keeps its time
            else:
                self._tokens = min(self._tokens, self._capacity(new))
            self._rate = new
            if now is not None:
                self._stamp = now

    def _capacity(self, rate: float) -> float:
        return max(1.0, rate * self.burst)

    def _refill(self, now: float) -> None:
        rate = self._rate
        if rate is None:
            return
        if self._stamp is None:
            self._stamp = now
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._tokens + elapsed * rate, max(self._tokens, self._capacity(rate)))
        self._stamp = max(self._stamp, now)

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` permits at ``now``; the seconds to wait before using them (0: at once)."""
        with self._lock:
            if self._rate is None:
                return 0.0
            self._refill(now)
            self._tokens -= n
            return max(0.0, -self._tokens / self._rate)

    def group_size(self, gather: float = 0.0) -> float:
        """How many records to reserve at once: ``gather`` seconds' worth (at least the burst's, and at
        least one), so that stores stay few at high rates and prompt at low ones; infinite without a limit."""
        rate = self._rate
        if rate is None:
            return math.inf
        return max(1, int(rate * max(gather, self.burst)))

    def group(self, wanted: int, gather: float = 0.0) -> int:
        """How many of ``wanted`` records to reserve at once (``group_size``)."""
        size = self.group_size(gather)
        return wanted if size == math.inf else min(wanted, int(size))


@dataclass(frozen=True)
class RateConf:
    """The rate settings of a Context's conf (see the module's table)."""

    #: records per second per receiver, None for no limit (``spark.streaming.receiver.maxRate``)
    max_rate: float | None = None
    #: estimate the rate from the batches (``spark.streaming.backpressure.enabled``)
    backpressure: bool = False
    #: the limit before the first estimate, with backpressure (None: ``max_rate``)
    initial_rate: float | None = None
    proportional: float = 1.0
    integral: float = 0.2
    derived: float = 0.0
    min_rate: float = 100.0

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> "RateConf":
        """Read (and check) the settings; a bad value raises ``ValueError`` naming its key."""
        def number(keys: tuple[str, str], default: float | None) -> float | None:
            key = next((k for k in keys if conf.get(k) is not None), None)
            return default if key is None else parse_float(key, conf[key], finite=False, bool_as_number=True)

        def flag(keys: tuple[str, str]) -> bool:
            key = next((k for k in keys if conf.get(k) is not None), keys[0])
            return conf_bool(conf, key, False)

        max_rate = number(MAX_RATE_KEYS, None)
        initial = number(INITIAL_RATE_KEYS, None)
        if initial is not None and not initial > 0:
            raise ValueError(f"{INITIAL_RATE_KEYS[1]} must be > 0 records per second, got {initial:g}")
        estimator = next((str(conf[k]) for k in ESTIMATOR_KEYS if conf.get(k) is not None), "pid")
        if estimator.strip().lower() != "pid":
            raise ValueError(f"unknown rate estimator {estimator!r} ({ESTIMATOR_KEYS[1]}): only 'pid' exists")
        rates = cls(max_rate=max_rate if max_rate is not None and max_rate > 0 else None,
                    backpressure=flag(BACKPRESSURE_KEYS), initial_rate=initial,
                    proportional=number(PROPORTIONAL_KEYS, 1.0), integral=number(INTEGRAL_KEYS, 0.2),
                    derived=number(DERIVED_KEYS, 0.0), min_rate=number(MIN_RATE_KEYS, 100.0))
        rates.estimator(1000)  # checks the PID settings now
        return rates

    @property
    def limited(self) -> bool:
        """Whether receivers are rate limited at all."""
        return self.max_rate is not None or self.backpressure

    def initial_limit(self) -> float | None:
        """The limit a receiver starts with: ``max_rate``, or with backpressure the initial rate under it."""
        if self.backpressure and self.initial_rate is not None:
            return self.initial_rate if self.max_rate is None else min(self.initial_rate, self.max_rate)
        return self.max_rate

    def limit(self, estimated: float) -> float:
        """The limit for an estimated rate: never above ``max_rate``."""
        return estimated if self.max_rate is None else min(estimated, self.max_rate)

    def estimator(self, batch_interval_ms: int) -> PIDRateEstimator:
        return PIDRateEstimator(batch_interval_ms, self.proportional, self.integral, self.derived, self.min_rate)


class RateController(StreamingListener):
    """Feeds one input stream's completed batches to a rate estimator and publishes each new rate (Spark's
    ``ReceiverRateController``). A failed batch is skipped: how fast it failed says nothing of what the
    processing sustains. ``publish`` gets the rate in records per second (an int, as Spark publishes it)."""

    #: the receiver counts its records anyway: its presence makes no input count records
    wants_record_counts = False

    def __init__(self, stream_id: int, estimator: PIDRateEstimator, publish: Callable[[int], None]) -> None:
        self.stream_id = stream_id
        self.estimator = estimator
        self.publish = publish
        #: the newest rate published, or None before the first estimate
        self.latest_rate: int | None = None

    def onBatchCompleted(self, batchCompleted: Any) -> None:  # noqa: N802 - PySpark's name
        info = batchCompleted.batchInfo()
        input_info = info.streamIdToInputInfo().get(self.stream_id)
        if (input_info is None or info.failureReason() is not None or info.processing_end_time is None
                or info.processing_start_time is None):
            return
        rate = self.estimator.compute(info.processing_end_time, input_info.numRecords(),
                                      info.processingDelay(), info.schedulingDelay())
        if rate is not None:
            self.latest_rate = int(rate)
            log.debug("input %d: new rate %d records/s", self.stream_id, self.latest_rate)
            self.publish(self.latest_rate)
