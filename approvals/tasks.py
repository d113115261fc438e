"""Celery tasks: each takes ids, calls one function of approvals.execution, and returns."""

from __future__ import annotations

from django.conf import settings

from approvals import execution, outbox, services
from config.celery import app

_TIMEOUT = settings.EXECUTION_TIMEOUT.total_seconds()


@app.task(
    name=outbox.DELIVER_TASK,
    # The soft limit bounds a callable executor; HTTP calls have their own timeout inside it.
    soft_time_limit=_TIMEOUT + 2,
    time_limit=execution.lease_duration().total_seconds(),
)
def deliver(message_id: int) -> str:
    return execution.outbox_deliver(message_id=message_id)


@app.task(name="approvals.reconcile_outbox")
def reconcile_outbox() -> int:
    return execution.outbox_reconcile()


@app.task(name="approvals.expire_proposals")
def expire_proposals() -> int:
    return execution.proposals_expire()


@app.task(name="approvals.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return execution.idempotency_keys_purge()


@app.task(name="approvals.check_review_slas")
def check_review_slas() -> tuple[int, int]:
    return services.proposals_check_sla()
