"""The `prompts` and `eval_sets` sections of `manage.py apply`.

prompts:
  - name: refund-eligibility
    version: 2
    route: evals-refunds
    params: {temperature: 0}
    labels: [production]
    template:
      - {role: system, content: "You decide refund eligibility …"}
      - {role: user, content: "Order: {{order}}\\nRequest: {{message}}"}
eval_sets:
  - name: refund-eligibility
    feature: support-refunds
    scorer: {kind: label, field: eligible}   # or just: exact
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from evals import scorers
from foundation.configfile import ConfigFileError, StrictItem, register


class PromptSpec(StrictItem):
    name: str = Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)
    version: int = Field(ge=1)
    template: str | list[dict[str, str]]
    route: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=list)
    description: str = ""

    @field_validator("template")
    @classmethod
    def _template(cls, value: Any) -> Any:
        if isinstance(value, list):
            for message in value:
                if set(message) != {"role", "content"}:
                    raise ValueError("each template message has exactly role and content")
                if message["role"] not in {"system", "user", "assistant", "developer"}:
                    raise ValueError(f"unknown role {message['role']!r}")
            if not value:
                raise ValueError("a template needs at least one message")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not label or label.isdigit() or not all(c.isalnum() or c in "-_" for c in label):
                raise ValueError(f"bad label {label!r}")
        return value

    @field_validator("params")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted({"model", "messages", "stream", "feature", "deadline"} & set(value))
        if reserved:
            raise ValueError(f"params may not set {', '.join(reserved)}")
        return value


class EvalSetSpec(StrictItem):
    name: str = Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)
    feature: str = Field(default="", max_length=200)
    description: str = ""
    scorer: str | dict[str, Any] = "exact"

    @field_validator("scorer")
    @classmethod
    def _scorer(cls, value: Any) -> Any:
        kind, config = split_scorer(value)
        try:
            scorers.check_config(kind, config)
        except scorers.ScorerConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


def split_scorer(value: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    config = dict(value)
    return str(config.pop("kind", "")), config


@register("prompts", PromptSpec, order=70)
def apply_prompts(items: list[PromptSpec]) -> list[str]:
    from evals import services
    from foundation.errors import ApplicationError
    from llmcalls.models import Route

    known = set(Route.objects.values_list("feature", flat=True))
    unknown = [
        f"prompts[{index}] ({spec.name}@{spec.version}): unknown llmcalls route {spec.route!r}"
        for index, spec in enumerate(items)
        if spec.route not in known
    ]
    if unknown:
        raise ConfigFileError(unknown)
    report, problems = [], []
    for index, spec in enumerate(items):
        try:
            version, outcome = services.prompt_version_create(
                name=spec.name,
                version=spec.version,
                template=spec.template,
                route=spec.route,
                params=spec.params,
                labels=spec.labels,
                actor="apply",
            )
        except ApplicationError as exc:
            problems.append(f"prompts[{index}] ({spec.name}@{spec.version}): {exc.message}")
            continue
        if spec.description and version.prompt.description != spec.description:
            version.prompt.description = spec.description
            version.prompt.save(update_fields=["description"])
        report.append(f"prompt {version}: {outcome}")
    if problems:
        raise ConfigFileError(problems)
    return report


@register("eval_sets", EvalSetSpec, order=80)
def apply_eval_sets(items: list[EvalSetSpec]) -> list[str]:
    from evals import services

    report = []
    for spec in items:
        kind, config = split_scorer(spec.scorer)
        eval_set, outcome = services.eval_set_upsert(
            name=spec.name,
            feature=spec.feature,
            description=spec.description,
            scorer=kind,
            scorer_config=config,
        )
        report.append(f"eval set {eval_set.name}: {outcome}")
    return report
