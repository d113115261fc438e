"""Executors: how an approved proposal takes effect, and how a callback (or another app's
webhook, such as an insights alert) reaches its receiver.

Each run returns an `Outcome`; none raises for a failure of the target. `retry` says whether
another attempt could succeed (5xx, 408, 429, network errors, timeouts, exceptions of a
callable) or not (other 4xx, a refused target, an unknown callable, a disabled endpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils.module_loading import import_string

from approvals.models import OutboxMessage, Service
from foundation import webhooks


class ExecutionRefused(Exception):
    """Raised by a callable executor to fail the execution without further attempts."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retry: bool = False
    status_code: int | None = None
    excerpt: str = ""
    error: str = ""
    retry_after: float | None = None
    gone: bool = False  # 410: disable the endpoint


def service_secrets(service: Service) -> list[str]:
    """What signs an execution or callback: the service's secret (and the previous one while a
    rotation lasts), read when the message is sent."""
    return [s for s in (service.webhook_secret, service.previous_webhook_secret) if s]


def send_webhook(message: OutboxMessage, *, secrets: list[str]) -> Outcome:
    """POST the message's body, signed with `secrets`, to its target URL."""
    body = webhooks.encode(message.body)
    headers = webhooks.signed_headers(secrets=secrets, msg_id=message.webhook_id, body=body)
    timeout = settings.EXECUTION_TIMEOUT.total_seconds()
    try:
        response = webhooks.post(url=message.target, body=body, headers=headers, timeout=timeout)
    except webhooks.EgressRefused as exc:
        return Outcome(ok=False, error=f"Target refused: {exc}")
    except httpx.TimeoutException:
        return Outcome(ok=False, retry=True, error=f"Timed out after {timeout:g}s")
    except httpx.HTTPError as exc:
        return Outcome(ok=False, retry=True, error=f"{type(exc).__name__}: {exc}")
    code, excerpt = response.status_code, response.excerpt
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code, excerpt=excerpt)
    error = f"HTTP {code} from {message.target}"
    if code == 410:
        return Outcome(
            ok=False, gone=True, status_code=code, excerpt=excerpt, error=f"{error}: gone"
        )
    # Only 2xx is success. Other 4xx mean the request itself is wrong: trying again won't help.
    retry = code >= 500 or code in (408, 429) or 300 <= code < 400
    return Outcome(
        ok=False,
        retry=retry,
        status_code=code,
        excerpt=excerpt,
        error=error,
        retry_after=response.retry_after,
    )


def run_callable(message: OutboxMessage) -> Outcome:
    """Call the dotted-path function with the execution body's data as keyword arguments.

    The function receives `idempotency_key` (the webhook id, the same on every retry) so it can
    make its effect once. The Celery task's soft time limit bounds the call.
    """
    try:
        function = import_string(message.target)
    except ImportError as exc:
        return Outcome(ok=False, error=f"Cannot import {message.target!r}: {exc}")
    data = message.body["data"]
    started = time.monotonic()
    try:
        result: Any = function(**data)
    except ExecutionRefused as exc:
        return Outcome(ok=False, error=f"Refused by {message.target}: {exc}")
    except SoftTimeLimitExceeded:
        return Outcome(
            ok=False,
            retry=True,
            error=f"Timed out after {time.monotonic() - started:.1f}s in {message.target}",
        )
    except Exception as exc:
        return Outcome(ok=False, retry=True, error=f"{type(exc).__name__}: {exc}")
    excerpt = json.dumps(result, default=str)[: webhooks.RESPONSE_EXCERPT_CHARS]
    return Outcome(ok=True, excerpt=excerpt)
