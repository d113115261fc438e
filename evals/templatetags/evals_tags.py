from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def tojson(value: Any) -> str:
    """Pretty JSON as plain text; the template escapes it like any other string."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def pvalue(value: float) -> str:
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


@register.filter
def signed_points(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}"
