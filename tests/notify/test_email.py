"""Email: at once for high risk, digests, nothing; through Django's mail backend and once
through a real SMTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group, User
from django.core import mail
from django.utils import timezone

from approvals.models import Proposal
from notify import services as notify_services
from notify.models import EmailPreference
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db
Submit = Callable[..., Proposal]


@pytest.fixture
def email_on(settings: Any) -> Any:
    settings.NOTIFY_EMAIL = True
    settings.SITE_URL = "https://gatehouse.example"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return settings


def wants(user: User, mode: str, email: str, minutes: int = 60) -> User:
    user.email = email
    user.save()
    EmailPreference.objects.create(user=user, mode=mode, digest_minutes=minutes)
    return user


@pytest.fixture
def high_risk(refund_type: Any) -> Any:
    refund_type.risk = "high"
    refund_type.save()
    return refund_type


def test_a_high_risk_proposal_is_emailed_at_once_to_those_who_asked(
    email_on: Any,
    high_risk: Any,
    submit: Submit,
    committed: Any,
    reviewer: User,
    second_reviewer: User,
    other_team_reviewer: User,
) -> None:
    wants(reviewer, "immediate", "rita@example.com")
    wants(second_reviewer, "digest", "sam@example.com")
    wants(other_team_reviewer, "immediate", "otto@example.com")  # may not see refunds
    raiser = User.objects.create_user("ray", email="ray@example.com")
    raiser.groups.add(Group.objects.get(name="support"))
    EmailPreference.objects.create(user=raiser, mode="immediate")

    proposal = committed(
        submit, summary="Refund ORD-1\r\nBcc: evil@example.com", metadata={"requested_by": "ray"}
    )
    (message,) = mail.outbox
    assert message.to == ["rita@example.com"]
    assert (
        message.subject == "High-risk proposal waits for review: Refund ORD-1 Bcc: evil@example.com"
    )
    assert f"https://gatehouse.example/proposals/{proposal.pk}/" in message.body
    assert "decides nothing" in message.body and "log in" in message.body
    assert "25.0" not in message.body  # no payload in email
    notify_services.proposal_notify(proposal_id=proposal.pk)
    assert len(mail.outbox) == 1  # sent once


def test_a_medium_risk_proposal_is_not_emailed_at_once(
    email_on: Any, submit: Submit, committed: Any, reviewer: User
) -> None:
    wants(reviewer, "immediate", "rita@example.com")
    committed(submit)
    assert mail.outbox == []


def test_nothing_is_emailed_while_email_is_off(
    settings: Any, high_risk: Any, submit: Submit, committed: Any, reviewer: User
) -> None:
    settings.NOTIFY_EMAIL = False
    wants(reviewer, "immediate", "rita@example.com")
    committed(submit)
    assert mail.outbox == []


def test_a_digest_lists_what_waits_once_per_interval(
    email_on: Any, submit: Submit, reviewer: User, other_team_reviewer: User, outsider: User
) -> None:
    wants(reviewer, "digest", "rita@example.com", minutes=30)
    wants(other_team_reviewer, "digest", "otto@example.com", minutes=30)
    wants(outsider, "none", "olga@example.com")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        first = submit(summary="First refund")
        clock.shift(timedelta(minutes=5))
        second = submit(summary="Second refund", payload={"order_id": "ORD-2", "amount": 3.0})
        assert notify_services.digests_send() == 1
        (digest,) = mail.outbox
        assert digest.to == ["rita@example.com"]
        assert digest.subject == "Gatehouse: 2 proposals wait for review"
        assert digest.body.index("First refund") < digest.body.index("Second refund")
        assert f"https://gatehouse.example/proposals/{first.pk}/" in digest.body
        assert f"/proposals/{second.pk}/" in digest.body
        clock.shift(timedelta(minutes=29))
        assert notify_services.digests_send() == 0
        clock.shift(timedelta(minutes=1))
        assert notify_services.digests_send() == 1
        assert len(mail.outbox) == 2


def test_the_real_smtp_server_on_loopback_receives_the_email(
    email_on: Any, high_risk: Any, submit: Submit, committed: Any, reviewer: User
) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    received: list[Any] = []

    class Record(Sink):
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    from tests.live_app import any_free_port

    port = any_free_port()
    controller = Controller(Record(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        email_on.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        email_on.EMAIL_HOST = "127.0.0.1"
        email_on.EMAIL_PORT = port
        email_on.DEFAULT_FROM_EMAIL = "gatehouse@example.com"
        wants(reviewer, "immediate", "rita@example.com")
        proposal = committed(submit)
    finally:
        controller.stop()
    (envelope,) = received
    assert envelope.mail_from == "gatehouse@example.com"
    assert envelope.rcpt_tos == ["rita@example.com"]
    text = envelope.content.decode()
    assert "Subject: High-risk proposal waits for review: Refund a late delivery" in text
    assert f"/proposals/{proposal.pk}/" in text


def test_a_reviewer_chooses_what_they_receive(reviewer: User, client: Any) -> None:
    assert client.get("/notifications/").status_code == 302  # login required
    page = logged_in(reviewer)
    response = page.get("/notifications/")
    assert response.status_code == 200 and b"No email" in response.content
    response = page.post("/notifications/", {"mode": "digest", "digest_minutes": "15"})
    assert response.status_code == 302
    preference = EmailPreference.objects.get(user=reviewer)
    assert (preference.mode, preference.digest_minutes) == ("digest", 15)
    response = page.post("/notifications/", {"mode": "digest", "digest_minutes": "1"})
    assert response.status_code == 422 and b"between 5 minutes and a week" in response.content
    response = page.post("/notifications/", {"mode": "sms", "digest_minutes": "15"})
    assert response.status_code == 422
    assert EmailPreference.objects.get(user=reviewer).digest_minutes == 15
    assert page.put("/notifications/").status_code == 405
