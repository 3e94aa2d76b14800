"""Windowed streams.

A window of length W sliding by S over a parent with slide P (W and S multiples of P): at each valid
time t it covers the parent's batches in (t - W, t]::

    parent batches:   |b1 |b2 |b3 |b4 |b5 |b6 |
    window W=3P, S=2P:        [b1 b2 b3]                t = 3P
                                      [b3 b4 b5]        t = 5P
"""
from __future__ import annotations

from typing import Callable

from dstream.dstream import DStream, materialised
from dstream.rdd import RDD


class WindowedDStream(DStream):
    """The union of the parent's RDDs in the window ending at each slide."""

    def __init__(self, parent: DStream, window_ms: int, slide_ms: int) -> None:
        super().__init__(parent._ssc, [parent], slide_ms, name=f"window({window_ms / 1000:g}s, {slide_ms / 1000:g}s)")
        #: window length in ms
        self.window_ms = window_ms
        # Each parent RDD is read by several windows: keep it cached.
        parent.persist()

    def _parent_remember_ms(self) -> int:
        return (self.remember_ms or self.slide_ms) + self.window_ms

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        rdds = parent._slice_ms(time_ms - self.window_ms + parent.slide_ms, time_ms)
        ctx = self._ssc.sparkContext
        return ctx.union(rdds) if rdds else ctx.emptyRDD()


class ReducedWindowedDStream(DStream):
    """reduceByKeyAndWindow with an inverse function: the previous window, minus the batches that left,
    plus the batches that arrived (Spark's ReducedWindowedDStream)::

         _____________________________
        |  previous window   _________|___________________
        |___________________|       current window        |   ---> time
                            |_____________________________|
        |________ _________|          |________ _________|
                 |                             |
              old RDDs                     new RDDs

    For a window shorter than 5 slides it reduces the whole window, which is cheaper.
    """

    def __init__(self, reduced: DStream, func: Callable, inv_func: Callable, window_ms: int, slide_ms: int,
                 num_partitions: int | None, filter_func: Callable | None) -> None:
        super().__init__(reduced._ssc, [reduced], slide_ms,
                         name=f"reduceByKeyAndWindow({window_ms / 1000:g}s, {slide_ms / 1000:g}s)")
        self.window_ms = window_ms
        self.func = func
        self.inv_func = inv_func
        self.filter_func = filter_func
        self._num_partitions = num_partitions
        self.must_checkpoint = True
        self.must_cache = True
        reduced.persist()

    def _parent_remember_ms(self) -> int:
        return (self.remember_ms or self.slide_ms) + self.window_ms

    def _n(self, rdd: RDD) -> int:
        return self._num_partitions or rdd.ctx.defaultParallelism

    def _reduce(self, acc: RDD | None, new: RDD) -> RDD:
        new = new.reduceByKey(self.func, self._n(new))
        out = acc.union(new).reduceByKey(self.func, self._n(new)) if acc is not None else new
        return out.filter(self.filter_func) if self.filter_func is not None else out

    def _subtract(self, acc: RDD, old: RDD) -> RDD:
        old = old.reduceByKey(self.func, self._n(old))
        inv = self.inv_func
        return acc.leftOuterJoin(old, self._n(old)).mapValues(
            lambda vw: inv(vw[0], vw[1]) if vw[1] is not None else vw[0])

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        ctx = self._ssc.sparkContext
        begin, end = time_ms - self.window_ms, time_ms
        previous_end = end - self.slide_ms
        previous = self._get_or_compute(previous_end) if self.window_ms >= self.slide_ms * 5 else None
        if previous is not None:
            previous = materialised(previous)
            old = parent._slice_ms(previous_end - self.window_ms + parent.slide_ms, begin)
            acc = self._subtract(previous, ctx.union(old)) if old else previous
            new = parent._slice_ms(previous_end + parent.slide_ms, end)
            return self._reduce(acc, ctx.union(new)) if new else acc
        current = parent._slice_ms(begin + parent.slide_ms, end)
        if not current:
            return None
        return self._reduce(None, ctx.union(current))
