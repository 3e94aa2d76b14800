"""Shared fixtures: one thread-pool and one process-pool Context for the whole session."""
from __future__ import annotations

import pytest

from dstream import Context, ManualClock, StreamingContext
from dstream.executors.blockstore import SharedDirBlockStore

from .s3server import s3_bucket, s3_options, s3_server  # noqa: F401 - the S3 server fixtures, for every test module


@pytest.fixture(scope="session", autouse=True)
def no_leftover_block_dirs():
    """Drivers killed by the recovery tests leave their /dev/shm block directories; remove them at the end."""
    yield
    SharedDirBlockStore.remove_orphans()


@pytest.fixture(scope="session")
def ctx():
    """A thread-pool Context (fast to start; most operator tests run on it)."""
    c = Context("threads[2]")
    yield c
    c.stop()


@pytest.fixture(scope="session")
def pctx():
    """A process-pool Context with two worker processes (closures and data really cross processes)."""
    c = Context("local[2]")
    yield c
    c.stop()


@pytest.fixture(params=["threads", "processes"])
def any_ctx(request, ctx, pctx):
    """Each test runs on both executor kinds."""
    return ctx if request.param == "threads" else pctx


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def ssc(ctx, clock):
    """A StreamingContext with 1 s batches on a ManualClock; stopped (not its Context) after the test."""
    s = StreamingContext(ctx, 1.0, clock=clock)
    yield s
    s.stop(stopSparkContext=False)
