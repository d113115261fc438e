"""Rules as the admin and the config file save them: checked, versioned, audited."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from approvals.models import (
    AuditEvent,
    Proposal,
    Rule,
    RuleVersion,
)
from approvals.rules import RuleCompileError, compile_condition, invalidate
from foundation.errors import ApplicationError


def _rule_snapshot(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": rule.description,
        "priority": rule.priority,
        "action_type_key": rule.action_type.key if rule.action_type is not None else "",
        "when": rule.when,
        "outcome": rule.outcome,
        "reason": rule.reason,
        "allows_irreversible": rule.allows_irreversible,
        "approvals_required": rule.approvals_required,
        "mode": rule.mode,
        "enabled": rule.enabled,
    }


def rule_save(*, rule: Rule, actor: str) -> bool:
    """Check a rule's condition, save it and record it as a new immutable version.

    Refuses (ApplicationError, field `when`) a condition that does not compile or type-check.
    Returns False, writing nothing, when nothing differs from the latest version.
    """
    try:
        compile_condition(rule.when)
    except RuleCompileError as exc:
        raise ApplicationError(
            f"Rule {rule.name!r}: the condition is refused: {exc}",
            status=422,
            code="invalid-rule",
            errors=[{"loc": ["when"], "msg": str(exc)}],
        ) from None
    if rule.outcome not in Proposal.Outcome.values:
        raise ApplicationError(f"Rule {rule.name!r}: unknown outcome {rule.outcome!r}.")
    if rule.approvals_required not in (1, 2) or not Rule.approvals_fit_outcome(
        rule.approvals_required, rule.outcome
    ):
        message = "1, or 2 with the outcome review (reviewers approve; a rule cannot)"
        raise ApplicationError(
            f"Rule {rule.name!r}: approvals_required must be {message}.",
            status=422,
            code="invalid-rule",
            errors=[{"loc": ["approvals_required"], "msg": message}],
        )
    snapshot = _rule_snapshot(rule)
    with transaction.atomic():
        latest = None
        if rule.pk is not None:
            Rule.objects.select_for_update().filter(pk=rule.pk).first()
            latest = RuleVersion.objects.filter(rule_id=rule.pk).order_by("-version").first()
        if latest is not None and all(getattr(latest, k) == v for k, v in snapshot.items()):
            return False
        rule.version = (latest.version if latest is not None else 0) + 1
        rule.save()
        RuleVersion.objects.create(rule=rule, version=rule.version, created_by=actor, **snapshot)
        AuditEvent.objects.create(
            kind="rule.saved",
            actor=actor,
            data={"rule": rule.name, "version": rule.version, **snapshot},
        )
        # This process forgets its rules now and again at commit; the others hear the
        # database's NOTIFY (see approvals/rules.py).
        invalidate()
        transaction.on_commit(invalidate)
    return True
