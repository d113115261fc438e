"""@requires_approval against the live app: the function runs once, only on approval, with the
approved (possibly edited) arguments bound to their hash."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import gatehouse_client as gc
import pytest

from approvals.models import AuditEvent, Proposal
from tests.clients.conftest import ReviewerThread, Shop
from tests.clients.proxy import MisbehavingProxy

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = gc.RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.05)


def gated(gh: gc.Gatehouse | gc.AsyncGatehouse, ran: list[dict[str, Any]], **options: Any) -> Any:
    options.setdefault("wait_timeout", 20)

    @gc.requires_approval(
        gh,
        action_type="refund.issue",
        summary=lambda a: f"Refund {a['amount']} {a['currency']} on {a['order_id']}",
        confidence=0.8,
        rationale="The parcel arrived broken.",
        **options,
    )
    def issue_refund(order_id: str, amount: float, currency: str = "EUR") -> str:
        proposal = gc.current_proposal()
        ran.append(
            {
                "order_id": order_id,
                "amount": amount,
                "currency": currency,
                "proposal": proposal.id if proposal else None,
            }
        )
        return f"refunded {amount} {currency} on {order_id}"

    return issue_refund


def test_approved_with_an_edit_it_runs_once_with_the_edited_arguments(
    gh_shop: Shop, reviewer_thread: ReviewerThread
) -> None:
    ran: list[dict[str, Any]] = []
    heard: list[gc.Proposal] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran, on_proposal=heard.append)
        reviewer_thread.decide_next("approve", edit={"amount": 60.0}, comment="Partial refund")
        result = issue_refund("ORD-7", 80.0)
    reviewer_thread.join()
    [proposal] = Proposal.objects.all()
    assert result == "refunded 60.0 EUR on ORD-7"
    assert ran == [
        {"order_id": "ORD-7", "amount": 60.0, "currency": "EUR", "proposal": str(proposal.pk)}
    ]
    assert heard[0].id == str(proposal.pk) and heard[0].state == "pending_review"
    assert proposal.payload == {"order_id": "ORD-7", "amount": 80.0, "currency": "EUR"}
    assert proposal.summary == "Refund 80.0 EUR on ORD-7"
    assert proposal.final_payload == {"order_id": "ORD-7", "amount": 60.0, "currency": "EUR"}
    # Executor `none`: the decorator ran the action and reported it.
    assert proposal.state == "executed"
    assert AuditEvent.objects.filter(proposal=proposal, kind="proposal.executed").count() == 1


def test_rejected_it_raises_with_the_reason_and_never_runs(
    gh_shop: Shop, reviewer_thread: ReviewerThread
) -> None:
    ran: list[dict[str, Any]] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran)
        reviewer_thread.decide_next("reject", comment="Refunded already on ticket 12")
        with pytest.raises(gc.Rejected) as rejected:
            issue_refund("ORD-7", 80.0)
    assert ran == []
    assert rejected.value.reason == "Refunded already on ticket 12"
    assert rejected.value.proposal_id == str(Proposal.objects.get().pk)
    assert Proposal.objects.get().state == "rejected"


def test_a_rule_approval_runs_at_once_and_a_rule_rejection_never_runs(
    gh_shop: Shop, small_refunds_rule: Any, make_rule: Any, refund_type: Any
) -> None:
    make_rule(
        "no-huge-refunds",
        action_type=refund_type,
        when="payload.amount > 1000.0",
        outcome="reject",
        reason="Refunds over 1000 are never automatic",
        priority=1,
    )
    ran: list[dict[str, Any]] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran)
        assert issue_refund("ORD-1", 20.0, "USD") == "refunded 20.0 USD on ORD-1"
        with pytest.raises(gc.Rejected) as rejected:
            issue_refund("ORD-2", 5000.0)
    assert [r["amount"] for r in ran] == [20.0]
    assert rejected.value.reason == "Refunds over 1000 are never automatic"


def test_no_decision_in_time_withdraws_the_proposal_and_never_runs(gh_shop: Shop) -> None:
    ran: list[dict[str, Any]] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran, wait_timeout=0.5)
        with pytest.raises(gc.ApprovalTimeout):
            issue_refund("ORD-7", 80.0)
    assert ran == []
    proposal = Proposal.objects.get()
    assert proposal.state == "cancelled" and "stopped waiting" in proposal.decision_reason


@pytest.mark.parametrize("ending", ["expired", "cancelled"])
def test_an_expired_or_cancelled_proposal_raises_and_never_runs(gh_shop: Shop, ending: str) -> None:
    from approvals import execution, services

    ran: list[dict[str, Any]] = []

    def end_it(proposal: gc.Proposal) -> None:
        # Happens while the decorated call waits: expiry by the periodic job, or a withdrawal
        # by another part of the service.
        if ending == "expired":
            Proposal.objects.filter(pk=proposal.id).update(expires_at="2000-01-01T00:00:00Z")
            execution.proposals_expire()
        else:
            services.proposal_cancel(
                service=gh_shop.service, proposal_id=uuid.UUID(proposal.id), reason="Ticket closed"
            )

    expected = gc.Expired if ending == "expired" else gc.Cancelled
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran, on_proposal=end_it)
        with pytest.raises(expected):
            issue_refund("ORD-7", 80.0)
    assert ran == [] and Proposal.objects.get().state == ending


def test_an_answer_whose_approved_payload_does_not_match_its_hash_never_runs(
    gh_shop: Shop, proxy: MisbehavingProxy, reviewer_thread: ReviewerThread
) -> None:
    """Approve A, run B: the answer says approved but carries another payload than the hash
    Gatehouse bound the decision to. Nothing runs and nothing is reported."""
    ran: list[dict[str, Any]] = []
    proxy.tamper_always = True
    with gc.Gatehouse(proxy.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran)
        reviewer_thread.decide_next("approve")
        with pytest.raises(gc.PayloadMismatch):
            issue_refund("ORD-7", 80.0)
    assert ran == []
    assert Proposal.objects.get().state == "approved"  # approved, but not run: no report


def test_an_async_function_runs_with_the_approved_edit(
    gh_shop: Shop, reviewer_thread: ReviewerThread
) -> None:
    ran: list[tuple[str, float]] = []

    async def scenario() -> str:
        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:

            @gc.requires_approval(
                gh, action_type="refund.issue", summary="Refund", confidence=0.8, wait_timeout=20
            )
            async def issue_refund(order_id: str, amount: float) -> str:
                ran.append((order_id, amount))
                return "ok"

            reviewer_thread.decide_next("approve", edit={"amount": 5.5})
            return await issue_refund(order_id="ORD-9", amount=50.5)

    assert asyncio.run(scenario()) == "ok"
    assert ran == [("ORD-9", 5.5)]
    assert Proposal.objects.get().state == "executed"


def test_a_failing_function_is_reported_failed_and_raises(
    gh_shop: Shop, small_refunds_rule: Any
) -> None:
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:

        @gc.requires_approval(gh, action_type="refund.issue", summary="Refund", confidence=0.9)
        def issue_refund(order_id: str, amount: float) -> None:
            raise RuntimeError("payments API down")

        with pytest.raises(RuntimeError):
            issue_refund("ORD-1", 10.0)
    proposal = Proposal.objects.get()
    assert proposal.state == "failed"
    event = AuditEvent.objects.get(proposal=proposal, kind="proposal.failed")
    assert "payments API down" in event.data["detail"]


def test_a_repeated_logical_call_finds_its_proposal_and_does_not_run_twice(
    gh_shop: Shop, small_refunds_rule: Any
) -> None:
    ran: list[dict[str, Any]] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran, idempotency_key=lambda a: f"refund-{a['order_id']}")
        issue_refund("ORD-1", 10.0)
        with pytest.raises(gc.AlreadyExecuted):
            issue_refund("ORD-1", 10.0)
    assert len(ran) == 1 and Proposal.objects.count() == 1


def test_arguments_that_are_not_json_are_refused_before_anything_is_proposed(
    gh_shop: Shop,
) -> None:
    ran: list[dict[str, Any]] = []
    with gc.Gatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
        issue_refund = gated(gh, ran)
        with pytest.raises(TypeError):
            issue_refund("ORD-1", object())
        with pytest.raises(TypeError):
            issue_refund("ORD-1", float("nan"))
        with pytest.raises(gc.ValidationError) as refused:  # the schema's word, by field
            issue_refund("ORD-1", -3.0)
        assert "payload.amount" in refused.value.fields

        with pytest.raises(TypeError):

            @gc.requires_approval(gh, action_type="refund.issue", summary="R", confidence=0.5)
            def loose(**kwargs: Any) -> None: ...

    assert ran == [] and Proposal.objects.count() == 0
