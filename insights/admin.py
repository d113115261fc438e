from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from foundation.admin import ReadOnlyAdmin
from insights import services
from insights.models import Alert, AuditSample, Brake, RuleDraft, TypeSettings


@admin.register(TypeSettings)
class TypeSettingsAdmin(admin.ModelAdmin):
    list_display = ["action_type", "audit_fraction", "error_target", "brake_enabled"]

    def save_model(self, request: HttpRequest, obj: TypeSettings, form: Any, change: bool) -> None:
        services.type_settings_save(
            action_type=obj.action_type,
            audit_fraction=obj.audit_fraction,
            error_target=obj.error_target,
            brake_enabled=obj.brake_enabled,
        )


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "kind",
        "action_type",
        "title",
        "acknowledged_at",
        "webhook_status",
    ]
    list_filter = ["kind", "action_type"]
    list_select_related = ["action_type", "webhook"]


@admin.register(Brake)
class BrakeAdmin(ReadOnlyAdmin):
    list_display = ["action_type", "engaged_at", "errors", "audited", "target", "lifted_at"]
    actions = ["lift"]

    @admin.action(
        description="Lift the selected brakes (resume automatic approval)",
        permissions=["lift"],
    )
    def lift(self, request: HttpRequest, queryset: QuerySet[Brake]) -> None:
        lifted = 0
        for brake in queryset.filter(lifted_at__isnull=True).select_related("action_type"):
            services.brake_lift(action_type=brake.action_type, user=request.user, note="admin")  # type: ignore[arg-type]
            lifted += 1
        self.message_user(request, f"Lifted {lifted} brake(s).", messages.SUCCESS)

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(services.LIFT_BRAKE)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # the list (and its action) only, for those who may lift a brake
        return request.user.has_perm(services.LIFT_BRAKE) and obj is None


@admin.register(AuditSample)
class AuditSampleAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "action_type", "fraction", "rule", "created_at"]
    list_filter = ["action_type"]


@admin.register(RuleDraft)
class RuleDraftAdmin(ReadOnlyAdmin):
    list_display = ["rule", "action_type", "threshold", "error_target", "created_at"]
