"""Claims, decisions, four-eyes and edit-then-approve (approvals.services)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals import decisions, rules, services
from approvals.models import ActionType, AuditEvent, Claim, Proposal, Review, payload_hash
from foundation.errors import ApplicationError, Conflict, NotFound
from tests.conftest import logged_in

State = Proposal.State


def claim(proposal: Proposal, user: User) -> services.ClaimResult:
    return services.claim_acquire(proposal_id=proposal.pk, reviewer=user)


def approve(proposal: Proposal, user: User, **kwargs: Any) -> Proposal:
    kwargs.setdefault("seen_payload_hash", proposal.effective_payload_hash)
    return services.proposal_decide(proposal=proposal, reviewer=user, verdict="approve", **kwargs)


# --- claims ---------------------------------------------------------------------------------


def test_a_claim_is_held_by_one_reviewer_and_shown_to_the_next(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    first = claim(proposal, reviewer)
    second = claim(proposal, second_reviewer)
    assert first.acquired and not second.acquired
    assert second.claim.reviewer == reviewer
    assert Claim.objects.get(proposal=proposal).reviewer == reviewer
    assert AuditEvent.objects.filter(proposal=proposal, kind="proposal.claimed").count() == 1


def test_renewing_a_claim_extends_it_without_a_new_audit_event(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    first = claim(proposal, reviewer).claim.expires_at
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        renewed = claim(proposal, reviewer).claim.expires_at
    assert renewed > first
    assert AuditEvent.objects.filter(proposal=proposal, kind="proposal.claimed").count() == 1


def test_a_lapsed_claim_can_be_taken_over(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        taken = claim(proposal, second_reviewer)
    assert taken.acquired and taken.claim.reviewer == second_reviewer


def test_a_decision_on_a_stale_claim_is_refused(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with (
        time_machine.travel(timezone.now() + timedelta(minutes=6)),
        pytest.raises(Conflict, match="claim on this proposal expired"),
    ):
        approve(proposal, reviewer)
    proposal.refresh_from_db()
    assert proposal.state == State.PENDING_REVIEW
    assert not Review.objects.exists()


def test_a_decision_on_someone_elses_claim_is_refused(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with pytest.raises(Conflict, match="rita is reviewing this proposal now"):
        approve(proposal, second_reviewer)
    assert Proposal.objects.get(pk=proposal.pk).state == State.PENDING_REVIEW


def test_a_decision_without_a_claim_is_refused(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    with pytest.raises(Conflict, match="do not hold a claim"):
        approve(proposal, reviewer)


def test_the_approval_is_bound_to_the_payload_hash_seen(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with pytest.raises(Conflict, match="payload changed"):
        approve(proposal, reviewer, seen_payload_hash=payload_hash({"other": 1}))
    decided = approve(proposal, reviewer)
    assert decided.state == State.APPROVED
    assert decided.reviews.get().payload_hash == proposal.payload_hash


def test_a_rejection_needs_a_reason_and_records_it(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with pytest.raises(ApplicationError, match="needs a reason"):
        services.proposal_decide(proposal=proposal, reviewer=reviewer, verdict="reject")
    decided = services.proposal_decide(
        proposal=proposal, reviewer=reviewer, verdict="reject", comment="Order was never paid"
    )
    assert decided.state == State.REJECTED
    assert decided.decision_reason == "Order was never paid"
    assert decided.decision_reviewer == reviewer
    assert not Claim.objects.filter(proposal=proposal).exists()


def test_a_reviewer_of_another_team_cannot_claim_or_decide(
    submit: Callable[..., Proposal], other_team_reviewer: User
) -> None:
    proposal = submit()
    with pytest.raises(NotFound):
        claim(proposal, other_team_reviewer)
    with pytest.raises(NotFound):
        approve(proposal, other_team_reviewer)


def test_a_reviewer_never_decides_a_proposal_they_raised(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit(metadata={"requested_by": "Rita"})
    with pytest.raises(ApplicationError, match="You raised this proposal"):
        claim(proposal, reviewer)


def test_a_decided_proposal_cannot_be_claimed(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    approve(proposal, reviewer)
    with pytest.raises(Conflict, match="no longer waiting"):
        claim(proposal, second_reviewer)


# --- four-eyes ------------------------------------------------------------------------------


@pytest.fixture
def four_eyes(refund_type: ActionType) -> ActionType:
    refund_type.approvals_required = 2
    refund_type.save()
    return refund_type


def test_four_eyes_needs_two_different_reviewers(
    four_eyes: ActionType, submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    after_first = approve(proposal, reviewer)
    assert after_first.state == State.PENDING_REVIEW
    assert AuditEvent.objects.filter(kind="proposal.approval_recorded").count() == 1

    with pytest.raises(ApplicationError, match="already approved"):
        claim(proposal, reviewer)

    assert claim(proposal, second_reviewer).acquired
    final = approve(proposal, second_reviewer)
    assert final.state == State.APPROVED
    assert final.decision_reviewer == second_reviewer
    assert set(final.reviews.values_list("reviewer__username", flat=True)) == {"rita", "sam"}


def test_four_eyes_rejection_by_the_second_reviewer_rejects(
    four_eyes: ActionType, submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    approve(proposal, reviewer)
    claim(proposal, second_reviewer)
    final = services.proposal_decide(
        proposal=proposal, reviewer=second_reviewer, verdict="reject", comment="Not eligible"
    )
    assert final.state == State.REJECTED


@pytest.mark.django_db(transaction=True)
def test_a_double_submitted_approval_decides_once(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    """Two identical POSTs at once (a double click): the row lock serialises them and the
    second gets a clean conflict, never a second review or a 500."""
    proposal = submit()
    claim(proposal, reviewer)
    results: list[str] = []
    barrier = threading.Barrier(2)

    def decide() -> None:
        try:
            barrier.wait()
            approve(proposal, reviewer)
            results.append("won")
        except ApplicationError as exc:
            results.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["invalid-state", "won"]
    assert Proposal.objects.get(pk=proposal.pk).state == State.APPROVED
    assert Review.objects.count() == 1


# --- edit-then-approve ----------------------------------------------------------------------


def test_an_edit_is_validated_against_the_schema(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    with pytest.raises(ApplicationError, match="does not match the schema") as caught:
        approve(proposal, reviewer, edited_payload={"order_id": "ORD-1", "amount": -5})
    assert caught.value.errors[0]["loc"] == ["payload", "amount"]
    assert Proposal.objects.get(pk=proposal.pk).state == State.PENDING_REVIEW


def test_an_approved_edit_becomes_the_final_payload(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    claim(proposal, reviewer)
    edited = {"order_id": "ORD-1", "amount": 10.0, "currency": "EUR"}
    decided = approve(proposal, reviewer, edited_payload=edited, comment="Partial refund")
    assert decided.state == State.APPROVED
    assert decided.final_payload == edited
    assert decided.payload == {"order_id": "ORD-1", "amount": 25.0, "currency": "EUR"}
    assert decided.reviews.get().payload_hash == payload_hash(edited)
    assert AuditEvent.objects.filter(proposal=proposal, kind="proposal.edited").exists()


def amount_rules(
    *, proposal: Proposal, service: Any, action_type: ActionType
) -> rules.AutoDecision:
    """A stand-in rule set, as the rules engine would decide: above 1000 reject, above 100
    review with two approvals, else review."""
    amount = proposal.payload.get("amount", 0)
    if amount > 1000:
        return rules.AutoDecision(outcome="reject", reason="Over the refund limit", rule="cap")
    if amount > 100:
        return rules.AutoDecision(
            outcome="review", reason="Large refund", rule="large", approvals_required=2
        )
    return rules.AutoDecision(outcome="review", reason="Reviewer decides")


def test_an_edit_that_makes_the_rules_stricter_needs_two_approvals(
    monkeypatch: pytest.MonkeyPatch,
    submit: Callable[..., Proposal],
    reviewer: User,
    second_reviewer: User,
) -> None:
    proposal = submit()
    monkeypatch.setattr(decisions, "decide_automatically", amount_rules)
    claim(proposal, reviewer)
    larger = {"order_id": "ORD-1", "amount": 400.0, "currency": "EUR"}
    after_edit = approve(proposal, reviewer, edited_payload=larger, comment="Whole order")
    assert after_edit.state == State.PENDING_REVIEW
    assert after_edit.final_payload == larger
    assert after_edit.required_approvals == 2
    edited = AuditEvent.objects.get(proposal=proposal, kind="proposal.edited")
    assert edited.data["rule"] == "large" and edited.data["approvals_required"] == 2

    claim(proposal, second_reviewer)
    final = approve(after_edit, second_reviewer)
    assert final.state == State.APPROVED
    assert final.effective_payload == larger


def test_an_edit_the_rules_would_reject_is_refused(
    monkeypatch: pytest.MonkeyPatch, submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    monkeypatch.setattr(decisions, "decide_automatically", amount_rules)
    claim(proposal, reviewer)
    with pytest.raises(ApplicationError, match="rules reject the edited payload: Over the refund"):
        approve(proposal, reviewer, edited_payload={"order_id": "ORD-1", "amount": 5000.0})
    assert Proposal.objects.get(pk=proposal.pk).final_payload is None


def test_an_edit_after_a_first_approval_voids_it(
    four_eyes: ActionType,
    submit: Callable[..., Proposal],
    reviewer: User,
    second_reviewer: User,
) -> None:
    """Approvals are bound to a payload: the first reviewer approved 25.0, not the edit."""
    proposal = submit()
    claim(proposal, reviewer)
    approve(proposal, reviewer)
    claim(proposal, second_reviewer)
    edited = approve(
        proposal,
        second_reviewer,
        edited_payload={"order_id": "ORD-1", "amount": 20.0, "currency": "EUR"},
    )
    assert edited.state == State.PENDING_REVIEW
    assert len(Proposal.objects.get(pk=proposal.pk).current_approvals) == 1


def test_comments_go_to_the_history(submit: Callable[..., Proposal], reviewer: User) -> None:
    proposal = submit()
    services.proposal_comment(proposal_id=proposal.pk, reviewer=reviewer, text="Asked the shop")
    event = AuditEvent.objects.get(proposal=proposal, kind="proposal.commented")
    assert event.data == {"comment": "Asked the shop"} and event.actor == "user:rita"
    with pytest.raises(ApplicationError):
        services.proposal_comment(proposal_id=proposal.pk, reviewer=reviewer, text="  ")


def test_a_review_rule_can_ask_for_two_reviewers(
    make_rule: Callable[..., Any],
    refund_type: ActionType,
    submit: Callable[..., Proposal],
    reviewer: User,
    second_reviewer: User,
) -> None:
    make_rule(
        "big-refunds-four-eyes",
        action_type=refund_type,
        when="payload.amount > 500.0",
        outcome="review",
        approvals_required=2,
    )
    small = submit()  # 25.0: no rule matches, the type's one approval
    big = submit(payload={"order_id": "ORD-2", "amount": 900.0, "currency": "EUR"})
    assert (small.approvals_needed, big.approvals_needed) == (1, 2)
    entry = next(e for e in big.rule_trace if e["rule"] == "big-refunds-four-eyes")
    assert (entry["result"], entry["approvals_required"]) == ("matched", 2)
    page = logged_in(reviewer).get(reverse("approvals:proposal", args=[big.pk])).content.decode()
    assert "asks 2 reviewers' approvals" in page  # in the trace, beside the header's tag

    claim(big, reviewer)
    assert approve(big, reviewer).state == State.PENDING_REVIEW
    claim(big, second_reviewer)
    assert approve(big, second_reviewer).state == State.APPROVED
    claim(small, reviewer)
    assert approve(small, reviewer).state == State.APPROVED


@pytest.mark.parametrize("outcome", ["approve", "reject"])
def test_only_a_review_rule_may_ask_for_two_reviewers(
    make_rule: Callable[..., Any], refund_type: ActionType, outcome: str
) -> None:
    with pytest.raises(ApplicationError, match="approvals_required") as refused:
        make_rule("r", action_type=refund_type, outcome=outcome, approvals_required=2)
    assert refused.value.errors == [
        {
            "loc": ["approvals_required"],
            "msg": "1, or 2 with the outcome review (reviewers approve; a rule cannot)",
        }
    ]
