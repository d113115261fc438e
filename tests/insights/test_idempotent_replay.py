"""An Idempotency-Key replay of an audit-sampled approval: the replay's own decision (the
insights audit-sampling check runs before the key is checked) is rolled back, so the replay
answers 200 with the first response and nothing of it is kept. Here rather than beside
approvals' idempotency tests because it needs insights installed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from approvals.models import ActionType
from insights import gate
from insights.models import AuditSample, TypeSettings
from tests.conftest import ServiceClient, refund_body


@pytest.mark.django_db(transaction=True)
def test_a_replay_keeps_nothing_its_decision_wrote(
    shop: ServiceClient, make_rule: Callable[..., Any], refund_type: ActionType
) -> None:
    # Every automatic approval is audited: deciding writes an AuditSample for the new proposal.
    make_rule("small refunds", action_type=refund_type, when="payload.amount < 100.0")
    TypeSettings.objects.create(action_type=refund_type, audit_fraction=1.0)
    gate.forget()
    first = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "sampled"})
    replay = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "sampled"})
    assert (first.status_code, replay.status_code) == (201, 200), replay.content
    assert replay.json() == first.json()
    assert list(AuditSample.objects.values_list("proposal_id", flat=True)) == [
        uuid.UUID(first.json()["id"])
    ]
