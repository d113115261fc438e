"""What the insights gate adds to the automatic decision of a new proposal (p50, p99).

The gate (insights/gate.py) runs on every approval the rules reach on a new proposal: it reads
the type's audit fraction and brake (cached per process), and in a savepoint either passes the
approval, or records an audit sample. Floor, measured in the same run and interleaved call by
call: the same `decide_automatically` on the same proposal without the gate (`new=False`).
Fresh PostgreSQL database `gh_insights_bench`; everything inside one transaction rolled back.

    .venv/bin/python bench/insights_gate.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from common import bench_env, fresh_database, manage  # noqa: E402

DATABASE = "gh_insights_bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    fresh_database(DATABASE)
    env = bench_env(DATABASE)
    manage(env, "migrate", "--noinput", "-v", "0")
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.db import transaction

    from approvals import decisions, services
    from approvals.models import ActionType, Proposal, Rule, payload_hash
    from insights import gate
    from insights.models import TypeSettings

    action_type = ActionType.objects.create(key="refund.issue", title="Refund")
    service, _ = services.service_create(name="shop", action_type_keys=["refund.issue"])
    services.rule_save(
        rule=Rule(
            name="small", action_type=action_type, when="payload.amount < 100.0", outcome="approve"
        ),
        actor="bench",
    )
    settings_row = TypeSettings.objects.create(action_type=action_type, audit_fraction=0.0)
    payload = {"order_id": "A-1", "amount": 20.0, "currency": "EUR"}

    def proposal() -> Proposal:
        return Proposal(
            id=uuid.uuid4(),
            service=service,
            action_type=action_type,
            payload=payload,
            payload_hash=payload_hash(payload),
            confidence=0.9,
            summary="bench",
        )

    def timed(new: bool) -> float:
        p = proposal()
        started = time.perf_counter()
        decision = decisions.decide_automatically(
            proposal=p, service=service, action_type=action_type, new=new
        )
        elapsed = (time.perf_counter() - started) * 1000
        assert decision.outcome in {"approve", "review"}
        return elapsed

    rows = []
    rng = random.Random(5)
    for fraction in (0.0, 0.1):
        TypeSettings.objects.filter(pk=settings_row.pk).update(audit_fraction=fraction)
        gate.forget()
        floor: list[float] = []
        gated: list[float] = []
        with transaction.atomic():
            for _ in range(200):  # warm-up: rules cache, policy cache, connection
                timed(True)
                timed(False)
            for _ in range(args.calls):
                if rng.random() < 0.5:
                    floor.append(timed(False))
                    gated.append(timed(True))
                else:
                    gated.append(timed(True))
                    floor.append(timed(False))
            transaction.set_rollback(True)
        for name, values in (
            (f"floor: rules only (fraction {fraction:g})", floor),
            (f"with the gate, audit fraction {fraction:g}", gated),
        ):
            ordered = sorted(values)
            rows.append(
                [
                    name,
                    f"{statistics.median(ordered):.3f}",
                    f"{ordered[int(len(ordered) * 0.99) - 1]:.3f}",
                    f"{statistics.median(ordered) / statistics.median(sorted(floor)):.2f}",
                ]
            )
    print(f"{'path':44} {'p50 ms':>8} {'p99 ms':>8} {'p50 x floor':>12}")
    for name, p50, p99, ratio in rows:
        print(f"{name:44} {p50:>8} {p99:>8} {ratio:>12}")


if __name__ == "__main__":
    main()
