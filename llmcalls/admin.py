from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from approvals import webhooks
from approvals.admin import ReadOnlyAdmin
from llmcalls import routing
from llmcalls.models import LLMCall, ModelPrice, Provider, Route, RouteTarget


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


class ProviderForm(forms.ModelForm):
    class Meta:
        model = Provider
        fields = ["name", "base_url", "api_key_env"]

    def clean_base_url(self) -> str:
        url = self.cleaned_data["base_url"]
        problem = webhooks.url_problem(url)
        if problem:
            raise forms.ValidationError(f"This base URL is refused: {problem}")
        return url


@admin.register(Provider)
class ProviderAdmin(_ForgetsSnapshot):
    form = ProviderForm
    list_display = ["name", "base_url", "api_key_env", "updated_at"]
    search_fields = ["name", "base_url"]


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
