"""The queue's selector: visibility, order and keyset pagination."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from approvals import selectors
from approvals.models import Proposal

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
