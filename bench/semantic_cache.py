"""The semantic cache's lookup (llmcalls/semcache.py), its memory, and what a hit saves.

    .venv/bin/python bench/semantic_cache.py [--lookups 300]

It creates a fresh PostgreSQL database (bench_semcache_llm, see bench/common.py) and, in one run:

1. For 10,000 and 100,000 entries in ONE key (the worst case: keys split entries by service,
   feature, model, system prompt and parameters) with 256-dimension unit vectors (the demo
   embedding's size), written to the table and read into a fresh index as a process does:
   - index search: sketch ranking + exact cosines of the candidates (Index.search);
   - lookup: the whole of semcache.lookup (index search, the table check of the winner, its hit
     count) for a query that hits;
   - floor: a bare numpy float32 matrix-vector product over the same 100,000 vectors and argmax
     (the brute force the sketch avoids), and the exact cache's lookup (Django cache get);
   - memory: the index's bytes per 100,000 entries (tracemalloc while it loads).
2. A hit against the provider call it replaces: client.complete() on a route with the semantic
   cache, answered by the cache (embedding call + lookup + log) and by the fake provider
   (tests/llmcalls/fake_provider.py in its own process, answering at once: what is saved is
   llmcalls' own work; a real provider's seconds come on top).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import bench_env, fresh_database, manage  # noqa: E402

DATABASE = "bench_semcache_llm"
FAKE_PORT = int(os.environ.get("BENCH_FAKE_PORT", "18470"))
DIM = 256


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def timed(fn: Any, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def load_entries(n: int, key: str) -> Any:
    """n random unit vectors in one key, bulk-inserted; returns the matrix (float32)."""
    import numpy as np
    from django.db import connection
    from django.utils import timezone

    from llmcalls.models import SemanticCacheEntry

    rng = np.random.default_rng(n)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE llmcalls_semanticcacheentry")
    import uuid

    batch = []
    for i in range(n):
        batch.append(
            SemanticCacheEntry(
                key=key,
                call_id=uuid.uuid4(),
                feature="bench",
                embedding=vectors[i].astype(np.float16).tobytes(),
                response={"provider": "bench", "model": "ok", "raw": {"choices": []}},
                expires_at=now + timedelta(days=7),
                approved_at=now,
                changed_at=now,
            )
        )
        if len(batch) == 5000:
            SemanticCacheEntry.objects.bulk_create(batch)
            batch = []
    SemanticCacheEntry.objects.bulk_create(batch)
    return vectors


def index_figures(n: int, lookups: int) -> dict[str, Any]:
    import numpy as np
    from django.core.cache import cache

    from llmcalls import semcache
    from llmcalls.routing import SemanticCache

    key = "k" * 64
    vectors = load_entries(n, key)
    semcache.forget()
    tracemalloc.start()
    started = time.perf_counter()
    semcache.index().refresh(force=True)
    load_s = time.perf_counter() - started
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    index = semcache.index()
    rng = np.random.default_rng(1)
    # Queries near a stored entry (a paraphrase: cosine ~0.97), so the lookup hits.
    targets = rng.integers(0, n, lookups)
    queries = []
    for t in targets:
        q = vectors[t] + rng.standard_normal(DIM).astype(np.float32) * 0.015
        queries.append(q / np.linalg.norm(q))
    found = 0
    position = iter(range(10**9))

    def search() -> None:
        nonlocal found
        q = queries[next(position) % lookups]
        best = index.search(key, q, approved_only=True, threshold=0.9)
        found += bool(best and best[0][1] >= 0.9)

    search_p50, search_p99 = timed(search, lookups)
    recall = found / lookups
    probes = [
        semcache.Probe(SemanticCache("emb", 0.9, 3600, True), key, "q", vector=q) for q in queries
    ]
    position = iter(range(10**9))
    hits = 0

    def lookup() -> None:
        nonlocal hits
        hits += semcache.lookup(probes[next(position) % lookups]) is not None

    lookup_p50, lookup_p99 = timed(lookup, lookups)
    position = iter(range(10**9))

    def brute() -> None:
        q = queries[next(position) % lookups]
        int(np.argmax(vectors @ q))

    floor_p50, floor_p99 = timed(brute, lookups)
    # The table check alone (one statement by primary key), and a bare round trip beside it.
    position = iter(range(10**9))

    def check() -> None:
        i = next(position) % lookups
        semcache._servable_rows([int(targets[i]) + first_id], probes[i])

    from django.db import connection

    first_id = semcache.SemanticCacheEntry.objects.order_by("id").values_list("id", flat=True)[0]
    check_p50, check_p99 = timed(check, lookups)

    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    trip_p50, trip_p99 = timed(select_one, lookups)
    cache.set("bench-exact", {"raw": {}}, 60)
    exact_p50, exact_p99 = timed(lambda: cache.get("bench-exact"), lookups)
    return {
        "n": n,
        "load_s": load_s,
        "memory": memory,
        "search": (search_p50, search_p99),
        "recall": recall,
        "lookup": (lookup_p50, lookup_p99),
        "hit_rate": hits / lookups,
        "floor": (floor_p50, floor_p99),
        "check": (check_p50, check_p99),
        "trip": (trip_p50, trip_p99),
        "exact": (exact_p50, exact_p99),
    }


def hit_savings(calls: int) -> dict[str, Any]:
    from decimal import Decimal

    from llmcalls import client, routing, semcache, services
    from llmcalls.models import ModelPrice, SemanticCacheEntry

    SemanticCacheEntry.objects.all().delete()
    semcache.forget()
    base = f"http://127.0.0.1:{FAKE_PORT}"
    services.provider_upsert(name="bench", base_url=f"{base}/bench/v1", api_key_env="")
    for model in ("ok", "demo-embedding"):
        ModelPrice.objects.get_or_create(
            model=model, provider="", defaults={"input_per_mtok": Decimal(1), "output_per_mtok": 2}
        )
    common: dict[str, Any] = {
        "deadline": timedelta(seconds=10),
        "cache_ttl": None,
        "daily_budget_usd": None,
        "over_budget": "refuse",
        "params": {},
    }
    services.route_upsert(feature="emb", targets=[("bench", "demo-embedding")], **common)
    services.route_upsert(
        feature="bench-semantic",
        targets=[("bench", "ok")],
        semantic_cache={"embedding_route": "emb", "threshold": 0.9, "ttl": "3600s", "serve": "any"},
        **common,
    )
    services.route_upsert(feature="bench-plain", targets=[("bench", "ok")], **common)
    routing.forget()

    def ask(feature: str, text: str) -> Any:
        return client.complete(feature=feature, messages=[{"role": "user", "content": text}])

    ask("bench-semantic", "Can I get a refund for order 42?")
    hit_samples, plain_samples, kinds = [], [], set()
    for i in range(calls):
        started = time.perf_counter()
        kinds.add(
            ask("bench-semantic", "Is it possible to get my money back for order 42?").cache_kind
        )
        hit_samples.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        ask("bench-plain", f"Is it possible to get my money back for order {i}?")
        plain_samples.append((time.perf_counter() - started) * 1000)
    return {"hit": percentiles(hit_samples), "provider": percentiles(plain_samples), "kinds": kinds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    env = bench_env(DATABASE, LLM_SEMANTIC_REFRESH="3600", OPENBLAS_NUM_THREADS="1")
    os.environ.clear()
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    fresh_database(DATABASE)
    manage(env, "migrate", "--noinput")
    import django

    django.setup()
    print(f"load: {os.getloadavg()}")
    print(
        f"{'entries':>8} {'search p50/p99 ms':>18} {'lookup p50/p99 ms':>18} "
        f"{'numpy dot p50/p99':>18} {'exact p50/p99':>15} {'recall':>6} {'MB':>6} {'load s':>6}"
    )
    for n in (10_000, 100_000):
        f = index_figures(n, args.lookups)
        print(
            f"{n:>8} {f['search'][0]:>8.3f}/{f['search'][1]:<9.3f} "
            f"{f['lookup'][0]:>8.3f}/{f['lookup'][1]:<9.3f} "
            f"{f['floor'][0]:>8.3f}/{f['floor'][1]:<9.3f} {f['exact'][0]:>6.3f}/{f['exact'][1]:<8.3f} "
            f"{f['recall']:>6.3f} {f['memory'] / 1e6:>6.1f} {f['load_s']:>6.1f}"
        )
        print(
            f"         ratio lookup p99 / numpy dot p99: {f['lookup'][1] / f['floor'][1]:.2f}; "
            f"hit rate of the lookups: {f['hit_rate']:.3f}; "
            f"memory per 100,000 entries: {f['memory'] / n * 100_000 / 1e6:.1f} MB"
        )
        print(
            f"         table check alone p50/p99 {f['check'][0]:.3f}/{f['check'][1]:.3f} ms; "
            f"bare SELECT 1 round trip {f['trip'][0]:.3f}/{f['trip'][1]:.3f} ms"
        )
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.llmcalls.fake_provider", str(FAKE_PORT), "900"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)
        s = hit_savings(args.calls)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    print(
        f"complete() answered by the semantic cache: p50 {s['hit'][0]:.2f} ms, p99 "
        f"{s['hit'][1]:.2f} ms (kinds seen: {sorted(s['kinds'])}); by the (instant) fake provider "
        f"on a route without it: p50 {s['provider'][0]:.2f} ms, p99 {s['provider'][1]:.2f} ms"
    )
    print(
        f"a hit costs {s['hit'][0] - s['provider'][0]:+.2f} ms at p50 against an instant provider;"
        " it saves the provider's own latency minus that"
    )
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
