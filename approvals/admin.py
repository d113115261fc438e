from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from approvals import services
from approvals.models import ActionType, ApiKey, AuditEvent, Claim, Proposal, Review, Service
from approvals.schemas_cache import check_schema


class ActionTypeForm(forms.ModelForm):
    class Meta:
        model = ActionType
        fields = [
            "key",
            "title",
            "description",
            "payload_schema",
            "irreversible",
            "risk",
            "approvals_required",
            "review_ttl",
            "executor_kind",
            "executor_target",
            "reviewer_group",
        ]
        widgets = {
            "payload_schema": forms.Textarea(
                attrs={"rows": 16, "cols": 90, "class": "vLargeTextField"}
            )
        }

    def clean_payload_schema(self) -> Any:
        schema = self.cleaned_data["payload_schema"]
        problem = check_schema(schema)
        if problem:
            raise forms.ValidationError(problem)
        return schema

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, target = data.get("executor_kind"), (data.get("executor_target") or "").strip()
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            self.add_error("executor_target", "A webhook executor needs an http(s) URL.")
        if kind == "callable" and not target:
            self.add_error("executor_target", "A callable executor needs a dotted path.")
        return data


@admin.register(ActionType)
class ActionTypeAdmin(admin.ModelAdmin):
    form = ActionTypeForm
    list_display = [
        "key",
        "title",
        "risk",
        "irreversible",
        "approvals_required",
        "executor_kind",
        "review_ttl",
    ]
    list_filter = ["risk", "irreversible", "executor_kind"]
    search_fields = ["key", "title"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["prefix", "label", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    can_delete = False


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "callback_url", "created_at"]
    filter_horizontal = ["action_types"]
    inlines = [ApiKeyInline]
    actions = ["issue_key"]
    readonly_fields = ["created_at"]

    @admin.action(description="Issue a new API key (shown once)")
    def issue_key(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            _, plain = services.api_key_create(service=service, label=f"issued by {request.user}")
            self.message_user(
                request,
                f"New key for {service.name} (copy it now, it is not shown again): {plain}",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "service", "label", "created_at", "revoked_at"]
    list_filter = ["service"]
    readonly_fields = ["service", "prefix", "secret_hash", "created_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued from the service page so the secret is shown once

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(prefix=key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Proposal)
class ProposalAdmin(ReadOnlyAdmin):
    list_display = ["id", "action_type", "service", "state", "confidence", "created_at"]
    list_filter = ["state", "action_type", "service"]
    search_fields = ["summary", "external_id"]
    date_hierarchy = "created_at"


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "reviewer", "verdict", "created_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "from_state", "to_state", "actor", "created_at"]
    list_filter = ["kind"]
    readonly_fields = ["pretty_data"]

    @admin.display(description="data")
    def pretty_data(self, obj: AuditEvent) -> str:
        return json.dumps(obj.data, indent=2)


@admin.register(Claim)
class ClaimAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "reviewer", "claimed_at", "expires_at"]
