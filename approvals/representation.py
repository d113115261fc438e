"""The API's view of a proposal, shared by the endpoints and the stored idempotent response."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from approvals.models import ActionType, Proposal


def decision_representation(proposal: Proposal) -> dict[str, Any] | None:
    if not proposal.decided_by:
        return None
    reviewer = proposal.decision_reviewer
    return {
        "outcome": proposal.decision_outcome,
        "by": proposal.decided_by,
        "rule": proposal.decision_rule or None,
        "rule_version": proposal.decision_rule_version,
        "reviewer": reviewer.get_username() if reviewer is not None else None,
        "reason": proposal.decision_reason,
        "decided_at": proposal.decided_at.isoformat() if proposal.decided_at else None,
        "trace": proposal.rule_trace,
    }


_EXECUTION_STATES = {"approved", "executing", "executed", "failed"}


def execution_representation(proposal: Proposal) -> dict[str, Any] | None:
    """How executing an approved proposal is going: status, attempts and the last error."""
    if proposal.state not in _EXECUTION_STATES:
        return None
    kind = proposal.action_type.executor_kind
    message = None
    if not proposal._state.adding:
        message = next((m for m in proposal.outbox.all() if m.kind == "execute"), None)
    if message is None:
        # Executor `none`: the service executes and reports; or the row is not written yet.
        status = {"executed": "succeeded", "failed": "failed"}.get(proposal.state)
        return {
            "executor": kind,
            "status": status or ("awaiting_report" if kind == "none" else "pending"),
            "attempts": 0,
            "last_error": None,
            "next_attempt_at": None,
            "completed_at": None,
        }
    if message.status == "delivered":
        status = "succeeded"
    elif message.status == "failed":
        status = "failed"
    elif message.locked_until is not None and message.locked_until > timezone.now():
        status = "running"
    else:
        status = "retrying" if message.last_error else "pending"
    return {
        "executor": kind,
        "status": status,
        "attempts": message.attempts,
        "last_error": message.last_error or None,
        "next_attempt_at": message.next_attempt_at.isoformat()
        if message.status == "pending"
        else None,
        "completed_at": message.completed_at.isoformat() if message.completed_at else None,
    }


def proposal_representation(proposal: Proposal) -> dict[str, Any]:
    return {
        "id": str(proposal.id),
        "action_type": proposal.action_type.key,
        "state": proposal.state,
        "payload": proposal.payload,
        "final_payload": proposal.final_payload,
        # What a decision is bound to: the hash of the edit if there is one, else of the payload.
        "payload_hash": proposal.effective_payload_hash,
        "confidence": proposal.confidence,
        "summary": proposal.summary,
        "external_id": proposal.external_id or None,
        "llm_call_id": str(proposal.llm_call_id) if proposal.llm_call_id else None,
        "decision": decision_representation(proposal),
        "routing": {"reason": proposal.decision_reason, "trace": proposal.rule_trace}
        if not proposal.decided_by
        else None,
        "execution": execution_representation(proposal),
        "expires_at": proposal.expires_at.isoformat() if proposal.expires_at else None,
        "created_at": proposal.created_at.isoformat(),
        "updated_at": proposal.updated_at.isoformat(),
        "links": {
            "self": f"/api/v1/proposals/{proposal.id}",
            "review": f"{settings.SITE_URL}/proposals/{proposal.id}/",
        },
    }


def action_type_representation(action_type: ActionType) -> dict[str, Any]:
    return {
        "key": action_type.key,
        "title": action_type.title,
        "description": action_type.description,
        "irreversible": action_type.irreversible,
        "risk": action_type.risk,
        "approvals_required": action_type.approvals_required,
        "review_ttl_seconds": int(action_type.review_ttl.total_seconds()),
        "executor": action_type.executor_kind,
        "payload_schema": action_type.payload_schema,
    }
