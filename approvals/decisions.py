"""The automatic decision on a new proposal.

Everything else calls only this; the rules engine (approvals/rules.py) does the work, then the
policy checks named in settings.DECISION_CHECKS (dotted paths, in order, like MIDDLEWARE) see an
approval of a new proposal: each is `check(*, proposal, action_type, decision) -> AutoDecision`
and may hold it back (review or reject). Apps above approvals contribute checks there (insights:
the brake and audit sampling); approvals imports none of them.
Fail closed: whatever cannot be decided goes to a reviewer.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from approvals import rules, velocity
from approvals.rules import AutoDecision, CompiledRule
from telemetry import tracing

if TYPE_CHECKING:
    from approvals.models import ActionType, Proposal, Service


log = logging.getLogger("gatehouse.decisions")


class PolicyCheck(Protocol):
    def __call__(
        self, *, proposal: Proposal, action_type: ActionType, decision: AutoDecision
    ) -> AutoDecision: ...


def decide_automatically(
    *,
    proposal: Proposal,
    service: Service,
    action_type: ActionType,
    payload: Any = None,
    new: bool = False,
    policy_checks: bool = True,
) -> AutoDecision:
    """Run the enabled rules on a proposal (or on an edited `payload` of it).

    Call it inside the transaction that records the outcome (services.proposals does).
    When a rule for this type reads velocity figures (a spend cap), the transaction first takes
    an advisory lock per service and action type, so proposals arriving together are decided
    one after the other, each seeing the approvals committed before it; without such rules,
    nothing is locked.

    For a `new` proposal, an approval passes through the policy checks of
    settings.DECISION_CHECKS in order (insights adds its brake and audit sampling there): each
    may send it to review instead. A check that fails sends it to review: fail closed.
    `policy_checks=False` leaves them to `run_policy_checks`, in the transaction that records
    the proposal (the submit decides before it knows whether it needs one).
    """
    ruleset = rules.current_ruleset()
    applicable = ruleset.for_action_type(action_type.pk)
    sums = None
    if _reads_database(applicable):
        # The lock and the sums the rules name (a spend cap's) in one round trip: the lock is
        # the serial section of every submit of this service and type, held to the commit.
        sums = velocity.lock_and_sum(
            lock=("rules-stats", service.pk, action_type.pk),
            service_id=service.pk,
            action_type_id=action_type.pk,
            sums={
                (first, window)
                for rule in applicable
                for method, first, window in rule.stats_calls
                if method == "approved_sum"
            },
            now=timezone.now(),
        )
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
            sums=sums,
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
    if new and policy_checks:
        decision = run_policy_checks(proposal=proposal, action_type=action_type, decision=decision)
    return decision


def _reads_database(applicable: list[CompiledRule]) -> bool:
    """Whether any of these rules reads velocity figures (a spend cap): they are read under the
    per-service-and-type lock, inside the transaction that records the outcome."""
    return any(rule.uses_stats for rule in applicable)


def reads_database(action_type: ActionType) -> bool:
    """Whether the rules for this type read the database (velocity figures, under the lock
    `decide_automatically` takes): only then must they run inside the recording transaction.
    The policy checks of an approval may read or write too (`run_policy_checks`)."""
    return _reads_database(rules.current_ruleset().for_action_type(action_type.pk))


def run_policy_checks(
    *, proposal: Proposal, action_type: ActionType, decision: AutoDecision
) -> AutoDecision:
    """The policy checks a new proposal's approval passes through, for a decision made with
    `policy_checks=False`: call it inside the transaction that records the proposal."""
    if decision.outcome != "approve":
        return decision
    return _run_checks(proposal=proposal, action_type=action_type, decision=decision)


def policy_checks() -> list[tuple[str, PolicyCheck]]:
    """The checks named in settings.DECISION_CHECKS, in order (imported once per list)."""
    return _imported(tuple(settings.DECISION_CHECKS))


@functools.cache
def _imported(paths: tuple[str, ...]) -> list[tuple[str, PolicyCheck]]:
    return [(path, import_string(path)) for path in paths]


def _run_checks(
    *, proposal: Proposal, action_type: ActionType, decision: AutoDecision
) -> AutoDecision:
    """Pass an automatic approval through each policy check until one holds it back.

    The one place that makes the checks fail closed: a check that raises (or cannot be
    imported) sends the proposal to review, with the error in its trace; none can approve.
    """
    try:
        checks = policy_checks()
    except Exception as exc:
        return _held_by_error("DECISION_CHECKS", decision, exc)
    for path, check in checks:
        try:
            result = check(proposal=proposal, action_type=action_type, decision=decision)
        except Exception as exc:
            return _held_by_error(path, decision, exc)
        if result.outcome not in {"approve", "review", "reject"}:
            return _held_by_error(path, decision, ValueError(f"unknown outcome {result.outcome!r}"))
        decision = result
        if decision.outcome != "approve":
            break
    return decision


def _held_by_error(name: str, decision: AutoDecision, exc: Exception) -> AutoDecision:
    log.error("policy check %s failed; sending the proposal to review", name, exc_info=exc)
    return replace(
        decision,
        outcome="review",
        reason=f"The policy check {name} failed; a reviewer decides.",
        rule="",
        rule_version=None,
        trace=[*decision.trace, {"rule": name, "result": "error", "error": str(exc)[:500]}],
    )
