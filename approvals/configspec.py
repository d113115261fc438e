"""The approvals sections of a configuration file (foundation.configfile): `action_types` and
`rules`, and `export_rules`, which writes the stored rules back as a file `apply` takes."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from foundation.configfile import ConfigFileError, Duration, StrictItem, register, upsert
from foundation.errors import ApplicationError
from foundation.jsonschemas import check_schema
from foundation.webhooks import url_problem

# --- action types ---------------------------------------------------------------------------------


class ExecutorSpec(StrictItem):
    kind: Literal["webhook", "callable", "none"]
    url: str | None = None
    path: str | None = None

    @field_validator("url")
    @classmethod
    def _egress(cls, url: str | None) -> str | None:
        problem = url_problem(url) if url and url.startswith(("http://", "https://")) else None
        if problem:
            raise ValueError(f"the webhook URL is refused: {problem}")
        return url

    @model_validator(mode="after")
    def _target(self) -> ExecutorSpec:
        if self.kind == "webhook" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError("a webhook executor needs url: http(s)://…")
        if self.kind == "callable" and not self.path:
            raise ValueError("a callable executor needs path: package.module.function")
        return self

    @property
    def target(self) -> str:
        return (
            self.url if self.kind == "webhook" else self.path if self.kind == "callable" else ""
        ) or ""


class ActionTypeSpec(StrictItem):
    key: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=100)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    irreversible: bool = False
    risk: Literal["low", "medium", "high"] = "medium"
    approvals_required: Literal[1, 2] = 1
    review_ttl: Duration = timedelta(hours=24)
    executor: ExecutorSpec = ExecutorSpec(kind="none")
    reviewer_group: str | None = None
    review_sla: Duration | None = None
    escalation_group: str | None = None
    redacted_fields: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="payload fields (dotted paths) never sent to Slack"
    )
    payload_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @field_validator("payload_schema")
    @classmethod
    def _schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        problem = check_schema(schema)
        if problem:
            raise ValueError(problem)
        return schema


@register("action_types", ActionTypeSpec, order=10)
def apply_action_types(items: list[ActionTypeSpec]) -> list[str]:
    from django.contrib.auth.models import Group

    from approvals.models import ActionType

    report = []
    for spec in items:
        group = (
            Group.objects.get_or_create(name=spec.reviewer_group)[0]
            if spec.reviewer_group
            else None
        )
        escalation_group = (
            Group.objects.get_or_create(name=spec.escalation_group)[0]
            if spec.escalation_group
            else None
        )
        values = {
            "title": spec.title,
            "description": spec.description,
            "irreversible": spec.irreversible,
            "risk": spec.risk,
            "approvals_required": spec.approvals_required,
            "review_ttl": spec.review_ttl,
            "executor_kind": spec.executor.kind,
            "executor_target": spec.executor.target,
            "payload_schema": spec.payload_schema,
            "reviewer_group": group,
            "review_sla": spec.review_sla,
            "escalation_group": escalation_group,
            "redacted_fields": spec.redacted_fields,
        }
        report.append(f"action type {spec.key}: {upsert(ActionType, {'key': spec.key}, values)}")
    return report


# --- rules ----------------------------------------------------------------------------------------


class RuleItem(StrictItem):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    action_type: str | None = Field(default=None, description="an action type key; omit for all")
    priority: int = 100
    when: str = Field(min_length=1)
    outcome: Literal["approve", "review", "reject"]
    reason: str = Field(default="", max_length=500)
    allows_irreversible: bool = False
    approvals_required: Literal[1, 2] = Field(
        default=1, description="2: a review outcome needs two different reviewers' approvals"
    )
    mode: Literal["enforce", "shadow"] = "enforce"
    enabled: bool = True

    @field_validator("when")
    @classmethod
    def _compiles(cls, when: str, info: ValidationInfo) -> str:
        from approvals.rules import RuleCompileError, compile_condition

        try:
            compile_condition(when)
        except RuleCompileError as exc:
            raise ValueError(f"rule {info.data.get('name', '?')!r}: {exc}") from None
        return when


@register("rules", RuleItem, order=20)
def apply_rules(items: list[RuleItem]) -> list[str]:
    from approvals import services
    from approvals.models import ActionType, Rule

    names = [item.name for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigFileError([f"rules: names must be unique; repeated: {', '.join(duplicates)}"])
    report = []
    for spec in items:
        action_type = None
        if spec.action_type:
            action_type = ActionType.objects.filter(key=spec.action_type).first()
            if action_type is None:
                raise ConfigFileError(
                    [f"rules: rule {spec.name!r}: unknown action type {spec.action_type!r}"]
                )
        rule = Rule.objects.filter(name=spec.name).first()
        created = rule is None
        rule = rule or Rule(name=spec.name)
        rule.description = spec.description
        rule.action_type = action_type
        rule.priority = spec.priority
        rule.when = spec.when
        rule.outcome = spec.outcome
        rule.reason = spec.reason
        rule.allows_irreversible = spec.allows_irreversible
        rule.approvals_required = spec.approvals_required
        rule.mode = spec.mode
        rule.enabled = spec.enabled
        try:
            changed = services.rule_save(rule=rule, actor="config:apply")
        except ApplicationError as exc:
            raise ConfigFileError([f"rules: {exc.message}"]) from None
        what = "created" if created else f"updated (v{rule.version})" if changed else "unchanged"
        report.append(f"rule {spec.name}: {what}")
    return report


def export_rules() -> str:
    """The stored rules as a `rules:` file that `apply` takes back unchanged."""
    from approvals.models import Rule

    items = []
    for rule in Rule.objects.select_related("action_type").order_by("priority", "name"):
        item: dict[str, Any] = {"name": rule.name}
        if rule.description:
            item["description"] = rule.description
        if rule.action_type is not None:
            item["action_type"] = rule.action_type.key
        item.update(
            priority=rule.priority,
            when=rule.when,
            outcome=rule.outcome,
            reason=rule.reason,
            allows_irreversible=rule.allows_irreversible,
        )
        if rule.approvals_required != 1:
            item["approvals_required"] = rule.approvals_required
        item.update(mode=rule.mode, enabled=rule.enabled)
        items.append(item)
    return yaml.safe_dump(
        {"rules": items}, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False
    )
