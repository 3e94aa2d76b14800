"""Where the engine spends its time in parts 1-3: py-spy over the engine side only, summarised.

    python benchmarks/hotspots.py 1 --master local[2]   # columnar word count (the benchmark's job form)
    python benchmarks/hotspots.py 2                     # row-API word count on local[2]
    python benchmarks/hotspots.py 3                     # 300 light 50 ms batches on local[2]
    python benchmarks/hotspots.py 1 --form columnar/transform --top 30

Needs py-spy (``pip install py-spy``). Samples the driver and its worker processes (``--subprocesses``)
at 250 Hz from ``ssc.start()`` on, and prints per process kind (driver / worker) the functions with the
largest share of samples, by own time (``self``) and with callees (``total``). Idle waits are left out
(py-spy's default, plus samples blocked in a lock, poll or sleep, or a worker waiting for its next task),
so a share is of busy time in that process kind.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))


def target(args: argparse.Namespace) -> None:
    """The engine side of one part, signalling py-spy's start with a marker file."""
    if args.part in (1, 2):
        import wordcount
        form = args.form or ("columnar" if args.part == 1 else "row")
        tables = [wordcount.batch_table(i, args.lines) for i in range(args.batches)]
        result = wordcount.with_context(args.master, lambda ctx: wordcount.engine_stream(
            ctx, tables, form, on_start=lambda: open(args.marker, "w").close(),
            on_done=lambda: open(args.marker + ".done", "w").close()))
        print(f"{form} on {args.master}: {result['lines_per_s']:,.0f} lines/s, start() {result['start_s']:.2f} s",
              file=sys.stderr)
    else:
        import overhead
        overhead.engine_batches(args.master, "light", args.batches,
                                on_start=lambda: open(args.marker, "w").close(),
                                on_done=lambda: open(args.marker + ".done", "w").close())


def summarise(raw_path: str, top: int) -> str:
    """Self and total shares per function, for the driver and for the workers."""
    kinds: dict[str, tuple[collections.Counter, collections.Counter, list[int]]] = {}
    with open(raw_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or " " not in line:
                continue
            stack, count = line.rsplit(" ", 1)
            if not count.isdigit():
                continue  # a process title with a newline in it (python -c "...") splits a line
            frames = stack.split(";")
            procs = [fr for fr in frames if fr.startswith("process ")]
            frames = [fr for fr in frames if not fr.startswith(("process ", "thread "))]
            # workers run as `python -m dstream.executors.processes` or forked by its launcher
            kind = "worker" if (procs and "executors.processes" in procs[-1]) or any(
                "(executors/launcher.py" in fr for fr in frames) else "driver"
            if not frames or _waiting(frames):
                continue
            selfc, total, n = kinds.setdefault(kind, (collections.Counter(), collections.Counter(), [0]))
            n[0] += int(count)
            selfc[_short(frames[-1])] += int(count)
            for fr in {_short(fr) for fr in frames}:
                total[fr] += int(count)
    out = []
    for kind, (selfc, total, n) in sorted(kinds.items()):
        out.append(f"--- {kind}: {n[0]} busy samples; top functions by own time ---")
        out += [f"{100 * c / n[0]:5.1f}%  {fn}" for fn, c in selfc.most_common(top)]
        out.append(f"--- {kind}: top functions including callees ---")
        out += [f"{100 * c / n[0]:5.1f}%  {fn}" for fn, c in total.most_common(top + 8)
                if not fn.startswith(("_bootstrap", "Thread.", "<module>", "_run_module", "_run_code"))][:top]
    return "\n".join(out)


_WAITS = ("Condition.wait ", "_PollLikeSelector.select ", "Thread._wait_for_tstate_lock ", "_watch_parent ",
          "Popen._wait ", "Popen._try_wait ", "Event.wait ", "sleep ")


def _waiting(frames: list[str]) -> bool:
    """True for a sample of a thread blocked on a lock, a poll or a sleep, or of a worker waiting for its
    next task (py-spy counts some of these as busy)."""
    if frames[-1].startswith(_WAITS):
        return True
    for caller, callee in zip(frames, frames[1:]):
        if caller.startswith("worker_main ") and callee.startswith("_ConnectionBase.recv_bytes "):
            return True
    return False


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py:12)``, keeping the package for engine files."""
    if "(" not in frame:
        return frame
    name, where = frame.rsplit(" (", 1)
    path = where.rstrip(")")
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def main() -> None:
    parser = argparse.ArgumentParser(description="profile the engine side of a benchmark part with py-spy")
    parser.add_argument("part", type=int, choices=[1, 2, 3])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--form", default=None, help="job form for parts 1-2 (see wordcount.FORMS)")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--target", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--marker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batches is None:
        args.batches = 300 if args.part == 3 else 10
    if args.target:
        target(args)
        return
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        sys.exit("py-spy is not installed: pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="dstream-profile-") as tmp:
        marker, raw = os.path.join(tmp, "started"), os.path.join(tmp, "profile.txt")
        cmd = [sys.executable, os.path.abspath(__file__), "--target", "--marker", marker] + \
            [a for a in sys.argv[1:]]
        proc = subprocess.Popen(cmd)
        while not os.path.exists(marker) and proc.poll() is None:
            time.sleep(0.01)  # data generation and warm-up happen before the marker: not sampled
        spy = subprocess.Popen([py_spy, "record", "--subprocesses", "-r", str(args.rate), "-f", "raw",
                                "-o", raw, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        while not os.path.exists(marker + ".done") and proc.poll() is None:
            time.sleep(0.01)
        spy.send_signal(signal.SIGINT)  # stop sampling before the context shuts down
        spy.wait(timeout=60)
        proc.wait()
        print(f"profile of part {args.part} ({args.form or 'default form'}, {args.master}, "
              f"{args.batches} batches)")
        if os.environ.get("DSTREAM_PROFILE_KEEP"):
            shutil.copy(raw, os.environ["DSTREAM_PROFILE_KEEP"])
        print(summarise(raw, args.top))


if __name__ == "__main__":
    main()
