"""The Dask executor backend, on a real two-process ``distributed.LocalCluster``.

``ExecutorSuite`` (every backend's shared behaviour) runs on it as it does on threads and processes; then
the Dask-specific parts: tasks run in the cluster's worker processes, code travels by value, bad tasks and
results fail clearly, masters, blocks held on the workers, who closes the Client; and end to end, a Context made from
a Client and from a ``dask://`` address runs a word count and a streaming batch.
"""
from __future__ import annotations

import functools
import operator
import time
import os
import threading

import pyarrow as pa
import pytest

distributed = pytest.importorskip("distributed")

from dstream.driver.clock import ManualClock  # noqa: E402
from dstream import Context, StreamingContext  # noqa: E402
from dstream.context import make_executor  # noqa: E402
from dstream.testing import advance, collect  # noqa: E402
from dstream.executors import Task, TaskError, get_backend  # noqa: E402
from dstream.executors.dask import DaskExecutor  # noqa: E402
from tests.test_executors import ExecutorSuite  # noqa: E402

LINES = ["a b a", "c b a", "", "d"]
COUNTS = [("a", 3), ("b", 2), ("c", 1), ("d", 1)]


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def dask_executor(client):
    ex = DaskExecutor(client)
    yield ex
    ex.shutdown()


def _wait_for_file(path: str, tc) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def _worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


class TestDaskExecutor(ExecutorSuite):
    @pytest.fixture
    def executor(self, dask_executor):
        return dask_executor

    def test_num_workers_counts_the_cluster_threads(self, executor):
        assert executor.num_workers == 2

    def test_tasks_run_in_the_cluster_worker_processes(self, executor, client):
        pids = executor.run_tasks([Task(lambda tc: os.getpid(), i) for i in range(4)])
        assert os.getpid() not in pids
        assert set(pids) <= _worker_pids(client)

    def test_functions_travel_with_cloudpickle(self, executor):
        offset = 1000

        def local_function(tc):  # not importable by a worker: shipped by value
            return tc.partition_id + offset

        assert executor.run_tasks([Task(local_function, 1), Task(lambda tc: [tc.partition_id] * 2, 2)]) \
            == [1001, [2, 2]]

    def test_task_that_cannot_be_pickled_fails_clearly(self, executor):
        lock = threading.Lock()
        with pytest.raises(TaskError, match=r"serialising stage 2 \(count\) partition 0.*lock"):
            executor.submit_task(Task(lambda tc: lock.locked(), 0, "stage 2 (count) partition 0"))

    def test_result_that_cannot_be_pickled_fails_the_task_not_the_cluster(self, executor, client):
        pids = _worker_pids(client)
        with pytest.raises(TaskError, match=r"sending the result of stage 3 partition 0.*lock"):
            executor.run_tasks([Task(lambda tc: threading.Lock(), 0, "stage 3 partition 0")])
        assert _worker_pids(client) == pids
        assert executor.run_tasks([Task(lambda tc: "next", 0)]) == ["next"]


# -- masters, blocks, shutdown -----------------------------------------------------------------------
def test_backend_is_registered_under_dask():
    assert get_backend("dask") is DaskExecutor


@pytest.mark.parametrize("master", [42, "dask:/nohost", "local[2]"])
def test_bad_masters_are_rejected_naming_the_master(master):
    with pytest.raises(ValueError, match="master"):
        DaskExecutor(master)


@pytest.mark.parametrize("scheme", ["dask", "tcp"])
def test_address_master_gets_its_own_client_closed_at_shutdown(cluster, scheme, tmp_path):
    port = cluster.scheduler_address.rsplit(":", 1)[1]
    ex = make_executor(f"{scheme}://127.0.0.1:{port}")
    assert isinstance(ex, DaskExecutor) and ex.num_workers == 2
    assert ex.run_tasks([Task(lambda tc: tc.partition_id * 2, i) for i in range(3)]) == [0, 2, 4]
    release = tmp_path / "release"
    slow = ex.submit_task(Task(functools.partial(_wait_for_file, str(release)), 0))
    ex.shutdown()
    assert ex.client.status == "closed"
    with pytest.raises(RuntimeError, match="shut down while running"):
        slow.result(timeout=5)  # a task still running fails, it does not hang its waiter
    release.touch()  # frees the worker thread (Dask cannot stop a running task)
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit_task(Task(lambda tc: 1, 0))
    ex.shutdown()  # twice is harmless


def test_shutdown_leaves_a_given_client_open_and_frees_the_blocks(client):
    ex = DaskExecutor(client)
    ex.store.put("b_0", pa.table({"x": [1]}))
    key = ex.store.future("b_0").key
    ex.store.future("b_0").result()
    assert client.who_has([ex.store.future("b_0")])[key]  # on a worker, not in the driver
    ex.shutdown()
    deadline = time.monotonic() + 10
    while key in client.run_on_scheduler(_scheduler_keys) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in client.run_on_scheduler(_scheduler_keys)
    assert client.status == "running"
    assert client.submit(operator.add, 1, 2).result() == 3


def _scheduler_keys(dask_scheduler=None) -> list:
    return [str(k) for k in dask_scheduler.tasks]


def _put_blocks(tc):
    tc.store.put(f"w_{tc.partition_id}", pa.table({"p": [tc.partition_id]}))
    return os.getpid()


def test_blocks_put_by_tasks_stay_on_their_workers(client):
    ex = DaskExecutor(client)
    try:
        pids = ex.run_tasks([Task(_put_blocks, i) for i in range(2)])
        by_address = client.run(os.getpid)
        for i, pid in enumerate(pids):
            future = ex.store.future(f"w_{i}")
            future.result()
            [holder] = client.who_has([future])[future.key]
            assert by_address[holder] == pid  # split off where the task ran: nothing moved
        assert ex.store.get("w_1").column("p").to_pylist() == [1]
    finally:
        ex.shutdown()


# -- end to end -----------------------------------------------------------------------------------------
def _word_count(ctx: Context) -> list:
    rdd = ctx.parallelize(LINES, 3).flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add)
    return sorted(rdd.collect())


def test_context_from_a_client_runs_a_word_count(client):
    with Context(client) as ctx:
        assert ctx.defaultParallelism == 2
        assert _word_count(ctx) == COUNTS
        # a cached partition written by a worker is read back by the next job
        cached = ctx.parallelize(range(10), 2).map(lambda x: x * x).cache()
        assert cached.sum() == 285 and cached.count() == 10
    assert client.status == "running"


def test_context_from_an_address_runs_a_word_count_and_a_stream(cluster):
    port = cluster.scheduler_address.rsplit(":", 1)[1]
    ctx = Context(f"dask://127.0.0.1:{port}")
    try:
        assert _word_count(ctx) == COUNTS
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        words = ssc.queueStream([["a b", "b"], ["c a c"]]).flatMap(str.split)
        out = collect(words.map(lambda w: (w, 1)).reduceByKey(operator.add), sort=True)
        ssc.start()
        try:
            advance(ssc, 2)
        finally:
            ssc.stop(stopSparkContext=False)
        assert out == [[("a", 1), ("b", 2)], [("a", 1), ("c", 2)]]
    finally:
        ctx.stop()
    assert ctx.executor.client.status == "closed"


def test_broadcast_is_unpickled_once_per_worker_and_accumulators_add_up(client, tmp_path):
    from tests.test_shared_variables import CountedLoads, _loads, _use_broadcast
    counter = str(tmp_path / "loads")
    with Context(client) as ctx:
        bc = ctx.broadcast(CountedLoads(counter, list(range(100))))
        acc = ctx.accumulator(0)
        out = ctx.parallelize(range(60), 30).map(functools.partial(_use_broadcast, bc)).collect()
        assert [x for _, x in out] == [x + 100 for x in range(60)]
        loads = _loads(counter)
        assert 1 <= len(loads) <= 2 and set(loads) <= _worker_pids(client)  # 30 tasks, 2 worker processes
        ctx.parallelize(range(10), 5).foreach(lambda x: acc.add(x))
        assert acc.value == 45
        bc.destroy()
        with pytest.raises(TaskError, match=rf"Broadcast\({bc.id}\) after it was destroyed"):
            ctx.parallelize(range(2), 2).map(functools.partial(_use_broadcast, bc)).collect()
