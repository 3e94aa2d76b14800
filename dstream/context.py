"""Context: the batch entry point (SparkContext's role): creates RDDs and owns the executors."""
from __future__ import annotations

import atexit
import itertools
import os
import re
import threading
import weakref
from typing import Any, Callable, ClassVar, Iterable, Sequence

import pyarrow as pa

from driver.dag import DAGScheduler
from executors.base import Executor, SpeculationConf, get_backend
from dstream import records
from dstream.rdd import RDD, EmptyRDD, ParallelCollectionRDD, UnionRDD, _check_partitions

#: PySpark's explanation (SPARK-5063) when a Context is captured by code that leaves the driver
CONTEXT_ONLY_ON_DRIVER = ("It appears that you are attempting to reference SparkContext from a broadcast variable, "
                          "action, or transformation. SparkContext can only be used on the driver, not in code "
                          "that it run on workers. For more information, see SPARK-5063.")

_MASTER = re.compile(r"^(local|threads)(?:\[(\*|\d+)\])?$")


def make_executor(master: Any) -> Executor:
    """The executor for a master string: ``local[N]``/``local[*]`` (processes), ``threads[N]``,
    ``dask://host:port`` or a ``distributed.Client``."""
    if isinstance(master, Executor):
        return master
    if not isinstance(master, str):
        if type(master).__name__ == "Client":
            return get_backend("dask")(master)
        raise ValueError(f"master must be a string like 'local[*]' or a distributed.Client, got {master!r}")
    if master.startswith(("dask://", "tcp://")):
        return get_backend("dask")(master)
    m = _MASTER.match(master.strip())
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
    return get_backend("processes" if kind == "local" else "threads")(workers)


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


class Context:
    """The entry point for batch work: ``Context("local[4]").parallelize(range(10), 2).sum()``."""

    _active: ClassVar["Context | None"] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, master: Any = "local[*]", appName: str = "dstream",
                 conf: dict[str, Any] | None = None) -> None:
        #: the master the executors were made from
        self.master = master
        self.appName = appName
        #: configuration (``dstream.*`` keys); unknown keys are kept for the user
        self.conf: dict[str, Any] = dict(conf or {})
        speculation = SpeculationConf.from_conf(self.conf)
        self.executor = make_executor(master)
        if any(key.startswith("dstream.speculation") for key in self.conf):
            self.executor.speculation = speculation
        self.scheduler = DAGScheduler(self.executor)
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

    # -- public API ---------------------------------------------------------------------------------
    @classmethod
    def getOrCreate(cls, master: Any = "local[*]") -> "Context":
        with cls._lock:
            active = cls._active
        if active is not None and not active._stopped:
            return active
        return cls(master)

    @property
    def defaultParallelism(self) -> int:
        return self.executor.num_workers

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
                 encoding: str = "utf-8") -> RDD:
        """The lines of a text file, a directory of them or a glob, at any fsspec URL."""
        from dstream.io import TextFileRDD, expand_paths
        return TextFileRDD(self, expand_paths(name), minPartitions or 1, encoding)

    def union(self, rdds: Sequence[RDD]) -> RDD:
        rdds = list(rdds)
        if not rdds:
            return self.emptyRDD()
        return UnionRDD(self, rdds)

    def emptyRDD(self) -> RDD:
        return EmptyRDD(self)

    def setCheckpointDir(self, dirName: str) -> None:
        self.checkpoint_dir = dirName

    def setLogLevel(self, logLevel: str) -> None:
        import logging
        logging.getLogger("dstream").setLevel(logLevel.upper())

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
