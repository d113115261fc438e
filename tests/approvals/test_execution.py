"""Execution with a real Redis broker, a real worker process and a real receiver on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals.models import ActionType, Attempt, OutboxMessage, Proposal, WebhookEndpoint
from tests.conftest import ServiceClient, decide_as, refund_body
from tests.execution_support import Receiver, Reply, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def webhook_refunds(refund_type: ActionType, receiver: Receiver) -> ActionType:
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = receiver.url("/execute")
    refund_type.save()
    return refund_type


@pytest.fixture
def shop_with_callbacks(
    make_service: Callable[..., ServiceClient], webhook_refunds: ActionType, receiver: Receiver
) -> ServiceClient:
    client = make_service("shop", webhook_refunds)
    client.service.callback_url = receiver.url("/callbacks")
    client.service.save()
    receiver.secret = client.service.webhook_secret
    return client


def submit_and_approve(client: ServiceClient, reviewer: User, **overrides: Any) -> Proposal:
    response = client.post_json("/api/v1/proposals", refund_body(**overrides))
    assert response.status_code == 201, response.content
    proposal = Proposal.objects.get(pk=response.json()["id"])
    return decide_as(reviewer, proposal)


def state_of(proposal: Proposal) -> str:
    proposal.refresh_from_db()
    return proposal.state


def test_an_approved_proposal_is_executed_once_and_the_service_hears_each_step(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    workers()
    proposal = submit_and_approve(shop_with_callbacks, reviewer)

    wait_until(lambda: state_of(proposal) == "executed", timeout=20, what="executed")
    wait_until(
        lambda: len(receiver.distinct_ids("/callbacks")) == 2, timeout=20, what="two callbacks"
    )
    [execution] = receiver.of("/execute")
    assert execution.verified
    assert execution.webhook_id == f"msg_{proposal.pk.hex}_execute"
    assert execution.json["type"] == "proposal.execute"
    assert execution.json["data"]["payload"] == proposal.payload
    assert execution.json["data"]["decision"]["reviewer"] == "rita"
    events = [d.json["type"] for d in receiver.of("/callbacks")]
    assert sorted(events) == ["proposal.approved", "proposal.executed"]
    executed = next(d for d in receiver.of("/callbacks") if d.json["type"] == "proposal.executed")
    assert executed.json["data"]["state"] == "executed"
    assert executed.json["data"]["execution"]["status"] == "succeeded"

    [attempt] = Attempt.objects.filter(message__kind="execute")
    assert (attempt.status, attempt.status_code) == ("succeeded", 200)
    api = shop_with_callbacks.get(f"/api/v1/proposals/{proposal.pk}").json()
    assert api["execution"]["status"] == "succeeded"
    assert api["execution"]["attempts"] == 1


def test_a_receiver_that_always_fails_gets_bounded_attempts_then_the_proposal_fails(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    receiver.respond = lambda delivery, nth: Reply(500 if delivery.path == "/execute" else 204)
    workers()
    proposal = submit_and_approve(shop_with_callbacks, reviewer)

    wait_until(lambda: state_of(proposal) == "failed", timeout=30, what="failed")
    calls = receiver.of("/execute")
    assert len(calls) == 3  # EXECUTION_MAX_ATTEMPTS in the worker
    assert {d.webhook_id for d in calls} == {f"msg_{proposal.pk.hex}_execute"}
    assert all(d.verified for d in calls)
    assert receiver.effects.keys().isdisjoint({calls[0].webhook_id})
    attempts = list(Attempt.objects.filter(message__kind="execute").order_by("number"))
    assert [(a.number, a.status, a.status_code) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "failed", 500),
    ]
    api = shop_with_callbacks.get(f"/api/v1/proposals/{proposal.pk}").json()
    assert api["state"] == "failed"
    assert api["execution"]["status"] == "failed"
    assert api["execution"]["attempts"] == 3
    assert api["execution"]["last_error"].startswith("HTTP 500 from http://127.0.0.1:")
    assert "gave up after 3 attempts" in api["execution"]["last_error"]
    wait_until(
        lambda: "proposal.failed" in {d.json["type"] for d in receiver.of("/callbacks")},
        timeout=20,
        what="the failed callback",
    )


def test_a_410_fails_the_execution_at_once_and_disables_the_endpoint(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    receiver.respond = lambda delivery, nth: Reply(410 if delivery.path == "/execute" else 200)
    workers()
    first = submit_and_approve(shop_with_callbacks, reviewer, external_id="a")
    wait_until(lambda: state_of(first) == "failed", timeout=20, what="first failed")
    assert len(receiver.of("/execute")) == 1
    endpoint = WebhookEndpoint.objects.get(url=receiver.url("/execute"))
    assert endpoint.disabled_at is not None

    second = submit_and_approve(shop_with_callbacks, reviewer, external_id="b")
    wait_until(lambda: state_of(second) == "failed", timeout=20, what="second failed")
    assert len(receiver.of("/execute")) == 1  # nothing more was sent to the gone endpoint
    second_attempt = Attempt.objects.get(proposal=second, message__kind="execute")
    assert second_attempt.status_code is None
    assert "endpoint is disabled" in second_attempt.error


def test_a_client_error_fails_without_retry_but_408_and_429_are_retried(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    def respond(delivery: Any, nth: int) -> Reply:
        if delivery.path != "/execute":
            return Reply(200)
        amount = delivery.json["data"]["payload"]["amount"]
        if amount == 1:
            return Reply(422)
        if nth == 1:
            return Reply(429, headers={"Retry-After": "1"}) if amount == 2 else Reply(408)
        return Reply(200)

    receiver.respond = respond
    workers()
    bad = submit_and_approve(shop_with_callbacks, reviewer, payload={"order_id": "A", "amount": 1})
    throttled = submit_and_approve(
        shop_with_callbacks, reviewer, payload={"order_id": "B", "amount": 2}
    )
    slow = submit_and_approve(shop_with_callbacks, reviewer, payload={"order_id": "C", "amount": 3})

    wait_until(lambda: state_of(bad) == "failed", timeout=20, what="422 failed")
    wait_until(lambda: state_of(throttled) == "executed", timeout=20, what="429 executed")
    wait_until(lambda: state_of(slow) == "executed", timeout=20, what="408 executed")
    assert Attempt.objects.filter(proposal=bad, message__kind="execute").count() == 1
    throttled_tries = list(
        Attempt.objects.filter(proposal=throttled, message__kind="execute").order_by("number")
    )
    assert [a.status_code for a in throttled_tries] == [429, 200]
    # Retry-After: 1 is honoured even though the backoff alone would be 0.1-0.2 s.
    first_finished = throttled_tries[0].finished_at
    assert first_finished is not None
    waited = (throttled_tries[1].started_at - first_finished).total_seconds()
    assert waited >= 0.95


def test_a_hanging_receiver_times_out_and_the_retry_succeeds(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    receiver.respond = lambda delivery, nth: Reply(
        200, delay=6 if delivery.path == "/execute" and nth == 1 else 0
    )
    workers()
    proposal = submit_and_approve(shop_with_callbacks, reviewer)

    wait_until(lambda: state_of(proposal) == "executed", timeout=30, what="executed")
    first, second = Attempt.objects.filter(message__kind="execute").order_by("number")
    assert first.status == "failed"
    assert first.error == "Timed out after 1.5s"
    assert first.duration_ms is not None and 1400 <= first.duration_ms < 3000
    assert second.status == "succeeded"
    assert receiver.distinct_ids("/execute") == {f"msg_{proposal.pk.hex}_execute"}
    assert len(receiver.effects) >= 1


def test_a_callable_executor_runs_with_the_stable_idempotency_key(
    workers: Any,
    receiver: Receiver,
    shop_with_callbacks: ServiceClient,
    reviewer: User,
    webhook_refunds: ActionType,
    tmp_path: Any,
) -> None:
    webhook_refunds.executor_kind = "callable"
    webhook_refunds.executor_target = "tests.approvals.callables.flaky_write"
    webhook_refunds.save()
    workers()
    proposal = submit_and_approve(
        shop_with_callbacks,
        reviewer,
        metadata={},
        payload={"order_id": str(tmp_path / "effect"), "amount": 5},
    )
    wait_until(lambda: state_of(proposal) == "executed", timeout=20, what="executed")
    first, second = Attempt.objects.filter(message__kind="execute").order_by("number")
    assert first.status == "failed"
    assert first.error == "ConnectionError: the first try always fails"
    assert second.status == "succeeded"
    assert (tmp_path / "effect").read_text() == f"msg_{proposal.pk.hex}_execute"


def test_a_rolled_back_approval_dispatches_nothing(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    import redis
    from django.conf import settings
    from django.db import transaction

    broker = redis.Redis.from_url(settings.REDIS_URL)
    broker.delete("celery")  # messages earlier tests left in the queue, out of the count
    response = shop_with_callbacks.post_json("/api/v1/proposals", refund_body())
    proposal = Proposal.objects.get(pk=response.json()["id"])

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        decide_as(reviewer, proposal)
        assert OutboxMessage.objects.count() == 2  # recorded inside the transaction
        raise Abort

    assert broker.llen("celery") == 0  # nothing was published
    workers()
    assert not receiver.first_request.wait(timeout=3)  # three reconciler rounds later
    assert state_of(proposal) == "pending_review"
    assert OutboxMessage.objects.count() == 0
    assert receiver.deliveries == []


def test_expiry_turns_a_stale_review_into_expired_and_calls_back(
    workers: Any, receiver: Receiver, shop_with_callbacks: ServiceClient, reviewer: User
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    response = shop_with_callbacks.post_json("/api/v1/proposals", refund_body())
    stale = Proposal.objects.get(pk=response.json()["id"])
    Proposal.objects.filter(pk=stale.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    fresh_id = shop_with_callbacks.post_json(
        "/api/v1/proposals", refund_body(external_id="fresh")
    ).json()["id"]
    workers()

    wait_until(lambda: state_of(stale) == "expired", timeout=20, what="expired")
    wait_until(lambda: receiver.of("/callbacks"), timeout=20, what="the expired callback")
    [callback] = receiver.of("/callbacks")
    assert callback.verified
    assert callback.json["type"] == "proposal.expired"
    assert callback.json["data"]["id"] == str(stale.pk)
    assert callback.json["data"]["state"] == "expired"
    assert Proposal.objects.get(pk=fresh_id).state == "pending_review"
    assert stale.events.filter(kind="proposal.expired", actor="system").count() == 1
    assert receiver.of("/execute") == []  # expiry never approves
