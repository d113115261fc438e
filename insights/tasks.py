"""The periodic insights job (scheduled in config/celery.py). Alert webhooks have no task of
their own: they are outbox rows, delivered and reconciled by approvals' tasks."""

from __future__ import annotations

from config.celery import app
from insights import services


@app.task(name="insights.check")
def check() -> int:
    result = services.insights_check()
    return len(result.alerts) + len(result.brakes)
