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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_env, fresh_database, manage, print_table, uvicorn, wrk_post
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


if __name__ == "__main__":
    main()
