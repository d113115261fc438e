"""A tiny per-process cache with a time-to-live, for lookups on the hot path of every request.

Entries are plain objects; a change made in this process clears them at once, other processes
see it within the TTL. The TTL is a setting read on every write (HOT_PATH_CACHE_SECONDS unless
the cache names another), so tests and operators can change it; 0 turns caching off.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from django.conf import settings

#: Every cache of this process, so tests can empty them all between tests (clear_every).
_instances: weakref.WeakSet[TTLCache] = weakref.WeakSet()


def clear_every() -> None:
    """Empty every TTLCache of this process."""
    for cache in list(_instances):
        cache.clear()


class TTLCache:
    def __init__(
        self, max_entries: int = 10_000, *, ttl_setting: str = "HOT_PATH_CACHE_SECONDS"
    ) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._ttl_setting = ttl_setting
        _instances.add(self)

    def get(self, key: Any) -> Any | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._data.pop(key, None)
            return None
        return value

    def set(self, key: Any, value: Any) -> None:
        ttl = float(getattr(settings, self._ttl_setting))
        if ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()
            self._data[key] = (time.monotonic() + ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
