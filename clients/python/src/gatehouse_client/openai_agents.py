"""Gatehouse as the approval backend of the OpenAI Agents SDK (extra `openai-agents`).

    refund = gatehouse_tool(gh, issue_refund, action_type="refund.issue",
                            summary=lambda a: f"Refund {a['amount']}", confidence=0.8)
    agent = Agent(name="support", tools=[refund], model=...)
    result = await Runner.run(agent, "ORD-7 arrived broken")
    while result.interruptions:                       # calls a reviewer has to decide
        saved = result.to_state().to_string()         # survives a restart: store it anywhere
        state = await RunState.from_string(agent, saved)
        await resolve_interruptions(gh, state, timeout=300)
        result = await Runner.run(agent, state)

How a call goes: the SDK asks the tool's `needs_approval`, which proposes the model's arguments
(Idempotency-Key `openai-agents:<action type>:<call id>`, so asking again finds the same
proposal; call ids must be unique across runs, as OpenAI's are — a provider that reuses them
would make a later run find an earlier run's proposal). A rule decided → no pause; otherwise the run pauses with the call among its
interruptions. `resolve_interruptions` waits for Gatehouse's decisions and approves or rejects
each call in the run state (a rejection reaches the model as the tool's result, with the
reason). Whatever the run state says, the tool body runs only after Gatehouse itself answers
`approved`, and then with the approved payload — a reviewer's edit applies — whose hash Gatehouse
reports; every other answer becomes the tool's result text and nothing runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Unpack

from agents import FunctionTool, RunContextWrapper, RunState, function_tool
from agents.tool_context import ToolContext

from gatehouse_client.client import AsyncGatehouse
from gatehouse_client.decorator import (
    Derived,
    Gate,
    GateOptions,
    approved_payload,
    areport,
    as_payload,
    call_key,
    rejection_text,
)
from gatehouse_client.errors import NotApproved
from gatehouse_client.models import Proposal

log = logging.getLogger("gatehouse_client")

_GATE_ATTR = "_gatehouse_gate"


def _key(gate: Gate, call_id: str) -> str:
    return call_key("openai-agents", gate.action_type, call_id)


async def _propose(client: AsyncGatehouse, gate: Gate, arguments: Any, call_id: str) -> Proposal:
    """The call's proposal: created the first time, found again (same key, same body) after."""
    payload = as_payload(
        arguments if isinstance(arguments, dict) else json.loads(arguments or "{}")
    )
    return await client.propose(**gate.propose_kwargs(payload, _key(gate, call_id)))


def gatehouse_tool(
    client: AsyncGatehouse,
    func: Callable[..., Any],
    *,
    action_type: str,
    summary: str | Derived,
    confidence: float | Derived,
    name: str | None = None,
    description: str | None = None,
    report_result: bool = True,
    **details: Unpack[GateOptions],
) -> FunctionTool:
    """A function tool whose calls Gatehouse decides; see the module docstring."""
    inner = function_tool(func, name_override=name, description_override=description)
    gate = Gate(action_type=action_type, summary=summary, confidence=confidence, **details)

    async def needs_approval(
        _ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str
    ) -> bool:
        proposal = await _propose(client, gate, params, call_id)
        log.info("proposal %s for tool call %s: %s", proposal.id, call_id, proposal.state)
        return not proposal.is_decided

    async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
        proposed = as_payload(json.loads(arguments or "{}"))
        first = await _propose(client, gate, proposed, ctx.tool_call_id)
        # The replayed answer is the first one; the decision is read fresh.
        proposal = await client.get(first.id)
        try:
            approved = approved_payload(proposal, proposed=proposed)
        except NotApproved as exc:
            return rejection_text(exc)
        # The SDK parses and validates these arguments exactly as it would the model's.
        try:
            result = await inner.on_invoke_tool(ctx, json.dumps(approved))
        except Exception as exc:
            await areport(client, proposal, report_result, "failed", repr(exc))
            raise
        await areport(client, proposal, report_result, "executed", "")
        return result

    tool = FunctionTool(
        name=inner.name,
        description=inner.description,
        params_json_schema=inner.params_json_schema,
        on_invoke_tool=invoke,
        strict_json_schema=inner.strict_json_schema,
        needs_approval=needs_approval,
    )
    tool.__dict__[_GATE_ATTR] = gate  # found again by resolve_interruptions
    return tool


def _gate_for(item: Any) -> Gate | None:
    agent = getattr(item, "agent", None)
    for tool in getattr(agent, "tools", None) or []:
        if isinstance(tool, FunctionTool) and tool.name == item.tool_name:
            gate = tool.__dict__.get(_GATE_ATTR)
            if isinstance(gate, Gate):
                return gate
    return None


async def resolve_interruptions(
    client: AsyncGatehouse, state: RunState[Any, Any], *, timeout: float = 60.0
) -> bool:
    """Apply Gatehouse's decisions to a paused run's Gatehouse tool calls.

    Waits up to `timeout` seconds for each undecided proposal. Approved → `state.approve`;
    rejected, expired or cancelled → `state.reject` with the reason as the tool's result.
    Returns True when every Gatehouse interruption is decided (resume the run with
    `Runner.run(agent, state)`); False when some still wait (keep the state and try later).
    Interruptions of other tools are left to you.
    """
    settled = True
    for item in state.get_interruptions():
        gate = _gate_for(item)
        if gate is None or item.call_id is None:
            continue
        proposal = await _propose(client, gate, item.arguments, item.call_id)
        proposal = await client.wait(proposal.id, timeout=timeout)
        if not proposal.is_decided:
            settled = False
            continue
        try:
            approved_payload(proposal, proposed=proposal.payload)
        except NotApproved as exc:
            state.reject(item, rejection_message=rejection_text(exc))
        else:
            state.approve(item)
    return settled
