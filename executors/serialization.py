"""Shipping tasks: cloudpickle, keeping each user function's file name and source lines.

cloudpickle 3.1 rewrites the file name of every code object it pickles by value to ``<dynamic-code>``
(so its payloads are deterministic). A user's error on an executor would then show
``File "<dynamic-code>", line 4`` with no file and no source line. ``dumps`` pickles code objects with
their real file name and the source lines they span, and ``loads`` puts the name back and, where the
executor cannot read that file (a notebook cell, a script on another machine), serves the shipped lines
to ``linecache``, so tracebacks read as they would on the driver, on every cloudpickle version.
"""
from __future__ import annotations

import io
import linecache
import os
import pickle
import threading
import types
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import cloudpickle

_base_code_reduce: Callable[[types.CodeType], tuple] = cloudpickle.CloudPickler.dispatch_table[types.CodeType]
#: lines of source files that this process cannot read, as shipped with the code that came from them
_shipped_lines: dict[str, dict[int, str]] = {}
_shipped_lock = threading.Lock()


def _source_lines(code: types.CodeType) -> tuple[int, tuple[str, ...]]:
    """The first line number of ``code`` and the source lines it spans (empty if unknown)."""
    numbers = [line for *_, line in code.co_lines() if line is not None]
    first = min([code.co_firstlineno, *numbers])
    last = max([code.co_firstlineno, *numbers])
    lines = linecache.getlines(code.co_filename)
    return first, tuple(lines[first - 1:last])


def _reduce_code(code: types.CodeType) -> tuple:
    constructor, args = _base_code_reduce(code)[:2]
    first, lines = _source_lines(code)
    return _rebuild_code, (constructor, args, code.co_filename, first, lines)


def _rebuild_code(constructor: Callable, args: tuple, filename: str, first: int,
                  lines: tuple[str, ...]) -> types.CodeType:
    """Unpickle a code object under its own file name, making its shipped lines readable."""
    code = constructor(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if lines:
        _serve_lines(filename, first, lines)
    return code


def _serve_lines(filename: str, first: int, lines: tuple[str, ...]) -> None:
    if os.path.exists(filename):
        return  # the executor reads the file itself (same machine, or the same checkout)
    with _shipped_lock:
        known = _shipped_lines.setdefault(filename, {})
        known.update({first + i: line for i, line in enumerate(lines)})
        full = [""] * max(known)
        for number, line in known.items():
            full[number - 1] = line
        # mtime None: linecache.checkcache leaves the entry alone (as it does for notebook cells)
        linecache.cache[filename] = (sum(map(len, full)), None, full, filename)


class TaskPickler(cloudpickle.CloudPickler):
    """cloudpickle, except that code objects keep their file name and carry their source lines."""

    dispatch_table = cloudpickle.CloudPickler.dispatch_table.new_child({types.CodeType: _reduce_code})


def dumps(obj: Any, protocol: int | None = None) -> bytes:
    """Pickle a task (or anything holding user functions) for an executor."""
    buffer = io.BytesIO()
    TaskPickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    """Unpickle what ``dumps`` made (plain ``pickle.loads``; cloudpickle's reducers are importable)."""
    return pickle.loads(data)


_checkpointing = threading.local()


@contextmanager
def pickling_for_checkpoint(active: bool = True) -> Iterator[None]:
    """Mark this thread as pickling into a checkpoint (not a task): objects whose ``__reduce__`` asks
    ``pickling_for_checkpoint_active()`` leave out what must not be stored (secrets) or refuse to be
    stored (broadcast variables, accumulators)."""
    outer = pickling_for_checkpoint_active()
    _checkpointing.active = active or outer
    try:
        yield
    finally:
        _checkpointing.active = outer


def pickling_for_checkpoint_active() -> bool:
    """Whether this thread is pickling into a checkpoint now."""
    return getattr(_checkpointing, "active", False)


_recording = threading.local()


@contextmanager
def recording_block_reads() -> Iterator[set[str]]:
    """Collect, in this thread, the blocks that objects pickled meanwhile say their task will read
    (``note_block_read``): a broadcast variable in a task's closure names its block. Executors whose
    workers share no memory make those blocks the task's inputs."""
    outer = getattr(_recording, "reads", None)
    reads: set[str] = set()
    _recording.reads = reads
    try:
        yield reads
    finally:
        _recording.reads = outer
        if outer is not None:
            outer.update(reads)


def note_block_read(block_id: str) -> None:
    """Called while pickling a task: the task will read ``block_id`` (ignored unless recording)."""
    reads = getattr(_recording, "reads", None)
    if reads is not None:
        reads.add(block_id)
