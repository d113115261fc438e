"""What the API returns, as small read-only objects (the raw JSON stays at hand in `.raw`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DECIDED_STATES = frozenset(
    {"approved", "rejected", "expired", "cancelled", "executing", "executed", "failed"}
)
APPROVED_STATES = frozenset({"approved", "executing", "executed", "failed"})


@dataclass(frozen=True)
class Decision:
    outcome: str  # approve | reject
    by: str  # rule | reviewer | policy
    rule: str | None
    rule_version: int | None
    reviewer: str | None
    reason: str
    decided_at: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            outcome=str(data.get("outcome", "")),
            by=str(data.get("by", "")),
            rule=data.get("rule"),
            rule_version=data.get("rule_version"),
            reviewer=data.get("reviewer"),
            reason=str(data.get("reason") or ""),
            decided_at=data.get("decided_at"),
        )


@dataclass(frozen=True)
class Proposal:
    id: str
    action_type: str
    state: str
    payload: dict[str, Any]
    final_payload: dict[str, Any] | None
    confidence: float
    summary: str
    decision: Decision | None
    payload_hash: str | None  # of the payload as it stands: the edit if there is one
    external_id: str | None = None
    llm_call_id: str | None = None
    routing_reason: str = ""
    execution: dict[str, Any] | None = None
    expires_at: str | None = None
    created_at: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    # True when `propose` got the first answer to its Idempotency-Key again: that answer shows
    # the proposal as it was then; `get` shows it now.
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool = False) -> Proposal:
        decision = data.get("decision")
        routing = data.get("routing") or {}
        return cls(
            id=str(data["id"]),
            action_type=str(data["action_type"]),
            state=str(data["state"]),
            payload=dict(data.get("payload") or {}),
            final_payload=data.get("final_payload"),
            confidence=float(data.get("confidence", 0)),
            summary=str(data.get("summary", "")),
            decision=Decision.from_json(decision) if isinstance(decision, dict) else None,
            payload_hash=data.get("payload_hash"),
            external_id=data.get("external_id"),
            llm_call_id=data.get("llm_call_id"),
            routing_reason=str(routing.get("reason") or "") if isinstance(routing, dict) else "",
            execution=data.get("execution"),
            expires_at=data.get("expires_at"),
            created_at=data.get("created_at"),
            links=dict(data.get("links") or {}),
            replayed=replayed,
            raw=data,
        )

    @property
    def is_decided(self) -> bool:
        return self.state in DECIDED_STATES

    @property
    def is_approved(self) -> bool:
        return self.state in APPROVED_STATES

    @property
    def approved_payload(self) -> dict[str, Any]:
        """What was approved: the reviewer's edit if there is one, else the payload as proposed."""
        return self.final_payload if self.final_payload is not None else self.payload

    @property
    def reason(self) -> str:
        """Why it is where it is: the decision's reason, or why it went to review / was withdrawn."""
        if self.decision is not None:
            return self.decision.reason
        return self.routing_reason


@dataclass(frozen=True)
class ActionType:
    key: str
    title: str
    description: str
    irreversible: bool
    risk: str
    approvals_required: int
    review_ttl_seconds: int
    executor: str
    payload_schema: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionType:
        return cls(
            key=str(data["key"]),
            title=str(data.get("title", "")),
            description=str(data.get("description", "")),
            irreversible=bool(data.get("irreversible", False)),
            risk=str(data.get("risk", "")),
            approvals_required=int(data.get("approvals_required", 1)),
            review_ttl_seconds=int(data.get("review_ttl_seconds", 0)),
            executor=str(data.get("executor", "")),
            payload_schema=dict(data.get("payload_schema") or {}),
        )
