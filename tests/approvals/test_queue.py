"""The queue's selector: visibility, order and keyset pagination."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import selectors
from approvals.models import Claim, Proposal, Review
from tests.conftest import logged_in

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
