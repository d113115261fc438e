from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction

from approvals import services, statemachine
from approvals.models import AuditEvent, Proposal
from foundation.errors import Conflict
from tests.conftest import ServiceClient, refund_body


@pytest.fixture
def event(shop: ServiceClient) -> AuditEvent:
    shop.post_json("/api/v1/proposals", refund_body())
    return AuditEvent.objects.filter(proposal__isnull=False).first()  # type: ignore[return-value]


def enforce_append_only() -> None:
    # The test session lifts the refusal to empty tables between tests; put it back.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL gatehouse.audit_maintenance = 'off'")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE approvals_auditevent SET actor = 'someone else'",
        "DELETE FROM approvals_auditevent",
        pytest.param(
            "TRUNCATE approvals_auditevent CASCADE",
            # TRUNCATE cannot run beside the deferred constraint checks of a test transaction.
            marks=pytest.mark.django_db(transaction=True),
        ),
    ],
)
def test_the_audit_trail_refuses_rewrites(event: AuditEvent, statement: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        enforce_append_only()
        with connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEvent.objects.get(pk=event.pk).actor == event.actor


def test_the_orm_cannot_edit_or_delete_an_event(event: AuditEvent) -> None:
    actor = event.actor
    with pytest.raises(DatabaseError), transaction.atomic():
        enforce_append_only()
        event.actor = "forged"
        event.save()
    with pytest.raises(DatabaseError), transaction.atomic():
        enforce_append_only()
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.filter(pk=event.pk, actor=actor).exists()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_transitions_of_one_proposal_have_one_winner(
    shop: ServiceClient, reviewer: User
) -> None:
    created = shop.post_json("/api/v1/proposals", refund_body()).json()
    proposal = Proposal.objects.get(pk=created["id"])
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(name: str, action: object) -> None:
        barrier.wait()
        try:
            action()  # type: ignore[operator]
            outcomes[name] = "won"
        except Conflict:
            outcomes[name] = "lost"
        finally:
            connection.close()

    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    threads = [
        threading.Thread(
            target=run,
            args=(
                "cancel",
                lambda: services.proposal_cancel(service=shop.service, proposal_id=proposal.pk),
            ),
        ),
        threading.Thread(
            target=run,
            args=(
                "approve",
                lambda: services.proposal_decide(
                    proposal=proposal, reviewer=reviewer, verdict="approve"
                ),
            ),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes.values()) == ["lost", "won"], outcomes
    proposal.refresh_from_db()
    winner = next(name for name, result in outcomes.items() if result == "won")
    assert proposal.state == {"cancel": "cancelled", "approve": "approved"}[winner]
    decisive = AuditEvent.objects.filter(
        proposal=proposal, from_state="pending_review"
    ).values_list("to_state", flat=True)
    assert list(decisive) == [proposal.state]
    assert proposal.reviews.count() == (1 if winner == "approve" else 0)


def test_many_racing_compare_and_sets_have_exactly_one_winner(shop: ServiceClient) -> None:
    created = shop.post_json("/api/v1/proposals", refund_body()).json()
    results = [
        statemachine.transition(
            proposal_id=created["id"],
            from_states=["pending_review"],
            to_state=state,
            kind=f"proposal.{state}",
            actor="test",
        )
        for state in ("cancelled", "expired", "cancelled")
    ]
    assert results == [True, False, False]
    assert Proposal.objects.get(pk=created["id"]).state == "cancelled"
