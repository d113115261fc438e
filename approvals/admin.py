from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from approvals import backtest, execution, services
from approvals.models import (
    ActionType,
    ApiKey,
    Attempt,
    AuditEvent,
    Claim,
    OutboxMessage,
    Proposal,
    Review,
    Rule,
    RuleVersion,
    Service,
    WebhookEndpoint,
)
from approvals.rules import RuleCompileError, RuleSpec, compile_condition
from foundation import webhooks
from foundation.admin import ReadOnlyAdmin
from foundation.errors import ApplicationError
from foundation.jsonschemas import check_schema


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
            "review_sla",
            "escalation_group",
            "redacted_fields",
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

    def clean_redacted_fields(self) -> Any:
        fields = self.cleaned_data["redacted_fields"]
        if fields in (None, ""):
            return []
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise forms.ValidationError('A list of field names, e.g. ["iban", "customer.email"].')
        return fields

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, target = data.get("executor_kind"), (data.get("executor_target") or "").strip()
        if kind == "webhook" and not target.startswith(("http://", "https://")):
            self.add_error("executor_target", "A webhook executor needs an http(s) URL.")
        elif kind == "webhook" and (problem := webhooks.url_problem(target)):
            self.add_error("executor_target", f"This webhook URL is refused: {problem}")
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
        "review_sla",
    ]
    list_filter = ["risk", "irreversible", "executor_kind"]
    search_fields = ["key", "title"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["prefix", "label", "created_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    can_delete = False


class ServiceForm(forms.ModelForm):
    class Meta:
        model = Service
        fields = ["name", "action_types", "callback_url", "is_active"]

    def clean_callback_url(self) -> str:
        url = self.cleaned_data["callback_url"]
        problem = webhooks.url_problem(url) if url else None
        if problem:
            raise forms.ValidationError(f"This callback URL is refused: {problem}")
        return url


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    """The signing secret is never shown on the form: once when the service is created and once
    per rotation (the actions), as `create_service` prints it once."""

    form = ServiceForm
    list_display = ["name", "is_active", "callback_url", "created_at"]
    filter_horizontal = ["action_types"]
    inlines = [ApiKeyInline]
    actions = ["issue_key", "rotate_webhook_secret", "finish_rotation"]
    readonly_fields = ["signing_secret", "created_at"]

    @admin.display(description="webhook signing secret")
    def signing_secret(self, obj: Service) -> str:
        if not obj.pk:
            return "generated when you save, and shown once"
        state = "set (shown only when created or rotated)"
        if obj.previous_webhook_secret:
            state += "; rotating: the previous secret also signs until the rotation is finished"
        return state

    def save_model(self, request: HttpRequest, obj: Service, form: Any, change: bool) -> None:
        if not change:
            obj.webhook_secret = services.webhook_secret_generate()
        super().save_model(request, obj, form, change)
        if not change:
            self._show_once(request, f"Webhook secret of {obj.name}", obj.webhook_secret)

    def _show_once(self, request: HttpRequest, what: str, secret: str) -> None:
        self.message_user(
            request, f"{what} (copy it now, it is not shown again): {secret}", messages.WARNING
        )

    @admin.action(description="Rotate the webhook secret (the new one is shown once)")
    def rotate_webhook_secret(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        for service in queryset:
            secret = services.service_webhook_secret_rotate(
                service=service, actor=f"user:{request.user}"
            )
            what = (
                f"New webhook secret of {service.name} "
                "(the previous one also signs until you finish the rotation)"
            )
            self._show_once(request, what, secret)

    @admin.action(description="Finish the rotation (stop signing with the previous secret)")
    def finish_rotation(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        done = sum(
            services.service_webhook_rotation_finish(service=s, actor=f"user:{request.user}")
            for s in queryset
        )
        self.message_user(request, f"Finished the rotation of {done} service(s).")

    @admin.action(description="Issue a new API key (shown once)", permissions=["change"])
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

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(prefix=key.prefix)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


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


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = [
            "name",
            "description",
            "priority",
            "action_type",
            "when",
            "outcome",
            "reason",
            "allows_irreversible",
            "approvals_required",
            "mode",
            "enabled",
        ]
        widgets = {
            "when": forms.Textarea(
                attrs={"rows": 4, "cols": 90, "class": "vLargeTextField", "spellcheck": "false"}
            ),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 90}),
        }

    def clean_when(self) -> str:
        when: str = self.cleaned_data["when"]
        try:
            compile_condition(when)
        except RuleCompileError as exc:
            raise forms.ValidationError(str(exc)) from None
        return when

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not Rule.approvals_fit_outcome(
            data.get("approvals_required") or 1, data.get("outcome") or ""
        ):
            self.add_error(
                "approvals_required",
                "Only a rule whose outcome is review can ask for more reviewers' approvals.",
            )
        return data

    def spec(self, version: int | None) -> RuleSpec:
        """The rule as edited, unsaved."""
        data = self.cleaned_data
        action_type = data.get("action_type")
        return RuleSpec(
            name=data["name"],
            when=data["when"],
            outcome=data["outcome"],
            priority=data["priority"],
            action_type_id=action_type.pk if action_type is not None else None,
            reason=data.get("reason") or "",
            allows_irreversible=data.get("allows_irreversible", False),
            approvals_required=data.get("approvals_required") or 1,
            mode=data["mode"],
            enabled=data.get("enabled", False),
            version=version,
        )


class RuleVersionInline(admin.TabularInline):
    model = RuleVersion
    extra = 0
    can_delete = False
    fields = ["version", "created_at", "created_by", "enabled", "mode", "priority", "when"]
    readonly_fields = ["version", "created_at", "created_by", "enabled", "mode", "priority", "when"]
    ordering = ["-version"]


# --- execution: the outbox, its attempts, and endpoints disabled by a 410 ----------------------


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = ["number", "status", "status_code", "error", "started_at", "duration_ms"]
    readonly_fields = ["number", "status", "status_code", "error", "started_at", "duration_ms"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    change_form_template = "admin/approvals/rule/change_form.html"
    list_display = [
        "name",
        "priority",
        "action_type",
        "outcome",
        "mode",
        "enabled",
        "allows_irreversible",
        "version",
        "updated_at",
    ]
    list_filter = ["enabled", "mode", "outcome", "action_type"]
    search_fields = ["name", "description", "when"]
    readonly_fields = ["version"]
    inlines = [RuleVersionInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decisions name their rule version; disable a rule instead

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        services.rule_save(rule=obj, actor=f"user:{request.user.get_username()}")

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.backtest_view)
        return [
            path("backtest/", view, name="approvals_rule_backtest_new"),
            path("<int:object_id>/backtest/", view, name="approvals_rule_backtest"),
            *super().get_urls(),
        ]

    def backtest_view(self, request: HttpRequest, object_id: int | None = None) -> HttpResponse:
        """ "Test against history": the stored rule (GET) or the edit in the form (POST)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        rule = None if object_id is None else get_object_or_404(Rule, pk=int(object_id))
        try:
            last = min(
                max(int(request.POST.get("last") or request.GET.get("last") or 0), 0), 100_000
            )
        except ValueError:
            last = 0
        last = last or backtest.DEFAULT_LAST
        form = None
        candidate = None
        if request.method == "POST":
            form = RuleForm(request.POST, instance=rule)
            if form.is_valid():
                candidate = form.spec(version=None)
        elif rule is not None:
            candidate = RuleSpec.of(rule)
        result = None
        error = ""
        if candidate is not None:
            try:
                result = backtest.backtest_rule(
                    candidate=candidate, last=last, replaces=rule.name if rule else None
                )
            except (RuleCompileError, ApplicationError) as exc:
                error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Test against history: {candidate.name if candidate else 'rule'}",
            "rule": rule,
            "candidate": candidate,
            "draft": request.method == "POST",
            "form": form,
            "result": result,
            "error": error,
            "last": last,
        }
        return TemplateResponse(request, "admin/approvals/rule/backtest.html", context)


@admin.register(RuleVersion)
class RuleVersionAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "outcome", "mode", "enabled", "created_by", "created_at"]
    list_filter = ["name"]


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "event", "proposal", "status", "attempts", "next_attempt_at", "target"]
    list_filter = ["status", "kind", "event"]
    search_fields = ["webhook_id", "target"]
    inlines = [AttemptInline]


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ["id", "message", "number", "status", "status_code", "started_at", "duration_ms"]
    list_filter = ["status"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ["url", "disabled_at", "disabled_reason"]
    actions = ["enable"]

    def has_enable_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("approvals.change_webhookendpoint")

    @admin.action(description="Re-enable the selected endpoints", permissions=["enable"])
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            execution.webhook_endpoint_enable(url=endpoint.url, by=str(request.user))
        self.message_user(request, f"Re-enabled {queryset.count()} endpoint(s).")
