from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from approvals.models import ActionType, Proposal, Service, payload_hash
from config.celery import app
from insights.models import AuditSample
from tests.conftest import ServiceClient


@pytest.fixture
def plant(shop: ServiceClient, refund_type: ActionType) -> Callable[..., list[Proposal]]:
    """Plant reviewer-decided proposals: plant(count, kind, at=…, confidence=…, model=…, …).

    `kind` is agreed (approved unchanged), edited (approved after an edit) or rejected;
    `audited=True` also records each as an audit sample.
    """

    def make(
        count: int,
        kind: str,
        *,
        at: datetime,
        confidence: float = 0.9,
        model: str = "gpt-4o-mini",
        prompt_version: str = "refunds@3",
        action_type: ActionType | None = None,
        service: Service | None = None,
        audited: bool = False,
    ) -> list[Proposal]:
        payload = {"order_id": "A-1", "amount": 10.0, "currency": "EUR"}
        rows = [
            Proposal(
                service=service or shop.service,
                action_type=action_type or refund_type,
                payload=payload,
                payload_hash=payload_hash(payload),
                final_payload={**payload, "amount": 5.0} if kind == "edited" else None,
                confidence=confidence,
                summary=f"planted {kind}",
                model=model,
                prompt_version=prompt_version,
                state="rejected" if kind == "rejected" else "approved",
                decision_outcome="reject" if kind == "rejected" else "approve",
                decided_by=Proposal.DecidedBy.REVIEWER,
                decided_at=at,
                created_at=at,
                updated_at=at,
            )
            for _ in range(count)
        ]
        Proposal.objects.bulk_create(rows)
        if audited:
            AuditSample.objects.bulk_create(
                AuditSample(
                    proposal=p, action_type=p.action_type, fraction=0.1, rule="auto", created_at=at
                )
                for p in rows
            )
        return rows

    return make


@pytest.fixture
def eager_tasks(settings: Any) -> Iterator[None]:
    """Tasks run where they are sent: an alert's webhook is attempted in this process when its
    transaction commits, through the outbox's own task (a retry Celery would hold for its
    countdown runs at once too, and finds the message not yet due).

    Not yet due only if the backoff outlasts the second a delivery may start early: the default
    2 s base makes the first retry 1-2 s, and one near 1 s was taken at once on a slow machine.
    A 20 s base makes it 10-20 s."""
    settings.EXECUTION_RETRY_BASE = timedelta(seconds=20)
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
