"""The automatic decision's policy checks (settings.DECISION_CHECKS): run in order on an automatic
approval of a new proposal, each may hold it back, and every failure fails closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from django.db import connection

from approvals import rules, services
from approvals.models import ActionType
from approvals.rules import AutoDecision
from tests.conftest import ServiceClient, refund_body

HERE = "tests.approvals.test_decision_checks"
seen: list[str] = []


def passes(*, decision: AutoDecision, **kwargs: Any) -> AutoDecision:
    seen.append("passes")
    return decision


def holds(*, decision: AutoDecision, **kwargs: Any) -> AutoDecision:
    seen.append("holds")
    return replace(decision, outcome="review", reason="held by a check", rule="", rule_version=None)


def raises(**kwargs: Any) -> AutoDecision:
    seen.append("raises")
    raise RuntimeError("the check's database is on fire")


def invents(*, decision: AutoDecision, **kwargs: Any) -> AutoDecision:
    return replace(decision, outcome="maybe")


@pytest.fixture(autouse=True)
def approving_rule(make_rule: Callable[..., Any], refund_type: ActionType) -> Iterator[None]:
    seen.clear()
    make_rule("small refunds", action_type=refund_type, when="payload.amount < 100.0")
    yield
    rules.invalidate()  # the test's rules roll back without a NOTIFY: forget them here


def submit(shop: ServiceClient) -> Any:
    return services.proposal_submit(service=shop.service, data=refund_body()).proposal


def test_checks_run_in_order_and_the_first_hold_ends_the_walk(
    settings: Any, shop: ServiceClient
) -> None:
    settings.DECISION_CHECKS = [f"{HERE}.passes", f"{HERE}.holds", f"{HERE}.raises"]
    proposal = submit(shop)
    assert seen == ["passes", "holds"]
    assert proposal.state == "pending_review" and proposal.decision_reason == "held by a check"


def test_no_checks_leave_the_rules_approval_standing(settings: Any, shop: ServiceClient) -> None:
    settings.DECISION_CHECKS = []
    assert submit(shop).state == "approved"


@pytest.mark.parametrize(
    "check",
    [f"{HERE}.raises", f"{HERE}.invents", f"{HERE}.missing", "no_such_module.check"],
)
def test_a_check_that_fails_sends_the_proposal_to_review(
    settings: Any, shop: ServiceClient, check: str
) -> None:
    settings.DECISION_CHECKS = [f"{HERE}.passes", check]
    proposal = submit(shop)
    assert proposal.state == "pending_review"
    assert proposal.decision_rule == ""
    last = proposal.rule_trace[-1]
    assert last["result"] == "error" and last["rule"] in {check, "DECISION_CHECKS"}
    assert "failed; a reviewer decides" in proposal.decision_reason


def test_checks_never_see_a_decision_other_than_an_approval(
    settings: Any, shop: ServiceClient, make_rule: Callable[..., Any]
) -> None:
    settings.DECISION_CHECKS = [f"{HERE}.raises"]
    make_rule("reject all", when="true", outcome="reject", priority=1)
    assert submit(shop).state == "rejected" and seen == []


in_transaction: list[bool] = []


def notes_the_transaction(*, decision: AutoDecision, **kwargs: Any) -> AutoDecision:
    in_transaction.append(connection.in_atomic_block)
    return decision


@pytest.mark.django_db(transaction=True)
def test_the_checks_run_inside_the_transaction_that_records_the_proposal(
    settings: Any, shop: ServiceClient
) -> None:
    # The rules decide before any transaction when they read nothing; the checks of an
    # approval may read and write (insights' audit sampling), so they run inside it.
    settings.DECISION_CHECKS = [f"{HERE}.notes_the_transaction"]
    in_transaction.clear()
    assert submit(shop).state == "approved"
    assert in_transaction == [True]
    assert not connection.in_atomic_block  # and it is over
