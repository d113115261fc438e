"""POST /api/v1/proposals under load, against two floors measured in the same run.

The honest floor (issue 16): a bare Django project (bench/bare_django.py: one model, one function
view that parses the same JSON and inserts one row, Django's default middleware only) generated
into a temporary directory and served by the fastest of granian WSGI, gunicorn and uvicorn (each
tried for `--probe-seconds` first). The old in-app floor: /bench/floor, a view inside Gatehouse
(its middleware, its server) doing the same. Gatehouse itself runs as the Procfile's `web:` does
(granian WSGI, 2 workers) unless `--server` says otherwise, on a fresh PostgreSQL database; wrk
drives everything (32 connections, 10 s a round). Rounds alternate bare/in-app/api so a drifting
machine hurts all alike. The figures to watch are the ratios of throughputs: each round's API run
against the floors run just before it, and the median of those round ratios, since on a shared
2-core machine single runs move by ±0.1. The best round of each is printed too, with the CPU each
request cost the servers, PostgreSQL, Redis and wrk, and the load average before and after.
Every run of every round is printed too, in the order they ran (req/s, p99, each side's CPU a
request, the rest of PostgreSQL's and the idle servers' CPU, the WAL a request wrote, the
checkpoints begun), and each run starts once the machine is quiet (below a quarter of a core
for half a second, at most 15 s): the first round's floor once ran while other work took 0.6
of a core, and the round's ratio read 0.78 where the next two read 0.54 and 0.58
(bench/README.md, fourth session).

    .venv/bin/python bench/api_submit.py [--seconds 10] [--rounds 2] [--server granian-wsgi]
        [--config extra.yaml] [--rules 50]

`--config` applies a YAML file (rules, for instance) before measuring. `--rules N` loads N enabled
rules on refund.issue (bench/rulesets.py) that the benchmark body never matches, so each submit
evaluates all N (the worst case) and ends in review.

`--profile-stages` breaks a submit's CPU down by stage instead (bench/submit_stages.py: the real
WSGI application in-process, `--stage-requests` submits without and then with a new
Idempotency-Key each, CPU and wall per stage, exclusive); `--cprofile FILE` adds a cProfile.

`--observability` measures instead what metrics, JSON logs and traces cost a submit: three servers
(each `--server`, granian WSGI by default) side by side on the same database, rounds alternating between them, the CPU each request cost
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
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bare_django import bare_project
from common import (
    ROOT,
    SERVERS,
    SESSIONS,
    WSGI_SERVERS,
    bench_env,
    cpu_seconds_by_pid,
    cpu_used,
    fresh_database,
    machine_busy_seconds,
    manage,
    print_table,
    serve,
    wal_counters,
    wrk_post,
)
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
    parser.add_argument("--threads", type=int, default=8, help="per WSGI worker (the Procfile's)")
    parser.add_argument(
        "--floor-threads",
        type=lambda text: [int(n) for n in text.split(",")],
        help="threads per WSGI worker the floor's probe tries (comma-separated; default: "
        "--threads): the floor runs at the fastest server and thread count, its own best footing",
    )
    parser.add_argument("--server", choices=sorted(SERVERS), default="granian-wsgi")
    parser.add_argument("--probe-seconds", type=int, default=5, help="per floor server")
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
    parser.add_argument(
        "--profile-stages",
        action="store_true",
        help="break the submit's CPU down by stage, in-process (bench/submit_stages.py)",
    )
    parser.add_argument("--stage-requests", type=int, default=2000)
    parser.add_argument("--cprofile", type=Path, help="with --profile-stages: a cProfile file")
    args = parser.parse_args()

    fresh_database(args.database)
    floor_threads = args.floor_threads or [args.threads]
    # One connection a thread is all a server can use (8 threads a worker).
    env = bench_env(args.database, BENCH_FLOOR_ENDPOINT="1", DB_POOL_MAX=str(args.threads))
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
    if args.profile_stages:
        profile_stages(args, env, key)
        return

    print(f"load before: {load()}")
    bare_database = f"{args.database}_bare"
    fresh_database(bare_database)
    common = {"seconds": args.seconds, "connections": args.connections}
    with contextlib.ExitStack() as stack:
        cwd, bare_env = stack.enter_context(bare_project(env, bare_database))

        def serve_bare(server: str, threads: int) -> Any:
            return serve(
                {**bare_env, "DB_POOL_MAX": str(threads)}, project="floorproj", cwd=cwd,
                ready="/submit", workers=args.workers, threads=threads, server=server,
            )  # fmt: skip

        probes: dict[str, float] = {}
        footings: dict[str, tuple[str, int]] = {}
        for server in SERVERS:
            # Thread counts matter only to the WSGI servers (uvicorn runs one event loop).
            for threads in floor_threads if server in WSGI_SERVERS else floor_threads[:1]:
                name = server if len(floor_threads) == 1 else f"{server}, {threads} threads"
                with serve_bare(server, threads) as url:
                    wrk_post(url + "/submit", BODY, seconds=2, connections=args.connections)
                    probe = wrk_post(
                        url + "/submit", BODY, seconds=args.probe_seconds,
                        connections=args.connections,
                    )  # fmt: skip
                probes[name] = probe["rps"]
                footings[name] = (server, threads)
                print(f"bare Django on {name}: {probe['rps']:.0f} req/s ({load()})")
        fastest = max(probes, key=lambda name: probes[name])
        bare = stack.enter_context(serve_bare(*footings[fastest]))
        base = stack.enter_context(
            serve(env, server=args.server, workers=args.workers, threads=args.threads)
        )
        bare_name = f"bare Django on {fastest}"
        app_floor = f"in-app floor on {args.server}"
        api = "POST /api/v1/proposals"
        new_key = "  … with a new Idempotency-Key"
        auth = f"Bearer {key}"
        # Warm every path (imports, pools, caches) before measuring.
        for url, extra in (
            (bare + "/submit", {}),
            (base + "/bench/floor", {}),
            (base + "/api/v1/proposals", {"auth": auth}),
        ):
            wrk_post(url, BODY, seconds=2, connections=args.connections, **extra)  # type: ignore[arg-type]
        best: dict[str, dict[str, float]] = {}
        ratios: dict[str, list[float]] = {}
        p99_ratios: dict[str, list[float]] = {}
        # The CPU of each run: that server's processes and its database's backends only.
        on_bare = {**common, "database": bare_database, "sessions": {SESSIONS[bare]}}
        on_app = {**common, "database": args.database, "sessions": {SESSIONS[base]}}
        per_round: list[tuple[int, str, dict[str, float]]] = []
        for number in range(1, args.rounds + 1):
            runs = {
                bare_name: with_wal(wrk_post, bare + "/submit", BODY, **on_bare),
                app_floor: with_wal(wrk_post, base + "/bench/floor", BODY, **on_app),
                api: with_wal(wrk_post, base + "/api/v1/proposals", BODY, auth=auth, **on_app),
                new_key: with_wal(
                    wrk_post,
                    base + "/api/v1/proposals",
                    BODY,
                    auth=auth,
                    unique_keys=True,
                    **on_app,
                ),
            }
            runs[bare_name]["load"] = os.getloadavg()[0]
            per_round += [(number, name, run) for name, run in runs.items()]
            for name, run in runs.items():
                if name not in best or run["rps"] > best[name]["rps"]:
                    best[name] = run
                for floor in (bare_name, app_floor):
                    ratios.setdefault(f"{name.strip()} / {floor}", []).append(
                        run["rps"] / runs[floor]["rps"]
                    )
                p99_ratios.setdefault(name, []).append(run["p99_ms"] / runs[bare_name]["p99_ms"])

    rows = list(best.items())
    print(
        f"\n{args.connections} connections, {args.seconds} s a round, best of {args.rounds} rounds, "
        f"Gatehouse on {args.server} --workers {args.workers} (threads {args.threads}), PostgreSQL"
        + (f", {args.rules} rules" if args.rules else "")
        + (", a spend cap" if args.cap else "")
        + f"; load after: {load()}"
    )
    print_table(rows)
    print_rounds(per_round)
    for name in (api, new_key):
        for floor in (bare_name, app_floor):
            values = ratios[f"{name.strip()} / {floor}"]
            print(
                f"ratio {name.strip()} / {floor}: median of rounds {statistics.median(values):.2f} "
                f"(rounds: {', '.join(f'{r:.2f}' for r in values)}); "
                f"best / best {best[name]['rps'] / best[floor]['rps']:.2f}"
            )
    for name in (api, new_key):
        values = p99_ratios[name]
        print(
            f"p99 ratio {name.strip()} / {bare_name}: median of rounds "
            f"{statistics.median(values):.2f} (rounds: {', '.join(f'{r:.2f}' for r in values)})"
        )
    bad = sum(row["non2xx"] + row["socket_errors"] for _, row in rows)
    print(
        "targets (issue 16 item 3, stated for --rules 50 with Redis"
        + ("" if args.rules == 50 and args.redis_url else "; NOT this run's set-up")
        + "), medians of rounds against the bare floor:"
    )
    for line in verdicts(
        ratios[f"{api} / {bare_name}"],
        p99_ratios[api],
        ratios[f"{new_key.strip()} / {bare_name}"],
        failed=bad,
    ):
        print("  " + line)
    if bad:
        print(f"WARNING: {bad:.0f} requests failed (non-2xx or socket errors)")
    if args.json:
        print(
            json.dumps(
                {"best": best, "round_ratios": ratios, "p99_ratios": p99_ratios, "probes": probes}
            )
        )


# Issue 16 item 3: (what, the figure's median across rounds, the bound, whether it is a floor).
TARGETS = (
    ("submit throughput / floor's", 0.5, True),
    ("submit p99 / floor's p99", 2.0, False),
    ("new Idempotency-Key throughput / floor's", 0.4, True),
)


def verdicts(
    submit: list[float], submit_p99: list[float], new_key: list[float], *, failed: float = 0
) -> list[str]:
    """One line per target of issue 16 item 3: the median of the round ratios, the bound, and
    met / MISSED (every target is missed when any request failed: its figure is not a submit's)."""
    lines = []
    for (what, bound, at_least), values in zip(TARGETS, (submit, submit_p99, new_key), strict=True):
        median = statistics.median(values)
        met = (median >= bound if at_least else median <= bound) and not failed
        sign = "≥" if at_least else "≤"
        lines.append(f"{what}: {median:.2f} (target {sign} {bound}): {'met' if met else 'MISSED'}")
    return lines


def profile_stages(args: argparse.Namespace, env: dict[str, str], key: str) -> None:
    """The submit's CPU by stage, without and with a new Idempotency-Key (bench/submit_stages.py)."""
    print(f"load before: {load()}")
    for extra in ([], ["--new-keys"]):
        command = [
            sys.executable,
            str(Path(__file__).resolve().parent / "submit_stages.py"),
            "--key",
            key,
            "--body",
            json.dumps(BODY),
            "--requests",
            str(args.stage_requests),
            *extra,
        ]
        if args.cprofile:
            suffix = "-new-keys" if extra else ""
            command += ["--cprofile", f"{args.cprofile}{suffix}"]
        subprocess.run(command, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True)
    print(f"load after: {load()}")


def settle(*, busy_cores: float = 0.25, window: float = 0.5, limit: float = 15.0) -> float:
    """Wait until the machine is quiet (less than `busy_cores` of CPU over `window` seconds, at
    most `limit` seconds): what the run before left behind (servers winding down, PostgreSQL
    writing out) then lands on no run. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - before) / window < busy_cores:
            break
    return time.monotonic() - started


def with_wal(run: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
    """`run(*args, **kwargs)` (a wrk run), started once the machine is quiet (settle), with
    what PostgreSQL's whole cluster wrote to its WAL meanwhile, per request (records, full-page
    images, bytes), the checkpoints it began, and the CPU a request of the rest of PostgreSQL
    (other databases, the background processes) and of the benchmark's other servers (idle)."""
    waited = settle()
    every_server = set(SESSIONS.values())
    before, cpu_before = wal_counters(), cpu_seconds_by_pid(sessions=every_server)
    result: dict[str, float] = run(*args, **kwargs)
    after, cpu_after = wal_counters(), cpu_seconds_by_pid(sessions=every_server)
    requests = max(result["requests"], 1)
    for name in ("wal_records", "wal_fpi", "wal_bytes"):
        result[name] = (after[name] - before[name]) / requests
    result["checkpoints"] = after["checkpoints"] - before["checkpoints"]
    every = cpu_used(cpu_before, cpu_after)
    result["cpu_ms_postgres_rest"] = every["postgres"] * 1000 / requests - result["cpu_ms_postgres"]
    result["cpu_ms_servers_rest"] = every["server"] * 1000 / requests - result["cpu_ms_server"]
    result["settled_s"] = waited
    return result


def print_rounds(per_round: list[tuple[int, str, dict[str, float]]]) -> None:
    """Every run of every round, in the order they ran: where rounds disagree, which side moved
    (throughput, latency, each side's CPU a request, the rest of the machine's CPU, the WAL a
    request wrote, checkpoints begun during the run)."""
    print(
        f"\n{'round':>5} {'':34} {'settle':>6} {'req/s':>6} {'p99 ms':>7} {'server':>7} "
        f"{'postgres':>8} {'pg rest':>7} {'idle srv':>8} {'other':>6} {'WAL rec':>7} {'FPI':>6} "
        f"{'WAL B':>7} {'ckpt':>4}  (CPU and WAL a request; other: the machine's rest)"
    )
    for number, name, run in per_round:
        rest = run["cpu_ms_postgres_rest"] + run["cpu_ms_servers_rest"]
        print(
            f"{number:5} {name:34} {run['settled_s']:6.1f} {run['rps']:6.0f} {run['p99_ms']:7.1f} "
            f"{run['cpu_ms_server']:7.2f} {run['cpu_ms_postgres']:8.2f} "
            f"{run['cpu_ms_postgres_rest']:7.2f} {run['cpu_ms_servers_rest']:8.2f} "
            f"{run['cpu_ms_other'] - rest:6.2f} {run['wal_records']:7.1f} {run['wal_fpi']:6.2f} "
            f"{run['wal_bytes']:7.0f} {run['checkpoints']:4.0f}"
        )


def load() -> str:
    """The machine's load average (1, 5, 15 min): on a shared machine it goes beside every figure."""
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


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
            bases[name] = stack.enter_context(
                serve(
                    mode_env,
                    server=args.server,
                    workers=args.workers,
                    threads=args.threads,
                    output=log,
                )
            )
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
        f"alternating the three servers, {args.server} --workers {args.workers}, PostgreSQL"
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
