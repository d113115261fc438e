from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection

from approvals.locks import advisory_lock_key
from approvals.models import AuditEvent, Proposal
from tests.conftest import ServiceClient, refund_body


def test_a_replay_returns_the_first_response(shop: ServiceClient) -> None:
    first = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "order-1"})
    replay = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "order-1"})

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert Proposal.objects.count() == 1


def test_the_replay_is_the_first_response_even_after_the_state_moved(shop: ServiceClient) -> None:
    first = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "k1"}).json()
    shop.post_json(f"/api/v1/proposals/{first['id']}/cancel", {})
    replay = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "k1"})
    assert replay.json()["state"] == "pending_review"
    assert shop.get(f"/api/v1/proposals/{first['id']}").json()["state"] == "cancelled"


def test_a_quoted_key_is_the_same_key(shop: ServiceClient) -> None:
    shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": '"abc"'})
    replay = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "abc"})
    assert replay.status_code == 200


def test_it_rejects_a_reused_key_with_a_new_body(shop: ServiceClient) -> None:
    shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "order-1"})
    reused = shop.post_json(
        "/api/v1/proposals", refund_body(confidence=0.2), **{"Idempotency-Key": "order-1"}
    )
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("idempotency-key-reused")
    assert Proposal.objects.count() == 1


def test_keys_are_scoped_per_service(shop: ServiceClient, other_shop: ServiceClient) -> None:
    a = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "same"})
    b = other_shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "same"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


def test_without_a_key_every_post_creates_a_proposal(shop: ServiceClient) -> None:
    shop.post_json("/api/v1/proposals", refund_body())
    shop.post_json("/api/v1/proposals", refund_body())
    assert Proposal.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_key_still_in_flight_is_a_conflict(shop: ServiceClient) -> None:
    # Another request holding the key is simulated by a second session holding its lock.
    settings = connection.settings_dict
    lock = advisory_lock_key("idempotency", shop.service.pk, "busy")
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [lock])
        response = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "busy"})
        assert response.status_code == 409
        assert response.json()["type"].endswith("idempotency-key-in-flight")
        assert Proposal.objects.count() == 0
        # Released now: a closed connection's backend may hold it a moment longer on a busy machine.
        other.execute("SELECT pg_advisory_unlock(%s)", [lock])
    after = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "busy"})
    assert after.status_code == 201


@pytest.fixture
def twenty_connections() -> Iterator[None]:
    """A database pool holding twenty open connections, one for each thread of the race.

    The race is between requests, not for connections: from a pool of one connection grown on
    demand, with the test's own connection held, twenty threads wait for a connection longer
    than the pool's timeout on a loaded machine (DB_POOL_TIMEOUT, 1 s) and those requests
    answer 503 as designed (a failure seen once under load; DB_POOL_TIMEOUT=0.05 reproduces it).
    """
    database: Any = connection  # PostgreSQL's wrapper has the pool; SQLite's has none
    pool = getattr(database, "pool", None)
    connection.close()  # the test's own connection goes back: the threads get all of them
    if pool is None:
        yield
        return
    pool.resize(min_size=20, max_size=max(20, pool.max_size))
    pool.wait(timeout=60)
    try:
        yield
    finally:
        connection.close()
        database.close_pool()  # the next query opens the usual pool again


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_posts_with_one_key_create_exactly_one_proposal(
    shop: ServiceClient, twenty_connections: None
) -> None:
    barrier = threading.Barrier(20)
    statuses: list[int] = []
    ids: set[str] = set()
    lock = threading.Lock()

    def post() -> None:
        client = ServiceClient(shop.service, shop.key)
        barrier.wait()
        try:
            response = client.post_json(
                "/api/v1/proposals", refund_body(), **{"Idempotency-Key": "race"}
            )
            with lock:
                statuses.append(response.status_code)
                if response.status_code in (200, 201):
                    ids.add(response.json()["id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    counted = Counter(statuses)
    assert len(statuses) == 20
    assert counted[201] == 1, counted
    assert set(counted) <= {200, 201, 409}, counted
    assert len(ids) == 1
    assert Proposal.objects.count() == 1
    assert AuditEvent.objects.filter(kind="proposal.received").count() == 1


def test_a_replay_works_for_a_proposal_that_links_a_model_call(shop: ServiceClient) -> None:
    from llmcalls.models import LLMCall

    LLMCall.objects.create(
        id="5b0d3c56-7a1e-4c8e-9f00-0123456789ab", feature="shop", service="shop", status="ok"
    )
    body = refund_body(llm_call_id="5b0d3c56-7a1e-4c8e-9f00-0123456789ab")
    first = shop.post_json("/api/v1/proposals", body, **{"Idempotency-Key": "with-call"})
    replay = shop.post_json("/api/v1/proposals", body, **{"Idempotency-Key": "with-call"})
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["llm_call_id"] == "5b0d3c56-7a1e-4c8e-9f00-0123456789ab"
