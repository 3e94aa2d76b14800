"""RDD: an immutable, partitioned dataset of Arrow tables with lineage (PySpark's RDD API).

Each RDD knows its parents (``dependencies``) and how to compute one partition from them
(``_compute(split, tc)``). Narrow transformations compose into one function per partition (PySpark's
PipelinedRDD), so a chain of map/filter/flatMap runs as one task; tables are built only at stage
boundaries: shuffle, cache, checkpoint, collect and output.
"""
from __future__ import annotations

import bisect
import copy
import functools
import heapq
import itertools
import math
import operator
import random
import re
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

import pyarrow as pa

from dstream.driver.dag import MapStatus, NarrowDependency, ShuffleDependency
from dstream.driver.storage import Location
from dstream.executors import block_ids
from dstream.executors.base import TaskContext
from dstream import html, records
from dstream.records import Partition, as_rows, as_table
from dstream.shuffle import (Aggregator, _identity, count_values, merge_combiners, portable_hash, read_bucket,
                             reducer, write_map_output)
from dstream.sinks import get_sink
from dstream.sql import check_query, run_query

if TYPE_CHECKING:
    from dstream.context import Context

#: the record type of an RDD (``RDD[str]``, ``RDD[tuple[str, int]]``)
T_co = TypeVar("T_co", covariant=True)


def _fn_name(f: Callable) -> str:
    if isinstance(f, functools.partial):
        return f"partial({_fn_name(f.func)})"
    name = getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
    module = getattr(f, "__module__", None)
    code = getattr(f, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{module + '.' if module and module not in ('builtins', '_operator') else ''}{name}{where}"


class RDD(Generic[T_co]):
    """A Resilient Distributed Dataset: partitions of Arrow tables plus the lineage that derives them.

    Generic in its record type, as PySpark's is: ``RDD[tuple[str, int]]`` in type hints.
    """

    def __init__(self, ctx: "Context", dependencies: list, num_partitions: int) -> None:
        #: the Context that created it (None inside a task on an executor)
        self.ctx = ctx
        #: unique id within its Context
        self._id = ctx._new_rdd_id()
        #: the lineage edges to the parents
        self.dependencies = dependencies
        #: number of partitions
        self.num_partitions = num_partitions
        #: (num_partitions, partition function) when records are known to be hash-partitioned by key
        self.partitioner: tuple[int, Any] | None = None
        self._name: str | None = None
        self.is_cached = False
        self._checkpoint_dir: str | None = None
        self._checkpoint_rdd: RDD | None = None
        self._lease: Any = None

    # -- lineage and computation ------------------------------------------------------------------
    def _compute(self, split: int, tc: TaskContext) -> Partition:
        raise NotImplementedError

    def _iterator(self, split: int, tc: TaskContext) -> Partition:
        """The partition's data: from the block store when cached, else computed from the parents."""
        if self._checkpoint_rdd is not None:
            return self._checkpoint_rdd._iterator(split, tc)
        if self.is_cached:
            block_id = self._block_id(split)
            table = tc.store.get(block_id)
            if table is None:
                table = as_table(self._compute(split, tc))
                tc.store.put(block_id, table)
            return table
        return self._compute(split, tc)

    def _block_id(self, split: int) -> str:
        return block_ids.rdd_block(self._id, split)

    def _blocks_read(self, split: int, exists: Callable[[str], bool]) -> list[str]:
        """The blocks that computing partition ``split`` in one task may read (``Task.reads``), for
        executors whose workers share nothing: a cached copy when ``exists`` says there is one, else the
        blocks of the parents this partition is computed from, down to the sources and shuffle buckets."""
        if self._checkpoint_rdd is not None:
            return self._checkpoint_rdd._blocks_read(split, exists)
        if self.is_cached and exists(self._block_id(split)):
            return [self._block_id(split)]
        reads = [b for b in self._own_blocks(split) if exists(b)]
        for parent, parent_split in self._narrow_parents(split):
            reads += parent._blocks_read(parent_split, exists)
        return reads

    def _own_blocks(self, split: int) -> list[str]:
        """Blocks partition ``split`` reads itself, not through a parent (driver data, shuffle buckets)."""
        return []

    def _narrow_parents(self, split: int) -> list[tuple["RDD", int]]:
        """The parent partitions partition ``split`` is computed from in the same task; by default every
        partition of every narrow parent (subclasses that know better say so)."""
        return [(dep.rdd, i) for dep in self.dependencies if isinstance(dep, NarrowDependency)
                for i in range(dep.rdd.num_partitions)]

    def is_available(self) -> bool:
        """True when every partition is materialised (cached), so the parents need not run."""
        if self._checkpoint_rdd is not None:
            return True
        if not self.is_cached or self.ctx is None:
            return False
        store = self.ctx.executor.store
        return all(store.contains(self._block_id(i)) for i in range(self.num_partitions))

    def _describe(self) -> str:
        return type(self).__name__

    def toDebugString(self) -> str:
        """The lineage, one RDD a line; each shuffle boundary starts a ``+-`` branch indented one step
        further (the layout of Spark's ``RDD.toDebugString``)."""
        lines: list[str] = []

        def describe(rdd: RDD) -> str:
            return repr(rdd) + (" [cached]" if rdd.is_cached else "")

        def children(rdd: RDD, prefix: str) -> None:
            deps = [d for d in rdd.dependencies if d.rdd is not None]
            for i, dep in enumerate(deps):
                visit(dep.rdd, prefix, isinstance(dep, ShuffleDependency), i == len(deps) - 1)

        def visit(rdd: RDD, prefix: str, shuffle: bool, last: bool) -> None:
            if not shuffle:
                lines.append(prefix + describe(rdd))
                children(rdd, prefix)
                return
            parts = f"({rdd.num_partitions})"
            this_prefix = re.sub(r"\|\s+$", "", prefix)
            lines.append(f"{this_prefix}+-{parts} {describe(rdd)}")
            children(rdd, this_prefix + ("  " if last else "| ") + _bar(parts))

        parts = f"({self.num_partitions})"
        lines.append(f"{parts} {describe(self)}")
        children(self, _bar(parts))
        return "\n".join(lines)

    #: attributes that only make sense on the driver; dropped when an RDD is shipped to an executor
    _DRIVER_ONLY = ("ctx", "_lease", "_data_lease", "_keep")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._DRIVER_ONLY:
            if name in state:
                state[name] = None
        return state

    def __repr__(self) -> str:
        return f"{self._name + ' ' if self._name else ''}{self._describe()}[{self._id}]"

    def _repr_html_(self) -> str:
        """Jupyter's view: partitions, whether cached, the schema where known, and the lineage."""
        return html.rdd_html(self)

    @property
    def context(self) -> "Context":
        return self.ctx

    def getNumPartitions(self) -> int:
        return self.num_partitions

    def __dir__(self) -> list[str]:
        """The user API (PySpark's RDD methods and attributes, plus dstream's), not the lineage internals."""
        return public_api(RDD, extra=("ctx", "is_cached", "partitioner"), internal=("is_available",))

    def id(self) -> int:
        """A unique id for this RDD (within its Context)."""
        return self._id

    def name(self) -> str | None:
        """The name given with ``setName``, or None."""
        return self._name

    def setName(self, name: str) -> "RDD[T_co]":
        """Name this RDD (shown by ``toDebugString``); returns the RDD itself."""
        self._name = name
        return self

    # -- persistence --------------------------------------------------------------------------------
    def cache(self) -> "RDD":
        """Keep computed partitions in the executors' block store."""
        return self.persist()

    def persist(self, storageLevel: Any = None) -> "RDD":
        if not self.is_cached:
            self.is_cached = True
            self._lease = self.ctx._lease_blocks(block_ids.rdd_prefix(self._id))
        return self

    def unpersist(self, blocking: bool = False) -> "RDD":
        """Free the cached partitions (once no BlockRDD made by ``truncated()`` still reads them)."""
        self.is_cached = False
        self._lease = None
        return self

    def _truncated(self) -> "RDD":
        """This RDD without its lineage when all its partitions are cached, else itself.

        Stateful streams build each batch's state on the previous one; reading the previous state
        from its cached blocks keeps the lineage (and the driver's memory) from growing batch by batch.
        """
        if self._checkpoint_rdd is not None:
            return self._checkpoint_rdd
        if self.is_cached and self._lease is not None and self.is_available():
            rdd = BlockRDD(self.ctx, [self._block_id(i) for i in range(self.num_partitions)], self._lease)
            rdd.partitioner = self.partitioner
            return rdd
        return self

    def checkpoint(self) -> None:
        """Save this RDD to the Context's checkpoint directory at its next action and cut its lineage."""
        if self.ctx.checkpoint_dir is None:
            raise ValueError("Checkpoint directory has not been set in the Context: "
                             "call Context.setCheckpointDir(path) first")
        self._checkpoint_dir = self.ctx.checkpoint_dir

    def isCheckpointed(self) -> bool:
        return self._checkpoint_rdd is not None

    def getCheckpointFile(self) -> str | None:
        return self._checkpoint_rdd.directory if self._checkpoint_rdd is not None else None

    def _checkpoints_due(self) -> list["RDD"]:
        """The RDDs an action must checkpoint: this one if marked, else the nearest marked ancestors
        (Spark's ``doCheckpoint``)."""
        pending: list[RDD] = []
        seen: set[int] = set()

        def find(rdd: RDD) -> None:
            if rdd._id in seen:
                return
            seen.add(rdd._id)
            if rdd._checkpoint_dir is not None:
                if rdd._checkpoint_rdd is None:
                    pending.append(rdd)
                return
            for dep in rdd.dependencies:
                if isinstance(dep.rdd, RDD):
                    find(dep.rdd)

        find(self)
        return pending

    def _after_action(self) -> None:
        """Write the data checkpoints the action marked (the Context writes them: files are the io layer's
        business) and cut each checkpointed RDD's lineage there."""
        for rdd in self._checkpoints_due():
            checkpoint = self.ctx.write_checkpoint(rdd, rdd._checkpoint_dir)
            rdd._checkpoint_rdd = checkpoint
            rdd.dependencies = [NarrowDependency(checkpoint)]

    # -- narrow transformations ---------------------------------------------------------------------
    def mapPartitionsWithIndex(self, f: Callable[[int, Iterable[Any]], Iterable[Any]],
                               preservesPartitioning: bool = False) -> "RDD":
        """Apply ``f(index, records)`` to each partition."""
        name = f"mapPartitionsWithIndex({_fn_name(f)})"
        return PipelinedRDD(self, lambda i, part: _iterable(f(i, as_rows(part)), name), preservesPartitioning,
                            name)

    def mapPartitions(self, f: Callable[[Iterable[Any]], Iterable[Any]],
                      preservesPartitioning: bool = False) -> "RDD":
        name = f"mapPartitions({_fn_name(f)})"
        return PipelinedRDD(self, lambda _, part: _iterable(f(as_rows(part)), name), preservesPartitioning,
                            name)

    def map(self, f: Callable[[Any], Any], preservesPartitioning: bool = False) -> "RDD":
        return PipelinedRDD(self, lambda _, part: map(f, as_rows(part)), preservesPartitioning,
                            f"map({_fn_name(f)})")

    def flatMap(self, f: Callable[[Any], Iterable[Any]], preservesPartitioning: bool = False) -> "RDD":
        chain = itertools.chain.from_iterable
        return PipelinedRDD(self, lambda _, part: chain(map(f, as_rows(part))), preservesPartitioning,
                            f"flatMap({_fn_name(f)})")

    def filter(self, f: Callable[[Any], bool]) -> "RDD":
        return PipelinedRDD(self, lambda _, part: builtin_filter(f, as_rows(part)), True,
                            f"filter({_fn_name(f)})")

    def mapValues(self, f: Callable[[Any], Any]) -> "RDD":
        return PipelinedRDD(self, lambda _, part: ((k, f(v)) for k, v in as_rows(part)), True,
                            f"mapValues({_fn_name(f)})")

    def flatMapValues(self, f: Callable[[Any], Iterable[Any]]) -> "RDD":
        return PipelinedRDD(self, lambda _, part: ((k, x) for k, v in as_rows(part) for x in f(v)), True,
                            f"flatMapValues({_fn_name(f)})")

    def keys(self) -> "RDD":
        return PipelinedRDD(self, _keys_of, False, "keys")

    def values(self) -> "RDD":
        return PipelinedRDD(self, _values_of, False, "values")

    def glom(self) -> "RDD":
        """One record per partition: the list of its records."""
        return PipelinedRDD(self, lambda _, part: [list(as_rows(part))], False, "glom")

    def keyBy(self, f: Callable[[Any], Any]) -> "RDD":
        return self.map(lambda x: (f(x), x))

    def mapInArrow(self, f: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]) -> "RDD":
        """Apply ``f`` to each partition's record batches; ``f`` yields record batches."""
        name = _fn_name(f)
        op = f"mapInArrow({name})"
        return PipelinedRDD(self, lambda _, part: records.from_batches(
            _iterable(f(records.batches_of(as_table(part))), op), name), False, op)

    def mapInPandas(self, f: Callable[[Iterator[Any]], Iterator[Any]]) -> "RDD":
        """Apply ``f`` to each partition as pandas DataFrames; ``f`` yields DataFrames."""
        name = _fn_name(f)

        def run(_: int, part: Partition) -> pa.Table:
            frames = (records_to_pandas(pa.Table.from_batches([b])) for b in
                      records.batches_of(as_table(part)))
            out = []
            for df in _iterable(f(frames), f"mapInPandas({name})"):
                if not hasattr(df, "columns"):
                    raise TypeError(f"{name} must yield pandas DataFrames, got {type(df).__name__}")
                out.append(pa.Table.from_pandas(df, preserve_index=False))
            return records.concat(out)

        return PipelinedRDD(self, run, False, f"mapInPandas({name})")

    def sql(self, query: str, name: str = "batch") -> "RDD":
        """The result of a SQL ``query`` (DuckDB's dialect) over these records, as an RDD of ``Row`` records.

        The records are the relation ``name`` (default ``batch``); its columns are those ``toArrow()``
        shows: ``value`` for scalars, ``key`` and ``value`` for pairs, the field names for Rows. The
        result's ``toPandas()`` has the query's columns; its records are Rows (a one-column result gives
        scalars, a ``key``/``value`` result pairs, as for any table). Needs ``pip install 'dstream[sql]'``.

        Lazy, like other transformations, and honest about aggregates: the query runs once over the
        whole RDD, never per partition. The partitions are computed in parallel and gathered into one
        (a shuffle boundary), and one task runs DuckDB over them as one Arrow table, on an executor (or on
        the driver when the batch is small, like any small final stage). So the result has one partition
        (``repartition`` it for parallel work after). The query is parsed here, so a syntax error raises
        ``dstream.sql.SQLError`` at once; an error DuckDB finds when it runs (an unknown column) fails
        the action, naming the query. Columns of pickled Python objects: see ``dstream.sql``.
        """
        check_query(query, name)
        whole = self if self.num_partitions == 1 else GatherRDD(self)
        label = query if len(query) <= 60 else query[:57] + "..."
        return PipelinedRDD(whole, functools.partial(run_query, query, name), False, f"sql({label!r})")

    def union(self, other: "RDD") -> "RDD":
        return UnionRDD(self.ctx, [self, other])

    def __add__(self, other: "RDD") -> "RDD":
        return self.union(other)

    def cartesian(self, other: "RDD") -> "RDD":
        return CartesianRDD(self, other)

    def coalesce(self, numPartitions: int, shuffle: bool = False) -> "RDD":
        _check_partitions(numPartitions, "numPartitions")
        if shuffle:
            return self.repartition(numPartitions)
        return CoalescedRDD(self, numPartitions)

    def zipWithIndex(self) -> "RDD":
        counts = self.mapPartitions(lambda it: [sum(1 for _ in it)]).collect()
        starts = [0] + list(itertools.accumulate(counts))[:-1]
        return self.mapPartitionsWithIndex(lambda i, it: ((x, starts[i] + j) for j, x in enumerate(it)))

    def sample(self, withReplacement: bool, fraction: float, seed: int | None = None) -> "RDD":
        if fraction < 0:
            raise ValueError(f"fraction must be non-negative, got {fraction}")
        base = random.randrange(1 << 30) if seed is None else seed

        def pick(i: int, it: Iterable[Any]) -> Iterator[Any]:
            rng = random.Random(base + i)
            for x in it:
                if withReplacement:
                    for _ in range(_poisson(rng, fraction)):
                        yield x
                elif rng.random() < fraction:
                    yield x

        return self.mapPartitionsWithIndex(pick, True)

    # -- shuffles -----------------------------------------------------------------------------------
    def _default_partitions(self, numPartitions: int | None, *others: "RDD") -> int:
        """``numPartitions``, or by default (Spark's rule) ``spark.default.parallelism`` when it is set,
        else the most partitions among this RDD and ``others``."""
        if numPartitions is None:
            if "spark.default.parallelism" in self.ctx.conf:
                return self.ctx.defaultParallelism
            return max(r.num_partitions for r in (self, *others))
        return _check_partitions(numPartitions, "numPartitions")

    def partitionBy(self, numPartitions: int | None, partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        """Hash-partition (key, value) records by ``partitionFunc(key) % numPartitions``."""
        n = self._default_partitions(numPartitions)
        func = None if partitionFunc is portable_hash else partitionFunc
        if self.partitioner == (n, func):
            return self
        return ShuffledRDD(self, n, func, None, what="partitionBy")

    def combineByKey(self, createCombiner: Callable, mergeValue: Callable, mergeCombiners: Callable,
                     numPartitions: int | None = None,
                     partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        agg = Aggregator(createCombiner, mergeValue, mergeCombiners)
        return self._combine(agg, numPartitions, partitionFunc, "combineByKey")

    def _combine(self, agg: Aggregator, numPartitions: int | None, partitionFunc: Callable,
                 what: str) -> "RDD":
        n = self._default_partitions(numPartitions)
        func = None if partitionFunc is portable_hash else partitionFunc
        return ShuffledRDD(self, n, func, agg, what=what)

    def reduceByKey(self, func: Callable[[Any, Any], Any], numPartitions: int | None = None,
                    partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        """Merge the values of each key with ``func``; ``operator.add``, ``min``, ``max`` run in Arrow."""
        return self._combine(reducer(func), numPartitions, partitionFunc, f"reduceByKey({_fn_name(func)})")

    def aggregateByKey(self, zeroValue: Any, seqFunc: Callable, combFunc: Callable,
                       numPartitions: int | None = None,
                       partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        return self.combineByKey(lambda v: seqFunc(copy.deepcopy(zeroValue), v), seqFunc, combFunc,
                                 numPartitions, partitionFunc)

    def foldByKey(self, zeroValue: Any, func: Callable, numPartitions: int | None = None,
                  partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        return self.aggregateByKey(zeroValue, func, func, numPartitions, partitionFunc)

    def groupByKey(self, numPartitions: int | None = None,
                   partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        """Group the values of each key into a list."""
        return self._combine(Aggregator(_new_list, _append, _extend), numPartitions, partitionFunc,
                             "groupByKey")

    def groupBy(self, f: Callable[[Any], Any], numPartitions: int | None = None,
                partitionFunc: Callable[[Any], int] = portable_hash) -> "RDD":
        return self.map(lambda x: (f(x), x)).groupByKey(numPartitions, partitionFunc)

    def distinct(self, numPartitions: int | None = None) -> "RDD":
        return (self.map(lambda x: (x, None)).reduceByKey(lambda x, _: x, numPartitions)
                .map(operator.itemgetter(0)))

    def repartition(self, numPartitions: int) -> "RDD":
        """Exactly ``numPartitions`` partitions, records spread round-robin through a shuffle."""
        n = _check_partitions(numPartitions, "numPartitions")

        def spread(i: int, it: Iterable[Any]) -> Iterator[tuple[int, Any]]:
            start = random.Random(i).randrange(n)
            return ((start + j, x) for j, x in enumerate(it))

        return (ShuffledRDD(self.mapPartitionsWithIndex(spread), n, _identity, None, what="repartition")
                .values())

    def subtractByKey(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        return self._subtract_by_key(other, numPartitions)

    def _subtract_by_key(self, other: "RDD", numPartitions: int | None) -> "RDD":
        return self.cogroup(other, numPartitions).flatMap(
            lambda kvw: [(kvw[0], v) for v in kvw[1][0]] if not kvw[1][1] else [])

    def subtract(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        return self.map(lambda x: (x, True))._subtract_by_key(other.map(lambda x: (x, True)),
                                                              numPartitions).keys()

    def intersection(self, other: "RDD") -> "RDD":
        return (self.map(lambda x: (x, None)).cogroup(other.map(lambda x: (x, None)))
                .filter(lambda kv: kv[1][0] and kv[1][1]).keys())

    def cogroup(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        """(key, (values in self, values in other)) for every key in either."""
        return self.groupWith(other, numPartitions=numPartitions)

    def groupWith(self, other: "RDD", *others: "RDD", numPartitions: int | None = None) -> "RDD":
        rdds = [self, other, *others]
        n = self._default_partitions(numPartitions, other, *others)
        tagged = [r.mapValues(functools.partial(_tag, i)) for i, r in enumerate(rdds)]
        width = len(rdds)
        return (UnionRDD(self.ctx, tagged).groupByKey(n)
                .mapValues(functools.partial(_untag, width)))

    def join(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        """Inner join of two pair RDDs: (key, (v, w)) for every pair of matching values."""
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda vw: [(v, w) for v in vw[0] for w in vw[1]])

    def leftOuterJoin(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda vw: [(v, w) for v in vw[0] for w in (vw[1] or [None])])

    def rightOuterJoin(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda vw: [(v, w) for v in (vw[0] or [None]) for w in vw[1]])

    def fullOuterJoin(self, other: "RDD", numPartitions: int | None = None) -> "RDD":
        return self.cogroup(other, numPartitions).flatMapValues(
            lambda vw: [(v, w) for v in (vw[0] or [None]) for w in (vw[1] or [None])])

    def sortBy(self, keyfunc: Callable[[Any], Any], ascending: bool = True,
               numPartitions: int | None = None) -> "RDD":
        return self.keyBy(keyfunc).sortByKey(ascending, numPartitions).values()

    def sortByKey(self, ascending: bool = True, numPartitions: int | None = None,
                  keyfunc: Callable[[Any], Any] = _identity) -> "RDD":
        """Range-partition by sampled key bounds, then sort each partition."""
        n = self._default_partitions(numPartitions)

        def sort_partition(it: Iterable[tuple[Any, Any]]) -> list:
            return sorted(it, key=lambda kv: keyfunc(kv[0]), reverse=not ascending)

        if n == 1:
            return self.coalesce(1).mapPartitions(sort_partition, True)
        sample = self.map(lambda kv: keyfunc(kv[0])).sample(False, min(1.0, 20.0 * n / max(1, self.count())),
                                                            seed=7).collect()
        sample = sorted(sample)
        bounds = [sample[int(len(sample) * (i + 1) / n)] for i in range(n - 1)] if sample else []

        def range_partition(k: Any) -> int:
            p = bisect.bisect_left(bounds, keyfunc(k))
            return p if ascending else n - 1 - p

        return ShuffledRDD(self, n, range_partition, None, what="sortByKey").mapPartitions(sort_partition, True)

    # -- actions ------------------------------------------------------------------------------------
    def _run(self, func: Callable[[int, TaskContext], Any], description: str,
             partitions: Sequence[int] | None = None, local_ok: bool = True) -> list[Any]:
        """Run an action's job; ``local_ok``: a small final stage may run on the driver (see DAGScheduler)."""
        results = self.ctx.run_job(self, func, partitions, description, local_ok)
        self._after_action()
        return results

    def collect(self) -> list[Any]:
        """All records, partition by partition."""
        tables = self._run(_collect_task(self), "collect")
        return [r for t in tables for r in records.to_rows(t)]

    def toArrow(self) -> pa.Table:
        """All partitions as one Arrow table (pickled Python values stay binary)."""
        return records.concat(self._run(_collect_task(self), "toArrow"))

    def toPandas(self) -> Any:
        """All partitions as one pandas DataFrame (pickled Python values become object columns)."""
        return records_to_pandas(self.toArrow())

    def toLocalIterator(self) -> Iterator[Any]:
        for i in range(self.num_partitions):
            for t in self._run(_collect_task(self), "toLocalIterator", [i]):
                yield from records.to_rows(t)

    def count(self) -> int:
        return sum(self._run(_count_task(self), "count"))

    def isEmpty(self) -> bool:
        return self.num_partitions == 0 or len(self.take(1)) == 0

    def take(self, num: int) -> list[Any]:
        """The first ``num`` records, scanning as few partitions as it can."""
        out: list[Any] = []
        scanned, step = 0, 1
        while len(out) < num and scanned < self.num_partitions:
            parts = list(range(scanned, min(scanned + step, self.num_partitions)))
            want = num - len(out)
            for rows in self._run(_take_task(self, want), "take", parts):
                out.extend(rows[: num - len(out)])
            scanned += len(parts)
            step *= 4
        return out[:num]

    def first(self) -> Any:
        rows = self.take(1)
        if not rows:
            raise ValueError("RDD is empty")
        return rows[0]

    def top(self, num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
        parts = self.mapPartitions(lambda it: [heapq.nlargest(num, it, key=key)]).collect()
        return heapq.nlargest(num, itertools.chain.from_iterable(parts), key=key)

    def takeOrdered(self, num: int, key: Callable[[Any], Any] | None = None) -> list[Any]:
        parts = self.mapPartitions(lambda it: [heapq.nsmallest(num, it, key=key)]).collect()
        return heapq.nsmallest(num, itertools.chain.from_iterable(parts), key=key)

    def reduce(self, f: Callable[[Any, Any], Any]) -> Any:
        """Reduce all records with the commutative, associative ``f``."""
        def part(it: Iterable[Any]) -> list:
            it = iter(it)
            try:
                first = next(it)
            except StopIteration:
                return []
            return [functools.reduce(f, it, first)]

        vals = self.mapPartitions(part).collect()
        if not vals:
            raise ValueError("Can not reduce() empty RDD")
        return functools.reduce(f, vals)

    def fold(self, zeroValue: Any, op: Callable[[Any, Any], Any]) -> Any:
        vals = self.mapPartitions(lambda it: [functools.reduce(op, it, copy.deepcopy(zeroValue))]).collect()
        return functools.reduce(op, vals, zeroValue)

    def aggregate(self, zeroValue: Any, seqOp: Callable, combOp: Callable) -> Any:
        vals = self.mapPartitions(lambda it: [functools.reduce(seqOp, it, copy.deepcopy(zeroValue))]).collect()
        return functools.reduce(combOp, vals, zeroValue)

    def sum(self) -> Any:
        return self.fold(0, operator.add)

    def max(self, key: Callable[[Any], Any] | None = None) -> Any:
        return self.reduce(lambda a, b: max(a, b, key=key) if key else max(a, b))

    def min(self, key: Callable[[Any], Any] | None = None) -> Any:
        return self.reduce(lambda a, b: min(a, b, key=key) if key else min(a, b))

    def mean(self) -> float:
        s, c = self.aggregate((0, 0), lambda a, x: (a[0] + x, a[1] + 1), lambda a, b: (a[0] + b[0], a[1] + b[1]))
        return s / c if c else float("nan")

    def foreach(self, f: Callable[[Any], None]) -> None:
        """Apply ``f`` to every record, on the executors."""
        def part(it: Iterable[Any]) -> list:
            for x in it:
                f(x)
            return []
        self.mapPartitions(part).count()

    def foreachPartition(self, f: Callable[[Iterable[Any]], None]) -> None:
        def part(it: Iterable[Any]) -> list:
            f(it)
            return []
        self.mapPartitions(part).count()

    def countByKey(self) -> dict:
        return self.keys().countByValue()

    def countByValue(self) -> dict:
        """How often each record occurs, as a dict (Arrow counts typed columns)."""
        per_partition = PipelinedRDD(self, lambda _, part: count_values(part), False, "countByValue")
        counts = per_partition.reduceByKey(operator.add).collect()
        out: dict = defaultdict(int)
        for k, c in counts:
            out[k] += c
        return out

    def collectAsMap(self) -> dict:
        return dict(self.collect())

    def lookup(self, key: Any) -> list:
        return self.filter(lambda kv: kv[0] == key).values().collect()

    def saveAsTextFile(self, path: str, compressionCodecClass: str | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> None:
        """Write ``str(record)`` lines as ``part-NNNNN`` files under ``path`` (an fsspec URL, opened with
        ``storage_options``), then ``_SUCCESS`` with their manifest."""
        get_sink("text")().save(self, Location.of(path, storage_options))

    def saveAsParquetFile(self, path: str, storage_options: Mapping[str, Any] | None = None) -> None:
        """Write each non-empty partition as a ``part-NNNNN.parquet`` file under ``path``, then ``_SUCCESS``
        with their manifest (``storage_options`` as for ``saveAsTextFile``)."""
        get_sink("parquet")().save(self, Location.of(path, storage_options))


builtin_filter = filter


def public_api(cls: type, extra: Iterable[str] = (), internal: Iterable[str] = ()) -> list[str]:
    """What ``dir()`` shows of an RDD or DStream: the public names its base class defines, plus ``extra``
    attributes, without the ``internal`` protocol names the driver needs (dunder methods stay too)."""
    names = {n for n in vars(cls) if not n.startswith("_")} | set(extra)
    names -= set(internal)
    return sorted(names | {n for n in dir(cls) if n.startswith("__")})


def _check_partitions(n: Any, name: str) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n


def _iterable(result: Any, name: str) -> Any:
    """``result`` when it can be iterated, else a TypeError naming the user function that returned it."""
    if not hasattr(result, "__iter__"):
        raise TypeError(f"{name} must return an iterable (a generator or a list), "
                        f"got {type(result).__name__}")
    return result


def _bar(partitions: str) -> str:
    """The ``|`` continuing a stage below its ``(n)`` header, as Spark aligns it."""
    offset = (len(partitions) - 1) // 2
    return " " * offset + "|" + " " * (len(partitions) - offset)


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _new_list(v: Any) -> list:
    return [v]


def _append(acc: list, v: Any) -> list:
    acc.append(v)
    return acc


def _extend(a: list, b: list) -> list:
    a.extend(b)
    return a


def _tag(i: int, v: Any) -> tuple[int, Any]:
    return (i, v)


def _untag(width: int, tagged: list) -> tuple:
    groups: tuple[list, ...] = tuple([] for _ in range(width))
    for i, v in tagged:
        groups[i].append(v)
    return groups


def _keys_of(_: int, part: Partition) -> Iterable[Any]:
    if isinstance(part, pa.Table) and records.is_pair_table(part):
        return part.select(["key"]).rename_columns(["value"])
    return (kv[0] for kv in as_rows(part))


def _values_of(_: int, part: Partition) -> Iterable[Any]:
    if isinstance(part, pa.Table) and records.is_pair_table(part):
        return part.select(["value"])
    return (kv[1] for kv in as_rows(part))


def records_to_pandas(table: pa.Table) -> Any:
    """A DataFrame of a table; pickled columns become object columns of the Python values."""
    pickled = [f.name for f in table.schema if records.is_pickled(f)]
    df = table.drop_columns(pickled).to_pandas() if pickled else table.to_pandas()
    for name in pickled:
        df[name] = records.decode_column(table.column(name), table.schema.field(name))
    return df[table.column_names] if pickled else df


# Task functions are module-level factories so that they pickle small and by reference.
def _collect_task(rdd: RDD) -> Callable[[int, TaskContext], pa.Table]:
    return functools.partial(_collect_part, rdd)


def _collect_part(rdd: RDD, split: int, tc: TaskContext) -> pa.Table:
    return as_table(rdd._iterator(split, tc))


def _count_task(rdd: RDD) -> Callable[[int, TaskContext], int]:
    return functools.partial(_count_part, rdd)


def _count_part(rdd: RDD, split: int, tc: TaskContext) -> int:
    part = rdd._iterator(split, tc)
    if isinstance(part, pa.Table):
        return part.num_rows
    return sum(1 for _ in part)


def _take_task(rdd: RDD, n: int) -> Callable[[int, TaskContext], list]:
    return functools.partial(_take_part, rdd, n)


def _take_part(rdd: RDD, n: int, split: int, tc: TaskContext) -> list:
    part = rdd._iterator(split, tc)
    if isinstance(part, pa.Table):
        return records.to_rows(part.slice(0, n))
    return list(itertools.islice(part, n))


class PipelinedRDD(RDD):
    """Narrow transformations fused into one function per partition (PySpark's PipelinedRDD)."""

    def __init__(self, prev: RDD, func: Callable[[int, Partition], Partition], preserves_partitioning: bool,
                 op: str) -> None:
        if (isinstance(prev, PipelinedRDD) and not prev.is_cached and prev._checkpoint_dir is None
                and prev._checkpoint_rdd is None):
            inner = prev.func
            outer = func
            self.func = lambda i, part: outer(i, inner(i, part))
            self.ops = prev.ops + [op]
            source = prev.source
        else:
            self.func = func
            self.ops = [op]
            source = prev
        super().__init__(prev.ctx, [NarrowDependency(source)], source.num_partitions)
        #: the RDD the fused functions read
        self.source = source
        self.partitioner = prev.partitioner if preserves_partitioning else None

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        return self.func(split, self.source._iterator(split, tc))

    def _narrow_parents(self, split: int) -> list[tuple[RDD, int]]:
        return [(self.source, split)]

    def _describe(self) -> str:
        return "PipelinedRDD " + " -> ".join(self.ops)


class ParallelCollectionRDD(RDD):
    """Data from the driver, one block per slice in the executors' block store."""

    def __init__(self, ctx: "Context", slices: list[pa.Table]) -> None:
        super().__init__(ctx, [], len(slices))
        self._data_lease = ctx._lease_blocks(block_ids.data_prefix(self._id))
        for i, table in enumerate(slices):
            ctx.executor.store.put(block_ids.data_block(self._id, i), table)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        table = tc.store.get(block_ids.data_block(self._id, split))
        if table is None:
            raise RuntimeError(f"{self!r}: partition {split} is no longer in the block store")
        return table

    def _own_blocks(self, split: int) -> list[str]:
        return [block_ids.data_block(self._id, split)]

    def is_available(self) -> bool:
        return True


class BlockRDD(RDD):
    """Partitions already in the block store (cached partitions of another RDD, kept alive by a lease)."""

    def __init__(self, ctx: "Context", block_ids: list[str], lease: Any) -> None:
        super().__init__(ctx, [], len(block_ids))
        self.block_ids = block_ids
        self._keep = lease

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_keep"] = None
        return state

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        table = tc.store.get(self.block_ids[split])
        if table is None:
            raise RuntimeError(f"{self!r}: block {self.block_ids[split]} is no longer in the block store")
        return table

    def _own_blocks(self, split: int) -> list[str]:
        return [self.block_ids[split]]

    def is_available(self) -> bool:
        return True


class EmptyRDD(RDD):
    def __init__(self, ctx: "Context") -> None:
        super().__init__(ctx, [], 0)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        return []


class UnionRDD(RDD):
    """The partitions of several RDDs side by side."""

    def __init__(self, ctx: "Context", rdds: Sequence[RDD]) -> None:
        super().__init__(ctx, [NarrowDependency(r) for r in rdds], sum(r.num_partitions for r in rdds))
        self._index = [(j, i) for j, r in enumerate(rdds) for i in range(r.num_partitions)]

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        j, i = self._index[split]
        return self.dependencies[j].rdd._iterator(i, tc)

    def _narrow_parents(self, split: int) -> list[tuple[RDD, int]]:
        j, i = self._index[split]
        return [(self.dependencies[j].rdd, i)]


class CoalescedRDD(RDD):
    """Fewer partitions by concatenating contiguous parent partitions, without a shuffle."""

    def __init__(self, prev: RDD, n: int) -> None:
        n = min(n, max(prev.num_partitions, 1))
        super().__init__(prev.ctx, [NarrowDependency(prev)], n if prev.num_partitions else 0)
        p = prev.num_partitions
        self._groups = [list(range(i * p // n, (i + 1) * p // n)) for i in range(n)] if p else []

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        prev = self.dependencies[0].rdd
        parts = [prev._iterator(i, tc) for i in self._groups[split]]
        if all(isinstance(x, pa.Table) for x in parts):
            return records.concat(parts)
        return itertools.chain.from_iterable(as_rows(x) for x in parts)

    def _narrow_parents(self, split: int) -> list[tuple[RDD, int]]:
        return [(self.dependencies[0].rdd, i) for i in self._groups[split]]


class CartesianRDD(RDD):
    def __init__(self, a: RDD, b: RDD) -> None:
        super().__init__(a.ctx, [NarrowDependency(a), NarrowDependency(b)], a.num_partitions * b.num_partitions)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        a, b = self.dependencies[0].rdd, self.dependencies[1].rdd
        i, j = divmod(split, b.num_partitions)
        right = list(as_rows(b._iterator(j, tc)))
        return ((x, y) for x in as_rows(a._iterator(i, tc)) for y in right)

    def _narrow_parents(self, split: int) -> list[tuple[RDD, int]]:
        a, b = self.dependencies[0].rdd, self.dependencies[1].rdd
        i, j = divmod(split, b.num_partitions)
        return [(a, i), (b, j)]


class ShuffledRDD(RDD):
    """The reduce side of a shuffle: bucket ``split`` of every map output, merged by the aggregator."""

    def __init__(self, prev: RDD, num_partitions: int, partition_func: Callable[[Any], int] | None,
                 aggregator: Aggregator | None, map_side_combine: bool = True, what: str = "shuffle") -> None:
        self.aggregator = aggregator
        self.partition_func = partition_func
        self.what = what
        writer = _MapOutputWriter(prev, num_partitions, partition_func, aggregator, map_side_combine, what)
        dep = ShuffleDependency(prev, num_partitions, writer.task)
        writer.shuffle_id = dep.shuffle_id
        super().__init__(prev.ctx, [dep], num_partitions)
        self.partitioner = (num_partitions, partition_func)
        # When the driver drops this RDD, its buckets go too (Spark's ContextCleaner).
        weakref.finalize(self, prev.ctx.forget_shuffle, dep.shuffle_id)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        dep = self.dependencies[0]
        table = read_bucket(tc, dep.shuffle_id, dep.num_maps, split)
        if self.aggregator is None:
            return table
        return merge_combiners(table, self.aggregator)

    def _own_blocks(self, split: int) -> list[str]:
        dep = self.dependencies[0]
        return [block_ids.shuffle_block(dep.shuffle_id, m, split) for m in range(dep.num_maps)]

    def _describe(self) -> str:
        return f"ShuffledRDD {self.what}"


class GatherRDD(RDD):
    """All of the parent's records in one partition, across a stage boundary: the parent's partitions
    are computed in parallel (one map task each, its table written to the block store) and the one
    partition reads them all. For what needs a whole RDD at once, such as ``sql``."""

    def __init__(self, prev: RDD) -> None:
        writer = _GatherWriter(prev)
        dep = ShuffleDependency(prev, 1, writer.task)
        writer.shuffle_id = dep.shuffle_id
        super().__init__(prev.ctx, [dep], 1)
        weakref.finalize(self, prev.ctx.forget_shuffle, dep.shuffle_id)

    def _compute(self, split: int, tc: TaskContext) -> Partition:
        dep = self.dependencies[0]
        return read_bucket(tc, dep.shuffle_id, dep.num_maps, 0)

    def _own_blocks(self, split: int) -> list[str]:
        dep = self.dependencies[0]
        return [block_ids.shuffle_block(dep.shuffle_id, m, 0) for m in range(dep.num_maps)]


class _GatherWriter:
    """Makes the map tasks of a GatherRDD (kept apart from it so the RDD can be freed)."""

    def __init__(self, prev: RDD) -> None:
        self.prev = prev
        self.shuffle_id = -1

    def task(self, map_index: int) -> Callable[[TaskContext], Any]:
        return functools.partial(_write_whole_partition, self.prev, map_index, self.shuffle_id)


def _write_whole_partition(parent: RDD, map_index: int, shuffle_id: int, tc: TaskContext) -> MapStatus:
    """The map task of a GatherRDD: the partition's table as its only bucket; reports its row count."""
    table = as_table(parent._iterator(map_index, tc))
    if table.num_rows:
        tc.store.put(block_ids.shuffle_block(shuffle_id, map_index, 0), table)
    return MapStatus(shuffle_id, map_index, (table.num_rows,))


class _MapOutputWriter:
    """Makes the map tasks of one shuffle (kept apart from the ShuffledRDD so the RDD can be freed)."""

    def __init__(self, prev: RDD, n: int, partition_func: Callable[[Any], int] | None,
                 aggregator: Aggregator | None, map_side_combine: bool, what: str) -> None:
        self.prev, self.n, self.partition_func = prev, n, partition_func
        self.aggregator, self.map_side_combine, self.what = aggregator, map_side_combine, what
        self.shuffle_id = -1

    def task(self, map_index: int) -> Callable[[TaskContext], Any]:
        return functools.partial(write_map_output, self.prev, map_index, self.shuffle_id, self.n,
                                 self.partition_func, self.aggregator, self.map_side_combine, self.what)
