"""The live queue over websockets: who may connect, who receives what, and the relay that
carries changes made in another process when there is no Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from approvals import services
from approvals.models import Proposal
from config.asgi import websocket_application
from tests.approvals.websocket import WebsocketCommunicator

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:18400")
HOST = (b"host", b"127.0.0.1:18400")  # the page's own host: the socket's origin is the same
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"><b hx-get="/x">'


def session_cookie(user: User) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode())


def communicator(*headers: tuple[bytes, bytes], scheme: str = "ws") -> WebsocketCommunicator:
    # Built per test so that it reads the ALLOWED_HOSTS of the test, as production reads its own.
    if not any(name == b"host" for name, _ in headers):
        headers = (HOST, *headers)
    ws = WebsocketCommunicator(websocket_application(), "/ws/queue/", headers=list(headers))
    ws.scope["scheme"] = scheme
    return ws


async def receive_text(ws: WebsocketCommunicator, timeout: float = 3) -> str:
    return await ws.receive_from(timeout=timeout)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_socket_without_a_session_is_refused(reviewer: User) -> None:
    async def scenario(*headers: tuple[bytes, bytes]) -> bool:
        ws = communicator(*headers)
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert run(scenario(ORIGIN)) is False
    assert run(scenario(ORIGIN, (b"cookie", b"sessionid=forged"))) is False
    assert run(scenario(ORIGIN, session_cookie(reviewer))) is True


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_socket_from_a_foreign_origin_is_refused(reviewer: User) -> None:
    cookie = session_cookie(reviewer)

    async def scenario(origin: tuple[bytes, bytes] | None) -> bool:
        headers = [cookie] if origin is None else [cookie, origin]
        ws = communicator(*headers)
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert run(scenario((b"origin", b"http://evil.example"))) is False
    assert run(scenario(None)) is False
    assert run(scenario(ORIGIN)) is True


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "accepted"),
    [
        # issue 12: the same host name on another port or scheme is another site
        ("http://127.0.0.1:9999", "127.0.0.1:18400", "ws", False),
        ("https://127.0.0.1:18400", "127.0.0.1:18400", "ws", False),
        ("http://127.0.0.1", "127.0.0.1:18400", "ws", False),
        ("null", "127.0.0.1:18400", "ws", False),
        ("http://127.0.0.1.evil.example:18400", "127.0.0.1:18400", "ws", False),
        # a Host outside ALLOWED_HOSTS gives the socket no origin of its own
        ("http://evil.example:18400", "evil.example:18400", "ws", False),
        # the page's own origin; over TLS, https with wss
        ("http://127.0.0.1:18400", "127.0.0.1:18400", "ws", True),
        ("https://127.0.0.1:18400", "127.0.0.1:18400", "wss", True),
        ("https://127.0.0.1", "127.0.0.1", "wss", True),
        # SITE_URL and CSRF_TRUSTED_ORIGINS name other origins of the site
        ("https://gatehouse.example.com", "127.0.0.1:18400", "ws", True),
        ("https://review.tenant.example.org", "127.0.0.1:18400", "ws", True),
        ("http://review.tenant.example.org", "127.0.0.1:18400", "ws", False),
        ("https://review.tenant.example.org:8443", "127.0.0.1:18400", "ws", False),
    ],
)
@override_settings(
    ALLOWED_HOSTS=["127.0.0.1"],
    SITE_URL="https://gatehouse.example.com",
    CSRF_TRUSTED_ORIGINS=["https://*.tenant.example.org"],
)
def test_the_origin_must_match_a_site_origin_by_scheme_host_and_port(
    reviewer: User, origin: str, host: str, scheme: str, accepted: bool
) -> None:
    cookie = session_cookie(reviewer)

    async def scenario() -> bool:
        ws = communicator(
            cookie, (b"origin", origin.encode()), (b"host", host.encode()), scheme=scheme
        )
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    assert run(scenario()) is accepted


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_behind_a_tls_proxy_the_forwarded_scheme_makes_the_socket_https(reviewer: User) -> None:
    cookie = session_cookie(reviewer)
    forwarded = (b"x-forwarded-proto", b"https")

    async def scenario(*headers: tuple[bytes, bytes]) -> bool:
        ws = communicator(cookie, (b"origin", b"https://127.0.0.1:18400"), *headers)
        connected, _ = await ws.connect()
        await ws.disconnect()
        return connected

    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert run(scenario(forwarded)) is True
    assert run(scenario(forwarded)) is False  # without the proxy setting the header is ignored


# --- access that changes while the socket is open (issue 12) -----------------------------------


async def _until_listened(action_type_id: int) -> None:
    """An open page marks its types as listened to just after connecting; a push sent before
    that is skipped by design (the page resynchronises), so these tests wait for the mark."""
    from django.core.cache import cache

    from approvals import events

    for _ in range(200):
        if await database_sync_to_async(cache.get)(events._presence_key(action_type_id)):
            events.forget_absences()
            return
        await asyncio.sleep(0.05)


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_reviewer_removed_from_the_team_stops_receiving_its_pushes(
    shop: Any, reviewer: User, refund_type: Any
) -> None:
    support = refund_type.reviewer_group
    cookie = session_cookie(reviewer)

    async def scenario() -> tuple[str, bool, str]:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        await _until_listened(refund_type.pk)
        await database_sync_to_async(_submit)(shop, summary="while a member")
        before = await receive_text(ws, timeout=10)
        await database_sync_to_async(reviewer.groups.remove)(support)
        await database_sync_to_async(_submit)(shop, summary="after leaving")
        nothing = await ws.receive_nothing(timeout=1.0)
        await database_sync_to_async(support.user_set.add)(reviewer)
        await asyncio.sleep(2)  # joining a group is not ordered with pushes sent meanwhile
        await database_sync_to_async(_submit)(shop, summary="back again")
        after = await receive_text(ws, timeout=10)
        await ws.disconnect()
        return before, nothing, after

    before, nothing, after = run(scenario())
    assert "while a member" in before
    assert nothing
    assert "back again" in after


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_moving_an_action_type_to_another_team_moves_its_pushes(
    shop: Any, reviewer: User, other_team_reviewer: User, refund_type: Any
) -> None:
    def move() -> None:
        refund_type.reviewer_group = other_team_reviewer.groups.get()
        refund_type.save()

    mine, theirs = session_cookie(reviewer), session_cookie(other_team_reviewer)

    async def scenario() -> tuple[bool, str]:
        ws_rita = communicator(mine, ORIGIN)
        ws_otto = communicator(theirs, ORIGIN)
        assert (await ws_rita.connect())[0] and (await ws_otto.connect())[0]
        await _until_listened(refund_type.pk)
        await database_sync_to_async(move)()
        await asyncio.sleep(2)  # otto's socket joins the type's group
        await database_sync_to_async(_submit)(shop, summary="now the other team's")
        otto = await receive_text(ws_otto, timeout=10)
        rita_got_nothing = await ws_rita.receive_nothing(timeout=1.0)
        await ws_rita.disconnect()
        await ws_otto.disconnect()
        return rita_got_nothing, otto

    rita_got_nothing, otto = run(scenario())
    assert rita_got_nothing and "now the other team" in otto


@override_settings(ALLOWED_HOSTS=["127.0.0.1"], LIVE_SESSION_CHECK_SECONDS=0.3)
def test_a_change_no_signal_announces_is_followed_at_the_next_session_check(
    shop: Any, reviewer: User, refund_type: Any
) -> None:
    def remove_with_sql() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM auth_user_groups WHERE user_id = %s", [reviewer.pk])

    cookie = session_cookie(reviewer)

    async def scenario() -> bool:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        await _until_listened(refund_type.pk)
        await database_sync_to_async(remove_with_sql)()
        await asyncio.sleep(1.0)
        await database_sync_to_async(_submit)(shop, summary="after the raw delete")
        nothing = await ws.receive_nothing(timeout=1.0)
        await ws.disconnect()
        return nothing

    assert run(scenario())


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_new_proposal_reaches_its_team_only_escaped(
    shop: Any, reviewer: User, other_team_reviewer: User, refund_type: Any
) -> None:
    mine, theirs = session_cookie(reviewer), session_cookie(other_team_reviewer)

    async def scenario() -> tuple[str, bool]:
        ws_rita, ws_otto = communicator(mine, ORIGIN), communicator(theirs, ORIGIN)
        assert (await ws_rita.connect())[0] and (await ws_otto.connect())[0]
        await database_sync_to_async(_submit)(shop, rationale=HOSTILE, summary=HOSTILE[:200])
        html = await receive_text(ws_rita)
        otto_got_nothing = await ws_otto.receive_nothing(timeout=0.5)
        await ws_rita.disconnect()
        await ws_otto.disconnect()
        return html, otto_got_nothing

    html, otto_got_nothing = run(scenario())
    assert 'hx-swap-oob="true"' in html and 'class="queue-row"' in html
    assert "<script>" not in html and "<img src=x" not in html and 'hx-get="/x"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert otto_got_nothing


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_claims_and_decisions_are_pushed_and_the_row_leaves(
    submit: Callable[..., Proposal], reviewer: User, second_reviewer: User
) -> None:
    proposal = submit()
    watcher = session_cookie(second_reviewer)

    async def scenario() -> list[str]:
        ws = communicator(watcher, ORIGIN)
        assert (await ws.connect())[0]
        await database_sync_to_async(services.claim_acquire)(
            proposal_id=proposal.pk, reviewer=reviewer
        )
        claimed = await receive_text(ws)
        await database_sync_to_async(services.proposal_decide)(
            proposal=proposal, reviewer=reviewer, verdict="approve"
        )
        decided = await receive_text(ws)
        await ws.disconnect()
        return [claimed, decided]

    claimed, decided = run(scenario())
    assert "being reviewed by rita" in claimed
    assert 'id="history-' not in claimed  # not decided yet: no history row
    assert f'<tr id="proposal-{proposal.pk}" hx-swap-oob="delete">' in decided
    assert 'id="proposal-state-' in decided and "Approved" in decided
    # The history page's row, with what its filters compare, for the page to place or replace.
    assert (
        f'<tr id="history-{proposal.pk}" data-history-row data-state="approved" '
        f'data-decided-by="reviewer" data-action-type="refund.issue" hx-swap-oob="true">'
    ) in decided


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_reviewer_is_not_pushed_what_they_raised(shop: Any, reviewer: User) -> None:
    cookie = session_cookie(reviewer)

    async def scenario() -> bool:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        await database_sync_to_async(_submit)(shop, metadata={"requested_by": "rita"})
        nothing = await ws.receive_nothing(timeout=0.7)
        await ws.disconnect()
        return nothing

    assert run(scenario())


def _submit(shop: Any, **overrides: Any) -> Proposal:
    from tests.conftest import refund_body

    return services.proposal_submit(service=shop.service, data=refund_body(**overrides)).proposal


@override_settings(
    ALLOWED_HOSTS=["127.0.0.1"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
)
def test_without_redis_changes_from_another_process_are_relayed(shop: Any, reviewer: User) -> None:
    """The embedded default: the worker is another process and the in-memory layer cannot
    reach this one. A proposal submitted by a separate Python process still reaches the open
    socket, because this process tails the audit table."""
    cookie = session_cookie(reviewer)
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "DEBUG": "0",
        "SECRET_KEY": "another-process",
    }
    env.pop("REDIS_URL", None)
    script = (
        "import django; django.setup()\n"
        "from approvals import services\n"
        "from approvals.models import Service\n"
        "from tests.conftest import refund_body\n"
        "service = Service.objects.get(name='shop')\n"
        "p = services.proposal_submit(service=service, data=refund_body(summary='From afar'))\n"
        "print(p.proposal.pk)\n"
    )

    async def scenario() -> tuple[str, str]:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        await asyncio.sleep(0.2)  # the relay has read its starting point
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
            cwd=str(settings.BASE_DIR),
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        html = await receive_text(ws, timeout=5)
        await ws.disconnect()
        return out.decode().strip(), html

    proposal_id, html = run(scenario())
    assert f'id="proposal-{proposal_id}"' in html and "From afar" in html


def _test_database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@override_settings(ALLOWED_HOSTS=["127.0.0.1", "testserver"])
def test_logging_out_closes_the_reviewers_sockets(reviewer: User) -> None:
    client = Client()
    client.force_login(reviewer)
    cookie = (
        b"cookie",
        f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode(),
    )

    async def scenario() -> dict[str, Any]:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        response = await database_sync_to_async(client.post)("/logout/")
        assert response.status_code == 302
        closed = await ws.receive_output(timeout=3)
        await ws.wait(timeout=2)
        return dict(closed)

    closed = run(scenario())
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


def test_updates_are_rendered_and_sent_only_while_a_page_listens(
    shop: Any, refund_type: Any
) -> None:
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    from approvals import events
    from tests.conftest import refund_body

    cache.delete(f"gatehouse:listening:type-{refund_type.pk}")
    layer = get_channel_layer()
    group = events.group_for_action_type(refund_type.pk)

    async def submit_and_listen() -> dict[str, Any] | None:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await database_sync_to_async(shop.post_json)("/api/v1/proposals", refund_body())
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout=1)
        except TimeoutError:
            return None
        finally:
            await layer.group_discard(group, channel)

    assert events.anyone_listening(refund_type.pk) is False
    assert run(submit_and_listen()) is None  # nobody's page is open: nothing rendered or sent

    events.mark_listening([refund_type.pk])
    message = run(submit_and_listen())
    assert message is not None
    assert "Refund a late delivery" in message["html"]


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_an_open_page_marks_its_action_types_as_listened_to(
    reviewer: User, refund_type: Any
) -> None:
    from django.core.cache import cache

    from approvals import events

    cache.delete(f"gatehouse:listening:type-{refund_type.pk}")
    cookie = session_cookie(reviewer)

    async def scenario() -> bool:
        ws = communicator(ORIGIN, cookie)
        connected, _ = await ws.connect()
        assert connected
        for _ in range(50):
            if await database_sync_to_async(events.anyone_listening)(refund_type.pk):
                break
            await asyncio.sleep(0.05)
        listening = await database_sync_to_async(events.anyone_listening)(refund_type.pk)
        await ws.disconnect()
        return listening

    assert run(scenario()) is True


def test_a_process_rechecks_presence_after_its_absence_memory(
    refund_type: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from django.core.cache import cache

    from approvals import events

    monkeypatch.setattr(events, "ABSENCE_MEMORY", 0.2)
    key = f"gatehouse:listening:type-{refund_type.pk}"
    cache.delete(key)
    assert events.anyone_listening(refund_type.pk) is False
    cache.set(key, 1, timeout=60)  # a page opened in another process
    assert events.anyone_listening(refund_type.pk) is False  # still remembered as absent
    time.sleep(0.25)
    assert events.anyone_listening(refund_type.pk) is True


@override_settings(ALLOWED_HOSTS=["127.0.0.1"], LIVE_SESSION_CHECK_SECONDS=0.2)
@pytest.mark.parametrize("how", ["expired", "flushed", "password-changed"])
def test_a_session_that_ends_without_logout_closes_its_socket(reviewer: User, how: str) -> None:
    cookie = session_cookie(reviewer)
    key = cookie[1].decode().split("=", 1)[1]

    def end_session() -> None:
        if how == "expired":
            Session.objects.filter(session_key=key).update(
                expire_date=timezone.now() - timedelta(seconds=1)
            )
        elif how == "flushed":
            Session.objects.filter(session_key=key).delete()
        else:
            reviewer.set_password("a-new-password-9")
            reviewer.save()

    async def scenario() -> dict[str, Any]:
        ws = communicator(cookie, ORIGIN)
        assert (await ws.connect())[0]
        await ws.receive_nothing(timeout=0.6)  # still valid: checked twice, still open
        await database_sync_to_async(end_session)()
        closed = await ws.receive_output(timeout=3)
        await ws.wait(timeout=2)
        return dict(closed)

    closed = run(scenario())
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_a_push_reaches_the_socket_without_a_hop_to_the_sync_thread(
    shop: Any, reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 sockets at 100 proposals a second are 5,000 pushes a second: channels' per-message
    close_old_connections (a hop onto the one sync thread) is skipped for them."""
    import channels.consumer

    hops: list[str] = []

    async def counted() -> None:  # counts the hops instead of making them
        hops.append("hop")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    mine = session_cookie(reviewer)

    async def scenario() -> tuple[str, int]:
        ws = communicator(mine, ORIGIN)
        assert (await ws.connect())[0]
        before = len(hops)
        await database_sync_to_async(_submit)(shop)
        html = await receive_text(ws)
        pushed = len(hops) - before
        await ws.disconnect()
        return html, pushed

    html, hops_for_the_push = run(scenario())
    assert 'class="queue-row"' in html
    assert hops_for_the_push == 0
    assert hops, "the connect still went through channels' dispatch"
