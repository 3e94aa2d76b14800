"""The DStream graph a StreamingContext generates jobs from, and the surface of the StreamingContext that
operators and sources may use (``StreamRuntime``). The driver sees the graph through its ``StreamGraph``
protocol (``dstream.driver.jobs``)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Collection, Protocol

from dstream.driver.clock import Clock
from dstream.driver.jobs import Job
from dstream.driver.listener import ListenerBus, StreamInputInfo
from dstream.rdd import _count_task

if TYPE_CHECKING:
    from dstream.context import Context
    from dstream.driver.storage import Location
    from dstream.dstream import DStream, ForEachDStream

log = logging.getLogger(__name__)


class StreamRuntime(Protocol):
    """What operators, sources and checkpointers may use of their StreamingContext: its small internal
    surface (``StreamingContext`` implements it; everything else on it is user API or private)."""

    @property
    def sparkContext(self) -> "Context":
        """The Context that runs the batches' jobs."""

    @property
    def graph(self) -> "DStreamGraph":
        """The input and output streams."""

    @property
    def clock(self) -> Clock:
        """What the batch timer waits on (a ManualClock in tests)."""

    @property
    def interval_ms(self) -> int:
        """The batch interval."""

    @property
    def listener_bus(self) -> ListenerBus:
        """Where streaming listener events are posted."""

    @property
    def checkpoint_dir(self) -> str | None:
        """The metadata checkpoint directory (``StreamingContext.checkpoint``), or None."""

    @property
    def checkpoint_location(self) -> "Location | None":
        """The same directory with its storage options (``driver.storage.Location``), or None."""

    def check_can_declare(self) -> None:
        """Raise unless streams may still be declared (the context has not started)."""

    def report_error(self, error: BaseException) -> None:
        """Fail the stream: ``awaitTermination`` raises ``error``."""


class DStreamGraph:
    """The context's input and output streams; implements the driver's StreamGraph protocol."""

    #: batches that failed or are still pending when metadata is cleared (``clear_metadata``'s ``keep``):
    #: streams keep what recomputing them needs (``DStream._retained``)
    keep_times: frozenset[int] = frozenset()

    def __init__(self, ssc: "StreamRuntime") -> None:
        self.ssc = ssc
        self.inputs: list[Any] = []
        self.outputs: list["ForEachDStream"] = []
        #: the remember duration asked for with StreamingContext.remember
        self.remember_ms: int | None = None
        self.zero_ms: int | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["ssc"] = None
        state.pop("keep_times", None)
        return state

    def attach(self, ssc: "StreamRuntime") -> None:
        """Bind a graph restored from a checkpoint to its new StreamingContext."""
        self.ssc = ssc
        for stream in self.all_streams() + [s for s in self.inputs]:
            stream._attach(ssc)

    def add_input(self, stream: Any) -> None:
        self.inputs.append(stream)

    def add_output(self, stream: "ForEachDStream") -> int:
        self.outputs.append(stream)
        return len(self.outputs) - 1

    def all_streams(self) -> list["DStream"]:
        seen: dict[int, "DStream"] = {}
        stack: list["DStream"] = list(self.outputs)
        while stack:
            s = stack.pop()
            if id(s) not in seen:
                seen[id(s)] = s
                stack.extend(s.dependencies)
        return list(seen.values())

    def validate(self) -> None:
        """Refuse to start a graph with no output operation (the user functions are checked by the
        StreamingContext, which knows which contexts a function may capture)."""
        if not self.outputs:
            raise ValueError("No output operations registered, so nothing to execute: "
                             "add foreachRDD, pprint, saveAsTextFiles or another output operation")

    # -- the driver's StreamGraph protocol -------------------------------------------------------------
    def start(self, zero_ms: int) -> None:
        self.zero_ms = zero_ms
        for out in self.outputs:
            out._initialize(zero_ms)
        for out in self.outputs:
            out._remember(self.remember_ms)
        for inp in self.inputs:
            inp.start()

    def restart(self) -> None:
        for inp in self.inputs:
            inp.restart()

    @staticmethod
    def stateful_ancestors(stream: "DStream") -> tuple[str, ...]:
        """The names of the streams keeping state across batches that ``stream`` builds on (itself included)."""
        names, seen, stack = set(), set(), [stream]
        while stack:
            s = stack.pop()
            if id(s) not in seen:
                seen.add(id(s))
                if s.must_checkpoint:
                    names.add(s.name)
                stack.extend(s.dependencies)
        return tuple(sorted(names))

    def stateful_streams(self) -> list["DStream"]:
        """Streams built on their own past, parents before children."""
        def depth(s: "DStream") -> int:
            return 1 + max((depth(p) for p in s.dependencies), default=0)
        return sorted((s for s in self.all_streams() if s.must_checkpoint), key=depth)

    def prepare_batch(self, time_ms: int) -> None:
        """Materialise every stateful RDD of the batch in full, before its outputs run.

        Outputs may read only part of a state (``pprint``'s ``take``); the next batch reads the whole
        previous state from the block store, which keeps the lineage one batch deep. A due data snapshot
        is written here too.
        """
        for stream in self.stateful_streams():
            rdd = stream.generated.get(time_ms)
            if rdd is not None and (not rdd.is_available() or rdd._checkpoint_dir and not rdd.isCheckpointed()):
                rdd._run(_count_task(rdd), f"materialise {stream.name}")

    def prepare_replay(self, times_ms: list[int]) -> None:
        """Before replaying lost batches: compute what each stateful stream reads from its parent, for
        every batch since its last snapshot, in one job, so that independent batches run in parallel."""
        if not times_ms:
            return
        last = max(times_ms)
        rdds = []
        for stream in self.stateful_streams():
            snapshot = max(stream.checkpoint_data, default=stream.zero_ms)
            parent = stream.dependencies[0]
            for t in range(snapshot + stream.slide_ms, last + 1, stream.slide_ms):
                rdd = parent._get_or_compute(t)
                if rdd is not None and not rdd.is_available():
                    rdds.append(rdd.cache())
        if rdds:
            ctx = self.ssc.sparkContext
            ctx.scheduler.run_jobs([(rdd, _count_task(rdd)) for rdd in rdds], description="parallel recovery")

    def update_checkpoint_data(self) -> None:
        for stream in self.all_streams():
            stream._update_checkpoint_data()

    def data_checkpoint_dirs(self) -> set[str]:
        return {d for s in self.all_streams() for d, _ in s.checkpoint_data.values()}

    def generate_jobs(self, time_ms: int) -> list[Job]:
        # Every input takes its batch now, so the batch's input is fixed (and checkpointed) before it runs.
        for inp in self.inputs:
            inp._get_or_compute(time_ms)
        jobs = []
        for out in self.outputs:
            try:
                run = out.generate_job(time_ms)
            except Exception as exc:  # noqa: BLE001 - the job fails when it runs, in its turn
                run = _raiser(exc)
            if run is not None:
                jobs.append(Job(time_ms, out.output_id, out.name, run, self.stateful_ancestors(out)))
        return jobs

    def input_infos(self, time_ms: int) -> dict[int, StreamInputInfo]:
        """Input stream id (position among the inputs, as Spark numbers them) -> what it took for the batch.
        An input that did not count its records (a file stream nobody asked to count) reports 0, as Spark's
        file streams do, with ``records_counted: False`` in its metadata."""
        return {i: StreamInputInfo(i, inp.records_per_batch.get(time_ms, 0),
                                   {**inp.input_metadata(time_ms),
                                    **({} if time_ms in inp.records_per_batch else {"records_counted": False})})
                for i, inp in enumerate(self.inputs)}

    def clear_metadata(self, time_ms: int, keep: Collection[int] = ()) -> None:
        """Forget what batch ``time_ms`` no longer needs: RDDs and recorded input older than each stream
        remembers, except what recomputing the batches ``keep`` (failed, or pending) needs."""
        self.keep_times = frozenset(keep)
        for out in self.outputs:
            out._clear_metadata(time_ms)

    def stop(self) -> None:
        for inp in self.inputs:
            try:
                inp.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping %s", inp)


def _raiser(exc: BaseException) -> Callable[[], None]:
    def run() -> None:
        raise exc
    return run
