"""Rule evaluation time per proposal with 10, 100 and 500 enabled rules (p50, p99).

Every rule is compiled (as the per-process cache holds them) and none matches the proposal,
so each evaluation runs all of them: the worst case. The floor, measured in the same run, is the
same evaluation with no rules (building the CEL context and the trace). No database: the
per-proposal cache check is one small query, measured with the whole submit path by
`bench/api_submit.py --rules 50`. Target: 100 rules ≤ 1 ms p50.

    .venv/bin/python bench/rules_eval.py [--proposals 2000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from rulesets import synthetic_rules  # noqa: E402

from approvals import rules as engine  # noqa: E402
from approvals.models import ActionType, Proposal, Service  # noqa: E402


def measure(count: int, proposals: int) -> tuple[float, float]:
    action_type = ActionType(pk=1, key="refund.issue", irreversible=False, risk="medium")
    service = Service(pk=1, name="shop")
    specs = [
        engine.RuleSpec.model_validate({**r, "action_type_id": 1, "version": 1})
        for r in synthetic_rules(count)
    ]
    compiled = engine.sort_rules(engine.compile_rule(s) for s in specs)
    rng = random.Random(7)
    samples = []
    for _ in range(proposals):
        proposal = Proposal(
            confidence=rng.uniform(0.6, 0.99),
            payload={
                "order_id": f"ORD-{rng.randint(10_000, 99_999)}",
                "amount": round(rng.uniform(1, 200), 2),
                "currency": rng.choice(["EUR", "USD"]),
                "reason": "late delivery",
            },
            model="gpt-4o-mini",
            prompt_version="refunds@7",
            feature="support-refunds",
        )
        started = time.perf_counter()
        decision = engine.evaluate(
            proposal=proposal,
            service=service,
            action_type=action_type,
            rules=compiled,
            time_budget=10.0,
        )
        samples.append(time.perf_counter() - started)
        assert decision.outcome == "review" and len(decision.trace) == count, decision
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proposals", type=int, default=2000)
    args = parser.parse_args()
    measure(100, 200)  # warm up
    rows = [("floor: 0 rules", *measure(0, args.proposals))]
    for count in (10, 100, 500):
        rows.append((f"{count} rules", *measure(count, args.proposals)))
    floor = rows[0][1]
    print(f"Evaluation per proposal, {args.proposals} proposals, every rule evaluated:")
    print(f"{'':<16} {'p50 ms':>8} {'p99 ms':>8} {'p50 / floor':>12} {'µs per rule':>12}")
    for name, p50, p99 in rows:
        count = int(name.split()[0]) if name[0].isdigit() else 0
        per_rule = f"{(p50 - floor) * 1000 / count:.2f}" if count else "-"
        print(f"{name:<16} {p50:>8.3f} {p99:>8.3f} {p50 / floor:>12.1f} {per_rule:>12}")
    p50_100 = rows[2][1]
    verdict = "met" if p50_100 <= 1.0 else "MISSED"
    print(f"target 100 rules ≤ 1 ms p50: {verdict} ({p50_100:.3f} ms)")


if __name__ == "__main__":
    main()
