"""When to try an outbound call again: the wait a server asked for (Retry-After), and
exponential backoff with equal jitter. Webhook deliveries (foundation.webhooks) and model calls
(llmcalls.client) both wait this way."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: A server may ask for a long pause, not for one longer than a day.
MAX_RETRY_AFTER = 24 * 3600.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date (never
    negative), or None when there is none or it is not one of those."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The wait a response's headers ask for: `retry-after-ms` (model providers send it) before
    `Retry-After`. `headers` is case-insensitive (httpx), or has lower-case names."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            wait = float(millis) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(wait):
                return max(wait, 0.0)
    return parse_retry_after(headers.get("retry-after"), now=now)


def backoff_seconds(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """The wait after attempt number `attempt` (1 for the first) failed: exponential from `base`,
    at most `cap`, with equal jitter, and at least what the server asked for (up to a day).

    Equal jitter: half the exponential step is fixed, half random, so retries of many clients
    spread out yet never come sooner than half the step.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = step / 2 + random.uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
