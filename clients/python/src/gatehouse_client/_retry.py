"""When to retry a request and how long to wait, shared by the sync and the async client.

Retried: connection errors and timeouts, `409 idempotency-key-in-flight`, `429` and `5xx`, with
exponential backoff and full jitter, or after the server's `Retry-After` when it sends one.
Never retried: any other 4xx — the request itself is wrong and would fail again. Every POST of
one logical call carries the same Idempotency-Key, so a retry after a lost answer cannot create
a second proposal.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gatehouse_client.errors import APIError, ConnectionFailed, error_from_response

IN_FLIGHT = "idempotency-key-in-flight"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: float = 0.25  # seconds; the n-th retry waits up to base * 2**n
    backoff_cap: float = 8.0
    retry_after_cap: float = 60.0  # a Retry-After above this is cut to it

    def backoff(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based): full jitter under an exponential cap."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


def retry_after(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (delta-seconds or an HTTP date), if it sent one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def parse_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def is_retryable(status: int, body: Any) -> bool:
    if status == 429 or status >= 500:
        return True
    code = str(body.get("type", "")) if isinstance(body, dict) else ""
    return status == 409 and code.endswith(IN_FLIGHT)


def delay_for(policy: RetryPolicy, attempt: int, response: httpx.Response | None) -> float:
    hinted = retry_after(response) if response is not None else None
    if hinted is not None:
        return min(hinted, policy.retry_after_cap)
    return policy.backoff(attempt)


def outcome(response: httpx.Response) -> tuple[Any, APIError | None]:
    """The JSON body and, for an error status, the typed error."""
    body = parse_body(response)
    if response.status_code >= 400:
        return body, error_from_response(response.status_code, body)
    return body, None


def connection_failed(method: str, url: str, exc: Exception) -> ConnectionFailed:
    return ConnectionFailed(f"{method} {url}: {type(exc).__name__}: {exc}")
