"""The automatic decision on a new proposal.

The rules engine replaces the body of `decide_automatically`; everything else calls only this.
Fail closed: whatever cannot be decided goes to a reviewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from approvals.models import ActionType, Proposal, Service


@dataclass(frozen=True)
class AutoDecision:
    outcome: str  # "approve" | "review" | "reject"
    reason: str
    rule: str = ""
    rule_version: int | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    # A rule may ask for more reviewer approvals than the action type's (never fewer).
    approvals_required: int | None = None


def decide_automatically(
    *, proposal: Proposal, service: Service, action_type: ActionType
) -> AutoDecision:
    return AutoDecision(outcome="review", reason="No rules are configured; a reviewer decides.")
