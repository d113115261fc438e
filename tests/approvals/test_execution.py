"""Execution with a real Redis broker, a real worker process and a real receiver on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals import services
from approvals.models import ActionType, Attempt, Proposal
from tests.conftest import ServiceClient, refund_body
from tests.execution_support import Receiver, wait_until

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
    return services.proposal_decide(proposal=proposal, reviewer=reviewer, verdict="approve")


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
