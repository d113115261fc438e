"""The automatic decision on a new proposal.

Everything else calls only this; the rules engine (approvals/rules.py) does the work.
Fail closed: whatever cannot be decided goes to a reviewer.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from approvals import locks, rules
from approvals.rules import AutoDecision
from telemetry import tracing

if TYPE_CHECKING:
    from approvals.models import ActionType, Proposal, Service


log = logging.getLogger("gatehouse.decisions")


def decide_automatically(
    *,
    proposal: Proposal,
    service: Service,
    action_type: ActionType,
    payload: Any = None,
    new: bool = False,
) -> AutoDecision:
    """Run the enabled rules on a proposal (or on an edited `payload` of it).

    Call it inside the transaction that records the outcome (services.proposals does).
    When a rule for this type reads velocity figures (a spend cap), the transaction first takes
    an advisory lock per service and action type, so proposals arriving together are decided
    one after the other, each seeing the approvals committed before it; without such rules,
    nothing is locked.

    For a `new` proposal, an approval passes through insights (insights/gate.py): the brake or
    an audit sample may send it to review instead. If that check fails, review: fail closed.
    """
    ruleset = rules.current_ruleset()
    applicable = ruleset.for_action_type(action_type.pk)
    if any(rule.uses_stats for rule in applicable):
        locks.advisory_xact_lock("rules-stats", service.pk, action_type.pk)
    with tracing.span(
        "gatehouse.rules.evaluate", {"gatehouse.action_type": action_type.key}
    ) as span:
        decision = rules.evaluate(
            proposal=proposal,
            service=service,
            action_type=action_type,
            rules=applicable,
            broken=ruleset.broken,
            payload=payload,
        )
        tracing.set_attributes(
            span,
            {
                "gatehouse.rules.evaluated": len(applicable),
                "gatehouse.rule": decision.rule,
                "gatehouse.rule_version": decision.rule_version,
                "gatehouse.outcome": decision.outcome,
            },
        )
    if new and decision.outcome == "approve":
        from insights import gate

        try:
            decision = gate.hold_back(proposal=proposal, action_type=action_type, decision=decision)
        except Exception as exc:
            log.exception("insights gate failed; sending the proposal to review")
            decision = replace(
                decision,
                outcome="review",
                reason="The audit and brake check failed; a reviewer decides.",
                rule="",
                rule_version=None,
                trace=[
                    *decision.trace,
                    {"rule": "insights", "result": "error", "error": str(exc)[:500]},
                ],
            )
    return decision
