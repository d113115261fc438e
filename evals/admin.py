"""Admin for evals. Writes go through evals.services, so the same rules hold as on the command
line: prompt versions are immutable, labels move with a history, a sealed holdout is frozen and
its cases are not listed here at all."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from evals import scorers, services
from evals.models import EvalCase, EvalRun, EvalSet, Prompt, PromptLabel, PromptVersion
from foundation.errors import ApplicationError


class EvalSetForm(forms.ModelForm):
    class Meta:
        model = EvalSet
        fields = ["name", "feature", "description", "scorer", "scorer_config"]
        widgets = {
            "scorer": forms.Select(
                choices=[(k, f"{k}: {s.description}") for k, s in scorers.SCORERS.items()]
            )
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            scorers.check_config(data.get("scorer") or "", data.get("scorer_config") or {})
        except scorers.ScorerConfigError as exc:
            self.add_error("scorer_config", str(exc))
        return data


@admin.register(EvalSet)
class EvalSetAdmin(admin.ModelAdmin):
    form = EvalSetForm
    list_display = ["name", "feature", "scorer", "holdout_sealed_at"]
    readonly_fields = ["holdout_sealed_at", "created_at"]
    actions = ["seal_holdout"]

    @admin.action(description="Seal the holdout (cannot be undone)", permissions=["change"])
    def seal_holdout(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> None:
        for eval_set in queryset:
            services.holdout_seal(eval_set=eval_set)
        self.message_user(request, f"Sealed the holdout of {queryset.count()} set(s).")


class EvalCaseForm(forms.ModelForm):
    class Meta:
        model = EvalCase
        fields = ["eval_set", "split", "tags", "input", "ideal"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            services.case_check(
                eval_set=data["eval_set"],
                input=data.get("input"),
                ideal=data.get("ideal"),
                tags=data.get("tags") or [],
                split=data.get("split") or "dev",
                case=self.instance if self.instance.pk else None,
            )
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        return data


@admin.register(EvalCase)
class EvalCaseAdmin(admin.ModelAdmin):
    form = EvalCaseForm
    list_display = ["id", "eval_set", "split", "source", "tags", "created_at"]
    list_filter = ["eval_set", "split", "source"]
    readonly_fields = ["source", "proposal", "fingerprint", "created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvalCase]:
        # A sealed holdout is not viewed case by case, here either.
        return (
            super()
            .get_queryset(request)
            .select_related("eval_set")
            .exclude(Q(split="holdout") & Q(eval_set__holdout_sealed_at__isnull=False))
        )

    def has_change_permission(self, request: HttpRequest, obj: EvalCase | None = None) -> bool:
        if obj is not None and obj.is_sealed:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: EvalCase | None = None) -> bool:
        if obj is not None and obj.is_sealed:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: EvalCase, form: Any, change: bool) -> None:
        data = form.cleaned_data
        try:
            if change:
                services.case_update(
                    case=obj,
                    input=data["input"],
                    ideal=data["ideal"],
                    tags=data["tags"],
                    split=data["split"],
                )
            else:
                created = services.case_add(
                    eval_set=data["eval_set"],
                    input=data["input"],
                    ideal=data["ideal"],
                    tags=data["tags"],
                    split=data["split"],
                )
                obj.pk = created.pk
        except ApplicationError as exc:
            # The form was valid; the domain refused it (e.g. the holdout was sealed meanwhile).
            self.message_user(request, exc.message, level=messages.ERROR)
            raise

    def delete_model(self, request: HttpRequest, obj: EvalCase) -> None:
        services.case_delete(case=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[EvalCase]) -> None:
        for case in queryset:
            services.case_delete(case=case)


class PromptVersionForm(forms.ModelForm):
    move_labels = forms.CharField(
        required=False, help_text="Comma-separated labels to move to this version"
    )

    class Meta:
        model = PromptVersion
        fields = ["prompt", "template", "route", "params"]

    def clean_template(self) -> Any:
        template = self.cleaned_data["template"]
        try:
            services.prompt_template_check(template=template)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None
        return template


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    """Add-only: a saved version is never edited; a change is a new version."""

    form = PromptVersionForm
    list_display = ["prompt", "version", "route", "created_at"]
    list_filter = ["prompt"]

    def get_readonly_fields(self, request: HttpRequest, obj: PromptVersion | None = None) -> Any:
        if obj is not None:
            return ["prompt", "version", "template", "route", "params", "created_at"]
        return []

    def has_change_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: PromptVersion | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PromptVersion, form: Any, change: bool) -> None:
        data = form.cleaned_data
        labels = [
            label.strip() for label in (data.get("move_labels") or "").split(",") if label.strip()
        ]
        created, _ = services.prompt_version_create(
            name=data["prompt"].name,
            template=data["template"],
            route=data["route"],
            params=data["params"] or {},
            labels=labels,
            actor=f"admin:{request.user.get_username()}",
        )
        obj.pk, obj.version = created.pk, created.version


class PromptLabelForm(forms.ModelForm):
    class Meta:
        model = PromptLabel
        fields = ["prompt", "name", "version"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        prompt, version = data.get("prompt"), data.get("version")
        if prompt and version and version.prompt_id != prompt.pk:
            self.add_error("version", f"{version} is not a version of {prompt.name}.")
        if (data.get("name") or "").isdigit():
            self.add_error("name", "A label is a name, not a number.")
        return data

    def validate_unique(self) -> None:
        # Saving an existing label name moves it (services.prompt_label_move), so no clash.
        pass


@admin.register(PromptLabel)
class PromptLabelAdmin(admin.ModelAdmin):
    form = PromptLabelForm
    list_display = ["prompt", "name", "version", "updated_at"]

    def save_model(self, request: HttpRequest, obj: PromptLabel, form: Any, change: bool) -> None:
        data = form.cleaned_data
        services.prompt_label_move(
            prompt=data["prompt"],
            label=data["name"],
            version=data["version"],
            actor=f"admin:{request.user.get_username()}",
        )
        current = PromptLabel.objects.get(prompt=data["prompt"], name=data["name"])
        obj.pk = current.pk


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]


@admin.register(EvalRun)
class EvalRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "eval_set",
        "prompt_version",
        "route",
        "split",
        "accuracy",
        "status",
        "started_at",
    ]
    list_filter = ["eval_set", "status", "split"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: EvalRun | None = None) -> bool:
        return False
