"""Durations: seconds (float) in the public API, integer milliseconds inside."""
from __future__ import annotations

import datetime as _dt
import math
import numbers
from typing import Any

# One definition of a batch time as a datetime: pprint, foreachRDD and the driver's messages (batch_name)
# all show the same text for a batch.
from dstream.driver.times import ms_to_datetime  # noqa: F401 - re-exported


def to_ms(seconds: Any, name: str) -> int:
    """Milliseconds of a positive duration in seconds; ValueError naming the parameter otherwise."""
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {seconds!r} seconds")
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"{name} must be at least 1 ms (0.001 s), got {seconds!r} seconds")
    return int(ms)


def check_multiple(ms: int, parent_ms: int, name: str) -> int:
    if ms % parent_ms != 0:
        raise ValueError(f"{name} ({ms / 1000:g} s) must be a multiple of the parent stream's slide "
                         f"duration ({parent_ms / 1000:g} s)")
    return ms


def time_to_ms(t: Any, name: str) -> int:
    """A datetime or unix timestamp (seconds) as milliseconds."""
    if isinstance(t, _dt.datetime):
        return round(t.timestamp() * 1000)
    if isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t):
        return int(round(t * 1000))
    raise ValueError(f"{name} must be a datetime or a unix timestamp in seconds, got {t!r}")
