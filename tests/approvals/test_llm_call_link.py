"""A proposal's `llm_call_id`: only a call of the proposing service, and one whose row is still
being written after its answer (llmcalls.proxy writes it once the answer is sent) is waited for
briefly, while any other unknown id is refused at once."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connection

from approvals.models import Proposal
from approvals.services import proposals
from foundation import ids
from llmcalls.models import LLMCall
from tests.conftest import ServiceClient, refund_body


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The check's pauses, recorded (and taken)."""
    taken: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        taken.append(seconds)
        real(seconds)

    monkeypatch.setattr(proposals.time, "sleep", sleep)
    return taken


def minted(seconds_ago: float) -> uuid.UUID:
    value = ids.uuid7()
    millis = int((time.time() - seconds_ago) * 1000)
    return uuid.UUID(int=value.int & ((1 << 80) - 1) | millis << 80)


def test_uuid7_seconds_reads_the_time_a_v7_id_was_made_and_nothing_from_another_kind() -> None:
    before = time.time()
    value = ids.uuid7()
    assert before - 0.002 <= (ids.uuid7_seconds(value) or 0) <= time.time()
    assert ids.uuid7_seconds(minted(3600)) == pytest.approx(time.time() - 3600, abs=0.01)
    assert ids.uuid7_seconds(uuid.uuid4()) is None


@pytest.mark.django_db(transaction=True)
def test_a_proposal_posted_before_its_calls_row_is_committed_is_accepted(
    shop: ServiceClient, sleeps: list[float]
) -> None:
    call_id = ids.uuid7()

    def row_a_moment_later() -> None:
        time.sleep(0.01)
        try:
            LLMCall.objects.create(id=call_id, feature="shop", service="shop", status="ok")
        finally:
            connection.close()  # this thread's own

    writer = threading.Thread(target=row_a_moment_later)
    writer.start()
    try:
        response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(call_id)))
    finally:
        writer.join()

    assert response.status_code == 201, response.content
    assert Proposal.objects.get().llm_call_id == call_id
    assert sleeps and sum(sleeps) < 0.06  # it waited, briefly


@pytest.mark.django_db
def test_a_recent_id_that_never_comes_is_refused_after_a_bounded_wait(
    shop: ServiceClient, sleeps: list[float]
) -> None:
    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(ids.uuid7())))

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "llm_call_id"]
    assert 0.02 <= sum(sleeps) <= 0.06
    assert not Proposal.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "seconds_ago",
    [None, 3600, -60],
    ids=["not time-ordered", "minted an hour ago", "minted in the future"],
)
def test_an_id_that_is_not_a_recent_call_is_refused_without_waiting(
    shop: ServiceClient, sleeps: list[float], seconds_ago: float | None
) -> None:
    call_id = uuid.uuid4() if seconds_ago is None else minted(seconds_ago)
    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(call_id)))

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "llm_call_id"]
    assert sleeps == []


@pytest.mark.django_db
def test_another_services_recent_call_is_refused_without_waiting(
    shop: ServiceClient, other_shop: ServiceClient, sleeps: list[float]
) -> None:
    theirs = LLMCall.objects.create(feature="other-shop", service="other-shop", status="ok")

    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(theirs.id)))

    assert response.status_code == 422
    assert sleeps == []


@pytest.mark.django_db
def test_an_own_call_already_written_is_accepted_without_waiting(
    shop: ServiceClient, sleeps: list[float]
) -> None:
    mine: Any = LLMCall.objects.create(feature="shop", service="shop", status="ok")

    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(mine.id)))

    assert response.status_code == 201
    assert sleeps == []
