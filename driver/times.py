"""Batch times: Spark's ``Time``, the datetime PySpark shows for a batch, and how messages name a batch.

Inside the engine a batch time is an int of milliseconds. Users see it as the local datetime that
``foreachRDD`` receives and ``pprint`` prints; errors and logs name a batch by that datetime followed by
the milliseconds, ``batch 2026-11-30 01:52:16 (1795999936000 ms)``, so a message can be matched both to
``pprint`` output and to the ``<prefix>-<ms>`` directories of the file sinks.
"""
from __future__ import annotations

import datetime as _dt


class Time(int):
    """A batch time (Spark's ``Time``): an int of milliseconds with Spark's ``milliseconds()``.

    Being an int, it compares, hashes and serialises (JSON) as its milliseconds, so code that treats
    ``batchTime()`` as a number keeps working; ``repr`` shows Spark's form, ``Time(1000 ms)``.
    """

    __slots__ = ()

    def milliseconds(self) -> int:
        """The time in milliseconds since the epoch."""
        return int(self)

    def datetime(self) -> _dt.datetime:
        """The local datetime PySpark hands to ``foreachRDD`` for this batch."""
        return ms_to_datetime(int(self))

    def __repr__(self) -> str:
        return f"Time({int(self)} ms)"

    def __str__(self) -> str:
        return int.__repr__(self)


def ms_to_datetime(ms: int) -> _dt.datetime:
    """A batch time as the local datetime PySpark hands to ``foreachRDD`` and ``pprint`` prints."""
    return _dt.datetime.fromtimestamp(ms / 1000.0)


def batch_name(time_ms: int) -> str:
    """How errors and logs name a batch: ``batch <datetime as pprint prints it> (<ms> ms)``."""
    return f"batch {ms_to_datetime(time_ms)} ({int(time_ms)} ms)"
