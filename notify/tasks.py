"""Celery tasks of notify: each takes ids or a small dict and calls one service."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from config.celery import app
from notify import services

log = logging.getLogger("gatehouse.notify")


def on_proposal_committed(*, proposal_id: uuid.UUID, **kwargs: Any) -> None:
    """Receiver of approvals.events.proposal_committed: enqueue the sync, never do it here."""
    if not services.enabled():
        return
    try:
        sync_proposal.delay(str(proposal_id))
    except Exception:  # the broker is down: the reconciler catches up
        log.warning("could not enqueue notify.sync_proposal for %s", proposal_id, exc_info=True)


@app.task(name="notify.sync_proposal")
def sync_proposal(proposal_id: str) -> None:
    services.proposal_notify(proposal_id=uuid.UUID(proposal_id))


@app.task(name="notify.handle_interaction")
def handle_interaction(interaction: dict[str, Any]) -> str:
    return services.slack_interaction_handle(
        interaction=services.Interaction.from_dict(interaction)
    )


@app.task(name="notify.send_digests")
def send_digests() -> int:
    return services.digests_send()


@app.task(name="notify.reconcile")
def reconcile() -> int:
    return services.notify_reconcile()
