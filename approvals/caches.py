"""The per-process caches on the submit path: a service by its key's hash, an action type by key.

approvals/apps.py clears both whenever a service, key or action type is saved or deleted in this
process; other processes follow within settings.HOT_PATH_CACHE_SECONDS.
"""

from __future__ import annotations

from foundation.ttlcache import TTLCache

api_keys = TTLCache()
action_types = TTLCache()


def clear_all() -> None:
    api_keys.clear()
    action_types.clear()
