"""Part 6: the Dask backend (a 2-worker ``distributed.LocalCluster``) next to local[2].

- 6a: the word count of parts 1 and 2 (forms ``columnar`` and ``row``, same batches) on local[2] and on
  ``Context(client)``;
- 6b: the per-batch overhead of part 3 (``empty`` and ``light`` jobs) on both.

The cluster: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, so two worker processes
as local[2] has, plus Dask's scheduler (in this process, on its own event loop thread). local[2] runs
first, before the cluster starts, so an idle cluster does not share the cores with it.

To explain 6b, a scheduler plugin counts the Dask tasks that ran between ``ssc.start()`` and the last
batch, by kind (dstream task, its ``result_of``, ``block_of`` / driver-made blocks), and a no-op Dask task
is timed alone (one round trip) and 500 at once (the scheduler's cost per task when pipelined).
"""
from __future__ import annotations

import os
import statistics
import time
from collections import Counter

import workload
import wordcount
from common import Table, log, median, percentile
from overhead import engine_batches

try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # part6 then says NOT MEASURED
    SchedulerPlugin = object

#: the scheduler plugin's name
COUNTER = "dstream-benchmark-task-counter"


class TaskCounter(SchedulerPlugin):
    """A Dask scheduler plugin counting the tasks that finished running (processing -> memory or erred), by
    kind of key."""

    name = COUNTER

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def transition(self, key, start, finish, *args, **kwargs) -> None:  # noqa: ANN001 - Dask's signature
        if start == "processing" and finish in ("memory", "erred"):
            self.counts[_kind(key)] += 1
            if finish == "erred":
                self.counts["erred"] += 1


def _kind(key) -> str:  # noqa: ANN001 - a Dask key
    name = key if isinstance(key, str) else str(key)
    if name.startswith("dstream-task-"):
        return "result_of" if name.endswith("-result") else "task"
    if name.startswith("dstream-"):
        return "block"  # block_of (a block a task put, split off) or a block the driver made
    return "other"


def _install_counter(dask_scheduler=None) -> None:  # noqa: ANN001 - run_on_scheduler's argument
    if COUNTER not in dask_scheduler.plugins:
        dask_scheduler.add_plugin(TaskCounter(), name=COUNTER)


def _read_counter(dask_scheduler=None) -> dict:  # noqa: ANN001
    return dict(dask_scheduler.plugins[COUNTER].counts)


def _task_counts(client) -> dict:  # noqa: ANN001
    return client.run_on_scheduler(_read_counter)


def _load() -> float:
    """The 1-minute load average now."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _loads(spans: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{label} {a:.2f} -> {b:.2f}" for label, (a, b) in spans.items())


def _dask_round_trips(client) -> dict:  # noqa: ANN001
    """A no-op Dask task (``abs``): alone, submit to result (median of 100), and 500 at once (per task)."""
    for i in range(20):  # warm-up
        client.submit(abs, -i, pure=False).result()
    alone = []
    for i in range(100):
        start = time.perf_counter()
        client.submit(abs, -i, pure=False).result()
        alone.append((time.perf_counter() - start) * 1000)
    bursts = []
    for rep in range(3):
        start = time.perf_counter()
        client.gather(client.map(abs, range(-500 * (rep + 1), -500 * rep), pure=False))
        bursts.append((time.perf_counter() - start) * 1000 / 500)
    return {"alone_ms": statistics.median(alone), "alone_p99_ms": percentile(alone, 99),
            "pipelined_ms": min(bursts)}


# -- 6a: word count --------------------------------------------------------------------------------------


def _wordcount_runs(master, tables: list, repeats: int, label: str) -> dict[str, list[dict]]:  # noqa: ANN001
    """``repeats`` stream runs of each form on a Context of ``master`` (a master string or a Client)."""
    out: dict[str, list[dict]] = {}

    def runs(ctx):  # noqa: ANN001
        for rep in range(repeats):
            for form in ("columnar", "row"):
                log(f"part 6: {form} word count on {label}, run {rep + 1}/{repeats}")
                out.setdefault(form, []).append(wordcount.engine_stream(ctx, tables, form))
    wordcount.with_context(master, runs)  # Context(master) takes a master string or a distributed.Client
    return out


# -- 6b: per-batch overhead ------------------------------------------------------------------------------


def _overhead_runs(master, label: str, empty_n: int, light_n: int, interval: float,  # noqa: ANN001
                   client=None) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    """part 3's empty and light jobs on ``master``; with ``client``, the Dask tasks each batch ran."""
    out = []
    for job, n in (("empty", empty_n), ("light", light_n)):
        log(f"part 6: {n} {job} batches on {label}")
        window: dict[str, dict] = {}
        hooks = {}
        if client is not None:
            hooks = {"on_start": lambda: window.__setitem__("start", _task_counts(client)),
                     "on_done": lambda: window.__setitem__("done", _task_counts(client))}
        r = engine_batches(master, job, n, interval, **hooks)
        if client is not None:
            ran = Counter(window["done"])
            ran.subtract(window["start"])
            r["dask_tasks"] = {k: v for k, v in ran.items() if v}
            r["dask_tasks_per_batch"] = sum(v for k, v in ran.items() if k != "erred") / n
        out.append((label, job, r))
    return out


# -- part 6 ----------------------------------------------------------------------------------------------


def part6(quick: bool) -> list[Table]:
    batches, lines = (4, 50_000) if quick else (10, 200_000)
    repeats = 1 if quick else 2
    empty_n, light_n = (40, 100) if quick else (200, 1000)
    interval = 0.05
    try:
        import distributed
    except ImportError as exc:
        t = Table("Part 6: the Dask backend (2 workers) next to local[2]", ["engine", "verdict"])
        t.add("dstream on Dask", "NOT MEASURED")
        t.notes.append(f"Dask NOT MEASURED: distributed does not import ({exc}); pip install 'dstream[dask]'")
        return [t]
    tables = [wordcount.batch_table(i, lines) for i in range(batches)]
    expected = list(workload.expected_counts(workload.batch_seed(batches - 1), lines))

    #: the 1-minute load average before and after each group of runs (the machine may be shared)
    wc_load: dict[str, tuple[float, float]] = {}
    batch_load: dict[str, tuple[float, float]] = {}
    load = _load()
    wc = {"local[2]": _wordcount_runs("local[2]", tables, repeats, "local[2]")}
    wc_load["local[2]"], load = (load, _load()), _load()
    batch_results = _overhead_runs("local[2]", "local[2]", empty_n, light_n, interval)
    batch_load["local[2]"] = (load, _load())

    dask_label = "Dask 2 workers"
    log("part 6: starting a distributed.LocalCluster of 2 worker processes x 1 thread")
    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(2)
            cluster_start_s = time.perf_counter() - started
            client.run_on_scheduler(_install_counter)
            load = _load()
            wc[dask_label] = _wordcount_runs(client, tables, repeats, dask_label)
            wc_load[dask_label], load = (load, _load()), _load()
            batch_results += _overhead_runs(client, dask_label, empty_n, light_n, interval, client=client)
            batch_load[dask_label] = (load, _load())
            log("part 6: timing no-op Dask tasks")
            trips = _dask_round_trips(client)
        finally:
            client.close()
    finally:
        cluster.close()

    # -- 6a
    t1 = Table(f"Part 6a: word count on Dask (2 workers) and local[2], {batches} batches x {lines:,} lines "
               f"x 10 words (best of {repeats}; lines/s)",
               ["master", "form", "lines/s", "first batch s", "x local[2]", "check"])
    for form in ("columnar", "row"):
        base = wordcount.best(wc["local[2]"][form])["lines_per_s"]
        for master in ("local[2]", dask_label):
            r = wordcount.best(wc[master][form])
            t1.add(master, form, r["lines_per_s"], r["first_batch_s"], f"{r['lines_per_s'] / base:.2f}x",
                   "ok" if r["check"] == expected else f"WRONG {r['check']}")
    t1.notes.append("columnar = lines.mapInArrow(split).reduceByKey(add), row = flatMap(split).map((w, 1))"
                    ".reduceByKey(add); queueStream of cached 2-partition RDDs, 20 ms batches (as parts 1, 2).")
    t1.notes.append("first batch s = ssc.start() to the first batch's result; check = last batch's "
                    f"(distinct, total, count of w0) vs numpy's {expected}.")
    t1.notes.append("Dask = Context(client) on a LocalCluster(n_workers=2, threads_per_worker=1, processes=True) "
                    f"(started in {cluster_start_s:.1f} s, not timed). Blocks stay in the Dask workers' memory and "
                    "shuffle buckets move between workers over TCP; on local[2] they are files in /dev/shm.")
    t1.notes.append(f"1-minute load average before -> after the runs ({os.cpu_count()} cores): {_loads(wc_load)}.")

    # -- 6b
    t2 = Table(f"Part 6b: per-batch overhead on Dask (2 workers) and local[2], SystemClock, "
               f"{int(interval * 1000)} ms batches (ms; end-batch = processingEndTime - batchTime)",
               ["master", "job", "batches", "median end-batch", "p99 end-batch", "max end-batch",
                "p99 totalDelay", "median processing", "Dask tasks/batch"])
    processing: dict[tuple[str, str], float] = {}
    for master, job, r in batch_results:
        e, d, p = r["end_minus_batch_ms"], r["total_delay_ms"], r["processing_ms"]
        processing[(master, job)] = median(p)
        n = r["batches"] if r["finished"] else f"{r['batches']} (timed out)"
        per_batch = r.get("dask_tasks_per_batch")
        t2.add(master, job, n, f"{median(e):.1f}", f"{percentile(e, 99):.1f}", f"{max(e):.0f}" if e else None,
               f"{percentile(d, 99):.1f}", f"{median(p):.1f}", None if per_batch is None else f"{per_batch:.1f}")
    light = {m: v for (m, j), v in processing.items() if j == "light"}
    light_tasks = next(r.get("dask_tasks", {}) for m, j, r in batch_results if m == dask_label and j == "light")
    empty_tasks = next(r.get("dask_tasks", {}) for m, j, r in batch_results if m == dask_label and j == "empty")
    kinds = ", ".join(f"{light_tasks.get(k, 0) / light_n:.1f} {name}"
                      for k, name in (("task", "dstream tasks"), ("result_of", "result_of"),
                                      ("block", "block_of"), ("other", "other")) if light_tasks.get(k))
    t2.notes.append("light = 100 cached records -> map((x % 10, 1)) -> reduceByKey(add) -> collect (2 stages of 2 "
                    "tasks and a shuffle); empty = emptyRDD -> collect. Same jobs as part 3.")
    t2.notes.append(f"Dask tasks/batch: counted by a scheduler plugin (tasks that ran, processing -> memory) "
                    f"from ssc.start() to the last batch; per light batch {kinds or 'none'}"
                    f"{'; ' + str(light_tasks.get('erred')) + ' erred' if light_tasks.get('erred') else ''}; "
                    f"{sum(v for k, v in empty_tasks.items() if k != 'erred')} in all over the {empty_n} "
                    "empty batches.")
    t2.notes.append(f"A no-op Dask task (client.submit(abs, x).result()) takes {trips['alone_ms']:.1f} ms alone "
                    f"(median of 100; p99 {trips['alone_p99_ms']:.1f} ms) and {trips['pipelined_ms']:.2f} ms per "
                    "task when 500 are in flight: the scheduler's own cost per task on this machine.")
    if "local[2]" in light and dask_label in light:
        t2.notes.append(
            f"Where a light batch's time goes on Dask ({light[dask_label]:.1f} ms median processing vs "
            f"{light['local[2]']:.1f} ms on local[2], {light[dask_label] / light['local[2]']:.1f}x): each of its 2 "
            "stages is a round trip driver -> scheduler -> worker -> scheduler -> driver, and within a batch 5 Dask "
            "tasks run one after another (map task -> its result_of; the driver, told the map is done, submits the "
            "block_of tasks and the reduce stage; block_of -> reduce task -> its result_of), each handed on by the "
            f"scheduler: 2 driver round trips of about {trips['alone_ms']:.1f} ms plus 3 hops worker -> scheduler -> "
            "worker, on top of each task's own work. The LocalCluster's scheduler runs on a thread of the driver's "
            "process. local[2] sends each task straight down a pipe to a worker process and reads its result back "
            "from the same pipe, with no scheduler in between.")
    if dask_label in light and light[dask_label] > interval * 1000:
        t2.notes.append(f"On Dask a light batch takes longer than the {int(interval * 1000)} ms interval, so "
                        "batches queue up: end-batch grows with the number of batches run (p99 and max "
                        "depend on it), and median processing is the per-batch cost.")
    t2.notes.append(f"1-minute load average before -> after the runs ({os.cpu_count()} cores): "
                    f"{_loads(batch_load)}.")
    return [t1, t2]
