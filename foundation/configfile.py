"""Configuration as files: `manage.py apply FILE.yaml`.

Each top-level section (`action_types`, `rules`, …) is registered by the app that owns it (its
`configspec` module, imported by its AppConfig.ready) with a pydantic model for one item and a
function that applies a validated list. The whole file is
checked before anything is written; errors name the line and the field. Applying is idempotent:
an item equal to what is stored is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import yaml
from django.db import transaction
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

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
