"""The Dask backend on workers that share nothing but the network.

A ``dask scheduler`` and ``dask worker`` processes started from the CLI, each worker in its own mount
namespace with private tmpfs mounts on ``/dev/shm`` and its temp directory, as separate machines have
(``tests/dask_machines.py``; skipped where ``unshare -m`` is not allowed). On them: the shared executor
suite, batch jobs with shuffles, joins, ``distinct`` and ``cache``, a stateful stream checkpointed to S3
(moto's server) and restored, and a worker SIGKILLed mid-stream, with the answers checked against plain
Python, and a worker that joins later taking tasks.
"""
from __future__ import annotations

import ast
import collections
import operator
import os
import random
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

from dstream import Context, ManualClock, StreamingContext  # noqa: E402
from dstream.demo.harness import committed_batches, read_lines  # noqa: E402
from dstream.executors.dask import DaskExecutor  # noqa: E402
from dstream.testing import advance, collect  # noqa: E402
from tests.dask_machines import DaskMachines, namespaces_unavailable  # noqa: E402
from tests.test_executors import ExecutorSuite  # noqa: E402

WORDS = [f"w{i}" for i in range(40)]


def _skip_without_namespaces() -> None:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def machines(s3_server):
    """Two "machines"; started after the S3 server, so the workers inherit its endpoint."""
    _skip_without_namespaces()
    with DaskMachines(2) as m:
        yield m


@pytest.fixture(scope="module")
def shared_nothing_executor(machines):
    ex = DaskExecutor(machines.client())
    yield ex
    ex.shutdown()


class TestSharedNothingExecutor(ExecutorSuite):
    @pytest.fixture
    def executor(self, shared_nothing_executor):
        return shared_nothing_executor


def _lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))) for _ in range(n)]


def _count_call(acc, x):
    acc.add(1)
    return x * x


def test_batch_jobs_with_shuffles_joins_distinct_and_cache(machines):
    lines = _lines(1, 400)
    words = [w for line in lines for w in line.split()]
    shm_before = set(os.listdir("/dev/shm"))
    with Context(machines.client()) as ctx:
        assert ctx.defaultParallelism == 2
        text = ctx.parallelize(lines, 4)
        counts = text.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add, 3)
        assert dict(counts.collect()) == collections.Counter(words)
        assert sorted(text.flatMap(str.split).distinct(3).collect()) == sorted(set(words))

        left = ctx.parallelize([(w, i) for i, w in enumerate(words[:60])], 3)
        right = ctx.parallelize([(w, len(w)) for w in WORDS[::2]], 2)
        expected = sorted((k, (i, n)) for i, k in enumerate(words[:60]) for w, n in [(w, len(w)) for w in WORDS[::2]]
                          if k == w)
        assert sorted(left.join(right).collect()) == expected
        assert sorted(left.groupByKey().mapValues(sorted).collect()) == sorted(
            (k, sorted(i for i, w in enumerate(words[:60]) if w == k)) for k in set(words[:60]))

        calls = ctx.accumulator(0)
        squares = ctx.parallelize(range(100), 4).map(lambda x: _count_call(calls, x)).cache()
        assert squares.sum() == sum(x * x for x in range(100))
        assert squares.count() == 100 and sorted(squares.collect())[-1] == 99 * 99
        assert calls.value == 100  # the second and third jobs read the cached blocks on the workers
        # every cached block lives on a worker; none is in this process's /dev/shm
        store = ctx.executor.store
        for block in [f"rdd_{squares.id()}_{i}" for i in range(4)]:
            future = store.future(block)
            future.result()
            assert machines.client().who_has([future])[future.key], block
        assert set(os.listdir("/dev/shm")) <= shm_before  # the driver keeps no block directory


def _running_totals(batches: list[list[str]]) -> list[dict[str, int]]:
    totals: collections.Counter[str] = collections.Counter()
    out = []
    for batch in batches:
        totals.update(w for line in batch for w in line.split())
        out.append(dict(totals))
    return out


def _state_setup(ctx, checkpoint: str, prefix: str, batches: list[list[str]]):
    def setup() -> StreamingContext:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(checkpoint)
        pairs = ssc.queueStream([ctx.parallelize(b, 2) for b in batches]).flatMap(str.split).map(lambda w: (w, 1))
        pairs.updateStateByKey(lambda new, old: sum(new) + (old or 0)).saveAsTextFiles(prefix)
        return ssc
    return setup


def _totals_on_s3(url: str, prefix: str) -> dict[int, dict[str, int]]:
    return {t: dict(ast.literal_eval(line) for line in read_lines(d))
            for t, d in committed_batches(url, prefix).items()}


def test_checkpointed_stateful_stream_with_checkpoint_and_output_on_s3(machines, s3_bucket):
    batches = [_lines(10 + i, 30) for i in range(4)]
    checkpoint, out = f"{s3_bucket}/job/checkpoint", f"{s3_bucket}/job/out"
    with Context(machines.client()) as ctx:
        ssc = StreamingContext.getOrCreate(checkpoint, _state_setup(ctx, checkpoint, f"{out}/state", batches))
        ssc.start()
        advance(ssc, 2)
        ssc.stop(stopSparkContext=False)  # the driver goes; the cluster and its blocks stay

    def must_not_run():
        raise AssertionError("setup must not be called when a checkpoint exists")

    with Context(machines.client()) as ctx:
        restored = StreamingContext.getOrCreate(checkpoint, must_not_run, clock=ManualClock(start=4.0))
        restored.start()
        try:
            assert restored.replayed_times == [3000, 4000]
            assert restored.wait_for_batch(4000, 60)
        finally:
            restored.stop(stopSparkContext=False)
    expected = _running_totals(batches)
    assert _totals_on_s3(out, "state") == {1000 * (i + 1): totals for i, totals in enumerate(expected)}


def _slow_pair(word: str) -> tuple[str, int]:
    time.sleep(0.008)
    return (word, 1)


def test_a_worker_killed_mid_stream_changes_no_answer_and_a_joining_worker_is_used(s3_bucket):
    _skip_without_namespaces()
    batches = [_lines(100 + i, 60) for i in range(6)]
    with DaskMachines(2) as m, Context(m.client()) as ctx:
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.checkpoint(f"{s3_bucket}/checkpoint")
        pairs = ssc.queueStream([ctx.parallelize(b, 4) for b in batches]).flatMap(str.split).map(_slow_pair)
        counts = collect(pairs.reduceByKey(operator.add, 2), sort=True)
        totals = collect(pairs.updateStateByKey(lambda new, old: sum(new) + (old or 0)), sort=True)
        ssc.start()
        try:
            advance(ssc, 2)
            victim = m.live_machines()[0]
            held: list[int] = []

            def kill() -> None:
                held.append(len(m.client().has_what()[victim.address]))
                m.kill_worker(victim)

            killer = threading.Timer(0.3, kill)
            killer.start()  # while batch 3's tasks run
            advance(ssc, 2, timeout=120)
            killer.join()
            assert not victim.alive and held[0] > 0  # it died holding blocks: they were made again
            newcomer = m.add_worker()
            advance(ssc, 2, timeout=120)
            pids = ctx.parallelize(range(8), 8).map(lambda _: os.getpid()).collect()
            assert newcomer.pid in pids  # driver data goes to the workers there now, and tasks follow it
            deadline = time.monotonic() + 5
            while ctx.executor.num_workers != 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ctx.executor.num_workers == 2
        finally:
            ssc.stop(stopSparkContext=False)
    words = [collections.Counter(w for line in b for w in line.split()) for b in batches]
    assert counts == [sorted(c.items(), key=repr) for c in words]
    assert totals == [sorted(t.items(), key=repr) for t in _running_totals(batches)]
