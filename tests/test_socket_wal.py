"""socketTextStream's write-ahead log: with checkpointing, every received line is logged (flushed and
fsynced) under ``<checkpoint>/wal/<stream id>/`` before a batch counts it; a batch replayed after a
restart takes exactly the lines it took before; lines received but in no recorded batch go into the
first batches after the restart; segments no remembered batch needs are deleted. On S3 (the real server
of tests/s3server.py) the segments are immutable objects, one per block interval, written in one put.
"""
from __future__ import annotations

import collections
import os
import posixpath
import socket
from pathlib import Path

import cloudpickle
import pytest

import dstream.wal
from dstream.driver.checkpoint import read_latest
from dstream import ManualClock, StreamingContext
from dstream.demo.harness import RestartableDriver, committed_batches, read_counts, read_lines, wait_until
from dstream.testing import advance, collect_timed
from dstream.driver.storage import Location

from .tcp_server import TcpServer


APP = Path(__file__).parent / "apps" / "socket_app.py"


class LineServer(TcpServer):
    """Keeps accepting (a restarted receiver reconnects) and sends to the newest connection."""

    def __init__(self) -> None:
        self.conns: list[socket.socket] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> bool:
        self.conns.append(conn)
        return True

    def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        wait_until(lambda: len(self.conns) >= n, timeout, f"connection {n} from the receiver")

    def send(self, lines: list[str]) -> None:
        self.conns[-1].sendall("".join(ln + "\n" for ln in lines).encode("utf-8"))

    def close(self) -> None:
        super().close()
        for c in self.conns:
            c.close()


@pytest.fixture
def server():
    s = LineServer()
    yield s
    s.close()


def wal_segments(checkpoint: Path) -> dict[str, list[str]]:
    """Every write-ahead log segment under a checkpoint directory: name -> its complete lines."""
    out = {}
    for seg in sorted((checkpoint / "wal").glob("*/segment-*")):
        try:
            out[seg.name] = seg.read_bytes().decode("utf-8").split("\n")[:-1]
        except FileNotFoundError:
            continue  # deleted by the clean-up between the listing and the read
    return out


def wal_lines(checkpoint: Path) -> list[str]:
    return [ln for lines in wal_segments(checkpoint).values() for ln in lines]


# -- in process, on the ManualClock ---------------------------------------------------------------------

def test_lines_are_logged_and_fsynced_before_a_batch_counts_them(ssc, server, tmp_path, monkeypatch):
    checkpoint = tmp_path / "cp"
    ssc.checkpoint(str(checkpoint))
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    out = collect_timed(stream)
    synced = []  # at each fsync: (the lines on disk, the lines buffered for a batch)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append((wal_lines(checkpoint), stream.buffered()))

    monkeypatch.setattr(dstream.wal.os, "fsync", fsync)
    ssc.start()
    server.wait_connections(1)
    server.send(["a", "b"])
    wait_until(lambda: stream.buffered() == 2, 5, "2 lines buffered")
    advance(ssc)
    server.send(["c"])
    wait_until(lambda: stream.buffered() == 1, 5, "1 line buffered")
    # durable on disk while not yet counted, for each receive
    assert (["a", "b"], 0) in synced and (["a", "b", "c"], 0) in synced
    advance(ssc)
    assert out == [(1000, ["a", "b"]), (2000, ["c"])]
    assert list(wal_segments(checkpoint)) == ["segment-000000000000"]


def test_segments_no_remembered_batch_needs_are_deleted(ssc, server, tmp_path):
    checkpoint = tmp_path / "cp"
    ssc.checkpoint(str(checkpoint))
    ssc.remember(2.0)  # the input keeps its last 2 batches
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    stream.wal_segment_lines = 2  # batch k's 2 lines fill segment-<2(k-1)>
    stream.wal_keep = 2  # and the batches of the cleanup before last are kept too
    out = collect_timed(stream)
    ssc.start()
    server.wait_connections(1)
    for k in range(1, 8):
        server.send([f"{k}a", f"{k}b"])
        wait_until(lambda: stream.buffered() == 2, 5, "the batch's lines")
        advance(ssc)
        kept = range(max(k - 2, 1), k + 1)  # batches k-2 .. k: the ones the last 2 cleanups remember
        names = [f"segment-{2 * (j - 1):012d}" for j in kept]
        # the cleanup runs on the job generator just after the batch completes
        wait_until(lambda: list(wal_segments(checkpoint)) == names, 5, f"segments {names} after batch {k}")
        on_disk = wal_segments(checkpoint)
        assert [on_disk[f"segment-{2 * (j - 1):012d}"] for j in kept] == [[f"{j}a", f"{j}b"] for j in kept]
    assert [records for _, records in out] == [[f"{k}a", f"{k}b"] for k in range(1, 8)]


REPLAYED: list[tuple[int, list[str]]] = []


def _record(time, rdd) -> None:
    """A sink the restored graph still reaches (pickled by reference, not copied)."""
    REPLAYED.append((round(time.timestamp() * 1000), rdd.collect()))


def test_restart_replays_recorded_batches_and_buffers_unbatched_lines(ssc, clock, server, tmp_path):
    checkpoint = str(tmp_path / "cp")
    ssc.checkpoint(checkpoint)
    ssc.socketTextStream("127.0.0.1", server.port).foreachRDD(_record)
    REPLAYED.clear()
    ssc.start()
    server.wait_connections(1)
    server.send(["a", "b"])
    wait_until(lambda: ssc.graph.inputs[0].buffered() == 2, 5, "a, b")
    advance(ssc)
    server.send(["c", "d"])
    wait_until(lambda: ssc.graph.inputs[0].buffered() == 2, 5, "c, d")
    ssc.stop(stopSparkContext=False)  # c and d are logged, but no batch took them
    assert REPLAYED == [(1000, ["a", "b"])]
    segment = next((tmp_path / "cp" / "wal").glob("*/segment-*"))
    with open(segment, "ab") as f:
        f.write(b"torn")  # a line the driver died while writing: never buffered, so not a line

    clock2 = ManualClock(clock.now())
    restored = StreamingContext.getOrCreate(checkpoint, lambda: pytest.fail("must restore"), clock=clock2)
    try:
        restored.start()
        server.wait_connections(2)
        stream = restored._graph.inputs[0]
        server.send(["e"])
        wait_until(lambda: stream.buffered() == 3, 5, "c, d back from the log, and e")
        # batch 1000, recomputed, takes exactly its logged lines and none of the buffered ones
        assert stream._get_or_compute(1000).collect() == ["a", "b"]
        assert stream.buffered() == 3
        advance(restored)
        assert REPLAYED[1:] == [(2000, ["c", "d", "e"])]
        assert wal_lines(tmp_path / "cp") == ["a", "b", "c", "d", "e"]
    finally:
        restored.stop(stopSparkContext=False)


# -- a real driver process, killed with SIGKILL -----------------------------------------------------------

class SocketApp(RestartableDriver):
    """tests/apps/socket_app.py in its own process, restartable from its checkpoint."""

    def __init__(self, root: Path, port: int) -> None:
        self.output = root / "out"
        self.checkpoint = root / "checkpoint"
        super().__init__([str(APP), "127.0.0.1", str(port), str(self.output), str(self.checkpoint),
                          "--interval", "0.25"], root / "stderr.log")

    def start(self, slow: float = 0.0) -> dict:
        return super().start(20, env=dict(os.environ, SOCKET_APP_SLOW=str(slow)))

    def committed(self, kind: str) -> dict[int, list[str]]:
        """Each committed ``kind`` (lines or counts) output directory's lines, by batch time."""
        return {t: read_lines(d) for t, d in committed_batches(self.output, kind).items()}

    def latest_counts(self) -> dict[str, int]:
        counts = committed_batches(self.output, "counts")
        return dict(read_counts(counts[max(counts)])) if counts else {}

    def recorded_input(self) -> tuple[object, object]:
        """The newest checkpoint and its socket stream (with its recorded WAL ranges)."""
        cp = read_latest(str(self.checkpoint))
        return cp, cloudpickle.loads(cp.graph).inputs[0]


def test_killed_driver_counts_every_socket_line_exactly_once(server, tmp_path):
    app = SocketApp(tmp_path, server.port)
    sent = [f"line-{i:03d}" for i in range(30)]
    try:
        app.start(slow=1.0)  # batches with lines take 1 s: some are still running at the kill
        server.wait_connections(1)
        server.send(sent[:10])
        # a checkpoint records that a batch took lines 0..9; that batch is now in its slow second
        wait_until(lambda: (cp := read_latest(str(app.checkpoint))) is not None
                   and cloudpickle.loads(cp.graph).inputs[0].wal_taken == 10, 10, "a batch to take lines 0-9")
        server.send(sent[10:20])
        wait_until(lambda: wal_lines(app.checkpoint) == sent[:20], 10, "lines 0-19 in the write-ahead log")
        app.kill()
        committed_at_kill = {ln for lines in app.committed("lines").values() for ln in lines}
        assert set(sent[10:20]).isdisjoint(committed_at_kill), "the kill came too late to test recovery"
        cp, stream = app.recorded_input()
        pending = {t: stream.batch_wal[t] for t in cp.pending_times if t in stream.batch_wal}
        assert any(end > first for first, end in pending.values()), f"no batch with lines was pending: {cp}"

        assert app.start()["restored"]
        server.wait_connections(2)
        server.send(sent[20:])
        wait_until(lambda: app.latest_counts() == {ln: 1 for ln in sent}, 20,
                   "every line counted once in the newest state")
        raw = app.committed("lines")
        # the raw lines of all committed batches hold each line exactly once
        assert collections.Counter(ln for lines in raw.values() for ln in lines) == collections.Counter(sent)
        # (a) each batch pending at the kill was rerun on exactly the lines it had recorded
        for t, (first, end) in pending.items():
            assert raw[t] == sent[first:end], f"replayed batch {t}"
        # (b) lines logged but in no recorded batch went into batches after the restart
        later = {ln for t, lines in raw.items() if t > cp.time_ms for ln in lines}
        assert set(sent[stream.wal_taken:20]) <= later
        assert "Traceback" not in app.stderr(), app.stderr()
    finally:
        app.close()


# -- on object stores: immutable segment objects ---------------------------------------------------------

def segment_objects(wal: Location) -> dict[str, bytes]:
    """Every segment object of a write-ahead log directory (listed afresh): name -> its bytes."""
    out = {}
    for e in wal.list():
        try:
            out[posixpath.basename(e["name"])] = wal.fs.cat_file(e["name"])
        except FileNotFoundError:
            continue  # deleted by the clean-up between the listing and the read
    return out


def test_s3_log_is_immutable_objects_replayed_after_a_restart_and_deleted(ssc, clock, server, s3_bucket,
                                                                          monkeypatch):
    checkpoint = f"{s3_bucket}/cp"
    wal = Location(checkpoint).join("wal", "input-0")
    ssc.checkpoint(checkpoint)
    streams = [ssc.socketTextStream("127.0.0.1", server.port)]
    streams[0].foreachRDD(_record)
    REPLAYED.clear()
    puts = []  # at each put: (object name, its bytes, lines buffered, whether the object reads back whole)
    real_put = dstream.wal.ObjectWriter.put

    def put(self, path: str, data: bytes) -> None:
        real_put(self, path, data)
        puts.append((posixpath.basename(path), data, streams[-1].buffered(), self.wal.fs.cat_file(path) == data))

    monkeypatch.setattr(dstream.wal.ObjectWriter, "put", put)
    ssc.start()
    server.wait_connections(1)
    server.send(["a", "b"])
    wait_until(lambda: streams[0].buffered() == 2, 5, "a, b")
    # one object for the block interval's lines, durable before a batch may count them
    assert puts == [("segment-000000000000", b"a\nb\n", 0, True)]
    advance(ssc)
    server.send(["c", "d"])
    wait_until(lambda: streams[0].buffered() == 2, 5, "c, d")
    ssc.stop(stopSparkContext=False)  # c and d are logged, but no batch took them
    assert puts[1] == ("segment-000000000002", b"c\nd\n", 0, True)
    assert REPLAYED == [(1000, ["a", "b"])]

    restored = StreamingContext.getOrCreate(checkpoint, lambda: pytest.fail("must restore"),
                                            clock=ManualClock(clock.now()))
    try:
        restored.start()
        server.wait_connections(2)
        streams.append(restored._graph.inputs[0])
        server.send(["e"])
        wait_until(lambda: streams[1].buffered() == 3, 5, "c, d back from the log, and e")
        assert streams[1]._get_or_compute(1000).collect() == ["a", "b"]
        advance(restored)
        assert REPLAYED[1:] == [(2000, ["c", "d", "e"])]
        streams[1].wal_keep = 1  # from now on only the newest cleanup's needs count
        server.send(["f"])
        wait_until(lambda: streams[1].buffered() == 1, 5, "f")
        advance(restored)
        # batch 3000 needs line 5 on: the objects of lines 0 to 4 are deleted
        wait_until(lambda: list(segment_objects(wal)) == ["segment-000000000005"], 10, "old segments deleted")
    finally:
        restored.stop(stopSparkContext=False)
    names = [name for name, *_ in puts]
    assert names == ["segment-000000000000", "segment-000000000002", "segment-000000000004",
                     "segment-000000000005"]  # each written once, never rewritten
    assert segment_objects(wal) == {"segment-000000000005": b"f\n"}


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_restart_deletes_segments_no_kept_checkpoint_needs(storage, ctx, server, tmp_path, request):
    checkpoint = str(tmp_path / "cp") if storage == "local" else request.getfixturevalue("s3_bucket") + "/cp"
    wal = Location(checkpoint).join("wal", "input-0")
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(checkpoint)
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    stream.wal_segment_lines, stream.wal_keep = 2, 1
    stream.foreachRDD(_record)
    ssc.start()
    try:
        server.wait_connections(1)
        for lines in (["a", "b"], ["c", "d"], ["e"]):
            server.send(lines)
            wait_until(lambda: stream.buffered() == len(lines), 5, f"{lines}")
            advance(ssc)
        wait_until(lambda: list(segment_objects(wal)) == ["segment-000000000004"], 10, "the segment of batch 3000")
    finally:
        ssc.stop(stopSparkContext=False)
    # a driver killed before its cleanup leaves segments its checkpoint no longer needs
    for name, data in (("segment-000000000000", b"a\nb\n"), ("segment-000000000002", b"c\nd\n")):
        wal.fs.pipe_file(wal.join(name).path, data)
    restored = StreamingContext.getOrCreate(checkpoint, lambda: pytest.fail("must restore"),
                                            clock=ManualClock(3.0))
    try:
        restored.start()
        assert segment_objects(wal) == {"segment-000000000004": b"e\n"}
    finally:
        restored.stop(stopSparkContext=False)
