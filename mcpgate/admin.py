from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from pydantic import ValidationError

from foundation.admin import ReadOnlyAdmin
from mcpgate import services
from mcpgate.configspec import ToolOverride, UpstreamSpec
from mcpgate.models import Call, Tool, Upstream


class UpstreamForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = Upstream
        fields = [
            "name",
            "url",
            "headers_env",
            "services",
            "tool_overrides",
            "reviewer_group",
            "enabled",
        ]

    def clean_name(self) -> str:
        return self._checked("name", self.cleaned_data["name"])

    def clean_headers_env(self) -> Any:
        return self._checked("headers_env", self.cleaned_data["headers_env"] or {})

    def clean_tool_overrides(self) -> Any:
        value = self.cleaned_data["tool_overrides"] or {}
        if not isinstance(value, dict):
            raise forms.ValidationError('An object: {"tool": {"irreversible": true}}.')
        try:
            return {
                tool: ToolOverride.model_validate(o).model_dump(exclude_none=True)
                for tool, o in value.items()
            }
        except ValidationError as exc:
            raise forms.ValidationError(str(exc.errors()[0]["msg"])) from None

    def _checked(self, field: str, value: Any) -> Any:
        """The same checks as `manage.py apply` makes, one field at a time."""
        try:
            UpstreamSpec.model_validate(
                {"name": "x", "url": "http://x", field: value}
                if field != "name"
                else {"name": value, "url": "http://x"}
            )
        except ValidationError as exc:
            raise forms.ValidationError(str(exc.errors()[0]["msg"])) from None
        return value


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    form = UpstreamForm
    list_display = ["name", "url", "enabled", "updated_at"]
    filter_horizontal = ["services"]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # As `apply` does: who may use the gateway may propose its tools; overrides take effect.
        services.upstream_services_sync(upstream=form.instance)
        services.upstream_overrides_apply(upstream=form.instance)


@admin.register(Tool)
class ToolAdmin(ReadOnlyAdmin):
    list_display = ["name", "upstream", "action_type", "read_only", "last_seen_at"]
    list_filter = ["upstream", "read_only"]


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    list_display = ["proposal", "upstream", "tool", "status", "duration_ms", "started_at"]
    list_filter = ["upstream", "status"]
