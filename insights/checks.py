"""The drift webhook's URL is checked where the operator sets it: at start (`migrate`,
`check`, `runserver`), with the egress rule every send applies again."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error

from foundation import webhooks


def check_webhook_url(**kwargs: Any) -> list[CheckMessage]:
    url = settings.INSIGHTS_WEBHOOK_URL
    problem = webhooks.url_problem(url) if url else None
    if not problem:
        return []
    return [Error(f"INSIGHTS_WEBHOOK_URL is refused: {problem}", id="insights.E001")]
