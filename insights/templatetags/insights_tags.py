from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template

from approvals.selectors import visible_action_types
from insights.selectors import banner_alerts

register = template.Library()


@register.inclusion_tag("insights/_banner.html", takes_context=True)
def insights_banner(context: Any) -> dict[str, Any]:
    """Open drift and brake alerts on the types this user may see."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"alerts": []}
    return {"alerts": banner_alerts(action_types=visible_action_types(user=user))}


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f}%"


@register.filter
def hundred(value: float) -> str:
    """A fraction as a plain percentage number for an input field (0.025 → 2.5)."""
    return f"{value * 100:.4g}"


@register.filter
def span(value: timedelta) -> str:
    """A window as people say it: 1 day, 12 hours, 5 minutes."""
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
