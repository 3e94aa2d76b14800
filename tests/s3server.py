"""Fixtures for tests against a real S3-compatible server: moto's standalone server (``python -m moto.server``,
started by ``dstream.demo.harness.S3Server``) on a free loopback port, reached the way users reach S3, through
the environment botocore and s3fs read (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), so child processes
(drivers, executor workers) see it too. Each test gets its own bucket.

``tests/conftest.py`` registers the fixtures for every test module.
"""
from __future__ import annotations

import os

import pytest

from dstream.demo.harness import S3_CREDENTIALS, S3Server


#: the one server of this test process and how many session fixtures hold it: every module that imports
#: ``s3_server`` gets its own session-scoped fixture from pytest, and they must share one server and one
#: environment (s3fs caches its filesystem per arguments, so one made from the environment keeps the
#: endpoint it first saw, and executor processes keep the environment they started with)
_shared: dict = {"server": None, "users": 0, "saved": {}}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """The S3 server for the session, with this process's environment pointed at it."""
    pytest.importorskip("moto.server", reason="moto[server] (the [test] extra) runs the S3 server")
    s3fs = pytest.importorskip("s3fs", reason="s3fs (the [test] and [s3] extras) reads s3:// URLs")
    if _shared["server"] is None:
        server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
        _shared.update(server=server, saved={k: os.environ.get(k) for k in server.env})
        os.environ.update(server.env)
        s3fs.S3FileSystem.clear_instance_cache()  # none made before keeps another endpoint
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            for k, v in _shared["saved"].items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _shared["server"].stop()
            _shared["server"] = None
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket on the S3 server, as an ``s3://`` URL."""
    return s3_server.new_bucket()


#: the credentials the server accepts (its environment without the endpoint)
CREDENTIALS = S3_CREDENTIALS


@pytest.fixture
def s3_options(s3_server):
    """Storage options for the test server, given explicitly: they travel to the executors with the tasks,
    so executor processes started before the server (the session's ``pctx``) reach it too."""
    return {"endpoint_url": s3_server.endpoint, "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
