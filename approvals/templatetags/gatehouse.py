"""Template filters and tags for the reviewer pages. None of the filters marks anything safe:
model-provided text leaves them as plain strings and Django's autoescaping applies. The queue
and history row tags return HTML built by approvals/rows.py, which escapes every value it puts
in."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import template
from django.conf import settings
from django.utils.safestring import SafeString
from django.utils.timesince import timeuntil

from approvals import rows
from approvals.models import Proposal

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def as_cell(value: Any) -> str:
    """A payload value as readable text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


@register.filter
def payload_items(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    return [("(value)", value)]


@register.filter
def confidence(value: float) -> str:
    return f"{value:.2f}"


@register.filter
def actor_name(actor: str) -> str:
    kind, _, name = actor.partition(":")
    return name or kind


@register.filter
def until(value: datetime | None) -> str:
    """Time left to `value` in its largest unit ("12 minutes", "3 hours"), for narrow cells."""
    if value is None:
        return ""
    return timeuntil(value, depth=1)


@register.simple_tag(takes_context=True)
def page_parts(context: template.Context, slot: str) -> SafeString:
    """What the apps above approvals add to a slot of its pages (settings.PAGE_PARTS: the
    banner, the sections menu), rendered with the page's context; approvals names none."""
    engine = context.template.engine if context.template else template.Engine.get_default()
    parts = SafeString()
    for name in settings.PAGE_PARTS[slot]:
        parts += engine.get_template(name).render(context)  # rendered, hence escaped and safe
    return parts


@register.simple_tag
def queue_rows(proposals: list[Proposal]) -> SafeString:
    """The queue page's rows (approvals/rows.py), each followed by a newline."""
    return rows.queue_rows(proposals)


@register.simple_tag
def queue_row(proposal: Proposal, oob: bool = False) -> SafeString:
    """One queue row, as the live push sends it (`oob`: swapped in out of band)."""
    return rows.queue_row(proposal, oob=oob)


@register.simple_tag
def history_rows(proposals: list[Proposal]) -> SafeString:
    """The history page's rows (approvals/rows.py)."""
    return rows.history_rows(proposals)


@register.simple_tag
def history_row(proposal: Proposal, oob: bool = False) -> SafeString:
    """One history row, as the live push sends it (`oob`: swapped in out of band)."""
    return rows.history_row(proposal, oob=oob)
