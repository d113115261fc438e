"""The one point where insights touches the automatic decision (approvals/decisions.py).

An approval the rules reached on a new proposal is held back, and the proposal goes to review:
- when the action type's brake is engaged (automatic approval suspended), or
- as an audit sample, with the type's configured probability. A sample looks like any other
  proposal in the queue (same reason, nothing in the row); its trace and an AuditSample row
  record it, written in the proposal's own transaction.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from django.db import transaction

from approvals.rules import NO_MATCH_REASON
from foundation.ttlcache import TTLCache

if TYPE_CHECKING:
    from approvals.models import ActionType, Proposal
    from approvals.rules import AutoDecision

AUDIT_SAMPLE = "audit sample"
BRAKE = "brake"

_policies = TTLCache()
_random = random.SystemRandom()


def forget() -> None:
    """Called when settings or brakes change; other processes follow within the cache TTL."""
    _policies.clear()


def _policy(action_type_id: int) -> tuple[float, bool]:
    cached = _policies.get(action_type_id)
    if cached is None:
        with transaction.atomic():  # a savepoint: a failed read must not abort the submit
            cached = _read_policy(action_type_id)
        _policies.set(action_type_id, cached)
    return cached


def _read_policy(action_type_id: int) -> tuple[float, bool]:
    from insights.models import Brake, TypeSettings

    fraction = (
        TypeSettings.objects.filter(action_type_id=action_type_id)
        .values_list("audit_fraction", flat=True)
        .first()
    ) or 0.0
    braked = Brake.objects.filter(action_type_id=action_type_id, lifted_at__isnull=True).exists()
    return (float(fraction), braked)


def hold_back(
    *, proposal: Proposal, action_type: ActionType, decision: AutoDecision
) -> AutoDecision:
    """`decision` is an approval of a new proposal; return it, or a review in its place."""
    from insights.models import AuditSample

    fraction, braked = _policy(action_type.pk)
    if braked:
        return replace(
            decision,
            outcome="review",
            reason=f"Automatic approval of {action_type.key} is suspended (brake); "
            "a reviewer decides.",
            rule="",
            rule_version=None,
            trace=[
                *decision.trace,
                {
                    "rule": BRAKE,
                    "version": None,
                    "mode": "insights",
                    "result": "held",
                    "outcome": "review",
                    "note": f"would have been approved by {decision.rule}",
                },
            ],
        )
    if fraction > 0 and _random.random() < fraction:
        # The proposal row is inserted later in the same transaction; the foreign key is
        # checked at commit (deferred), so the sample exists exactly when the proposal does.
        with transaction.atomic():  # a savepoint, as above
            AuditSample.objects.create(
                proposal_id=proposal.pk,
                action_type_id=action_type.pk,
                fraction=fraction,
                rule=decision.rule,
                rule_version=decision.rule_version,
            )
        return replace(
            decision,
            outcome="review",
            reason=NO_MATCH_REASON,  # as for any proposal no rule decided: it must not stand out
            rule="",
            rule_version=None,
            trace=[
                *decision.trace,
                {
                    "rule": AUDIT_SAMPLE,
                    "version": None,
                    "mode": "insights",
                    "result": "sampled",
                    "outcome": "review",
                    "note": f"p={fraction:g}; rule {decision.rule} approved",
                },
            ],
        )
    return decision
