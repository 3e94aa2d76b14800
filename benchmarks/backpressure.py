"""Backpressure: a socket stream fed faster than it can process, with backpressure off and on.

Run by hand (not part of ``run.py``)::

    python benchmarks/backpressure.py                      # calibrate, then 2 x 20 s; about a minute
    python benchmarks/backpressure.py --rate 400000 --seconds 10

The job: ``socketTextStream -> flatMap(split) -> map((word, 1)) -> reduceByKey(add) -> foreachRDD(count)``
on ``local[2]`` with 0.1 s batches; lines of 10 words from a 1,000-word vocabulary.

1. **Calibrate** (unless ``--rate`` is given): a sender as fast as it can go for ``--calibrate`` seconds,
   backpressure off; the sustainable rate is the records the completed batches held divided by the time
   the batches took to process (records / processing delay, summed over the batches).
2. **Off, then on**: a sender at twice that rate (``--factor``) for ``--seconds`` each, in a fresh driver
   process each. The sender is a process of its own that paces its lines and blocks when TCP pushes back.

Per run the driver process samples, every 0.1 s, its RSS (``/proc/self/status``), the bytes of its block
store directory (the executors' blocks, under ``/dev/shm``) and the lines its receiver holds. The table
shows the peaks, the batches that fell due but had not completed when the run ended, the scheduling
delay of the last completed batch, the end-to-end lag (the time from the newest completed batch's time
to the end of the run), records processed per second, and the lines the sender managed to send.
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

from common import Table, dir_bytes, log, rss_kib

HERE = os.path.dirname(os.path.abspath(__file__))
WORDS = [f"w{i:03d}" for i in range(1000)]


# -- the sender (a process of its own) ---------------------------------------------------------------------

def sender_main(rate: float, seconds: float, port_file: str) -> None:
    """Listen, accept one receiver, send ``rate`` lines a second (``rate`` <= 0: as fast as possible) for
    ``seconds``, then print how many lines went out as JSON."""
    rng = random.Random(0)
    block_lines = 1000
    blocks = [("".join(" ".join(rng.choices(WORDS, k=10)) + "\n" for _ in range(block_lines))).encode()
              for _ in range(16)]
    server = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    conn, _ = server.accept()
    sent, start, i = 0, time.monotonic(), 0
    deadline = start + seconds
    blocked = 0.0

    def stop(*_: object) -> None:
        raise InterruptedError

    signal.signal(signal.SIGTERM, stop)
    try:
        while (now := time.monotonic()) < deadline:
            if rate > 0 and sent + block_lines > (now - start) * rate:
                time.sleep(min(0.002, deadline - now))
                continue
            t0 = time.monotonic()
            try:
                conn.sendall(blocks[i % len(blocks)])
            except OSError:  # the driver stopped
                break
            blocked += time.monotonic() - t0
            sent += block_lines
            i += 1
    except InterruptedError:
        pass
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": elapsed, "send_s": blocked}), flush=True)
    conn.close()
    server.close()


# -- the driver (a process of its own per run) ---------------------------------------------------------------

def driver_main(port: int, seconds: float, interval: float, backpressure: bool, master: str) -> None:
    from dstream import Context, StreamingContext

    conf = {"spark.streaming.backpressure.enabled": str(backpressure).lower(), "dstream.ui.progress": False}
    ctx = Context(master, conf=conf)
    ssc = StreamingContext(ctx, interval)
    lines = ssc.socketTextStream("127.0.0.1", port)
    counts = lines.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(operator.add)
    counts.foreachRDD(lambda rdd: rdd.count())
    store_dir = getattr(ctx.executor.store, "directory", None)
    peaks = {"rss_kib": 0, "shm_bytes": 0, "buffered": 0}
    limits: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peaks["rss_kib"] = max(peaks["rss_kib"], rss_kib(os.getpid()))
            peaks["shm_bytes"] = max(peaks["shm_bytes"], dir_bytes(store_dir) if store_dir else 0)
            peaks["buffered"] = max(peaks["buffered"], lines.buffered())
            if lines.rate_limit is not None:
                limits.append(lines.rate_limit)

    sampler = threading.Thread(target=sample, daemon=True)
    ssc.start()
    started_ms = ssc.clock.now_ms()
    sampler.start()
    time.sleep(seconds)
    end_ms = ssc.clock.now_ms()
    frame = ssc.statistics()
    done.set()
    sampler.join()
    ssc.stop(stopSparkContext=True)
    completed = frame[frame["processing_delay_ms"].notna()]
    records = int(completed["records"].fillna(0).sum())
    busy_ms = float(completed["processing_delay_ms"].sum())
    due = (end_ms - started_ms) // int(interval * 1000)
    last_time = int(completed["batch_time"].iloc[-1].value // 1_000_000) if len(completed) else started_ms
    print(json.dumps({
        "backpressure": backpressure, "batches_due": int(due), "batches_completed": len(completed),
        "records": records, "records_per_s": records / seconds,
        "processing_rate": records / busy_ms * 1000 if busy_ms else None,
        "last_scheduling_delay_ms": int(completed["scheduling_delay_ms"].iloc[-1]) if len(completed) else None,
        "lag_ms": end_ms - last_time, "peak_rss_mib": peaks["rss_kib"] / 1024,
        "peak_shm_mib": peaks["shm_bytes"] / 2**20, "peak_buffered_lines": peaks["buffered"],
        "last_rate_limit": limits[-1] if limits else None,
        "records_last_5": [int(x) for x in completed["records"].fillna(0).iloc[-5:]],
    }), flush=True)


# -- the parent --------------------------------------------------------------------------------------------

def run_once(rate: float, seconds: float, interval: float, backpressure: bool, master: str) -> dict:
    port_file = f"/tmp/dstream-bench-backpressure-{os.getpid()}-{time.monotonic_ns()}"
    sender = subprocess.Popen([sys.executable, __file__, "--role", "sender", "--rate", str(rate),
                               "--seconds", str(seconds + 5), "--port-file", port_file],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if time.monotonic() > deadline:
                raise RuntimeError("the sender did not start")
            time.sleep(0.05)
        port = int(open(port_file).read())
        driver = subprocess.run([sys.executable, __file__, "--role", "driver", "--port", str(port),
                                 "--seconds", str(seconds), "--interval", str(interval), "--master", master]
                                + (["--backpressure"] if backpressure else []),
                                capture_output=True, text=True, timeout=seconds + 120)
        if driver.returncode != 0:
            raise RuntimeError(f"the driver failed:\n{driver.stderr[-4000:]}")
        result = json.loads(driver.stdout.strip().splitlines()[-1])
    finally:
        try:
            out, _ = sender.communicate(timeout=10)  # it ends when the driver closes the connection
        except subprocess.TimeoutExpired:
            sender.terminate()
            out, _ = sender.communicate(timeout=30)
        os.path.exists(port_file) and os.remove(port_file)
    result["sender"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--role", choices=["parent", "sender", "driver"], default="parent")
    p.add_argument("--rate", type=float, default=None, help="lines/s of the sender (default: 2 x calibrated)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--calibrate", type=float, default=10.0, help="seconds of the calibration run")
    p.add_argument("--factor", type=float, default=2.0, help="sender rate / sustainable rate")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--port", type=int)
    p.add_argument("--port-file")
    p.add_argument("--backpressure", action="store_true")
    args = p.parse_args()
    if args.role == "sender":
        return sender_main(args.rate or 0, args.seconds, args.port_file)
    if args.role == "driver":
        return driver_main(args.port, args.seconds, args.interval, args.backpressure, args.master)

    rate = args.rate
    notes = []
    load_before = os.getloadavg()[0]
    if rate is None:
        log(f"calibrating: sender as fast as it goes, backpressure off, {args.calibrate:g} s")
        cal = run_once(0, args.calibrate, args.interval, False, args.master)
        sustainable = cal["processing_rate"]
        rate = round(sustainable * args.factor, -3)
        notes.append(f"calibration: {sustainable:,.0f} records/s sustained (records / processing time, "
                     f"sender unpaced at {cal['sender']['sent'] / cal['sender']['seconds']:,.0f} lines/s); "
                     f"sender rate {args.factor:g}x = {rate:,.0f} lines/s")
    rows = []
    for backpressure in (False, True):
        log(f"backpressure {'on' if backpressure else 'off'}: sender at {rate:,.0f} lines/s for {args.seconds:g} s")
        r = run_once(rate, args.seconds, args.interval, backpressure, args.master)
        log(json.dumps(r))
        rows.append(r)
    t = Table(f"Backpressure: socket stream, {args.interval:g} s batches, {args.master}, sender at "
              f"{rate:,.0f} lines/s, {args.seconds:g} s per run",
              ["backpressure", "peak driver RSS MiB", "peak /dev/shm MiB", "peak lines held by receiver",
               "batches due / done", "last scheduling delay ms", "lag at end ms", "records/s processed",
               "lines/s sent", "rate limit at end"])
    for r in rows:
        sent = r["sender"]["sent"] / r["sender"]["seconds"] if r["sender"] else None
        t.add("on" if r["backpressure"] else "off", r["peak_rss_mib"], r["peak_shm_mib"],
              r["peak_buffered_lines"], f"{r['batches_due']} / {r['batches_completed']}",
              r["last_scheduling_delay_ms"], r["lag_ms"], r["records_per_s"], sent, r["last_rate_limit"])
    t.notes += notes
    t.notes.append(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores")
    t.notes.append("lag at end: from the newest completed batch's time to the end of the run; lines/s sent: "
                   "what TCP let the sender write (it blocks when the receiver stops reading)")
    print(t.render())


if __name__ == "__main__":
    main()
