"""Writes for llmcalls: configuration upserts, the call log, spend."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Sum
from django.db.models.sql import InsertQuery
from django.utils import timezone
from django.utils.module_loading import import_string

from approvals import bulk
from approvals.models import ActionType, AuditEvent, Service
from foundation.configfile import upsert
from foundation.errors import ApplicationError
from llmcalls import observe
from llmcalls.models import FeatureGrant, LLMCall, Provider, Route, RouteTarget

logger = logging.getLogger("llmcalls")


# --- configuration -------------------------------------------------------------------------------


KEY_ENV_PREFIX = "GATEHOUSE_PROVIDER_"
# Gatehouse's own secrets and connections: never a provider's key, whatever the allow-list says.
_NEVER_KEY_ENVS = frozenset(
    {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "INSIGHTS_WEBHOOK_SECRET", "METRICS_TOKEN"}
)
_NEVER_KEY_ENV_PREFIXES = ("DJANGO_", "GATEHOUSE_", "DATABASE", "REDIS", "CELERY_", "PG")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROVIDER_AUDITED = ("name", "base_url", "api_key_env")


def api_key_env_problem(name: str) -> str:
    """Why a provider may not take its key from this environment variable ('' if it may).

    A provider's key goes to its base URL, so whoever may edit a provider could otherwise send
    any variable of the process (SECRET_KEY, DATABASE_URL …) to a host of their choosing.
    """
    if not name:
        return ""
    if not _ENV_NAME.match(name):
        return f"{name!r} is not an environment variable name"
    if name.startswith(KEY_ENV_PREFIX) and len(name) > len(KEY_ENV_PREFIX):
        return ""
    upper = name.upper()
    if upper in _NEVER_KEY_ENVS or upper.startswith(_NEVER_KEY_ENV_PREFIXES):
        return f"{name} holds one of Gatehouse's own settings; it is never sent to a provider"
    if name in settings.LLM_PROVIDER_KEY_ENVS:
        return ""
    return (
        f"a provider's key must come from a variable named {KEY_ENV_PREFIX}… "
        f"or listed in LLM_PROVIDER_KEY_ENVS; {name} is neither"
    )


def provider_save(*, provider: Provider, actor: str) -> bool:
    """Create or change a provider; audit where its key goes (name, base URL, key variable).

    Returns whether an audited field changed (or the provider is new).
    """
    problem = api_key_env_problem(provider.api_key_env)
    if problem:
        raise ApplicationError(
            f"api_key_env: {problem}.",
            status=422,
            code="api-key-env-refused",
            errors=[{"loc": ["api_key_env"], "msg": problem}],
        )
    with transaction.atomic():
        before = (
            Provider.objects.select_for_update().filter(pk=provider.pk).first()
            if provider.pk
            else None
        )
        provider.save()
        changes = {
            name: {"old": getattr(before, name) if before else None, "new": getattr(provider, name)}
            for name in _PROVIDER_AUDITED
            if before is None or getattr(before, name) != getattr(provider, name)
        }
        if changes:
            AuditEvent.objects.create(
                kind="llm_provider.created" if before is None else "llm_provider.changed",
                actor=actor,
                data={"provider": provider.name, **changes},
            )
    _config_changed()
    return bool(changes)


def provider_delete(*, provider: Provider, actor: str) -> None:
    with transaction.atomic():
        AuditEvent.objects.create(
            kind="llm_provider.deleted",
            actor=actor,
            data={
                "provider": provider.name,
                "base_url": provider.base_url,
                "api_key_env": provider.api_key_env,
            },
        )
        provider.delete()
    _config_changed()


def provider_upsert(
    *, name: str, base_url: str, api_key_env: str, actor: str = "config:apply"
) -> str:
    with transaction.atomic():
        provider = Provider.objects.select_for_update().filter(name=name).first()
        created = provider is None
        provider = provider or Provider(name=name)
        wanted = {"base_url": base_url, "api_key_env": api_key_env}
        changed = [field for field, value in wanted.items() if getattr(provider, field) != value]
        if not created and not changed:
            return "unchanged"
        for field, value in wanted.items():
            setattr(provider, field, value)
        provider_save(provider=provider, actor=actor)
    return "created" if created else "updated (" + ", ".join(changed) + ")"


# --- feature grants: what a service may call through the proxy -----------------------------------


def feature_problem(feature: str) -> str:
    if not feature or len(feature) > 200:
        return "a feature name has 1 to 200 characters"
    if feature != feature.strip() or not feature.isprintable():
        return "a feature name has no surrounding spaces and no control characters"
    return ""


def feature_grant_action_types_problem(
    *, service: Service, action_types: Iterable[ActionType]
) -> str:
    """The grant may name only action types the service may propose (their reviewers see it)."""
    allowed = set(service.action_types.values_list("pk", flat=True))
    foreign = sorted(t.key for t in action_types if t.pk not in allowed)
    if foreign:
        return f"service {service.name!r} may not propose {', '.join(foreign)}"
    return ""


def feature_grant_upsert(
    *, service: Service, feature: str, action_type_keys: list[str] | None = None, actor: str
) -> str:
    """Let a service call a feature through the proxy; report what changed.

    `action_type_keys` names whose reviewers see the calls (None or empty: the reviewers of
    every type the service may propose).
    """
    problem = feature_problem(feature)
    if problem:
        raise ApplicationError(f"{feature!r}: {problem}.", code="bad-feature")
    keys = sorted(set(action_type_keys or ()))
    types = list(ActionType.objects.filter(key__in=keys))
    missing = sorted(set(keys) - {t.key for t in types})
    if missing:
        raise ApplicationError(
            f"Unknown action types: {', '.join(missing)}.", code="unknown-action-type"
        )
    problem = feature_grant_action_types_problem(service=service, action_types=types)
    if problem:
        raise ApplicationError(f"{problem}.", code="action-type-not-allowed")
    with transaction.atomic():
        grant, created = FeatureGrant.objects.get_or_create(service=service, feature=feature)
        before = sorted(grant.action_types.values_list("key", flat=True))
        if not created and before == keys:
            return "unchanged"
        grant.action_types.set(types)
        AuditEvent.objects.create(
            kind="llm_feature.granted",
            actor=actor,
            data={"service": service.name, "feature": feature, "action_types": keys},
        )
    _config_changed()
    return "created" if created else "updated (action_types)"


def feature_grants_for_new_service(service: Service, features: list[str]) -> None:
    """`create_service --llm-features a,b`: grant each, seen by all the service's reviewers."""
    for feature in features:
        feature_grant_upsert(service=service, feature=feature, actor="system")


def feature_grant_changed(*, grant: FeatureGrant, created: bool, actor: str) -> None:
    """Audit a grant saved by the admin (which writes the row and its action types itself)."""
    AuditEvent.objects.create(
        kind="llm_feature.granted",
        actor=actor,
        data={
            "service": grant.service.name,
            "feature": grant.feature,
            "action_types": sorted(grant.action_types.values_list("key", flat=True)),
            "created": created,
        },
    )
    _config_changed()


def feature_grant_revoke(*, grant: FeatureGrant, actor: str) -> None:
    with transaction.atomic():
        AuditEvent.objects.create(
            kind="llm_feature.revoked",
            actor=actor,
            data={"service": grant.service.name, "feature": grant.feature},
        )
        grant.delete()
    _config_changed()


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
    semantic_cache: dict[str, Any] | None = None,
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
                "semantic_cache": semantic_cache,
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


def spent_today(*, feature: str, service: str) -> Decimal:
    """What one service ("" for Gatehouse's own calls) spent on a feature today."""
    total = LLMCall.objects.filter(
        feature=feature, service=service, created_at__gte=day_start()
    ).aggregate(total=Sum("cost_usd"))["total"]
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
    if durable or conn.vendor != "postgresql" or not conn.get_autocommit():
        query = InsertQuery(LLMCall)
        query.insert_values(_FIELDS, [call])
        query.get_compiler(connection=conn).execute_sql(returning_fields=None)
        return
    # One statement, its own transaction: its RETURNING turns synchronous_commit off for that
    # transaction only (set_config's is_local), before it commits, so the commit does not wait
    # for the WAL flush; the setting ends with it. (It was BEGIN, SET LOCAL, INSERT and COMMIT:
    # four round trips.) The statement is compiled once (approvals.bulk); only the values are
    # prepared per call, and they go apart from the SQL (the extended protocol, as the submit's
    # INSERT): PostgreSQL parses and plans it once per connection, and the JSON and text are
    # not quoted into the statement on every call.
    sql, params = bulk.insert_sql([call])
    with bulk.server_binding_cursor(conn) as cursor:
        cursor.execute(f"{sql} {_ASYNC_COMMIT}", params)


_ASYNC_COMMIT = "RETURNING set_config('synchronous_commit', 'off', true)"
