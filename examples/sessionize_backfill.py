#!/usr/bin/env python
"""Backfill, then stream: one sessionizing function run first as a batch job over a day of history files,
then as a stream over the files that arrive after the history ends; the two together give exactly the
sessions one batch job over all the files would.

    sessionize(events: RDD) -> RDD of sessions       the one shared function (plain RDD operations)

    1. backfill, once:  textFile(--history) -> sessionize -> OUTPUT/backfill.parquet/
                        (the sessions the history closes; those still open when it ends go on in the stream)
    2. stream:          textFileStream(--live) -> transform(sessionize)   (each batch's sessions)
                          + the backfill's open sessions (a queueStream of one batch)
                          -> mapWithState: glue each user's sessions across batches, close a session after
                             --idle-timeout seconds of stream time without events from the user
                          -> OUTPUT/sessions-<batch ms>.parquet/   (exactly once)
    3. --verify:        textFile(--history,--live) -> sessionize -> compare with everything in OUTPUT

A session is a user's run of events with no pause of ``--gap`` seconds (30 minutes) or more, in the events'
own timestamps. Gluing works because sessionizing is associative: the sessions of a batch are glued to the
user's open session when they start less than ``--gap`` after it ends, which is exactly what the batch job
does with the same events.

Try it::

    python examples/sessionize_backfill.py --generate /tmp/sb
    python examples/sessionize_backfill.py --history /tmp/sb/history --live /tmp/sb/live \\
        --output /tmp/sb/out --checkpoint /tmp/sb/checkpoint --batch-seconds 1 --idle-timeout 10
    for f in /tmp/sb/pending/*; do mv "$f" /tmp/sb/live/; sleep 1; done
    # once the stream has closed every session (--idle-timeout after the last file):
    python examples/sessionize_backfill.py --verify --history /tmp/sb/history --live /tmp/sb/live --output /tmp/sb/out

Kill the job at any time (``kill -9``) and start it again with the same command: it resumes from its
checkpoint (the backfill is not run again once the stream has started), and every session is written
exactly once. In a terminal it prints one status line per batch.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import functools
import logging
import posixpath
import random
import signal
import sys
import threading

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from dstream import Context, Row, StreamingContext

#: the columns of the Parquet output
SESSION_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("session_start", pa.timestamp("s", tz="UTC")),
    ("session_end", pa.timestamp("s", tz="UTC")),
    ("duration_s", pa.int64()),
    ("events", pa.int64()),
    ("entry_page", pa.string()),
    ("exit_page", pa.string()),
])


# -- the shared function ------------------------------------------------------------------------------------
def parse_event(line: str) -> list[tuple[str, tuple]]:
    """``2026-11-30T08:00:05Z,u007,/cart`` -> ``[("u007", piece)]``: an event is a one-event session
    ``(start, end, events, entry_page, exit_page)``; [] for a bad line."""
    try:
        ts, user, page = line.strip().split(",", 2)
        when = datetime.datetime.fromisoformat(ts)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return []
    t = int(when.timestamp())
    return [(user, (t, t, 1, page, page))]


def glue(gap: int, pieces) -> list[tuple]:
    """A user's pieces (events or sessions) -> their sessions: pieces less than ``gap`` seconds apart are
    one session. Associative: gluing the sessions of parts of the events gives the sessions of all of them."""
    sessions: list[tuple] = []
    for piece in sorted(pieces):
        if sessions and piece[0] - sessions[-1][1] < gap:
            start, end, n, entry, exit_ = sessions[-1]
            if piece[1] >= end:
                end, exit_ = piece[1], piece[4]
            sessions[-1] = (start, end, n + piece[2], entry, exit_)
        else:
            sessions.append(piece)
    return sessions


def sessionize(events, gap: int = 1800):
    """THE shared function: an RDD of ``(user, piece)`` -> an RDD of ``(user, session)``, one per session.
    The backfill runs it over the history, the stream over each batch (``transform``), --verify over all."""
    return events.groupByKey().flatMap(lambda kv: [(kv[0], s) for s in glue(gap, kv[1])])


# -- the stream ------------------------------------------------------------------------------------------------
def continue_sessions(gap: int, user: str, sessions: list | None, state) -> list[tuple]:
    """mapWithState's function: glue the user's open session (the state) with this batch's sessions; return
    the sessions that are over, as ``(user, session)``, and keep the newest open one."""
    if state.isTimingOut():  # no event from the user for --idle-timeout seconds
        return [(user, state.get())]
    glued = glue(gap, ([state.get()] if state.exists() else []) + list(sessions))
    state.update(glued[-1])
    return [(user, s) for s in glued[:-1]]


def as_row(kv) -> Row:
    user, (start, end, n, entry, exit_) = kv
    return Row(user_id=user, start=start, end=end, events=n, entry_page=entry, exit_page=exit_)


def to_arrow(batches):
    """mapInArrow: session Rows -> record batches of SESSION_SCHEMA (typed timestamps)."""
    utc = datetime.timezone.utc
    for batch in batches:
        rows = [{"user_id": r["user_id"], "session_start": datetime.datetime.fromtimestamp(r["start"], utc),
                 "session_end": datetime.datetime.fromtimestamp(r["end"], utc), "duration_s": r["end"] - r["start"],
                 "events": r["events"], "entry_page": r["entry_page"], "exit_page": r["exit_page"]}
                for r in batch.to_pylist()]
        yield pa.RecordBatch.from_pylist(rows, schema=SESSION_SCHEMA)


def status(time, rdd) -> None:
    """One line per batch, only when stdout is a terminal (otherwise nothing is computed)."""
    if not sys.stdout.isatty():
        return
    counts = dict(rdd.collect())
    print(f"batch {time:%H:%M:%S}.{time.microsecond // 1000:03d}: {counts.get('events', 0)} events, "
          f"{counts.get('written', 0)} sessions written, {counts.get('open', 0)} open", flush=True)


# -- reading and writing sessions ---------------------------------------------------------------------------
def _committed(fs, path: str) -> bool:
    return fs.exists(posixpath.join(path, "_SUCCESS"))


def save_once(rdd, url: str) -> bool:
    """Write ``rdd`` (``(user, session)`` pairs) as Parquet under ``url`` unless it is committed already
    (the idempotent-output pattern of the README); False when it was there."""
    fs, path = fsspec.core.url_to_fs(url)
    if _committed(fs, path):
        return False
    if fs.exists(path):  # an attempt that died before committing
        fs.rm(path, recursive=True)
    rdd.map(as_row).mapInArrow(to_arrow).saveAsParquetFile(url)
    return True


def read_sessions(output: str) -> list[tuple]:
    """Every session committed under ``output`` (the backfill's and each stream batch's), as tuples
    ``(user_id, start, end, events, entry_page, exit_page)`` with times in epoch seconds."""
    from dstream.sinks.files import committed_parts
    fs, base = fsspec.core.url_to_fs(output)
    fs.invalidate_cache(base)
    rows = []
    for entry in sorted(fs.ls(base, detail=False)) if fs.exists(base) else []:
        name = posixpath.basename(entry.rstrip("/"))
        if not (name == "backfill.parquet" or name.startswith("sessions-")) or not _committed(fs, entry):
            continue
        for part in committed_parts(fs.unstrip_protocol(entry)):
            with part.fs.open(part.path, "rb") as f:
                for r in pq.read_table(f).to_pylist():
                    rows.append((r["user_id"], int(r["session_start"].timestamp()), int(r["session_end"].timestamp()),
                                 r["events"], r["entry_page"], r["exit_page"]))
    return rows


# -- the job ---------------------------------------------------------------------------------------------------
def backfill(ctx, args: argparse.Namespace) -> list[tuple]:
    """Run sessionize over the history once; write the sessions it closes to OUTPUT/backfill.parquet and
    return the ones still open at its end (``(user, session)``), for the stream to go on with."""
    events = ctx.textFile(args.history).flatMap(parse_event).cache()
    if events.isEmpty():
        print(f"backfill: no events in {args.history}", flush=True)
        return []
    history_end = events.map(lambda kv: kv[1][1]).max()
    gap = args.gap
    sessions = sessionize(events, gap).cache()
    # a session ending less than a gap before the history does may go on with the first live events
    closed = sessions.filter(lambda kv: history_end - kv[1][1] >= gap)
    still_open = sessions.filter(lambda kv: history_end - kv[1][1] < gap).collect()
    written = save_once(closed, posixpath.join(args.output, "backfill.parquet"))
    print(f"backfill: {events.count()} events up to "
          f"{datetime.datetime.fromtimestamp(history_end, datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC: "
          f"{sessions.count() - len(still_open)} sessions closed"
          f"{'' if written else ' (written before)'}, {len(still_open)} still open, handed to the stream",
          flush=True)
    return still_open


def setup(args: argparse.Namespace) -> StreamingContext:
    """getOrCreate's setup (not called when restoring a checkpoint): the backfill, then the stream."""
    ssc = StreamingContext(Context(args.master, appName="sessionize_backfill"), args.batch_seconds)
    ssc.checkpoint(args.checkpoint)
    still_open = backfill(ssc.sparkContext, args)
    events = ssc.textFileStream(args.live).flatMap(parse_event)
    batch_sessions = events.transform(functools.partial(sessionize, gap=args.gap))
    handed_over = ssc.queueStream([still_open], default=[])  # the first batch gets the backfill's open sessions
    glued = batch_sessions.union(handed_over).groupByKey().mapWithState(
        functools.partial(continue_sessions, args.gap), timeout=args.idle_timeout)
    over = glued.flatMap(lambda sessions: sessions)
    over.map(as_row).mapInArrow(to_arrow).saveAsParquetFiles(posixpath.join(args.output, "sessions"))
    ssc.union(events.count().map(lambda n: ("events", n)),
              over.count().map(lambda n: ("written", n)),
              glued.stateSnapshots().count().map(lambda n: ("open", n))).foreachRDD(status)
    return ssc


def verify(args: argparse.Namespace) -> int:
    """Sessionize history and live files as one batch job and compare with what the job wrote."""
    with Context(args.master, appName="sessionize_verify") as ctx:
        urls = ",".join(u for u in (args.history, args.live) if u)
        expected = collections.Counter(
            (user, *session) for user, session in sessionize(ctx.textFile(urls).flatMap(parse_event), args.gap)
            .collect())
    written = collections.Counter(read_sessions(args.output))
    missing, extra = expected - written, written - expected
    if not missing and not extra:
        print(f"OK: the backfill and the stream wrote the {sum(expected.values())} sessions one batch job over "
              f"all the files finds, each once")
        return 0
    print(f"DIFFERENT: {sum(expected.values())} sessions in one batch job, {sum(written.values())} written; "
          f"{sum(missing.values())} not written (still open in the stream?), {sum(extra.values())} written but "
          f"not expected (or written twice)")
    for what, rows in (("not written", missing), ("unexpected", extra)):
        for row in sorted(rows)[:5]:
            print(f"  {what}: {row}")
    return 1


# -- sample data -------------------------------------------------------------------------------------------
PAGES = ["/", "/search", "/product/{}", "/product/{}", "/cart", "/checkout", "/help"]


def generate(root: str, users: int, history_hours: int, live_hours: int, seed: int, gap: int) -> None:
    """Write ``root/history/`` (``history_hours`` hourly event files, from midnight), ``root/pending/`` (the
    next ``live_hours`` hours, to move into ``root/live/`` one by one) and an empty ``root/live/``."""
    rng = random.Random(seed)
    fs, base = fsspec.core.url_to_fs(root)
    day = int(datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc).timestamp())
    boundary, end = day + history_hours * 3600, day + (history_hours + live_hours) * 3600
    events = []
    for i in range(users):
        user, t = f"u{i:03d}", day + rng.randint(0, 3 * 3600)
        if i == 0 and live_hours:  # one visit that goes on from the history into the live files
            events.extend((boundary + dt, user, "/search") for dt in (-600, -300, 300))
            t = boundary + 300 + gap + rng.randint(60, 3600)
        while t < end:
            for _ in range(rng.randint(1, 8)):
                if t >= end:
                    break
                events.append((t, user, rng.choice(PAGES).format(rng.randint(1, 40))))
                t += rng.randint(10, 900)
            t += gap + rng.randint(60, 3 * 3600)
    events.sort()
    for d in ("history", "live", "pending"):
        fs.makedirs(posixpath.join(base, d), exist_ok=True)
    hours = collections.defaultdict(list)
    for t, user, page in events:
        hours[(t - day) // 3600].append(
            f"{datetime.datetime.fromtimestamp(t, datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ},{user},{page}\n")
    for h in range(history_hours + live_hours):
        when = datetime.datetime.fromtimestamp(day + h * 3600, datetime.timezone.utc)
        where = "history" if h < history_hours else "pending"
        fs.pipe_file(posixpath.join(base, where, f"events-{when:%Y-%m-%dT%H}.csv"), "".join(hours[h]).encode())
    print(f"wrote {len(events)} events of {users} users: {history_hours} hourly files in {base}/history/, "
          f"{live_hours} in {base}/pending/ (to move into {base}/live/ while the job runs)")


# -- the command line --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="sessionize_backfill.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sessionize a day of history files as a batch job (the backfill), then the files that "
                    "arrive after it as a stream, with one shared function; sessions open at the end of the "
                    "history go on in the stream. Sessions are written as Parquet, exactly once. Restart it "
                    "with the same command after a crash: it resumes from its checkpoint. --verify checks "
                    "that the output equals one batch job over all the files. Locations are paths or fsspec "
                    "URLs (file://, s3://, ...).",
        epilog="example:\n  %(prog)s --generate /tmp/sb\n"
               "  %(prog)s --history /tmp/sb/history --live /tmp/sb/live --output /tmp/sb/out "
               "--checkpoint /tmp/sb/checkpoint\n"
               "  for f in /tmp/sb/pending/*; do mv \"$f\" /tmp/sb/live/; sleep 1; done\n"
               "  %(prog)s --verify --history /tmp/sb/history --live /tmp/sb/live --output /tmp/sb/out")
    p.add_argument("--history", metavar="URL", help="the history: a directory, a glob or comma-separated files "
                   "of event lines (CSV: ts,user_id,page with ISO-8601 times), read once as a batch")
    p.add_argument("--live", metavar="URL", help="directory the files after the history are moved into while "
                   "the job runs (files there before the first start are ignored)")
    p.add_argument("--output", metavar="URL", help="output directory: backfill.parquet/ and "
                   "sessions-<batch ms>.parquet/ per batch")
    p.add_argument("--checkpoint", metavar="URL", help="checkpoint directory (private to this job); a restart "
                   "with the same directory resumes the stream without running the backfill again")
    p.add_argument("--batch-seconds", type=float, default=5.0, metavar="S", help="batch interval (default 5)")
    p.add_argument("--gap", type=int, default=1800, metavar="S",
                   help="a pause of at least this many seconds between two events (their timestamps) starts a "
                        "new session (default 1800: 30 minutes)")
    p.add_argument("--idle-timeout", type=float, default=1800.0, metavar="S",
                   help="close and write a user's open session after this many seconds of stream time without "
                        "events from them (mapWithState's timeout; default 1800)")
    p.add_argument("--master", default="local[2]", help="executors: local[N] processes or threads[N] "
                   "(default local[2]); a restart takes the master from the checkpoint")
    p.add_argument("--verify", action="store_true", help="sessionize --history and --live as one batch job, "
                   "compare with what is committed under --output, and exit (0 when they agree)")
    p.add_argument("--generate", metavar="DIR", help="write sample data to DIR (history/, live/, pending/) "
                   "and exit")
    p.add_argument("--users", type=int, default=40, metavar="N", help="with --generate: users (default 40)")
    p.add_argument("--history-hours", type=int, default=24, metavar="N",
                   help="with --generate: hourly files of history (default 24: a day)")
    p.add_argument("--live-hours", type=int, default=6, metavar="N",
                   help="with --generate: hourly files after the history (default 6)")
    p.add_argument("--seed", type=int, default=1, help="with --generate: random seed (default 1)")
    args = p.parse_args(argv)
    if args.generate:
        if args.history_hours < 1 or args.live_hours < 0:
            p.error("--history-hours must be at least 1 and --live-hours at least 0")
        return args
    needed = ("history", "output") if args.verify else ("history", "live", "output", "checkpoint")
    missing = [f"--{name}" for name in needed if not getattr(args, name)]
    if missing:
        p.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def run(ssc: StreamingContext) -> int:
    """Start the context and run until SIGTERM or Ctrl-C (a graceful stop); 1 if a batch failed."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ssc.start()
    try:
        while not stop.is_set():
            ssc.awaitTerminationOrTimeout(0.2)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - a failed batch: say which and exit non-zero
        print(f"error: {exc}", file=sys.stderr)
        ssc.stop(stopSparkContext=True)
        return 1
    ssc.stop(stopSparkContext=True, stopGraceFully=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate:
        generate(args.generate, args.users, args.history_hours, args.live_hours, args.seed, args.gap)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verify:
        return verify(args)
    ssc = StreamingContext.getOrCreate(args.checkpoint, functools.partial(setup, args))
    return run(ssc)


if __name__ == "__main__":
    sys.exit(main())
