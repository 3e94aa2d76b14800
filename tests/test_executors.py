"""Executor backends.

As fsspec tests its filesystems, ``ExecutorSuite`` holds the behaviour every backend must have and is
mixed into one test class per backend; each class builds its own small executor. The process pool then
gets its own tests: code shipped by value, lost workers, and no orphans after shutdown or a killed driver.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pytest

from dstream import context as context_module
from dstream.context import make_executor
from dstream.executors import SharedDirBlockStore, Task, TaskContext, TaskError, get_backend, register_backend
from dstream.executors import base as executors_base
from dstream.executors import broadcasts, serialization
from dstream.executors.processes import ProcessExecutor
from dstream.executors.threads import ThreadExecutor


# -- task functions (module level: the process pool imports this module by name in its workers) ----------
def _sleep_then_return(n: int, tc):
    """Later partitions finish first, so results in order are not just results in completion order."""
    time.sleep(0.02 * (n - tc.partition_id))
    return tc.partition_id * 10


def _make_table(tc):
    return pa.table({"id": [1, 2, tc.partition_id], "name": ["a", None, "c"]})


def _fail(tc):
    values = {"x": 1}
    raise ValueError(f"boom in partition {tc.partition_id}: {values['x']}")


def _read_block(block_id: str, tc):
    return tc.store.get(block_id)


def _write_block(block_id: str, tc):
    tc.store.put(block_id, pa.table({"p": [tc.partition_id]}))
    return os.getpid()


def _read_block_mapping(block_id: str, tc):
    """Whether the block's data, read in this process, lies in a memory mapping of the block's file."""
    table = tc.store.get(block_id)
    address = table.column(0).chunks[0].buffers()[1].address
    path = os.path.realpath(os.path.join(tc.store.directory, block_id + ".arrow"))
    with open("/proc/self/maps") as f:
        ranges = [line.split()[0].split("-") for line in f if line.rstrip().endswith(path)]
    mapped = any(int(lo, 16) <= address < int(hi, 16) for lo, hi in ranges)
    return mapped, table.num_rows, os.getpid()


def _die_once(pid_file: str, tc):
    """First attempt: record the worker's pid and hang (the test kills it); a retry returns at once."""
    if os.path.exists(pid_file):
        return f"retried after {open(pid_file).read()} died"
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(60)
    return "not killed"


def _die_always(attempts_file: str, tc):
    with open(attempts_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _broadcast_user(block_id: str, tc):
    """Which object this process's tasks get for a broadcast block (the same one every time, per process)."""
    value = broadcasts.value(tc.store, block_id, "Broadcast(suite)")
    return os.getpid(), id(value), sum(value)


def _running_task(tc):
    current = TaskContext.get()
    return current is tc, current.partition_id


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- the suite every backend passes ---------------------------------------------------------------------
class ExecutorSuite:
    """Behaviour every executor backend must have; subclasses provide an ``executor`` fixture."""

    def test_run_tasks_returns_results_in_task_order(self, executor):
        n = 6
        tasks = [Task(functools.partial(_sleep_then_return, n), i, f"t{i}") for i in range(n)]
        assert executor.run_tasks(tasks) == [0, 10, 20, 30, 40, 50]

    def test_run_no_tasks(self, executor):
        assert executor.run_tasks([]) == []

    def test_table_result_comes_back_equal(self, executor):
        [a, b] = executor.run_tasks([Task(_make_table, 7), Task(_make_table, 8)])
        assert isinstance(a, pa.Table)
        assert a.equals(pa.table({"id": [1, 2, 7], "name": ["a", None, "c"]}))
        assert b.column("id").to_pylist() == [1, 2, 8]

    def test_failing_task_raises_task_error_with_remote_traceback(self, executor):
        tasks = [Task(_make_table, 0, "stage 7 (collect) partition 0"),
                 Task(_fail, 1, "stage 7 (collect) partition 1")]
        with pytest.raises(TaskError) as info:
            executor.run_tasks(tasks)
        err = info.value
        message = str(err)
        assert "stage 7 (collect) partition 1" in message
        assert "boom in partition 1: 1" in message
        # the traceback from where the task ran: the user's function and the line that raised
        assert "_fail" in message
        assert 'raise ValueError(f"boom in partition {tc.partition_id}' in message
        assert isinstance(err.cause, ValueError)

    def test_executor_still_works_after_a_failed_task(self, executor):
        with pytest.raises(TaskError):
            executor.run_tasks([Task(_fail, 0)])
        assert executor.run_tasks([Task(lambda tc: "fine", 0)]) == ["fine"]

    def test_block_store_put_get_contains_remove_prefix(self, executor):
        store = executor.store
        t1, t2 = pa.table({"x": [1, 2]}), pa.table({"x": ["a"]})
        store.put("suite_1_0", t1)
        store.put("suite_1_1", t2)
        store.put("suite_10_0", t2)
        store.put("other_1_0", t1)
        assert store.get("suite_1_0").equals(t1)
        assert store.get("suite_1_1").equals(t2)
        assert store.contains("suite_1_0") and not store.contains("suite_1_2")
        assert store.get("suite_1_2") is None
        store.put("suite_1_0", t2)  # replacing a block
        assert store.get("suite_1_0").equals(t2)
        assert store.remove_prefix("suite_1_") == 2
        assert not store.contains("suite_1_0") and not store.contains("suite_1_1")
        assert store.contains("suite_10_0") and store.contains("other_1_0")
        executor.remove_blocks("")
        assert not store.contains("suite_10_0") and not store.contains("other_1_0")

    def test_tasks_read_blocks_put_by_the_driver(self, executor):
        table = pa.table({"k": ["a", "b", "c"], "v": [1.5, 2.5, None]})
        executor.store.put("driver_0", table)
        [got, missing] = executor.run_tasks([Task(functools.partial(_read_block, "driver_0"), 0, reads=("driver_0",)),
                                             Task(functools.partial(_read_block, "nothing_0"), 1,
                                                  reads=("nothing_0",))])
        assert got.equals(table)
        assert missing is None
        executor.remove_blocks("driver_")

    def test_driver_reads_blocks_put_by_tasks(self, executor):
        executor.run_tasks([Task(functools.partial(_write_block, f"task_out_{i}"), i) for i in range(3)])
        assert [executor.store.get(f"task_out_{i}").column("p").to_pylist() for i in range(3)] == [[0], [1], [2]]
        executor.remove_blocks("task_out_")

    def test_task_context_get_is_the_running_task(self, executor):
        assert executor.run_tasks([Task(_running_task, i) for i in range(3)]) == [(True, 0), (True, 1), (True, 2)]
        assert TaskContext.get() is None  # not inside a task on the driver

    def test_broadcast_block_is_unpickled_once_per_process(self, executor):
        block_id = f"broadcast_suite_{os.getpid()}_{time.monotonic_ns()}"
        broadcasts.put(executor.store, block_id, serialization.dumps(list(range(100))))
        results = executor.run_tasks([Task(functools.partial(_broadcast_user, block_id), i, reads=(block_id,))
                                      for i in range(12)])
        assert {total for _, _, total in results} == {4950}
        objects: dict[int, set[int]] = {}
        for pid, obj, _ in results:
            objects.setdefault(pid, set()).add(obj)
        assert all(len(ids) == 1 for ids in objects.values()), objects  # one unpickled object per process
        # once the block is removed, the next task in a process drops the cached value: it is gone
        executor.remove_blocks(block_id)
        with pytest.raises(TaskError, match=r"Broadcast\(suite\) is not in the executor's block store"):
            executor.run_tasks([Task(functools.partial(_broadcast_user, block_id), i, reads=(block_id,))
                                for i in range(4)])


@pytest.fixture(scope="module")
def thread_executor():
    ex = ThreadExecutor(2)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def process_executor():
    ex = ProcessExecutor(2)
    yield ex
    ex.shutdown()


class TestThreadExecutor(ExecutorSuite):
    @pytest.fixture
    def executor(self, thread_executor):
        return thread_executor


class TestProcessExecutor(ExecutorSuite):
    @pytest.fixture
    def executor(self, process_executor):
        return process_executor

    def test_tasks_run_in_worker_processes(self, executor):
        pids = executor.run_tasks([Task(lambda tc: os.getpid(), i) for i in range(4)])
        assert os.getpid() not in pids
        assert set(pids) <= set(executor.worker_pids())

    def test_functions_travel_with_cloudpickle(self, executor):
        offset = 1000

        def local_function(tc):  # defined here, not importable by the worker: shipped by value
            return tc.partition_id + offset

        tasks = [Task(local_function, 1), Task(lambda tc: [tc.partition_id] * 2, 2),
                 Task(functools.partial(_sleep_then_return, 3), 3)]
        assert executor.run_tasks(tasks) == [1001, [2, 2], 30]

    def test_task_that_cannot_be_pickled_fails_clearly(self, executor):
        lock = threading.Lock()
        with pytest.raises(TaskError, match=r"serialising stage 2 \(count\) partition 0.*lock"):
            executor.submit_task(Task(lambda tc: lock.locked(), 0, "stage 2 (count) partition 0"))

    def test_result_that_cannot_be_pickled_fails_the_task_not_the_worker(self, executor):
        pids = set(executor.worker_pids())
        with pytest.raises(TaskError, match="stage 3 partition 0"):
            executor.run_tasks([Task(lambda tc: threading.Lock(), 0, "stage 3 partition 0")])
        assert set(executor.worker_pids()) == pids
        assert executor.run_tasks([Task(lambda tc: "next", 0)]) == ["next"]

    @pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
    def test_blocks_live_in_shared_memory_and_are_memory_mapped(self, executor):
        assert isinstance(executor.store, SharedDirBlockStore)
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            assert executor.store.directory.startswith("/dev/shm/")
        n = 100_000
        executor.store.put("mmap_0", pa.table({"x": pa.array(range(n), pa.int64())}))
        [(mapped, rows, pid)] = executor.run_tasks([Task(functools.partial(_read_block_mapping, "mmap_0"), 0)])
        assert rows == n and pid != os.getpid()
        assert mapped, "the worker copied the block instead of memory-mapping it"
        executor.remove_blocks("mmap_")

    def test_killed_worker_is_replaced_and_its_task_retried(self, executor, tmp_path):
        pid_file = str(tmp_path / "pid")
        before = set(executor.worker_pids())
        future = executor.submit_task(Task(functools.partial(_die_once, pid_file), 0, "sleepy task"))
        assert _wait_for(lambda: os.path.exists(pid_file)), "the task never started"
        victim = int(open(pid_file).read())
        assert victim in before
        os.kill(victim, signal.SIGKILL)
        assert future.result(timeout=30) == f"retried after {victim} died"
        assert _wait_for(lambda: len(executor.worker_pids()) == executor.num_workers)
        assert victim not in executor.worker_pids()
        # the pool still works at full strength
        assert executor.run_tasks([Task(lambda tc: tc.partition_id, i) for i in range(4)]) == [0, 1, 2, 3]

    def test_task_killing_every_worker_fails_after_max_attempts(self, tmp_path):
        attempts_file = str(tmp_path / "attempts")
        with ProcessExecutor(2, max_attempts=3) as ex:
            with pytest.raises(TaskError) as info:
                ex.run_tasks([Task(functools.partial(_die_always, attempts_file), 0, "stage 1 (count) partition 0")])
            assert "stage 1 (count) partition 0" in str(info.value)
            assert "died" in str(info.value)
            with open(attempts_file) as f:
                assert len(f.read().split()) == 3
            # the pool replaced every dead worker and still runs tasks
            assert ex.run_tasks([Task(lambda tc: "alive", 0)]) == ["alive"]

    def test_shutdown_leaves_no_workers_and_no_blocks(self):
        ex = ProcessExecutor(2)
        pids = ex.worker_pids()
        assert len(pids) == 2
        ex.store.put("b_0", pa.table({"x": [1]}))
        directory = ex.store.directory
        ex.shutdown()
        assert all(_gone(pid) for pid in pids)
        assert not os.path.exists(directory)
        with pytest.raises(RuntimeError):
            ex.submit_task(Task(lambda tc: 1, 0))
        ex.shutdown()  # twice is harmless

    @pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
    def test_workers_exit_when_the_driver_is_killed(self, tmp_path, busy):
        """Idle workers see their pipe close; busy ones (in a 60 s task) must notice on their own."""
        script = tmp_path / "app.py"  # not driver.py: that name would shadow the driver package
        script.write_text(textwrap.dedent(f"""
            import time
            from dstream import Context
            from dstream.executors import Task
            ctx = Context("local[2]")
            if {busy}:
                for i in range(2):
                    ctx.executor.submit_task(Task(lambda tc: time.sleep(60), i))
                time.sleep(0.5)
            print(" ".join(map(str, ctx.executor.worker_pids())), flush=True)
            time.sleep(60)
        """))
        driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                                  cwd=str(tmp_path))
        try:
            line = driver.stdout.readline()
            pids = [int(p) for p in line.split()]
            assert len(pids) == 2, f"driver printed {line!r}"
            assert not any(_gone(p) for p in pids)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=10)
            assert _wait_for(lambda: all(_gone(p) for p in pids), timeout=10), \
                f"workers {[p for p in pids if not _gone(p)]} outlived their driver"
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            driver.stdout.close()


# -- masters --------------------------------------------------------------------------------------------
class _FakeBackend:
    def __init__(self, name: str, workers: int, **options: object) -> None:
        self.name, self.workers, self.options = name, workers, options


@pytest.fixture
def fake_backends(monkeypatch):
    """make_executor without starting pools: each backend records its name and worker count."""
    monkeypatch.setattr(context_module, "get_backend",
                        lambda name: functools.partial(_FakeBackend, name))


@pytest.mark.parametrize("master, expected", [
    ("local", ("processes", 1)),
    ("local[3]", ("processes", 3)),
    ("local[*]", ("processes", os.cpu_count())),
    ("threads[2]", ("threads", 2)),
    ("threads[*]", ("threads", os.cpu_count())),
])
def test_make_executor_parses_masters(fake_backends, master, expected):
    ex = make_executor(master)
    assert (ex.name, ex.workers) == expected
    # process workers import the modules tasks run as they start, not on their first task
    assert ex.options == ({"preload": context_module.TASK_MODULES, "start_method": None}
                          if ex.name == "processes" else {})


def test_make_executor_passes_the_start_method_to_the_process_pool(fake_backends):
    assert make_executor("local[2]", "spawn").options["start_method"] == "spawn"
    assert make_executor("threads[2]", "spawn").options == {}  # no processes to start


@pytest.mark.parametrize("master", ["", "local[0]", "local[x]", "local[2", "local[-1]", "spark://host:7077",
                                    "threads[]", "LOCAL[2]"])
def test_make_executor_rejects_bad_masters(fake_backends, master):
    with pytest.raises(ValueError, match=re.escape(f"master {master!r}")):
        make_executor(master)


def test_make_executor_rejects_non_strings():
    with pytest.raises(ValueError, match="master"):
        make_executor(42)


def test_local_master_starts_one_worker_process():
    ex = make_executor("local")
    try:
        assert isinstance(ex, ProcessExecutor)
        assert ex.num_workers == 1 and len(ex.worker_pids()) == 1
    finally:
        ex.shutdown()


def test_threads_master_builds_a_thread_pool():
    ex = make_executor("threads[2]")
    try:
        assert isinstance(ex, ThreadExecutor) and ex.num_workers == 2
        assert ex.run_tasks([Task(lambda tc: tc.partition_id, 5)]) == [5]
    finally:
        ex.shutdown()


def test_backends_load_by_name():
    assert get_backend("threads") is ThreadExecutor
    assert get_backend("processes") is ProcessExecutor
    with pytest.raises(ValueError, match="unknown executor backend 'spark'"):
        get_backend("spark")


def test_backend_that_cannot_be_imported_names_itself(monkeypatch):
    monkeypatch.setattr(executors_base.BACKENDS, "entries", dict(executors_base.BACKENDS.entries))
    register_backend("nowhere", "dstream.executors.no_such_module:NoExecutor")
    with pytest.raises(ImportError, match="executor backend 'nowhere'"):
        get_backend("nowhere")
    register_backend("misnamed", "dstream.executors.threads:NoExecutor")
    with pytest.raises(ImportError, match="executor backend 'misnamed'"):
        get_backend("misnamed")


def test_a_backend_target_must_name_module_and_class(monkeypatch):
    monkeypatch.setattr(executors_base.BACKENDS, "entries", dict(executors_base.BACKENDS.entries))
    with pytest.raises(ValueError, match="executor backend 'odd'.*'module:Class'.*'just_a_module'"):
        register_backend("odd", "just_a_module")
    assert "odd" not in executors_base.BACKENDS.entries
