"""Insights' start checks (manage.py check): a drift webhook URL is held to the egress rules."""

from __future__ import annotations

from django.test import override_settings

from insights.checks import check_webhook_url


@override_settings(
    GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=False,
    INSIGHTS_WEBHOOK_URL="http://169.254.169.254/latest/meta-data/",
)
def test_a_private_drift_webhook_url_fails_the_start_checks() -> None:
    [error] = check_webhook_url()
    assert error.id == "insights.E001" and "INSIGHTS_WEBHOOK_URL is refused" in error.msg
