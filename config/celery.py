"""The Celery app: `celery -A config worker` and `celery -A config beat`.

The broker is Redis when REDIS_URL is set, else a folder on disk (settings.BROKER_DIR) so the
embedded default needs no server. The broker only carries nudges: what must happen is recorded in
the outbox table first, and the reconciler below re-dispatches whatever a lost message left behind.
Every periodic job is defined here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings

log = logging.getLogger("gatehouse.worker")


class DatabaseGatedTask(Task):  # type: ignore[misc]
    """A task that meets a database that is away waits for it, then runs once more.

    The worker slot stays busy meanwhile, and with a prefetch of one the worker takes no more
    messages, so a queue of work is not consumed and failed while PostgreSQL restarts: it is
    picked up as soon as the database answers. A wait that outlasts the task's time limit gives
    the message up; the outbox row stays pending and the reconciler sends it again.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from config.health import backing_service_down

        started = time.monotonic()
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if backing_service_down(exc) != "database":
                raise
            limit = self.soft_time_limit or self.time_limit or settings.WORKER_DATABASE_WAIT
            deadline = started + min(float(limit), settings.WORKER_DATABASE_WAIT) - 1
            log.warning("%s: the database is unreachable; waiting for it", self.name)
            if not _wait_for_database(deadline):
                log.warning("%s: the database stayed away; the reconciler re-sends it", self.name)
                return None
        return super().__call__(*args, **kwargs)


def _wait_for_database(deadline: float) -> bool:
    from django.db import connection

    while True:
        connection.close()  # never reuse a connection that died with the old server
        try:
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:
            if time.monotonic() >= deadline:
                connection.close()
                return False
            time.sleep(0.5)


app = Celery("gatehouse", task_cls=DatabaseGatedTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # Early acknowledgement: a message a crashed worker held is lost from the broker, and the
    # outbox reconciler delivers it again; the lease on each outbox row keeps that exactly-once.
    task_acks_late=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # Publishing happens after commit, on the request path: fail fast, the reconciler retries.
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
    timezone="UTC",
)

# Celery's Django fixup closes the database connection around every task, and with a psycopg
# pool that means a new pool (and connection) per task, about 10 ms. Reuse it for this many
# tasks instead. The fixup reads only this old-style key.
app.conf["CELERY_DB_REUSE_MAX"] = 100

if not settings.REDIS_URL:
    for folder in ("queue", "control"):
        Path(settings.BROKER_DIR, folder).mkdir(parents=True, exist_ok=True)


def _seconds(value: object) -> float:
    return float(value.total_seconds())  # type: ignore[attr-defined]


app.conf.beat_schedule = {
    "reconcile-outbox": {
        "task": "approvals.reconcile_outbox",
        "schedule": _seconds(settings.OUTBOX_RECONCILE_INTERVAL),
    },
    "expire-stale-reviews": {
        "task": "approvals.expire_proposals",
        "schedule": _seconds(settings.EXPIRY_INTERVAL),
    },
    "check-review-slas": {
        "task": "approvals.check_review_slas",
        "schedule": _seconds(settings.SLA_CHECK_INTERVAL),
    },
    "purge-idempotency-keys": {
        "task": "approvals.purge_idempotency_keys",
        "schedule": _seconds(settings.IDEMPOTENCY_PURGE_INTERVAL),
    },
    "llmcalls-purge-call-text": {
        "task": "llmcalls.purge_call_text",
        "schedule": _seconds(settings.LLMCALLS_PURGE_INTERVAL),
    },
    "notify-digests": {
        "task": "notify.send_digests",
        "schedule": _seconds(settings.NOTIFY_DIGEST_CHECK_INTERVAL),
    },
    "notify-reconcile": {
        "task": "notify.reconcile",
        "schedule": _seconds(settings.NOTIFY_RECONCILE_INTERVAL),
    },
}


if "insights" in settings.INSTALLED_APPS:  # optional: approvals runs without it
    app.conf.beat_schedule |= {
        "insights-check": {
            "task": "insights.check",
            "schedule": _seconds(settings.INSIGHTS_CHECK_INTERVAL),
        },
    }


@signals.setup_logging.connect
def _logging(**kwargs: object) -> None:
    """Worker and beat log exactly as the web does (LOG_FORMAT, context, redaction)."""
    import logging.config

    logging.config.dictConfig(settings.LOGGING)


@signals.task_prerun.connect
def _bind_task(task_id: str = "", task: object = None, **kwargs: object) -> None:
    from telemetry import logs

    _task_tokens[task_id] = logs.bind(task_name=getattr(task, "name", ""), task_id=task_id)


@signals.task_postrun.connect
def _unbind_task(task_id: str = "", **kwargs: object) -> None:
    from telemetry import logs

    token = _task_tokens.pop(task_id, None)
    if token is not None:
        logs.unbind(token)


_task_tokens: dict[str, Any] = {}

app.autodiscover_tasks()
