"""A circuit breaker per provider/model.

closed: calls go through; each failure counts, a success resets the count.
open: after LLM_CIRCUIT_FAILURES consecutive failures the target is skipped for
      LLM_CIRCUIT_COOLDOWN seconds.
half-open: once the cooldown ends the next call tries again; a success closes the circuit, a
      failure (the count is still over the threshold) opens it for another cooldown.

With REDIS_URL set the state lives in Redis so every process shares it; otherwise in memory.
If Redis cannot be reached the breaker lets calls through rather than failing them.

A process reads a target's state from Redis at most every LLM_CIRCUIT_REFRESH seconds (a read
was 0.25 ms of every model call): a circuit another process opens is skipped here within that
time; one this process opens or resets takes effect here at once. An open circuit's deadline is
kept as a time, so it closes on time whatever the refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache
from typing import Any

from django.conf import settings

logger = logging.getLogger("llmcalls")


class MemoryBreaker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, list[float]] = {}  # key -> [failures, open_until]

    def check(self, key: str) -> tuple[bool, bool]:
        """(open now, has failures to clear on success)."""
        state = self._state.get(key)
        if state is None:
            return False, False
        return state[1] > time.time(), state[0] > 0

    def success(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)

    def failure(self, key: str) -> None:
        with self._lock:
            state = self._state.setdefault(key, [0, 0.0])
            state[0] += 1
            if state[0] >= settings.LLM_CIRCUIT_FAILURES:
                state[1] = time.time() + settings.LLM_CIRCUIT_COOLDOWN

    def reset(self) -> None:
        with self._lock:
            self._state.clear()

    def open_targets(self) -> list[str]:
        now = time.time()
        return [key for key, (_, open_until) in list(self._state.items()) if open_until > now]


class RedisBreaker:
    PREFIX = "llm:cb:"

    def __init__(self, url: str) -> None:
        import redis

        self._redis: Any = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        # key -> (read at, open until, has failures); dict reads and writes are atomic.
        self._seen: dict[str, tuple[float, float, bool]] = {}

    def check(self, key: str) -> tuple[bool, bool]:
        now = time.time()
        seen = self._seen.get(key)
        if seen is None or not 0 <= now - seen[0] < settings.LLM_CIRCUIT_REFRESH:
            try:
                open_until, failures = self._redis.mget(
                    f"{self.PREFIX}{key}:open", f"{self.PREFIX}{key}:fails"
                )
            except Exception:
                logger.warning("circuit breaker: Redis unreachable; letting %s through", key)
                return False, False
            seen = (
                now,
                float(open_until) if open_until is not None else 0.0,
                failures is not None and int(failures) > 0,
            )
            self._seen[key] = seen
        return seen[1] > now, seen[2]

    def success(self, key: str) -> None:
        try:
            self._redis.delete(f"{self.PREFIX}{key}:fails", f"{self.PREFIX}{key}:open")
        except Exception:
            logger.warning("circuit breaker: Redis unreachable; could not reset %s", key)
        self._seen.pop(key, None)  # after the write: the next check here reads it

    def failure(self, key: str) -> None:
        cooldown = settings.LLM_CIRCUIT_COOLDOWN
        try:
            pipe = self._redis.pipeline()
            pipe.incr(f"{self.PREFIX}{key}:fails")
            pipe.expire(f"{self.PREFIX}{key}:fails", int(max(cooldown * 10, 3600)))
            failures = pipe.execute()[0]
            if failures >= settings.LLM_CIRCUIT_FAILURES:
                # The deadline is stored as a value (not only as a TTL) so it follows the clock
                # the application reads.
                self._redis.set(
                    f"{self.PREFIX}{key}:open", time.time() + cooldown, ex=int(cooldown) + 60
                )
        except Exception:
            logger.warning("circuit breaker: Redis unreachable; could not count a failure")
        self._seen.pop(key, None)

    def reset(self) -> None:
        self._seen.clear()
        for name in self._redis.scan_iter(f"{self.PREFIX}*"):
            self._redis.delete(name)

    def open_targets(self) -> list[str]:
        """Targets whose circuit is open now: a SCAN of the (few) `:open` keys and one MGET."""
        names = list(self._redis.scan_iter(f"{self.PREFIX}*:open", count=1000))
        if not names:
            return []
        now = time.time()
        return [
            name.decode()[len(self.PREFIX) : -len(":open")]
            for name, until in zip(names, self._redis.mget(names), strict=True)
            if until is not None and float(until) > now
        ]


@cache
def breaker() -> MemoryBreaker | RedisBreaker:
    return RedisBreaker(settings.REDIS_URL) if settings.REDIS_URL else MemoryBreaker()


def metrics_open_circuits() -> list[tuple[str, tuple[str, ...], float]]:
    """The breaker state for /metrics (without Redis: the scraping process's own breakers)."""
    return [("gatehouse_model_circuit_open", (key,), 1.0) for key in breaker().open_targets()]
