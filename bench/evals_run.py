"""What an eval run adds on top of the model calls it makes.

    .venv/bin/python bench/evals_run.py [CASES]

Against llmcalls' fake provider on loopback (answering at once, so the overhead is not hidden
behind model latency), on a fresh PostgreSQL database:

- floor: the same N `llmcalls.client.complete` calls with the same rendered messages, on the
  same number of threads — what any eval harness must pay;
- measured: `evals.services.run_execute` over N cases — rendering, the calls, scoring, storing N
  results in bulk and computing totals, per-tag totals and intervals.

Best of 3 rounds each; prints both, the ratio and the added milliseconds per case.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ADMIN_URL, bench_env, fresh_database, manage  # noqa: E402

DATABASE = "gh_evals_bench"
PORT = 18530
CONCURRENCY = 4


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    fresh_database(DATABASE)
    env = bench_env(DATABASE)
    manage(env, "migrate", "--noinput", "-v", "0")
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("REDIS_URL", None)  # per-process cache and breaker: nothing shared to measure

    import django

    django.setup()
    from django.db import connections

    from evals import services
    from llmcalls import client, routing
    from llmcalls import services as llm_services
    from tests.evals.scripted_provider import ScriptedProvider

    server = ScriptedProvider(PORT, responder=lambda body: '{"eligible": true}').start()
    try:
        llm_services.provider_upsert(
            name="bench", base_url=server.base_url("bench"), api_key_env=""
        )
        llm_services.route_upsert(
            feature="bench-evals",
            targets=[("bench", "ok")],
            deadline=timedelta(seconds=10),
            cache_ttl=None,
            daily_budget_usd=None,
            over_budget="refuse",
            params={},
        )
        from decimal import Decimal

        from llmcalls.models import ModelPrice

        ModelPrice.objects.create(
            model="ok", input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60")
        )
        routing.forget()
        eval_set, _ = services.eval_set_upsert(
            name="bench", scorer="label", scorer_config={"field": "eligible"}
        )
        lines = [
            f'{{"input": {{"order": "ORD-{i}", "days": {i % 90}}}, "ideal": {{"eligible": {str(i % 3 != 0).lower()}}}, "tags": ["t{i % 6}"]}}'
            for i in range(cases)
        ]
        services.cases_import(eval_set=eval_set, lines=lines)
        version, _ = services.prompt_version_create(
            name="bench",
            template=[
                {"role": "system", "content": "Decide refund eligibility. Answer JSON."},
                {"role": "user", "content": "Order {{order}}, delivered {{days}} days ago."},
            ],
            route="bench-evals",
        )
        rendered = [
            services.render_messages(version=version, case_input=case.input)
            for case in eval_set.cases.order_by("id")
        ]

        def one(messages: list[dict[str, str]]) -> None:
            try:
                client.complete(feature="bench-evals", messages=messages)
            finally:
                connections.close_all()

        def floor() -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                list(pool.map(one, rendered))
            return time.perf_counter() - started

        def measured() -> float:
            started = time.perf_counter()
            run = services.run_execute(eval_set=eval_set, version=version, concurrency=CONCURRENCY)
            elapsed = time.perf_counter() - started
            assert run.n_cases == cases and run.status == "finished", run.error
            return elapsed

        floor()  # warm up connections and the route snapshot
        floors, runs = [], []
        for _ in range(3):
            floors.append(floor())
            runs.append(measured())
        best_floor, best_run = min(floors), min(runs)
        print(f"cases: {cases}, threads: {CONCURRENCY}")
        print(
            f"floor (llmcalls.complete x {cases}): {best_floor:.3f} s ({best_floor / cases * 1000:.2f} ms/case)"
        )
        print(
            f"evals run_execute:               {best_run:.3f} s ({best_run / cases * 1000:.2f} ms/case)"
        )
        print(
            f"ratio: {best_run / best_floor:.2f}x; added {(best_run - best_floor) / cases * 1000:.2f} ms/case"
        )
    finally:
        server.stop()
        connections.close_all()
        drop_database(DATABASE)


if __name__ == "__main__":
    main()
