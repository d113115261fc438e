"""POST /api/v1/proposals under load, against a floor measured in the same run.

Starts the app under the production ASGI server (uvicorn, 2 workers) on a fresh PostgreSQL
database, drives it with wrk (32 connections, 10 s a round) and compares it with /bench/floor:
the same server and database, a view that parses the same JSON and inserts one row with the
ORM. Rounds alternate floor/api so a drifting machine hurts both alike. The figure to watch is
the ratio of throughputs (target ≥ 0.7): each round's API run against the floor run just before
it, and the median of those round ratios, since on a shared 2-core machine single runs move by
±0.1. The best round of each is printed too, with the CPU each request cost the server,
PostgreSQL, Redis and wrk.

    .venv/bin/python bench/api_submit.py [--seconds 10] [--rounds 2] [--config extra.yaml] [--rules 50]

`--config` applies a YAML file (rules, for instance) before measuring. `--rules N` loads N enabled
rules on refund.issue (bench/rulesets.py) that the benchmark body never matches, so each submit
evaluates all N (the worst case) and ends in review.

`--observability` measures instead what metrics, JSON logs and traces cost a submit: three servers
side by side on the same database, rounds alternating between them, the CPU each request cost
(that server's processes and PostgreSQL's backends of the bench database only, so that other work
on the machine is left out) compared with the first:
- off: no METRICS_TOKEN, LOG_FORMAT=text at LOG_LEVEL=WARNING (nothing logged per submit);
- on: METRICS_TOKEN with PROMETHEUS_MULTIPROC_DIR, LOG_FORMAT=json at INFO (a line per decision,
  written to a file), and a scrape of /metrics every 5 s;
- on + OpenTelemetry: the same with OTEL_EXPORTER_OTLP_ENDPOINT at a receiver on loopback that
  answers every export (its own CPU is this script's, not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SESSIONS, bench_env, fresh_database, manage, print_table, uvicorn, wrk_post
from rulesets import synthetic_rules_yaml

CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    risk: medium
    executor: {kind: none}
    payload_schema:
      type: object
      required: [order_id, amount, currency]
      additionalProperties: false
      properties:
        order_id: {type: string, pattern: "^ORD-[0-9]{4,10}$"}
        amount: {type: number, exclusiveMinimum: 0, maximum: 100000}
        currency: {type: string, enum: [EUR, USD, GBP]}
        reason: {type: string, maxLength: 500}
"""

# Never reached by the benchmark, but every submit reads the sum under the per-type lock.
CAP_RULE = """\
rules:
  - name: bench-daily-cap
    action_type: refund.issue
    priority: -1
    when: "stats.approved_sum('payload.amount', '24h') + payload.amount > 1000000000.0"
    outcome: review
"""

BODY: dict[str, Any] = {
    "action_type": "refund.issue",
    "payload": {"order_id": "ORD-48213", "amount": 42.5, "currency": "EUR", "reason": "late"},
    "confidence": 0.87,
    "summary": "Refund order ORD-48213: parcel arrived nine days late",
    "rationale": "The carrier's tracking shows delivery nine days after the promised date. " * 8,
    "model": "gpt-4o-mini",
    "prompt_version": "refunds@7",
    "feature": "support-refunds",
    "external_id": "ticket-99812",
    "metadata": {"ticket": 99812, "channel": "email"},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", type=Path, help="extra YAML to apply before measuring")
    parser.add_argument("--rules", type=int, default=0, help="load N enabled rules first")
    parser.add_argument(
        "--cap", action="store_true", help="also load a daily spend cap (a stats rule)"
    )
    parser.add_argument("--database", default="gatehouse_bench")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="as in production (broker, channel layer, cache); '' for the embedded default",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument(
        "--observability",
        action="store_true",
        help="compare the submit with metrics and JSON logs off, on, and on with OpenTelemetry",
    )
    args = parser.parse_args()

    fresh_database(args.database)
    env = bench_env(args.database, BENCH_FLOOR_ENDPOINT="1", DB_POOL_MAX="16")
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    if args.rules:
        print(f"{args.rules} rules loaded on refund.issue")
        manage(env, "apply", "-", stdin=synthetic_rules_yaml(args.rules))
    if args.cap:
        print("a spend cap (stats rule) loaded on refund.issue")
        manage(env, "apply", "-", stdin=CAP_RULE)
    if args.config:
        print(manage(env, "apply", str(args.config)).strip().splitlines()[-1])
    key = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )["api_key"]

    if args.observability:
        observability(args, env, key)
        return

    best: dict[str, dict[str, float]] = {}
    round_ratios: dict[str, list[float]] = {}
    with uvicorn(env, workers=args.workers) as base:
        common = {"seconds": args.seconds, "connections": args.connections}
        # Warm both paths (imports, pools, caches) before measuring.
        wrk_post(base + "/bench/floor", BODY, seconds=2, connections=args.connections)
        wrk_post(
            base + "/api/v1/proposals",
            BODY,
            auth=f"Bearer {key}",
            seconds=2,
            connections=args.connections,
        )
        for _ in range(args.rounds):
            runs = {
                "floor (parse + 1 ORM insert)": wrk_post(base + "/bench/floor", BODY, **common),  # type: ignore[arg-type]
                "POST /api/v1/proposals": wrk_post(
                    base + "/api/v1/proposals",
                    BODY,
                    auth=f"Bearer {key}",
                    **common,  # type: ignore[arg-type]
                ),
                "  … with a new Idempotency-Key": wrk_post(
                    base + "/api/v1/proposals",
                    BODY,
                    auth=f"Bearer {key}",
                    unique_keys=True,
                    **common,  # type: ignore[arg-type]
                ),
            }
            floor_rps = runs["floor (parse + 1 ORM insert)"]["rps"]
            for name, run in runs.items():
                if name not in best or run["rps"] > best[name]["rps"]:
                    best[name] = run
                round_ratios.setdefault(name, []).append(run["rps"] / floor_rps)

    rows = list(best.items())
    print(
        f"\n{args.connections} connections, {args.seconds} s a round, best of {args.rounds} rounds, "
        f"uvicorn --workers {args.workers}, PostgreSQL"
        + (f", {args.rules} rules" if args.rules else "")
        + (", a spend cap" if args.cap else "")
    )
    print_table(rows)
    floor = best["floor (parse + 1 ORM insert)"]["rps"]
    for name, row in rows[1:]:
        ratios = round_ratios[name]
        print(
            f"ratio {name.strip()} / floor: median of rounds {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); best / best {row['rps'] / floor:.2f}"
        )
    bad = sum(row["non2xx"] + row["socket_errors"] for _, row in rows)
    if bad:
        print(f"WARNING: {bad:.0f} requests failed (non-2xx or socket errors)")
    if args.json:
        print(json.dumps({"best": best, "round_ratios": round_ratios}))


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export (the empty response is valid protobuf)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


@contextlib.contextmanager
def _otlp_sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def _scraper(url: str, token: str) -> Iterator[None]:
    """GET /metrics every 5 s, as Prometheus would (its cost lands on the server)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(5.0):
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=5) as r:
                r.read()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def observability(args: argparse.Namespace, env: dict[str, str], key: str) -> None:
    token = "bench-metrics-token-0123456789"
    common = {"seconds": args.seconds, "connections": args.connections}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gh-obs-")))
        env = {**env, "DB_POOL_MAX": "8"}  # three servers share PostgreSQL's connections
        sink = stack.enter_context(_otlp_sink())
        on = {
            **env,
            "METRICS_TOKEN": token,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        modes = {
            "off": env,
            "metrics + JSON logs": {**on, "PROMETHEUS_MULTIPROC_DIR": str(folder / "on")},
            "  … + OpenTelemetry": {
                **on,
                "PROMETHEUS_MULTIPROC_DIR": str(folder / "otel"),
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            },
        }
        bases: dict[str, str] = {}
        for name, mode_env in modes.items():
            if "PROMETHEUS_MULTIPROC_DIR" in mode_env:
                Path(mode_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
            log = stack.enter_context((folder / f"{len(bases)}.log").open("wb"))
            bases[name] = stack.enter_context(uvicorn(mode_env, workers=args.workers, output=log))
            if name != "off":
                stack.enter_context(_scraper(bases[name] + "/metrics", token))
        post = {"auth": f"Bearer {key}", "connections": args.connections}
        for base in bases.values():  # warm every server
            wrk_post(base + "/api/v1/proposals", BODY, seconds=2, **post)  # type: ignore[arg-type]
        best: dict[str, dict[str, float]] = {}
        ratios: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            runs = {
                name: wrk_post(
                    base + "/api/v1/proposals",
                    BODY,
                    auth=f"Bearer {key}",
                    database=args.database,
                    sessions={SESSIONS[base]},
                    **common,  # type: ignore[arg-type]
                )
                for name, base in bases.items()
            }
            floor = _cpu(runs["off"])
            for name, run in runs.items():
                if name not in best or _cpu(run) < _cpu(best[name]):
                    best[name] = run
                ratios.setdefault(name, []).append(_cpu(run) / floor)
        lines = (folder / "1.log").read_bytes().count(b"\n{")
    print(
        f"\n{args.connections} connections, {args.seconds} s a round, {args.rounds} rounds "
        f"alternating the three servers, uvicorn --workers {args.workers}, PostgreSQL"
    )
    print_table(list(best.items()))
    for name in list(bases)[1:]:
        rounds = ratios[name]
        print(
            f"CPU a submit (server + PostgreSQL), {name.strip()} / off: median of rounds "
            f"{statistics.median(rounds):.3f} (rounds: {', '.join(f'{r:.3f}' for r in rounds)}); "
            f"best / best {_cpu(best[name]) / _cpu(best['off']):.3f}"
        )
    print(f"(the JSON-logging server wrote {lines} log lines)")
    if args.json:
        print(json.dumps({"best": best, "round_ratios": ratios}))


def _cpu(run: dict[str, float]) -> float:
    return run["cpu_ms_server"] + run["cpu_ms_postgres"]


if __name__ == "__main__":
    main()
