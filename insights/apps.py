from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class InsightsConfig(AppConfig):
    name = "insights"
    verbose_name = "Insights"

    def ready(self) -> None:
        from approvals import outbox
        from insights.checks import check_webhook_url
        from insights.services import webhook_secrets

        checks.register(check_webhook_url)
        # Alert webhooks go out through approvals' outbox; it asks for the secret at send time.
        outbox.WEBHOOK_SECRETS["insight"] = webhook_secrets
