"""Routes, prices and feature grants as plain values, read from the database and kept in memory
briefly.

A model call must not pay several queries for configuration, so each process keeps a snapshot for
LLM_CONFIG_TTL seconds (admin edits take effect within that time; edits made through
llmcalls.services take effect at once in the process that made them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from foundation.ttlcache import TTLCache

MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class Target:
    provider: str
    base_url: str
    api_key_env: str
    model: str

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class RouteConfig:
    feature: str
    targets: tuple[Target, ...]
    deadline: float
    attempt_timeout: float | None = None
    cache_ttl: float | None = None
    daily_budget_usd: Decimal | None = None
    over_budget: str = "refuse"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Price:
    model: str
    provider: str
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    output_per_mtok: Decimal
    effective_from: date

    def cost(self, *, input_tokens: int, output_tokens: int, cached_tokens: int) -> Decimal:
        cached = min(cached_tokens, input_tokens)
        cached_rate = (
            self.cached_input_per_mtok
            if self.cached_input_per_mtok is not None
            else self.input_per_mtok
        )
        return (
            (input_tokens - cached) * self.input_per_mtok
            + cached * cached_rate
            + output_tokens * self.output_per_mtok
        ) / MTOK


@dataclass
class _Snapshot:
    routes: dict[str, RouteConfig]
    prices: dict[str, list[Price]]  # model -> newest first
    grants: dict[int, frozenset[str]]  # service id -> the features it may call through the proxy


# One entry: the whole snapshot, kept LLM_CONFIG_TTL seconds.
_snapshots = TTLCache(max_entries=1, ttl_setting="LLM_CONFIG_TTL")


def forget() -> None:
    """Drop the snapshot; the next call reads the database again."""
    _snapshots.clear()


def _load() -> _Snapshot:
    from llmcalls.models import FeatureGrant, ModelPrice, Route

    routes: dict[str, RouteConfig] = {}
    for route in Route.objects.prefetch_related("targets__provider"):
        routes[route.feature] = RouteConfig(
            feature=route.feature,
            targets=tuple(
                Target(t.provider.name, t.provider.base_url, t.provider.api_key_env, t.model)
                for t in route.targets.all()
            ),
            deadline=route.deadline.total_seconds(),
            attempt_timeout=route.attempt_timeout.total_seconds()
            if route.attempt_timeout
            else None,
            cache_ttl=route.cache_ttl.total_seconds() if route.cache_ttl else None,
            daily_budget_usd=route.daily_budget_usd,
            over_budget=route.over_budget,
            params=dict(route.params or {}),
        )
    prices: dict[str, list[Price]] = {}
    for row in ModelPrice.objects.order_by("model", "-effective_from"):
        prices.setdefault(row.model, []).append(
            Price(
                row.model,
                row.provider,
                row.input_per_mtok,
                row.cached_input_per_mtok,
                row.output_per_mtok,
                row.effective_from,
            )
        )
    grants: dict[int, set[str]] = {}
    for service_id, feature in FeatureGrant.objects.values_list("service_id", "feature"):
        grants.setdefault(service_id, set()).add(feature)
    return _Snapshot(routes, prices, {k: frozenset(v) for k, v in grants.items()})


def _current() -> _Snapshot:
    snapshot: _Snapshot | None = _snapshots.get("all")
    if snapshot is None:
        snapshot = _load()
        _snapshots.set("all", snapshot)
    return snapshot


def route_for(feature: str) -> RouteConfig | None:
    """The feature's route, else the route named `default`, else None."""
    routes = _current().routes
    return routes.get(feature) or routes.get("default")


def price_for(*, provider: str, model: str, on: date) -> Price | None:
    """The price in force on a day: a provider-specific row wins over a general one."""
    rows = [p for p in _current().prices.get(model, ()) if p.effective_from <= on]
    for row in rows:
        if row.provider == provider:
            return row
    for row in rows:
        if not row.provider:
            return row
    return None


def granted_features(*, service_id: int) -> frozenset[str]:
    """The features a service may call through the proxy."""
    return _current().grants.get(service_id, frozenset())


def models_for(*, features: frozenset[str]) -> list[tuple[str, str]]:
    """(model, provider) of the routes that serve these features."""
    routes = {route.feature: route for f in features if (route := route_for(f)) is not None}
    return [(t.model, t.provider) for r in routes.values() for t in r.targets]
