"""Context: the batch entry point (SparkContext's role): creates RDDs and owns the executors."""
from __future__ import annotations

import atexit
import itertools
import os
import re
import threading
import weakref
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar

import pyarrow as pa

from dstream.driver.checkpoint import HmacSigner, signer
from dstream.driver.dag import DAGScheduler
from dstream.driver.logs import set_log_level
from dstream.driver.retries import TaskRetries
from dstream.executors.base import Executor, SpeculationConf, get_backend
from dstream.executors.launcher import warm_up_in_background
from dstream.executors.conf_values import positive_int
from dstream import accumulators, records
from dstream.accumulators import Accumulator, AccumulatorParam
from dstream.broadcast import Broadcast
from dstream.conf import SparkConf
from dstream.version import __version__
from dstream.io import TextFileRDD, expand_paths, write_rdd_checkpoint
from dstream.rdd import RDD, EmptyRDD, ParallelCollectionRDD, UnionRDD, _check_partitions

#: PySpark's explanation (SPARK-5063) when a Context is captured by code that leaves the driver
CONTEXT_ONLY_ON_DRIVER = ("It appears that you are attempting to reference SparkContext from a broadcast variable, "
                          "action, or transformation. SparkContext can only be used on the driver, not in code "
                          "that it run on workers. For more information, see SPARK-5063.")

#: the masters that run on this machine: local[N], local[*], threads[N] (and without [N])
LOCAL_MASTER = re.compile(r"^(local|threads)(?:\[(\*|\d+)\])?$")

#: the modules of dstream whose code tasks run: each executor process of ``local[N]`` imports them as it
#: starts, while the driver goes on, so that the first batch's tasks do not wait for the imports
TASK_MODULES = ("dstream.records", "dstream.shuffle", "dstream.rdd", "dstream.io", "dstream.state",
                "dstream.sinks.files", "dstream.dstream")
#: what the driver imports in the background once its Context has started the executors: pandas, which
#: ``import dstream`` leaves out (0.2 s) but pyarrow imports on its first array built from Python objects
DRIVER_WARM_UP = ("pandas",)


def make_executor(master: Any, start_method: str | None = None) -> Executor:
    """The executor for a master string: ``local[N]``/``local[*]`` (processes, started by ``start_method``:
    ``dstream.executor.startMethod``), ``threads[N]``, ``dask://host:port`` or a ``distributed.Client``."""
    if isinstance(master, Executor):
        return master
    if not isinstance(master, str):
        if type(master).__name__ == "Client":
            return get_backend("dask")(master)
        raise ValueError(f"master must be a string like 'local[*]' or a distributed.Client, got {master!r}")
    if master.startswith(("dask://", "tcp://")):
        return get_backend("dask")(master)
    m = LOCAL_MASTER.match(master.strip())
    if not m:
        raise ValueError(f"unknown master {master!r}: use 'local[N]', 'local[*]', 'threads[N]' or 'dask://HOST:PORT'")
    kind, n = m.group(1), m.group(2)
    if n == "*":
        workers = os.cpu_count() or 1
    elif n is None:
        workers = 1 if kind == "local" else (os.cpu_count() or 1)
    else:
        workers = int(n)
    if workers < 1:
        raise ValueError(f"master {master!r}: the number of workers must be at least 1")
    if kind == "local":
        return get_backend("processes")(workers, preload=TASK_MODULES, start_method=start_method)
    return get_backend("threads")(workers)


class BlockLease:
    """Keeps blocks with an id prefix alive; they are removed when the lease is released or collected."""

    def __init__(self, ctx: "Context", prefix: str) -> None:
        self.prefix = prefix
        self._finalizer = weakref.finalize(self, _remove_blocks, weakref.ref(ctx), prefix)

    def release(self) -> None:
        self._finalizer()


def _remove_blocks(ctx_ref: "weakref.ref[Context]", prefix: str) -> None:
    ctx = ctx_ref()
    if ctx is not None and not ctx._stopped:
        try:
            ctx.executor.remove_blocks(prefix)
        except Exception:  # noqa: BLE001 - best effort
            pass


T = TypeVar("T")


def _settings(conf: SparkConf | Mapping[str, Any] | None) -> dict[str, Any]:
    """A Context's configuration as a dict: a SparkConf's pairs (strings), or a mapping's as given."""
    if conf is None:
        return {}
    if isinstance(conf, SparkConf):
        return dict(conf.getAll())
    if isinstance(conf, Mapping):
        return dict(conf)
    raise TypeError(f"conf must be a SparkConf or a dict, got {type(conf).__name__}")


def _parse_parallelism(value: Any) -> int | None:
    return None if value is None else positive_int("spark.default.parallelism", value)


class Context:
    """The entry point for batch work: ``Context("local[4]").parallelize(range(10), 2).sum()``."""

    _active: ClassVar["Context | None"] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, master: Any = None, appName: str | None = None,
                 conf: SparkConf | Mapping[str, Any] | None = None) -> None:
        settings = _settings(conf)
        if master is None:
            master = settings.get("spark.master", "local[*]")
        if appName is None:
            appName = str(settings.get("spark.app.name", "dstream"))
        if isinstance(master, str):
            settings["spark.master"] = master
        settings["spark.app.name"] = appName
        #: the master the executors were made from
        self.master = master
        self.appName = appName
        #: configuration: ``spark.master``, ``spark.app.name``, ``spark.default.parallelism``,
        #: ``spark.task.maxFailures``, the ``dstream.*`` keys; unknown keys are kept for the user. Values as
        #: given (strings from a SparkConf).
        self.conf: dict[str, Any] = settings
        self._default_parallelism = _parse_parallelism(settings.get("spark.default.parallelism"))
        speculation = SpeculationConf.from_conf(self.conf)
        retries = TaskRetries.from_conf(self.conf)  # checked before any executor starts
        self.executor = make_executor(master, settings.get("dstream.executor.startMethod"))
        warm_up_in_background(DRIVER_WARM_UP)  # after the workers' launcher forked: it waits for none of it
        if any(key.startswith("dstream.speculation") for key in self.conf):
            self.executor.speculation = speculation
        self.scheduler = DAGScheduler(self.executor)
        self.scheduler.on_accumulator_updates = accumulators.merge_updates
        #: a failed task is retried up to ``spark.task.maxFailures`` attempts (default 1, as in local mode)
        self.scheduler.task_retries = retries
        #: where ``RDD.checkpoint`` writes (an fsspec URL), set by ``setCheckpointDir``
        self.checkpoint_dir: str | None = None
        self._rdd_ids = itertools.count()
        self._id_lock = threading.Lock()
        self._stopped = False
        with Context._lock:
            Context._active = self
        atexit.register(self.stop)

    # -- bookkeeping used by RDDs -------------------------------------------------------------------
    def _new_rdd_id(self) -> int:
        with self._id_lock:
            return next(self._rdd_ids)

    def _lease_blocks(self, prefix: str) -> BlockLease:
        return BlockLease(self, prefix)

    def forget_shuffle(self, shuffle_id: int) -> None:
        if not self._stopped:
            self.scheduler.forget_shuffle(shuffle_id)

    def run_job(self, rdd: RDD, func: Callable, partitions: Sequence[int] | None = None,
                description: str = "job", local_ok: bool = False) -> list[Any]:
        if self._stopped:
            raise RuntimeError("this Context has been stopped")
        return self.scheduler.run_job(rdd, func, partitions, description, local_ok)

    def write_checkpoint(self, rdd: RDD, directory: str) -> RDD:
        """Write ``rdd``'s partitions under ``directory`` as a data checkpoint, from the executors in
        parallel; return the RDD that reads them back (used by RDD actions, see ``RDD.checkpoint``)."""
        return write_rdd_checkpoint(rdd, directory)

    # -- public API ---------------------------------------------------------------------------------
    @classmethod
    def active(cls) -> "Context | None":
        """The active Context (created and not stopped), or None."""
        with cls._lock:
            active = cls._active
        return active if active is not None and not active._stopped else None

    @classmethod
    def getOrCreate(cls, master: Any = None, conf: SparkConf | Mapping[str, Any] | None = None) -> "Context":
        """The active Context, or a new one (``Context.getOrCreate(conf)``, as PySpark's, works too)."""
        if isinstance(master, (SparkConf, Mapping)) and conf is None:
            master, conf = None, master
        active = cls.active()
        if active is not None:
            return active
        return cls(master, conf=conf)

    @property
    def defaultParallelism(self) -> int:
        """``spark.default.parallelism`` when set, else the executors' task slots (Spark's rule): the
        default for ``parallelize`` and for shuffles of streams (and of RDDs when the key is set)."""
        return self._default_parallelism or self.executor.num_workers

    @property
    def defaultMinPartitions(self) -> int:
        return min(self.defaultParallelism, 2)

    @property
    def version(self) -> str:
        """The dstream version (SparkContext.version's place)."""
        return __version__

    def getConf(self) -> SparkConf:
        """A copy of the configuration (changing it does not change the Context)."""
        return SparkConf(loadDefaults=False).setAll(self.conf.items())

    def broadcast(self, value: T) -> Broadcast[T]:
        """A read-only ``value`` sent to each executor once (not with every task); tasks read ``.value``."""
        if self._stopped:
            raise RuntimeError("this Context has been stopped")
        return Broadcast(self, value)

    def accumulator(self, value: T, accum_param: AccumulatorParam[T] | None = None) -> Accumulator[T]:
        """An accumulator starting at ``value``: tasks ``add`` to it, the driver reads ``.value``.
        ``accum_param`` may be left out for int, float and complex values."""
        return accumulators.accumulator(value, accum_param)

    def parallelize(self, data: Iterable[Any], numSlices: int | None = None) -> RDD:
        """An RDD of ``data`` cut into ``numSlices`` contiguous, even partitions (as Spark slices)."""
        n = self.defaultParallelism if numSlices is None else _check_partitions(numSlices, "numSlices")
        if isinstance(data, pa.Table):
            length = data.num_rows
            slices = [data.slice(i * length // n, (i + 1) * length // n - i * length // n) for i in range(n)]
        else:
            items = data if isinstance(data, (list, tuple, range)) else list(data)
            length = len(items)
            slices = [records.to_table(list(items[i * length // n:(i + 1) * length // n])) for i in range(n)]
        return ParallelCollectionRDD(self, slices)

    def range(self, start: int, end: int | None = None, step: int = 1, numSlices: int | None = None) -> RDD:
        if end is None:
            start, end = 0, start
        return self.parallelize(range(start, end, step), numSlices)

    def textFile(self, name: str, minPartitions: int | None = None, use_unicode: bool = True,
                 encoding: str = "utf-8", storage_options: Mapping[str, Any] | None = None) -> RDD:
        """The lines of a text file, a directory of them or a glob, at any fsspec URL (``s3://``, ...),
        opened with ``storage_options`` (fsspec's) on the driver and in the tasks."""
        return TextFileRDD(self, expand_paths(name, storage_options), minPartitions or 1, encoding,
                           storage_options)

    def union(self, rdds: Sequence[RDD]) -> RDD:
        rdds = list(rdds)
        if not rdds:
            return self.emptyRDD()
        return UnionRDD(self, rdds)

    def emptyRDD(self) -> RDD:
        return EmptyRDD(self)

    def setCheckpointDir(self, dirName: str) -> None:
        self.checkpoint_dir = dirName

    @property
    def checkpoint_signer(self) -> HmacSigner | None:
        """Signs and verifies data snapshot manifests with the checkpoint key (``dstream.checkpoint.key`` in
        the conf, else ``$DSTREAM_CHECKPOINT_KEY``); None without a key (manifests are then unsigned)."""
        return signer(self.conf)

    def setLogLevel(self, logLevel: str) -> None:
        """Set dstream's log level by Spark's names: ALL, DEBUG, ERROR, FATAL, INFO, OFF, TRACE or WARN
        (any case; ValueError otherwise). At INFO a running stream logs one line per batch (its time,
        records and delays). Applies to the driver's loggers only, not to executor processes. With no
        logging configured, a stderr handler is added so the lines show (``driver.logs.set_log_level``).
        """
        set_log_level(logLevel)

    def stop(self) -> None:
        """Stop the executors (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        with Context._lock:
            if Context._active is self:
                Context._active = None
        self.executor.shutdown()

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __reduce__(self) -> Any:
        raise RuntimeError(CONTEXT_ONLY_ON_DRIVER)

    def __repr__(self) -> str:
        return f"Context(master={self.master!r}, workers={self.executor.num_workers})"
