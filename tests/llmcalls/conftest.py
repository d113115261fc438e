from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache

from llmcalls import client, routing, services
from llmcalls.breaker import breaker
from llmcalls.models import LLMCall, ModelPrice
from tests.execution_support import wait_until
from tests.live_app import any_free_port, serve
from tests.llmcalls.fake_provider import FakeProvider


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    server = FakeProvider(any_free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_app() -> Iterator[str]:
    """The whole app under uvicorn (the production ASGI server) on loopback, in a thread."""
    yield from serve(any_free_port())


@pytest.fixture
def fake(fake_server: FakeProvider, settings: Any) -> Iterator[FakeProvider]:
    """The fake provider, reset, with quick backoff; breaker, cache and snapshot cleared."""
    settings.LLM_BACKOFF_BASE = 0.01
    settings.LLM_BACKOFF_CAP = 0.05
    settings.LLM_CIRCUIT_FAILURES = 3
    settings.LLM_CIRCUIT_COOLDOWN = 30
    fake_server.reset()
    client._warned_unpriced.clear()
    breaker().reset()
    cache.clear()
    routing.forget()
    yield fake_server
    routing.forget()
    breaker().reset()


@pytest.fixture
def make_route(fake: FakeProvider, db: None) -> Callable[..., None]:
    """make_route("feature", "primary/ok", "backup/ok", deadline=2, …) against the fake."""

    def make(feature: str, *targets: str, **options: Any) -> None:
        pairs = [tuple(t.split("/", 1)) for t in targets]
        for provider in {p for p, _ in pairs}:
            services.provider_upsert(
                name=provider, base_url=fake.base_url(provider), api_key_env=""
            )
        services.route_upsert(
            feature=feature,
            targets=pairs,  # type: ignore[arg-type]
            deadline=timedelta(seconds=options.get("deadline", 5)),
            attempt_timeout=timedelta(seconds=options["attempt_timeout"])
            if "attempt_timeout" in options
            else None,
            cache_ttl=timedelta(seconds=options["cache_ttl"]) if "cache_ttl" in options else None,
            daily_budget_usd=Decimal(str(options["budget"])) if "budget" in options else None,
            over_budget=options.get("over_budget", "refuse"),
            params=options.get("params", {}),
        )
        routing.forget()

    return make


@pytest.fixture
def prices(db: None) -> None:
    """Prices for the fake's model names: $1000 in, $500 cached in, $2000 out per million tokens
    (absurd, so that one call costs cents: $0.026 for the fake's 12 in and 7 out)."""
    for model in ("ok", "small", "delay:0.3", "length", "cut", "stall", "500", "429:1"):
        ModelPrice.objects.create(
            model=model,
            input_per_mtok=Decimal("1000"),
            cached_input_per_mtok=Decimal("500"),
            output_per_mtok=Decimal("2000"),
        )
    routing.forget()


MESSAGES = [{"role": "user", "content": "Is order 42 eligible for a refund?"}]


@pytest.fixture
def grant(db: None) -> Callable[..., None]:
    """grant(service_client, "feature", "refund.issue", …): let a service call a feature."""
    from llmcalls.models import FeatureGrant

    def make(service: Any, feature: str, *action_types: str) -> None:
        target = getattr(service, "service", service)
        row, _ = FeatureGrant.objects.get_or_create(service=target, feature=feature)
        if action_types:
            from approvals.models import ActionType

            row.action_types.set(ActionType.objects.filter(key__in=action_types))
        routing.forget()

    return make


def logged_call(call_id: str, *, within: float = 5.0) -> LLMCall:
    """A proxied call's row, read from another process or thread than the server's: the server
    writes a successful call's row once the answer is sent (llmcalls.proxy), so the client may
    hold the answer a moment before the row is committed."""
    row: LLMCall = wait_until(
        lambda: LLMCall.objects.filter(id=call_id).first(),
        timeout=within,
        what=f"the row of call {call_id}",
    )
    return row
