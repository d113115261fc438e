"""Growth: Gatehouse on a database of millions of rows, against the same figures on an empty one.

Fills a PostgreSQL database (bench/growth_fill.py: set-based INSERT … SELECT, minutes) with, by
default, 1,000,000 decided proposals and 3,000,000 audit events, 100,000 pending across three
action types, 1,000,000 model calls and 100,000 eval results, then measures in the same run:

- the submit (POST /api/v1/proposals on the Procfile's granian WSGI, a daily spend cap rule that
  reads `stats.approved_sum('payload.amount', '24h')` over the burst's approvals) on the full
  database against an empty one, rounds alternating; target ≥ 0.9x the empty figure;
- each page's p50/p95 in process (Django's test client: middleware, view, template; the empty
  database's figure beside it): the reviewer queue (≤ 50 ms), history with each filter
  (≤ 100 ms), /insights/ and /insights/<type>/ (≤ 300 ms), /llm/ (≤ 300 ms);
- `stats.approved_sum` with `burst` approvals in its 24 h window (≤ 5 ms), and the periodic
  `insights.check` task over all types (≤ 5 s);
- EXPLAIN (ANALYZE, BUFFERS) of every query of each page that took ≥ 1 ms, and the database's
  size per million proposals.

    .venv/bin/python bench/growth.py [--proposals 1000000] [--pending 100000] [--burst 100000]
        [--llmcalls 1000000] [--evals 100000] [--reuse] [--plans] [--submit-seconds 10]

`--reuse` keeps a database filled by an earlier run (the fill is skipped); `--refill` keeps\nonly its migrated and configured template (after a new migration, run without either);
`--no-submit` skips the wrk rounds. The databases are gh_growth_bench and gh_growth_empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ADMIN_URL, PYTHON, ROOT, bench_env, fresh_database, manage, serve, wrk_post

FULL_DB = "gh_growth_bench"
EMPTY_DB = "gh_growth_empty"
TEMPLATE_DB = "gh_growth_template"
BIG_TABLES = ("approvals_proposal", "approvals_auditevent", "llmcalls_llmcall", "approvals_review")

CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    risk: medium
    reviewer_group: payments
    payload_schema: &schema
      type: object
      required: [order_id, amount, currency]
      properties:
        order_id: {type: string}
        amount: {type: number, exclusiveMinimum: 0, maximum: 100000}
        currency: {type: string, enum: [EUR, USD, GBP]}
        reason: {type: string, maxLength: 500}
  - key: account.credit
    title: Credit an account
    risk: low
    reviewer_group: payments
    payload_schema: *schema
  - key: shipment.reroute
    title: Reroute a shipment
    risk: high
    reviewer_group: logistics
    payload_schema: *schema
rules:
  - name: growth-daily-cap
    action_type: refund.issue
    priority: -1
    when: "stats.approved_sum('payload.amount', '24h') + payload.amount > 1000000000.0"
    outcome: review
"""

SERVICES = {
    "checkout-bot": "refund.issue",
    "support-bot": "refund.issue,shipment.reroute",
    "billing-agent": "account.credit",
    "logistics-agent": "shipment.reroute",
}
REVIEWERS = {"rita": "refund.issue,account.credit", "raj": "refund.issue,account.credit",
             "lena": "shipment.reroute", "leo": "shipment.reroute"}  # fmt: skip

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

# (label, user, path, target p95 ms): the reviewer "rita" (payments team) and a superuser.
PAGES: list[tuple[str, str, str, float]] = [
    ("queue", "rita", "/", 50),
    ("queue ?type=refund.issue", "rita", "/?type=refund.issue", 50),
    ("queue ?order=newest", "rita", "/?order=newest", 50),
    ("queue ?order=due", "rita", "/?order=due", 50),
    ("history", "rita", "/history/", 100),
    ("history ?state=rejected", "rita", "/history/?state=rejected", 100),
    ("history ?state=failed", "rita", "/history/?state=failed", 100),
    ("history ?type=account.credit", "rita", "/history/?type=account.credit", 100),
    ("history ?by=reviewer", "rita", "/history/?by=reviewer", 100),
    ("history ?mine=1", "rita", "/history/?mine=1", 100),
    ("history ?q=ORD-100123", "rita", "/history/?q=ORD-100123", 100),
    ("history ?q=<uuid>", "rita", "/history/?q=UUID", 100),
    ("/insights/", "growth-admin", "/insights/", 300),
    ("/insights/refund.issue/", "growth-admin", "/insights/refund.issue/", 300),
    ("/insights/ (reviewer)", "rita", "/insights/", 300),
    ("/llm/", "growth-admin", "/llm/", 300),
    ("/llm/ (reviewer)", "rita", "/llm/", 300),
]


def load() -> str:
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def connect(database: str) -> Any:
    import psycopg

    url = ADMIN_URL.replace("postgres://", "postgresql://").rsplit("/", 1)[0] + "/" + database
    return psycopg.connect(url, autocommit=True)


def prepare_template(env: dict[str, str]) -> dict[str, str]:
    """Schema, configuration, services and reviewers, once; both databases are copies of it.
    The services' API keys, by name."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    out = manage(env, "shell", "-c", SHELL_SETUP)
    keys = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    return keys


# Services (their keys printed as JSON), reviewers, feature grants (reviewers see their teams'
# model calls) and a superuser, in one process (each manage.py costs seconds to start).
SHELL_SETUP = f"""
import io, json
from django.contrib.auth.models import User
from django.core.management import call_command
from approvals.models import Service
from llmcalls.models import FeatureGrant
keys = {{}}
for name, types in {SERVICES!r}.items():
    out = io.StringIO()
    call_command("create_service", name, "--action-types", types, "--json", stdout=out)
    keys[name] = json.loads(out.getvalue())["api_key"]
for name, types in {REVIEWERS!r}.items():
    call_command("create_reviewer", name, "--action-types", types, stdout=io.StringIO())
User.objects.create_superuser("growth-admin", "admin@growth.invalid", "growth-Admin-pass-1")
for service, feature in [("support-bot", "support-refunds"), ("billing-agent", "billing-credits"),
                         ("logistics-agent", "logistics-reroutes")]:
    FeatureGrant.objects.create(service=Service.objects.get(name=service), feature=feature)
print(json.dumps(keys))
"""


def clone(template: str, target: str) -> None:
    with connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{template}"')


def fill(database: str, scale: Any) -> dict[str, float]:
    """Each step of bench/growth_fill.py, timed; then VACUUM ANALYZE (as autovacuum would)."""
    from growth_fill import STEPS

    timings: dict[str, float] = {}
    with connect(database) as conn:
        ids = {
            **dict(conn.execute("SELECT key, id FROM approvals_actiontype").fetchall()),
            **dict(conn.execute("SELECT name, id FROM approvals_service").fetchall()),
        }
        team = dict(
            conn.execute(
                "SELECT g.name, array_agg(u.id ORDER BY u.id) FROM auth_group g "
                "JOIN auth_user_groups ug ON ug.group_id = g.id "
                "JOIN auth_user u ON u.id = ug.user_id GROUP BY g.name"
            ).fetchall()
        )
        params = {
            "decided": scale.decided, "burst": scale.burst, "pending": scale.pending,
            "llmcalls": scale.llmcalls, "evals": scale.evals, "days": scale.days,
            "refund": ids["refund.issue"], "credit": ids["account.credit"],
            "shipment": ids["shipment.reroute"], "checkout": ids["checkout-bot"],
            "support": ids["support-bot"], "billing": ids["billing-agent"],
            "logistics_svc": ids["logistics-agent"], "payments": team["payments"],
            "logistics": team["logistics"],
        }  # fmt: skip
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        # Indexes built once at the end rather than row by row (the unique ones stay: they are
        # constraints), and the approved sums rebuilt in one statement rather than by trigger.
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "JOIN pg_class c ON c.relname = i.indexname JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE i.schemaname = 'public' AND NOT x.indisunique AND i.tablename = ANY(%s)",
            [list(BIG_TABLES)],
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        triggers = [
            name
            for (name,) in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'approvals_proposal_approved_sum%'"
            ).fetchall()
        ]
        for name in triggers:
            conn.execute(f'ALTER TABLE approvals_proposal DISABLE TRIGGER "{name}"')
        for name, sql in STEPS:
            started = time.monotonic()
            conn.execute(sql, params)
            timings[name] = time.monotonic() - started
            print(f"  {name}: {timings[name]:.1f} s", flush=True)
        started = time.monotonic()
        for name in triggers:
            conn.execute(f'ALTER TABLE approvals_proposal ENABLE TRIGGER "{name}"')
        if triggers:
            conn.execute("SELECT gatehouse_approved_sum_rebuild()")
        for _, definition in indexes:
            conn.execute(definition)
        timings["indexes and sums"] = time.monotonic() - started
        print(f"  indexes and sums: {timings['indexes and sums']:.1f} s", flush=True)
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.monotonic() - started
        print(f"  vacuum analyze: {timings['vacuum analyze']:.1f} s", flush=True)
    return timings


def sizes(database: str) -> dict[str, Any]:
    with connect(database) as conn:
        total = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        proposals = conn.execute("SELECT count(*) FROM approvals_proposal").fetchone()[0]
        tables = conn.execute(
            "SELECT relname, pg_total_relation_size(oid), pg_indexes_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
            "ORDER BY 2 DESC LIMIT 8"
        ).fetchall()
    return {
        "bytes": total,
        "proposals": proposals,
        "per_million": total / max(proposals, 1) * 1_000_000,
        "tables": [(name, size, index) for name, size, index in tables],
    }


def probe(env: dict[str, str], *, samples: int, plans: bool) -> dict[str, Any]:
    """The in-process measurements (growth.py --probe) against env's database."""
    argv = [PYTHON, str(Path(__file__).resolve()), "--probe", str(samples)]
    if plans:
        argv.append("--plans")
    result = subprocess.run(
        argv, cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"probe failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    lines = result.stdout.splitlines()
    for line in lines:
        if not line.startswith("PROBE "):
            print(line)
    return dict(json.loads(next(line[6:] for line in lines if line.startswith("PROBE "))))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_probe(samples: int, plans: bool) -> None:
    """Runs inside Django (the parent's environment names the database)."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from approvals import velocity
    from approvals.models import ActionType, Proposal, Service
    from insights import services as insights_services

    any_id = Proposal.objects.filter(decided_at__isnull=False).values_list("pk", flat=True).first()
    clients: dict[str, Client] = {}
    for name in {user for _, user, _, _ in PAGES}:
        clients[name] = Client(HTTP_HOST="localhost")
        clients[name].force_login(User.objects.get(username=name))
    figures: dict[str, Any] = {"pages": {}}
    for label, user, path, target in PAGES:
        path = path.replace("UUID", str(any_id or "00000000-0000-0000-0000-000000000000"))
        client = clients[user]
        for _ in range(2):  # warm: imports, template compilation, the connection
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        times, sql = [], []
        for _ in range(samples):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                client.get(path)
                times.append((time.perf_counter() - started) * 1000)
            sql.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        figures["pages"][label] = {
            "p50": statistics.median(times), "p95": percentile(times, 0.95), "target": target,
            "queries": len(captured.captured_queries), "sql_p50": statistics.median(sql),
            "sql_p95": percentile(sql, 0.95),
        }  # fmt: skip
        if plans:
            slow = [q for q in captured.captured_queries if float(q["time"]) >= 0.001]
            print(f"\n=== {label} ({path}): {len(captured.captured_queries)} queries, "
                  f"{len(slow)} took ≥ 1 ms ===")  # fmt: skip
            for query in slow:
                explain(connection, query["sql"], float(query["time"]))

    service = Service.objects.get(name="checkout-bot")
    refund = ActionType.objects.get(key="refund.issue")
    now = timezone.now()
    window = Proposal.objects.filter(
        service=service, action_type=refund, decision_outcome="approve",
        decided_at__gte=now - velocity.parse_duration("24h"),
    ).count()  # fmt: skip
    round_trip = []
    for _ in range(max(samples, 20)):  # the floor: a query that reads nothing
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        round_trip.append((time.perf_counter() - started) * 1000)
    times = []
    for _ in range(max(samples, 20)):
        started = time.perf_counter()
        velocity.approved_sum(
            service_id=service.pk, action_type_id=refund.pk, field_path="payload.amount",
            window="24h", as_of=timezone.now(),
        )  # fmt: skip
        times.append((time.perf_counter() - started) * 1000)
    raw = []  # before migration 0010: every approval in the window read from the proposals
    for _ in range(max(samples // 4, 5)):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            as_of = timezone.now()
            cursor.execute(velocity._RAW_SUM, {
                "path": ["amount"], "service": service.pk, "type": refund.pk,
                "states": list(velocity._STATES["approve"]),
                "since": as_of - velocity.parse_duration("24h"), "until": as_of,
            })  # fmt: skip
        raw.append((time.perf_counter() - started) * 1000)
    figures["approved_sum"] = {
        "p50": statistics.median(times), "p95": percentile(times, 0.95), "in_window": window,
        "select_1_p95": percentile(round_trip, 0.95), "raw_p50": statistics.median(raw),
        "raw_p95": percentile(raw, 0.95),
    }  # fmt: skip
    if plans:
        with CaptureQueriesContext(connection) as captured:
            velocity.approved_sum(
                service_id=service.pk, action_type_id=refund.pk, field_path="payload.amount",
                window="24h", as_of=timezone.now(),
            )  # fmt: skip
        print(f"\n=== stats.approved_sum('payload.amount', '24h'), {window} approvals ===")
        for query in captured.captured_queries:
            explain(connection, query["sql"], float(query["time"]))
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        insights_services.insights_check()
        runs.append(time.perf_counter() - started)
    figures["insights_check"] = {"median_s": statistics.median(runs), "max_s": max(runs)}
    print("PROBE " + json.dumps(figures))


def explain(connection: Any, sql: str, seconds: float) -> None:
    print(f"\n-- {seconds * 1000:.1f} ms: {sql[:400]}{' …' if len(sql) > 400 else ''}")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        for (line,) in cursor.fetchall():
            print("   " + line)


def submit_rounds(
    envs: dict[str, dict[str, str]], key: str, *, seconds: int, rounds: int
) -> dict[str, Any]:
    """POST /api/v1/proposals as checkout-bot on each database, rounds alternating."""
    import contextlib

    auth = f"Bearer {key}"
    results: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
    with contextlib.ExitStack() as stack:
        bases = {name: stack.enter_context(serve(env, server="granian-wsgi")) for name, env in envs.items()}  # fmt: skip
        for base in bases.values():
            wrk_post(base + "/api/v1/proposals", BODY, auth=auth, seconds=2)
        for _ in range(rounds):
            for name, base in bases.items():
                run = wrk_post(base + "/api/v1/proposals", BODY, auth=auth, seconds=seconds)
                results[name].append(run)
                print(f"  {name}: {run['rps']:.0f} req/s, p99 {run['p99_ms']:.1f} ms, "
                      f"non-2xx {run['non2xx']:.0f} ({load()})", flush=True)  # fmt: skip
    ratios = [f["rps"] / e["rps"] for f, e in zip(results["full"], results["empty"], strict=True)]
    return {
        "empty_rps": statistics.median(r["rps"] for r in results["empty"]),
        "full_rps": statistics.median(r["rps"] for r in results["full"]),
        "empty_p99": statistics.median(r["p99_ms"] for r in results["empty"]),
        "full_p99": statistics.median(r["p99_ms"] for r in results["full"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--probe":
        run_probe(int(sys.argv[2]), "--plans" in sys.argv)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--proposals", type=int, default=1_000_000, help="decided proposals")
    parser.add_argument("--burst", type=int, default=100_000, help="approvals in the last 24 h")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--llmcalls", type=int, default=1_000_000)
    parser.add_argument("--evals", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180, help="the months the rows spread over")
    parser.add_argument("--samples", type=int, default=40, help="requests per page")
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS)")
    parser.add_argument("--reuse", action="store_true", help="keep an earlier run's databases")
    parser.add_argument(
        "--refill", action="store_true", help="keep the schema template, fill afresh"
    )
    parser.add_argument("--no-submit", action="store_true")
    parser.add_argument("--submit-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from growth_fill import Scale

    scale = Scale(decided=args.proposals, burst=min(args.burst, args.proposals),
                  pending=args.pending, llmcalls=args.llmcalls, evals=args.evals, days=args.days)  # fmt: skip
    env = {
        name: bench_env(db, DB_POOL_MAX="16", REDIS_URL=os.environ.get("GROWTH_REDIS_URL", ""))
        for name, db in (("template", TEMPLATE_DB), ("empty", EMPTY_DB), ("full", FULL_DB))
    }  # fmt: skip
    keys_file = Path(f"/tmp/{FULL_DB}.keys.json")
    print(f"{scale} ({load()})")
    if not args.reuse or not keys_file.exists():
        started = time.monotonic()
        if not args.refill or not keys_file.exists():
            fresh_database(TEMPLATE_DB)
            keys_file.write_text(json.dumps(prepare_template(env["template"])))
        clone(TEMPLATE_DB, EMPTY_DB)
        clone(TEMPLATE_DB, FULL_DB)
        print(f"schema and configuration: {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        fill(FULL_DB, scale)
        print(f"fill: {time.monotonic() - started:.0f} s ({load()})")
    keys = json.loads(keys_file.read_text())
    manage(env["empty"], "collectstatic", "--noinput", "-v", "0")  # pages name hashed assets
    size = sizes(FULL_DB)
    print(f"\ndatabase size {size['bytes'] / 2**30:.2f} GiB for {size['proposals']:,} proposals: "
          f"{size['per_million'] / 2**30:.2f} GiB per million proposals (everything included)")  # fmt: skip
    for name, total, index in size["tables"]:
        print(f"  {name:32} {total / 2**20:9.0f} MiB (indexes {index / 2**20:.0f} MiB)")

    figures: dict[str, Any] = {"size": size}
    print(f"\nprobing the empty database ({load()})")
    figures["empty"] = probe(env["empty"], samples=args.samples, plans=False)
    print(f"probing the full database ({load()})")
    figures["full"] = probe(env["full"], samples=args.samples, plans=args.plans)
    figures["load_after_probes"] = load()
    report(figures)
    if not args.no_submit:
        print(f"\nsubmit as checkout-bot (granian WSGI, 2 workers, wrk -c32; {load()})")
        submit = submit_rounds(
            {"empty": env["empty"], "full": env["full"]}, keys["checkout-bot"],
            seconds=args.submit_seconds, rounds=args.rounds,
        )  # fmt: skip
        figures["submit"] = submit
        verdict = "ok" if submit["ratio"] >= 0.9 else "MISSES 0.9"
        print(f"submit: empty {submit['empty_rps']:.0f} req/s (p99 {submit['empty_p99']:.1f} ms), "
              f"full {submit['full_rps']:.0f} req/s (p99 {submit['full_p99']:.1f} ms); median "
              f"round ratio {submit['ratio']:.2f} [{verdict}] ({load()})")  # fmt: skip
    if args.json:
        print(json.dumps(figures, default=str))


def report(figures: dict[str, Any]) -> None:
    empty, full = figures["empty"], figures["full"]
    print(f"\n{'page':30} {'empty p50':>9} {'p95':>6} {'full p50':>9} {'p95':>6} {'target':>6}"
          f" {'full/empty':>10} {'SQL ms empty':>12} {'full':>6} {'queries':>7}")  # fmt: skip
    for label, row in full["pages"].items():
        floor = empty["pages"][label]
        verdict = "ok" if row["p95"] <= row["target"] else "MISSES"
        print(f"{label:30} {floor['p50']:9.1f} {floor['p95']:6.1f} {row['p50']:9.1f} "
              f"{row['p95']:6.1f} {row['target']:6.0f} {row['p50'] / floor['p50']:10.2f} "
              f"{floor['sql_p50']:12.1f} {row['sql_p50']:6.1f} {row['queries']:7d}  {verdict}")  # fmt: skip
    summed = full["approved_sum"]
    print(f"stats.approved_sum over {summed['in_window']:,} approvals: p50 {summed['p50']:.2f} ms, "
          f"p95 {summed['p95']:.2f} ms (empty p95 {empty['approved_sum']['p95']:.2f} ms, SELECT 1 "
          f"p95 {summed['select_1_p95']:.2f} ms; summing the proposals themselves: p50 "
          f"{summed['raw_p50']:.1f} ms, p95 {summed['raw_p95']:.1f} ms; "
          f"target 5) {'ok' if summed['p95'] <= 5 else 'MISSES'}")  # fmt: skip
    check = full["insights_check"]
    print(f"insights.check over all types: median {check['median_s']:.2f} s, max "
          f"{check['max_s']:.2f} s (empty {empty['insights_check']['median_s']:.2f} s; target 5)"
          f" {'ok' if check['max_s'] <= 5 else 'MISSES'}")  # fmt: skip
    print(f"({figures['load_after_probes']})")


if __name__ == "__main__":
    main()
