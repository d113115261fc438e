"""Synthetic rule sets for the benchmarks: realistic conditions that the benchmark proposal
(refund of 42.5 EUR, confidence 0.87, gpt-4o-mini, refunds@7) never matches, so every rule runs."""

from __future__ import annotations

import yaml

TEMPLATES = [
    "payload.amount > {big}.0 && confidence < 0.{c}",
    "payload.currency == 'GBP' && payload.amount > {i}.0",
    "model.startsWith('legacy-{i}') || action.risk == 'high' && confidence < 0.3",
    "has(payload.reason) && payload.reason.contains('chargeback-{i}')",
    "prompt_version == 'refunds@{i}00' && payload.amount > 10.0",
    "service == 'blocked-{i}' || feature == 'retired-{i}'",
    "payload.order_id.matches('^REF-{i}[0-9]+$') && confidence < 0.95",
    "now.getHours() == 25 || payload.amount * 2.0 > {big}.0",
]


def synthetic_rules(n: int, *, action_type: str = "refund.issue") -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for i in range(n):
        template = TEMPLATES[i % len(TEMPLATES)]
        rules.append(
            {
                "name": f"bench-rule-{i:03d}",
                "action_type": action_type,
                "priority": i,
                "when": template.format(i=i, big=10_000 + i, c=1 + i % 9),
                "outcome": "reject" if i % 2 else "review",
                "reason": f"Benchmark rule {i}",
            }
        )
    return rules


def synthetic_rules_yaml(n: int, *, action_type: str = "refund.issue") -> str:
    return yaml.safe_dump({"rules": synthetic_rules(n, action_type=action_type)}, sort_keys=False)
