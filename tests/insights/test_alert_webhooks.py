"""Alert webhooks: sent after commit, retried with backoff while the receiver fails, with one
webhook-id throughout, until delivered, refused for good (410) or given up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from approvals import services as approvals_services
from approvals.models import ActionType
from config.celery import app
from insights import services, tasks
from insights.models import Alert
from tests.execution_support import Receiver, Reply, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    server = Receiver().start()
    server.secret = approvals_services.webhook_secret_generate()
    settings.INSIGHTS_WEBHOOK_URL = server.url("/insights")
    settings.INSIGHTS_WEBHOOK_SECRET = server.secret
    settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS = 3
    try:
        yield server
    finally:
        server.stop()


def raise_alert(action_type: ActionType) -> Alert:
    """As insights_check and the brake do: the alert and its webhook in one transaction."""
    with transaction.atomic():
        alert = Alert.objects.create(kind="drift", action_type=action_type, title="Drift")
        services._send_webhook(alert)
    return alert


def settled(alert: Alert) -> Alert:
    """The alert once its first delivery (sent after commit) has been recorded."""
    return wait_until(
        lambda: (fresh := Alert.objects.get(pk=alert.pk)).webhook_status and fresh,
        timeout=10,
        what="the first delivery",
    )


def test_a_failed_alert_webhook_is_retried_until_delivered_with_one_id(
    receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(500 if nth == 1 else 200)
    alert = settled(raise_alert(refund_type))
    assert alert.webhook_status.startswith("500; attempt 2 at ")
    assert alert.webhook_attempts == 1 and alert.webhook_next_at is not None

    assert services.alert_webhooks_redeliver(now=timezone.now()) == 0  # not due yet
    later = alert.webhook_next_at + timedelta(seconds=1)
    assert services.alert_webhooks_redeliver(now=later) == 1

    alert.refresh_from_db()
    assert (alert.webhook_status, alert.webhook_attempts, alert.webhook_next_at) == ("200", 2, None)
    deliveries = receiver.of("/insights")
    assert [d.verified for d in deliveries] == [True, True]
    assert {d.webhook_id for d in deliveries} == {f"insight_{alert.pk}"}
    assert services.alert_webhooks_redeliver(now=later + timedelta(days=1)) == 0  # done


def test_an_alert_webhook_is_given_up_after_the_last_attempt(
    receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(503)
    alert = settled(raise_alert(refund_type))
    when = timezone.now()
    for _ in range(5):
        when += timedelta(hours=1)  # past any backoff
        services.alert_webhooks_redeliver(now=when)
    alert.refresh_from_db()
    assert alert.webhook_attempts == 3 and alert.webhook_next_at is None
    assert alert.webhook_status == "503; gave up after 3 attempts"
    assert len(receiver.of("/insights")) == 3


def test_a_receiver_that_is_gone_is_not_retried(
    receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(410)
    alert = settled(raise_alert(refund_type))
    assert alert.webhook_status == "410: the receiver is gone; not retried"
    assert alert.webhook_next_at is None
    assert services.alert_webhooks_redeliver(now=timezone.now() + timedelta(days=1)) == 0


def test_without_a_webhook_nothing_is_queued(refund_type: ActionType, settings: Any) -> None:
    settings.INSIGHTS_WEBHOOK_URL = ""
    alert = raise_alert(refund_type)
    alert.refresh_from_db()
    assert (alert.webhook_next_at, alert.webhook_status, alert.webhook_attempts) == (None, "", 0)


def test_the_beat_redelivers_alert_webhooks() -> None:
    entry = app.conf.beat_schedule["insights-redeliver-webhooks"]
    assert entry["task"] == tasks.redeliver_webhooks.name
    assert tasks.redeliver_webhooks() == 0  # nothing due
