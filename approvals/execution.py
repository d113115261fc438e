"""Running what the outbox holds: executions, decision callbacks, other apps' webhooks (no
proposal: insights' alerts), and the periodic jobs.

One delivery of an outbox message, whatever its kind:
1. take it with a compare-and-set lease (`locked_until`); whoever loses does nothing;
2. mark a `running` attempt left by a worker that died as `abandoned`;
3. for an execution, move the proposal approved → executing (or keep executing, on a retry);
4. record a `running` attempt, call the target within EXECUTION_TIMEOUT;
5. in one transaction: finish the attempt and either complete the message (executing →
   executed), give up (→ failed, with the last error), or schedule the next try with backoff.
A crash anywhere leaves the message pending; once its lease lapses the reconciler re-dispatches
it, and the receiver sees the same webhook-id again, so the effect happens once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvals import executors, outbox, statemachine
from approvals.models import (
    Attempt,
    AuditEvent,
    OutboxMessage,
    Proposal,
    WebhookEndpoint,
)
from foundation import webhooks
from telemetry import metrics, tracing

log = logging.getLogger("gatehouse.execution")

State = Proposal.State
Kind = OutboxMessage.Kind
MessageStatus = OutboxMessage.Status
# A message dispatched a little before it is due (clock skew between hosts) still runs.
_EARLY = timedelta(seconds=1)


def lease_duration() -> timedelta:
    """How long a worker holds a message: longer than any one attempt can take."""
    return 2 * settings.EXECUTION_TIMEOUT + timedelta(seconds=5)


def _available(now: datetime) -> Q:
    return Q(status=MessageStatus.PENDING) & (
        Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    )


def outbox_deliver(*, message_id: int) -> str:
    """Make one attempt at one outbox message; returns what happened, for the worker's log.

    Traced as a continuation of the trace that wrote the message (its stored trace context).
    """
    parent = None
    if tracing.enabled():
        parent = (
            OutboxMessage.objects.filter(pk=message_id)
            .values_list("trace_context", flat=True)
            .first()
        )
    with tracing.span(
        "gatehouse.outbox.deliver", {"gatehouse.outbox_message": message_id}, parent=parent
    ) as span:
        return _deliver(message_id, span)


def _deliver(message_id: int, span: Any) -> str:
    now = timezone.now()
    lease = now + lease_duration()
    # Taking the lease, starting the execution and recording the attempt commit together, and
    # before the call: a crash during the call leaves a visible `running` attempt.
    with transaction.atomic():
        taken = OutboxMessage.objects.filter(
            _available(now), pk=message_id, next_attempt_at__lte=now + _EARLY
        ).update(locked_until=lease, attempts=F("attempts") + 1)
        if not taken:
            return "not due, taken by another worker, or done"
        message = OutboxMessage.objects.select_related(
            "proposal__service", "proposal__action_type"
        ).get(pk=message_id)
        proposal = message.proposal  # None for another app's webhook
        if message.attempts > 1:
            Attempt.objects.filter(message=message, status=Attempt.Status.RUNNING).update(
                status=Attempt.Status.ABANDONED,
                finished_at=now,
                error="The worker stopped before this attempt finished.",
            )
        startable = message.kind != Kind.EXECUTE or _start_execution(_owner(message))
        if startable:
            attempt = Attempt.objects.create(
                message=message, proposal=proposal, number=message.attempts, started_at=now
            )
    if not startable:
        state = _owner(message).state
        _finish_message(message, lease, MessageStatus.FAILED, f"The proposal is {state}.")
        return f"proposal {state}: nothing to execute"

    outcome = _attempt(message)
    finished = timezone.now()
    with transaction.atomic():
        attempt.status = Attempt.Status.SUCCEEDED if outcome.ok else Attempt.Status.FAILED
        attempt.status_code = outcome.status_code
        attempt.response_excerpt = outcome.excerpt
        attempt.error = outcome.error
        attempt.finished_at = finished
        attempt.duration_ms = int((finished - now).total_seconds() * 1000)
        attempt.save(
            update_fields=[
                "status",
                "status_code",
                "response_excerpt",
                "error",
                "finished_at",
                "duration_ms",
            ]
        )
        if outcome.ok:
            verdict = "succeeded"
            result = _finish_message(message, lease, MessageStatus.DELIVERED, "")
        elif outcome.retry and message.attempts < (
            message.max_attempts or settings.EXECUTION_MAX_ATTEMPTS
        ):
            verdict = "retry"
            result = _schedule_retry(message, lease, outcome, finished)
        else:
            verdict = "failed"
            error = outcome.error
            if outcome.retry:
                error += f" (gave up after {message.attempts} attempts)"
            if outcome.gone:
                _disable_endpoint(message.target, reason=outcome.error, at=finished)
            result = _finish_message(message, lease, MessageStatus.FAILED, error)
    metrics.DELIVERY_ATTEMPTS.labels(message.kind, verdict).inc()
    if proposal is not None:
        subject: Any = proposal.pk
        context: dict[str, Any] = {
            "service": proposal.service.name,
            "proposal_id": str(proposal.pk),
            "action_type": proposal.action_type.key,
        }
    else:
        subject = message.webhook_id
        context = {"webhook_id": message.webhook_id}
    context |= {
        "event": message.event,
        "attempt": attempt.number,
        "status_code": outcome.status_code,
        "outcome": verdict,
    }
    tracing.set_attributes(span, {f"gatehouse.{k}": v for k, v in context.items()})
    log.info("%s %s attempt %s: %s", message.event, subject, attempt.number, result, extra=context)
    return result


def _owner(message: OutboxMessage) -> Proposal:
    """The proposal of an execution or callback (the table's check constraint ensures one)."""
    if message.proposal is None:
        raise ValueError(f"outbox message {message.pk} ({message.kind}) has no proposal")
    return message.proposal


def _start_execution(proposal: Proposal) -> bool:
    """Approved → executing; a retry finds it executing already. False if there is nothing to do."""
    if proposal.state == State.APPROVED:
        started = statemachine.transition(
            proposal_id=proposal.pk,
            from_states=[State.APPROVED],
            to_state=State.EXECUTING,
            kind="proposal.executing",
            actor="system",
        )
        if started:
            return True
        proposal.refresh_from_db(fields=["state", "updated_at"])
    return proposal.state == State.EXECUTING


def _attempt(message: OutboxMessage) -> executors.Outcome:
    # The target was fixed when the message was written: a URL, or a callable's dotted path.
    if message.kind == Kind.EXECUTE and not message.target.startswith(("http://", "https://")):
        return executors.run_callable(message)
    disabled = WebhookEndpoint.objects.filter(url=message.target, disabled_at__isnull=False).first()
    if disabled is not None:
        return executors.Outcome(
            ok=False,
            error=f"The endpoint is disabled since {disabled.disabled_at:%Y-%m-%d %H:%M} UTC "
            f"({disabled.disabled_reason}); re-enable it in the admin.",
        )
    if message.kind == Kind.WEBHOOK:
        secrets = outbox.webhook_secrets(message.event)
        if not secrets:
            return executors.Outcome(
                ok=False,
                error=f"Not sent: nothing in this process signs {message.event} webhooks "
                "(the app that sends them is not installed, or its secret is not set).",
            )
    else:
        secrets = executors.service_secrets(_owner(message).service)
    return executors.send_webhook(message, secrets=secrets)


def _finish_message(message: OutboxMessage, lease: datetime, status: str, error: str) -> str:
    """Complete or fail the message and, for an execution, the proposal with it."""
    now = timezone.now()
    with transaction.atomic():
        kept = OutboxMessage.objects.filter(pk=message.pk, locked_until=lease).update(
            status=status, locked_until=None, last_error=error, completed_at=now
        )
        if not kept:
            return "lease lost to another worker; its result stands"
        if message.kind == Kind.EXECUTE:
            # A no-op unless the proposal is executing (a message failed before it started).
            to_state = State.EXECUTED if status == MessageStatus.DELIVERED else State.FAILED
            statemachine.transition(
                proposal_id=_owner(message).pk,
                from_states=[State.EXECUTING],
                to_state=to_state,
                kind=f"proposal.{to_state}",
                actor="system",
                data={"attempts": message.attempts, "error": error}
                if error
                else {"attempts": message.attempts},
            )
    return status


def _schedule_retry(
    message: OutboxMessage, lease: datetime, outcome: executors.Outcome, finished: datetime
) -> str:
    delay = webhooks.backoff(message.attempts, retry_after=outcome.retry_after)
    kept = OutboxMessage.objects.filter(pk=message.pk, locked_until=lease).update(
        locked_until=None, last_error=outcome.error, next_attempt_at=finished + delay
    )
    if not kept:
        return "lease lost to another worker; its result stands"
    seconds = delay.total_seconds()
    transaction.on_commit(lambda: outbox.dispatch([message.pk], countdown=seconds))
    return f"retry in {seconds:.1f}s"


def _disable_endpoint(url: str, *, reason: str, at: datetime) -> None:
    WebhookEndpoint.objects.update_or_create(
        url=url, defaults={"disabled_at": at, "disabled_reason": reason[:500]}
    )


def webhook_endpoint_enable(*, url: str, by: str) -> None:
    """Send to a URL again after it answered 410 (messages that failed meanwhile stay failed)."""
    with transaction.atomic():
        if WebhookEndpoint.objects.filter(url=url).delete()[0]:
            AuditEvent.objects.create(
                kind="webhook_endpoint.enabled", actor=f"user:{by}", data={"url": url}
            )


def outbox_reconcile(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Re-dispatch every pending message that is overdue and that no worker holds.

    Covers a message the broker lost (flushed, restarted without persistence), a publish that
    failed after commit, a retry that lived only in a dead worker's memory, and an attempt cut
    short by a crash (its lease lapses). Dispatching twice is harmless: only one worker can take
    the lease, and a message already done is skipped.

    Under a backlog it re-sends only what is surely lost: while messages still wait in the
    broker, one that no worker ever took is most likely among them and is left to be taken in
    turn; one whose lease lapsed was taken by a worker that died. A message re-sent is due again
    from now, so the copy gets a grace period of its own before another is sent.
    """
    now = now or timezone.now()
    overdue = OutboxMessage.objects.filter(
        _available(now), next_attempt_at__lte=now - settings.OUTBOX_RECONCILE_GRACE
    )
    backlog = outbox.broker_backlog()
    if backlog:
        overdue = overdue.filter(locked_until__isnull=False)
    ids = list(overdue.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    if ids:
        OutboxMessage.objects.filter(pk__in=ids, status=MessageStatus.PENDING).update(
            next_attempt_at=now
        )
        log.info(
            "reconciler: re-dispatching %s outbox messages (%s waiting in the broker)",
            len(ids),
            "unknown" if backlog is None else backlog,
        )
        outbox.dispatch(ids)
    return len(ids)


def proposals_expire(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Pending proposals past their review TTL become expired (never approved by time)."""
    now = now or timezone.now()
    stale = (
        Proposal.objects.filter(state=State.PENDING_REVIEW, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", "expires_at")[:limit]
    )
    expired = 0
    for pk, expires_at in list(stale):
        expired += statemachine.transition(
            proposal_id=pk,
            from_states=[State.PENDING_REVIEW],
            to_state=State.EXPIRED,
            kind="proposal.expired",
            actor="system",
            fields={"decision_reason": "No reviewer decided before the review expired."},
            data={"expires_at": expires_at.isoformat() if expires_at else None},
        )
    return expired


def idempotency_keys_purge(*, now: datetime | None = None) -> int:
    """Forget idempotency keys older than IDEMPOTENCY_KEY_RETENTION so they may be reused."""
    cutoff = (now or timezone.now()) - settings.IDEMPOTENCY_KEY_RETENTION
    return Proposal.objects.filter(idempotency_key__isnull=False, created_at__lt=cutoff).update(
        idempotency_key=None
    )
