"""`GET /api/v1/proposals/{id}?wait=`: waiters wake from the decision's event (Redis pub/sub, or
the audit relay without Redis), never by each re-reading its proposal (approvals/waits.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
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
    from config.asgi import application  # the live process's entry (approvals/longpoll.py)

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


# --- the live process's entry (approvals/longpoll.py): one thread hop, the wait on the loop ----


def on_live(scenario: Callable[[httpx.AsyncClient], Any], *, key: str, **headers: str) -> Any:
    """Run `scenario(client)` against config.asgi's application, as the `live:` process
    serves it (nginx sends every `?wait=` there)."""
    from config.asgi import application

    async def run() -> Any:
        transport = httpx.ASGITransport(app=application)  # type: ignore[arg-type]
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {key}", **headers},
            timeout=30,
        ) as client:
            return await scenario(client)

    return asyncio.run(run())


def test_the_live_entry_answers_like_the_plain_read_once_decided(
    shop: ServiceClient, reviewer: User, no_recheck: None
) -> None:
    created = submit(shop)
    url = f"/api/v1/proposals/{created['id']}"

    def decide() -> None:
        try:
            decide_as(reviewer, Proposal.objects.get(pk=created["id"]))
        finally:
            connection.close()

    async def scenario(client: httpx.AsyncClient) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        task = asyncio.create_task(
            client.get(f"{url}?wait=20", headers={"X-Request-ID": "req-waits-1"})
        )
        while waits.registry().waiting() < 1 and not task.done():
            await asyncio.sleep(0.05)
        await sync_to_async(decide, thread_sensitive=False)()
        return time.monotonic() - started, await task

    elapsed, waited = on_live(scenario, key=shop.key)
    plain = shop.get(url, headers={"X-Request-ID": "req-waits-1"})

    assert waited.status_code == 200, waited.text
    assert elapsed < 5, elapsed
    assert waited.json()["state"] == "approved"
    assert waited.content == plain.content  # the body rendered after the wait, byte for byte
    # the request id, the security headers, the length
    assert dict(waited.headers) == {name.lower(): value for name, value in plain.headers.items()}
    assert waited.headers["X-Request-ID"] == "req-waits-1"
    assert waited.headers["Content-Length"] == str(len(waited.content))


def test_the_live_entry_keeps_tenancy_and_problem_answers(
    shop: ServiceClient, other_shop: ServiceClient
) -> None:
    created = submit(shop)
    url = f"/api/v1/proposals/{created['id']}"

    async def get(client: httpx.AsyncClient, path: str) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = await client.get(path)
        return time.monotonic() - started, response

    elapsed, theirs = on_live(lambda client: get(client, f"{url}?wait=10"), key=other_shop.key)
    assert theirs.status_code == 404
    assert theirs.headers["Content-Type"] == "application/problem+json"
    assert created["id"] not in theirs.text
    assert elapsed < 3, "refused at once, not after waiting"

    _, forged = on_live(lambda client: get(client, f"{url}?wait=10"), key="gh_forged_secret")
    assert forged.status_code == 401
    assert "X-Request-ID" in forged.headers

    for bad in ("soon", "-1"):

        async def asking(client: httpx.AsyncClient, bad: str = bad) -> tuple[float, httpx.Response]:
            return await get(client, f"{url}?wait={bad}")

        _, invalid = on_live(asking, key=shop.key)
        assert invalid.status_code == 422, invalid.text
        assert invalid.headers["Content-Type"] == "application/problem+json"
        assert [error["loc"] for error in invalid.json()["errors"]] == [["query", "wait"]]


def test_waiters_on_the_live_entry_hold_no_database_connection(
    shop: ServiceClient, no_recheck: None
) -> None:
    if not settings.DATABASES["default"]["OPTIONS"].get("pool"):
        pytest.skip("counted on the pool")
    created = submit(shop)
    connection.close()

    def checked_out() -> int:
        stats = connection.pool.get_stats()  # type: ignore[attr-defined]
        return int(stats["pool_size"] - stats["pool_available"])

    async def scenario(client: httpx.AsyncClient) -> tuple[int, int, list[httpx.Response]]:
        before = await sync_to_async(checked_out, thread_sensitive=False)()
        tasks = [
            asyncio.create_task(client.get(f"/api/v1/proposals/{created['id']}?wait=3"))
            for _ in range(30)
        ]
        registry = waits.registry()
        while registry.waiting() < 30 and not any(task.done() for task in tasks):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the re-read of the subscription's connect is done
        during = await sync_to_async(checked_out, thread_sensitive=False)()
        return before, during, await asyncio.gather(*tasks)

    before, during, answered = on_live(scenario, key=shop.key)
    assert [r.status_code for r in answered] == [200] * 30
    assert during <= before, f"{during - before} connections held by 30 waiters"


def test_a_client_that_leaves_while_waiting_leaves_nothing_behind(
    shop: ServiceClient, no_recheck: None
) -> None:
    from config.asgi import application

    created = submit(shop)
    auth = f"Bearer {shop.key}".encode()

    async def scenario() -> tuple[int, int, list[dict[str, Any]], float]:
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/api/v1/proposals/{created['id']}",
            "raw_path": f"/api/v1/proposals/{created['id']}".encode(),
            "root_path": "",
            "query_string": b"wait=20",
            "headers": [(b"host", b"testserver"), (b"authorization", auth)],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        serving = asyncio.create_task(application(scope, receive, send))
        registry = waits.registry()
        for _ in range(100):
            if registry.waiting() == 1:
                break
            await asyncio.sleep(0.05)
        waiting = registry.waiting()
        gone.set()
        started = time.monotonic()
        await asyncio.wait_for(serving, 3)
        return waiting, registry.waiting(), sent, time.monotonic() - started

    waiting, after, sent, took = asyncio.run(scenario())
    assert waiting == 1
    assert after == 0  # its watch is gone from the registry
    assert sent == []  # nothing written to a closed connection
    assert took < 1, took


DECIDE_ELSEWHERE = """
import os, sys, time
import django
django.setup()
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from approvals import services
from approvals.models import Proposal
reviewer = User.objects.get(username="rita")
services.claim_acquire(proposal_id=sys.argv[1], reviewer=reviewer)
with transaction.atomic():
    transaction.on_commit(lambda: print(time.time(), flush=True))
    services.proposal_decide(
        proposal=Proposal.objects.get(pk=sys.argv[1]), reviewer=reviewer, verdict="approve",
        comment="",
    )
"""


def test_a_waiter_is_answered_promptly_after_a_decision_in_another_process(
    shop: ServiceClient, reviewer: User, no_recheck: None
) -> None:
    """Another OS process (a web worker) decides; the waiter on this one hears it from Redis."""
    created = submit(shop)
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
        f"/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, float, str]:
        waiting = asyncio.create_task(client.get(f"/api/v1/proposals/{created['id']}?wait=30"))
        registry = waits.registry()
        while registry.waiting() < 1 and not waiting.done():
            await asyncio.sleep(0.05)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DECIDE_ELSEWHERE,
            created["id"],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        response = await waiting
        answered = time.time()
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        return response, answered, out.decode()

    response, answered, committed = on_live(scenario, key=shop.key)
    assert response.status_code == 200
    assert response.json()["state"] == "approved"
    assert response.json()["decision"]["reviewer"] == "rita"
    assert answered - float(committed) < 1.0, "answered from the event, not a re-read"
