"""The demo's silent model update and its simulated reviewers."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.management import call_command

from approvals.management.commands.simulate_service import make_proposal
from approvals.models import ActionType, Proposal
from insights.models import TypeSettings
from tests.conftest import ServiceClient


def test_after_the_silent_update_half_the_emails_are_confidently_wrong() -> None:
    rng = random.Random(3)
    before = [make_proposal(rng) for _ in range(400)]
    after = [make_proposal(rng, degraded=True) for _ in range(400)]
    assert all(b["metadata"]["sim_quality"] == "good" for b in before)
    emails = [b for b in after if b["action_type"] == "email.send"]
    degraded = [b for b in emails if b["metadata"]["sim_quality"] == "degraded"]
    assert 0.3 < len(degraded) / len(emails) < 0.7
    confident = [b for b in degraded if b["confidence"] >= 0.95]
    assert 0.3 < len(confident) / len(degraded) < 0.7
    assert all(b["model"] and b["prompt_version"] == "replies@12" for b in degraded)
    others = [b for b in after if b["action_type"] != "email.send"]
    assert all(b["metadata"]["sim_quality"] == "good" for b in others)


def test_simulated_reviewers_decide_old_pending_proposals(
    submit: Callable[..., Any], refund_type: ActionType, shop: ServiceClient
) -> None:
    user = User.objects.create_user("reviewer2", password="x")
    user.groups.add(Group.objects.get(name="support"))
    for i in range(6):
        submit(
            confidence=0.99,
            metadata={"sim_quality": "good"},
            external_id=f"E{i}",
        )
    call_command("simulate_reviewers", "--once", "--delay", "0", "--seed", "1")
    assert not Proposal.objects.filter(state="pending_review").exists()
    assert Proposal.objects.filter(decided_by="reviewer").count() == 6
    assert TypeSettings.objects.get(action_type=refund_type).audit_fraction == 0.3
