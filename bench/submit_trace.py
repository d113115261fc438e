"""What a submit sends to PostgreSQL, message by message, and how long the spend cap's lock is held.

    bench/submit_trace.py --database gh_growth_bench [--requests 400] [--show 1]

Runs Gatehouse's real WSGI application (config.wsgi, every middleware) in this process and
submits growth.py's body as `--service` (growth-1: on growth.py's fill, the service whose spend
cap has 100,000 approvals in its window; on any other database it is created with the action
types and the cap rule of growth.py). libpq's own trace of every pooled connection records each
protocol message with its time, so the figures include what Django's query log cannot see
(BEGIN, COMMIT, pipelined statements). For each submit it counts the round trips (the client
waiting for the server) and, from the moment PostgreSQL answered the advisory lock's statement
(the lock granted) to the moment it answered the COMMIT (the lock released), the time in the
server (a statement sent, its answer not yet read) and in Python (an answer read, the next
statement not yet sent). `--show N` prints the messages of the first N submits, the locked
section marked. The cap rule sends each submit to review (nothing in growth.py's config approves
a refund), so the window's approvals stay as they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_submit import BODY, CAP_RULE  # noqa: E402
from common import bench_env, fresh_database, manage  # noqa: E402
from growth import CONFIG  # noqa: E402
from submit_stages import environ  # noqa: E402


def prepare(env: dict[str, str], service: str) -> None:
    """A database of growth.py's submit: its action types, the cap rule and the service."""
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    fresh_database(database)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    manage(env, "apply", "-", stdin=CAP_RULE)
    manage(env, "create_service", service, "--action-types", "refund.issue", "--json")


def messages(path: Path) -> Iterator[tuple[float, str, str, str]]:
    """(epoch seconds, F or B, message type, its text) of a libpq trace file."""
    entries: list[list[str]] = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[1] in ("F", "B"):
            entries.append(fields)
        elif entries:  # a message's text goes on over several lines (a statement's newlines)
            entries[-1][-1] += " " + line.strip()
    for stamp, direction, _length, kind, *rest in entries:
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()  # local time
        yield at, direction, kind, " ".join(" ".join(rest).split())


def submits(
    traced: list[tuple[float, str, str, str]], windows: list[tuple[float, float]]
) -> list[list[tuple[float, str, str, str]]]:
    """The messages of each submit: those within its (start, end) wall-clock window."""
    traced = sorted(traced)
    runs: list[list[tuple[float, str, str, str]]] = []
    index = 0
    for start, end in windows:
        while index < len(traced) and traced[index][0] < start:
            index += 1
        run = []
        while index < len(traced) and traced[index][0] <= end:
            run.append(traced[index])
            index += 1
        runs.append(run)
    return runs


def analyse(run: list[tuple[float, str, str, str]]) -> dict[str, Any]:
    """Round trips, statements, and the locked section (ms): from PostgreSQL's first answer
    after the lock's statement (the lock granted) to its answer to the COMMIT, split into the
    time Gatehouse had an answer and had not sent its next message (Python) and the rest."""
    round_trips = statements = 0
    waiting = False  # a message sent, its answer not read yet
    lock_sent = commit_sent = False
    locked_at = released_at = last_answer = None
    python = 0.0
    for at, direction, kind, text in run:
        if direction == "F":
            if kind in ("Query", "Execute"):
                statements += 1
            if kind in ("Query", "Sync"):
                round_trips += 1
            lock_sent = lock_sent or "pg_advisory_xact_lock" in text
            commit_sent = commit_sent or (kind in ("Query", "Parse") and "COMMIT" in text)
            if not waiting and locked_at is not None and released_at is None:
                python += at - (last_answer or at)
            waiting = True
            continue
        if lock_sent and locked_at is None:
            locked_at = at
        if kind == "ReadyForQuery":
            waiting = False
            last_answer = at
            if commit_sent and locked_at is not None and released_at is None:
                released_at = at
    held = (released_at - locked_at) if locked_at and released_at else 0.0
    return {
        "round_trips": round_trips,
        "statements": statements,
        "held_ms": held * 1000,
        "python_ms": python * 1000,
        "server_ms": (held - python) * 1000,
        "total_ms": (run[-1][0] - run[0][0]) * 1000 if run else 0.0,
    }


def median_p90(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def round_trips(run: list[tuple[float, str, str, str]]) -> Iterator[tuple[str, float]]:
    """(its first statement, ms from its first message to PostgreSQL's ReadyForQuery) of each
    round trip of a submit."""
    label, sent = "", None
    for at, direction, kind, text in run:
        if direction == "F":
            if sent is None:
                sent = at
            if not label and kind in ("Query", "Parse"):
                label = text
            elif not label and kind == "Bind":
                label = "(prepared) " + text
        elif kind == "ReadyForQuery" and sent is not None:
            yield " ".join(label.split())[:100], (at - sent) * 1000
            label, sent = "", None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", required=True)
    parser.add_argument("--prepare", action="store_true", help="a fresh database first")
    parser.add_argument("--service", default="growth-1")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--show", type=int, default=1)
    args = parser.parse_args()
    env = bench_env(args.database, DB_POOL_MAX="8", DB_POOL_MIN="1", REDIS_URL="")
    if args.prepare:
        prepare(env, args.service)
    os.environ.update(env)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    from approvals import services
    from approvals.models import Service
    from config.wsgi import application

    app: Any = application
    _key, secret = services.api_key_create(service=Service.objects.get(name=args.service))
    body = __import__("json").dumps(BODY).encode()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    seen: dict[int, Any] = {}
    trace_dir = Path(tempfile.mkdtemp(prefix="submit_trace_"))
    files: list[Any] = []

    def trace_wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        raw = connection.connection
        if raw is not None and id(raw) not in seen:
            seen[id(raw)] = raw
            handle = (trace_dir / f"{len(files)}.trace").open("w")
            files.append(handle)
            raw.pgconn.trace(handle.fileno())
        return execute(sql, params, many, context)

    def one() -> None:
        result = app(environ(body, secret, None), start_response)
        try:
            for _ in result:
                pass
        finally:
            result.close()
        if not statuses[-1].startswith("201"):
            raise SystemExit(f"submit answered {statuses[-1]}, not 201")

    for _ in range(args.warmup):
        one()
    windows: list[tuple[float, float]] = []
    with connection.execute_wrapper(trace_wrapper):
        for _ in range(args.requests):
            start = time.time()
            one()
            windows.append((start, time.time()))
    for raw in seen.values():
        raw.pgconn.untrace()  # flushes libpq's buffered trace
    connection.close()
    for handle in files:
        handle.close()
    traced = [m for path in sorted(trace_dir.glob("*.trace")) for m in messages(path)]
    runs = submits(traced, windows)
    figures = [analyse(run) for run in runs if run]
    for run in runs[: args.show]:
        start = run[0][0]
        print("\none submit (ms from its first message; F: Gatehouse, B: PostgreSQL):")
        for at, direction, kind, text in run:
            print(f"  {(at - start) * 1000:8.3f} {direction} {kind:16} {text[:110]}")
    by_statement: dict[str, list[float]] = {}
    for run in runs:
        for label, ms in round_trips(run):
            by_statement.setdefault(label, []).append(ms)
    print("\neach round trip, by its first statement: count, median and p90 ms")
    for label, values in by_statement.items():
        median, p90 = median_p90(values)
        print(f"  {len(values):5} {median:7.3f} {p90:7.3f}  {label}")
    print(f"\n{len(figures)} submits on {args.database}, median (p90):")
    for name in ("round_trips", "statements", "held_ms", "python_ms", "server_ms", "total_ms"):
        median, p90 = median_p90([f[name] for f in figures])
        print(f"  {name:12} {median:8.3f} ({p90:.3f})")


if __name__ == "__main__":
    main()
