from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class InsightsConfig(AppConfig):
    name = "insights"
    verbose_name = "Insights"

    def ready(self) -> None:
        from insights.checks import check_webhook_url

        checks.register(check_webhook_url)
