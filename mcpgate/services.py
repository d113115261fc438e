"""The MCP gateway's writes: upstreams, the tools seen on them, and forwarding approved calls.

A gateway tools/call goes through approvals' own submit (same rules, queue, audit, callbacks as
the REST API). What happens next follows the proposal's state:

1. approved → `forward_start` moves it to executing (a compare-and-set) and records the Call in
   the same transaction; only the request that wins sends the call upstream, so an approved
   call is forwarded once however many callers wait on it;
2. `forward_finish` records the upstream's result on the Call and moves executing → executed
   (or failed, with the error), with the audit event, in one transaction;
3. a caller that finds the proposal executing waits; one that finds it executed gets the
   recorded result; rejected, expired or cancelled answer with the reason.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import locks, statemachine
from approvals import services as approvals
from approvals.models import (
    ActionType,
    AuditEvent,
    ExecutorKind,
    Proposal,
    Rule,
    Service,
    payload_hash,
)
from foundation.errors import ApplicationError, NotFound
from foundation.jsonschemas import check_schema
from mcpgate.models import Call, Tool, Upstream

State = Proposal.State
ACTOR = "mcp-gateway"
RESULT_AUDIT_CHARS = 4000
# A repeated identical call joins a proposal still in one of these states...
OPEN_STATES = [State.RECEIVED, State.PENDING_REVIEW, State.APPROVED, State.EXECUTING]
# ...or is answered from one that ended like this within MCP_GATEWAY_REPLAY_WINDOW. A failed
# forward is not replayed: calling again proposes again.
REPLAYED_STATES = [State.EXECUTED, State.REJECTED, State.EXPIRED, State.CANCELLED]


# --- access -------------------------------------------------------------------------------------


def upstream_for_service(*, name: str, service: Service) -> Upstream:
    """The gateway `name` if `service` may use it: 404 unknown or disabled, 403 not allowed."""
    upstream = Upstream.objects.filter(name=name, enabled=True).first()
    if upstream is None:
        raise NotFound(f"There is no MCP gateway {name!r}.")
    if not upstream.services.filter(pk=service.pk).exists():
        raise ApplicationError(
            f"Service {service.name!r} may not use the MCP gateway {name!r}; an admin can allow it.",
            status=403,
            code="gateway-not-allowed",
        )
    return upstream


# --- tools and their action types -----------------------------------------------------------------


def action_type_key(upstream: Upstream, tool_name: str) -> str:
    return f"mcp.{upstream.name}.{tool_name}"[:100]


@dataclass(frozen=True)
class ToolPolicy:
    irreversible: bool
    risk: str
    read_only: bool


def tool_policy(annotations: dict[str, Any], override: dict[str, Any] | None = None) -> ToolPolicy:
    """What a tool's annotations say, unless the admin's override says otherwise.

    readOnlyHint → passed through (low risk). Otherwise destructiveHint, which MCP defaults to
    true, so a tool without annotations is destructive: irreversible, high risk. An additive
    tool (destructiveHint false) is reversible; medium risk, low if it is also idempotent.
    """
    read_only = annotations.get("readOnlyHint") is True
    if read_only:
        irreversible, risk = False, "low"
    elif annotations.get("destructiveHint") is False:
        irreversible, risk = False, "low" if annotations.get("idempotentHint") is True else "medium"
    else:
        irreversible, risk = True, "high"
    override = override or {}
    if "read_only" in override:
        read_only = bool(override["read_only"])
    return ToolPolicy(
        irreversible=bool(override.get("irreversible", irreversible)),
        risk=str(override.get("risk", risk)),
        read_only=read_only,
    )


def _pass_through_rule_name(key: str) -> str:
    return f"{key}: read-only, passed through"


def _create_tool(upstream: Upstream, spec: dict[str, Any], now: Any) -> Tool | None:
    name = spec["name"]
    schema = spec.get("inputSchema") or {"type": "object"}
    if check_schema(schema) is not None:
        return None  # its arguments could not be checked: the tool is not offered for calls
    annotations = spec.get("annotations") or {}
    policy = tool_policy(annotations, (upstream.tool_overrides or {}).get(name))
    key = action_type_key(upstream, name)
    action_type, _ = ActionType.objects.get_or_create(
        key=key,
        defaults={
            "title": (spec.get("title") or annotations.get("title") or name)[:200],
            "description": (spec.get("description") or "")[:5000],
            "payload_schema": schema,
            "irreversible": policy.irreversible,
            "risk": policy.risk,
            "executor_kind": ExecutorKind.NONE,  # the gateway forwards it
            "reviewer_group": upstream.reviewer_group,
        },
    )
    action_type.services.add(*upstream.services.all())
    tool = Tool.objects.create(
        upstream=upstream,
        name=name,
        action_type=action_type,
        description=spec.get("description") or "",
        annotations=annotations,
        read_only=policy.read_only,
        first_seen_at=now,
        last_seen_at=now,
    )
    if policy.read_only:
        _ensure_pass_through_rule(action_type)
    AuditEvent.objects.create(
        kind="mcp.tool_seen",
        actor=ACTOR,
        data={"upstream": upstream.name, "tool": name, "action_type": key, **vars(policy)},
    )
    return tool


def _ensure_pass_through_rule(action_type: ActionType) -> None:
    name = _pass_through_rule_name(action_type.key)
    if Rule.objects.filter(name=name).exists():
        return
    approvals.rule_save(
        rule=Rule(
            name=name[:200],
            description="Created by the MCP gateway for a read-only tool; disable it to review "
            "every call.",
            action_type=action_type,
            priority=0,
            when="true",
            outcome=Proposal.Outcome.APPROVE,
            reason="Read-only MCP tool: recorded and passed through.",
        ),
        actor=ACTOR,
    )


def tools_record(*, upstream: Upstream, tools: list[dict[str, Any]]) -> dict[str, Tool]:
    """Record the tools an upstream listed; an action type is created for each new one.

    A tool seen before keeps its action type as the admin tuned it; only what the upstream
    says about it now (description, annotations) is refreshed.
    """
    now = timezone.now()
    recorded: dict[str, Tool] = {}
    with transaction.atomic():
        locks.advisory_xact_lock("mcp-tools", upstream.pk)
        known = {t.name: t for t in Tool.objects.filter(upstream=upstream)}
        for spec in tools:
            name = spec.get("name")
            if not isinstance(name, str) or not name:
                continue
            tool = known.get(name)
            if tool is None:
                created = _create_tool(upstream, spec, now)
                if created is not None:
                    recorded[name] = created
                continue
            annotations = spec.get("annotations") or {}
            description = spec.get("description") or ""
            Tool.objects.filter(pk=tool.pk).update(
                last_seen_at=now, annotations=annotations, description=description
            )
            recorded[name] = tool
    return recorded


# --- upstreams (apply and admin) -------------------------------------------------------------------


def upstream_services_sync(*, upstream: Upstream) -> None:
    """The gateway's action types may be proposed by exactly the services that may use it."""
    allowed = list(upstream.services.all())
    for tool in Tool.objects.filter(upstream=upstream).select_related("action_type"):
        tool.action_type.services.set(allowed)


def upstream_overrides_apply(*, upstream: Upstream) -> list[str]:
    """Apply the per-tool overrides to tools already seen; returns the action types changed."""
    changed = []
    for tool in Tool.objects.filter(upstream=upstream).select_related("action_type"):
        override = (upstream.tool_overrides or {}).get(tool.name)
        if not override:
            continue
        policy = tool_policy(tool.annotations, override)
        action_type = tool.action_type
        fields = {"irreversible": policy.irreversible, "risk": policy.risk}
        if any(getattr(action_type, k) != v for k, v in fields.items()):
            for name, value in fields.items():
                setattr(action_type, name, value)
            action_type.save()
            changed.append(action_type.key)
        if tool.read_only != policy.read_only:
            Tool.objects.filter(pk=tool.pk).update(read_only=policy.read_only)
            if policy.read_only:
                _ensure_pass_through_rule(action_type)
            else:
                _disable_pass_through_rule(action_type)
            changed.append(f"{action_type.key} (read_only={policy.read_only})")
    return changed


def _disable_pass_through_rule(action_type: ActionType) -> None:
    rule = Rule.objects.filter(name=_pass_through_rule_name(action_type.key)).first()
    if rule is not None and rule.enabled:
        rule.enabled = False
        approvals.rule_save(rule=rule, actor=ACTOR)


# --- calls ----------------------------------------------------------------------------------------


def _summary(tool: Tool, arguments: dict[str, Any]) -> str:
    args = json.dumps(arguments, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    text = f"{tool.upstream.name}.{tool.name}({args[1:-1]})"
    return text if len(text) <= 200 else text[:199] + "…"


@dataclass(frozen=True)
class CallMeta:
    """What the caller may say about a call in `_meta` (io.gatehouse/...); all optional."""

    confidence: float = 0.0
    rationale: str = ""
    summary: str = ""


def call_propose(
    *, service: Service, tool: Tool, arguments: dict[str, Any], meta: CallMeta
) -> tuple[Proposal, bool]:
    """The proposal for a gateway call: an earlier one for the same call, or a new one.

    Returns the proposal and whether it is an earlier one. A call of a read-only tool is
    always new (it is passed through each time). Otherwise a call with the same arguments
    from the same service joins a proposal still open, or gets the answer of one that ended
    within MCP_GATEWAY_REPLAY_WINDOW: a retry never makes a second proposal, nor a second
    forward. Raises ApplicationError (422 naming the field) for arguments the tool's schema
    refuses; nothing is stored then.
    """
    action_type = tool.action_type
    digest = payload_hash(arguments)
    data = {
        "action_type": action_type.key,
        "payload": arguments,
        "confidence": meta.confidence,
        "summary": meta.summary or _summary(tool, arguments),
        "rationale": meta.rationale,
        "feature": "mcp-gateway",
        "metadata": {"mcp": {"upstream": tool.upstream.name, "tool": tool.name}},
    }
    # A fresh row: the authenticated service may be a cached copy from before this tool's
    # action type was added to it.
    fresh = Service.objects.get(pk=service.pk)
    if tool.read_only:
        return approvals.proposal_submit(service=fresh, data=data).proposal, False
    with transaction.atomic():
        locks.advisory_xact_lock("mcp-call", service.pk, action_type.pk, digest)
        since = timezone.now() - settings.MCP_GATEWAY_REPLAY_WINDOW
        earlier = (
            Proposal.objects.select_related("action_type", "decision_reviewer")
            .filter(service=service, action_type=action_type, payload_hash=digest)
            .filter(state__in=OPEN_STATES)
            .order_by("-created_at")
            .first()
        ) or (
            Proposal.objects.select_related("action_type", "decision_reviewer")
            .filter(service=service, action_type=action_type, payload_hash=digest)
            .filter(state__in=REPLAYED_STATES, updated_at__gte=since)
            .order_by("-created_at")
            .first()
        )
        if earlier is not None:
            return earlier, True
        return approvals.proposal_submit(service=fresh, data=data).proposal, False


def forward_start(*, proposal_id: uuid.UUID, upstream: Upstream, tool: Tool) -> Call | None:
    """Take the approved proposal to executing and record the Call; None if someone else did."""
    with transaction.atomic():
        proposal = Proposal.objects.select_related("service").get(pk=proposal_id)
        won = statemachine.transition(
            proposal_id=proposal_id,
            from_states=[State.APPROVED],
            to_state=State.EXECUTING,
            kind="proposal.executing",
            actor=ACTOR,
            data={"upstream": upstream.name, "tool": tool.name},
        )
        if not won:
            return None
        return Call.objects.create(
            proposal=proposal,
            upstream=upstream,
            tool=tool.name,
            arguments=proposal.effective_payload,
        )


def forward_finish(*, call: Call, result: dict[str, Any] | None = None, error: str = "") -> Call:
    """Record the upstream's answer (or the error) and finish the proposal with it.

    A result with isError is the upstream's tool failing: the proposal fails, and the result
    is kept and returned as the upstream gave it.
    """
    now = timezone.now()
    is_error = result is None or bool(result.get("isError"))
    said = _result_text(result)
    if is_error and not error:
        error = said or "the tool reported an error"
    with transaction.atomic():
        updated = Call.objects.filter(pk=call.pk, status=Call.Status.FORWARDING).update(
            status=Call.Status.FAILED if is_error else Call.Status.SUCCEEDED,
            result=result,
            is_error=is_error,
            error=error[:2000],
            finished_at=now,
            duration_ms=int((now - call.started_at).total_seconds() * 1000),
        )
        if updated:
            to_state = State.FAILED if is_error else State.EXECUTED
            excerpt = json.dumps(result, ensure_ascii=False)[:RESULT_AUDIT_CHARS] if result else ""
            data: dict[str, Any] = {"upstream": call.upstream.name, "tool": call.tool}
            data["result"] = excerpt
            # What the proposal page's history shows: the error, or what the tool answered.
            if is_error:
                data["error"] = error[:2000]
            else:
                data["detail"] = f"{call.upstream.name}.{call.tool} answered: {said}"[:300]
            statemachine.transition(
                proposal_id=call.pk,
                from_states=[State.EXECUTING],
                to_state=to_state,
                kind=f"proposal.{to_state}",
                actor=ACTOR,
                data=data,
            )
    call.refresh_from_db()
    return call


def _result_text(result: dict[str, Any] | None) -> str:
    blocks = (result or {}).get("content") or []
    texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    return " ".join(t for t in texts if isinstance(t, str))


def forward_abandon_if_stale(*, proposal_id: uuid.UUID) -> bool:
    """Fail a forward whose gateway process stopped before the upstream answered.

    Its effect upstream is unknown, so it is never sent again; the failure says so.
    """
    limit = 2 * settings.MCP_UPSTREAM_TIMEOUT + timedelta(seconds=10)
    call = (
        Call.objects.select_related("upstream")
        .filter(
            pk=proposal_id,
            status=Call.Status.FORWARDING,
            started_at__lt=timezone.now() - limit,
        )
        .first()
    )
    if call is None:
        return False
    forward_finish(
        call=call,
        error="The gateway stopped before the upstream answered; whether the call took effect "
        "is unknown, so it is not sent again.",
    )
    return True
