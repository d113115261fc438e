"""Review SLAs: a reminder at 80%, escalation when breached, marked and sortable on the queue;
a reviewer may extend the review expiry once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.core import mail
from django.utils import timezone
from prometheus_client import REGISTRY

from approvals import services
from approvals.models import AuditEvent, Proposal
from notify.models import EmailPreference, GroupChannel
from tests.conftest import logged_in
from tests.notify.conftest import LEADS_CHANNEL, SUPPORT_CHANNEL
from tests.notify.fake_slack import FakeSlack

pytestmark = pytest.mark.django_db
Submit = Callable[..., Proposal]


@pytest.fixture
def with_sla(refund_type: Any, settings: Any) -> Any:
    leads = Group.objects.create(name="leads")
    GroupChannel.objects.create(group=leads, slack_channel=LEADS_CHANNEL)
    refund_type.review_sla = timedelta(minutes=30)
    refund_type.escalation_group = leads
    refund_type.save()
    settings.NOTIFY_EMAIL = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return refund_type


def test_a_reminder_at_80_percent_and_escalation_on_breach(
    slack_on: FakeSlack,
    support_channel: Any,
    with_sla: Any,
    submit: Submit,
    committed: Any,
    reviewer: User,
) -> None:
    reviewer.email = "rita@example.com"
    reviewer.save()
    EmailPreference.objects.create(user=reviewer, mode="immediate")
    lead = User.objects.create_user("lea", email="lea@example.com")
    lead.groups.add(with_sla.escalation_group)
    EmailPreference.objects.create(user=lead, mode="immediate")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        proposal = committed(submit)
        assert proposal.review_due_at == start + timedelta(minutes=30)
        (card,) = slack_on.of("chat.postMessage")
        assert card["channel"] == SUPPORT_CHANNEL

        clock.shift(timedelta(minutes=23, seconds=59))
        assert committed(services.proposals_check_sla) == (0, 0)
        clock.shift(timedelta(seconds=1))
        assert committed(services.proposals_check_sla) == (1, 0)
        reminder = slack_on.of("chat.postMessage")[-1]
        assert reminder["channel"] == SUPPORT_CHANNEL and reminder["thread_ts"]
        assert "80% of the review SLA" in reminder["text"]
        (email,) = mail.outbox
        assert email.to == ["rita@example.com"] and email.subject.startswith("Review due soon")
        assert committed(services.proposals_check_sla) == (0, 0)
        assert len(slack_on.of("chat.postMessage")) == 2

        clock.shift(timedelta(minutes=6))
        breaches = {"action_type": proposal.action_type.key}
        counted = REGISTRY.get_sample_value("gatehouse_review_sla_breaches_total", breaches) or 0
        assert committed(services.proposals_check_sla) == (0, 1)
        assert REGISTRY.get_sample_value("gatehouse_review_sla_breaches_total", breaches) == (
            counted + 1
        )
        escalated = slack_on.of("chat.postMessage")[-1]
        assert escalated["channel"] == LEADS_CHANNEL
        assert "Escalated" in json.dumps(escalated["blocks"])
        assert "review SLA breached" in json.dumps(slack_on.of("chat.update")[-1]["blocks"])
        assert [m.to for m in mail.outbox[1:]] == [["lea@example.com"]]
        assert mail.outbox[1].subject.startswith("Escalated, review SLA breached")
        assert committed(services.proposals_check_sla) == (0, 0)

    proposal.refresh_from_db()
    assert proposal.sla_reminded_at == start + timedelta(minutes=24)
    assert proposal.escalated_at == start + timedelta(minutes=30)
    breach = AuditEvent.objects.get(proposal=proposal, kind="proposal.sla_breached")
    assert breach.data == {
        "due_at": (start + timedelta(minutes=30)).isoformat(),
        "escalation_group": "leads",
    }
    queue = logged_in(reviewer).get("/").content.decode()
    assert "SLA breached" in queue


def test_a_decided_proposal_is_neither_reminded_nor_escalated(
    with_sla: Any, submit: Submit, reviewer: User
) -> None:
    from tests.conftest import decide_as

    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        proposal = submit()
        decide_as(reviewer, proposal)
        clock.shift(timedelta(hours=1))
        assert services.proposals_check_sla() == (0, 0)


def test_the_queue_sorts_by_due_time(
    with_sla: Any, submit: Submit, reviewer: User, make_service: Any
) -> None:
    from approvals.models import ActionType

    slow = ActionType.objects.create(
        key="refund.slow",
        title="Slow refund",
        reviewer_group=Group.objects.get(name="support"),
        review_ttl=timedelta(hours=2),
    )
    other = make_service("other", slow)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        no_sla = services.proposal_submit(
            service=other.service,
            data={
                "action_type": "refund.slow",
                "payload": {},
                "confidence": 0.5,
                "summary": "Two hours",
            },
        ).proposal
        clock.shift(timedelta(minutes=1))
        due_soon = submit(summary="Thirty minutes")
        page = logged_in(reviewer)
        oldest = page.get("/").content.decode()
        assert oldest.index("Two hours") < oldest.index("Thirty minutes")
        by_due = page.get("/?order=due").content.decode()
        assert by_due.index("Thirty minutes") < by_due.index("Two hours")
        assert "due in" in by_due and "expires in" in by_due
        # The cursor pages in due order too.
        from approvals import selectors

        filters = selectors.QueueFilters(due_first=True)
        first = selectors.queue_for_reviewer(user=reviewer, filters=filters, limit=1)
        assert [p.pk for p in first.rows] == [due_soon.pk]
        rest = selectors.queue_for_reviewer(
            user=reviewer,
            filters=selectors.QueueFilters(due_first=True, after=first.next_cursor),
            limit=1,
        )
        assert [p.pk for p in rest.rows] == [no_sla.pk]


def test_a_reviewer_may_extend_the_expiry_once(
    refund_type: Any,
    submit: Submit,
    reviewer: User,
    second_reviewer: User,
    other_team_reviewer: User,
) -> None:
    proposal = submit()
    expires = proposal.expires_at
    page = logged_in(reviewer)
    assert (
        logged_in(other_team_reviewer).post(f"/proposals/{proposal.pk}/extend/").status_code == 404
    )
    assert page.get(f"/proposals/{proposal.pk}/extend/").status_code == 405
    assert b"Extend expiry" in page.get(f"/proposals/{proposal.pk}/").content
    response = page.post(f"/proposals/{proposal.pk}/extend/")
    assert response.status_code == 302
    proposal.refresh_from_db()
    assert proposal.expires_at == expires + refund_type.review_ttl
    event = AuditEvent.objects.get(proposal=proposal, kind="proposal.expiry_extended")
    assert event.actor == "user:rita" and event.data["to"] == proposal.expires_at.isoformat()
    again = logged_in(second_reviewer).post(f"/proposals/{proposal.pk}/extend/")
    assert again.status_code == 409 and b"extended once already" in again.content
    proposal.refresh_from_db()
    assert proposal.expires_at == expires + refund_type.review_ttl
    assert b"Extend expiry" not in page.get(f"/proposals/{proposal.pk}/").content


def test_the_reviewer_who_raised_it_may_not_extend_it(submit: Submit, reviewer: User) -> None:
    proposal = submit(metadata={"requested_by": "rita"})
    response = logged_in(reviewer).post(f"/proposals/{proposal.pk}/extend/")
    assert response.status_code == 403
    proposal.refresh_from_db()
    assert proposal.expiry_extended_at is None
