"""How process-pool workers start: warmed up before their first task, forked by one launcher that imported
once (``executors/launcher.py``), or each on its own; and never left behind by a driver that dies or shuts
down while they are still importing."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dstream import Context
from dstream.context import TASK_MODULES
from dstream.demo.harness import pid_alive, wait_until, worker_processes
from dstream.executors import Task, TaskError
from dstream.executors.launcher import START_METHODS, hashes_like_workers, supported
from dstream.executors.processes import PRELOAD, ProcessExecutor

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes through /proc")

#: the ways of starting workers this test process can use (the platform's; "fork" needs the driver to run
#: with PYTHONHASHSEED=0, so tests run it in drivers of their own)
MODES = [m for m in START_METHODS if m == "spawn" or (supported() and (m != "fork" or hashes_like_workers()))]
#: the ways of starting workers a driver started with PYTHONHASHSEED=0 can use
DRIVER_MODES = ["fork", "forkserver", "spawn"] if supported() else ["spawn"]


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    return not pid_alive(pid)


def _slow_module(directory: Path) -> str:
    """A module that takes 60 s to import, written to ``directory``; its name."""
    name = f"slow_import_{os.getpid()}_{time.monotonic_ns()}"
    (directory / f"{name}.py").write_text("import time\ntime.sleep(60)\n")
    return name


def _probe(names: tuple[str, ...]):
    """A task function, pickled by value (a closure): which of ``names`` its worker had imported when it
    began (unpickling it imports none of them), and who the worker is."""
    def loaded(tc) -> dict:
        return {"pid": os.getpid(), "ppid": os.getppid(), "loaded": [n for n in names if n in sys.modules]}
    return loaded


@pytest.mark.parametrize("method", MODES)
def test_workers_have_imported_what_tasks_use_before_their_first_task(method):
    wanted = (*PRELOAD, "dstream.rdd", "dstream.shuffle")
    with ProcessExecutor(2, preload=("dstream.rdd", "dstream.shuffle"), start_method=method) as ex:
        [report] = ex.run_tasks([Task(_probe(wanted), 0)])
        assert report["loaded"] == list(wanted)
        pids = ex.worker_pids()
        assert report["pid"] in pids and len(pids) == 2
        parents = {r["ppid"] for r in ex.run_tasks([Task(_probe(()), i) for i in range(8)])}
        if method != "spawn":  # forked by the one launcher, not by this process
            assert len(parents) == 1 and os.getpid() not in parents
        else:
            assert parents == {os.getpid()}


def test_a_local_context_warms_its_workers_with_the_modules_tasks_run():
    ctx = Context("local[2]")
    try:
        wanted = (*PRELOAD, *TASK_MODULES)
        [report] = ctx.executor.run_tasks([Task(_probe(wanted), 0)])
        assert report["loaded"] == list(wanted)
    finally:
        ctx.stop()


@pytest.mark.parametrize("method", MODES)
def test_shutdown_while_the_workers_still_import_is_quick_and_leaves_no_process(tmp_path, monkeypatch, method):
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers' import path is the driver's
    slow = _slow_module(tmp_path)
    before = set(worker_processes(os.getpid()))
    ex = ProcessExecutor(2, preload=(slow,), start_method=method)
    mine = wait_until(lambda: set(worker_processes(os.getpid())) - before, 10, "the worker processes to show")
    time.sleep(0.3)  # well into the 60 s import
    began = time.monotonic()
    ex.shutdown()
    took = time.monotonic() - began
    wait_until(lambda: all(_gone(p) for p in mine), 5, f"processes {sorted(mine)} to exit")
    assert took < 3.0, f"shutdown took {took:.2f} s"


_DRIVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dstream.executors.processes import ProcessExecutor
    ex = ProcessExecutor(2, preload=(sys.argv[2],), start_method=sys.argv[3])
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("method", DRIVER_MODES)
def test_a_driver_killed_while_its_workers_import_leaves_no_process(tmp_path, method):
    """A process still importing (here for 60 s) watches the driver's end of its socket from its first
    moment (the bootstrap's thread, before any import but the standard library; the forked launcher's
    thread), so it exits at once."""
    slow = _slow_module(tmp_path)
    script = tmp_path / "app.py"
    script.write_text(_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), slow, method], stdout=subprocess.PIPE,
                            text=True, cwd=str(tmp_path), env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        assert proc.stdout.readline().strip() == "ready"
        expected = 1 if method != "spawn" else 2  # the launcher, still importing; or the two workers
        started = wait_until(lambda: len(worker_processes(proc.pid)) >= expected and worker_processes(proc.pid),
                             10, "the worker processes to show")
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: all(_gone(p) for p in started), 5, f"processes {started} to exit")
        assert time.monotonic() - killed < 2.0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _die_once(marker: str, tc) -> int:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not supported(), reason="workers are forked only where the platform allows")
def test_workers_start_on_their_own_once_the_launcher_is_gone(tmp_path):
    with ProcessExecutor(2) as ex:
        pids = ex.worker_pids()
        [launcher] = {_parent(p) for p in pids}
        os.kill(launcher, signal.SIGKILL)
        wait_until(lambda: _gone(launcher), 5, "the launcher to exit")
        assert sorted(ex.worker_pids()) == sorted(pids)  # its workers live on
        # one that dies is replaced by a process of its own (its task retried on the other)
        assert ex.run_tasks([Task(functools.partial(_die_once, str(tmp_path / "died")), 0)])[0] in pids
        wait_until(lambda: len(ex.worker_pids()) == 2 and set(ex.worker_pids()) != set(pids), 20,
                   "the pool to be whole again")
        [new] = set(ex.worker_pids()) - set(pids)
        assert _parent(new) == os.getpid()
        assert ex.run_tasks([Task(lambda tc: tc.partition_id, i) for i in range(4)]) == [0, 1, 2, 3]


def _draw(tc) -> tuple[int, float, float]:
    import random

    import numpy

    time.sleep(0.2)  # both workers get one
    return os.getpid(), random.random(), float(numpy.random.random())


def test_forked_workers_draw_different_random_numbers():
    with ProcessExecutor(2) as ex:
        draws = ex.run_tasks([Task(_draw, i) for i in range(2)])
    assert len({pid for pid, _, _ in draws}) == 2
    assert draws[0][1] != draws[1][1] and draws[0][2] != draws[1][2]


def _kill_self(tc) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", MODES)
def test_a_lost_worker_is_named_with_its_exit_code(method):
    """The launcher reaps the workers it forked and reports their exit codes, as Popen does for its own."""
    with ProcessExecutor(1, max_attempts=1, start_method=method) as ex:
        [pid] = ex.worker_pids()
        with pytest.raises(TaskError, match=rf"pid {pid}, exit code -9"):
            ex.run_tasks([Task(_kill_self, 0, "stage 1 partition 0")])
        wait_until(lambda: len(ex.worker_pids()) == 1 and ex.worker_pids() != [pid], 20, "a new worker")
        assert ex.run_tasks([Task(lambda tc: "alive", 0)]) == ["alive"]
