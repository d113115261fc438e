"""The proposal state machine: every move of a proposal after it is recorded goes through here.

`transition` is a compare-and-set on `state` with its audit event in the same transaction; a
move into a state the service hears about records its execution and callback in the outbox
(approvals/outbox.py) in that transaction too. Services (approvals/services/), the execution of
approved proposals (approvals/execution.py) and the expiry sweep call it; it calls nothing above.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals import events, outbox
from approvals.models import AuditEvent, Proposal
from telemetry import metrics

log = logging.getLogger("gatehouse.decisions")
State = Proposal.State


def transition(
    *,
    proposal_id: uuid.UUID,
    from_states: Iterable[str],
    to_state: str,
    kind: str,
    actor: str,
    fields: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Move a proposal from one of `from_states` to `to_state` if nobody got there first.

    A compare-and-set: `UPDATE … WHERE id = … AND state IN (…)`. The audit event is written in
    the same transaction, so either both happen or neither. Returns whether this call won.
    """
    now = timezone.now()
    sources = list(from_states)
    with transaction.atomic():
        current = (
            Proposal.objects.filter(pk=proposal_id, state__in=sources)
            .values_list("state", flat=True)
            .first()
        )
        if current is None:
            return False
        won = (
            Proposal.objects.filter(pk=proposal_id, state=current).update(
                state=to_state, updated_at=now, **(fields or {})
            )
            == 1
        )
        if won:
            AuditEvent.objects.create(
                proposal_id=proposal_id,
                kind=kind,
                from_state=current,
                to_state=to_state,
                actor=actor,
                data=data or {},
                created_at=now,
            )
            if to_state in outbox.CALLBACK_STATES:
                proposal = Proposal.objects.select_related(
                    "service", "action_type", "decision_reviewer"
                ).get(pk=proposal_id)
                # Execution and callbacks are recorded with the change and sent after commit.
                outbox.outbox_record(proposal=proposal, to_state=to_state)
                transaction.on_commit(partial(_observe_transition, proposal, current, now))
            events.proposal_changed(proposal_id)
        return won


#: Who decided, for the decisions that are not a rule's, a reviewer's or the policy's.
_DECIDED_BY: dict[str, str] = {State.EXPIRED: "expiry", State.CANCELLED: "cancel"}
_OUTCOME: dict[str, str] = {
    State.APPROVED: "approve",
    State.REJECTED: "reject",
    State.EXPIRED: "expire",
    State.CANCELLED: "cancel",
}


def _observe_transition(proposal: Proposal, from_state: str, now: datetime) -> None:
    """Metrics and the log line of a committed decision or execution result."""
    action_type = proposal.action_type.key
    context: dict[str, Any] = {
        "service": proposal.service.name,
        "proposal_id": str(proposal.pk),
        "action_type": action_type,
        "from_state": from_state,
        "to_state": proposal.state,
    }
    if from_state in (State.RECEIVED, State.PENDING_REVIEW) and proposal.state in _OUTCOME:
        decided_by = proposal.decided_by or _DECIDED_BY.get(proposal.state, "policy")
        outcome = _OUTCOME[proposal.state]
        metrics.PROPOSALS_DECIDED.labels(action_type, decided_by, outcome).inc()
        metrics.TIME_TO_DECISION_SECONDS.labels(action_type, decided_by).observe(
            max((now - proposal.created_at).total_seconds(), 0.0)
        )
        context.update(
            outcome=outcome,
            decided_by=decided_by,
            rule=proposal.decision_rule,
            rule_version=proposal.decision_rule_version,
            reviewer=proposal.decision_reviewer.get_username()
            if proposal.decision_reviewer
            else "",
        )
        log.info("proposal %s %s by %s", proposal.pk, proposal.state, decided_by, extra=context)
        return
    if proposal.state == State.FAILED:
        metrics.EXECUTIONS_FAILED.labels(action_type).inc()
    log.info("proposal %s %s → %s", proposal.pk, from_state, proposal.state, extra=context)
