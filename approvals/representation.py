"""The API's view of a proposal, shared by the endpoints and the stored idempotent response."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from approvals.models import Proposal


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


def proposal_representation(proposal: Proposal) -> dict[str, Any]:
    return {
        "id": str(proposal.id),
        "action_type": proposal.action_type.key,
        "state": proposal.state,
        "payload": proposal.payload,
        "final_payload": proposal.final_payload,
        "confidence": proposal.confidence,
        "summary": proposal.summary,
        "external_id": proposal.external_id or None,
        "llm_call_id": str(proposal.llm_call_id) if proposal.llm_call_id else None,
        "decision": decision_representation(proposal),
        "routing": {"reason": proposal.decision_reason, "trace": proposal.rule_trace}
        if not proposal.decided_by
        else None,
        "expires_at": proposal.expires_at.isoformat() if proposal.expires_at else None,
        "created_at": proposal.created_at.isoformat(),
        "updated_at": proposal.updated_at.isoformat(),
        "links": {
            "self": f"/api/v1/proposals/{proposal.id}",
            "review": f"{settings.SITE_URL}/proposals/{proposal.id}/",
        },
    }
