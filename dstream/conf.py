"""SparkConf: a Context's configuration as key-value pairs (PySpark's ``pyspark.SparkConf``).

Values are stored as strings, as Spark stores them; setters return the conf, so calls chain::

    conf = SparkConf().setMaster("local[4]").setAppName("wordcount").set("spark.default.parallelism", 8)
    ctx = Context(conf=conf)

Keys dstream reads: ``spark.master``, ``spark.app.name``, ``spark.default.parallelism``,
``spark.task.maxFailures`` and ``dstream.task.*`` (task retries, see ``driver.retries.TaskRetries``), the
``dstream.speculation*`` keys (see ``executors.base.SpeculationConf``), ``dstream.stopOnStatefulFailure``
(``StreamingContext``), and the receivers' rate limits ``spark.streaming.receiver.maxRate`` and
``spark.streaming.backpressure.*`` (or their ``dstream.`` equivalents; see ``driver.rate``); other keys are
kept for the user.
"""
from __future__ import annotations

from typing import Iterable


class SparkConf:
    """Configuration for a Context. ``loadDefaults`` is accepted for PySpark compatibility: Spark then
    reads the JVM's ``spark.*`` system properties, and a process without a JVM has none to read."""

    def __init__(self, loadDefaults: bool = True) -> None:
        self._conf: dict[str, str] = {}

    def set(self, key: str, value: object) -> "SparkConf":
        """Set ``key`` to ``str(value)``."""
        self._conf[key] = str(value)
        return self

    def setIfMissing(self, key: str, value: object) -> "SparkConf":
        """Set ``key`` unless it is set already."""
        if key not in self._conf:
            self.set(key, value)
        return self

    def setAll(self, pairs: Iterable[tuple[str, object]]) -> "SparkConf":
        """Set several ``(key, value)`` pairs."""
        for key, value in pairs:
            self.set(key, value)
        return self

    def setMaster(self, value: str) -> "SparkConf":
        """The master: ``local[N]``, ``local[*]``, ``threads[N]`` or ``dask://HOST:PORT``."""
        return self.set("spark.master", value)

    def setAppName(self, value: str) -> "SparkConf":
        return self.set("spark.app.name", value)

    def setSparkHome(self, value: str) -> "SparkConf":
        return self.set("spark.home", value)

    def setExecutorEnv(self, key: str | None = None, value: str | None = None,
                       pairs: Iterable[tuple[str, str]] | None = None) -> "SparkConf":
        """Set ``spark.executorEnv.KEY`` for one key or for several ``pairs`` (kept, not applied)."""
        if (key is not None and pairs is not None) or (key is None and pairs is None):
            raise ValueError("give either key and value or pairs")
        for k, v in [(key, value)] if key is not None else pairs:  # type: ignore[union-attr]
            self.set("spark.executorEnv." + k, v)
        return self

    def get(self, key: str, defaultValue: str | None = None) -> str | None:
        """The value of ``key``, or ``defaultValue`` when it is not set."""
        return self._conf.get(key, defaultValue)

    def getAll(self) -> list[tuple[str, str]]:
        """Every ``(key, value)`` pair."""
        return list(self._conf.items())

    def contains(self, key: str) -> bool:
        return key in self._conf

    def toDebugString(self) -> str:
        """The configuration as ``key=value`` lines, sorted by key (as Spark prints it)."""
        return "\n".join(f"{k}={v}" for k, v in sorted(self._conf.items()))

    def copy(self) -> "SparkConf":
        return SparkConf(loadDefaults=False).setAll(self._conf.items())

    def __contains__(self, key: object) -> bool:
        return key in self._conf

    def __repr__(self) -> str:
        return f"SparkConf({self._conf!r})"
