from __future__ import annotations

from foundation import ttlcache


def test_clear_every_empties_every_cache_of_the_process() -> None:
    # tests/conftest.py calls it between tests, so no test sees what another one cached.
    first, second = (
        ttlcache.TTLCache(),
        ttlcache.TTLCache(max_entries=1, ttl_setting="LLM_CONFIG_TTL"),
    )
    first.set("a", 1)
    second.set("b", 2)
    assert (first.get("a"), second.get("b")) == (1, 2)
    ttlcache.clear_every()
    assert (first.get("a"), second.get("b")) == (None, None)


def test_a_cache_nobody_holds_is_forgotten() -> None:
    import gc

    before = len(ttlcache._instances)
    ttlcache.TTLCache()
    gc.collect()
    assert len(ttlcache._instances) == before
