from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from approvals import rules, services
from approvals.models import ActionType, Proposal, Rule, RuleVersion
from foundation.errors import ApplicationError
from tests.conftest import ServiceClient, refund_body

# Each case: rules to create (name, fields), body overrides, then the expected state,
# deciding rule (or ""), and the trace as (rule, result) pairs.
SEMANTICS: list[tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Any], str, str, list]] = [
    ("no rules: review", [], {}, "pending_review", "", []),
    (
        "lower priority number runs first",
        [
            ("approve-all", {"priority": 10, "outcome": "approve"}),
            ("reject-all", {"priority": 5, "outcome": "reject"}),
        ],
        {},
        "rejected",
        "reject-all",
        [("reject-all", "matched")],
    ),
    (
        "first match decides",
        [
            ("big", {"priority": 1, "when": "payload.amount > 100.0", "outcome": "reject"}),
            ("small", {"priority": 2, "when": "payload.amount <= 100.0"}),
            ("later", {"priority": 3, "outcome": "reject"}),
        ],
        {},
        "approved",
        "small",
        [("big", "no_match"), ("small", "matched")],
    ),
    (
        "no match: review",
        [("confident", {"when": "confidence >= 0.99"})],
        {},
        "pending_review",
        "",
        [("confident", "no_match")],
    ),
    (
        "evaluation error: review, later rules do not run",
        [
            ("broken", {"priority": 1, "when": "int(payload.order_id) > 0", "outcome": "reject"}),
            ("approve-all", {"priority": 2}),
        ],
        {},
        "pending_review",
        "",
        [("broken", "error")],
    ),
    (
        "unknown payload field: review",
        [
            ("typo", {"priority": 1, "when": "payload.amout > 10.0", "outcome": "reject"}),
            ("approve-all", {"priority": 2}),
        ],
        {},
        "pending_review",
        "",
        [("typo", "error")],
    ),
    (
        "a condition that is not a bool: review",
        [("not-bool", {"when": "payload.amount"})],
        {},
        "pending_review",
        "",
        [("not-bool", "error")],
    ),
    (
        "shadow never decides",
        [("shadow-approve", {"mode": "shadow"})],
        {},
        "pending_review",
        "",
        [("shadow-approve", "matched")],
    ),
    (
        "shadow before an enforced rule is traced, the enforced one decides",
        [
            ("shadow-reject", {"priority": 1, "mode": "shadow", "outcome": "reject"}),
            ("approve-all", {"priority": 2}),
        ],
        {},
        "approved",
        "approve-all",
        [("shadow-reject", "matched"), ("approve-all", "matched")],
    ),
    (
        "a failing shadow rule does not decide",
        [
            ("shadow-broken", {"priority": 1, "mode": "shadow", "when": "payload.nope > 1.0"}),
            ("approve-all", {"priority": 2}),
        ],
        {},
        "approved",
        "approve-all",
        [("shadow-broken", "error"), ("approve-all", "matched")],
    ),
    (
        "shadow rules after the decision still run",
        [
            ("approve-all", {"priority": 1}),
            ("shadow-late", {"priority": 9, "mode": "shadow", "outcome": "reject"}),
        ],
        {},
        "approved",
        "approve-all",
        [("approve-all", "matched"), ("shadow-late", "matched")],
    ),
    (
        "disabled rules are ignored",
        [
            ("off", {"priority": 1, "enabled": False, "outcome": "reject"}),
            ("approve-all", {"priority": 2}),
        ],
        {},
        "approved",
        "approve-all",
        [("approve-all", "matched")],
    ),
    (
        "the context carries the proposal's fields",
        [
            (
                "context",
                {
                    "when": "service == 'shop' && model == 'gpt-4o-mini' && "
                    "prompt_version == 'refunds@3' && feature == 'support-refunds' && "
                    "action.type == 'refund.issue' && !action.irreversible && "
                    "action.risk == 'medium' && now.getFullYear() >= 2024 && "
                    "confidence > 0.9 && payload.currency == 'EUR'",
                },
            )
        ],
        {},
        "approved",
        "context",
        [("context", "matched")],
    ),
    (
        "integers in the payload compare as doubles",
        [("double", {"when": "payload.amount * 2.0 == 50.0"})],
        {"payload": {"order_id": "ORD-1", "amount": 25}},
        "approved",
        "double",
        [("double", "matched")],
    ),
]


@pytest.mark.parametrize(
    ("rules", "overrides", "state", "deciding", "trace"),
    [case[1:] for case in SEMANTICS],
    ids=[case[0] for case in SEMANTICS],
)
def test_rule_semantics(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    rules: list[tuple[str, dict[str, Any]]],
    overrides: dict[str, Any],
    state: str,
    deciding: str,
    trace: list[tuple[str, str]],
) -> None:
    for name, fields in rules:
        make_rule(name, action_type=refund_type, **fields)
    response = shop.post_json("/api/v1/proposals", refund_body(**overrides))
    assert response.status_code == 201, response.content
    body = response.json()
    proposal = Proposal.objects.get(pk=body["id"])
    assert body["state"] == proposal.state == state
    assert [(e["rule"], e["result"]) for e in proposal.rule_trace] == trace
    if state == "pending_review":
        assert body["decision"] is None
        assert body["routing"]["trace"] == proposal.rule_trace
        assert proposal.decision_rule == ""
    else:
        assert body["decision"]["by"] == "rule"
        assert body["decision"]["rule"] == proposal.decision_rule == deciding
        assert body["decision"]["rule_version"] == 1
        assert body["decision"]["trace"] == proposal.rule_trace


def test_an_error_is_recorded_in_the_trace(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("typo", action_type=refund_type, when="payload.amout > 10.0")
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    entry = body["routing"]["trace"][0]
    assert entry["result"] == "error"
    assert "amout" in entry["error"]
    assert "failed to evaluate" in body["routing"]["reason"]


def test_a_rule_for_another_action_type_is_ignored(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    email_type: ActionType,
) -> None:
    make_rule("emails", action_type=email_type, outcome="reject")
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == "pending_review"
    assert body["routing"]["trace"] == []


def test_a_rule_without_action_type_applies_to_all(
    shop: ServiceClient, make_rule: Callable[..., Rule]
) -> None:
    make_rule("everything", outcome="reject", reason="Frozen")
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == "rejected"
    assert body["decision"]["reason"] == "Frozen"


@pytest.mark.parametrize(("allows", "state"), [(False, "pending_review"), (True, "approved")])
def test_irreversible_approval_needs_allows_irreversible(
    make_service: Callable[..., ServiceClient],
    make_rule: Callable[..., Rule],
    email_type: ActionType,
    allows: bool,
    state: str,
) -> None:
    mailer = make_service("mailer", email_type)
    make_rule("send-all", action_type=email_type, allows_irreversible=allows)
    body = {
        "action_type": "email.send",
        "payload": {"to": "a@example.com"},
        "confidence": 0.99,
        "summary": "Say hello",
    }
    response = mailer.post_json("/api/v1/proposals", body).json()
    assert response["state"] == state
    proposal = Proposal.objects.get(pk=response["id"])
    assert proposal.rule_trace[0]["outcome"] == ("approve" if allows else "review")
    if not allows:
        assert "irreversible" in proposal.rule_trace[0]["note"]
        assert "irreversible" in response["routing"]["reason"]


def test_irreversible_guard_does_not_stop_a_rejection(
    make_service: Callable[..., ServiceClient],
    make_rule: Callable[..., Rule],
    email_type: ActionType,
) -> None:
    mailer = make_service("mailer", email_type)
    make_rule("no-mail", action_type=email_type, outcome="reject")
    body = {"action_type": "email.send", "payload": {"to": "x"}, "confidence": 0.5, "summary": "s"}
    assert mailer.post_json("/api/v1/proposals", body).json()["state"] == "rejected"


def test_a_spent_time_budget_routes_to_review(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    settings: Any,
) -> None:
    settings.RULES_TIME_BUDGET_MS = 0
    make_rule("approve-all", action_type=refund_type)
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == "pending_review"
    assert body["routing"]["trace"][0]["error"] == "time budget exceeded"


# --- validation at save -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("confidence >= ", "Syntax error"),
        ("confidance > 0.5", "undeclared reference to 'confidance'"),
        ("confidence * 2 > 1.0", "no matching overload for double * int"),
        ("confidence == 'high'", "no matching overload for double == string"),
        ("action.kind == 'x'", "action has no field 'kind'"),
        ("confidence + 1.0", "must be a bool"),
        ("stats.count('approved', '24h') > 2", "not one of approve, reject, review, any"),
        ("stats.approved_sum('payload.amount', 'a day') > 2.0", "not a duration"),
        ("size(confidence) > 1", "no function size(double)"),
        ("", "empty"),
    ],
)
def test_a_bad_condition_is_refused_at_save(
    make_rule: Callable[..., Rule], when: str, message: str
) -> None:
    with pytest.raises(ApplicationError) as refused:
        make_rule("bad", when=when)
    assert message in refused.value.message
    assert not Rule.objects.exists()


def admin_rule_form(**fields: Any) -> dict[str, Any]:
    """The admin's rule form as a browser posts it (the selects with their defaults)."""
    return {
        "priority": 10,
        "outcome": "approve",
        "mode": "enforce",
        "approvals_required": 1,
        "enabled": "on",
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "bad", "when": "confidence >= "}, "Syntax error: mismatched input"),
        (
            {"name": "two", "when": "true", "approvals_required": 2},
            "Only a rule whose outcome is review can ask",
        ),
    ],
    ids=["library-message", "two-approvals-on-approve"],
)
def test_the_admin_form_refuses_a_bad_rule_with_its_reason(
    admin_client_logged_in: Client, fields: dict[str, Any], message: str
) -> None:
    response = admin_client_logged_in.post("/admin/approvals/rule/add/", admin_rule_form(**fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Rule.objects.exists()


def test_the_admin_saves_a_version(admin_client_logged_in: Client, refund_type: ActionType) -> None:
    form = admin_rule_form(
        name="small",
        action_type=refund_type.pk,
        when="payload.amount <= 20.0",
        reason="Small",
        **{"versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0},
    )
    response = admin_client_logged_in.post("/admin/approvals/rule/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    rule = Rule.objects.get(name="small")
    form["when"] = "payload.amount <= 30.0"
    response = admin_client_logged_in.post(f"/admin/approvals/rule/{rule.pk}/change/", form)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.version == 2
    assert list(rule.versions.values_list("version", "when", "created_by")) == [
        (2, "payload.amount <= 30.0", "user:ada"),
        (1, "payload.amount <= 20.0", "user:ada"),
    ]
    page = admin_client_logged_in.get(f"/admin/approvals/rule/{rule.pk}/change/")
    assert "Test against history" in page.content.decode()


# --- versioning -------------------------------------------------------------------------------


def test_a_decision_keeps_its_version_after_the_rule_changes(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    rule = make_rule("small", action_type=refund_type, when="payload.amount <= 30.0")
    first = Proposal.objects.get(pk=shop.post_json("/api/v1/proposals", refund_body()).json()["id"])
    assert (first.state, first.decision_rule, first.decision_rule_version) == (
        "approved",
        "small",
        1,
    )

    rule.when = "payload.amount <= 10.0"
    rule.outcome = "reject"
    assert services.rule_save(rule=rule, actor="test") is True

    # Picked up at once (the cache follows the database), and the old decision is unchanged.
    second = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert second["state"] == "pending_review"
    assert second["routing"]["trace"] == [
        {"rule": "small", "version": 2, "mode": "enforce", "result": "no_match"}
    ]
    first.refresh_from_db()
    assert (first.state, first.decision_rule_version) == ("approved", 1)
    assert first.rule_trace[0]["version"] == 1
    v1 = RuleVersion.objects.get(rule=rule, version=1)
    assert (v1.when, v1.outcome) == ("payload.amount <= 30.0", "approve")


def test_saving_an_unchanged_rule_makes_no_version(make_rule: Callable[..., Rule]) -> None:
    rule = make_rule("same", when="confidence > 0.5")
    assert services.rule_save(rule=rule, actor="test") is False
    assert rule.versions.count() == 1
    rule.enabled = False
    assert services.rule_save(rule=rule, actor="test") is True
    assert rule.versions.count() == 2


@pytest.mark.django_db(transaction=True)
def test_rule_versions_refuse_update_and_delete(make_rule: Callable[..., Rule]) -> None:
    make_rule("fixed", when="confidence > 0.5")
    with connection.cursor() as cursor:
        cursor.execute("SET gatehouse.audit_maintenance = 'off'")
    try:
        for statement in (
            "UPDATE approvals_ruleversion SET \"when\" = 'true'",
            "DELETE FROM approvals_ruleversion",
        ):
            with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
                connection.cursor().execute(statement)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET gatehouse.audit_maintenance = 'on'")
    assert RuleVersion.objects.get().when == "confidence > 0.5"


# --- the per-process cache ------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_rule_changed_by_another_process_applies_here_without_a_query_per_proposal(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType, tmp_path: Path
) -> None:
    make_rule("switch", action_type=refund_type, outcome="approve")
    assert shop.post_json("/api/v1/proposals", refund_body()).json()["state"] == "approved"
    assert _wait_for(lambda: rules._listener.connected)
    rules.current_ruleset()
    with CaptureQueriesContext(connection) as queries:
        assert [r.spec.version for r in rules.current_ruleset().rules] == [1]
    assert len(queries) == 0

    # Another process (manage.py apply) turns the rule into a rejection.
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n  - name: switch\n    action_type: refund.issue\n    priority: 100\n"
        "    when: 'true'\n    outcome: reject\n"
    )
    settings_dict = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "apply", str(path)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert _wait_for(lambda: not rules._listener.fresh(), seconds=5)
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == "rejected"
    assert body["decision"]["rule_version"] == 2


def test_without_the_listener_each_proposal_checks_the_generation(
    shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    settings: Any,
) -> None:
    settings.RULES_LISTEN = False  # as on SQLite, or while the listener reconnects
    rule = make_rule("switch", action_type=refund_type, outcome="approve")
    rules.current_ruleset()
    with CaptureQueriesContext(connection) as queries:
        assert rules.current_ruleset().rules[0].spec.outcome == "approve"
    assert len(queries) == 1  # the generation only: the compiled rules come from the cache
    # A change that bypasses rule_save, so nothing told this process.
    Rule.objects.filter(pk=rule.pk).update(outcome="reject", version=2)
    RuleVersion.objects.create(
        rule=rule,
        version=2,
        name="switch",
        priority=100,
        when="true",
        outcome="reject",
        allows_irreversible=False,
        mode="enforce",
        enabled=True,
    )
    assert rules.current_ruleset().rules[0].spec.outcome == "reject"


@pytest.mark.django_db(transaction=True)
def test_the_listener_hears_a_change_made_with_plain_sql(
    make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("switch", action_type=refund_type)
    rules.current_ruleset()
    assert _wait_for(lambda: rules._listener.connected)
    assert [r.spec.name for r in rules.current_ruleset().rules] == ["switch"]
    with connection.cursor() as cursor:  # autocommit: committed, so NOTIFY is delivered
        cursor.execute("UPDATE approvals_rule SET enabled = false")
    assert _wait_for(lambda: not rules._listener.fresh(), seconds=5)
    assert rules.current_ruleset().rules == []


def test_a_payload_the_library_cannot_take_goes_to_review(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("approve-all", action_type=refund_type)
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    proposal = Proposal(payload={"amount": 1.0, "deep": deep}, confidence=0.99)
    decision = rules.evaluate(
        proposal=proposal,
        service=shop.service,
        action_type=refund_type,
        rules=rules.current_ruleset().for_action_type(refund_type.pk),
    )
    assert decision.outcome == "review"
    assert decision.trace[0]["result"] == "error"


# --- the cost of one evaluation (issue 12) --------------------------------------------------

NESTED = "payload.items.exists(x, payload.items.exists(y, x == y + 1.0))"


@pytest.fixture
def batch(make_service: Callable[..., ServiceClient]) -> tuple[ServiceClient, ActionType]:
    """A service proposing an action type whose payload carries a list of any length."""
    action_type = ActionType.objects.create(
        key="batch.run", title="Run a batch", payload_schema={"type": "object"}
    )
    return make_service("batcher", action_type), action_type


def batch_body(items: list[float]) -> dict[str, Any]:
    return {
        "action_type": "batch.run",
        "payload": {"items": items},
        "confidence": 0.9,
        "summary": "s",
    }


def test_a_nested_comprehension_over_a_large_payload_is_not_run_and_goes_to_review(
    batch: tuple[ServiceClient, ActionType], make_rule: Callable[..., Rule]
) -> None:
    # Before the bound, 3,000 items kept the evaluator (and the GIL) busy for over 4 s.
    client, action_type = batch
    make_rule("pairs", action_type=action_type, when=NESTED, outcome="approve")
    started = time.perf_counter()
    body = client.post_json(
        "/api/v1/proposals", batch_body([float(i * 2) for i in range(3000)])
    ).json()
    elapsed = time.perf_counter() - started
    assert body["state"] == "pending_review"
    entry = body["routing"]["trace"][0]
    assert entry["result"] == "error"
    assert entry["error"].startswith("not run: could take up to")
    assert "3000 items" in entry["error"]
    assert "too costly" in body["routing"]["reason"]
    assert elapsed < 1.0


def test_the_same_rule_still_decides_on_a_small_payload(
    batch: tuple[ServiceClient, ActionType], make_rule: Callable[..., Rule]
) -> None:
    client, action_type = batch
    make_rule("pairs", action_type=action_type, when=NESTED, outcome="approve")
    body = client.post_json("/api/v1/proposals", batch_body([1.0, 3.0, 2.0])).json()
    assert body["state"] == "approved"


def test_a_shadow_rule_too_costly_for_the_payload_does_not_decide(
    batch: tuple[ServiceClient, ActionType], make_rule: Callable[..., Rule]
) -> None:
    client, action_type = batch
    make_rule("pairs", action_type=action_type, when=NESTED, outcome="reject", mode="shadow")
    make_rule("approve-all", action_type=action_type, priority=200)
    items = [float(i) for i in range(2000)]
    body = client.post_json("/api/v1/proposals", batch_body(items)).json()
    assert body["state"] == "approved"
    assert body["decision"]["trace"][0]["error"].startswith("not run")


@pytest.mark.parametrize(
    "when",
    [
        "payload.a.exists(x, payload.a.exists(y, payload.a.exists(z, x == y + z)))",
        "payload.a.map(x, payload.a.map(y, payload.a.filter(z, z > y))).size() > 0",
    ],
)
def test_a_condition_too_costly_even_for_a_small_payload_is_refused_at_save(
    make_rule: Callable[..., Rule], when: str
) -> None:
    with pytest.raises(ApplicationError) as refused:
        make_rule("cubic", when=when)
    assert "too costly" in refused.value.message
    assert "100-item list" in refused.value.message
    assert not Rule.objects.exists()
