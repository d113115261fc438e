from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from approvals import configspec
from approvals.backtest import backtest_rule
from approvals.models import ActionType, Proposal, Rule, Service
from approvals.rules import RuleSpec
from foundation import configfile

# confidence, amount, how it was decided (by, outcome)
HISTORY: list[tuple[float, float, str, str]] = [
    (0.95, 20.0, "reviewer", "approve"),
    (0.97, 30.0, "reviewer", "reject"),  # a confident mistake the reviewer caught
    (0.93, 10.0, "reviewer", "reject"),  # another
    (0.50, 15.0, "reviewer", "approve"),
    (0.40, 900.0, "reviewer", "reject"),
    (0.99, 40.0, "rule", "approve"),  # approved by the stored rule
    (0.60, 25.0, "", ""),  # still pending
]


def _plant(service: Service, action_type: ActionType) -> list[Proposal]:
    now = timezone.now()
    rows = []
    for index, (confidence, amount, by, outcome) in enumerate(HISTORY):
        at = now - timedelta(minutes=len(HISTORY) - index)
        state = {"approve": "approved", "reject": "rejected", "": "pending_review"}[outcome]
        rows.append(
            Proposal.objects.create(
                service=service,
                action_type=action_type,
                payload={"order_id": f"ORD-{index}", "amount": amount},
                payload_hash="x",
                confidence=confidence,
                summary=f"refund {index}",
                state=state,
                decision_outcome=outcome,
                decided_by=by,
                decided_at=at if outcome else None,
                created_at=at,
            )
        )
    return rows


@pytest.fixture
def history(shop: Any, refund_type: ActionType, make_rule: Callable[..., Rule]) -> list[Proposal]:
    # The stored rules: very confident small refunds are approved.
    make_rule(
        "very-confident",
        action_type=refund_type,
        priority=10,
        when="confidence >= 0.98 && payload.amount <= 50.0",
    )
    return _plant(shop.service, refund_type)


def test_backtest_counts_a_draft_on_a_known_history(
    history: list[Proposal], refund_type: ActionType
) -> None:
    draft = RuleSpec(
        name="confident",
        when="confidence >= 0.9 && payload.amount <= 50.0",
        outcome="approve",
        priority=20,
        action_type_id=refund_type.pk,
    )
    result = backtest_rule(candidate=draft)
    assert result.examined == 7
    # 0.95, 0.97, 0.93 go from review to approve; 0.99 is approved either way.
    assert result.changed == 3
    assert result.directions == {"review→approve": 3}
    assert result.candidate_matched == 3  # 0.99 is decided earlier by the stored rule
    assert result.reviewer_decided == 5
    assert sorted(r.summary for r in result.approved_but_reviewer_rejected) == [
        "refund 1",
        "refund 2",
    ]
    assert result.rejected_but_reviewer_approved == []


def test_backtest_of_an_edit_replaces_the_stored_rule(
    history: list[Proposal], refund_type: ActionType
) -> None:
    # Editing the stored rule to reject big refunds: 0.99 goes approve → review, 900 → reject.
    edit = RuleSpec(
        name="very-confident",
        when="payload.amount > 500.0",
        outcome="reject",
        priority=10,
        action_type_id=refund_type.pk,
    )
    result = backtest_rule(candidate=edit)
    assert result.directions == {"approve→review": 1, "review→reject": 1}
    assert result.changed == 2
    assert result.rejected_but_reviewer_approved == []
    assert result.approved_but_reviewer_rejected == []


def test_backtest_reports_auto_rejections_of_approved_proposals(
    history: list[Proposal], refund_type: ActionType
) -> None:
    draft = RuleSpec(
        name="timid", when="confidence < 0.96", outcome="reject", priority=1, mode="shadow"
    )
    result = backtest_rule(candidate=draft, last=4)
    assert result.examined == 4  # the newest four: 0.40, 0.50, 0.99, 0.60 … of all types
    assert [r.summary for r in result.rejected_but_reviewer_approved] == ["refund 3"]
    assert result.directions == {"review→reject": 3}


def test_backtest_rule_command(history: list[Proposal], tmp_path: Path) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(
        "name: confident\naction_type: refund.issue\npriority: 20\n"
        'when: "confidence >= 0.9 && payload.amount <= 50.0"\noutcome: approve\n'
    )
    out = StringIO()
    call_command("backtest_rule", "--file", str(path), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["changed"] == 3
    assert data["approved_but_reviewer_rejected_count"] == 2
    out = StringIO()
    call_command("backtest_rule", "--file", str(path), "--last", "2", stdout=out)
    assert "over the last 2 proposals (2 examined)" in out.getvalue()

    path.write_text("name: bad\nwhen: 'confidance > 1.0'\noutcome: approve\n")
    with pytest.raises(CommandError, match="undeclared reference to 'confidance'"):
        call_command("backtest_rule", "--file", str(path))


def test_admin_tests_an_unsaved_edit_against_history(
    history: list[Proposal], admin_client_logged_in: Client, refund_type: ActionType
) -> None:
    rule = Rule.objects.get(name="very-confident")
    response = admin_client_logged_in.post(
        f"/admin/approvals/rule/{rule.pk}/backtest/",
        {
            "name": "very-confident",
            "priority": 10,
            "action_type": refund_type.pk,
            "when": "confidence >= 0.9 && payload.amount <= 50.0",
            "outcome": "approve",
            "mode": "enforce",
            "approvals_required": 1,
            "enabled": "on",
            "last": "10000",
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="changed">3<' in page
    assert 'id="approved-rejected">2<' in page
    assert f"/admin/approvals/proposal/{history[1].pk}/change/" in page
    rule.refresh_from_db()
    assert (rule.version, rule.when) == (1, "confidence >= 0.98 && payload.amount <= 50.0")

    stored = admin_client_logged_in.get(f"/admin/approvals/rule/{rule.pk}/backtest/")
    assert 'id="changed">0<' in stored.content.decode()

    # Renamed in the form: still an edit of this rule, not a second rule beside it.
    renamed = admin_client_logged_in.post(
        f"/admin/approvals/rule/{rule.pk}/backtest/",
        {
            "name": "confident-renamed",
            "priority": 10,
            "action_type": refund_type.pk,
            "when": "payload.amount > 35.0",
            "outcome": "reject",
            "mode": "enforce",
            "approvals_required": 1,
            "enabled": "on",
        },
    ).content.decode()
    # 0.99/40.0 goes approve → reject; 900 goes review → reject.
    assert 'id="changed">2<' in renamed
    assert "approve→reject" in renamed

    add_page = admin_client_logged_in.get("/admin/approvals/rule/add/").content.decode()
    assert 'formaction="/admin/approvals/rule/backtest/"' in add_page

    refused = admin_client_logged_in.post(
        "/admin/approvals/rule/backtest/",
        {"name": "new", "priority": 1, "when": "confidence >", "outcome": "approve"},
    )
    assert "Syntax error" in refused.content.decode()


def test_backtest_is_for_staff_only(history: list[Proposal], client: Client) -> None:
    rule = Rule.objects.get()
    response = client.get(f"/admin/approvals/rule/{rule.pk}/backtest/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- apply / export -----------------------------------------------------------------------


RULES_FILE = """\
rules:
  - name: small-confident-refunds
    action_type: refund.issue
    priority: 10
    when: "confidence >= 0.9 && payload.amount <= 50.0"
    outcome: approve
    reason: "Small refund, model confident"
  - name: daily-refund-cap
    description: Keeps automatic refunds under a daily budget.
    action_type: refund.issue
    priority: 5
    when: "stats.approved_sum('payload.amount', '24h') + payload.amount > 2000.0"
    outcome: review
    reason: "Daily automatic refund budget reached"
    approvals_required: 2
  - name: watch-everything
    priority: 100
    when: |
      confidence < 0.2
    outcome: reject
    mode: shadow
    enabled: false
"""


def test_apply_and_export_round_trip(refund_type: ActionType) -> None:
    report = configfile.apply(RULES_FILE)
    assert report == [
        "rule small-confident-refunds: created",
        "rule daily-refund-cap: created",
        "rule watch-everything: created",
    ]
    exported = configspec.export_rules()
    assert configfile.apply(exported) == [
        "rule daily-refund-cap: unchanged",
        "rule small-confident-refunds: unchanged",
        "rule watch-everything: unchanged",
    ]
    assert configspec.export_rules() == exported
    cap = Rule.objects.get(name="daily-refund-cap")
    assert (cap.priority, cap.outcome, cap.action_type, cap.version, cap.approvals_required) == (
        5,
        "review",
        refund_type,
        1,
        2,
    )
    assert cap.versions.get().approvals_required == 2
    watch = Rule.objects.get(name="watch-everything")
    assert (watch.action_type, watch.mode, watch.enabled) == (None, "shadow", False)

    changed = RULES_FILE.replace("<= 50.0", "<= 60.0")
    assert "rule small-confident-refunds: updated (v2)" in configfile.apply(changed)
    out = StringIO()
    call_command("export_rules", stdout=out)
    assert "payload.amount <= 60.0" in out.getvalue()


def test_apply_refuses_a_bad_rule_with_its_name_and_line(refund_type: ActionType) -> None:
    bad = RULES_FILE.replace("payload.amount <= 50.0", "payload.amount <= 50.0 &&")
    with pytest.raises(configfile.ConfigFileError) as refused:
        configfile.apply(bad, source="rules.yaml")
    problem = refused.value.problems[0]
    assert problem.startswith("rules.yaml: line 5: rules[0].when:")
    assert "rule 'small-confident-refunds'" in problem
    assert "Syntax error" in problem
    assert not Rule.objects.exists()


def test_apply_refuses_an_unknown_action_type_whole(refund_type: ActionType) -> None:
    bad = RULES_FILE.replace(
        "action_type: refund.issue\n    priority: 5", "action_type: nope\n    priority: 5"
    )
    with pytest.raises(configfile.ConfigFileError, match="unknown action type 'nope'"):
        configfile.apply(bad)
    assert not Rule.objects.exists()


@pytest.mark.parametrize(
    ("action_type", "payload", "confidence", "state"),
    [
        (
            "refund.issue",
            {"order_id": "ORD-1001", "amount": 20, "currency": "EUR"},
            0.9,
            "approved",
        ),
        (
            "refund.issue",
            {"order_id": "ORD-1002", "amount": 80, "currency": "EUR"},
            0.9,
            "pending_review",
        ),
        (
            "refund.issue",
            {"order_id": "ORD-1003", "amount": 5000, "currency": "EUR"},
            0.99,
            "rejected",
        ),
        (
            "refund.issue",
            {"order_id": "ORD-1004", "amount": 20, "currency": "EUR"},
            0.1,
            "rejected",
        ),
        (
            "email.send",
            {"to": "a@example.com", "subject": "Your order", "body": "It ships today."},
            0.97,
            "approved",
        ),
        (
            "email.send",
            {"to": "a@example.com", "subject": "Verify", "body": "Reply with your Password."},
            0.99,
            "rejected",
        ),
        (
            "email.send",
            {"to": "a@example.com", "subject": "Hi", "body": "Hello"},
            0.5,
            "pending_review",
        ),
        ("account.close", {"account_id": "ACC-1234", "reason": "asked"}, 1.0, "pending_review"),
    ],
)
def test_the_demo_rules_approve_some_reject_some_and_review_the_rest(
    db: None, action_type: str, payload: dict[str, Any], confidence: float, state: str
) -> None:
    from approvals import services

    text = (Path(__file__).resolve().parents[2] / "config" / "demo.yaml").read_text()
    configfile.apply(text)
    service, _ = services.service_create(
        name="demo", action_type_keys=["refund.issue", "email.send", "account.close"]
    )
    data = {
        "action_type": action_type,
        "payload": payload,
        "confidence": confidence,
        "summary": "demo",
    }
    result = services.proposal_submit(service=service, data=data)
    assert result.proposal.state == state, result.proposal.rule_trace
