"""Input streams: queueStream, textFileStream, binaryRecordsStream, socketTextStream.

Batches are driven by the ManualClock: batch t takes what arrived in (t - interval, t].
"""
from __future__ import annotations

import os
import socket
import threading
import uuid

import fsspec
import pytest

from dstream import StreamingContext
from dstream.demo.harness import wait_until
from dstream.testing import advance, collect, collect_timed


def _wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    wait_until(predicate, timeout, what, interval=0.005)


# -- queueStream ----------------------------------------------------------------------------------------

def test_queue_stream_one_at_a_time_then_empty(ssc):
    out = collect(ssc.queueStream([[1, 2], [3], [4, 5, 6]]))
    ssc.start()
    advance(ssc, 5)
    assert out == [[1, 2], [3], [4, 5, 6], [], []]


def test_queue_stream_takes_rdds_and_lists(ssc, ctx):
    out = collect(ssc.queueStream([ctx.parallelize(["a", "b"], 2), ["c"], ctx.parallelize([], 1)]))
    ssc.start()
    advance(ssc, 3)
    assert out == [["a", "b"], ["c"], []]


def test_queue_stream_all_at_once(ssc, ctx):
    """oneAtATime=False: the first batch takes everything queued, as Spark's QueueInputDStream."""
    out = collect(ssc.queueStream([[1, 2], ctx.parallelize([3]), [4]], oneAtATime=False), sort=True)
    ssc.start()
    advance(ssc, 2)
    assert out == [[1, 2, 3, 4], []]


@pytest.mark.parametrize("as_rdd", [False, True])
def test_queue_stream_default_once_empty(ssc, ctx, as_rdd):
    default = ctx.parallelize(["d"], 1) if as_rdd else ["d"]
    out = collect(ssc.queueStream([["x"]], default=default))
    ssc.start()
    advance(ssc, 3)
    assert out == [["x"], ["d"], ["d"]]


# -- textFileStream / binaryRecordsStream ---------------------------------------------------------------

class LocalDir:
    """A watched local directory; files are written in a staging directory and renamed in."""

    def __init__(self, root, as_url: bool) -> None:
        self.dir = root / "in"
        self.staging = root / "staging"
        self.dir.mkdir()
        self.staging.mkdir()
        self.url = self.dir.as_uri() if as_url else str(self.dir)

    def put(self, name: str, data: bytes) -> None:
        tmp = self.staging / name
        tmp.write_bytes(data)
        os.rename(tmp, self.dir / name)

    def put_directly(self, name: str, data: bytes) -> None:
        (self.dir / name).write_bytes(data)


class MemoryDir:
    """A watched memory:// directory (works with the thread executor only)."""

    def __init__(self) -> None:
        self.fs = fsspec.filesystem("memory")
        base = f"/dstream-test-{uuid.uuid4().hex[:8]}"
        self.path = base + "/in"
        self.staging = base + "/staging"
        self.fs.makedirs(self.path, exist_ok=True)
        self.fs.makedirs(self.staging, exist_ok=True)
        self.url = "memory://" + self.path

    def put(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.staging}/{name}", data)
        self.fs.mv(f"{self.staging}/{name}", f"{self.path}/{name}")

    def put_directly(self, name: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.path}/{name}", data)

    def cleanup(self) -> None:
        self.fs.rm(self.path.rsplit("/", 1)[0], recursive=True)


@pytest.fixture(params=["path", "file-url", "memory"])
def watched(request, tmp_path):
    if request.param == "memory":
        d = MemoryDir()
        yield d
        d.cleanup()
    else:
        yield LocalDir(tmp_path, as_url=request.param == "file-url")


def test_text_file_stream_new_files_once(ssc, watched):
    watched.put("old.txt", b"was here before start\n")
    out = collect(ssc.textFileStream(watched.url), sort=True)
    ssc.start()
    advance(ssc)
    watched.put("a.txt", b"one\ntwo\n")
    watched.put("b.txt", b"three\r\nfour")
    advance(ssc)
    advance(ssc)
    watched.put("c.txt", b"five\n")
    advance(ssc)
    assert out == [[], ["four", "one", "three", "two"], [], ["five"]]


def test_text_file_stream_ignores_hidden_and_temporary_files(ssc, watched):
    out = collect(ssc.textFileStream(watched.url), sort=True)
    ssc.start()
    for name in (".hidden", "_underscore", "partial.tmp", "upload._COPYING_"):
        watched.put_directly(name, b"ignored\n")
    watched.put("real", b"seen\n")
    advance(ssc)
    assert out == [["seen"]]


def test_text_file_stream_missing_directory_is_empty_until_created(ssc, tmp_path):
    target = tmp_path / "later"
    out = collect(ssc.textFileStream(str(target)))
    ssc.start()
    advance(ssc)
    target.mkdir()
    (tmp_path / "f").write_text("x\n")
    os.rename(tmp_path / "f", target / "f")
    advance(ssc)
    assert out == [[], ["x"]]


def test_text_file_stream_on_process_executor(pctx, clock, tmp_path):
    """Files are read by the executor processes."""
    d = LocalDir(tmp_path, as_url=False)
    s = StreamingContext(pctx, 1.0, clock=clock)
    try:
        out = collect(s.textFileStream(d.url).map(str.upper), sort=True)
        s.start()
        d.put("a", b"x\ny\n")
        d.put("b", b"z\n")
        advance(s)
    finally:
        s.stop(stopSparkContext=False)
    assert out == [["X", "Y", "Z"]]


def test_memory_directory_needs_the_thread_executor(pctx, clock):
    s = StreamingContext(pctx, 1.0, clock=clock)
    try:
        with pytest.raises(ValueError, match="memory://.*thread executor"):
            s.textFileStream("memory://somewhere")
        with pytest.raises(ValueError, match="directory"):
            s.textFileStream(None)
    finally:
        s.stop(stopSparkContext=False)


def test_binary_records_stream(ssc, watched):
    out = collect(ssc.binaryRecordsStream(watched.url, 3), sort=True)
    ssc.start()
    watched.put("r1.bin", b"abcdef")
    watched.put("r2.bin", b"ghi")
    advance(ssc)
    advance(ssc)
    assert out == [[b"abc", b"def", b"ghi"], []]


def test_binary_records_stream_bad_length_fails_that_batch_only(ssc, tmp_path):
    d = LocalDir(tmp_path, as_url=False)
    out = collect(ssc.binaryRecordsStream(d.url, 4))
    ssc.start()
    d.put("bad.bin", b"12345")
    advance(ssc)
    d.put("good.bin", b"abcd")
    advance(ssc)
    assert out == [[b"abcd"]]
    with pytest.raises(Exception, match=r"bad\.bin") as info:
        ssc.awaitTerminationOrTimeout(0)
    assert "recordLength" in str(info.value)


def test_binary_records_stream_checks_record_length(ssc, tmp_path):
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(ValueError, match="recordLength"):
            ssc.binaryRecordsStream(str(tmp_path), bad)


# -- socketTextStream -----------------------------------------------------------------------------------

class LineServer:
    """A one-connection TCP server on 127.0.0.1 that sends what the test tells it to."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)
        self.sock.settimeout(5.0)
        self.port = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            self.conn, _ = self.sock.accept()
            self.connected.set()
        except OSError:
            pass

    def send(self, data: str) -> None:
        assert self.connected.wait(5.0), "the receiver did not connect"
        self.conn.sendall(data.encode("utf-8"))

    def close_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def close(self) -> None:
        self.close_connection()
        self.sock.close()
        self._thread.join(5.0)


@pytest.fixture
def server():
    s = LineServer()
    yield s
    s.close()


def test_socket_text_stream_batches_follow_arrival(ssc, server):
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    out = collect_timed(stream)
    ssc.start()
    server.send("a\nb\n")
    _wait_for(lambda: stream.buffered() == 2, what="2 lines buffered")
    advance(ssc)
    server.send("c\r\nd")  # "d" is incomplete until its newline arrives
    _wait_for(lambda: stream.buffered() == 1, what="1 line buffered")
    advance(ssc)
    server.send("e\n")
    _wait_for(lambda: stream.buffered() == 1, what="the completed line")
    advance(ssc)
    advance(ssc)
    assert out == [(1000, ["a", "b"]), (2000, ["c"]), (3000, ["de"]), (4000, [])]


def test_socket_text_stream_last_line_without_newline_at_close(ssc, server):
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    out = collect(stream)
    ssc.start()
    server.send("x\ntail")
    server.close_connection()
    _wait_for(lambda: stream.buffered() == 2, what="both lines")
    advance(ssc)
    assert out == [["x", "tail"]]


def test_socket_text_stream_reconnects_when_server_starts_late(ssc):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on the port yet
    stream = ssc.socketTextStream("127.0.0.1", port)
    stream.retry = 0.05
    out = collect(stream)
    ssc.start()
    advance(ssc)  # the receiver is failing to connect meanwhile
    late = LineServer(port)
    try:
        late.send("hello\n")
        _wait_for(lambda: stream.buffered() == 1, what="the line from the late server")
        advance(ssc)
    finally:
        late.close()
    assert out == [[], ["hello"]]


def test_socket_text_stream_checks_port(ssc):
    for bad in (0, 70000, "9999", None):
        with pytest.raises(ValueError, match="port"):
            ssc.socketTextStream("127.0.0.1", bad)


def test_socket_receiver_stops_with_the_context(ctx, clock, server):
    s = StreamingContext(ctx, 1.0, clock=clock)
    stream = s.socketTextStream("127.0.0.1", server.port)
    collect(stream)
    s.start()
    assert server.connected.wait(5.0)
    s.stop(stopSparkContext=False)
    assert not stream._thread.is_alive()


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\n", b"a\r\nb", b"a\rb\r", b"\n\n\r\n\r", b"x\r\n\r\ny",
                                  b"x" * ((1 << 20) - 1) + b"\r\nlast"])  # \r\n across the 1 MiB read
def test_record_count_of_a_text_file_matches_its_lines(tmp_path, data):
    from dstream.io import split_lines
    from dstream.sources import _count_lines
    path = tmp_path / "f"
    path.write_bytes(data)
    assert _count_lines(str(path)) == len(split_lines(data.decode()))
