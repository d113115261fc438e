"""Reads for the /llm/ pages and for other apps that show a linked call."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from llmcalls.models import LLMCall, Route
from llmcalls.services import day_start, spent_today

STATS_SAMPLE = 20_000  # latency percentiles are computed over at most this many recent calls


def call_by_id(*, call_id: uuid.UUID | str | None) -> LLMCall | None:
    """The call a proposal links to, or None when it is unknown (or the id is malformed)."""
    if not call_id:
        return None
    try:
        return LLMCall.objects.filter(id=uuid.UUID(str(call_id))).first()
    except ValueError:
        return None


def cost_per_feature_per_day(*, days: int = 14) -> dict[str, Any]:
    """Chart data: one series of daily cost (USD) per feature, oldest day first."""
    first = (timezone.now() - timedelta(days=days - 1)).date()
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    rows = (
        LLMCall.objects.filter(created_at__gte=day_start() - timedelta(days=days - 1))
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


def model_stats(*, since: datetime) -> list[ModelStats]:
    """Latency p50/p95 and error rate per provider/model (cache hits and refusals left out)."""
    rows = (
        LLMCall.objects.filter(created_at__gte=since, cache_hit=False)
        .exclude(status=LLMCall.Status.REFUSED)
        .exclude(model="")
        .order_by("-created_at")
        .values_list("provider", "model", "status", "latency_ms")[:STATS_SAMPLE]
    )
    grouped: dict[tuple[str, str], list[tuple[str, float | None]]] = defaultdict(list)
    for provider, model, status, latency in rows:
        grouped[(provider, model)].append((status, latency))
    stats = []
    for (provider, model), calls in sorted(grouped.items()):
        latencies = sorted(lat for _, lat in calls if lat is not None)
        stats.append(
            ModelStats(
                provider=provider,
                model=model,
                calls=len(calls),
                errors=sum(1 for status, _ in calls if status != LLMCall.Status.OK),
                p50_ms=percentile(latencies, 50),
                p95_ms=percentile(latencies, 95),
            )
        )
    return stats


def rates(*, since: datetime) -> dict[str, Any]:
    totals = LLMCall.objects.filter(created_at__gte=since).aggregate(
        calls=Count("id"),
        cache_hits=Count("id", filter=Q(cache_hit=True)),
        fallbacks=Count("id", filter=Q(fell_back=True)),
        errors=Count("id", filter=Q(status=LLMCall.Status.ERROR)),
        refused=Count("id", filter=Q(status=LLMCall.Status.REFUSED)),
        cost=Sum("cost_usd"),
    )
    calls = totals["calls"] or 0
    for name in ("cache_hits", "fallbacks", "errors"):
        totals[f"{name}_pct"] = 100 * totals[name] / calls if calls else 0.0
    totals["cost"] = totals["cost"] or Decimal(0)
    return totals


def unpriced_models(*, since: datetime) -> list[dict[str, Any]]:
    """Models whose calls had no price: their cost is unknown, and the totals leave them out."""
    rows = (
        LLMCall.objects.filter(created_at__gte=since, price_missing=True)
        .values("provider", "model")
        .annotate(calls=Count("id"))
        .order_by("-calls")
    )
    return [dict(row) for row in rows]


def slowest_calls(*, since: datetime, limit: int = 10) -> list[LLMCall]:
    return list(
        LLMCall.objects.filter(created_at__gte=since, latency_ms__isnull=False)
        .defer("messages", "params", "response_text", "tool_calls", "attempt_log")
        .order_by("-latency_ms")[:limit]
    )


def most_expensive_calls(*, since: datetime, limit: int = 10) -> list[LLMCall]:
    return list(
        LLMCall.objects.filter(created_at__gte=since, cost_usd__isnull=False)
        .defer("messages", "params", "response_text", "tool_calls", "attempt_log")
        .order_by("-cost_usd")[:limit]
    )


def budgets_today() -> list[dict[str, Any]]:
    rows = []
    for route in Route.objects.filter(daily_budget_usd__isnull=False).order_by("feature"):
        budget = route.daily_budget_usd or Decimal(0)
        spent = spent_today(feature=route.feature)
        rows.append(
            {
                "feature": route.feature,
                "budget": budget,
                "spent": spent,
                "pct": float(100 * spent / budget) if budget else 100.0,
                "over_budget": route.over_budget,
            }
        )
    return rows
