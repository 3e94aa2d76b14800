"""Make docs/webui.png: a stream with a receiver and a file source runs for a few seconds with its status page
on, one of its batches fails, and headless Chromium takes a picture of the page.

    python docs/webui_screenshot.py            # needs the [ui] extra and chromium on PATH
"""
from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dstream import Context, StreamingContext

OUT = Path(__file__).with_name("webui.png")
BATCHES = 14


def feed_lines(server: socket.socket, stop: threading.Event) -> None:
    """A source of text lines for socketTextStream, at a varying rate."""
    conn, _ = server.accept()
    n = 0
    with conn:
        while not stop.is_set():
            burst = random.randint(20, 120)
            conn.sendall("".join(f"click user-{random.randint(1, 40)} page-{n + i}\n" for i in range(burst)).encode())
            n += burst
            time.sleep(0.25)


def drop_files(directory: Path, stop: threading.Event) -> None:
    n = 0
    while not stop.wait(0.7):
        staging = directory.parent / f".orders-{n}.tmp"
        staging.write_text("".join(f"order {n}-{i}\n" for i in range(random.randint(5, 30))))
        staging.rename(directory / f"orders-{n}.txt")
        n += 1


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not on PATH")
    random.seed(7)
    work = Path(tempfile.mkdtemp(prefix="dstream-webui-"))
    incoming = work / "incoming"
    incoming.mkdir()
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        threading.Thread(target=feed_lines, args=(server, stop), daemon=True).start()
        threading.Thread(target=drop_files, args=(incoming, stop), daemon=True).start()
        ctx = Context("threads[4]", "clickstream", conf={"dstream.ui.port": 0})
        ssc = StreamingContext(ctx, 0.5)
        clicks = ssc.socketTextStream("127.0.0.1", server.getsockname()[1])
        orders = ssc.textFileStream(str(incoming))

        def slow(line: str) -> tuple[str, int]:
            time.sleep(random.uniform(0.0005, 0.003))
            return line.split()[1], 1

        per_user = clicks.map(slow).reduceByKey(lambda a, b: a + b)
        batches = [0]

        def store(rdd) -> None:
            batches[0] += 1
            rdd.collect()
            if batches[0] == 11:
                raise ConnectionError("the dashboard database refused the connection (timeout after 3 s)")

        per_user.foreachRDD(store)
        orders.count().foreachRDD(lambda rdd: rdd.collect())
        ssc.start()
        try:
            time.sleep(BATCHES * 0.5 + 0.3)
            command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                       "--hide-scrollbars", f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=3000",
                       "--window-size=1280,1100", f"--screenshot={OUT}", ssc.uiWebUrl]
            subprocess.run(command, check=True, capture_output=True, timeout=60)
        finally:
            stop.set()
            ssc.stop()
            shutil.rmtree(work, ignore_errors=True)
    try:  # a palette PNG is a fraction of the size (Pillow comes with matplotlib, the [notebook] extra)
        from PIL import Image
        Image.open(OUT).convert("RGB").quantize(colors=256).save(OUT, optimize=True)
    except ImportError:
        pass
    print(f"{OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
