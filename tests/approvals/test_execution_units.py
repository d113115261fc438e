"""The parts of execution that need no worker: signing, egress, backoff, the outbox records."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone
from standardwebhooks import Webhook

from approvals import execution, outbox, services
from approvals.models import ActionType, Attempt, OutboxMessage, Proposal
from foundation import retrying, webhooks
from tests.conftest import ServiceClient, decide_as, refund_body
from tests.execution_support import Receiver

SECRET = services.webhook_secret_generate()
OLD_SECRET = services.webhook_secret_generate()


def post_to(receiver: Receiver, body: bytes, headers: dict[str, str]) -> int:
    return httpx.post(receiver.url("/hook"), content=body, headers=headers).status_code


# --- signatures, verified by the standardwebhooks package at a real receiver ----------------


def test_a_signed_delivery_verifies_at_the_receiver(receiver: Receiver) -> None:
    receiver.secret = SECRET
    body = webhooks.encode({"type": "proposal.execute", "data": {"amount": 12.5}})
    headers = webhooks.signed_headers(secrets=[SECRET], msg_id="msg_1", body=body)
    assert post_to(receiver, body, headers) == 200
    assert receiver.distinct_ids() == {"msg_1"}


def test_a_tampered_body_fails_verification(receiver: Receiver) -> None:
    receiver.secret = SECRET
    body = webhooks.encode({"data": {"amount": 12.5}})
    headers = webhooks.signed_headers(secrets=[SECRET], msg_id="msg_1", body=body)
    assert post_to(receiver, body.replace(b"12.5", b"99999"), headers) == 401
    assert receiver.distinct_ids() == set()
    assert receiver.effects == {}
    assert "signature" in receiver.deliveries[0].error.lower()


def test_a_stale_timestamp_fails_verification(receiver: Receiver) -> None:
    receiver.secret = SECRET
    body = webhooks.encode({"data": {}})
    stale = int(time.time()) - 600  # outside the receiver's five-minute tolerance
    headers = webhooks.signed_headers(secrets=[SECRET], msg_id="m", body=body, timestamp=stale)
    assert post_to(receiver, body, headers) == 401
    assert "too old" in receiver.deliveries[0].error.lower()


def test_a_wrong_secret_fails_verification(receiver: Receiver) -> None:
    receiver.secret = SECRET
    body = webhooks.encode({"data": {}})
    headers = webhooks.signed_headers(
        secrets=[services.webhook_secret_generate()], msg_id="m", body=body
    )
    assert post_to(receiver, body, headers) == 401


def test_during_a_rotation_both_the_new_and_the_old_secret_verify(receiver: Receiver) -> None:
    body = webhooks.encode({"data": {}})
    headers = webhooks.signed_headers(secrets=[SECRET, OLD_SECRET], msg_id="m", body=body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (SECRET, OLD_SECRET):
        receiver.secret = secret
        assert post_to(receiver, body, headers) == 200


def test_our_signature_matches_the_reference_implementation() -> None:
    body = b'{"a":1}'
    at = datetime(2026, 1, 1, tzinfo=UTC)
    reference = Webhook(SECRET).sign("msg_x", at, body.decode())
    ours = webhooks.sign(secret=SECRET, msg_id="msg_x", timestamp=int(at.timestamp()), body=body)
    assert ours == reference


# --- egress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://172.16.5.4/x",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "http://[fd00::1]/x",
        "http://224.0.0.1/x",
        # IPv6 forms that carry an IPv4 address decide on that address (issue 12)
        "http://[64:ff9b::7f00:1]/x",  # NAT64 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254 (cloud metadata)
        "http://[64:ff9b:1::808:808]/x",  # local-use NAT64: the site's own translator
        "http://[2002:7f00:1::1]/x",  # 6to4 of 127.0.0.1
        "http://[2002:a00:1::1]/x",  # 6to4 of 10.0.0.1
        "http://[::7f00:1]/x",  # IPv4-compatible 127.0.0.1
        "http://[::a00:1]/x",  # IPv4-compatible 10.0.0.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",  # Teredo
    ],
)
@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    with pytest.raises(webhooks.EgressRefused, match="private, loopback or link-local"):
        webhooks.resolve_target(url)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///x"])
def test_only_http_urls_are_called(url: str) -> None:
    with pytest.raises(webhooks.EgressRefused, match="not an http"):
        webhooks.resolve_target(url)


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_a_public_address_is_called_at_the_address_that_was_checked() -> None:
    target, host = webhooks.resolve_target("https://93.184.215.14:8443/hook?x=1")
    assert (target, host) == ("https://93.184.215.14:8443/hook?x=1", "93.184.215.14")


@pytest.mark.parametrize(
    "url",
    ["http://[64:ff9b::808:808]/x", "http://[2002:808:808::1]/x", "http://[::ffff:8.8.8.8]/x"],
)
@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_ipv6_forms_of_a_public_ipv4_address_are_allowed(url: str) -> None:
    assert webhooks.url_problem(url) is None


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=True)
def test_loopback_is_allowed_when_the_setting_is_on() -> None:
    assert webhooks.resolve_target("http://127.0.0.1:18299/h")[0] == "http://127.0.0.1:18299/h"


# --- backoff --------------------------------------------------------------------------------


@override_settings(
    EXECUTION_RETRY_BASE=timedelta(seconds=2), EXECUTION_RETRY_MAX=timedelta(seconds=30)
)
def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for attempt, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 4: (8, 16), 9: (15, 30)}.items():
        delays = {webhooks.backoff(attempt).total_seconds() for _ in range(50)}
        assert all(low <= d <= high for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered


@override_settings(EXECUTION_RETRY_BASE=timedelta(seconds=2))
def test_backoff_honours_retry_after() -> None:
    assert webhooks.backoff(1, retry_after=120).total_seconds() == 120


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retrying.parse_retry_after("30") == 30
    assert retrying.parse_retry_after("Thu, 26 Nov 2026 12:01:00 GMT", now=now) == 60
    assert retrying.parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now=now) == 0
    assert retrying.parse_retry_after("soon") is None
    assert retrying.parse_retry_after(None) is None
    assert retrying.parse_retry_after("1.5") == 1.5
    assert retrying.parse_retry_after("-3") == 0
    assert retrying.parse_retry_after("nan") is None


def test_retry_after_prefers_milliseconds_as_model_providers_send_them() -> None:
    assert retrying.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retrying.retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9
    assert retrying.retry_after({}) is None


def test_backoff_seconds_is_equal_jitter_between_half_the_step_and_the_step() -> None:
    waits = [retrying.backoff_seconds(3, base=1, cap=60) for _ in range(200)]
    assert min(waits) >= 2 and max(waits) <= 4 and len(set(waits)) > 1
    assert retrying.backoff_seconds(30, base=1, cap=60) <= 60
    assert (
        retrying.backoff_seconds(1, base=1, cap=60, retry_after=10**9) == retrying.MAX_RETRY_AFTER
    )


# --- the outbox is written with the transition ------------------------------------------------


@pytest.fixture
def webhook_shop(
    make_service: Callable[..., ServiceClient], refund_type: ActionType
) -> ServiceClient:
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = "http://127.0.0.1:18299/execute"
    refund_type.save()
    client = make_service("shop", refund_type)
    client.service.callback_url = "http://127.0.0.1:18299/callbacks"
    client.service.save()
    return client


def pending(client: ServiceClient, **overrides: Any) -> Proposal:
    response = client.post_json("/api/v1/proposals", refund_body(**overrides))
    assert response.status_code == 201, response.content
    return Proposal.objects.get(pk=response.json()["id"])


def test_an_approval_records_its_execution_and_callback_and_sends_them_after_commit(
    webhook_shop: ServiceClient, reviewer: User, django_capture_on_commit_callbacks: Any
) -> None:
    proposal = pending(webhook_shop)
    assert OutboxMessage.objects.count() == 0
    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    with django_capture_on_commit_callbacks() as callbacks:
        services.proposal_decide(proposal=proposal, reviewer=reviewer, verdict="approve")
        assert OutboxMessage.objects.count() == 2
    # Not live pushes nor metrics: the outbox's publishing.
    dispatches = [c for c in callbacks if getattr(c, "func", None) is outbox.dispatch]
    assert len(dispatches) == 1  # one dispatch, after commit
    execute, approved = OutboxMessage.objects.order_by("id")
    assert (execute.kind, execute.event, execute.target) == (
        "execute",
        "proposal.execute",
        "http://127.0.0.1:18299/execute",
    )
    assert execute.webhook_id == f"msg_{proposal.pk.hex}_execute"
    assert execute.body["data"]["payload"] == proposal.payload
    assert (approved.kind, approved.event) == ("callback", "proposal.approved")
    assert approved.body["data"]["state"] == "approved"
    assert approved.body["data"]["execution"]["status"] == "pending"


@pytest.mark.parametrize(
    ("act", "event"),
    [
        (
            lambda p, s, r: decide_as(r, p, "reject", "no"),
            "proposal.rejected",
        ),
        (
            lambda p, s, r: services.proposal_cancel(service=s, proposal_id=p.pk),
            "proposal.cancelled",
        ),
        (
            lambda p, s, r: execution.proposals_expire(now=timezone.now() + timedelta(days=2)),
            "proposal.expired",
        ),
    ],
)
def test_rejections_cancellations_and_expiry_call_back_and_execute_nothing(
    webhook_shop: ServiceClient, reviewer: User, act: Any, event: str
) -> None:
    proposal = pending(webhook_shop)
    act(proposal, webhook_shop.service, reviewer)
    [message] = OutboxMessage.objects.all()
    assert (message.kind, message.event) == ("callback", event)


def test_without_a_callback_url_only_the_execution_is_recorded(
    webhook_shop: ServiceClient, reviewer: User
) -> None:
    webhook_shop.service.callback_url = ""
    webhook_shop.service.save()
    decide_as(reviewer, pending(webhook_shop))
    assert list(OutboxMessage.objects.values_list("kind", flat=True)) == ["execute"]


def test_executor_none_waits_for_the_services_report(
    webhook_shop: ServiceClient, reviewer: User, refund_type: ActionType
) -> None:
    refund_type.executor_kind = "none"
    refund_type.save()
    proposal = pending(webhook_shop)
    decide_as(reviewer, proposal)
    assert list(OutboxMessage.objects.values_list("event", flat=True)) == ["proposal.approved"]
    body = webhook_shop.get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["execution"] == {
        "executor": "none",
        "status": "awaiting_report",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "completed_at": None,
    }
    response = webhook_shop.post_json(
        f"/api/v1/proposals/{proposal.pk}/result", {"status": "executed"}
    )
    assert response.status_code == 200
    assert response.json()["execution"]["status"] == "succeeded"
    assert OutboxMessage.objects.filter(event="proposal.executed").count() == 1


def test_a_pending_proposal_has_no_execution_block(webhook_shop: ServiceClient) -> None:
    body = webhook_shop.get(f"/api/v1/proposals/{pending(webhook_shop).pk}").json()
    assert body["state"] == "pending_review"
    assert body["execution"] is None


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False)
def test_a_refused_target_fails_the_execution_without_retry(
    webhook_shop: ServiceClient, reviewer: User
) -> None:
    proposal = pending(webhook_shop)
    decide_as(reviewer, proposal)
    execute = OutboxMessage.objects.get(kind="execute")
    execution.outbox_deliver(message_id=execute.pk)
    proposal.refresh_from_db()
    assert proposal.state == "failed"
    [attempt] = Attempt.objects.filter(message=execute)
    assert attempt.status_code is None
    assert attempt.error.startswith("Target refused: '127.0.0.1' resolves to a private")
    body = webhook_shop.get(f"/api/v1/proposals/{proposal.pk}").json()
    assert body["execution"]["status"] == "failed"
    assert body["execution"]["last_error"] == attempt.error
    kinds = list(proposal.events.values_list("kind", flat=True))
    assert kinds[-2:] == ["proposal.executing", "proposal.failed"]


def test_a_message_held_by_one_worker_is_not_taken_by_another(
    webhook_shop: ServiceClient, reviewer: User
) -> None:
    decide_as(reviewer, pending(webhook_shop))
    execute = OutboxMessage.objects.get(kind="execute")
    OutboxMessage.objects.filter(pk=execute.pk).update(
        locked_until=timezone.now() + timedelta(seconds=30)
    )
    assert execution.outbox_deliver(message_id=execute.pk).startswith("not due")
    assert execution.outbox_reconcile(now=timezone.now() + timedelta(seconds=29)) == 0
    assert Attempt.objects.count() == 0


def test_the_reconciler_picks_up_only_overdue_unheld_pending_messages(
    webhook_shop: ServiceClient,
    reviewer: User,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "broker_backlog", lambda: 0)
    decide_as(reviewer, pending(webhook_shop))
    now = timezone.now()
    assert execution.outbox_reconcile(now=now) == 0  # within the grace period
    assert execution.outbox_reconcile(now=now + timedelta(minutes=5)) == 2
    # A copy just sent gets a grace period of its own before another is sent.
    assert execution.outbox_reconcile(now=now + timedelta(minutes=5, seconds=29)) == 0
    OutboxMessage.objects.filter(kind="callback").update(status="delivered")
    assert execution.outbox_reconcile(now=now + timedelta(minutes=10)) == 1


def test_under_a_backlog_the_reconciler_resends_only_what_a_dead_worker_held(
    webhook_shop: ServiceClient, reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 400 messages still wait in the broker: the two never taken are most likely among them.
    monkeypatch.setattr(outbox, "broker_backlog", lambda: 400)
    decide_as(reviewer, pending(webhook_shop))
    now = timezone.now()
    assert execution.outbox_reconcile(now=now + timedelta(minutes=5)) == 0
    # A worker took the execution and died: its lease lapsed, so that one is lost for sure.
    execute = OutboxMessage.objects.get(kind="execute")
    OutboxMessage.objects.filter(pk=execute.pk).update(
        locked_until=now + timedelta(seconds=25), attempts=1
    )
    assert execution.outbox_reconcile(now=now + timedelta(minutes=5)) == 1
    # The broker does not answer: everything overdue is re-sent, as before.
    monkeypatch.setattr(outbox, "broker_backlog", lambda: None)
    assert execution.outbox_reconcile(now=now + timedelta(minutes=10)) == 2


def test_expired_idempotency_keys_are_purged_after_the_retention(
    webhook_shop: ServiceClient,
) -> None:
    response = webhook_shop.post_json(
        "/api/v1/proposals", refund_body(), **{"Idempotency-Key": "k-1"}
    )
    assert response.status_code == 201
    assert execution.idempotency_keys_purge() == 0
    assert execution.idempotency_keys_purge(now=timezone.now() + timedelta(hours=25)) == 1
    again = webhook_shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "k-1"})
    assert again.status_code == 201  # a new proposal: the key was forgotten


@override_settings(GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=True)
def test_during_a_rotation_a_receiver_still_on_the_old_secret_accepts_the_delivery(
    webhook_shop: ServiceClient, reviewer: User, refund_type: ActionType, receiver: Receiver
) -> None:
    service = webhook_shop.service
    service.previous_webhook_secret = service.webhook_secret
    service.webhook_secret = services.webhook_secret_generate()
    service.callback_url = ""
    service.save()
    refund_type.executor_target = receiver.url("/execute")
    refund_type.save()
    receiver.secret = service.previous_webhook_secret
    proposal = pending(webhook_shop)
    decide_as(reviewer, proposal)

    execution.outbox_deliver(message_id=OutboxMessage.objects.get(kind="execute").pk)
    [delivery] = receiver.of("/execute")
    assert delivery.verified
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    proposal.refresh_from_db()
    assert proposal.state == "executed"


def test_the_openapi_document_describes_the_execution_block(shop: ServiceClient) -> None:
    schema = shop.get("/api/v1/openapi.json").json()
    execution_out = schema["components"]["schemas"]["ExecutionOut"]
    assert set(execution_out["properties"]) == {
        "executor",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "completed_at",
    }
    assert "execution" in schema["components"]["schemas"]["ProposalOut"]["properties"]
