from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

log = logging.getLogger("gatehouse.auth")


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_login_failed

        from telemetry import logs, tracing

        for secret in (settings.SECRET_KEY, settings.METRICS_TOKEN):
            logs.register_secret(secret)
        user_login_failed.connect(_login_failed, dispatch_uid="telemetry.login_failed")
        tracing.setup()


def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kw: Any) -> None:
    # Django has already masked the password in `credentials`; only the name is logged.
    log.warning(
        "login failed for %r",
        str(credentials.get("username", ""))[:150],
        extra={"event": "login_failed"},
    )
