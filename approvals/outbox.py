"""The transactional outbox: what must follow a transition is recorded with it, sent after commit.

`statemachine.transition` and the submit (`services.proposals._record_proposal`) call
`outbox_record` inside their transaction; the rows commit or roll back with the state change.
An app above approvals sends a webhook of its own, about no proposal (insights: an alert), with
`webhook_record` in the transaction that makes what it reports. After commit each row is handed
to the broker; a broker that is down or loses the message only delays it, because the reconciler
(`execution.outbox_reconcile`) re-dispatches every pending row nobody is working on. Every row is
delivered by the same code (`execution.outbox_deliver`), whatever wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.models import ExecutorKind, OutboxMessage, Proposal
from approvals.representation import decision_representation, proposal_representation
from telemetry import tracing

log = logging.getLogger("gatehouse.outbox")

State = Proposal.State
#: The Celery task that delivers one outbox message (approvals/tasks.py).
DELIVER_TASK = "approvals.deliver"
#: Transitions a service hears about through its callback URL.
CALLBACK_STATES = frozenset(
    {
        State.APPROVED,
        State.REJECTED,
        State.EXPIRED,
        State.CANCELLED,
        State.EXECUTED,
        State.FAILED,
    }
)


#: How the webhooks of apps above approvals are signed (kind `webhook`, no proposal): the
#: namespace of the event ("insight" for "insight.drift") → a function returning the secrets in
#: force. It is asked at send time, in the worker, so no secret is ever copied into the outbox
#: (a callback's secret is likewise read from its service at send time). Filled in each such
#: app's AppConfig.ready; a row whose namespace nobody registered fails without being sent.
WEBHOOK_SECRETS: dict[str, Callable[[], list[str]]] = {}


def webhook_id(proposal: Proposal, event: str) -> str:
    """Stable for one proposal and event: the receiver's idempotency key across retries."""
    return f"msg_{proposal.id.hex}_{event.removeprefix('proposal.')}"


def execute_body(proposal: Proposal, message_id: str) -> dict[str, Any]:
    return {
        "type": "proposal.execute",
        "timestamp": timezone.now().isoformat(),
        "data": {
            "proposal_id": str(proposal.id),
            "action_type": proposal.action_type.key,
            "payload": proposal.effective_payload,
            "decision": decision_representation(proposal),
            "service": proposal.service.name,
            "external_id": proposal.external_id or None,
            "idempotency_key": message_id,
        },
    }


def outbox_record(*, proposal: Proposal, to_state: str) -> list[OutboxMessage]:
    """Record the execution and callback that follow `proposal` reaching `to_state`.

    Must run inside the transaction that made the transition; dispatch waits for its commit.
    `proposal` must already show `to_state` and its decision.
    """
    messages: list[OutboxMessage] = []
    action_type = proposal.action_type
    trace_context = tracing.carrier()
    if to_state == State.APPROVED and action_type.executor_kind != ExecutorKind.NONE:
        event = "proposal.execute"
        msg_id = webhook_id(proposal, event)
        messages.append(
            OutboxMessage.objects.create(
                proposal=proposal,
                kind=OutboxMessage.Kind.EXECUTE,
                event=event,
                webhook_id=msg_id,
                target=action_type.executor_target,
                body=execute_body(proposal, msg_id),
                trace_context=trace_context,
            )
        )
    callback_url = proposal.service.callback_url
    if to_state in CALLBACK_STATES and callback_url:
        # After the execution row, so that the callback's snapshot of the proposal shows it.
        event = f"proposal.{to_state}"
        messages.append(
            OutboxMessage.objects.create(
                proposal=proposal,
                kind=OutboxMessage.Kind.CALLBACK,
                event=event,
                webhook_id=webhook_id(proposal, event),
                target=callback_url,
                body={
                    "type": event,
                    "timestamp": timezone.now().isoformat(),
                    "data": proposal_representation(proposal),
                },
                trace_context=trace_context,
            )
        )
    if messages:
        transaction.on_commit(partial(dispatch, [m.pk for m in messages]))
    return messages


def webhook_record(
    *,
    event: str,
    webhook_id: str,
    target: str,
    body: dict[str, Any],
    max_attempts: int | None = None,
) -> OutboxMessage:
    """Record a webhook an app sends about no proposal; sent after the caller's transaction
    commits, by the same delivery, retries and reconciler as executions and callbacks.

    Must run inside the transaction that makes what the webhook reports, so the row exists
    exactly when that does. The target and body are fixed now; the signing secret is looked up
    at send time in WEBHOOK_SECRETS under the event's namespace, which must be registered.
    `max_attempts` (None: EXECUTION_MAX_ATTEMPTS) bounds the attempts before giving up.
    """
    if event.partition(".")[0] not in WEBHOOK_SECRETS:
        raise ValueError(f"no signing secret is registered for {event!r} webhooks")
    message = OutboxMessage.objects.create(
        kind=OutboxMessage.Kind.WEBHOOK,
        event=event,
        webhook_id=webhook_id,
        target=target,
        body=body,
        max_attempts=max_attempts,
        trace_context=tracing.carrier(),
    )
    transaction.on_commit(partial(dispatch, [message.pk]))
    return message


def webhook_secrets(event: str) -> list[str]:
    """The secrets that sign a webhook of `event` (kind `webhook`) now; empty when none is set."""
    resolve = WEBHOOK_SECRETS.get(event.partition(".")[0])
    return [s for s in resolve() if s] if resolve is not None else []


def dispatch(message_ids: Iterable[int], *, countdown: float | None = None) -> None:
    """Hand messages to the broker. Never raises: the reconciler covers a failed publish.

    The task is named, not imported: approvals/tasks.py (registered when the app is ready) sits
    above the execution that records these rows, and the broker is the boundary between them.
    """
    from config.celery import app

    deliver = app.signature(DELIVER_TASK)
    for pk in message_ids:
        try:
            deliver.apply_async(args=[pk], countdown=countdown)
        except Exception:
            log.warning(
                "could not publish outbox message %s; the reconciler will", pk, exc_info=True
            )


def broker_backlog() -> int | None:
    """How many messages wait in the broker's task queue; None if the broker does not answer."""
    from config.celery import app

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            declared = conn.default_channel.queue_declare(
                queue=app.conf.task_default_queue, durable=True, auto_delete=False
            )
            return int(declared.message_count)
    except Exception:
        log.warning("could not read the broker's queue length", exc_info=True)
        return None
