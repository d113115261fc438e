"""Gatehouse for Python services and agents.

    from gatehouse_client import Gatehouse, requires_approval

    gh = Gatehouse("https://gatehouse.example", api_key)
    proposal = gh.propose("refund.issue", {"order_id": "ORD-1", "amount": 12.5},
                          confidence=0.9, summary="Refund a late delivery")
    proposal = gh.wait(proposal.id, timeout=120)

Adapters: `gatehouse_client.openai_agents` (extra `openai-agents`) and
`gatehouse_client.langgraph` (extra `langgraph`).
"""

from __future__ import annotations

from gatehouse_client._retry import RetryPolicy
from gatehouse_client.client import AsyncGatehouse, Gatehouse, __version__
from gatehouse_client.decorator import current_proposal, requires_approval
from gatehouse_client.errors import (
    AlreadyExecuted,
    APIError,
    ApprovalTimeout,
    BadRequest,
    Cancelled,
    Conflict,
    ConnectionFailed,
    Expired,
    FieldError,
    Forbidden,
    GatehouseError,
    NotApproved,
    NotFound,
    PayloadMismatch,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    ServerError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from gatehouse_client.hashing import canonical_json, payload_hash
from gatehouse_client.models import ActionType, Decision, Proposal
from gatehouse_client.webhooks import (
    DecisionEvent,
    WebhookVerificationError,
    parse_decision_event,
    verify_webhook,
)

__all__ = [
    "APIError",
    "ActionType",
    "AlreadyExecuted",
    "ApprovalTimeout",
    "AsyncGatehouse",
    "BadRequest",
    "Cancelled",
    "Conflict",
    "ConnectionFailed",
    "Decision",
    "DecisionEvent",
    "Expired",
    "FieldError",
    "Forbidden",
    "Gatehouse",
    "GatehouseError",
    "NotApproved",
    "NotFound",
    "PayloadMismatch",
    "PayloadTooLarge",
    "Proposal",
    "RateLimited",
    "Rejected",
    "RetryPolicy",
    "ServerError",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "canonical_json",
    "current_proposal",
    "parse_decision_event",
    "payload_hash",
    "requires_approval",
    "verify_webhook",
]
