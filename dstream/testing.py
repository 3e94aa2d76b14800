"""Helpers for deterministic stream tests (Spark's TestSuiteBase, Bytewax's testing module).

    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    out = collect(ssc.queueStream([[1, 2], [3]]).map(lambda x: x * 10))
    ssc.start(); advance(ssc, 2)
    assert out == [[10, 20], [30]]
"""
from __future__ import annotations

import tempfile
from typing import Any, Callable, Iterable

from dstream.driver.clock import ManualClock
from dstream.driver.times import batch_name
from dstream.context import Context
from dstream.dstream import DStream
from dstream.rdd import RDD
from dstream.streaming import StreamingContext


def collect(stream: DStream, sort: bool = False) -> list[list[Any]]:
    """An output operation collecting each batch's records into the returned list (one list a batch)."""
    out: list[list[Any]] = []

    def sink(rdd: Any) -> None:
        records = rdd.collect()
        out.append(sorted(records, key=repr) if sort else records)

    stream.foreachRDD(sink)
    return out


def collect_timed(stream: DStream) -> list[tuple[int, list[Any]]]:
    """Like ``collect``, with each batch's time in ms."""
    out: list[tuple[int, list[Any]]] = []
    stream.foreachBatch(lambda rdd, t: out.append((t, rdd.collect())))
    return out


def advance(ssc: StreamingContext, batches: int = 1, timeout: float = 60.0) -> None:
    """Move the context's ManualClock ``batches`` intervals on, waiting for each batch to finish."""
    clock = ssc.clock
    if not isinstance(clock, ManualClock):
        raise TypeError("advance() needs a StreamingContext built with clock=ManualClock()")
    for _ in range(batches):
        clock.advance(ssc.batchDuration)
        if not ssc.wait_for_batch(clock.now_ms(), timeout):
            if StreamingContext.getActive() is not ssc:
                raise TimeoutError(f"{batch_name(clock.now_ms())} did not run: the StreamingContext has stopped")
            raise TimeoutError(f"{batch_name(clock.now_ms())} did not finish within {timeout} s")


def run_stream(ctx: Context, inputs: list[Iterable[Any]], operation: Callable[[DStream], DStream],
               num_batches: int | None = None, batch_duration: float = 1.0, sort: bool = True) -> list[list[Any]]:
    """Feed ``inputs`` (one list or RDD a batch) through ``operation`` and return each batch's output.

    Runs ``num_batches`` batches (default: one per input) on a ManualClock, then stops the streaming
    context but not ``ctx``. Outputs are sorted per batch unless ``sort=False``. Stateful operators get a
    temporary checkpoint directory, deleted afterwards.
    """
    ssc = StreamingContext(ctx, batch_duration, clock=ManualClock())
    batches = [b if isinstance(b, RDD) else list(b) for b in inputs]
    out = collect(operation(ssc.queueStream(batches)), sort=sort)
    with tempfile.TemporaryDirectory(prefix="dstream-test-checkpoint-") as checkpoint:
        if needs_checkpoint(ssc):
            ssc.checkpoint(checkpoint)
        ssc.start()
        try:
            advance(ssc, len(inputs) if num_batches is None else num_batches)
        finally:
            ssc.stop(stopSparkContext=False)
    ssc.awaitTerminationOrTimeout(0)
    return out


def run_two_streams(ctx: Context, inputs1: list[Iterable[Any]], inputs2: list[Iterable[Any]],
                    operation: Callable[[DStream, DStream], DStream], num_batches: int | None = None,
                    sort: bool = True) -> list[list[Any]]:
    """Like ``run_stream`` for an operation on two queue streams (joins, union, transformWith).

    Runs ``num_batches`` batches (default: as many as the longer input has).
    """
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    try:
        a = ssc.queueStream([list(x) for x in inputs1])
        b = ssc.queueStream([list(x) for x in inputs2])
        out = collect(operation(a, b), sort=sort)
        ssc.start()
        advance(ssc, num_batches or max(len(inputs1), len(inputs2)))
    finally:
        ssc.stop(stopSparkContext=False)
    return out


def needs_checkpoint(ssc: StreamingContext) -> bool:
    """True when the context has stateful streams but no checkpoint directory yet."""
    return ssc.checkpoint_dir is None and any(s.must_checkpoint for s in ssc.graph.all_streams())
