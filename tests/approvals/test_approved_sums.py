"""The per-minute approved sums (migration 0010) behind `stats.approved_sum`: kept by triggers in
the decision's transaction, equal to summing the proposals themselves whatever happens to them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Case, F, When
from django.utils import timezone

from approvals import services, velocity
from approvals.models import ActionType, ApprovedSum, Proposal, Service
from tests.conftest import ServiceClient, decide_as, refund_body

State = Proposal.State


def _raw(
    service: Service, action_type: ActionType, path: str, since: datetime, until: datetime
) -> float:
    """The sum over the proposals themselves: what the buckets must agree with."""
    with connection.cursor() as cursor:
        cursor.execute(
            velocity._RAW_SUM,
            {
                "path": path.split(".")[1:],
                "service": service.pk,
                "type": action_type.pk,
                "states": list(velocity._STATES["approve"]),
                "since": since,
                "until": until,
            },
        )
        return float(cursor.fetchone()[0])


def _sum(
    service: Service,
    action_type: ActionType,
    window: str = "24h",
    path: str = "payload.amount",
    as_of: datetime | None = None,
) -> float:
    return velocity.approved_sum(
        service_id=service.pk,
        action_type_id=action_type.pk,
        field_path=path,
        window=window,
        as_of=as_of or timezone.now(),
    )


def _later(service: Service, action_type: ActionType) -> float:
    """The 24 h sum two minutes from now: what was decided just now is in a whole minute, read
    from the sums rather than from the proposals at the window's edge."""
    return _sum(service, action_type, as_of=timezone.now() + timedelta(minutes=2))


def _decided(
    service: Service,
    action_type: ActionType,
    amount: Any,
    at: datetime,
    *,
    state: str = State.APPROVED,
    outcome: str = "approve",
    payload: Any = None,
) -> Proposal:
    return Proposal.objects.create(
        service=service,
        action_type=action_type,
        payload=payload if payload is not None else {"order_id": "ORD-1", "amount": amount},
        payload_hash="x",
        confidence=0.9,
        summary="history",
        state=state,
        decision_outcome=outcome,
        decided_by="rule",
        decided_at=at,
        created_at=at,
    )


def _buckets() -> dict[tuple[int, int, str, datetime], Decimal]:
    return {
        (b.service_id, b.action_type_id, b.path, b.minute): b.total
        for b in ApprovedSum.objects.all()
        if b.total != 0
    }


@pytest.mark.django_db
def test_whole_minutes_and_both_edges_agree_with_the_proposals(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    now = datetime(2026, 11, 29, 12, 30, 40, 500000, tzinfo=UTC)
    # Spread over 30 hours, with some in the partial minutes at both ends of a 24 h window.
    offsets = [1, 20, 39, 41, 60, 61, 3600, 7200.5, 86399, 86400, 86400 - 25, 86440, 100000]
    for index, seconds in enumerate(offsets):
        _decided(shop.service, refund_type, 10.25 + index, now - timedelta(seconds=seconds))
    for window in ("24h", "1h", "2m", "30s", "30h"):
        since = now - velocity.parse_duration(window)
        expected = _raw(shop.service, refund_type, "payload.amount", since, now)
        assert _sum(shop.service, refund_type, window, as_of=now) == pytest.approx(expected)
    assert expected > 0
    # The whole minutes are read from the sums, not from the proposals.
    ApprovedSum.objects.filter(
        minute=now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    ).update(total=F("total") + 1000)
    assert _sum(shop.service, refund_type, "1h", as_of=now) == pytest.approx(
        _raw(shop.service, refund_type, "payload.amount", now - timedelta(hours=1), now) + 1000
    )
    ApprovedSum.objects.update(total=F("total") - Case(When(total__gte=1000, then=1000), default=0))
    # Each approval is in the minute it was decided in (UTC), once.
    total = sum(v for (_, _, path, _), v in _buckets().items() if path == "amount")
    assert total == sum(Decimal(str(10.25 + i)) for i in range(len(offsets)))


@pytest.mark.django_db
def test_only_approvals_count_and_a_later_change_moves_the_contribution(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    now = timezone.now()
    approved = _decided(shop.service, refund_type, 40.0, now - timedelta(minutes=5))
    _decided(
        shop.service,
        refund_type,
        1000.0,
        now - timedelta(minutes=5),
        state=State.REJECTED,
        outcome="reject",
    )
    _decided(
        shop.service,
        refund_type,
        500.0,
        now - timedelta(minutes=5),
        state=State.PENDING_REVIEW,
        outcome="",
    )
    assert _sum(shop.service, refund_type) == 40.0

    # approved → executing → executed (or failed) keeps counting, once.
    for state in (State.EXECUTING, State.EXECUTED):
        Proposal.objects.filter(pk=approved.pk).update(state=state)
        assert _sum(shop.service, refund_type) == 40.0
    # A payload corrected afterwards counts with its new amount, a move in time in its new minute.
    Proposal.objects.filter(pk=approved.pk).update(final_payload={"amount": 12.5})
    assert _sum(shop.service, refund_type) == 12.5
    Proposal.objects.filter(pk=approved.pk).update(decided_at=now - timedelta(hours=30))
    assert _sum(shop.service, refund_type) == 0.0
    assert _sum(shop.service, refund_type, "48h") == 12.5
    # A state that does not count takes the contribution back.
    Proposal.objects.filter(pk=approved.pk).update(state=State.CANCELLED)
    assert _sum(shop.service, refund_type, "48h") == 0.0
    assert _buckets() == {}


@pytest.mark.django_db
def test_a_reviewers_edited_approval_counts_the_edit(
    submit: Callable[..., Proposal], reviewer: User, shop: ServiceClient, refund_type: ActionType
) -> None:
    refund_type.reviewer_group = reviewer.groups.get()
    refund_type.save()
    kept = submit(payload={"order_id": "ORD-1", "amount": 70.0, "currency": "EUR"})
    edited = submit(payload={"order_id": "ORD-2", "amount": 90.0, "currency": "EUR"})
    rejected = submit(payload={"order_id": "ORD-3", "amount": 900.0, "currency": "EUR"})
    assert kept.state == State.PENDING_REVIEW
    assert _later(shop.service, refund_type) == 0.0
    decide_as(reviewer, kept)
    services.claim_acquire(proposal_id=edited.pk, reviewer=reviewer)
    services.proposal_decide(
        proposal=edited,
        reviewer=reviewer,
        verdict="approve",
        edited_payload={"order_id": "ORD-2", "amount": 15.0, "currency": "EUR"},
    )
    decide_as(reviewer, rejected, "reject", comment="not ours")
    assert Proposal.objects.get(pk=edited.pk).state == State.APPROVED
    assert _later(shop.service, refund_type) == 85.0
    services.proposal_report_result(service=shop.service, proposal_id=kept.pk, succeeded=False)
    assert _later(shop.service, refund_type) == 85.0  # failed execution: still approved spend


@pytest.mark.django_db
def test_one_services_approvals_never_count_for_another(
    shop: ServiceClient, other_shop: ServiceClient, refund_type: ActionType, email_type: ActionType
) -> None:
    at = timezone.now() - timedelta(minutes=3)
    _decided(shop.service, refund_type, 30.0, at)
    _decided(other_shop.service, refund_type, 999.0, at)  # same type, same minute
    _decided(shop.service, email_type, 7.0, at)  # same service, another type
    assert _later(shop.service, refund_type) == 30.0
    assert _sum(other_shop.service, refund_type) == 999.0
    assert _sum(shop.service, email_type) == 7.0


@pytest.mark.django_db
def test_paths_the_minutes_do_not_keep_are_summed_from_the_proposals(
    shop: ServiceClient, refund_type: ActionType
) -> None:
    at = timezone.now() - timedelta(minutes=3)
    many = {f"f{i}": i for i in range(80)} | {"amount": 5}  # more fields than are kept
    _decided(shop.service, refund_type, None, at, payload=many)
    _decided(shop.service, refund_type, 4.0, at)
    _decided(
        shop.service,
        refund_type,
        None,
        at,
        payload={"items": [{"amount": 3}], "refund": {"amount": 2}},
    )
    _decided(
        shop.service, refund_type, None, at, payload={"a.b": 100, "a": {"b": 1}, "amount": "12"}
    )
    assert _later(shop.service, refund_type) == 9.0  # the string "12" counts 0
    assert _sum(shop.service, refund_type, path="payload.f79") == 79.0
    assert _sum(shop.service, refund_type, path="payload.items.0.amount") == 3.0
    assert _sum(shop.service, refund_type, path="payload.refund.amount") == 2.0
    assert _sum(shop.service, refund_type, path="payload.a.b") == 1.0  # never the key "a.b"
    assert ("amount" in {p for (_, _, p, _) in _buckets()}) and (
        "" in {p for (_, _, p, _) in _buckets()}
    )


@pytest.mark.django_db
def test_the_rebuild_gives_what_the_triggers_kept(
    shop: ServiceClient, other_shop: ServiceClient, refund_type: ActionType
) -> None:
    now = timezone.now()
    for index in range(40):
        service = (shop, other_shop)[index % 2].service
        outcome = ("approve", "approve", "reject")[index % 3]
        state = State.APPROVED if outcome == "approve" else State.REJECTED
        p = _decided(
            service,
            refund_type,
            index * 1.5,
            now - timedelta(minutes=index * 7),
            state=state,
            outcome=outcome,
        )
        if index % 5 == 0:
            Proposal.objects.filter(pk=p.pk).update(final_payload={"amount": 1, "fee": 0.5})
    _decided(shop.service, refund_type, None, now, payload={f"f{i}": 1 for i in range(70)})
    kept = _buckets()
    with connection.cursor() as cursor:
        cursor.execute("SELECT gatehouse_approved_sum_rebuild()")
    assert _buckets() == kept
    assert len(kept) > 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_in_one_minute_all_count(
    shop: ServiceClient, refund_type: ActionType, reviewer: User, second_reviewer: User
) -> None:
    refund_type.reviewer_group = reviewer.groups.get()
    refund_type.save()
    amounts = [10.0 + i for i in range(8)]
    pending = [
        services.proposal_submit(
            service=shop.service,
            data=refund_body(payload={"order_id": f"ORD-{i}", "amount": a, "currency": "EUR"}),
        ).proposal
        for i, a in enumerate(amounts)
    ]
    barrier = threading.Barrier(len(pending))
    errors: list[BaseException] = []

    def approve(index: int) -> None:
        try:
            who = (reviewer, second_reviewer)[index % 2]
            barrier.wait(timeout=10)
            decide_as(who, Proposal.objects.get(pk=pending[index].pk))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(i,)) for i in range(len(pending))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert Proposal.objects.filter(state=State.APPROVED).count() == len(amounts)
    assert _later(shop.service, refund_type) == sum(amounts)
    assert _sum(shop.service, refund_type) == sum(amounts)  # at the edge: from the proposals
