"""DStream: a discretized stream, one RDD per batch time (PySpark's DStream API).

Operators are small classes in the style of Spark Streaming: each knows its ``dependencies`` (parent
streams), its ``slide_ms`` and how to ``_compute(time)`` its RDD; the base class's ``_get_or_compute``
alone caches generated RDDs, checks times and marks checkpoints. Most operators are a
``TransformedDStream`` applying an RDD operation batch by batch, as in PySpark.
"""
from __future__ import annotations

import functools
import inspect
import operator
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Mapping

import pyarrow as pa

from dstream.driver.storage import Location
from dstream.durations import check_multiple, ms_to_datetime, time_to_ms, to_ms
from dstream.io import CheckpointRDD
from dstream.rdd import RDD, PipelinedRDD, T_co, _fn_name, public_api
from dstream.records import Partition
from dstream.shuffle import portable_hash
from dstream.sinks import batch_path, get_sink
from dstream.state import State, map_key

if TYPE_CHECKING:
    from dstream.graph import StreamRuntime
    from dstream.streaming import StreamingContext


def _arity(func: Callable) -> int:
    """Positional parameters of ``func`` (to tell ``f(rdd)`` from ``f(time, rdd)``)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               and p.default is p.empty)


def materialised(rdd: RDD) -> RDD:
    """``rdd`` read back from its snapshot or cached blocks when it has them (``RDD.truncated``).

    Streams built on their own past (state, incremental windows) read the previous batch's RDD. The
    graph materialises every stateful RDD in full at the start of its batch (``DStreamGraph.materialise``),
    so by the time a batch reads the previous state it is cached and the lineage stays one batch deep.
    """
    return rdd._truncated()


def _count_partition(_: int, part: Partition) -> list[int]:
    """A partition's number of records (without decoding an Arrow table)."""
    return [part.num_rows if isinstance(part, pa.Table) else sum(1 for _ in part)]


def _num_partitions(numPartitions: int | None, rdd: RDD) -> int:
    """PySpark's default number of partitions for a stream's shuffle: the default parallelism."""
    return numPartitions if numPartitions is not None else rdd.ctx.defaultParallelism


def _with_time(func: Callable, n_rdds: int) -> Callable:
    """Normalise a user function to ``f(time, *rdds)``, accepting ``f(*rdds)`` too (as PySpark does)."""
    if _arity(func) > n_rdds:
        return func
    return lambda t, *rdds: func(*rdds)


class DStream(Generic[T_co]):
    """A sequence of RDDs, one per batch time; build pipelines with its operators, then start the context.

    Generic in its record type, as PySpark's is: ``DStream[str]`` in type hints.
    """

    def __init__(self, ssc: "StreamRuntime", dependencies: list["DStream"], slide_ms: int | None = None,
                 name: str | None = None) -> None:
        ssc.check_can_declare()
        #: the StreamingContext this stream belongs to
        self._ssc = ssc
        #: parent streams
        self.dependencies = dependencies
        #: milliseconds between this stream's RDDs
        self.slide_ms = slide_ms if slide_ms is not None else dependencies[0].slide_ms
        #: the RDD generated for each batch time still remembered
        self.generated: dict[int, RDD | None] = {}
        #: the time before the first batch (set at start)
        self.zero_ms: int | None = None
        #: how long generated RDDs are kept
        self.remember_ms: int | None = None
        #: batches at or before this time have been forgotten (cleared after the remember duration)
        self.forgotten_ms: int | None = None
        #: data snapshots of this stream's RDDs still remembered: batch time -> (directory, part files)
        self.checkpoint_data: dict[int, tuple[str, list[str]]] = {}
        #: whether generated RDDs are cached
        self.must_cache = False
        #: data checkpoint interval (ms) when this stream's RDDs are checkpointed
        self.checkpoint_ms: int | None = None
        #: streams whose state builds on their own past must checkpoint (updateStateByKey, ...)
        self.must_checkpoint = False
        self.name = name or type(self).__name__

    def __dir__(self) -> list[str]:
        """The user API (PySpark's DStream operators, plus dstream's), not the operator protocol."""
        return public_api(DStream)

    # -- the operator protocol ------------------------------------------------------------------------
    def _compute(self, time_ms: int) -> RDD | None:
        raise NotImplementedError

    def _parent_remember_ms(self) -> int:
        """How long parents must keep their RDDs for this stream (windows add their length)."""
        return self.remember_ms or self.slide_ms

    def _is_time_valid(self, time_ms: int) -> bool:
        return (self.zero_ms is not None and time_ms > self.zero_ms
                and (time_ms - self.zero_ms) % self.slide_ms == 0)

    def _get_or_compute(self, time_ms: int) -> RDD | None:
        """The RDD of batch ``time_ms``: generated once, then remembered."""
        if time_ms in self.generated:
            return self.generated[time_ms]
        if not self._is_time_valid(time_ms):
            return None
        rdd = self._compute(time_ms)
        if rdd is not None:
            if self.must_cache:
                rdd.cache()
            if self.checkpoint_ms and (time_ms - self.zero_ms) % self.checkpoint_ms == 0 \
                    and rdd.ctx.checkpoint_dir is not None:
                rdd.checkpoint()
        self.generated[time_ms] = rdd
        return rdd

    def _initialize(self, zero_ms: int) -> None:
        if self.zero_ms is not None and self.zero_ms == zero_ms:
            return
        self.zero_ms = zero_ms
        if self.must_checkpoint and self.checkpoint_ms is None:
            self.checkpoint_ms = self.slide_ms * -(-10_000 // self.slide_ms)
        minimum = self.slide_ms
        if self.checkpoint_ms is not None and minimum <= self.checkpoint_ms:
            minimum = self.checkpoint_ms * 2
        if self.remember_ms is None or self.remember_ms < minimum:
            self.remember_ms = minimum
        for parent in self.dependencies:
            parent._initialize(zero_ms)

    def _remember(self, duration_ms: int | None) -> None:
        if duration_ms is not None and (self.remember_ms is None or duration_ms > self.remember_ms):
            self.remember_ms = duration_ms
        for parent in self.dependencies:
            parent._remember(self._parent_remember_ms())

    def _retained(self, time_ms: int) -> bool:
        """Whether batch ``time_ms`` is kept although older than the remember duration: recomputing a batch
        that failed (or is still pending) reads it. A batch ``k`` reads this stream's batches of its remember
        duration before it (windows included), as ``_remember`` set it."""
        keep = self._ssc.graph.keep_times if self._ssc is not None else ()
        span = self.remember_ms or self.slide_ms
        return any(k - span < time_ms <= k for k in keep)

    def _clear_metadata(self, time_ms: int) -> None:
        """Forget RDDs older than the remember duration (and free their cached blocks), except those a
        failed or pending batch needs (``_retained``)."""
        limit = time_ms - (self.remember_ms or self.slide_ms)
        self.forgotten_ms = limit if self.forgotten_ms is None else max(self.forgotten_ms, limit)
        for t in [t for t in self.generated if t <= limit and not self._retained(t)]:
            rdd = self.generated.pop(t)
            # an RDD may serve several batches (queueStream's default): keep it while one still needs it
            if rdd is not None and rdd.is_cached and not any(r is rdd for r in self.generated.values()):
                rdd.unpersist()
        for parent in self.dependencies:
            parent._clear_metadata(time_ms)

    def _update_checkpoint_data(self) -> None:
        """Record where the remembered RDDs' data snapshots are (after a batch completes)."""
        data = {}
        for t, rdd in self.generated.items():
            cp = rdd if isinstance(rdd, CheckpointRDD) else getattr(rdd, "_checkpoint_rdd", None)
            if cp is not None:
                data[t] = (cp.directory, list(cp.paths))
        if data or self.checkpoint_data:
            # keep the newest snapshot known even when its batch has been forgotten
            newest = max(self.checkpoint_data.items(), default=None)
            self.checkpoint_data = data if data else ({newest[0]: newest[1]} if newest else {})

    def _attach(self, ssc: "StreamRuntime") -> None:
        """Bind a stream unpickled from a checkpoint to its new context, with its snapshots restored."""
        self._ssc = ssc
        self.generated = {}
        self.forgotten_ms = None
        self._restore_checkpoint_data(ssc.sparkContext)

    def _restore_checkpoint_data(self, ctx: Any) -> None:
        """After a restart: the snapshotted RDDs become this stream's generated RDDs again."""
        for t, (directory, paths) in sorted(self.checkpoint_data.items()):
            self.generated[t] = CheckpointRDD(ctx, directory, paths)

    def _user_functions(self) -> Iterator[tuple[str, Callable]]:
        """(description, function) of each user function this operator holds, for the pickling check."""
        for attr, value in vars(self).items():
            if attr.startswith("_") or attr in ("dependencies", "generated"):
                continue
            if callable(value) and not isinstance(value, (DStream, RDD, type)):
                yield f"{attr} of {self.name}", value

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_ssc"] = None
        state["generated"] = {}
        state["forgotten_ms"] = None
        return state

    def __repr__(self) -> str:
        return f"<{self.name} slide={self.slide_ms / 1000:g}s>"

    # -- helpers ------------------------------------------------------------------------------------
    def context(self) -> "StreamingContext":
        return self._ssc

    @property
    def _sc(self) -> Any:
        return self._ssc.sparkContext

    @property
    def _slideDuration(self) -> float:
        return self.slide_ms / 1000.0

    def _validate_window(self, windowDuration: float, slideDuration: float | None) -> tuple[int, int]:
        window = check_multiple(to_ms(windowDuration, "windowDuration"), self.slide_ms, "windowDuration")
        slide = self.slide_ms if slideDuration is None else check_multiple(
            to_ms(slideDuration, "slideDuration"), self.slide_ms, "slideDuration")
        return window, slide

    def _slice_ms(self, from_ms: int, to_ms_: int) -> list[RDD]:
        """The RDDs of the batch times in [from_ms, to_ms_], aligned to this stream's slide."""
        if self.zero_ms is None:
            raise RuntimeError(f"{self.name} has not been initialised: start the StreamingContext first")

        def align(t: int) -> int:
            return t if (t - self.zero_ms) % self.slide_ms == 0 else \
                self.zero_ms + (t - self.zero_ms) // self.slide_ms * self.slide_ms

        out = []
        t = align(from_ms)
        end = align(to_ms_)
        while t <= end:
            forgotten = self.forgotten_ms is not None and self.zero_ms < t <= self.forgotten_ms
            if forgotten and t not in self.generated:  # generated: kept for a failed batch (``_retained``)
                # Recomputing a forgotten batch would be wrong: an input stream would take new input for it.
                raise ValueError(f"slice: {ms_to_datetime(t)} is a batch {self.name} has already forgotten "
                                 f"(it remembers {(self.remember_ms or self.slide_ms) / 1000:g} s); call "
                                 f"StreamingContext.remember(duration) before starting to keep batches longer")
            if t > self.zero_ms:
                rdd = self._get_or_compute(t)
                if rdd is not None:
                    out.append(rdd)
            t += self.slide_ms
        return out

    # -- transformations ----------------------------------------------------------------------------
    def transform(self, func: Callable) -> "DStream":
        """A stream of ``func(rdd)`` or ``func(time, rdd)`` (time a datetime) for each batch."""
        f = _with_time(func, 1)
        return TransformedDStream([self], lambda t, rdd: f(ms_to_datetime(t), rdd),
                                  f"transform({_fn_name(func)})")

    def transformWith(self, func: Callable, other: "DStream", keepSerializer: bool = False) -> "DStream":
        """A stream of ``func(rdd_a, rdd_b)`` or ``func(time, rdd_a, rdd_b)``; both must share a slide."""
        self._check_same_slide(other, "transformWith")
        f = _with_time(func, 2)
        return TransformedDStream([self, other], lambda t, a, b: f(ms_to_datetime(t), a, b),
                                  f"transformWith({_fn_name(func)})")

    def _check_same_slide(self, other: "DStream", what: str) -> None:
        if self.slide_ms != other.slide_ms:
            raise ValueError(f"{what}: the two streams have different slide durations "
                             f"({self.slide_ms / 1000:g} s and {other.slide_ms / 1000:g} s)")

    def _rdd_op(self, name: str, op: Callable[[RDD], RDD]) -> "DStream":
        return TransformedDStream([self], lambda t, rdd: op(rdd), name)

    def map(self, f: Callable[[Any], Any], preservesPartitioning: bool = False) -> "DStream":
        return self._rdd_op(f"map({_fn_name(f)})", lambda rdd: rdd.map(f, preservesPartitioning))

    def flatMap(self, f: Callable[[Any], Iterable[Any]], preservesPartitioning: bool = False) -> "DStream":
        return self._rdd_op(f"flatMap({_fn_name(f)})", lambda rdd: rdd.flatMap(f, preservesPartitioning))

    def filter(self, f: Callable[[Any], bool]) -> "DStream":
        return self._rdd_op(f"filter({_fn_name(f)})", lambda rdd: rdd.filter(f))

    def mapPartitions(self, f: Callable, preservesPartitioning: bool = False) -> "DStream":
        return self._rdd_op(f"mapPartitions({_fn_name(f)})", lambda rdd: rdd.mapPartitions(f, preservesPartitioning))

    def mapPartitionsWithIndex(self, f: Callable, preservesPartitioning: bool = False) -> "DStream":
        return self._rdd_op(f"mapPartitionsWithIndex({_fn_name(f)})",
                            lambda rdd: rdd.mapPartitionsWithIndex(f, preservesPartitioning))

    def mapValues(self, f: Callable[[Any], Any]) -> "DStream":
        return self._rdd_op(f"mapValues({_fn_name(f)})", lambda rdd: rdd.mapValues(f))

    def flatMapValues(self, f: Callable[[Any], Iterable[Any]]) -> "DStream":
        return self._rdd_op(f"flatMapValues({_fn_name(f)})", lambda rdd: rdd.flatMapValues(f))

    def glom(self) -> "DStream":
        return self._rdd_op("glom", lambda rdd: rdd.glom())

    def mapInArrow(self, f: Callable) -> "DStream":
        """Apply ``f`` (iterator of pyarrow.RecordBatch in, iterator out) to each batch's partitions."""
        return self._rdd_op(f"mapInArrow({_fn_name(f)})", lambda rdd: rdd.mapInArrow(f))

    def mapInPandas(self, f: Callable) -> "DStream":
        """Apply ``f`` (iterator of pandas DataFrames in, iterator out) to each batch's partitions."""
        return self._rdd_op(f"mapInPandas({_fn_name(f)})", lambda rdd: rdd.mapInPandas(f))

    def repartition(self, numPartitions: int) -> "DStream":
        return self._rdd_op("repartition", lambda rdd: rdd.repartition(numPartitions))

    def partitionBy(self, numPartitions: int, partitionFunc: Callable[[Any], int] | None = None) -> "DStream":
        func = partitionFunc or portable_hash
        return self._rdd_op("partitionBy", lambda rdd: rdd.partitionBy(numPartitions, func))

    def reduce(self, func: Callable[[Any, Any], Any]) -> "DStream":
        """Each batch reduced to one record (nothing for an empty batch)."""
        return self.map(lambda x: (None, x)).reduceByKey(func, 1).map(operator.itemgetter(1))

    def reduceByKey(self, func: Callable[[Any, Any], Any], numPartitions: int | None = None) -> "DStream":
        return self._rdd_op(f"reduceByKey({_fn_name(func)})", lambda rdd: rdd.reduceByKey(
            func, _num_partitions(numPartitions, rdd)))

    def combineByKey(self, createCombiner: Callable, mergeValue: Callable, mergeCombiners: Callable,
                     numPartitions: int | None = None) -> "DStream":
        return self._rdd_op("combineByKey", lambda rdd: rdd.combineByKey(
            createCombiner, mergeValue, mergeCombiners, _num_partitions(numPartitions, rdd)))

    def groupByKey(self, numPartitions: int | None = None) -> "DStream":
        return self._rdd_op("groupByKey", lambda rdd: rdd.groupByKey(_num_partitions(numPartitions, rdd)))

    def countByValue(self) -> "DStream":
        """(record, count) pairs for each batch."""
        return self.map(lambda x: (x, 1)).reduceByKey(operator.add)

    def count(self) -> "DStream":
        """One record per batch: its number of records (0 for an empty batch), counted when the batch runs."""
        def count_rdd(rdd: RDD) -> RDD:
            counts = PipelinedRDD(rdd, _count_partition, False, "count")
            return counts.union(rdd.ctx.parallelize([0], 1)).coalesce(1).mapPartitions(lambda it: [sum(it)])

        return self._rdd_op("count", count_rdd)

    def union(self, other: "DStream") -> "DStream":
        self._check_same_slide(other, "union")
        return UnionDStream([self, other])

    def cogroup(self, other: "DStream", numPartitions: int | None = None) -> "DStream":
        return self.transformWith(lambda a, b: a.cogroup(b, numPartitions), other)

    def join(self, other: "DStream", numPartitions: int | None = None) -> "DStream":
        return self.transformWith(lambda a, b: a.join(b, numPartitions), other)

    def leftOuterJoin(self, other: "DStream", numPartitions: int | None = None) -> "DStream":
        return self.transformWith(lambda a, b: a.leftOuterJoin(b, numPartitions), other)

    def rightOuterJoin(self, other: "DStream", numPartitions: int | None = None) -> "DStream":
        return self.transformWith(lambda a, b: a.rightOuterJoin(b, numPartitions), other)

    def fullOuterJoin(self, other: "DStream", numPartitions: int | None = None) -> "DStream":
        return self.transformWith(lambda a, b: a.fullOuterJoin(b, numPartitions), other)

    # -- persistence ----------------------------------------------------------------------------------
    def cache(self) -> "DStream":
        return self.persist()

    def persist(self, storageLevel: Any = None) -> "DStream":
        self.must_cache = True
        return self

    def checkpoint(self, interval: float) -> "DStream":
        """Checkpoint this stream's RDDs every ``interval`` seconds (a multiple of its slide)."""
        ms = check_multiple(to_ms(interval, "interval"), self.slide_ms, "interval")
        self.must_cache = True
        self.checkpoint_ms = ms
        return self

    # -- windows --------------------------------------------------------------------------------------
    def window(self, windowDuration: float, slideDuration: float | None = None) -> "DStream":
        """Every ``slideDuration``, the union of the batches of the last ``windowDuration``."""
        window, slide = self._validate_window(windowDuration, slideDuration)
        return WindowedDStream(self, window, slide)

    def reduceByWindow(self, reduceFunc: Callable, invReduceFunc: Callable | None, windowDuration: float,
                       slideDuration: float | None) -> "DStream":
        keyed = self.map(lambda x: (1, x))
        reduced = keyed.reduceByKeyAndWindow(reduceFunc, invReduceFunc, windowDuration, slideDuration, 1)
        return reduced.map(operator.itemgetter(1))

    def countByWindow(self, windowDuration: float, slideDuration: float | None) -> "DStream":
        return self.map(lambda x: 1).reduceByWindow(operator.add, operator.sub, windowDuration, slideDuration)

    def countByValueAndWindow(self, windowDuration: float, slideDuration: float | None,
                              numPartitions: int | None = None) -> "DStream":
        keyed = self.map(lambda x: (x, 1))
        counted = keyed.reduceByKeyAndWindow(operator.add, operator.sub, windowDuration, slideDuration,
                                             numPartitions)
        return counted.filter(lambda kv: kv[1] > 0)

    def groupByKeyAndWindow(self, windowDuration: float, slideDuration: float | None,
                            numPartitions: int | None = None) -> "DStream":
        return self.window(windowDuration, slideDuration).groupByKey(numPartitions)

    def reduceByKeyAndWindow(self, func: Callable, invFunc: Callable | None, windowDuration: float,
                             slideDuration: float | None = None, numPartitions: int | None = None,
                             filterFunc: Callable | None = None) -> "DStream":
        """Reduce each key's values over a sliding window; with ``invFunc`` incrementally."""
        window, slide = self._validate_window(windowDuration, slideDuration)
        reduced = self.reduceByKey(func, numPartitions)
        if invFunc is None:
            out = reduced.window(window / 1000, slide / 1000).reduceByKey(func, numPartitions)
            return out.filter(filterFunc) if filterFunc else out
        return ReducedWindowedDStream(reduced, func, invFunc, window, slide, numPartitions, filterFunc)

    def slice(self, begin: Any, end: Any) -> list[RDD]:
        """The RDDs from ``begin`` to ``end`` (both included): datetimes or unix timestamps.

        Only batches within the remember duration can be sliced; ``StreamingContext.remember`` extends it.
        """
        return self._slice_ms(time_to_ms(begin, "begin"), time_to_ms(end, "end"))

    # -- state ----------------------------------------------------------------------------------------
    def updateStateByKey(self, updateFunc: Callable[[list, Any], Any], numPartitions: int | None = None,
                         initialRDD: RDD | Iterable | None = None) -> "DStream":
        """Per-key state: ``updateFunc(new_values, old_state)`` -> new state (None removes the key)."""
        return StateDStream(self, updateFunc, numPartitions, initialRDD)

    def mapWithState(self, func: Callable[[Any, Any, Any], Any], timeout: float | None = None,
                     initialState: RDD | Iterable | None = None,
                     numPartitions: int | None = None) -> "DStream":
        """Per-key state with a mapping function ``func(key, value, state)``; see ``dstream.state.State``.

        With ``timeout`` (seconds), a key idle that long is called once more with ``value=None`` and
        ``state.isTimingOut()`` True, then removed. Returns the stream of mapped records; its
        ``stateSnapshots()`` is the stream of (key, state) pairs.
        """
        return MapWithStateDStream(self, func, timeout, initialState, numPartitions)

    # -- output operations ---------------------------------------------------------------------------
    def foreachRDD(self, func: Callable) -> None:
        """Run ``func(rdd)`` or ``func(time, rdd)`` (time a datetime) for every batch, on the driver."""
        f = _with_time(func, 1)
        ForEachDStream(self, lambda t, rdd: f(ms_to_datetime(t), rdd), f"foreachRDD({_fn_name(func)})", func)

    def foreachBatch(self, func: Callable[[RDD, int], None]) -> None:
        """Run ``func(rdd, batch_time_ms)``: the batch time is a stable id for an idempotent sink."""
        sink = get_sink("foreachBatch")(func)
        ForEachDStream(self, lambda t, rdd: sink.save(rdd, str(t), "skip"), f"foreachBatch({_fn_name(func)})", func)

    def pprint(self, num: int = 10) -> None:
        """Print the first ``num`` records of each batch."""
        def show(t: int, rdd: RDD) -> None:
            taken = rdd.take(num + 1)
            print("-------------------------------------------")
            print(f"Time: {ms_to_datetime(t)}")
            print("-------------------------------------------")
            for record in taken[:num]:
                print(record)
            if len(taken) > num:
                print("...")
            print("", flush=True)

        ForEachDStream(self, show, "pprint")

    def saveAsTextFiles(self, prefix: str, suffix: str | None = None,
                        storage_options: Mapping[str, Any] | None = None) -> None:
        """Each batch to ``prefix-<time ms>[.suffix]``: part files and ``_SUCCESS`` (their manifest),
        committed once. ``storage_options`` open the prefix's fsspec filesystem (``endpoint_url``, ``key``,
        ...), on the driver and in the tasks; a checkpoint keeps them without their secrets."""
        self._save_files("text", prefix, suffix, storage_options, "saveAsTextFiles")

    def saveAsParquetFiles(self, prefix: str, suffix: str | None = "parquet",
                           storage_options: Mapping[str, Any] | None = None) -> None:
        """Each batch as Parquet files under ``prefix-<time ms>[.suffix]``, committed once
        (``storage_options`` as for ``saveAsTextFiles``)."""
        self._save_files("parquet", prefix, suffix, storage_options, "saveAsParquetFiles")

    def _save_files(self, sink_name: str, prefix: str, suffix: str | None,
                    storage_options: Mapping[str, Any] | None, name: str) -> None:
        sink = get_sink(sink_name)()
        where = Location(prefix, storage_options)  # pickled into a checkpoint without its secrets
        ForEachDStream(self, lambda t, rdd: sink.save(
            rdd, Location(batch_path(where.url, t, suffix), where.storage_options), "skip"), name)


class TransformedDStream(DStream):
    """``func(time, *parent_rdds)`` for each batch: the workhorse behind the stateless operators."""

    def __init__(self, parents: list[DStream], func: Callable, name: str) -> None:
        super().__init__(parents[0]._ssc, parents, name=name)
        self.func = func

    def _compute(self, time_ms: int) -> RDD | None:
        rdds = []
        for parent in self.dependencies:
            rdd = parent._get_or_compute(time_ms)
            rdds.append(rdd if rdd is not None else parent._ssc.sparkContext.emptyRDD())
        out = self.func(time_ms, *rdds)
        if out is not None and not isinstance(out, RDD):
            raise TypeError(f"{self.name} must return an RDD, got {type(out).__name__}")
        return out


class UnionDStream(DStream):
    def __init__(self, parents: list[DStream]) -> None:
        super().__init__(parents[0]._ssc, parents, name="union")

    def _compute(self, time_ms: int) -> RDD | None:
        rdds = [r for r in (p._get_or_compute(time_ms) for p in self.dependencies) if r is not None]
        if not rdds:
            return None
        return rdds[0].ctx.union(rdds)


class ForEachDStream(DStream):
    """An output operation: ``func(time_ms, rdd)`` becomes batch ``time_ms``'s job."""

    def __init__(self, parent: DStream, func: Callable[[int, RDD], None], name: str,
                 user_func: Callable | None = None) -> None:
        super().__init__(parent._ssc, [parent], name=name)
        self.func = func
        self.user_func = user_func
        #: position among the context's output operations (their run order)
        self.output_id = parent._ssc.graph.add_output(self)

    def generate_job(self, time_ms: int) -> Callable[[], None] | None:
        rdd = self.dependencies[0]._get_or_compute(time_ms)
        if rdd is None:
            return None
        return functools.partial(self.func, time_ms, rdd)


# -- windows (window, reduceByKeyAndWindow) ----------------------------------------------------------
#
# A window of length W sliding by S over a parent with slide P (W and S multiples of P): at each valid
# time t it covers the parent's batches in (t - W, t]::
#
#     parent batches:   |b1 |b2 |b3 |b4 |b5 |b6 |
#     window W=3P, S=2P:        [b1 b2 b3]                t = 3P
#                                     [b3 b4 b5]        t = 5P

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


# -- state (updateStateByKey, mapWithState) --------------------------------------------------------
#
# Each batch's state RDD is built from the previous batch's state and the batch's new records. State RDDs
# are cached, and the next batch reads the previous state from its cached blocks (``materialised``, which
# uses ``RDD._truncated``), so lineage does not grow with the stream; data checkpoints cut it on disk.

def _as_rdd(ssc: Any, initial: RDD | Iterable | None) -> RDD | None:
    if initial is None or isinstance(initial, RDD):
        return initial
    return ssc.sparkContext.parallelize(list(initial))


class _KeyedStateDStream(DStream):
    """A stream whose RDD at each batch is per-key state built on the previous batch's: cached, and
    snapshotted every checkpoint interval (so it needs ``StreamingContext.checkpoint``)."""

    def __init__(self, parent: DStream, name: str, initial: RDD | Iterable | None,
                 num_partitions: int | None) -> None:
        super().__init__(parent._ssc, [parent], name=name)
        self._initial = _as_rdd(parent._ssc, initial)
        #: the initial state's records, once collected for a checkpoint
        self._initial_records: list | None = None
        self._num_partitions = num_partitions
        self.must_checkpoint = True
        self.must_cache = True

    def _initial_state(self) -> RDD | None:
        """The initial state (the first batch builds on it); after a restart, from the checkpoint's copy."""
        records = getattr(self, "_initial_records", None)
        if self._initial is None and records is not None:
            self._initial = self._ssc.sparkContext.parallelize(records)
        return self._initial

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_initial"] = None
        # Until the state has a data snapshot, a restart recomputes from the first batch, which builds on the
        # initial state: its records go into the checkpoint (collected once). Afterwards snapshots suffice.
        if self.checkpoint_data:
            state["_initial_records"] = None
        elif self._initial is not None and self._initial_records is None:
            self._initial_records = state["_initial_records"] = self._initial.collect()
        return state


class StateDStream(_KeyedStateDStream):
    """updateStateByKey: ``update(new_values, old_state_or_None)`` for every key with new values or state."""

    def __init__(self, parent: DStream, update: Callable[[list, Any], Any], num_partitions: int | None,
                 initial: RDD | Iterable | None) -> None:
        super().__init__(parent, f"updateStateByKey({_fn_name(update)})", initial, num_partitions)
        self.update = update

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        previous = self._get_or_compute(time_ms - self.slide_ms) if time_ms - self.slide_ms > self.zero_ms \
            else self._initial_state()
        ctx = self._ssc.sparkContext
        new = parent._get_or_compute(time_ms) or ctx.emptyRDD()
        n = self._num_partitions or ctx.defaultParallelism
        update = self.update
        if previous is None:
            grouped = new.groupByKey(n).mapValues(lambda vs: (vs, None))
        else:
            grouped = materialised(previous).cogroup(new, n).mapValues(
                lambda sv: (sv[1], sv[0][0] if sv[0] else None))
        return grouped.mapValues(lambda vs_s: update(vs_s[0], vs_s[1])).filter(lambda kv: kv[1] is not None)


class MapWithStateDStream(DStream):
    """The mapped records of mapWithState; ``stateSnapshots()`` gives the (key, state) pairs."""

    def __init__(self, parent: DStream, func: Callable[[Any, Any, State], Any], timeout: float | None,
                 initial: RDD | Iterable | None, num_partitions: int | None) -> None:
        timeout_ms = None if timeout is None else to_ms(timeout, "timeout")
        self.internal = _MapWithStateInternal(parent, func, timeout_ms, initial, num_partitions)
        super().__init__(parent._ssc, [self.internal], name=f"mapWithState({_fn_name(func)})")

    def _compute(self, time_ms: int) -> RDD | None:
        rdd = self.internal._get_or_compute(time_ms)
        return None if rdd is None else rdd.flatMap(lambda kv: kv[1][2])

    def stateSnapshots(self) -> DStream:
        """The stream of every key's current state, (key, state), after each batch."""
        return _StateSnapshots(self.internal)


class _StateSnapshots(DStream):
    def __init__(self, internal: "_MapWithStateInternal") -> None:
        super().__init__(internal._ssc, [internal], name="stateSnapshots")

    def _compute(self, time_ms: int) -> RDD | None:
        rdd = self.dependencies[0]._get_or_compute(time_ms)
        return None if rdd is None else rdd.filter(lambda kv: kv[1][1] is not None).mapValues(lambda s: s[0])


class _MapWithStateInternal(_KeyedStateDStream):
    """Per key: (state value, last update time or None when gone, mapped records of this batch)."""

    def __init__(self, parent: DStream, func: Callable, timeout_ms: int | None,
                 initial: RDD | Iterable | None, num_partitions: int | None) -> None:
        super().__init__(parent, f"mapWithState({_fn_name(func)}) state", initial, num_partitions)
        self.func = func
        self.timeout_ms = timeout_ms

    def _compute(self, time_ms: int) -> RDD | None:
        parent = self.dependencies[0]
        ctx = self._ssc.sparkContext
        if time_ms - self.slide_ms > self.zero_ms:
            previous = self._get_or_compute(time_ms - self.slide_ms)
            states = None if previous is None else materialised(previous).filter(
                lambda kv: kv[1][1] is not None).mapValues(lambda s: (s[0], s[1]))
        else:
            initial = self._initial_state()
            states = None if initial is None else initial.mapValues(lambda v: (v, time_ms))
        new = parent._get_or_compute(time_ms) or ctx.emptyRDD()
        n = self._num_partitions or ctx.defaultParallelism
        states = states if states is not None else ctx.emptyRDD()
        func, timeout_ms = self.func, self.timeout_ms
        return new.cogroup(states, n).map(lambda kv: (kv[0], map_key(func, timeout_ms, time_ms, kv[0], kv[1])))
