from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from approvals import celcheck, locks, services
from approvals.models import ActionType, Proposal, Rule
from tests.conftest import ServiceClient, refund_body

CAP = "stats.approved_sum('payload.amount', '24h') + payload.amount <= 100.0"


@pytest.mark.django_db(transaction=True)
def test_concurrent_proposals_cannot_overrun_a_spend_cap(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    make_rule("within-daily-budget", action_type=refund_type, when=CAP, outcome="approve")
    threads_count, amount = 12, 30.0  # the cap fits exactly 3
    barrier = threading.Barrier(threads_count)
    states: list[str] = []
    errors: list[BaseException] = []

    def submit(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            data = refund_body(payload={"order_id": f"ORD-{index}", "amount": amount})
            result = services.proposal_submit(service=shop.service, data=data)
            states.append(result.proposal.state)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(states) == ["approved"] * 3 + ["pending_review"] * 9
    approved = Proposal.objects.filter(state="approved")
    assert sum(p.payload["amount"] for p in approved) == 90.0


def _history(service: Any, action_type: ActionType, *rows: tuple[str, str, float, int]) -> None:
    """Rows of (decision_outcome, decided_by, amount, hours ago)."""
    now = timezone.now()
    for index, (outcome, by, amount, hours) in enumerate(rows):
        at = now - timedelta(hours=hours)
        state = {"approve": "approved", "reject": "rejected", "": "pending_review"}[outcome]
        Proposal.objects.create(
            service=service,
            action_type=action_type,
            payload={"order_id": f"ORD-{index}", "amount": amount},
            payload_hash="x",
            confidence=0.9,
            summary=f"history {index}",
            state=state,
            decision_outcome=outcome,
            decided_by=by,
            decided_at=at if outcome else None,
            created_at=at,
        )


@pytest.mark.parametrize(
    ("when", "state"),
    [
        ("stats.count('approve', '24h') == 2", "approved"),  # the one 30 h ago is outside
        ("stats.count('approve', '48h') == 3", "approved"),
        ("stats.count('reject', '24h') == 1", "approved"),
        ("stats.count('review', '24h') == 2", "approved"),  # the pending one + reviewer-decided
        ("stats.count('any', '24h') == 4", "approved"),
        ("stats.approved_sum('payload.amount', '24h') == 30.0", "approved"),
        ("stats.approved_sum('payload.amount', '48h') == 130.0", "approved"),
        ("stats.approved_sum('payload.missing', '24h') == 0.0", "approved"),
    ],
)
def test_stats_count_the_same_service_and_type(
    shop: ServiceClient,
    other_shop: ServiceClient,
    make_rule: Callable[..., Rule],
    refund_type: ActionType,
    when: str,
    state: str,
) -> None:
    _history(
        shop.service,
        refund_type,
        ("approve", "rule", 10.0, 1),
        ("approve", "reviewer", 20.0, 2),
        ("reject", "rule", 500.0, 3),
        ("", "", 40.0, 4),
        ("approve", "rule", 100.0, 30),
    )
    _history(other_shop.service, refund_type, ("approve", "rule", 999.0, 1))
    make_rule("stat", action_type=refund_type, when=when)
    body = shop.post_json("/api/v1/proposals", refund_body()).json()
    assert body["state"] == state, body


def test_a_reviewers_edit_counts_in_the_approved_sum(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    _history(shop.service, refund_type, ("approve", "reviewer", 80.0, 1))
    Proposal.objects.update(final_payload={"order_id": "ORD-0", "amount": 5.0})
    make_rule("sum", action_type=refund_type, when=CAP.replace("<= 100.0", "== 30.0"))
    assert shop.post_json("/api/v1/proposals", refund_body()).json()["state"] == "approved"


def _wait_for_a_lock_waiter() -> None:
    """Until another backend waits for an advisory lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.01)
    raise AssertionError("no submit waited for the lock")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks")
@pytest.mark.django_db(transaction=True)
def test_an_approval_committed_while_a_submit_waits_for_the_lock_counts(
    shop: ServiceClient, make_rule: Callable[..., Rule], refund_type: ActionType
) -> None:
    """The submit reads its sum with the lock, in one round trip, from a time taken before the
    lock: an approval decided later than that time, committed while it waited, still counts."""
    make_rule("within-daily-budget", action_type=refund_type, when=CAP, outcome="approve")
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            data = refund_body(payload={"order_id": "ORD-late", "amount": 30.0})
            outcome["state"] = services.proposal_submit(
                service=shop.service, data=data
            ).proposal.state
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=submit)
    with transaction.atomic():
        locks.advisory_xact_lock("rules-stats", shop.service.pk, refund_type.pk)
        thread.start()
        _wait_for_a_lock_waiter()
        _history(shop.service, refund_type, ("approve", "rule", 80.0, 0))  # decided just now
    thread.join(timeout=30)
    assert outcome == {"state": "pending_review"}  # 80 + 30 is over the cap of 100


@pytest.mark.parametrize(
    ("when", "calls"),
    [
        (CAP, {("approved_sum", "payload.amount", "24h")}),
        (
            "stats.count('approve', \"1h\") > 3 || stats.approved_sum('payload.' + 'x', '1h') > 1.0",
            {("count", "approve", "1h")},  # a computed argument is read when the rule runs
        ),
        ("stats.count('a\\x70prove', '1h') > 3", set()),  # an escape: as the rule spells it
        ("payload.amount > 3.0", set()),
    ],
)
def test_a_rule_names_the_figures_it_reads_with_literal_arguments(
    when: str, calls: set[tuple[str, str, str]]
) -> None:
    assert celcheck.stats_calls(when) == calls
