"""Reviewers at work: claims, verdicts (with edits and four-eyes), expiry extensions, comments, review SLAs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from approvals import (
    decisions,
    events,
    schemas_cache,
    selectors,
)
from approvals.models import (
    AuditEvent,
    Claim,
    Proposal,
    Review,
    payload_hash,
)
from approvals.rules import AutoDecision
from approvals.statemachine import transition
from foundation import jsonvalues
from foundation.errors import ApplicationError, Conflict, NotFound
from telemetry import metrics, tracing

State = Proposal.State


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    acquired: bool  # False: someone else holds a live claim


def _locked_for_reviewer(proposal_id: uuid.UUID, reviewer: User) -> Proposal:
    """The proposal row, locked for this transaction, if the reviewer may see it."""
    proposal = (
        Proposal.objects.select_for_update(of=("self",))
        .select_related("action_type")
        .filter(pk=proposal_id, action_type__in=selectors.visible_action_types(user=reviewer))
        .first()
    )
    if proposal is None:
        raise NotFound("No such proposal.")
    return proposal


def _check_may_decide(proposal: Proposal, reviewer: User) -> None:
    if proposal.state != State.PENDING_REVIEW:
        raise Conflict(
            f"This proposal is no longer waiting for review: it is {proposal.get_state_display()}.",
            code="invalid-state",
            extra={"state": proposal.state},
        )
    if proposal.raised_by and proposal.raised_by in selectors.reviewer_identities(user=reviewer):
        raise ApplicationError(
            "You raised this proposal, so another reviewer must decide it.",
            status=403,
            code="own-proposal",
        )
    if Review.objects.filter(proposal=proposal, reviewer=reviewer).exists():
        raise ApplicationError(
            "You have already approved this proposal; a second reviewer must decide it.",
            status=403,
            code="already-reviewed",
        )


def claim_acquire(*, proposal_id: uuid.UUID, reviewer: User, channel: str = "web") -> ClaimResult:
    """Reserve a pending proposal for `reviewer` for REVIEW_CLAIM_TTL, or renew their claim.

    A live claim of someone else is left alone and returned with `acquired=False`. A new
    holder is recorded in the audit trail (with the channel it came from: web or slack);
    renewals are not.
    """
    now = timezone.now()
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        _check_may_decide(proposal, reviewer)
        claim = Claim.objects.select_related("reviewer").filter(proposal=proposal).first()
        if claim is not None and claim.reviewer_id != reviewer.pk and claim.is_live(now):
            return ClaimResult(claim=claim, acquired=False)
        renewal = claim is not None and claim.reviewer_id == reviewer.pk and claim.is_live(now)
        expires_at = now + settings.REVIEW_CLAIM_TTL
        if claim is None:
            claim = Claim.objects.create(
                proposal=proposal, reviewer=reviewer, claimed_at=now, expires_at=expires_at
            )
        else:
            Claim.objects.filter(pk=proposal.pk).update(
                reviewer=reviewer,
                claimed_at=claim.claimed_at if renewal else now,
                expires_at=expires_at,
            )
            claim.refresh_from_db()
        if not renewal:
            AuditEvent.objects.create(
                proposal=proposal,
                kind="proposal.claimed",
                actor=f"user:{reviewer.get_username()}",
                data={"expires_at": expires_at.isoformat(), "channel": channel},
                created_at=now,
            )
            events.proposal_changed(proposal.pk)
    return ClaimResult(claim=claim, acquired=True)


def claim_release(*, proposal_id: uuid.UUID, reviewer: User, channel: str = "web") -> bool:
    """Give up one's own claim. Returns whether there was one to give up."""
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        released = Claim.objects.filter(proposal=proposal, reviewer=reviewer).delete()[0] > 0
        if released:
            AuditEvent.objects.create(
                proposal=proposal,
                kind="proposal.claim_released",
                actor=f"user:{reviewer.get_username()}",
                data={"channel": channel},
            )
            events.proposal_changed(proposal.pk)
    return released


def _check_claim(proposal: Proposal, reviewer: User, now: datetime) -> None:
    claim = Claim.objects.select_related("reviewer").filter(proposal=proposal).first()
    if claim is None:
        raise Conflict(
            "You do not hold a claim on this proposal; open it again to claim it, then decide.",
            code="claim-required",
        )
    if claim.reviewer_id != reviewer.pk:
        if claim.is_live(now):
            raise Conflict(
                f"{claim.reviewer.get_username()} is reviewing this proposal now; "
                "your decision was not recorded.",
                code="claimed-by-other",
            )
        raise Conflict(
            "You do not hold a claim on this proposal; open it again to claim it, then decide.",
            code="claim-required",
        )
    if not claim.is_live(now):
        raise Conflict(
            "Your claim on this proposal expired, so someone else may have opened it. "
            "Reload it, check it again and decide.",
            code="claim-expired",
        )


def _evaluate_edit(proposal: Proposal, edited_payload: Any) -> tuple[str, int | None, AutoDecision]:
    """Validate an edited payload and run it through the rules as a fresh proposal would be.

    Returns the new payload's hash, the approvals the rules ask for, and the decision. A
    payload the rules would reject is refused: a reviewer's edit cannot slip past a rule.
    """
    if not isinstance(edited_payload, dict):
        raise ApplicationError(
            "The edited payload must be a JSON object.",
            status=422,
            code="validation-error",
            errors=[{"loc": ["payload"], "msg": "must be a JSON object"}],
        )
    try:
        jsonvalues.check(edited_payload, ("payload",))
    except jsonvalues.BadValue as exc:
        raise exc.refusal() from None
    errors = schemas_cache.validate_payload(proposal.action_type, edited_payload)
    if errors:
        raise ApplicationError(
            f"The edited payload does not match the schema of {proposal.action_type.key!r}: "
            f"{errors[0]['msg']}",
            status=422,
            code="validation-error",
            errors=[{**e, "loc": ["payload", *e["loc"][2:]]} for e in errors],
        )
    candidate = Proposal(
        id=proposal.id,
        service=proposal.service,
        action_type=proposal.action_type,
        payload=edited_payload,
        payload_hash=payload_hash(edited_payload),
        confidence=proposal.confidence,
        summary=proposal.summary,
        rationale=proposal.rationale,
        model=proposal.model,
        prompt_version=proposal.prompt_version,
        feature=proposal.feature,
        external_id=proposal.external_id,
        metadata=proposal.metadata,
        created_at=proposal.created_at,
    )
    try:
        decision = decisions.decide_automatically(
            proposal=candidate, service=proposal.service, action_type=proposal.action_type
        )
    except Exception as exc:  # fail closed: an edit the rules cannot judge is refused
        raise ApplicationError(
            f"The rules could not evaluate the edited payload ({type(exc).__name__}); "
            "it was not recorded.",
            status=422,
            code="rules-error",
        ) from exc
    if decision.outcome not in {"approve", "review"}:
        raise ApplicationError(
            f"The rules reject the edited payload: {decision.reason or decision.outcome}",
            status=422,
            code="edit-rejected-by-rules",
            extra={"rule": decision.rule},
        )
    return candidate.payload_hash, decision.approvals_required, decision


def proposal_decide(
    *,
    proposal: Proposal,
    reviewer: User,
    verdict: str,
    comment: str = "",
    seen_payload_hash: str | None = None,
    edited_payload: Any = None,
    channel: str = "web",
) -> Proposal:
    """A reviewer's verdict on a pending proposal they hold the claim on.

    `channel` (web, slack) is where the reviewer decided; the audit events record it.

    1. The reviewer must see the type, not have raised the proposal nor reviewed it already,
       and hold a live claim; the verdict is bound to the payload hash they saw.
    2. reject: decided at once (a reason is required).
    3. approve (optionally with an edited payload, validated and run through the rules again;
       a stricter result such as more approvals applies): the review is recorded; when the
       approvals bound to the current payload reach the number needed (two for four-eyes,
       from distinct reviewers), the proposal becomes approved, else it waits for the next.
    """
    if verdict not in Review.Verdict.values:
        raise ApplicationError(f"Unknown verdict {verdict!r}.", code="invalid-verdict")
    if verdict == Review.Verdict.REJECT and not comment.strip():
        raise ApplicationError(
            "A rejection needs a reason.",
            status=422,
            code="reason-required",
            errors=[{"loc": ["comment"], "msg": "required when rejecting"}],
        )
    if verdict == Review.Verdict.REJECT and edited_payload is not None:
        raise ApplicationError("An edit can only be approved.", code="invalid-verdict")
    now = timezone.now()
    actor = f"user:{reviewer.get_username()}"
    review = {
        "gatehouse.proposal_id": str(proposal.pk),
        "gatehouse.reviewer": reviewer.get_username(),
        "gatehouse.verdict": verdict,
        "gatehouse.waited_seconds": (now - proposal.created_at).total_seconds(),
    }
    with tracing.span("gatehouse.proposal.review", review) as span, transaction.atomic():
        locked = _locked_for_reviewer(proposal.pk, reviewer)
        _check_may_decide(locked, reviewer)
        _check_claim(locked, reviewer, now)
        current_hash = locked.effective_payload_hash
        if seen_payload_hash is not None and seen_payload_hash != current_hash:
            raise Conflict(
                "The payload changed since you opened it; reload and review it again.",
                code="payload-changed",
            )
        fields: dict[str, Any] = {}
        if edited_payload is not None:
            new_hash, asked, decision = _evaluate_edit(locked, edited_payload)
            if new_hash != current_hash:
                current_hash = new_hash
                locked.final_payload = edited_payload
                locked.required_approvals = max(asked or 1, locked.required_approvals or 1)
                fields.update(
                    final_payload=edited_payload, required_approvals=locked.required_approvals
                )
                AuditEvent.objects.create(
                    proposal=locked,
                    kind="proposal.edited",
                    actor=actor,
                    data={
                        "payload_hash": new_hash,
                        "rules_outcome": decision.outcome,
                        "rule": decision.rule,
                        "rule_version": decision.rule_version,
                        "reason": decision.reason,
                        "approvals_required": locked.approvals_needed,
                        "trace": decision.trace,
                    },
                    created_at=now,
                )
        Review.objects.create(
            proposal=locked,
            reviewer=reviewer,
            verdict=verdict,
            comment=comment,
            edited_payload=edited_payload if fields else None,
            payload_hash=current_hash,
            created_at=now,
        )
        Claim.objects.filter(proposal=locked).delete()
        approvals = Review.objects.filter(
            proposal=locked, verdict=Review.Verdict.APPROVE, payload_hash=current_hash
        ).count()
        if verdict == Review.Verdict.APPROVE and approvals < locked.approvals_needed:
            Proposal.objects.filter(pk=locked.pk).update(updated_at=now, **fields)
            AuditEvent.objects.create(
                proposal=locked,
                kind="proposal.approval_recorded",
                actor=actor,
                data={
                    "approvals": approvals,
                    "needed": locked.approvals_needed,
                    "payload_hash": current_hash,
                    "comment": comment,
                    "channel": channel,
                },
                created_at=now,
            )
            events.proposal_changed(locked.pk)
            tracing.set_attributes(span, {"gatehouse.state": locked.state})
        else:
            to_state = State.APPROVED if verdict == Review.Verdict.APPROVE else State.REJECTED
            tracing.set_attributes(span, {"gatehouse.state": to_state})
            won = transition(
                proposal_id=locked.pk,
                from_states=[State.PENDING_REVIEW],
                to_state=to_state,
                kind=f"proposal.{to_state}",
                actor=actor,
                fields={
                    **fields,
                    "decision_outcome": verdict,
                    "decided_by": Proposal.DecidedBy.REVIEWER,
                    "decision_reviewer_id": reviewer.pk,
                    "decision_reason": comment,
                    "decided_at": now,
                },
                data={
                    "verdict": verdict,
                    "comment": comment,
                    "payload_hash": current_hash,
                    "channel": channel,
                },
            )
            if not won:  # the row is locked, so only a bug could get here
                raise Conflict("This proposal was decided already.")
    proposal.refresh_from_db()
    return proposal


def proposal_extend_expiry(*, proposal_id: uuid.UUID, reviewer: User) -> Proposal:
    """Push a pending proposal's expiry back by its type's review TTL, once in its life.

    Any reviewer who may decide it may do so; a compare-and-set on `expiry_extended_at` makes
    the second attempt (or a race of two) a clean refusal.
    """
    now = timezone.now()
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        _check_may_decide(proposal, reviewer)
        if proposal.expiry_extended_at is not None:
            raise Conflict(
                "The review expiry of this proposal was extended once already.",
                code="already-extended",
            )
        previous = proposal.expires_at or now
        new_expiry = max(previous, now) + proposal.action_type.review_ttl
        won = (
            Proposal.objects.filter(
                pk=proposal.pk, state=State.PENDING_REVIEW, expiry_extended_at__isnull=True
            ).update(expires_at=new_expiry, expiry_extended_at=now, updated_at=now)
            == 1
        )
        if not won:  # the row is locked, so only a bug could get here
            raise Conflict("The review expiry of this proposal was extended once already.")
        AuditEvent.objects.create(
            proposal=proposal,
            kind="proposal.expiry_extended",
            actor=f"user:{reviewer.get_username()}",
            data={"from": previous.isoformat(), "to": new_expiry.isoformat()},
            created_at=now,
        )
        events.proposal_changed(proposal.pk, proposal.action_type_id)
    proposal.refresh_from_db()
    return proposal


# The share of a review SLA after which the group is reminded.
SLA_REMINDER_AT = 0.8


def proposals_check_sla(*, now: datetime | None = None, limit: int = 1000) -> tuple[int, int]:
    """Mark pending proposals that reached 80% of their review SLA (a reminder is due) and
    those past it (breached: escalated to the type's escalation group).

    Each mark is set once, by compare-and-set, with its audit event (`proposal.sla_reminder`,
    `proposal.sla_breached`) in the same transaction; apps above approvals hear of it through
    events.proposal_committed and send the notifications. Returns (reminded, breached).
    """
    now = now or timezone.now()
    pending = Proposal.objects.filter(state=State.PENDING_REVIEW, review_due_at__isnull=False)
    reminded = breached = 0
    for pk, created_at, due in pending.filter(sla_reminded_at__isnull=True).values_list(
        "pk", "created_at", "review_due_at"
    )[:limit]:
        assert due is not None  # filtered above
        if now < created_at + (due - created_at) * SLA_REMINDER_AT:
            continue
        reminded += _sla_mark(
            pk, "sla_reminded_at", "proposal.sla_reminder", now, {"due_at": due.isoformat()}
        )
    for pk, due, group, type_key in pending.filter(
        escalated_at__isnull=True, review_due_at__lte=now
    ).values_list("pk", "review_due_at", "action_type__escalation_group__name", "action_type__key")[
        :limit
    ]:
        assert due is not None
        won = _sla_mark(
            pk,
            "escalated_at",
            "proposal.sla_breached",
            now,
            {"due_at": due.isoformat(), "escalation_group": group},
        )
        if won:
            metrics.REVIEW_SLA_BREACHES.labels(type_key).inc()
        breached += won
    return reminded, breached


def _sla_mark(pk: uuid.UUID, field: str, kind: str, now: datetime, data: dict[str, Any]) -> int:
    with transaction.atomic():
        won = Proposal.objects.filter(
            pk=pk, state=State.PENDING_REVIEW, **{f"{field}__isnull": True}
        ).update(**{field: now})
        if not won:
            return 0
        AuditEvent.objects.create(
            proposal_id=pk, kind=kind, actor="system", data=data, created_at=now
        )
        events.proposal_changed(pk)
    return 1


def proposal_comment(*, proposal_id: uuid.UUID, reviewer: User, text: str) -> AuditEvent:
    """A note on a proposal, without a decision; it shows in the proposal's history."""
    text = text.strip()
    if not text:
        raise ApplicationError(
            "A comment cannot be empty.",
            status=422,
            code="comment-required",
            errors=[{"loc": ["comment"], "msg": "required"}],
        )
    with transaction.atomic():
        proposal = _locked_for_reviewer(proposal_id, reviewer)
        event = AuditEvent.objects.create(
            proposal=proposal,
            kind="proposal.commented",
            actor=f"user:{reviewer.get_username()}",
            data={"comment": text[:5000]},
        )
    return event
