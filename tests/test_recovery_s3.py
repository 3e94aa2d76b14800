"""Driver-kill recovery with everything on S3: input files, metadata checkpoints, data snapshots and output
on a real S3-compatible server (moto's, on loopback), the driver killed with SIGKILL twice while files keep
arriving, also while it is down. The output must end at the true counts, every committed batch written once.
"""
from __future__ import annotations

import random
import time

import pytest

from dstream.demo.harness import pid_alive, wait_until

from .recovery_harness import WordCountDriver

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape"]


@pytest.fixture
def driver(tmp_path, s3_bucket):
    d = WordCountDriver(tmp_path, "--interval", "0.5", data_root=f"{s3_bucket}/job")
    yield d
    d.close()


def test_killed_driver_recovers_exactly_once_with_everything_on_s3(driver):
    rng = random.Random(20261130)
    driver.start(timeout=60)
    committed_before: dict = {}
    for _ in range(2):
        for _ in range(3):
            driver.write_file(rng.sample(WORDS, 3), lines=rng.randint(1, 3))
            time.sleep(rng.uniform(0.2, 0.6))
        wait_until(lambda: driver.files.committed(), 30, "a first committed batch on S3")
        committed_before.update(driver.committed())
        workers = driver.kill()
        wait_until(lambda: not any(pid_alive(p) for p in workers), 10, f"workers {workers} to exit")
        for _ in range(2):  # input arriving while the driver is down
            driver.write_file(rng.sample(WORDS, 2))
        time.sleep(1.0)  # batches fall due while it is down
        started = driver.start(timeout=60)
        assert started["restored"], "the restarted driver must rebuild itself from its checkpoint on S3"
    driver.write_file(["fig", "fig"])
    driver.wait_caught_up(timeout=90)
    after = driver.committed()
    changed = [name for name, files in committed_before.items() if after.get(name) != files]
    assert not changed, f"committed batches rewritten after a restart: {changed}"
    assert "Traceback" not in driver.stderr(), driver.stderr()
