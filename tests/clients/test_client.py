"""gatehouse_client.Gatehouse / AsyncGatehouse against the live app: the wire contract, retries
with one Idempotency-Key, typed errors, the payload hash, and webhook verification."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import gatehouse_client as gc
import httpx
import pytest

from approvals import outbox
from approvals.models import Proposal
from approvals.representation import proposal_representation
from foundation import webhooks
from tests.clients.conftest import Shop
from tests.clients.proxy import MisbehavingProxy

pytestmark = pytest.mark.django_db(transaction=True)

REFUND = {"order_id": "ORD-7", "amount": 80.0, "currency": "EUR"}
QUICK = gc.RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05)


def client(url: str, key: str, **options: Any) -> gc.Gatehouse:
    options.setdefault("retry", QUICK)
    return gc.Gatehouse(url, key, **options)


# --- the payload hash --------------------------------------------------------------------------


def test_the_hash_gatehouse_reports_is_the_one_the_client_computes(gh_shop: Shop) -> None:
    payload = {"order_id": "ORD-ü ✓", "amount": 12.5, "currency": "EUR", "notes": None}
    with client(gh_shop.url, gh_shop.key) as gh:
        proposal = gh.propose(
            "refund.issue",
            {k: v for k, v in payload.items() if k != "notes"},
            confidence=0.5,
            summary="Refund",
        )
    stored = Proposal.objects.get(pk=proposal.id)
    assert proposal.payload_hash == stored.payload_hash == gc.payload_hash(proposal.payload)


# --- the calls ---------------------------------------------------------------------------------


def test_propose_get_wait_cancel_and_action_types(gh_shop: Shop) -> None:
    with client(gh_shop.url, gh_shop.key) as gh:
        [refund] = gh.action_types()
        proposal = gh.propose(
            "refund.issue",
            REFUND,
            confidence=0.7,
            summary="Refund a broken item",
            rationale="Photo shows damage.",
            external_id="ticket-9",
            metadata={"ticket": 9},
        )
        started = time.monotonic()
        waited = gh.wait(proposal.id, timeout=0.5)
        elapsed = time.monotonic() - started
        cancelled = gh.cancel(proposal.id, "customer withdrew")
        again = gh.get(proposal.id)
    assert refund.key == "refund.issue" and refund.executor == "none"
    assert refund.payload_schema["required"] == ["order_id", "amount"]
    assert proposal.state == "pending_review" and not proposal.is_decided
    assert proposal.external_id == "ticket-9"
    assert waited.state == "pending_review" and 0.4 < elapsed < 5
    assert cancelled.state == again.state == "cancelled"
    assert again.reason == "customer withdrew"
    stored = Proposal.objects.get(pk=proposal.id)
    assert stored.rationale == "Photo shows damage." and stored.metadata == {"ticket": 9}


def test_wait_returns_as_soon_as_a_reviewer_decides(gh_shop: Shop, reviewer_thread: Any) -> None:
    with client(gh_shop.url, gh_shop.key) as gh:
        proposal = gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
        reviewer_thread.decide_next("reject", comment="Outside the return window")
        started = time.monotonic()
        decided = gh.wait(proposal.id, timeout=20)
    assert time.monotonic() - started < 10
    assert decided.state == "rejected" and decided.decision is not None
    assert decided.decision.by == "reviewer" and decided.reason == "Outside the return window"


def test_the_async_client_has_the_same_calls(gh_shop: Shop, reviewer_thread: Any) -> None:
    async def scenario() -> tuple[gc.Proposal, gc.Proposal, list[gc.ActionType]]:
        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key, retry=QUICK) as gh:
            proposal = await gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
            reviewer_thread.decide_next("approve", edit={"amount": 60.0})
            decided = await gh.wait(proposal.id, timeout=20)
            done = await gh.report_result(proposal.id, "executed", "refunded")
            return decided, done, await gh.action_types()

    decided, done, types = asyncio.run(scenario())
    assert decided.state == "approved" and decided.approved_payload["amount"] == 60.0
    assert decided.payload_hash == gc.payload_hash(decided.approved_payload)
    assert done.state == "executed" and [t.key for t in types] == ["refund.issue"]


# --- retries -----------------------------------------------------------------------------------


def test_a_server_that_answers_503_twice_then_201_gets_one_proposal(
    gh_shop: Shop, proxy: MisbehavingProxy
) -> None:
    proxy.script("503", "503")
    with client(proxy.url, gh_shop.key) as gh:
        proposal = gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
    posts = [s for s in proxy.seen if s.method == "POST"]
    assert [s.behaviour for s in posts] == ["503", "503", "pass"]
    keys = {s.idempotency_key for s in posts}
    assert len(keys) == 1 and None not in keys
    assert Proposal.objects.count() == 1
    assert Proposal.objects.get().idempotency_key == keys.pop()
    assert proposal.state == "pending_review"


def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(
    gh_shop: Shop, proxy: MisbehavingProxy
) -> None:
    """Gatehouse stored the proposal but its answer was lost (a 502 from the proxy, then a dropped
    connection): the retries carry the same key and get the first answer back."""
    proxy.script("lose", "drop")
    with client(proxy.url, gh_shop.key) as gh:
        proposal = gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
    assert [s.behaviour for s in proxy.seen] == ["lose", "drop", "pass"]
    assert len({s.idempotency_key for s in proxy.seen}) == 1
    assert Proposal.objects.count() == 1 and proposal.id == str(Proposal.objects.get().pk)
    assert proposal.replayed is True


def test_in_flight_conflicts_and_429_are_retried_honouring_retry_after(
    gh_shop: Shop, proxy: MisbehavingProxy
) -> None:
    proxy.script("409-in-flight", "429:1")
    started = time.monotonic()
    with client(proxy.url, gh_shop.key) as gh:
        gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
    assert time.monotonic() - started >= 1.0  # the Retry-After: 1
    assert [s.behaviour for s in proxy.seen] == ["409-in-flight", "429:1", "pass"]
    assert len({s.idempotency_key for s in proxy.seen}) == 1
    assert Proposal.objects.count() == 1


def test_other_4xx_are_never_retried(
    gh_shop: Shop, proxy: MisbehavingProxy, email_type: Any
) -> None:
    with client(proxy.url, gh_shop.key) as gh, pytest.raises(gc.Forbidden) as refused:
        gh.propose("email.send", {"to": "a@b.c"}, confidence=0.7, summary="Mail")
    assert refused.value.code == "action-type-not-allowed"
    with client(proxy.url, gh_shop.key) as gh, pytest.raises(gc.NotFound):
        gh.get("00000000-0000-0000-0000-000000000000")
    with client(proxy.url, "gh_nope_wrong") as gh, pytest.raises(gc.Unauthorized):
        gh.action_types()
    assert [(s.method, s.behaviour) for s in proxy.seen] == [
        ("POST", "pass"),
        ("GET", "pass"),
        ("GET", "pass"),
    ]


def test_retries_stop_after_max_attempts_with_a_typed_error(
    gh_shop: Shop, proxy: MisbehavingProxy
) -> None:
    proxy.script("503", "503", "503", "503")
    with client(proxy.url, gh_shop.key) as gh, pytest.raises(gc.ServerError) as failed:
        gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
    assert failed.value.status == 503 and len(proxy.seen) == 4
    assert Proposal.objects.count() == 0
    dead = gc.Gatehouse("http://127.0.0.1:9", gh_shop.key, retry=QUICK)
    with pytest.raises(gc.ConnectionFailed):
        dead.action_types()


# --- errors ------------------------------------------------------------------------------------


def test_a_payload_the_schema_refuses_raises_a_typed_error_naming_the_field(
    gh_shop: Shop,
) -> None:
    with client(gh_shop.url, gh_shop.key) as gh, pytest.raises(gc.ValidationError) as refused:
        gh.propose(
            "refund.issue",
            {"order_id": "ORD-7", "amount": -1},
            confidence=0.7,
            summary="Refund",
        )
    error = refused.value
    assert error.status == 422 and error.code == "validation-error"
    assert "payload.amount" in error.fields
    assert "minimum" in error.fields["payload.amount"]
    assert "minimum" in error.detail
    assert Proposal.objects.count() == 0


def test_a_bad_confidence_names_its_field_and_a_bad_key_is_refused(gh_shop: Shop) -> None:
    with client(gh_shop.url, gh_shop.key) as gh:
        with pytest.raises(gc.ValidationError) as refused:
            gh.propose("refund.issue", REFUND, confidence=1.5, summary="Refund")
        assert "confidence" in refused.value.fields
        with pytest.raises(gc.BadRequest) as bad_key:
            gh.propose(
                "refund.issue", REFUND, confidence=0.5, summary="R", idempotency_key="x" * 300
            )
        assert bad_key.value.code == "invalid-idempotency-key"
    assert Proposal.objects.count() == 0


# --- webhooks ----------------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


def _callback(gh_shop: Shop, state: str) -> tuple[dict[str, str], bytes]:
    """A decision callback exactly as Gatehouse's outbox builds and signs it."""
    with client(gh_shop.url, gh_shop.key) as gh:
        proposal = gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
    stored = Proposal.objects.get(pk=proposal.id)
    body = webhooks.encode(
        {
            "type": f"proposal.{state}",
            "timestamp": "2026-11-29T10:00:00+00:00",
            "data": proposal_representation(stored),
        }
    )
    msg_id = outbox.webhook_id(stored, f"proposal.{state}")
    return webhooks.signed_headers(secrets=[SECRET], msg_id=msg_id, body=body), body


def test_a_signed_decision_callback_verifies_and_parses(gh_shop: Shop) -> None:
    headers, body = _callback(gh_shop, "cancelled")
    event = gc.parse_decision_event(SECRET, headers, body)
    assert event.type == "proposal.cancelled" and event.id == headers["webhook-id"]
    assert event.proposal.payload == REFUND
    # During a rotation the receiver holds both secrets; the sender's one matches.
    assert gc.verify_webhook([OLD_SECRET, SECRET], headers, body) == headers["webhook-id"]
    # Header names are case-insensitive as HTTP has them.
    upper = {k.upper(): v for k, v in headers.items()}
    assert gc.verify_webhook(SECRET, upper, body)


def test_a_forged_or_stale_callback_is_refused(gh_shop: Shop) -> None:
    signed, signed_body = _callback(gh_shop, "approved")
    for forgery in ["body", "secret", "old", "future", "missing", "version"]:
        headers, body, secret = dict(signed), signed_body, SECRET
        if forgery == "body":
            body = body.replace(b'"ORD-7"', b'"ORD-8"')
        elif forgery == "secret":
            secret = OLD_SECRET
        elif forgery == "old":
            headers["webhook-timestamp"] = str(int(time.time()) - 3600)
        elif forgery == "future":
            headers["webhook-timestamp"] = str(int(time.time()) + 3600)
        elif forgery == "missing":
            del headers["webhook-signature"]
        elif forgery == "version":
            headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
        with pytest.raises(gc.WebhookVerificationError):
            gc.parse_decision_event(secret, headers, body)
    assert gc.parse_decision_event(SECRET, signed, signed_body).type == "proposal.approved"


def test_a_signed_body_that_is_not_a_decision_is_refused() -> None:
    body = json.dumps({"type": "proposal.execute", "data": {"proposal_id": "x"}}).encode()
    headers = webhooks.signed_headers(secrets=[SECRET], msg_id="msg_1", body=body)
    with pytest.raises(gc.WebhookVerificationError):
        gc.parse_decision_event(SECRET, headers, body)


# --- the client against the OpenAPI document ----------------------------------------------------


def test_every_call_the_client_makes_matches_the_openapi_document(gh_shop: Shop) -> None:
    """The client's requests and the answers it gets (errors included) are what the served
    document declares: the same check schemathesis applies (tests/openapi_contract.py)."""
    from tests.openapi_contract import DocumentChecker

    checker = DocumentChecker.load(gh_shop.url)
    http = httpx.Client(event_hooks={"response": [checker.check_response]})
    with client(gh_shop.url, gh_shop.key, http_client=http) as gh:
        gh.action_types()
        proposal = gh.propose("refund.issue", REFUND, confidence=0.7, summary="Refund")
        gh.get(proposal.id)
        gh.wait(proposal.id, timeout=0.2)
        gh.cancel(proposal.id, "the customer withdrew the request")
        with pytest.raises(gc.GatehouseError):
            gh.propose("refund.issue", {"order_id": "ORD-8"}, confidence=0.7, summary="Bad")
        with pytest.raises(gc.GatehouseError):
            gh.get("00000000-0000-4000-8000-000000000001")
    http.close()
    assert len(checker.checked) == 7, checker.checked
