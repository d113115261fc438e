"""`GET /api/v1/proposals/{id}?wait=` on the ASGI process (the Procfile's `live:`), at the
cost of one thread hop.

Django's ASGI handler in front of the sync middleware and an async view hops between the event
loop and a thread about 32 times a request: 17-23 ms of CPU per long poll, so 500 waiters woken
by one decision were answered 20-50 s later (bench/long_poll.py, bench/README.md). Here the
request runs through Django's synchronous handler, every middleware and the view included, in
ONE hop onto a small thread pool, exactly as the WSGI process would run it: the same service-key
authentication and tenancy (another service's proposal is 404 at once), the same problem+json
errors, the same headers (request id, security headers) and logging. When the view finds the
proposal still pending it does not block that thread: it answers with the response it would
have sent, marked `long_poll`, and its thread gives the database connection back to the pool.
The wait itself is a coroutine on the event loop (approvals/waits.py: one Redis subscription
and one batched re-read per process); when the proposal is decided or time runs out, the body is
rendered afresh from the shared reading and sent. A client that disconnects while waiting
cancels the wait.

Under WSGI (the `web:` process, the test client) the view waits on its own thread instead:
deploy/nginx.conf routes every `?wait=` to `live:`, so that happens only without the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import re
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from asgiref.sync import async_to_sync
from django.core import signals
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

from approvals import waits
from approvals.models import Proposal
from approvals.representation import proposal_representation
from foundation import jsonfast

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = re.compile(r"^/api/v1/proposals/[0-9a-fA-F-]+$")  # as deploy/nginx.conf routes it
DEFERRED = "gatehouse.long_poll"  # in the scope: the view may leave the waiting to us

# The synchronous part of the requests at once: their first reads take at most this many of
# the database pool's connections (DB_POOL_MAX), and a burst of waiters queues here instead.
_executor = ThreadPoolExecutor(max_workers=waits.LOAD_CONCURRENCY, thread_name_prefix="longpoll")


@dataclass(frozen=True)
class LongPoll:
    """What the view leaves to the event loop: wait on `proposal` (read from `since`)."""

    proposal: Proposal
    since: float
    wait: float


def respond(request: HttpRequest, proposal: Proposal, *, since: float, wait: float) -> HttpResponse:
    """The view's answer for `proposal`, read as its service by a query started at `since`:
    at once if decided or not waiting; otherwise once decided or `wait` seconds have passed."""
    response = _render(proposal)
    if wait <= 0 or proposal.is_decided:
        return response
    if getattr(request, "scope", {}).get(DEFERRED):
        response.long_poll = LongPoll(proposal, since, wait)  # type: ignore[attr-defined]
        return response
    # On a WSGI thread: wait here, without a database connection for the time.
    if not connection.in_atomic_block:  # (tests run each in a transaction)
        connection.close()
    latest = async_to_sync(waits.proposal_wait_after_read)(proposal, since=since, wait=wait)
    return _render(latest)


def _render(proposal: Proposal) -> HttpResponse:
    body = jsonfast.dumps(proposal_representation(proposal))
    return HttpResponse(body, status=200, content_type="application/json")


def mount(app: Any) -> ASGIApp:
    """`app` (Django's ASGI handler), with the long polls served here."""
    handler = BaseHandler()
    handler.load_middleware(is_async=False)  # as WSGIHandler does

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_long_poll(scope):
            await serve(handler, scope, receive, send)
        else:
            await app(scope, receive, send)

    return application


def is_long_poll(scope: Scope) -> bool:
    if scope["method"] != "GET" or not PATH.match(scope["path"]):
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    return any(name == "wait" for name, _ in parse_qsl(query, keep_blank_values=True))


async def serve(handler: BaseHandler, scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    if body is None:
        return  # gone before asking
    waits.registry().start()  # listening before the view reads: what changes after it is heard
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    response = await loop.run_in_executor(
        _executor, context.run, _respond, handler, {**scope, DEFERRED: True}, body
    )
    long_poll: LongPoll | None = getattr(response, "long_poll", None)
    if long_poll is not None:
        proposal = await _until_decided_or_gone(long_poll, receive)
        if proposal is None:
            return  # the client went away: nothing to send, nothing left waiting
        response.content = _render(proposal).content
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
    await _send(response, send)


def _respond(handler: BaseHandler, scope: Scope, body: bytes) -> HttpResponse:
    """Django's synchronous request cycle, as WSGIHandler runs it, on this thread."""
    set_script_prefix(get_script_prefix(scope))
    signals.request_started.send(sender=handler.__class__, scope=scope)
    try:
        request = ASGIRequest(scope, io.BytesIO(body))
    except UnicodeDecodeError:
        response: HttpResponse = HttpResponseBadRequest()
    else:
        response = _buffered(handler.get_response(request))
    # request_finished: the database connection goes back to the pool before any waiting.
    response.close()
    return response


def _buffered(response: HttpResponseBase) -> HttpResponse:
    """A streamed response (none on this path today) read whole."""
    if isinstance(response, HttpResponse):
        return response
    whole = HttpResponse(b"".join(response), status=response.status_code)  # type: ignore[attr-defined]
    whole.headers, whole.cookies = response.headers, response.cookies
    response.close()
    return whole


async def _until_decided_or_gone(long_poll: LongPoll, receive: Receive) -> Proposal | None:
    waiting = asyncio.ensure_future(
        waits.proposal_wait_after_read(
            long_poll.proposal, since=long_poll.since, wait=long_poll.wait
        )
    )
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, gone):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return waiting.result() if not waiting.cancelled() else None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(response: HttpResponse, send: Send) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    headers += [
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
