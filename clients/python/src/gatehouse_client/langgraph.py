"""Gatehouse as the approval backend of LangGraph (extra `langgraph`).

    refund = gatehouse_tool(gh, issue_refund, action_type="refund.issue",
                            summary=lambda a: f"Refund {a['amount']}", confidence=0.8)
    graph = builder.compile(checkpointer=SqliteSaver(conn))   # tools=ToolNode([refund])
    config = {"configurable": {"thread_id": "ticket-4711"}}
    graph.invoke({"messages": [...]}, config)        # may stop: a call waits for a reviewer
    ...                                                # any time later, in any process:
    resume_when_decided(gh, graph, config, timeout=300)

Each call of the tool proposes its arguments (Idempotency-Key `langgraph:<action type>:<thread
id>:<tool call id>`: LangGraph re-runs an interrupted node from its start, and the re-run finds the same
proposal). A rule decided → it goes on at once; otherwise the tool calls `interrupt()` with the
proposal's id and the graph stops, its state in the checkpointer. `resume_when_decided` waits for
Gatehouse's decisions and resumes with `Command(resume=…)`. The resume value is never trusted:
the tool reads the decision from Gatehouse, runs only when approved, with the approved payload (a
reviewer's edit applies) bound to its hash, and otherwise returns the reason as its result so
the model can change course.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, Unpack

from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.config import get_config
from langgraph.types import Command, interrupt

from gatehouse_client.client import Gatehouse
from gatehouse_client.decorator import (
    Derived,
    Gate,
    GateOptions,
    _Binder,
    approved_payload,
    call_key,
    rejection_text,
    report,
)
from gatehouse_client.errors import NotApproved

log = logging.getLogger("gatehouse_client")

INTERRUPT_KIND = "gatehouse.review"


def gatehouse_tool(
    client: Gatehouse,
    func: Callable[..., Any],
    *,
    action_type: str,
    summary: str | Derived,
    confidence: float | Derived,
    name: str | None = None,
    description: str | None = None,
    report_result: bool = True,
    **details: Unpack[GateOptions],
) -> StructuredTool:
    """A LangChain tool (for `ToolNode` or any agent) whose calls Gatehouse decides."""
    binder = _Binder(func)
    gate = Gate(action_type=action_type, summary=summary, confidence=confidence, **details)

    def gated(**kwargs: Any) -> Any:
        call_id = str(kwargs.pop("tool_call_id"))
        proposed = binder.payload((), kwargs)
        key = call_key("langgraph", action_type, _thread_id(), call_id)
        proposal = client.propose(**gate.propose_kwargs(proposed, key))
        if proposal.replayed:  # a re-run of the node: the first answer is history
            proposal = client.get(proposal.id)
        if not proposal.is_decided:
            # Stops the graph here the first time; on resume returns, and the decision is read
            # from Gatehouse rather than taken from the resume value.
            interrupt(
                {
                    "kind": INTERRUPT_KIND,
                    "proposal_id": proposal.id,
                    "action_type": action_type,
                    "summary": proposal.summary,
                    "review_url": proposal.links.get("review"),
                }
            )
            proposal = client.get(proposal.id)
        try:
            approved = approved_payload(proposal, proposed=proposed)
            args, call_kwargs = binder.call_args(approved, proposal)
        except NotApproved as exc:
            return rejection_text(exc)
        try:
            result = func(*args, **call_kwargs)
        except Exception as exc:
            report(client, proposal, report_result, "failed", repr(exc))
            raise
        report(client, proposal, report_result, "executed", "")
        return result

    # The tool's schema: the function's parameters plus the call id LangChain injects (hidden
    # from the model), which keys the proposal.
    params = list(binder.signature.parameters.values())
    params.append(
        inspect.Parameter(
            "tool_call_id",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, InjectedToolCallId],
        )
    )
    gated.__signature__ = binder.signature.replace(parameters=params)  # type: ignore[attr-defined]
    gated.__annotations__ = {
        **{p.name: p.annotation for p in params if p.annotation is not p.empty},
    }
    gated.__name__ = name or func.__name__
    gated.__doc__ = func.__doc__
    return StructuredTool.from_function(
        func=gated,
        name=name or func.__name__,
        description=description or inspect.getdoc(func) or func.__name__,
    )


def _thread_id() -> str:
    """The graph thread the call runs in: model call ids need only be unique within a thread."""
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # called outside a graph
        return "-"
    return str(configurable.get("thread_id", "-"))


def pending_reviews(graph: Any, config: dict[str, Any]) -> dict[str, str]:
    """The thread's open Gatehouse interrupts: interrupt id → proposal id."""
    snapshot = graph.get_state(config)
    found: dict[str, str] = {}
    for item in snapshot.interrupts:
        value = item.value
        if isinstance(value, dict) and value.get("kind") == INTERRUPT_KIND:
            found[item.id] = str(value["proposal_id"])
    return found


def resume_when_decided(
    client: Gatehouse, graph: Any, config: dict[str, Any], *, timeout: float = 60.0
) -> Any | None:
    """Resume a thread paused for review once Gatehouse decided every open review.

    Waits up to `timeout` seconds for each. Returns what `graph.invoke` returns after resuming,
    or None when something is still undecided (nothing resumed; call again later).
    """
    pending = pending_reviews(graph, config)
    if not pending:
        return None
    states: dict[str, str] = {}
    for interrupt_id, proposal_id in pending.items():
        proposal = client.wait(proposal_id, timeout=timeout)
        if not proposal.is_decided:
            return None
        states[interrupt_id] = proposal.state
    return graph.invoke(Command(resume=states), config)
