"""The gateway at /mcp/gateway/<name>: an MCP server in front of an upstream MCP server.

tools/list passes the upstream's tools through (recording new ones, each with its action type
`mcp.<upstream>.<tool>`). tools/call becomes a proposal of that action type through approvals'
own submit, and the rules decide: approved → forwarded once and the upstream's result returned;
pending → wait up to MCP_GATEWAY_WAIT with progress notifications, then a tool error naming
the proposal; rejected → a tool error with the reason. See mcpgate/services.py for the states.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import mcp_types as types
from django.conf import settings
from mcp.server import Server, ServerRequestContext

from approvals.models import ExecutorKind, Proposal
from foundation import problems
from foundation.errors import ApplicationError
from mcpgate import db, services, upstream
from mcpgate.caller import Caller, caller_of, tool_error
from mcpgate.models import Call, Tool

State = Proposal.State
_FIRST_PAUSE, _MAX_PAUSE = 0.05, 0.5


def _tool_of(upstream_id: int, name: str) -> Tool | None:
    return (
        Tool.objects.select_related("upstream", "action_type")
        .filter(upstream_id=upstream_id, name=name)
        .first()
    )


def _load(proposal_id: uuid.UUID) -> Proposal:
    return Proposal.objects.select_related("action_type", "decision_reviewer", "service").get(
        pk=proposal_id
    )


def _recorded_call(proposal_id: uuid.UUID) -> Call | None:
    return Call.objects.filter(pk=proposal_id).first()


async def _listed_tools(caller: Caller) -> list[types.Tool]:
    assert caller.upstream is not None
    tools = await upstream.list_tools(caller.upstream)
    await db.run(
        services.tools_record,
        upstream=caller.upstream,
        tools=[t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools],
    )
    return tools


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    caller = caller_of(ctx)
    try:
        tools = await _listed_tools(caller)
    except upstream.UpstreamError as exc:
        # A JSON-RPC error: the listing itself failed, there is no tool to report it from.
        raise _mcp_error(str(exc)) from None
    return types.ListToolsResult(tools=tools)


def _mcp_error(message: str) -> Exception:
    from mcp.shared.exceptions import MCPError

    return MCPError(code=types.INTERNAL_ERROR, message=message)


def _call_meta(params: types.CallToolRequestParams) -> services.CallMeta:
    """The optional io.gatehouse/* keys of the request's `_meta`, checked; bad values ignored."""
    meta: dict[str, Any] = dict(params.meta) if params.meta is not None else {}
    confidence = meta.get("io.gatehouse/confidence")
    rationale = meta.get("io.gatehouse/rationale")
    summary = meta.get("io.gatehouse/summary")
    return services.CallMeta(
        confidence=float(confidence)
        if isinstance(confidence, int | float)
        and not isinstance(confidence, bool)
        and 0 <= confidence <= 1
        else 0.0,
        rationale=rationale[:20_000] if isinstance(rationale, str) else "",
        summary=summary.strip()[:200] if isinstance(summary, str) else "",
    )


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    caller = caller_of(ctx)
    assert caller.upstream is not None
    gateway = caller.upstream
    tool = await db.run(_tool_of, gateway.pk, params.name)
    if tool is None:
        # First sight of this tool (or of this gateway): learn the upstream's tools.
        try:
            await _listed_tools(caller)
        except upstream.UpstreamError as exc:
            return tool_error(str(exc), code="upstream-unavailable")
        tool = await db.run(_tool_of, gateway.pk, params.name)
    if tool is None:
        return tool_error(
            f"The upstream {gateway.name!r} offers no tool {params.name!r} that Gatehouse can "
            "check (unknown, or its input schema is not valid JSON Schema).",
            code="unknown-tool",
        )
    arguments = params.arguments or {}
    unstorable = problems.check_storable(arguments)
    if unstorable:
        return tool_error(f"The arguments are refused: {unstorable}.", code="malformed-arguments")
    try:
        proposal, _earlier = await db.run(
            services.call_propose,
            service=caller.service,
            tool=tool,
            arguments=arguments,
            meta=_call_meta(params),
        )
    except ApplicationError as exc:
        return tool_error(exc.message, code=exc.code, errors=exc.errors, strip="payload")
    return await _follow(ctx, tool, proposal.pk)


async def _follow(
    ctx: ServerRequestContext[Any], tool: Tool, proposal_id: uuid.UUID
) -> types.CallToolResult:
    """Answer the call from its proposal: forward it once approved, wait while it is pending."""
    started = time.monotonic()
    wait = settings.MCP_GATEWAY_WAIT.total_seconds()
    interval = settings.MCP_PROGRESS_INTERVAL
    next_progress = started
    pause = _FIRST_PAUSE
    while True:
        proposal = await db.run(_load, proposal_id)
        state = proposal.state
        if state == State.APPROVED:
            if proposal.action_type.executor_kind != ExecutorKind.NONE:
                return tool_error(
                    f"{proposal.action_type.key} has executor {proposal.action_type.executor_kind}: "
                    "Gatehouse executes it, not the gateway. Set its executor to none to forward "
                    "approved calls.",
                    code="executor-not-none",
                    proposal=proposal,
                )
            call = await db.run(
                services.forward_start, proposal_id=proposal_id, upstream=tool.upstream, tool=tool
            )
            if call is not None:
                return await _forward(call, tool, proposal)
            continue  # another caller took it: follow that forward
        if state == State.EXECUTED:
            return _recorded(await db.run(_recorded_call, proposal_id), proposal)
        if state == State.FAILED:
            recorded = await db.run(_recorded_call, proposal_id)
            if recorded is not None and recorded.result is not None:
                return _recorded(recorded, proposal)
            reason = (recorded.error if recorded else "") or await db.run(_event_detail, proposal)
            return tool_error(
                f"The call failed: {reason}", code="forward-failed", proposal=proposal
            )
        if state in (State.REJECTED, State.EXPIRED, State.CANCELLED):
            return _refused(proposal)
        if state == State.EXECUTING:
            await db.run(services.forward_abandon_if_stale, proposal_id=proposal_id)
        elapsed = time.monotonic() - started
        if elapsed >= wait:
            return _still_pending(proposal)
        now = time.monotonic()
        if now >= next_progress:
            await ctx.session.report_progress(
                progress=round(elapsed, 1),
                total=wait,
                message=f"Waiting for a reviewer: proposal {proposal.pk} ({state})",
            )
            next_progress = now + interval
        await anyio.sleep(min(pause, max(wait - elapsed, 0.0), max(next_progress - now, 0.01)))
        pause = min(pause * 1.5, _MAX_PAUSE)


async def _forward(call: Call, tool: Tool, proposal: Proposal) -> types.CallToolResult:
    # Shielded: a caller hanging up must not leave a forward half done and its result unrecorded
    # (the upstream call keeps its own MCP_UPSTREAM_TIMEOUT).
    with anyio.CancelScope(shield=True):
        try:
            result = await upstream.call_tool(tool.upstream, tool.name, dict(call.arguments))
        except upstream.UpstreamError as exc:
            await db.run(services.forward_finish, call=call, error=str(exc))
            return tool_error(
                f"{exc} The proposal {proposal.pk} records the failure; the call is not retried.",
                code="upstream-unavailable",
                proposal=proposal,
            )
        await db.run(services.forward_finish, call=call, result=result)
    return types.CallToolResult.model_validate(result)


def _recorded(call: Call | None, proposal: Proposal) -> types.CallToolResult:
    if call is None or call.result is None:
        return tool_error(
            f"Proposal {proposal.pk} is {proposal.state}, but no result was recorded through "
            "the gateway (the service reported it).",
            code="no-recorded-result",
            proposal=proposal,
        )
    return types.CallToolResult.model_validate(call.result)


def _event_detail(proposal: Proposal) -> str:
    event = proposal.events.filter(to_state=proposal.state).order_by("-id").first()
    data = event.data if event is not None else {}
    return str(data.get("error") or data.get("detail") or "no detail was recorded")


def _refused(proposal: Proposal) -> types.CallToolResult:
    who = {
        State.REJECTED: "rejected"
        + (
            f" by {proposal.decision_reviewer.get_username()}"
            if proposal.decision_reviewer
            else f" by rule {proposal.decision_rule}"
            if proposal.decision_rule
            else ""
        ),
        State.EXPIRED: "expired without a decision",
        State.CANCELLED: "cancelled",
    }[State(proposal.state)]
    reason = proposal.decision_reason or "no reason given"
    return tool_error(
        f"Gatehouse did not forward this call: proposal {proposal.pk} was {who}. Reason: {reason}",
        code=f"proposal-{proposal.state}",
        proposal=proposal,
    )


def _still_pending(proposal: Proposal) -> types.CallToolResult:
    if proposal.state == State.EXECUTING:
        return tool_error(
            f"Proposal {proposal.pk} is approved and another call of this tool is forwarding it "
            "now; call again with the same arguments for its result.",
            code="forwarding",
            proposal=proposal,
        )
    return tool_error(
        f"This call waits for a reviewer: proposal {proposal.pk}. Follow it with the "
        f"get_proposal tool of Gatehouse's MCP server (/mcp) and call this tool again with "
        "the same arguments once it is approved: it is then forwarded once.",
        code="pending-review",
        proposal=proposal,
    )


def build() -> Server[Any]:
    return Server(
        "gatehouse-gateway",
        title="Gatehouse MCP gateway",
        instructions="Calls that change things wait for Gatehouse's rules or a reviewer.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        # Mcp-Param-* headers are not routed on here; checking them would list the upstream's
        # tools before every call.
        get_tool_input_schema=lambda name: None,
    )
