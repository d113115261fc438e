"""Writes for llmcalls: configuration upserts, the call log, spend."""

from __future__ import annotations

import functools
import json
import logging
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Sum
from django.db.models.sql import InsertQuery
from django.utils import timezone
from django.utils.module_loading import import_string

from approvals.configfile import upsert
from llmcalls import observe
from llmcalls.models import LLMCall, Provider, Route, RouteTarget

logger = logging.getLogger("llmcalls")


# --- configuration -------------------------------------------------------------------------------


def provider_upsert(*, name: str, base_url: str, api_key_env: str) -> str:
    with transaction.atomic():
        result = upsert(
            Provider, {"name": name}, {"base_url": base_url, "api_key_env": api_key_env}
        )
    _config_changed()
    return result


def route_upsert(
    *,
    feature: str,
    targets: list[tuple[str, str]],
    deadline: timedelta,
    cache_ttl: timedelta | None,
    attempt_timeout: timedelta | None = None,
    daily_budget_usd: Decimal | None,
    over_budget: str,
    params: dict[str, Any],
) -> str:
    """Create or update a route and replace its targets; report what changed."""
    with transaction.atomic():
        result = upsert(
            Route,
            {"feature": feature},
            {
                "deadline": deadline,
                "attempt_timeout": attempt_timeout,
                "cache_ttl": cache_ttl,
                "daily_budget_usd": daily_budget_usd,
                "over_budget": over_budget,
                "params": params,
            },
        )
        route = Route.objects.get(feature=feature)
        current = [
            (t.provider.name, t.model) for t in route.targets.select_related("provider").all()
        ]
        if current != targets:
            providers = {
                p.name: p for p in Provider.objects.filter(name__in=[p for p, _ in targets])
            }
            route.targets.all().delete()
            RouteTarget.objects.bulk_create(
                RouteTarget(route=route, position=i, provider=providers[p], model=m)
                for i, (p, m) in enumerate(targets)
            )
            if result != "created":
                result = "updated (models)" if result == "unchanged" else f"{result}, models"
    _config_changed()
    return result


def _config_changed() -> None:
    from llmcalls import routing

    # Now (so this transaction, and a test inside one, sees its own change) and again after the
    # commit (so no other thread keeps a snapshot it read in between).
    routing.forget()
    transaction.on_commit(routing.forget)


# --- spend -----------------------------------------------------------------------------------------


def day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of the current day: budgets are per UTC day."""
    now = now or timezone.now()
    return datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)


def spent_today(*, feature: str) -> Decimal:
    total = LLMCall.objects.filter(feature=feature, created_at__gte=day_start()).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return total or Decimal(0)


# --- the call log ----------------------------------------------------------------------------------

_FIELDS = [f for f in LLMCall._meta.concrete_fields]


def call_log_write(*, record: dict[str, Any]) -> LLMCall:
    """Store one call with a single INSERT.

    A failed call must survive its caller's rollback: when the caller holds a transaction open,
    the row goes in through a second connection from the same pool. A failed call is committed
    durably (the commit waits for the WAL flush); a successful one with synchronous_commit off,
    which saves that wait (a millisecond or more) and could lose the row only if PostgreSQL
    itself crashed in the next fraction of a second. If the database refuses the row, the
    record goes to the `llmcalls` logger in full instead.
    """
    response_model = record.pop("response_model", "") or record.get("model", "")
    record = redact(record)
    call = LLMCall(**record)
    durable = record.get("status") != LLMCall.Status.OK
    try:
        if _inside_callers_transaction():
            side = connections.create_connection(DEFAULT_DB_ALIAS)
            try:
                _insert(call, side, durable=durable)
            finally:
                side.close()
        else:
            _insert(call, connection, durable=durable)
    except Exception:
        logger.exception(
            "llm call log write failed; the record follows: %s",
            json.dumps(record, default=str, ensure_ascii=False),
        )
    observe.call_observe(record=record, response_model=response_model)
    return call


@functools.cache
def _redactor(path: str) -> Any:
    return import_string(path)


def redact(record: dict[str, Any]) -> dict[str, Any]:
    """Run the LLMCALLS_REDACT hook (a dotted path to `function(record) -> record`) on a call
    before it is stored, logged or traced. If the hook fails, the call's text is dropped and its
    numbers kept: text the hook could not clean is never stored."""
    path = settings.LLMCALLS_REDACT
    if not path:
        return record
    try:
        redacted = _redactor(path)(dict(record))
        if not isinstance(redacted, dict):
            raise TypeError(f"returned {type(redacted).__name__}, not the record")
        return redacted
    except Exception:
        logger.exception("LLMCALLS_REDACT %s failed; the call's text is not kept", path)
        return {**record, "messages": [], "response_text": "", "tool_calls": None}


def call_text_purge(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Empty the prompt and response text of calls older than LLMCALLS_LOG_RETENTION.

    Tokens, latency, cost and the rest stay for the cost history. Marked rows (`text_purged_at`)
    leave the partial index the next run reads, so each run touches only new work.
    """
    now = now or timezone.now()
    cutoff = now - settings.LLMCALLS_LOG_RETENTION
    purged = 0
    while True:
        ids = list(
            LLMCall.objects.filter(created_at__lt=cutoff, text_purged_at__isnull=True)
            .order_by("created_at")
            .values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return purged
        purged += LLMCall.objects.filter(pk__in=ids, text_purged_at__isnull=True).update(
            messages=[], response_text="", tool_calls=None, text_purged_at=now
        )


def _inside_callers_transaction() -> bool:
    if connection.vendor != "postgresql" or not connection.in_atomic_block:
        return False
    # Django's TestCase wraps each test in atomic blocks of its own; those do not count.
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def _insert(call: LLMCall, conn: Any, *, durable: bool) -> None:
    query = InsertQuery(LLMCall)
    query.insert_values(_FIELDS, [call])
    compiler = query.get_compiler(connection=conn)
    if durable or conn.vendor != "postgresql" or not conn.get_autocommit():
        compiler.execute_sql(returning_fields=None)
        return
    # Four short round trips (BEGIN, SET LOCAL, INSERT, COMMIT) cost less than one WAL flush.
    conn.set_autocommit(False)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        compiler.execute_sql(returning_fields=None)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.set_autocommit(True)
