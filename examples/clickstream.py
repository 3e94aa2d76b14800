#!/usr/bin/env python
"""Clickstream sessions: live click files -> one session per user and visit, enriched with the user's
attributes from a historical users table, written as Parquet per batch.

    click files (CSV: ts,user_id,page)          users table (Parquet: user_id, country, plan, signup_date)
        |  textFileStream                              |  read once per driver process, cached
        v                                              |
    (user_id, [clicks of this batch])                  |
        |  mapWithState(track_session, timeout=--idle-timeout)
        v                                              |
    closed sessions  --------- leftOuterJoin ----------+
        |
        v  saveAsParquetFiles(OUTPUT/sessions)   ->  OUTPUT/sessions-<batch ms>.parquet/ (exactly once)

A user's session is their run of clicks with no pause of ``--session-gap`` seconds or more (30 minutes, in
the clicks' own timestamps). The open session of each user is the state of ``mapWithState``; a session is
closed and written when a click comes after such a pause, or when the user has sent no click for
``--idle-timeout`` seconds of stream time (the timeout of ``mapWithState``, counted in batch time).

Try it (three terminals, or run the job in the background)::

    python examples/clickstream.py --generate /tmp/cs
    python examples/clickstream.py --users /tmp/cs/users.parquet --input /tmp/cs/clicks \\
        --output /tmp/cs/out --checkpoint /tmp/cs/checkpoint --batch-seconds 1 --idle-timeout 10
    for f in /tmp/cs/pending/*; do mv "$f" /tmp/cs/clicks/; sleep 1; done

Kill the job at any time (``kill -9``) and start it again with the same command: it resumes from its
checkpoint, and every session is written exactly once. In a terminal it prints one status line per batch.
"""
from __future__ import annotations

import argparse
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
    ("clicks", pa.int64()),
    ("entry_page", pa.string()),
    ("exit_page", pa.string()),
    ("country", pa.string()),
    ("plan", pa.string()),
    ("signup_date", pa.date32()),
])
USER_COLUMNS = ("country", "plan", "signup_date")


# -- the job ---------------------------------------------------------------------------------------------
def parse_click(line: str) -> list[tuple[str, tuple[int, str]]]:
    """``2026-11-30T08:00:05Z,u007,/cart`` -> ``[("u007", (epoch seconds, "/cart"))]``; [] for a bad line."""
    try:
        ts, user, page = line.strip().split(",", 2)
        when = datetime.datetime.fromisoformat(ts)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return [(user, (int(when.timestamp()), page))]
    except ValueError:
        return []


def track_session(gap: int, user: str, clicks: list | None, state) -> list[tuple]:
    """mapWithState's function: extend the user's open session (the state) with this batch's clicks; return
    the sessions this closes, as ``(user, session)``. A session is ``(start, end, clicks, entry, exit)``."""
    if state.isTimingOut():  # no click for --idle-timeout seconds: the open session is over
        return [(user, state.get())]
    session = state.getOption()
    closed = []
    for ts, page in sorted(clicks):  # a batch's clicks may come in any order
        if session is None:
            session = (ts, ts, 1, page, page)
        elif ts - session[1] >= gap:  # a pause of at least the gap: a new visit
            closed.append((user, session))
            session = (ts, ts, 1, page, page)
        else:
            start, end, n, entry, exit_ = session
            if ts < start:
                start, entry = ts, page
            if ts >= end:
                end, exit_ = ts, page
            session = (start, end, n + 1, entry, exit_)
    state.update(session)
    return closed


def users_table(ctx, url: str):
    """The users table as a cached RDD of ``(user_id, Row)``, read once per driver process: a lazily made
    singleton (Spark's recipe for broadcasts; a checkpointed stream cannot capture an RDD or the Context)."""
    cache = globals().setdefault("_users_tables", {})
    if url not in cache:
        fs, path = fsspec.core.url_to_fs(url)
        table = pq.read_table(path, filesystem=fs, columns=["user_id", *USER_COLUMNS])
        cache[url] = ctx.parallelize(table).map(lambda row: (row.user_id, row)).cache()
    return cache[url]


def enrich(users_url: str, closed):
    """Closed sessions ``(user_id, session)`` joined with the user's attributes (None for unknown users)."""
    def flat(kv):
        user, ((start, end, n, entry, exit_), attrs) = kv
        # dates travel as ISO strings: dstream keeps datetime values as pickled objects, not Arrow dates
        return Row(user_id=user, start=start, end=end, clicks=n, entry_page=entry, exit_page=exit_,
                   country=attrs.country if attrs else None, plan=attrs.plan if attrs else None,
                   signup_date=attrs.signup_date.isoformat() if attrs and attrs.signup_date else None)
    return closed.leftOuterJoin(users_table(closed.context, users_url)).map(flat)


def to_arrow(batches):
    """mapInArrow: enriched sessions -> record batches of SESSION_SCHEMA (typed timestamps and dates)."""
    utc = datetime.timezone.utc
    for batch in batches:
        rows = [{"user_id": r["user_id"],
                 "session_start": datetime.datetime.fromtimestamp(r["start"], utc),
                 "session_end": datetime.datetime.fromtimestamp(r["end"], utc),
                 "duration_s": r["end"] - r["start"], "clicks": r["clicks"],
                 "entry_page": r["entry_page"], "exit_page": r["exit_page"],
                 "country": r["country"], "plan": r["plan"],
                 "signup_date": datetime.date.fromisoformat(r["signup_date"]) if r["signup_date"] else None}
                for r in batch.to_pylist()]
        yield pa.RecordBatch.from_pylist(rows, schema=SESSION_SCHEMA)


def status(time, rdd) -> None:
    """One line per batch, only when stdout is a terminal (otherwise nothing is computed)."""
    if not sys.stdout.isatty():
        return
    counts = dict(rdd.collect())
    print(f"batch {time:%H:%M:%S}.{time.microsecond // 1000:03d}: {counts.get('clicks', 0)} clicks, "
          f"{counts.get('closed', 0)} sessions closed, {counts.get('open', 0)} open", flush=True)


def setup(args: argparse.Namespace) -> StreamingContext:
    """getOrCreate's setup: declare the job on a new context (not called when restoring a checkpoint)."""
    ssc = StreamingContext(Context(args.master, appName="clickstream"), args.batch_seconds)
    ssc.checkpoint(args.checkpoint)
    clicks = ssc.textFileStream(args.input).flatMap(parse_click)
    sessions = clicks.groupByKey().mapWithState(functools.partial(track_session, args.session_gap),
                                                timeout=args.idle_timeout)
    closed = sessions.flatMap(lambda closed_sessions: closed_sessions)
    closed.transform(functools.partial(enrich, args.users)).mapInArrow(to_arrow) \
        .saveAsParquetFiles(posixpath.join(args.output, "sessions"))
    ssc.union(clicks.count().map(lambda n: ("clicks", n)),
              closed.count().map(lambda n: ("closed", n)),
              sessions.stateSnapshots().count().map(lambda n: ("open", n))).foreachRDD(status)
    return ssc


# -- sample data -------------------------------------------------------------------------------------------
PAGES = ["/", "/search", "/product/{}", "/product/{}", "/cart", "/checkout", "/help"]
COUNTRIES = ["DE", "FR", "US", "JP", "BR", "IN"]
PLANS = ["free", "free", "pro", "team"]


def generate(root: str, users: int, files: int, seed: int, gap: int) -> None:
    """Write ``root/users.parquet``, an empty ``root/clicks/`` (the job's input) and ``root/pending/`` (click
    files to move into ``clicks/`` one by one)."""
    rng = random.Random(seed)
    fs, base = fsspec.core.url_to_fs(root)
    ids = [f"u{i:03d}" for i in range(users)]
    known = ids[: max(1, users - max(1, users // 10))]  # a few users are missing from the table
    day = datetime.date(2026, 11, 30)
    table = pa.table({
        "user_id": known,
        "name": [f"user {u}" for u in known],
        "country": [rng.choice(COUNTRIES) for _ in known],
        "plan": [rng.choice(PLANS) for _ in known],
        "signup_date": [day - datetime.timedelta(days=rng.randint(1, 900)) for _ in known],
    })
    fs.makedirs(base, exist_ok=True)
    with fs.open(posixpath.join(base, "users.parquet"), "wb") as f:
        pq.write_table(table, f)
    start = int(datetime.datetime(2026, 11, 30, 8, tzinfo=datetime.timezone.utc).timestamp())
    clicks = []
    for user in ids:
        t = start + rng.randint(0, 1800)
        for _ in range(rng.randint(1, 3)):  # visits, separated by more than the gap
            for _ in range(rng.randint(1, 6)):
                clicks.append((t, user, rng.choice(PAGES).format(rng.randint(1, 40))))
                t += rng.randint(5, 600)
            t += gap + rng.randint(60, 5400)
    clicks.sort()
    fs.makedirs(posixpath.join(base, "clicks"), exist_ok=True)
    fs.makedirs(posixpath.join(base, "pending"), exist_ok=True)
    per_file = -(-len(clicks) // files)
    for i in range(files):
        chunk = clicks[i * per_file:(i + 1) * per_file]
        lines = "".join(f"{datetime.datetime.fromtimestamp(ts, datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ},"
                        f"{user},{page}\n" for ts, user, page in chunk)
        fs.pipe_file(posixpath.join(base, "pending", f"clicks-{i:04d}.csv"), lines.encode())
    print(f"wrote {base}/users.parquet ({len(known)} users), {files} click files ({len(clicks)} clicks) in "
          f"{base}/pending/ and an empty input directory {base}/clicks/")


# -- the command line --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="clickstream.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sessionize live click files per user with mapWithState, enrich each session with the "
                    "user's attributes from a Parquet users table, and write the closed sessions as Parquet "
                    "per batch, exactly once. Restart it with the same command after a crash: it resumes "
                    "from its checkpoint. Locations are paths or fsspec URLs (file://, s3://, ...).",
        epilog="example:\n  %(prog)s --generate /tmp/cs\n"
               "  %(prog)s --users /tmp/cs/users.parquet --input /tmp/cs/clicks --output /tmp/cs/out "
               "--checkpoint /tmp/cs/checkpoint\n"
               "  for f in /tmp/cs/pending/*; do mv \"$f\" /tmp/cs/clicks/; sleep 1; done")
    p.add_argument("--users", metavar="URL", help="the users table: a Parquet file with user_id, country, plan, "
                   "signup_date")
    p.add_argument("--input", metavar="URL", help="directory the click files (CSV lines ts,user_id,page with "
                   "ISO-8601 times) are moved into; files there before the first start are ignored")
    p.add_argument("--output", metavar="URL", help="output directory: sessions-<batch ms>.parquet/ per batch")
    p.add_argument("--checkpoint", metavar="URL", help="checkpoint directory (private to this job); a restart "
                   "with the same directory resumes the job")
    p.add_argument("--batch-seconds", type=float, default=5.0, metavar="S", help="batch interval (default 5)")
    p.add_argument("--session-gap", type=int, default=1800, metavar="S",
                   help="a pause of at least this many seconds between two clicks (their timestamps) starts a "
                        "new session (default 1800: 30 minutes)")
    p.add_argument("--idle-timeout", type=float, default=1800.0, metavar="S",
                   help="close and write a user's open session after this many seconds of stream time without "
                        "a click from them (mapWithState's timeout; default 1800)")
    p.add_argument("--master", default="local[2]", help="executors: local[N] processes or threads[N] "
                   "(default local[2]); a restart takes the master from the checkpoint")
    p.add_argument("--generate", metavar="DIR", help="write sample data to DIR (users.parquet, clicks/, "
                   "pending/) and exit")
    p.add_argument("--num-users", type=int, default=50, metavar="N", help="with --generate: users (default 50)")
    p.add_argument("--files", type=int, default=20, metavar="N",
                   help="with --generate: click files (default 20)")
    p.add_argument("--seed", type=int, default=1, help="with --generate: random seed (default 1)")
    args = p.parse_args(argv)
    if not args.generate:
        missing = [f"--{name}" for name in ("users", "input", "output", "checkpoint") if not getattr(args, name)]
        if missing:
            p.error(f"the following arguments are required (or --generate DIR): {', '.join(missing)}")
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
        generate(args.generate, args.num_users, args.files, args.seed, args.session_gap)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ssc = StreamingContext.getOrCreate(args.checkpoint, functools.partial(setup, args))
    return run(ssc)


if __name__ == "__main__":
    sys.exit(main())
