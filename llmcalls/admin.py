from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from foundation import webhooks
from foundation.admin import ReadOnlyAdmin
from llmcalls import routing, services
from llmcalls.models import FeatureGrant, LLMCall, ModelPrice, Provider, Route, RouteTarget


class _ForgetsSnapshot(admin.ModelAdmin):
    """Edits reach this process at once (others within LLM_CONFIG_TTL seconds)."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        transaction.on_commit(routing.forget)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        transaction.on_commit(routing.forget)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(routing.forget)


def _unless(problem: str, value: str) -> str:
    if problem:
        raise forms.ValidationError(problem)
    return value


def _actor(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


class ProviderForm(forms.ModelForm):
    class Meta:
        model = Provider
        fields = ["name", "base_url", "api_key_env"]

    def clean_api_key_env(self) -> str:
        value = str(self.cleaned_data.get("api_key_env") or "").strip()
        return _unless(services.api_key_env_problem(value), value)

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"]
        problem = webhooks.url_problem(url)
        if problem:
            raise forms.ValidationError(f"This base URL is refused: {problem}")
        return url


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    """Where a provider's key goes is audited: every change of name, base URL or key variable."""

    form = ProviderForm
    list_display = ["name", "base_url", "api_key_env", "updated_at"]
    search_fields = ["name", "base_url"]

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        services.provider_save(provider=obj, actor=_actor(request))

    def delete_model(self, request: HttpRequest, obj: Provider) -> None:
        services.provider_delete(provider=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            services.provider_delete(provider=provider, actor=_actor(request))


class FeatureGrantForm(forms.ModelForm):
    class Meta:
        model = FeatureGrant
        fields = ["service", "feature", "action_types"]

    def clean_feature(self) -> str:
        value = str(self.cleaned_data.get("feature") or "")
        return _unless(services.feature_problem(value), value)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        service = data.get("service")
        if service is not None:
            problem = services.feature_grant_action_types_problem(
                service=service, action_types=data.get("action_types") or []
            )
            if problem:
                self.add_error("action_types", problem)
        return data


@admin.register(FeatureGrant)
class FeatureGrantAdmin(admin.ModelAdmin):
    """Which features a service may call through the proxy, and whose reviewers see the calls."""

    form = FeatureGrantForm
    list_display = ["service", "feature", "reviewed_by", "created_at"]
    list_filter = ["service"]
    search_fields = ["feature", "service__name"]
    filter_horizontal = ["action_types"]

    @admin.display(description="calls seen by reviewers of")
    def reviewed_by(self, obj: FeatureGrant) -> str:
        return ", ".join(t.key for t in obj.action_types.all()) or "every type of the service"

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        services.feature_grant_changed(
            grant=form.instance, created=not change, actor=_actor(request)
        )

    def delete_model(self, request: HttpRequest, obj: FeatureGrant) -> None:
        services.feature_grant_revoke(grant=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FeatureGrant]) -> None:
        for grant in queryset.select_related("service"):
            services.feature_grant_revoke(grant=grant, actor=_actor(request))


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    extra = 1
    fields = ["position", "provider", "model"]
    ordering = ["position"]


@admin.register(Route)
class RouteAdmin(_ForgetsSnapshot):
    list_display = [
        "feature",
        "models",
        "deadline",
        "attempt_timeout",
        "cache_ttl",
        "daily_budget_usd",
        "over_budget",
    ]
    search_fields = ["feature"]
    inlines = [RouteTargetInline]

    @admin.display(description="models (in order)")
    def models(self, obj: Route) -> str:
        return " → ".join(str(t) for t in obj.targets.select_related("provider"))


@admin.register(ModelPrice)
class ModelPriceAdmin(_ForgetsSnapshot):
    list_display = [
        "model",
        "provider",
        "input_per_mtok",
        "cached_input_per_mtok",
        "output_per_mtok",
        "effective_from",
        "source",
    ]
    list_filter = ["provider"]
    search_fields = ["model"]


@admin.register(LLMCall)
class LLMCallAdmin(ReadOnlyAdmin):
    """The log is evidence: readable, never edited here."""

    list_display = [
        "created_at",
        "feature",
        "service",
        "provider",
        "model",
        "status",
        "cache_hit",
        "fell_back",
        "latency_ms",
        "cost_usd",
    ]
    list_filter = ["status", "cache_hit", "fell_back", "price_missing", "feature", "model"]
    search_fields = ["id", "feature", "model", "provider_request_id"]
    date_hierarchy = "created_at"
