"""Mounting MCP on the ASGI application: /mcp (Gatehouse's server) and /mcp/gateway/<name>.

`mount(django_http)` routes those paths here and everything else to Django. Before the MCP SDK
sees a request, the service's API key is checked by the REST API's own code (no key, an
unknown or a revoked one → 401) and, for a gateway, the service's access to it (403) — so the
SDK's handlers always know their caller (mcpgate.caller).

The SDK's streamable HTTP transport runs its requests in a task group that must be entered
before the first request and left at shutdown. `McpRuntime` keeps one per event loop: started
by the ASGI lifespan under uvicorn (the Procfile's `web`), or by the first request on a server
that does not run the lifespan (a test server with lifespan off, or another ASGI server).
Sessions are stateless, so any web process behind a load balancer answers any request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import ASGIApp, Receive, Scope, Send

from approvals import services as approvals
from foundation.errors import PROBLEM_TYPE, TITLES, ApplicationError
from mcpgate import db, gateway, server, services
from mcpgate.caller import SCOPE_KEY, Caller

log = logging.getLogger("gatehouse.mcp")

PREFIX = "/mcp"
GATEWAY_PREFIX = "/mcp/gateway/"
OWN, GATEWAY = "own", "gateway"


@dataclass(eq=False)
class _LoopState:
    managers: dict[str, StreamableHTTPSessionManager]
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None


class McpRuntime:
    """The session managers of the MCP servers, one set per event loop."""

    def __init__(self, servers: dict[str, Server[Any]]) -> None:
        self._servers = servers
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def _new_managers(self) -> dict[str, StreamableHTTPSessionManager]:
        return {
            name: StreamableHTTPSessionManager(
                app=srv,
                stateless=True,
                max_request_body_size=settings.API_MAX_BODY_BYTES,
            )
            for name, srv in self._servers.items()
        }

    async def _run(self, state: _LoopState) -> None:
        try:
            async with AsyncExitStack() as stack:
                for manager in state.managers.values():
                    await stack.enter_async_context(manager.run())
                state.ready.set()
                await state.stop.wait()
        except BaseException as exc:
            state.error = exc
            state.ready.set()
            raise

    async def start(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.error is not None:
            # No await between the check and the registration: one start per loop.
            state = _LoopState(managers=self._new_managers())
            self._states[loop] = state
            state.task = loop.create_task(self._run(state), name="mcp-session-managers")
        await state.ready.wait()
        if state.error is not None:
            raise RuntimeError("the MCP session managers did not start") from state.error
        return state

    async def stop(self) -> None:
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None and state.task is not None:
            state.stop.set()
            await asyncio.gather(state.task, return_exceptions=True)

    async def manager(self, name: str) -> StreamableHTTPSessionManager:
        return (await self.start()).managers[name]


runtime = McpRuntime({OWN: server.build(), GATEWAY: gateway.build()})


async def _problem(
    send: Send, status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_TYPE + code,
            "title": TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
        }
    ).encode()
    raw = [(b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(body))]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_allowed(scope: Scope) -> bool:
    """The Host header checked against ALLOWED_HOSTS, as Django checks it for its own views."""
    host = _header(scope, b"host") or ""
    domain, _port = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _bearer(scope: Scope) -> str | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _route(path: str) -> tuple[str, str] | None:
    """(server, gateway name) for an MCP path, None for a path that is not one."""
    path = path.rstrip("/")
    if path == PREFIX:
        return OWN, ""
    if path.startswith(GATEWAY_PREFIX):
        name = path.removeprefix(GATEWAY_PREFIX)
        if name and "/" not in name:
            return GATEWAY, name
    return None


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    """One HTTP request under /mcp."""
    route = _route(scope["path"])
    if route is None:
        await _problem(
            send, 404, "not-found", "No MCP endpoint here: use /mcp or /mcp/gateway/<name>."
        )
        return
    if not _host_allowed(scope):
        await _problem(send, 400, "bad-host", "The Host header is not one of ALLOWED_HOSTS.")
        return
    token = _bearer(scope)
    service = await db.run(approvals.api_key_authenticate, token=token) if token else None
    if service is None:
        await _problem(
            send,
            401,
            "unauthorized",
            "Send a service API key: Authorization: Bearer gh_<prefix>_<secret>.",
            headers={"WWW-Authenticate": "Bearer"},
        )
        return
    kind, name = route
    upstream = None
    if kind == GATEWAY:
        try:
            upstream = await db.run(services.upstream_for_service, name=name, service=service)
        except ApplicationError as exc:
            await _problem(send, exc.status, exc.code, exc.message)
            return
    manager = await runtime.manager(kind)
    await manager.handle_request(
        {**scope, SCOPE_KEY: Caller(service=service, upstream=upstream)}, receive, send
    )


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI lifespan: start the MCP session managers with the server, stop them with it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.start()
            except Exception as exc:
                log.exception("MCP could not start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def mount(django_http: Any) -> ASGIApp:
    """HTTP under /mcp goes to MCP, the rest to `django_http`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            await handle(scope, receive, send)
        else:
            await django_http(scope, receive, send)

    return app
