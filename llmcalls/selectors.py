"""Reads for the /llm/ pages and for other apps that show a linked call."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import connections
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from approvals.selectors import AnyUser, visible_action_type_ids
from llmcalls.models import FeatureGrant, LLMCall, Route
from llmcalls.services import day_start

STATS_SAMPLE = 20_000  # latency percentiles are computed over at most this many recent calls
VIEW_ALL = "llmcalls.view_llmcall"  # sees every call, Gatehouse's own included


# --- who sees which calls ------------------------------------------------------------------------


def visible_service_features(*, user: AnyUser) -> set[tuple[str, str]]:
    """The (service name, feature) pairs whose calls a reviewer may read.

    Those a reviewer may see the service's proposals of: a pair counts when the feature is
    granted to the service and one of the reviewer's groups reviews an action type that the
    service may propose and that the grant names (a grant naming none: any the service may
    propose). Gatehouse's own calls (no service) are seen only with VIEW_ALL.
    """
    type_ids = visible_action_type_ids(user=user)
    if not type_ids:
        return set()
    grants = (
        FeatureGrant.objects.filter(service__action_types__in=type_ids)
        .distinct()
        .select_related("service")
        .prefetch_related("action_types", "service__action_types")
    )
    pairs = set()
    for grant in grants:
        service_types = {t.pk for t in grant.service.action_types.all()}
        named = {t.pk for t in grant.action_types.all()} or service_types
        if named & service_types & type_ids:
            pairs.add((grant.service.name, grant.feature))
    return pairs


def can_read_calls(*, user: AnyUser) -> bool:
    """Who may open /llm/ at all: VIEW_ALL, or a reviewer (who then sees their own lines)."""
    if not isinstance(user, User) or not user.is_active:
        return False
    return user.has_perm(VIEW_ALL) or bool(visible_action_type_ids(user=user))


def visible_calls(*, user: AnyUser) -> QuerySet[LLMCall]:
    if not isinstance(user, User) or not user.is_active:
        return LLMCall.objects.none()
    if user.has_perm(VIEW_ALL):
        return LLMCall.objects.all()
    pairs = visible_service_features(user=user)
    if not pairs:
        return LLMCall.objects.none()
    where = Q()
    for service, feature in sorted(pairs):
        where |= Q(service=service, feature=feature)
    return LLMCall.objects.filter(where)


def call_by_id(*, call_id: uuid.UUID | str | None, service: str) -> LLMCall | None:
    """The call a proposal links to, or None when it is unknown (or the id is malformed).

    Only a call of `service` (the proposal's): a page never shows another tenant's call.
    """
    if not call_id:
        return None
    try:
        return LLMCall.objects.filter(id=uuid.UUID(str(call_id)), service=service).first()
    except ValueError:
        return None


def _all(calls: QuerySet[LLMCall] | None) -> QuerySet[LLMCall]:
    return LLMCall.objects.all() if calls is None else calls


def cost_per_feature_per_day(
    *, days: int = 14, calls: QuerySet[LLMCall] | None = None
) -> dict[str, Any]:
    """Chart data: one series of daily cost (USD) per feature, oldest day first."""
    first = (timezone.now() - timedelta(days=days - 1)).date()
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    rows = (
        _all(calls)
        .filter(created_at__gte=day_start() - timedelta(days=days - 1))
        .annotate(day=TruncDate("created_at"))
        .values("feature", "day")
        .annotate(cost=Sum("cost_usd"))
        .order_by("feature", "day")
    )
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * days)
    for row in rows:
        index = labels.index(row["day"].isoformat()) if row["day"].isoformat() in labels else -1
        if index >= 0:
            series[row["feature"]][index] = float(row["cost"] or 0)
    return {
        "labels": labels,
        "series": [{"feature": f, "costs": costs} for f, costs in sorted(series.items())],
    }


@dataclass
class ModelStats:
    provider: str
    model: str
    calls: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def error_pct(self) -> float:
        return 100 * self.errors / self.calls if self.calls else 0.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return None
    rank = max(1, round(q / 100 * len(values) + 0.5 - 1e-9))
    return values[min(rank, len(values)) - 1]


def model_stats(*, since: datetime, calls: QuerySet[LLMCall] | None = None) -> list[ModelStats]:
    """Latency p50/p95 and error rate per provider/model (cache hits and refusals left out), over
    the STATS_SAMPLE most recent calls.

    On PostgreSQL the sample is grouped and its percentiles taken there (`percentile_disc`, the
    nearest rank, as `percentile` below): reading 20,000 rows into Python to sort them took two
    thirds of /llm/ on a million calls (96 → 31 ms, bench/README.md). Elsewhere (SQLite, the
    embedded default) Python does it from the same sample.
    """
    sample = (
        _all(calls)
        .filter(created_at__gte=since, cache_hit=False)
        .exclude(status=LLMCall.Status.REFUSED)
        .exclude(model="")
        .order_by("-created_at")
        .values_list("provider", "model", "status", "latency_ms")[:STATS_SAMPLE]
    )
    if connections[sample.db].vendor == "postgresql":
        return _model_stats_in_sql(sample)
    return model_stats_of(sample)


def model_stats_of(rows: Iterable[tuple[str, str, str, float | None]]) -> list[ModelStats]:
    """ModelStats of (provider, model, status, latency_ms) rows, in Python."""
    grouped: dict[tuple[str, str], list[tuple[str, float | None]]] = defaultdict(list)
    for provider, model, status, latency in rows:
        grouped[(provider, model)].append((status, latency))
    stats = []
    for (provider, model), outcomes in sorted(grouped.items()):
        latencies = sorted(lat for _, lat in outcomes if lat is not None)
        stats.append(
            ModelStats(
                provider=provider,
                model=model,
                calls=len(outcomes),
                errors=sum(1 for status, _ in outcomes if status != LLMCall.Status.OK),
                p50_ms=percentile(latencies, 50),
                p95_ms=percentile(latencies, 95),
            )
        )
    return stats


def _model_stats_in_sql(sample: QuerySet[Any]) -> list[ModelStats]:
    inner, params = sample.query.sql_with_params()
    # The sample's own statement (its filters, the reader's visibility included) as a subquery;
    # its columns are named after the fields. Ordered set aggregates leave NULL latencies out,
    # as the sort above does.
    sql = (
        "SELECT provider, model, count(*), count(*) FILTER (WHERE status <> %s), "  # noqa: S608
        "percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms), "
        "percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) "
        f"FROM ({inner}) AS sample GROUP BY provider, model"
    )
    with connections[sample.db].cursor() as cursor:
        cursor.execute(sql, [LLMCall.Status.OK.value, *params])
        rows = sorted(cursor.fetchall())  # by provider and model, as Python orders them
    return [
        ModelStats(provider=provider, model=model, calls=n, errors=errors, p50_ms=p50, p95_ms=p95)
        for provider, model, n, errors, p50, p95 in rows
    ]


def rates(*, since: datetime, calls: QuerySet[LLMCall] | None = None) -> dict[str, Any]:
    totals = (
        _all(calls)
        .filter(created_at__gte=since)
        .aggregate(
            calls=Count("id"),
            cache_hits=Count("id", filter=Q(cache_hit=True)),
            semantic_hits=Count("id", filter=Q(cache_hit=True, cache_source__isnull=False)),
            saved=Sum("cache_saved_usd"),
            fallbacks=Count("id", filter=Q(fell_back=True)),
            errors=Count("id", filter=Q(status=LLMCall.Status.ERROR)),
            refused=Count("id", filter=Q(status=LLMCall.Status.REFUSED)),
            cost=Sum("cost_usd"),
        )
    )
    count = totals["calls"] or 0
    for name in ("cache_hits", "fallbacks", "errors"):
        totals[f"{name}_pct"] = 100 * totals[name] / count if count else 0.0
    totals["cost"] = totals["cost"] or Decimal(0)
    totals["saved"] = totals["saved"] or Decimal(0)  # what the semantic cache's answers had cost
    return totals


def unpriced_models(
    *, since: datetime, calls: QuerySet[LLMCall] | None = None
) -> list[dict[str, Any]]:
    """Models whose calls had no price: their cost is unknown, and the totals leave them out."""
    rows = (
        _all(calls)
        .filter(created_at__gte=since, price_missing=True)
        .values("provider", "model")
        .annotate(calls=Count("id"))
        .order_by("-calls")
    )
    return [dict(row) for row in rows]


def slowest_calls(
    *, since: datetime, limit: int = 10, calls: QuerySet[LLMCall] | None = None
) -> list[LLMCall]:
    return list(
        _all(calls)
        .filter(created_at__gte=since, latency_ms__isnull=False)
        .defer("messages", "params", "response_text", "tool_calls", "attempt_log")
        .order_by("-latency_ms")[:limit]
    )


def most_expensive_calls(
    *, since: datetime, limit: int = 10, calls: QuerySet[LLMCall] | None = None
) -> list[LLMCall]:
    return list(
        _all(calls)
        .filter(created_at__gte=since, cost_usd__isnull=False)
        .defer("messages", "params", "response_text", "tool_calls", "attempt_log")
        .order_by("-cost_usd")[:limit]
    )


def budgets_today(*, calls: QuerySet[LLMCall] | None = None) -> list[dict[str, Any]]:
    """Today's spend against each budget: a budget holds per service and feature."""
    routes = {r.feature: r for r in Route.objects.filter(daily_budget_usd__isnull=False)}
    if not routes:
        return []
    spent = (
        _all(calls)
        .filter(created_at__gte=day_start(), route__in=list(routes))
        .values("route", "feature", "service")
        .annotate(spent=Sum("cost_usd"))
        .order_by("feature", "service")
    )
    rows = []
    for row in spent:
        route = routes[row["route"]]
        budget = route.daily_budget_usd or Decimal(0)
        total = row["spent"] or Decimal(0)
        rows.append(
            {
                "feature": row["feature"],
                "service": row["service"],
                "budget": budget,
                "spent": total,
                "pct": float(100 * total / budget) if budget else 100.0,
                "over_budget": route.over_budget,
            }
        )
    return rows
