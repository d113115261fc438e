"""Audit sampling: the rate over 10,000 proposals, and nothing in the queue gives a sample away."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from approvals import decisions, events
from approvals import services as approvals_services
from approvals.models import ActionType, Proposal, payload_hash
from insights import gate
from insights.models import AuditSample, TypeSettings
from tests.conftest import ServiceClient, logged_in, refund_body


@pytest.fixture
def auto_approve(make_rule: Callable[..., Any], refund_type: ActionType) -> None:
    make_rule("small refunds", action_type=refund_type, when="payload.amount < 100.0")


def test_the_sampling_rate_is_within_tolerance_over_10000_proposals(
    refund_type: ActionType, shop: ServiceClient, auto_approve: None
) -> None:
    TypeSettings.objects.create(action_type=refund_type, audit_fraction=0.05)
    gate.forget()
    body = refund_body()
    outcomes = {"approve": 0, "review": 0}
    with transaction.atomic():
        for _ in range(10_000):
            proposal = Proposal(
                id=uuid.uuid4(),
                service=shop.service,
                action_type=refund_type,
                payload=body["payload"],
                payload_hash=payload_hash(body["payload"]),
                confidence=0.9,
                summary="s",
            )
            decision = decisions.decide_automatically(
                proposal=proposal, service=shop.service, action_type=refund_type, new=True
            )
            outcomes[decision.outcome] += 1
        sampled = AuditSample.objects.count()
        transaction.set_rollback(True)  # simulated proposals: none of them is kept
    # 5% of 10,000: 500, standard deviation 21.8; ±100 is more than 4.5 of them.
    assert 400 <= outcomes["review"] <= 600
    assert sampled == outcomes["review"]


def test_edits_and_rule_outcomes_other_than_approve_are_never_sampled(
    refund_type: ActionType, shop: ServiceClient
) -> None:
    TypeSettings.objects.create(action_type=refund_type, audit_fraction=1.0)
    proposal = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert proposal.state == "pending_review"  # no rule approved it: nothing to audit
    assert not AuditSample.objects.exists()


def _normalised(html: str, proposal: Proposal) -> str:
    html = html.replace(str(proposal.pk), "ID")
    html = re.sub(r'datetime="[^"]*"|data-claim-expires="[^"]*"', "", html)
    return re.sub(r"<time[^>]*>.*?</time>", "<time/>", html)


def test_a_sample_looks_like_any_other_proposal_in_the_queue_and_the_live_push(
    refund_type: ActionType,
    shop: ServiceClient,
    auto_approve: None,
    reviewer: User,
) -> None:
    TypeSettings.objects.create(action_type=refund_type, audit_fraction=1.0)
    gate.forget()
    sample = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    # An ordinary proposal the rules sent to review (over the auto-approval limit).
    body = refund_body()
    body["payload"] = {**body["payload"], "amount": 250.0}
    ordinary_body = {**body, "payload": {**body["payload"], "amount": 50.0}}
    TypeSettings.objects.filter(action_type=refund_type).update(audit_fraction=0.0)
    gate.forget()
    from approvals.models import Rule

    Rule.objects.update(enabled=False)  # nothing approves now: plain review routing
    from approvals.rules import invalidate

    invalidate()
    ordinary = approvals_services.proposal_submit(service=shop.service, data=ordinary_body).proposal

    assert sample.state == ordinary.state == "pending_review"
    assert AuditSample.objects.filter(proposal=sample).exists()
    assert sample.rule_trace[-1]["rule"] == "audit sample"  # the trace records it …
    assert sample.decision_reason == ordinary.decision_reason  # … the reason does not

    rows = {}
    for p in (sample, ordinary):
        fresh = events.render_update(p.pk)
        assert fresh is not None
        assert "audit" not in fresh["html"].lower()
        rows[p.pk] = _normalised(fresh["html"], p)
    assert rows[sample.pk] == rows[ordinary.pk]

    page = logged_in(reviewer).get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert str(sample.pk) in html and str(ordinary.pk) in html
    assert "audit" not in html.lower()
    sample_row = re.search(rf'<tr id="proposal-{sample.pk}".*?</tr>', html, re.S)
    ordinary_row = re.search(rf'<tr id="proposal-{ordinary.pk}".*?</tr>', html, re.S)
    assert sample_row and ordinary_row
    assert _normalised(sample_row.group(0), sample) == _normalised(ordinary_row.group(0), ordinary)
    # The proposal's own page shows its trace, which records the sample.
    detail = logged_in(reviewer).get(f"/proposals/{sample.pk}/")
    assert detail.status_code == 200
    assert "audit sample" in detail.content.decode()


def test_a_failing_gate_fails_closed(
    refund_type: ActionType, shop: ServiceClient, auto_approve: None, monkeypatch: Any
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(gate, "_read_policy", broken)
    gate.forget()
    proposal = approvals_services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert proposal.state == "pending_review"
    assert proposal.rule_trace[-1]["result"] == "error"
    assert proposal.rule_trace[-1]["rule"] == "insights.gate.brake"


def test_the_project_runs_the_brake_then_audit_sampling() -> None:
    assert [path for path, _ in decisions.policy_checks()] == [
        "insights.gate.brake",
        "insights.gate.audit_sample",
    ]
