"""Log levels by Spark's names, for ``Context.setLogLevel``.

dstream's loggers are named by module, under the roots ``dstream``, ``driver`` and ``executors`` (the
last two become ``dstream.driver`` and ``dstream.executors`` once they move into the package); a level
set here applies to all of them. dstream never configures logging on import: with no configuration,
Python prints only warnings and errors (``logging.lastResort``), so a running stream is quiet.
"""
from __future__ import annotations

import logging
import sys

#: the root of every logger in dstream (the driver and executors live in dstream.driver, dstream.executors)
LOGGER_ROOTS = ("dstream",)

#: Spark's log levels (``SparkContext.VALID_LOG_LEVELS``) as Python's
LEVELS: dict[str, int] = {
    "ALL": 1,
    "TRACE": 5,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "OFF": logging.CRITICAL + 10,
}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, and only while no handler of the root
    logger would print it too (so a ``logging.basicConfig`` made later does not double every line)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        super().emit(record)


def set_log_level(level: str) -> None:
    """Set the level of every dstream logger to Spark's ``level``, case-insensitive: ALL, TRACE, DEBUG,
    INFO, WARN, ERROR, FATAL or OFF (ALL and TRACE log everything, FATAL is CRITICAL, OFF nothing).

    If no handler would print a dstream logger's records (the application configured no logging), a
    handler writing to stderr is added to that root logger, so ``setLogLevel("INFO")`` shows the per-batch
    lines; it stays silent while the root logger has handlers of its own. Raises ValueError naming the
    valid levels for anything else.
    """
    name = level.upper() if isinstance(level, str) else None
    if name not in LEVELS:
        raise ValueError(f"Supplied level {level!r} did not match one of: {','.join(sorted(LEVELS))}")
    for root in LOGGER_ROOTS:
        logger = logging.getLogger(root)
        logger.setLevel(LEVELS[name])
        if not logger.hasHandlers():
            logger.addHandler(_StderrHandler())
