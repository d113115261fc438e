"""The queue's selector: visibility, order and keyset pagination."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import selectors
from approvals.models import Claim, Proposal, Review
from tests.conftest import logged_in
from tests.plans import copy_proposal, explain, scans

Filters = selectors.QueueFilters


def walk(user: User, filters: Filters, limit: int) -> list[Proposal]:
    seen: list[Proposal] = []
    cursor = ""
    while True:
        page = selectors.queue_for_reviewer(
            user=user, filters=Filters(**{**filters.__dict__, "after": cursor}), limit=limit
        )
        seen += page.rows
        if not page.next_cursor:
            return seen
        cursor = page.next_cursor


def test_keyset_pages_cover_every_row_once_in_order(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    base = timezone.now() - timedelta(hours=3)
    made = [submit(summary=f"p{i}") for i in range(7)]
    # Three share one instant: the id breaks the tie and no row is lost or repeated.
    for i, p in enumerate(made):
        Proposal.objects.filter(pk=p.pk).update(created_at=base + timedelta(minutes=min(i, 3)))
    oldest_first = walk(reviewer, Filters(), limit=2)
    newest_first = walk(reviewer, Filters(newest_first=True), limit=3)
    assert sorted(p.pk for p in oldest_first) == sorted(p.pk for p in made)
    assert len(oldest_first) == 7 and len(newest_first) == 7
    assert [p.pk for p in newest_first] == [p.pk for p in reversed(oldest_first)]
    keys = [(p.created_at, p.pk) for p in oldest_first]
    assert keys == sorted(keys)


def test_the_queue_hides_what_the_reviewer_raised_but_keeps_the_rest(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    submit(summary="mine", metadata={"requested_by": "rita"})
    submit(summary="other", metadata={"requested_by": "someone"})
    submit(summary="plain")
    rita = {p.summary for p in selectors.queue_for_reviewer(user=reviewer, filters=Filters()).rows}
    sam = {
        p.summary
        for p in selectors.queue_for_reviewer(user=second_reviewer, filters=Filters()).rows
    }
    assert rita == {"other", "plain"} and sam == {"mine", "other", "plain"}


def test_a_bad_cursor_starts_from_the_top(submit: Callable[..., Proposal], reviewer: User) -> None:
    submit()
    page = selectors.queue_for_reviewer(user=reviewer, filters=Filters(after="garbage~x"))
    assert len(page.rows) == 1


def test_decided_proposals_leave_the_queue(submit: Callable[..., Proposal], reviewer: User) -> None:
    p = submit()
    Proposal.objects.filter(pk=p.pk).update(state=Proposal.State.REJECTED)
    assert selectors.queue_for_reviewer(user=reviewer, filters=Filters()).rows == []


def test_the_page_reads_as_many_statements_for_every_shape_of_row(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    # A queue row reads only the columns it shows (selectors.QUEUE_ROW_FIELDS): one it needs
    # and does not read would cost a statement per row.
    client = logged_in(reviewer)
    submit(summary="plain")
    with CaptureQueriesContext(connection) as one_row:
        client.get("/")
    now = timezone.now()
    claimed = submit(summary="claimed")
    Claim.objects.create(
        proposal=claimed, reviewer=second_reviewer, expires_at=now + timedelta(minutes=5)
    )
    four_eyes = submit(summary="four-eyes")
    edited = submit(summary="edited")
    for p in (four_eyes, edited):
        Review.objects.create(
            proposal=p, reviewer=second_reviewer, verdict="approve", payload_hash=p.payload_hash
        )
    Proposal.objects.filter(pk__in=[four_eyes.pk, edited.pk]).update(required_approvals=2)
    Proposal.objects.filter(pk=edited.pk).update(final_payload={"order_id": "ORD-1", "amount": 1})
    Proposal.objects.filter(pk=claimed.pk).update(review_due_at=now + timedelta(hours=2))
    Proposal.objects.filter(summary="plain").update(escalated_at=now)
    with CaptureQueriesContext(connection) as every_shape:
        page = client.get("/").content.decode()
    assert "being reviewed by sam" in page and "SLA breached" in page and "due in" in page
    assert page.count("1 of 2 approvals") == 1 and page.count("0 of 2 approvals") == 1
    # The two four-eyes rows' reviews: one statement for both.
    assert len(every_shape) == len(one_row) + 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner")
@pytest.mark.parametrize(
    "filters",
    [Filters(), Filters(newest_first=True), Filters(action_type="refund.issue")],
    ids=["oldest-first", "newest-first", "one-type"],
)
def test_the_queue_reads_the_pending_rows_alone_when_they_pile_up_at_the_end(
    submit: Callable[..., Proposal], reviewer: User, filters: Filters
) -> None:
    """Pending proposals are the newest rows, and when they pile up (a sixth of the table,
    analysed) the planner must still read them through the pending-only index: the plain
    created_at index, priced as if pending rows were spread evenly over time, walks every
    decided row before the first pending one (on 1.33 million proposals with 230,000 pending:
    567 ms, 870,017 rows read and discarded; bench/README.md, growth.py --only pile)."""
    template = submit(summary="template")
    copy_proposal(  # six months of decided proposals, oldest first as they were written
        template,
        50_000,
        state="'rejected'",
        decision_outcome="'reject'",
        decided_by="'rule'",
        created_at="now() - interval '180 days' + g * interval '5 minutes'",
        decided_at="now() - interval '180 days' + g * interval '5 minutes'",
        updated_at="now() - interval '180 days' + g * interval '5 minutes'",
    )
    copy_proposal(template, 10_000, created_at="now() - interval '1 hour' + g * interval '300 ms'")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_proposal")
    with CaptureQueriesContext(connection) as queries:
        page = selectors.queue_for_reviewer(user=reviewer, filters=filters)
    assert len(page.rows) == 50
    (statement,) = [q["sql"] for q in queries if 'FROM "approvals_proposal"' in q["sql"]]
    read = [index for _, index in scans(explain(statement), "approvals_proposal")]
    assert read == ["proposal_pending_arrival"]
