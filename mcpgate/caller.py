"""Who is calling an MCP endpoint, and how Gatehouse answers a call it will not carry out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server import ServerRequestContext

from approvals.models import Proposal, Service
from mcpgate.models import Upstream

SCOPE_KEY = "gatehouse.mcp"


@dataclass(frozen=True)
class Caller:
    """Set on the ASGI scope by mcpgate.asgi once the service's key checked out."""

    service: Service
    upstream: Upstream | None = None  # the gateway called, if any


def caller_of(ctx: ServerRequestContext[Any]) -> Caller:
    request = ctx.request
    caller = request.scope.get(SCOPE_KEY) if request is not None else None
    if not isinstance(caller, Caller):
        # Only mcpgate.asgi reaches the handlers, and it always sets the caller.
        raise RuntimeError("MCP request without an authenticated caller")
    return caller


def field_name(loc: list[Any]) -> str:
    """`["body", "payload", "path"]` → `payload.path`: the field as the caller wrote it."""
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "arguments"


def tool_error(
    message: str,
    *,
    code: str,
    errors: list[dict[str, Any]] | None = None,
    proposal: Proposal | None = None,
    strip: str | None = None,
) -> types.CallToolResult:
    """A tool result with isError: the model reads it and can correct itself.

    `errors` are approvals' field errors; `strip` drops a leading part of their location
    (the gateway's arguments are the payload itself).
    """
    fields = []
    for error in errors or []:
        loc = [p for p in error.get("loc", []) if p != "body"]
        if strip and loc and loc[0] == strip:
            loc = loc[1:]
        fields.append({"field": field_name(loc), "msg": str(error.get("msg", ""))})
    text = message
    if fields:
        text += "\n" + "\n".join(f"- {f['field']}: {f['msg']}" for f in fields)
    structured: dict[str, Any] = {"error": code, "detail": message}
    if fields:
        structured["errors"] = fields
    if proposal is not None:
        structured["proposal"] = {"id": str(proposal.pk), "state": proposal.state}
    return types.CallToolResult(
        content=[types.TextContent(text=text)], structured_content=structured, is_error=True
    )
