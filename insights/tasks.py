"""The periodic insights job (scheduled in config/celery.py)."""

from __future__ import annotations

from config.celery import app
from insights import services


@app.task(name="insights.check")
def check() -> int:
    result = services.insights_check()
    return len(result.alerts) + len(result.brakes)


@app.task(name="insights.redeliver_webhooks")
def redeliver_webhooks() -> int:
    return services.alert_webhooks_redeliver()
