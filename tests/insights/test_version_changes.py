"""The chart's version markers (selectors.version_changes), read by skipping through the index
proposal_type_versions rather than grouping every proposal of the type (issue 16)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from approvals.models import ActionType, Proposal
from insights import selectors


def test_versions_first_seen_since_a_moment_and_never_the_very_first(
    plant: Callable[..., list[Proposal]], refund_type: ActionType, email_type: ActionType
) -> None:
    now = timezone.now()
    day = timedelta(days=1)
    plant(2, "agreed", at=now - 10 * day, model="m1", prompt_version="p1")  # the very first
    plant(1, "agreed", at=now - 9 * day, model="m1", prompt_version="p2")  # before `since`
    plant(3, "agreed", at=now - 2 * day, model="m1", prompt_version="p3")
    plant(1, "agreed", at=now - 1 * day, model="m1", prompt_version="p3")  # not first: no marker
    plant(1, "agreed", at=now - 1 * day, model="m2", prompt_version="p1")
    plant(1, "agreed", at=now - 3 * day, model="m1", prompt_version="p1")  # seen long before
    plant(1, "agreed", at=now - 5 * day, model="m9", prompt_version="p9", action_type=email_type)

    changes = selectors.version_changes(action_type=refund_type, since=now - 4 * day)

    assert [(c["model"], c["prompt"]) for c in changes] == [("m1", "p3"), ("m2", "p1")]
    assert changes[0]["at"] == (now - 2 * day).isoformat()
    assert selectors.version_changes(action_type=email_type, since=now - 30 * day) == []
