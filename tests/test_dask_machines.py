"""The DaskMachines harness itself: private /dev/shm and temp dirs per worker, kill and add workers."""
from __future__ import annotations

import os
import tempfile
import uuid

import pytest

from .dask_machines import DaskMachines, namespaces_unavailable


@pytest.fixture(scope="module")
def machines():
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with DaskMachines(2) as m:
        yield m


def _write_files(tag: str) -> tuple[str, str]:
    """On a worker: write a file into /dev/shm and one into the temp dir; return both paths."""
    paths = (os.path.join("/dev/shm", tag), os.path.join(tempfile.gettempdir(), tag))
    for p in paths:
        with open(p, "w") as f:
            f.write(tag)
    return paths


def _exists(paths: tuple[str, str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


def _tempdir() -> str:
    return tempfile.gettempdir()


def test_workers_are_separate_machines(machines):
    client = machines.client()
    a, b = machines.machines[:2]
    assert sorted(machines.worker_pids()) == sorted([a.pid, b.pid])
    assert client.run(_tempdir) == {a.address: a.tmpdir, b.address: b.tmpdir}

    tag = f"dask-machines-{uuid.uuid4().hex}"
    paths = client.run(_write_files, tag, workers=[a.address])[a.address]
    paths = tuple(paths)
    assert paths == (f"/dev/shm/{tag}", os.path.join(a.tmpdir, tag))
    assert client.run(_exists, paths, workers=[a.address])[a.address] == [True, True]
    assert client.run(_exists, paths, workers=[b.address])[b.address] == [False, False]
    assert _exists(paths) == [False, False]


def test_kill_and_add_worker(machines):
    client = machines.client()
    victim = machines.live_machines()[0]
    machines.kill_worker(victim)
    assert not victim.alive
    assert victim.address not in client.scheduler_info(n_workers=-1)["workers"]

    new = machines.add_worker()
    assert new.alive and new.address in client.scheduler_info(n_workers=-1)["workers"]
    assert client.submit(os.getpid, pure=False, workers=[new.address]).result(timeout=30) == new.pid
    assert new.pid in machines.worker_pids()
    assert len(machines.worker_pids()) == 2
