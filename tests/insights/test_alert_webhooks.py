"""Alert webhooks go out through approvals' outbox: a row written with the alert, sent after
commit by the same delivery as executions and callbacks (lease, attempts, backoff, 410, one
webhook-id throughout) and re-sent by the same reconciler after a crash."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from approvals import execution, outbox
from approvals import services as approvals_services
from approvals import tasks as approvals_tasks
from approvals.models import ActionType, Attempt, OutboxMessage, WebhookEndpoint
from config.celery import app
from insights import services
from insights.models import Alert
from tests.execution_support import Receiver, Reply, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    server = Receiver().start()
    server.secret = approvals_services.webhook_secret_generate()
    settings.INSIGHTS_WEBHOOK_URL = server.url("/insights")
    settings.INSIGHTS_WEBHOOK_SECRET = server.secret
    settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS = 3  # EXECUTION_MAX_ATTEMPTS stays at its 8
    try:
        yield server
    finally:
        server.stop()


def raise_alert(action_type: ActionType, title: str = "Drift") -> Alert:
    """As the drift check and the brake do: the alert and its outbox row in one transaction."""
    return services.alert_raise(
        kind="drift", action_type=action_type, title=title, data={}, at=timezone.now()
    )


def message_of(alert: Alert) -> OutboxMessage:
    alert.refresh_from_db()
    assert alert.webhook is not None
    return alert.webhook


def tries(message: OutboxMessage) -> list[tuple[int, str, int | None]]:
    return [
        (a.number, a.status, a.status_code)
        for a in Attempt.objects.filter(message=message).order_by("number")
    ]


def test_the_alert_and_its_webhook_are_written_together_and_sent_after_commit(
    receiver: Receiver, refund_type: ActionType, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[list[int]] = []
    monkeypatch.setattr(outbox, "dispatch", lambda ids, countdown=None: published.append(ids))
    with transaction.atomic():
        alert = raise_alert(refund_type)
        message = OutboxMessage.objects.get()
        assert alert.webhook == message
        assert published == []  # not before the commit
    assert published == [[message.pk]]
    assert (message.kind, message.event, message.proposal_id) == ("webhook", "insight.drift", None)
    assert (message.webhook_id, message.target) == (
        f"insight_{alert.pk}",
        receiver.url("/insights"),
    )
    assert (message.status, message.attempts, message.max_attempts) == ("pending", 0, 3)
    assert message.body["type"] == "insight.drift"
    assert message.body["data"]["alert"] == alert.pk
    assert receiver.secret not in str(OutboxMessage.objects.values().get())  # read at send time


def test_a_rolled_back_alert_leaves_no_webhook(receiver: Receiver, refund_type: ActionType) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        raise_alert(refund_type)
        raise RuntimeError("the check failed after raising it")
    assert not Alert.objects.exists() and not OutboxMessage.objects.exists()


@pytest.mark.slow
def test_a_failed_alert_webhook_is_retried_until_delivered_with_one_id(
    workers: Any, receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(500 if nth == 1 else 200)
    workers(INSIGHTS_WEBHOOK_SECRET=receiver.secret)  # signs in its own process
    alert = raise_alert(refund_type)
    wait_until(
        lambda: message_of(alert).status == "delivered", timeout=30, what="the alert delivered"
    )
    message = message_of(alert)
    assert message.attempts == 2
    assert tries(message) == [(1, "failed", 500), (2, "succeeded", 200)]
    deliveries = receiver.of("/insights")
    assert [d.verified for d in deliveries] == [True, True]
    assert {d.webhook_id for d in deliveries} == {f"insight_{alert.pk}"}
    assert deliveries[0].body == deliveries[1].body
    assert alert.webhook_status == "delivered (attempt 2)"


# In-process from here (`eager_tasks`): the outbox's task runs where it is sent, and the test
# moves the clock past the backoff and calls the delivery itself, as the worker's task does.


def test_an_alert_webhook_is_given_up_after_the_last_attempt(
    eager_tasks: None, receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(503)
    alert = raise_alert(refund_type)
    message = message_of(alert)
    assert (message.status, message.attempts) == ("pending", 1)  # the first, sent at commit
    assert alert.webhook_status.startswith("HTTP 503 from http://127.0.0.1:")
    assert "; attempt 2 at " in alert.webhook_status
    assert execution.outbox_deliver(message_id=message.pk).startswith("not due")  # backoff
    when = timezone.now()
    for _ in range(4):
        when += timedelta(hours=1)  # past any backoff
        with time_machine.travel(when, tick=True):
            execution.outbox_deliver(message_id=message.pk)
    message = message_of(alert)
    assert (message.status, message.attempts) == ("failed", 3)  # INSIGHTS_WEBHOOK_MAX_ATTEMPTS
    url = receiver.url("/insights")
    assert message.last_error == f"HTTP 503 from {url} (gave up after 3 attempts)"
    assert alert.webhook_status == f"failed: {message.last_error}"
    assert [status for _, status, _ in tries(message)] == ["failed"] * 3
    assert len(receiver.of("/insights")) == 3
    assert receiver.distinct_ids("/insights") == {f"insight_{alert.pk}"}


def test_a_receiver_that_is_gone_is_not_retried(
    eager_tasks: None, receiver: Receiver, refund_type: ActionType
) -> None:
    receiver.respond = lambda delivery, nth: Reply(410)
    first = message_of(raise_alert(refund_type, "first"))
    assert first.status == "failed" and first.last_error.endswith(": gone")
    endpoint = WebhookEndpoint.objects.get(url=receiver.url("/insights"))
    assert endpoint.disabled_at is not None
    with time_machine.travel(timezone.now() + timedelta(days=1), tick=True):
        assert execution.outbox_deliver(message_id=first.pk).startswith("not due")
    second = message_of(raise_alert(refund_type, "second"))
    assert second.status == "failed" and "endpoint is disabled" in second.last_error
    assert len(receiver.of("/insights")) == 1  # nothing more to the gone receiver


def test_without_a_webhook_nothing_is_queued(
    eager_tasks: None, refund_type: ActionType, settings: Any
) -> None:
    settings.INSIGHTS_WEBHOOK_URL = ""
    alert = raise_alert(refund_type)
    alert.refresh_from_db()
    assert alert.webhook is None and alert.webhook_status == ""
    assert not OutboxMessage.objects.exists()


def test_a_secret_unset_before_the_send_fails_it_unsent(
    receiver: Receiver, refund_type: ActionType, settings: Any
) -> None:
    alert = raise_alert(refund_type)  # the broker holds it: nothing runs in this process
    settings.INSIGHTS_WEBHOOK_SECRET = ""
    assert execution.outbox_deliver(message_id=message_of(alert).pk) == "failed"
    message = message_of(alert)
    assert message.status == "failed" and message.last_error.startswith("Not sent: nothing")
    assert receiver.of("/insights") == []


def test_the_outbox_reconciler_on_the_beat_resends_a_lost_alert_webhook(
    eager_tasks: None,
    receiver: Receiver,
    refund_type: ActionType,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "insights-redeliver-webhooks" not in app.conf.beat_schedule  # no second loop
    entry = app.conf.beat_schedule["reconcile-outbox"]
    assert entry["task"] == approvals_tasks.reconcile_outbox.name
    monkeypatch.setattr(outbox, "dispatch", lambda ids, countdown=None: None)  # publish lost
    alert = raise_alert(refund_type)
    monkeypatch.undo()
    monkeypatch.setattr(outbox, "broker_backlog", lambda: 0)
    assert approvals_tasks.reconcile_outbox() == 0  # within the grace period
    later = timezone.now() + settings.OUTBOX_RECONCILE_GRACE + timedelta(seconds=1)
    with time_machine.travel(later, tick=True):
        assert approvals_tasks.reconcile_outbox() == 1
    assert message_of(alert).status == "delivered"
    assert receiver.distinct_ids("/insights") == {f"insight_{alert.pk}"}
    with time_machine.travel(later + timedelta(days=1), tick=True):
        assert approvals_tasks.reconcile_outbox() == 0  # done


@pytest.mark.slow
def test_an_alert_webhook_survives_a_worker_crash_and_the_reconciler_delivers_it_once(
    workers: Any, receiver: Receiver, refund_type: ActionType
) -> None:
    # The receiver takes the first delivery (its effect happens) but is slow to answer; the
    # worker dies with the request in flight, before it can record the outcome.
    receiver.respond = lambda d, nth: Reply(200, delay=5 if nth == 1 else 0)
    worker = workers(
        "crashy", EXECUTION_TIMEOUT="3s", INSIGHTS_WEBHOOK_SECRET=receiver.secret
    )  # time enough to kill it mid-call
    alert = raise_alert(refund_type)
    assert receiver.first_request.wait(timeout=20)
    worker.kill9()
    message = message_of(alert)
    assert (message.status, message.attempts) == ("pending", 1)
    assert tries(message) == [(1, "running", None)]

    worker.start()  # restarted; its reconciler finds the lapsed lease
    wait_until(
        lambda: message_of(alert).status == "delivered", timeout=40, what="delivered after restart"
    )
    message = message_of(alert)
    assert [(n, s) for n, s, _ in tries(message)] == [(1, "abandoned"), (2, "succeeded")]
    assert len(receiver.of("/insights")) == 2  # delivered twice: at least once …
    assert list(receiver.effects) == [f"insight_{alert.pk}"]  # … and the effect once


def test_an_alert_webhook_shows_in_the_outbox_admin_and_on_the_alert_list(
    eager_tasks: None, receiver: Receiver, refund_type: ActionType, admin_client_logged_in: Client
) -> None:
    alert = raise_alert(refund_type, "Agreement fell")
    message = message_of(alert)
    assert message.status == "delivered"
    page = admin_client_logged_in.get("/admin/approvals/outboxmessage/")
    assert page.status_code == 200 and "insight.drift" in page.content.decode()
    detail = admin_client_logged_in.get(f"/admin/approvals/outboxmessage/{message.pk}/change/")
    assert detail.status_code == 200 and f"insight_{alert.pk}" in detail.content.decode()
    for listing in (
        "/admin/approvals/outboxmessage/?kind=webhook",
        "/admin/approvals/attempt/",
        f"/admin/approvals/attempt/{Attempt.objects.get(message=message).pk}/change/",
        "/admin/insights/alert/",
    ):
        assert admin_client_logged_in.get(listing).status_code == 200, listing
    insights_page = admin_client_logged_in.get("/insights/")
    assert insights_page.status_code == 200
    assert "Agreement fell" in insights_page.content.decode()
    assert "<td>delivered</td>" in insights_page.content.decode()


def test_alert_webhooks_in_flight_at_the_migration_move_into_the_outbox(settings: Any) -> None:
    settings.INSIGHTS_WEBHOOK_URL = "http://127.0.0.1:20999/insights"
    settings.INSIGHTS_WEBHOOK_MAX_ATTEMPTS = 5
    before = [("insights", "0004_alert_open_index"), ("approvals", "0011_queue_pending_created")]
    due = timezone.now() + timedelta(seconds=30)
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        old_type = old.get_model("approvals", "ActionType").objects.create(
            key="refund.issue", title="Refund"
        )
        old_alert = old.get_model("insights", "Alert").objects
        rows = {
            "in flight": ("500; attempt 2 at 10:00:00 UTC", 1, due),
            "delivered": ("200", 2, None),
            "given up": ("503; gave up after 3 attempts", 3, None),
            "none": ("", 0, None),
        }
        for title, (status, attempts, next_at) in rows.items():
            old_alert.create(
                kind="drift",
                action_type=old_type,
                title=title,
                webhook_status=status,
                webhook_attempts=attempts,
                webhook_next_at=next_at,
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    alerts = {a.title: a for a in Alert.objects.select_related("webhook")}
    assert alerts["none"].webhook is None
    flying = alerts["in flight"].webhook
    assert flying is not None
    assert (flying.status, flying.attempts, flying.max_attempts) == ("pending", 1, 5)
    assert (flying.next_attempt_at, flying.last_error) == (due, "500")
    assert flying.webhook_id == f"insight_{alerts['in flight'].pk}"  # as the receiver saw it
    assert flying.target == "http://127.0.0.1:20999/insights"
    assert flying.body["data"]["action_type"] == "refund.issue"
    done, gave_up = alerts["delivered"].webhook, alerts["given up"].webhook
    assert done is not None and gave_up is not None
    assert (done.status, done.attempts) == ("delivered", 2)
    assert (gave_up.status, gave_up.last_error) == ("failed", "503; gave up after 3 attempts")
