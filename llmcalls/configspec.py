"""The `llm_providers`, `llm_routes` and `llm_grants` sections of `manage.py apply`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from foundation import webhooks
from foundation.configfile import ConfigFileError, Duration, StrictItem, register


def _unless(problem: str, value: str) -> str:
    if problem:
        raise ValueError(problem)
    return value


class ProviderSpec(StrictItem):
    name: str = Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)
    base_url: str = Field(pattern=r"^https?://", max_length=500)
    api_key_env: str = Field(default="", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$|^$", max_length=100)

    @field_validator("api_key_env")
    @classmethod
    def _allowed_key_env(cls, value: str) -> str:
        from llmcalls.services import api_key_env_problem

        return _unless(api_key_env_problem(value), value)

    @field_validator("base_url")
    @classmethod
    def _egress(cls, base_url: str) -> str:
        problem = webhooks.url_problem(base_url)
        if problem:
            raise ValueError(f"the base_url is refused: {problem}")
        return base_url


class TargetSpec(StrictItem):
    provider: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=200)


class RouteSpec(StrictItem):
    feature: str = Field(min_length=1, max_length=200)
    models: list[TargetSpec] = Field(min_length=1)
    deadline: Duration = timedelta(seconds=30)
    attempt_timeout: Duration | None = None
    cache_ttl: Duration | None = None
    daily_budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=4)
    over_budget: Literal["refuse", "next-model"] = "refuse"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("deadline")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("the deadline must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _attempt_within_deadline(self) -> RouteSpec:
        if self.attempt_timeout is not None and not (
            timedelta(0) < self.attempt_timeout < self.deadline
        ):
            raise ValueError("attempt_timeout must be longer than 0s and shorter than the deadline")
        return self

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted({"model", "messages", "stream"} & set(value))
        if reserved:
            raise ValueError(f"params may not set {', '.join(reserved)}")
        return value


@register("llm_providers", ProviderSpec, order=50)
def apply_providers(items: list[ProviderSpec]) -> list[str]:
    from llmcalls import services

    return [
        f"llm provider {spec.name}: "
        + services.provider_upsert(
            name=spec.name, base_url=spec.base_url, api_key_env=spec.api_key_env
        )
        for spec in items
    ]


@register("llm_routes", RouteSpec, order=60)
def apply_routes(items: list[RouteSpec]) -> list[str]:
    from llmcalls import services
    from llmcalls.models import Provider

    known = set(Provider.objects.values_list("name", flat=True))
    unknown = [
        f"llm_routes[{index}] ({spec.feature}): unknown provider {target.provider!r}"
        for index, spec in enumerate(items)
        for target in spec.models
        if target.provider not in known
    ]
    if unknown:
        raise ConfigFileError(unknown)
    return [
        f"llm route {spec.feature}: "
        + services.route_upsert(
            feature=spec.feature,
            targets=[(t.provider, t.model) for t in spec.models],
            deadline=spec.deadline,
            attempt_timeout=spec.attempt_timeout,
            cache_ttl=spec.cache_ttl,
            daily_budget_usd=spec.daily_budget_usd,
            over_budget=spec.over_budget,
            params=spec.params,
        )
        for spec in items
    ]


class GrantSpec(StrictItem):
    service: str = Field(min_length=1, max_length=100)
    feature: str = Field(min_length=1, max_length=200)
    action_types: list[str] = Field(
        default_factory=list,
        description="whose reviewers see the calls; omit: every type the service may propose",
    )

    @field_validator("feature")
    @classmethod
    def _feature(cls, value: str) -> str:
        from llmcalls.services import feature_problem

        return _unless(feature_problem(value), value)


@register("llm_grants", GrantSpec, order=65)
def apply_grants(items: list[GrantSpec]) -> list[str]:
    from approvals.models import Service
    from foundation.errors import ApplicationError
    from llmcalls import services

    found = {s.name: s for s in Service.objects.filter(name__in=[i.service for i in items])}
    report = []
    for index, spec in enumerate(items):
        where = f"llm_grants[{index}] ({spec.service} → {spec.feature})"
        service = found.get(spec.service)
        if service is None:
            raise ConfigFileError(
                [f"{where}: unknown service {spec.service!r}; create it first (create_service)"]
            )
        try:
            result = services.feature_grant_upsert(
                service=service,
                feature=spec.feature,
                action_type_keys=spec.action_types,
                actor="config:apply",
            )
        except ApplicationError as exc:
            raise ConfigFileError([f"{where}: {exc.message}"]) from None
        report.append(f"llm grant {spec.service} → {spec.feature}: {result}")
    return report
