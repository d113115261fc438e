"""Talking to an upstream MCP server: list its tools, forward one call.

Every connection goes through the webhooks' egress check: the upstream's host is resolved once,
refused if it is private, loopback or link-local (unless GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS is
on), and every request of the connection goes to that checked address (no DNS rebinding between
the check and the call). Headers come from environment variables named in `headers_env`, so no
upstream secret is stored in the database. Everything is bounded by MCP_UPSTREAM_TIMEOUT.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from foundation import webhooks
from mcpgate.models import Upstream

USER_AGENT = "Gatehouse-MCP-Gateway/1"


class UpstreamError(Exception):
    """The upstream could not be reached, refused the connection, or did not answer in time."""


def upstream_headers(upstream: Upstream) -> dict[str, str]:
    """The headers named in `headers_env`, read from the environment now."""
    headers = {"user-agent": USER_AGENT}
    for header, variable in (upstream.headers_env or {}).items():
        value = os.environ.get(str(variable))
        if value is None:
            raise UpstreamError(
                f"The environment variable {variable} (header {header} for upstream "
                f"{upstream.name!r}) is not set on this Gatehouse process."
            )
        headers[str(header)] = value
    return headers


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One per process: loading the trust store takes longer than a whole call on a LAN."""
    return httpx2.create_ssl_context()


class _PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends every request for the checked origin to the address the egress check resolved."""

    def __init__(self, origin: httpx2.URL, address: str) -> None:
        self._origin = (origin.scheme, origin.host, origin.port)
        self._address = address
        self._inner = httpx2.AsyncHTTPTransport(verify=_tls_context(), trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if (request.url.scheme, request.url.host, request.url.port) != self._origin:
            raise httpx2.ConnectError(f"refused: {request.url} is not the upstream's origin")
        # The Host header was set from the original URL when the request was built; TLS checks
        # the certificate against the original name.
        request.extensions = {**request.extensions, "sni_hostname": request.url.host}
        request.url = request.url.copy_with(host=self._address)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _checked_address(url: str) -> str:
    try:
        target, _host = webhooks.resolve_target(url)
    except webhooks.EgressRefused as exc:
        raise UpstreamError(f"The upstream URL is refused: {exc}") from None
    return str(httpx2.URL(target).host)


@asynccontextmanager
async def connect(upstream: Upstream) -> AsyncIterator[Client]:
    """An MCP client session with the upstream, for one gateway operation."""
    headers = upstream_headers(upstream)
    address = await anyio.to_thread.run_sync(_checked_address, upstream.url)
    timeout = settings.MCP_UPSTREAM_TIMEOUT.total_seconds()
    http = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout),
        transport=_PinnedTransport(httpx2.URL(upstream.url), address),
        trust_env=False,
    )
    async with http:
        client = Client(
            streamable_http_client(upstream.url, http_client=http),
            read_timeout_seconds=timeout,
            cache=None,
        )
        async with client:
            yield client


def _describe(exc: BaseException) -> str:
    """One line for an error that may be an exception group from the client's task group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


@asynccontextmanager
async def _answering(what: str) -> AsyncIterator[None]:
    """Within MCP_UPSTREAM_TIMEOUT, or UpstreamError saying `what` did not happen and why."""
    try:
        with anyio.fail_after(settings.MCP_UPSTREAM_TIMEOUT.total_seconds()):
            yield
    except UpstreamError:
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception | BaseExceptionGroup):
            raise  # cancellation and the like are not the upstream's failure
        raise UpstreamError(f"{what}: {_describe(exc)}") from None


async def list_tools(upstream: Upstream) -> list[types.Tool]:
    """Every tool the upstream offers (all pages)."""
    tools: list[types.Tool] = []
    failed = f"Upstream {upstream.name!r} did not list its tools"
    async with _answering(failed), connect(upstream) as client:
        cursor: str | None = None
        for _page in range(100):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
    return tools


async def call_tool(upstream: Upstream, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Forward one tools/call; the upstream's CallToolResult as JSON (isError included).

    The result is passed back as the upstream gave it: no output-schema check here, which
    would need another round trip and could fail only after the call took effect.
    """
    failed = f"Upstream {upstream.name!r} did not answer the call of {name!r}"
    async with _answering(failed), connect(upstream) as client:
        result = await client.session.send_request(
            types.CallToolRequest(
                params=types.CallToolRequestParams(name=name, arguments=arguments)
            ),
            types.CallToolResult,
        )
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)
