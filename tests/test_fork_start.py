"""Workers forked from the driver (``dstream.executor.startMethod`` "fork", the default where the driver runs
with PYTHONHASHSEED=0): the launcher lets go of what is the driver's (descriptors, signal handlers, its
standard streams) and its workers hash like the driver and like workers started on their own. The drivers
here are processes of their own, started with PYTHONHASHSEED=0 (this test process may hash otherwise)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dstream import Context
from dstream.demo.harness import wait_until, worker_processes
from dstream.executors.launcher import hashes_like_workers, supported

pytestmark = pytest.mark.skipif(not supported(), reason="workers are forked only on Linux")

_DRIVER = textwrap.dedent("""
    import io, json, os, select, signal, sys, time
    from dstream import Context
    from dstream.executors import Task, TaskError
    from dstream.executors.launcher import process_name
    from dstream.executors.processes import ProcessExecutor

    out = sys.stdout
    marker = sys.argv[1]
    signal.signal(signal.SIGTERM, lambda *_: open(marker, "w").close())  # the driver's, not its workers'
    read_end, write_end = os.pipe()  # a pipe the driver holds while the workers are forked
    sys.stdout = io.StringIO()  # as a notebook kernel's stream: what workers print must not go here

    ctx = Context("local[2]")
    ex = ctx.executor
    words = ["a", "b", "a", "c", "a", "b"] * 50
    counts = dict(ctx.parallelize(words, 4).map(lambda w: (w, 1)).reduceByKey(lambda x, y: x + y).collect())

    def worker(tc):
        print(f"printed by worker {os.getpid()}", flush=True)
        with open(f"/proc/{os.getpid()}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
            cmdline = f.read()
        return {"pid": os.getpid(), "comm": comm, "cmdline_is_drivers": cmdline == driver_cmdline,
                "hash": hash("dstream")}

    with open("/proc/self/cmdline", "rb") as f:
        driver_cmdline = f.read()
    reports = ex.run_tasks([Task(worker, i) for i in range(4)])
    workers = sorted(ex.worker_pids())

    def terminate(tc):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the driver's handler would return; the default ends the process
        return "survived SIGTERM"
    try:
        terminated = ex.run_tasks([Task(terminate, 0, "terminate")])[0]
    except TaskError as exc:
        terminated = str(exc)

    os.close(write_end)  # the workers and their launcher hold no copy: the read end sees the end at once
    ready, _, _ = select.select([read_end], [], [], 5)
    pipe = "end" if ready and os.read(read_end, 1) == b"" else "still open"
    with ProcessExecutor(1, start_method="spawn") as spawned:
        spawned_hash = spawned.run_tasks([Task(lambda tc: hash("dstream"), 0)])[0]
    print(json.dumps({"method": ex.start_method, "counts": counts, "reports": reports,
                      "workers": workers, "name": process_name(os.getpid()),
                      "terminated": terminated, "marker": os.path.exists(marker), "pipe": pipe,
                      "driver_hash": hash("dstream"), "spawned_hash": spawned_hash,
                      "captured": sys.stdout.getvalue()}), file=out, flush=True)
    ctx.stop()
""")


def _run_driver(tmp_path, hash_seed: str | None = "0") -> tuple[dict, str]:
    """Run ``_DRIVER`` with PYTHONHASHSEED ``hash_seed`` (None: unset, a random seed); its report and what
    else it printed."""
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "sigterm-handled")], capture_output=True,
                          text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *printed, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed)


def test_a_driver_with_hash_seed_0_forks_its_workers_which_leave_the_drivers_things_behind(tmp_path):
    r, printed = _run_driver(tmp_path)
    assert r["method"] == "fork"
    assert r["counts"] == {"a": 150, "b": 100, "c": 50}
    pids = {report["pid"] for report in r["reports"]}
    assert pids <= set(r["workers"]) and len(r["workers"]) == 2
    # the workers are found by their name, their command line being the driver's
    assert all(report["comm"] == r["name"] and report["cmdline_is_drivers"] for report in r["reports"])
    # the driver's SIGTERM handler is not the workers': the default ends the worker, and the task says so
    assert "exit code -15" in r["terminated"] and not r["marker"]
    # no descriptor of the driver's stays open in a worker: the driver's pipe ended when it closed its end
    assert r["pipe"] == "end"
    # what a task prints goes to the process's stdout, not into the driver's stream object of the moment
    assert r["captured"] == ""
    assert {f"printed by worker {pid}" for pid in pids} <= set(printed.splitlines())
    # forked workers hash like the driver and like workers started on their own (PYTHONHASHSEED=0)
    assert {report["hash"] for report in r["reports"]} == {r["driver_hash"]} == {r["spawned_hash"]}


def test_a_driver_with_a_random_hash_seed_starts_its_workers_from_a_fresh_launcher(tmp_path):
    r, _ = _run_driver(tmp_path, hash_seed=None)
    assert r["method"] == "forkserver"
    assert r["counts"] == {"a": 150, "b": 100, "c": 50}
    # the workers hash with PYTHONHASHSEED=0, forked or not (the driver hashes otherwise)
    assert {report["hash"] for report in r["reports"]} == {r["spawned_hash"]}


def test_a_killed_driver_takes_its_forked_launcher_and_workers_with_it(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("from dstream import Context\nimport time\nctx = Context('local[3]')\n"
                      "print(len(ctx.executor.worker_pids()), flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        assert proc.stdout.readline().strip() == "3"
        started = wait_until(lambda: len(worker_processes(proc.pid)) == 4 and worker_processes(proc.pid), 10,
                             "the launcher and 3 workers to show")
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: not worker_processes(proc.pid, started), 5, f"processes {started} to exit")
        assert time.monotonic() - killed < 2.0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_an_unknown_start_method_is_named_with_the_conf_key():
    with pytest.raises(ValueError, match=r"dstream\.executor\.startMethod must be one of fork, forkserver, "
                                         r"spawn, got 'vfork'"):
        Context("local[1]", conf={"dstream.executor.startMethod": "vfork"})


@pytest.mark.skipif(hashes_like_workers(), reason="this test process runs with PYTHONHASHSEED=0")
def test_fork_asked_of_a_driver_with_a_random_hash_seed_says_to_set_pythonhashseed():
    with pytest.raises(ValueError, match=r"'fork' needs the driver started with PYTHONHASHSEED=0"):
        Context("local[1]", conf={"dstream.executor.startMethod": "fork"})


_WARMING_DRIVER = textwrap.dedent("""
    import json, sys, threading
    sys.path.insert(0, sys.argv[1])
    from dstream.executors import Task
    from dstream.executors.launcher import warm_up_in_background
    from dstream.executors.processes import ProcessExecutor

    warm_up_in_background(["slow_to_import"])  # 1 s: the fork must wait for it, not copy it half imported
    with ProcessExecutor(1, start_method="fork") as ex:
        seen = ex.run_tasks([Task(lambda tc: getattr(sys.modules.get("slow_to_import"), "done", None), 0)])[0]
    import dstream  # noqa: E402 - after: a Context warms the driver's pandas
    before = "pandas" in sys.modules
    ctx = dstream.Context("threads[1]")
    warming = [t for t in threading.enumerate() if t.name == "dstream-warm-up"]
    for t in warming:
        t.join(30)
    print(json.dumps({"seen": seen, "pandas_before": before, "pandas_after": "pandas" in sys.modules}))
    ctx.stop()
""")


def test_a_context_imports_pandas_in_the_background_and_a_fork_waits_for_such_imports(tmp_path):
    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(1)\ndone = True\n")
    script = tmp_path / "driver.py"
    script.write_text(_WARMING_DRIVER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r == {"seen": True, "pandas_before": False, "pandas_after": True}


def test_a_driver_started_with_its_standard_descriptors_closed_still_forks_working_workers(tmp_path):
    """A daemon may run with descriptors 0-2 closed, so that its own sockets get those numbers: the launcher
    moves its socket above them and puts /dev/null there for its workers."""
    result = tmp_path / "result.json"
    code = ("import os, sys, json\n"
            "from dstream import Context\n"
            "ctx = Context('local[2]')\n"
            "r = sorted(ctx.parallelize(range(10), 2).map(lambda x: (x % 2, print(x) or 1))"
            ".reduceByKey(lambda a, b: a + b).collect())\n"
            f"open({str(result)!r}, 'w').write(json.dumps([sys.stdout is None, ctx.executor.start_method, r, "
            "ctx.executor._launcher.alive]))\n"
            "ctx.stop()\n")
    proc = subprocess.run(["bash", "-c", 'exec "$0" -c "$1" <&- >&- 2>&-', sys.executable, code], timeout=60,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0
    assert json.loads(result.read_text()) == [True, "fork", [[0, 5], [1, 5]], True]
