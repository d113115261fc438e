"""`GET /api/v1/proposals/{id}?wait=`: waiters wake from the decision's event (Redis pub/sub, or
the audit relay without Redis), never by each re-reading its proposal (approvals/waits.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.db import connection
from django.test import Client, override_settings

from approvals import waits
from approvals.models import Proposal
from tests.conftest import ServiceClient, decide_as, refund_body

pytestmark = pytest.mark.django_db(transaction=True)
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the event can answer a waiter early: the fallback re-read comes after the test."""
    monkeypatch.setattr(waits, "RECHECK_SECONDS", 60.0)


def submit(client: ServiceClient, **overrides: Any) -> dict[str, Any]:
    response = client.post_json("/api/v1/proposals", refund_body(**overrides))
    assert response.status_code == 201, response.content
    return response.json()


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        try:
            action()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def decide_silently(proposal_id: str) -> None:
    """A decision no event announces (as if the message were lost)."""
    Proposal.objects.filter(pk=proposal_id).update(state=Proposal.State.APPROVED)


def timed_get(client: Client, url: str) -> tuple[float, Any]:
    started = time.monotonic()
    response = client.get(url)
    return time.monotonic() - started, response


@pytest.mark.parametrize("layer", ["redis", "in-memory"])
def test_a_waiter_is_answered_when_a_reviewer_decides(
    shop: ServiceClient, reviewer: User, no_recheck: None, layer: str
) -> None:
    created = submit(shop)
    proposal = Proposal.objects.get(pk=created["id"])
    with override_settings(**({"CHANNEL_LAYERS": IN_MEMORY} if layer == "in-memory" else {})):
        thread = later(0.5, lambda: decide_as(reviewer, proposal))
        elapsed, response = timed_get(shop, f"/api/v1/proposals/{created['id']}?wait=20")
        thread.join()

    assert response.status_code == 200
    assert response.json()["state"] == "approved"
    assert response.json()["decision"]["reviewer"] == "rita"
    assert 0.4 < elapsed < 5, elapsed  # the event, not the re-read 60 s on, nor the deadline


def test_a_waiter_that_hears_nothing_gets_the_answer_at_its_deadline(
    shop: ServiceClient, no_recheck: None
) -> None:
    created = submit(shop)
    thread = later(0.3, lambda: decide_silently(created["id"]))
    elapsed, response = timed_get(shop, f"/api/v1/proposals/{created['id']}?wait=2")
    thread.join()

    assert response.json()["state"] == "approved"  # read afresh when its time ran out
    assert 1.9 < elapsed < 5, elapsed


def test_a_lost_event_delays_a_waiter_by_the_recheck_at_most(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waits, "RECHECK_SECONDS", 0.5)
    created = submit(shop)
    thread = later(0.3, lambda: decide_silently(created["id"]))
    elapsed, response = timed_get(shop, f"/api/v1/proposals/{created['id']}?wait=20")
    thread.join()

    assert response.json()["state"] == "approved"
    assert elapsed < 5, elapsed


def test_a_waiter_whose_time_runs_out_gets_the_pending_proposal(shop: ServiceClient) -> None:
    created = submit(shop)
    elapsed, response = timed_get(shop, f"/api/v1/proposals/{created['id']}?wait=0.5")
    assert response.status_code == 200
    assert response.json()["state"] == "pending_review"
    assert 0.45 < elapsed < 4, elapsed


def test_nobody_waits_on_a_proposal_that_is_not_theirs(
    shop: ServiceClient, other_shop: ServiceClient, other_team_reviewer: User
) -> None:
    created = submit(shop)
    url = f"/api/v1/proposals/{created['id']}?wait=10"

    elapsed, response = timed_get(other_shop, url)  # another service
    assert response.status_code == 404
    assert created["id"] not in response.content.decode()
    assert elapsed < 3, "refused at once, not after waiting"

    reviewer = Client()  # a reviewer's session of another team is no service key
    reviewer.force_login(other_team_reviewer)
    elapsed, response = timed_get(reviewer, url)
    assert response.status_code == 401
    assert elapsed < 3

    anonymous = Client(HTTP_AUTHORIZATION="Bearer gh_forged_secret")
    assert anonymous.get(url).status_code == 401


def test_many_waiters_in_one_process_are_answered_by_a_few_reads(
    shop: ServiceClient, reviewer: User, no_recheck: None
) -> None:
    decided = submit(shop)
    others = [submit(shop, external_id=f"other-{i}") for i in range(20)]
    proposal = Proposal.objects.get(pk=decided["id"])
    application = get_asgi_application()

    def decide_and_close() -> None:
        try:
            decide_as(reviewer, proposal)
        finally:
            connection.close()

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response], int, float]:
        transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {shop.key}"},
            timeout=30,
        ) as client:
            on_one = [
                asyncio.create_task(client.get(f"/api/v1/proposals/{decided['id']}?wait=20"))
                for _ in range(150)
            ]
            on_many = [
                asyncio.create_task(client.get(f"/api/v1/proposals/{other['id']}?wait=15"))
                for other in others
            ]
            registry = waits.registry()
            for _ in range(300):
                if registry.waiting() == 170:
                    break
                await asyncio.sleep(0.1)
            assert registry.waiting() == 170, "not all waiting after 30 s"
            assert not any(task.done() for task in on_one + on_many)
            reads_before = registry.reads
            started = time.monotonic()
            await sync_to_async(decide_and_close)()
            answered = await asyncio.gather(*on_one)
            took = time.monotonic() - started
            reads = registry.reads - reads_before
            return answered, await asyncio.gather(*on_many), reads, took

    answered, timed_out, reads, took = asyncio.run(scenario())
    assert [r.status_code for r in answered] == [200] * 150
    assert {r.json()["state"] for r in answered} == {"approved"}
    assert took < 8, took
    # the claim's event and the decision's: no read per waiter, none for the other proposals
    assert reads <= 3, f"{reads} reads to answer 150 waiters on one proposal"
    assert [r.status_code for r in timed_out] == [200] * 20
    assert {r.json()["state"] for r in timed_out} == {"pending_review"}
