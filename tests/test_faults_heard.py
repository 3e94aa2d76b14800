"""Faults are heard, not swallowed:

- checkpoint files that exist but cannot be read stop ``getOrCreate`` with an error naming each file and
  why, instead of a silent fresh start (``onUnreadable="fresh"`` asks for one);
- a socket receiver that cannot connect warns with host:port, backs off and reports ``onReceiverError``;
  undecodable bytes are counted and warned about once per batch;
- executor processes exit at once when their driver dies, and the next driver removes the block directory
  a killed driver left.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dstream import ManualClock, StreamingContext, StreamingListener
from dstream.demo.harness import pid_alive, wait_until
from dstream.driver.checkpoint import (Checkpoint, CheckpointError, CheckpointWriter, UnreadableCheckpointError,
                                       read_latest)
from dstream.executors import Task
from dstream.executors.blockstore import SharedDirBlockStore, _default_root
from dstream.executors.processes import ProcessExecutor
from dstream.sources import MAX_RETRY_DELAY_KEY
from dstream.testing import advance, collect, collect_timed

from .test_sources import LineServer


# -- unreadable checkpoints ------------------------------------------------------------------------------
def _must_not_run():
    raise AssertionError("setup must not be called: the checkpoint files exist")


def _damaged_checkpoints(directory: Path) -> dict[str, str]:
    """Three checkpoint files, each unreadable in its own way; file name -> the reason the error gives."""
    writer = CheckpointWriter(str(directory), "0.1.0")
    for t in (1000, 2000, 3000):
        writer.write(Checkpoint(time_ms=t, interval_ms=1000, master=None, conf={}, pending_times=[],
                                last_completed_ms=t, graph=b"g"))
    torn = directory / "checkpoint-3000"
    torn.write_bytes(torn.read_bytes()[:-5])  # a torn write
    (directory / "checkpoint-2000").write_bytes(b"\x00" * 64)  # not a checkpoint at all
    header = directory / "checkpoint-1000"
    data = bytearray(header.read_bytes())
    data[20:30] = b"#" * 10  # inside the JSON header
    header.write_bytes(bytes(data))
    return {"checkpoint-3000": "damaged or truncated (length or checksum mismatch)",
            "checkpoint-2000": "not a dstream checkpoint (bad magic)",
            "checkpoint-1000": "damaged header"}


def _working_checkpoint(ctx, directory: Path, batches: int = 2) -> None:
    """A real checkpoint directory: a stateful stream run for ``batches`` batches."""
    ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
    ssc.checkpoint(str(directory))
    ssc.queueStream([[("a", 1)], [("a", 2)], [("b", 3)]]).updateStateByKey(
        lambda new, old: sum(new) + (old or 0)).foreachRDD(lambda rdd: None)
    ssc.start()
    try:
        advance(ssc, batches)
    finally:
        ssc.stop(stopSparkContext=False)


def test_all_checkpoints_unreadable_raises_naming_each_file_and_why(tmp_path):
    reasons = _damaged_checkpoints(tmp_path)
    with pytest.raises(CheckpointError) as info:
        StreamingContext.getOrCreate(str(tmp_path), _must_not_run)
    error = info.value
    assert isinstance(error, UnreadableCheckpointError)
    message = str(error)
    lines = message.splitlines()
    for name, why in reasons.items():  # one line per file: its URL and why
        [line] = [ln for ln in lines if ln.strip().startswith(str(tmp_path / name) + ":")]
        assert why in line, (name, line)
    assert [Path(url).name for url, _ in error.files] == ["checkpoint-3000", "checkpoint-2000", "checkpoint-1000"]
    assert 'onUnreadable="fresh"' in message and "setup" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(reasons)  # nothing moved or deleted


def test_getActiveOrCreate_raises_too(tmp_path):
    _damaged_checkpoints(tmp_path)
    with pytest.raises(UnreadableCheckpointError):
        StreamingContext.getActiveOrCreate(str(tmp_path), _must_not_run)


def test_onUnreadable_fresh_warns_naming_the_files_and_calls_setup(ctx, tmp_path, caplog):
    reasons = _damaged_checkpoints(tmp_path)
    calls = []

    def setup():
        calls.append(1)
        ssc = StreamingContext(ctx, 1.0, clock=ManualClock())
        ssc.queueStream([[1]]).foreachRDD(lambda rdd: None)
        return ssc

    with caplog.at_level(logging.WARNING, logger="dstream.driver.checkpoint"):
        ssc = StreamingContext.getOrCreate(str(tmp_path), setup, onUnreadable="fresh")
    try:
        assert calls == [1] and ssc.restored_from is None
        assert ssc.checkpoint_dir == str(tmp_path)  # checkpointed where it was asked, as without the files
        [record] = [r for r in caplog.records if "can be read" in r.getMessage()]
        assert record.levelno == logging.WARNING
        for name in reasons:
            assert str(tmp_path / name) in record.getMessage()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(reasons)  # left where they were
    finally:
        ssc.stop(stopSparkContext=False)


def test_a_damaged_newest_checkpoint_still_falls_back_to_an_older_one(ctx, tmp_path, caplog):
    _working_checkpoint(ctx, tmp_path)
    newest = max(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest.write_bytes(newest.read_bytes()[:-7])
    with caplog.at_level(logging.WARNING, logger="dstream.driver.checkpoint"):
        restored = StreamingContext.getOrCreate(str(tmp_path), _must_not_run, clock=ManualClock())
    try:
        assert restored.restored_from is not None and restored.restored_from.time_ms < int(newest.name.split("-")[1])
        assert f"skipping damaged checkpoint {newest}" in caplog.text
    finally:
        restored.stop(stopSparkContext=False)


def test_no_checkpoint_files_calls_setup(ctx, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a checkpoint")
    ssc = StreamingContext.getOrCreate(str(tmp_path / "empty"),
                                       lambda: StreamingContext(ctx, 1.0, clock=ManualClock()))
    assert ssc.restored_from is None
    ssc.stop(stopSparkContext=False)
    assert read_latest(str(tmp_path / "nowhere")) is None


@pytest.mark.parametrize("bad", ["skip", "", None, True])
def test_onUnreadable_takes_raise_or_fresh_only(tmp_path, bad):
    for make in (StreamingContext.getOrCreate, StreamingContext.getActiveOrCreate):
        with pytest.raises(ValueError, match=r'onUnreadable must be "raise" .* or "fresh"'):
            make(str(tmp_path), _must_not_run, onUnreadable=bad)


# -- socket receivers: connection faults -----------------------------------------------------------------
def _free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on it now
    return port


class ReceiverEvents(StreamingListener):
    """Records the receiver events it gets, with the time each arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, object]] = []

    def _add(self, kind: str, event) -> None:
        self.events.append((kind, time.monotonic(), event.receiverInfo()))

    def onReceiverStarted(self, receiverStarted) -> None:
        self._add("started", receiverStarted)

    def onReceiverError(self, receiverError) -> None:
        self._add("error", receiverError)

    def onReceiverStopped(self, receiverStopped) -> None:
        self._add("stopped", receiverStopped)

    def of(self, kind: str) -> list:
        return [info for k, _, info in list(self.events) if k == kind]


_ATTEMPT = re.compile(r"cannot connect: (\w+).*; retrying in ([\d.]+) s")


def test_nothing_listening_warns_with_host_port_backs_off_reports_errors_then_connects(
        ctx, clock, caplog, monkeypatch):
    monkeypatch.setitem(ctx.conf, MAX_RETRY_DELAY_KEY, "0.4")
    port = _free_port()
    ssc = StreamingContext(ctx, 1.0, clock=clock)
    stream = ssc.socketTextStream("127.0.0.1", port)
    stream.retry = 0.05  # then 0.1, 0.2 and 0.4, the cap
    assert stream.max_retry_delay == 0.4
    out = collect(stream)
    events = ReceiverEvents()
    ssc.addStreamingListener(events)
    caplog.set_level(logging.DEBUG, logger="dstream.sources")
    ssc.start()
    late = None
    try:
        wait_until(lambda: len(events.of("error")) >= 6, 20, "six failed connection attempts")
        attempts = [r for r in caplog.records if r.name == "dstream.sources" and _ATTEMPT.search(r.getMessage())]
        assert len(attempts) >= 6
        delays = [float(_ATTEMPT.search(r.getMessage()).group(2)) for r in attempts]
        assert delays[:6] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4], delays
        # each attempt waited its delay: the attempts spread out
        gaps = [b.created - a.created for a, b in zip(attempts, attempts[1:])]
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps[:5], delays)), (gaps, delays)
        # WARNING for the first failure and whenever the delay changed; the repeats at the cap are DEBUG
        warnings = [r for r in attempts if r.levelno == logging.WARNING]
        assert [float(_ATTEMPT.search(r.getMessage()).group(2)) for r in warnings] == [0.05, 0.1, 0.2, 0.4]
        assert warnings[0].getMessage().startswith(
            f"socketTextStream(127.0.0.1:{port}): cannot connect: ConnectionRefusedError")
        assert all(r.levelno == logging.DEBUG for r in attempts[4:])

        [started] = events.of("started")
        assert started.streamId() == 0 and started.active() and started.lastErrorTime() == -1
        error = events.of("error")[0]
        assert error.name() == f"socketTextStream(127.0.0.1:{port})" and error.streamId() == 0
        assert error.active() and error.executorId() == "driver" and error.location()
        assert error.lastErrorMessage() == f"cannot connect to 127.0.0.1:{port}"
        assert error.lastError().startswith("ConnectionRefusedError")
        assert error.lastErrorTime() == clock.now_ms()

        late = LineServer(port)  # the server comes up: the receiver connects and receives
        late.send("hello\n")
        wait_until(lambda: stream.buffered() == 1, 10, "the line from the late server")
        advance(ssc)
        assert any(r.levelno == logging.INFO and "connected, after" in r.getMessage() for r in caplog.records)
    finally:
        ssc.stop(stopSparkContext=False)
        if late is not None:
            late.close()
    assert out == [["hello"]]
    ssc.listener_bus.wait_until_empty()
    [stopped] = events.of("stopped")
    assert not stopped.active()


def test_a_lost_connection_is_a_warning_and_a_receiver_error(ssc, caplog):
    server = LineServer()
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    stream.retry = 0.05
    collect(stream)
    events = ReceiverEvents()
    ssc.addStreamingListener(events)
    ssc.start()
    try:
        server.send("x\n")
        wait_until(lambda: stream.buffered() == 1, 10, "the line")
        server.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close_connection()  # a reset, not an orderly close
        wait_until(lambda: events.of("error"), 10, "the receiver error")
    finally:
        server.close()
    [error] = events.of("error")[:1]
    assert error.lastErrorMessage() == f"connection to 127.0.0.1:{server.port} lost"
    assert error.lastError().startswith("ConnectionResetError")
    assert any(r.levelno == logging.WARNING and "connection lost: ConnectionResetError" in r.getMessage()
               for r in caplog.records)


def test_max_retry_delay_conf_is_checked(ssc, ctx, monkeypatch):
    monkeypatch.setitem(ctx.conf, MAX_RETRY_DELAY_KEY, "soon")
    with pytest.raises(ValueError, match=MAX_RETRY_DELAY_KEY):
        ssc.socketTextStream("127.0.0.1", 9)


# -- socket receivers: undecodable bytes -----------------------------------------------------------------
class InputMetadata(StreamingListener):
    def __init__(self) -> None:
        self.by_batch: dict[int, dict] = {}

    def onBatchCompleted(self, batchCompleted) -> None:
        info = batchCompleted.batchInfo()
        self.by_batch[info.batchTime().milliseconds()] = info.streamIdToInputInfo()[0].metadata()


def test_undecodable_bytes_are_counted_and_warned_about_once_per_batch(ssc, caplog):
    server = LineServer()
    stream = ssc.socketTextStream("127.0.0.1", server.port)
    out = collect_timed(stream)
    metadata = InputMetadata()
    ssc.addStreamingListener(metadata)
    ssc.start()
    try:
        assert server.connected.wait(5.0)
        # batch 1: \xff and \xfe (2) and a lone lead byte \xc3 (1); an encoded U+FFFD is text, not an error
        server.conn.sendall(b"ok\nbad \xff\xfe x\n\xc3(\nlegit \xef\xbf\xbd\n")
        wait_until(lambda: stream.buffered() == 4, 10, "batch 1's lines")
        advance(ssc)
        server.conn.sendall(b"\x80\x80\r\ntail \xe2\x82")  # batch 2: two stray continuation bytes, a cut one
        server.close_connection()
        wait_until(lambda: stream.buffered() == 2, 10, "batch 2's lines")
        advance(ssc)
        advance(ssc)  # batch 3: nothing
    finally:
        server.close()
    assert out == [(1000, ["ok", "bad \ufffd\ufffd x", "\ufffd(", "legit \ufffd"]),
                   (2000, ["\ufffd\ufffd", "tail \ufffd"]), (3000, [])]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "undecodable" in r.getMessage()]
    name = f"socketTextStream(127.0.0.1:{server.port})"
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(f"{name}: batch ") and warnings[0].endswith(
        "(1000 ms): 3 undecodable byte sequences replaced with U+FFFD")
    assert warnings[1].endswith("(2000 ms): 3 undecodable byte sequences replaced with U+FFFD")
    ssc.listener_bus.wait_until_empty()
    assert metadata.by_batch[1000] == {"undecodable": 3} and metadata.by_batch[3000] == {}


# -- executor processes when the driver dies -------------------------------------------------------------
def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    return not pid_alive(pid)


_DRIVER = textwrap.dedent("""
    import os, sys, time
    from dstream import Context
    from dstream.executors import Task

    def busy(marker, tc):
        open(marker, "w").close()
        time.sleep(60)

    ctx = Context(sys.argv[1])
    n = ctx.executor.num_workers
    assert ctx.executor.run_tasks([Task(lambda tc: tc.partition_id, i) for i in range(n)]) == list(range(n))
    if sys.argv[2] == "busy":  # one worker runs a task, the other waits for one
        marker = os.path.abspath("busy.marker")
        ctx.executor.submit_task(Task(lambda tc: busy(marker, tc), 0))
        while not os.path.exists(marker):
            time.sleep(0.01)
    print(" ".join(map(str, ctx.executor.worker_pids())), ctx.executor.store.directory, flush=True)
    time.sleep(120)
""")


def _start_driver(tmp_path: Path, master: str, mode: str) -> tuple[subprocess.Popen, list[int], str]:
    script = tmp_path / "app.py"  # not driver.py: that name would shadow the driver package
    script.write_text(_DRIVER)
    (tmp_path / "busy.marker").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(script), master, mode], stdout=subprocess.PIPE, text=True,
                            cwd=str(tmp_path))
    *pids, directory = proc.stdout.readline().split()
    return proc, [int(p) for p in pids], directory


def _kill_and_time_exits(proc: subprocess.Popen, pids: list[int]) -> list[float]:
    """SIGKILL the driver; seconds from the kill until each worker exited (10 at most)."""
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    exits: dict[int, float] = {}
    while len(exits) < len(pids) and time.monotonic() - killed < 10:
        for pid in pids:
            if pid not in exits and _gone(pid):
                exits[pid] = time.monotonic() - killed
        time.sleep(0.002)
    for pid in pids:
        if pid not in exits:
            os.kill(pid, signal.SIGKILL)
    return [round(exits.get(pid, float("inf")), 3) for pid in pids]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds processes through /proc")
def test_executors_exit_within_a_second_of_a_driver_sigkill(tmp_path):
    """One worker busy in a 60 s task, one idle: both exit within a second of the driver's SIGKILL, every
    time (the kernel hangs up the driver's end of each worker's socket; the workers wait on it)."""
    measured = []
    for _ in range(3):
        proc, pids, _ = _start_driver(tmp_path, "local[2]", "busy")
        try:
            assert len(pids) == 2 and not any(_gone(p) for p in pids)
            measured.append(_kill_and_time_exits(proc, pids))
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
    print(f"seconds from the driver's SIGKILL to each worker's exit: {measured}")
    assert all(t <= 1.0 for run in measured for t in run), measured


def _touch_then_sleep(marker: str, tc) -> None:
    open(marker, "w").close()
    time.sleep(60)


def test_a_busy_worker_exits_at_once_when_the_driver_closes_its_end(tmp_path):
    """What a worker sees when its driver dies is its socket hung up; it exits then even mid-task, rather
    than finishing the task for nobody (so ``shutdown`` with a task running is quick too)."""
    ex = ProcessExecutor(2)
    pids = ex.worker_pids()
    marker = str(tmp_path / "running")
    ex.submit_task(Task(functools.partial(_touch_then_sleep, marker), 0))
    wait_until(lambda: os.path.exists(marker), 20, "the task to start")
    began = time.monotonic()
    ex.shutdown()
    took = time.monotonic() - began
    assert all(_gone(p) for p in pids)
    assert took <= 1.0, f"shutdown with a busy worker took {took:.2f} s"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="tells zombies through /proc")
@pytest.mark.parametrize("reaped", [False, True], ids=["killed-not-yet-reaped", "reaped"])
def test_the_next_driver_removes_a_killed_drivers_block_directory(tmp_path, reaped):
    proc, pids, directory = _start_driver(tmp_path, "local[1]", "idle")
    try:
        assert os.path.isdir(directory) and Path(directory).name.startswith(f"dstream-blocks-{proc.pid}-")
        os.kill(proc.pid, signal.SIGKILL)
        if reaped:
            proc.wait()
        else:  # a zombie until its parent (this test) reaps it, as under a supervisor that has not yet
            wait_until(lambda: _gone(proc.pid), 10, "the driver to die")
        wait_until(lambda: all(_gone(p) for p in pids), 10, "the workers to exit")
        assert os.path.isdir(directory)
        nxt = ProcessExecutor(1)  # the next driver on the machine
        try:
            assert not os.path.exists(directory), f"{directory} of the killed driver {proc.pid} is still there"
            assert os.path.isdir(nxt.store.directory)
        finally:
            nxt.shutdown()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads start times from /proc")
def test_a_block_directory_whose_pid_now_belongs_to_another_process_is_removed(pctx):
    root = _default_root()
    own = pctx.executor.store.directory  # this live driver's: stays
    reused = os.path.join(root, f"{SharedDirBlockStore.PREFIX}{os.getpid()}-1-0000dead")  # same pid, another start
    dead_old_style = os.path.join(root, f"{SharedDirBlockStore.PREFIX}{2 ** 22 + 1}-0000beef")  # no such pid
    for d in (reused, dead_old_style):
        os.makedirs(d)
        Path(d, "rdd_1_0.arrow").write_bytes(b"x")
    removed = SharedDirBlockStore.remove_orphans()
    assert reused in removed and dead_old_style in removed
    assert not os.path.exists(reused) and not os.path.exists(dead_old_style)
    assert os.path.isdir(own) and own not in removed
