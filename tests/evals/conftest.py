from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from evals import services as eval_services
from evals.examples.refund_model import respond
from evals.models import EvalSet
from llmcalls import routing
from llmcalls import services as llm_services
from llmcalls.breaker import breaker
from llmcalls.models import ModelPrice
from tests.evals.scripted_provider import ScriptedProvider
from tests.live_app import any_free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "evals" / "examples"


@pytest.fixture(scope="session")
def scripted_server() -> Iterator[ScriptedProvider]:
    server = ScriptedProvider(any_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def scripted(scripted_server: ScriptedProvider, settings: Any) -> Iterator[ScriptedProvider]:
    """The scripted provider answering with the simulated refund model; quick backoff."""
    settings.LLM_BACKOFF_BASE = 0.01
    settings.LLM_BACKOFF_CAP = 0.05
    scripted_server.reset()
    scripted_server.responder = respond
    breaker().reset()
    cache.clear()
    routing.forget()
    yield scripted_server
    scripted_server.responder = None
    routing.forget()
    breaker().reset()


@pytest.fixture
def sim_routes(scripted: ScriptedProvider, db: None) -> Callable[..., None]:
    """Routes evals-large/-small/-tiny on the simulated models, priced."""

    def make(**options: Any) -> None:
        llm_services.provider_upsert(name="sim", base_url=scripted.base_url("sim"), api_key_env="")
        for size in ("large", "small", "tiny"):
            llm_services.route_upsert(
                feature=f"evals-{size}",
                targets=[("sim", f"sim-{size}")],
                deadline=timedelta(seconds=options.get("deadline", 10)),
                cache_ttl=None,
                daily_budget_usd=options.get("budget"),
                over_budget="refuse",
                params={},
            )
        prices = {"large": "2.00", "small": "0.40", "tiny": "0.10"}
        for size, price in prices.items():
            ModelPrice.objects.get_or_create(
                model=f"sim-{size}",
                defaults={
                    "input_per_mtok": Decimal(price),
                    "output_per_mtok": Decimal(price) * 4,
                },
            )
        routing.forget()

    return make


V1_SYSTEM = (
    "Refund unopened items within 30 days of delivery. Refund damaged items within 90 days of "
    "delivery. Refund orders that arrived 3 or more days late. Refund a wrong item within 60 "
    'days of delivery. Answer with JSON only: {"eligible": true|false}.'
)
V2_SYSTEM = (
    "Refund unopened items within 30 days of delivery. Refund orders that arrived 3 or more "
    "days late. Refund a wrong item within 60 days of delivery. Final sale items are never "
    "refundable. Refund digital goods within 14 days if not downloaded. "
    'Answer with JSON only: {"eligible": true|false}.'
)
USER = (
    "Order {{order_id}}: {{item}}\nCategory: {{category}}\nDays since delivery: {{days}}\n"
    "Days late: {{late}}\nOpened: {{opened}}\nDownloaded: {{downloaded}}\nCustomer: {{message}}"
)


@pytest.fixture
def refund_set(db: None) -> EvalSet:
    return make_refund_set()


def make_refund_set() -> EvalSet:
    """The shipped example set (48 dev, 12 holdout) with prompt versions 1 and 2."""
    eval_set, _ = eval_services.eval_set_upsert(
        name="refunds",
        feature="support-refunds",
        scorer="label",
        scorer_config={"field": "eligible"},
    )
    lines = (EXAMPLES / "refund_eligibility.jsonl").read_text().splitlines()
    eval_services.cases_import(eval_set=eval_set, lines=lines)
    for number, system in ((1, V1_SYSTEM), (2, V2_SYSTEM)):
        eval_services.prompt_version_create(
            name="refunds",
            version=number,
            route="evals-large",
            template=[{"role": "system", "content": system}, {"role": "user", "content": USER}],
            params={"temperature": 0},
        )
    return eval_set
