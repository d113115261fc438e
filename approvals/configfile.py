"""Configuration as files: `manage.py apply FILE.yaml`.

Each top-level section (`action_types`, `rules`, …) is registered by the app that owns it with a
pydantic model for one item and a function that applies a validated list. The whole file is
checked before anything is written; errors name the line and the field. Applying is idempotent:
an item equal to what is stored is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

import yaml
from django.db import transaction
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from approvals.ruledef import RuleDefinition
from config.env import parse_duration


class ConfigFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Section:
    name: str
    item: type[BaseModel]
    apply: Callable[[list[Any]], list[str]]  # returns one line per created/updated/unchanged item
    order: int


SECTIONS: dict[str, Section] = {}


def register(name: str, item: type[BaseModel], order: int = 100) -> Callable[..., Any]:
    """Decorator for the function that applies a validated list of `item`s."""

    def decorate(fn: Callable[[list[Any]], list[str]]) -> Callable[[list[Any]], list[str]]:
        SECTIONS[name] = Section(name=name, item=item, apply=fn, order=order)
        return fn

    return decorate


# --- YAML with line numbers --------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[tuple[Any, ...], int] = {}

    def walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self.walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index))


def load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        loader.walk(node, ())
        return loader.construct_document(node), loader.lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigFileError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    finally:
        loader.dispose()


def _line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _where(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse(text: str, *, source: str = "config") -> dict[str, list[Any]]:
    """Validate a whole file; raise ConfigFileError listing every problem with its line."""
    data, lines = load_yaml(text)
    if not isinstance(data, dict):
        raise ConfigFileError([f"{source}: line 1: the file must be a mapping of sections"])
    problems: list[str] = []
    parsed: dict[str, list[Any]] = {}
    for section_name, items in data.items():
        section = SECTIONS.get(section_name)
        if section is None:
            known = ", ".join(sorted(SECTIONS))
            problems.append(
                f"{source}: line {_line_for(lines, (section_name,))}: {section_name}: "
                f"unknown section (known: {known})"
            )
            continue
        if not isinstance(items, list):
            problems.append(
                f"{source}: line {_line_for(lines, (section_name,))}: {section_name}: must be a list"
            )
            continue
        parsed[section_name] = []
        for index, item in enumerate(items):
            try:
                parsed[section_name].append(section.item.model_validate(item))
            except ValidationError as exc:
                for error in exc.errors():
                    path = (section_name, index, *error["loc"])
                    problems.append(
                        f"{source}: line {_line_for(lines, path)}: {_where(path)}: {error['msg']}"
                    )
    if problems:
        raise ConfigFileError(problems)
    return parsed


def apply(text: str, *, source: str = "config") -> list[str]:
    """Validate and apply a whole file in one transaction; return what changed."""
    parsed = parse(text, source=source)
    report: list[str] = []
    with transaction.atomic():
        for section in sorted(SECTIONS.values(), key=lambda s: s.order):
            if section.name in parsed:
                report.extend(section.apply(parsed[section.name]))
    return report


# --- shared field types ---------------------------------------------------------------------------


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 24h or 7d")
    return parse_duration(str(value))


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class StrictItem(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- action types ---------------------------------------------------------------------------------


class ExecutorSpec(StrictItem):
    kind: Literal["webhook", "callable", "none"]
    url: str | None = None
    path: str | None = None

    @field_validator("url")
    @classmethod
    def _egress(cls, url: str | None) -> str | None:
        from approvals.webhooks import url_problem

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
        from approvals.schemas_cache import check_schema

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


def upsert(model: Any, lookup: dict[str, Any], values: dict[str, Any]) -> str:
    """Create or update one row; leave it untouched when nothing differs. Returns what happened."""
    obj = model.objects.select_for_update().filter(**lookup).first()
    if obj is None:
        model.objects.create(**lookup, **values)
        return "created"
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    if not changed:
        return "unchanged"
    for name in changed:
        setattr(obj, name, values[name])
    obj.save()
    return "updated (" + ", ".join(changed) + ")"


# --- rules ----------------------------------------------------------------------------------------


@register("rules", RuleDefinition, order=20)
def apply_rules(items: list[RuleDefinition]) -> list[str]:
    from approvals import services
    from approvals.errors import ApplicationError
    from approvals.models import Rule

    names = [item.name for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigFileError([f"rules: names must be unique; repeated: {', '.join(duplicates)}"])
    report = []
    for spec in items:
        rule = Rule.objects.filter(name=spec.name).first()
        created = rule is None
        rule = rule or Rule(name=spec.name)
        try:
            spec.apply_to(rule)
            changed = services.rule_save(rule=rule, actor="config:apply")
        except ApplicationError as exc:
            raise ConfigFileError([f"rules: {exc.message}"]) from None
        what = "created" if created else f"updated (v{rule.version})" if changed else "unchanged"
        report.append(f"rule {spec.name}: {what}")
    return report


def export_rules() -> str:
    """The stored rules as a `rules:` file that `apply` takes back unchanged."""
    from approvals.models import Rule

    items = [
        RuleDefinition.of(rule).export_item()
        for rule in Rule.objects.select_related("action_type").order_by("priority", "name")
    ]
    return yaml.safe_dump(
        {"rules": items}, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False
    )
