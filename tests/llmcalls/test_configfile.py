from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from foundation import configfile
from llmcalls.models import Provider, Route

pytestmark = pytest.mark.django_db

FILE = """
llm_providers:
  - {name: primary, base_url: "http://127.0.0.1:9100/v1", api_key_env: GATEHOUSE_PROVIDER_PRIMARY}
  - {name: backup, base_url: "http://127.0.0.1:9101/v1", api_key_env: GATEHOUSE_PROVIDER_BACKUP}
llm_routes:
  - feature: support-refunds
    models: [{provider: primary, model: gpt-4o-mini}, {provider: backup, model: small-model}]
    deadline: 20s
    attempt_timeout: 8s
    cache_ttl: 1h
    daily_budget_usd: 50
    over_budget: refuse
    params: {temperature: 0}
"""


def test_providers_and_routes_are_applied_once() -> None:
    report = configfile.apply(FILE)

    assert report == [
        "llm provider primary: created",
        "llm provider backup: created",
        "llm route support-refunds: created",
    ]
    route = Route.objects.get(feature="support-refunds")
    assert [str(t) for t in route.targets.all()] == ["primary/gpt-4o-mini", "backup/small-model"]
    assert route.deadline == timedelta(seconds=20) and route.cache_ttl == timedelta(hours=1)
    assert route.attempt_timeout == timedelta(seconds=8)
    assert route.daily_budget_usd == Decimal(50) and route.params == {"temperature": 0}
    assert Provider.objects.get(name="primary").api_key_env == "GATEHOUSE_PROVIDER_PRIMARY"

    assert configfile.apply(FILE) == [
        "llm provider primary: unchanged",
        "llm provider backup: unchanged",
        "llm route support-refunds: unchanged",
    ]


def test_changing_the_model_order_updates_the_route() -> None:
    configfile.apply(FILE)
    swapped = FILE.replace(
        "[{provider: primary, model: gpt-4o-mini}, {provider: backup, model: small-model}]",
        "[{provider: backup, model: small-model}, {provider: primary, model: gpt-4o-mini}]",
    )
    assert configfile.apply(swapped)[-1] == "llm route support-refunds: updated (models)"
    route = Route.objects.get()
    assert [t.provider.name for t in route.targets.all()] == ["backup", "primary"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("llm_routes:\n  - feature: x\n    models: []\n", "line 3: llm_routes[0].models"),
        (
            "llm_routes:\n  - feature: x\n    models: [{provider: p, model: m}]\n    deadline: soon\n",
            "line 4: llm_routes[0].deadline",
        ),
        (
            "llm_routes:\n  - feature: x\n    models: [{provider: p, model: m}]\n    over_budget: maybe\n",
            "line 4: llm_routes[0].over_budget",
        ),
        (
            "llm_routes:\n  - feature: x\n    models: [{provider: p, model: m}]\n    params: {model: y}\n",
            "params may not set model",
        ),
        ("llm_providers:\n  - {name: p, base_url: ftp://x}\n", "line 2: llm_providers[0].base_url"),
        (
            "llm_routes:\n  - feature: x\n    models: [{provider: p, model: m}]\n"
            "    deadline: 5s\n    attempt_timeout: 5s\n",
            "attempt_timeout must be longer than 0s and shorter than the deadline",
        ),
    ],
)
def test_a_bad_file_is_refused_with_its_line(text: str, problem: str) -> None:
    with pytest.raises(configfile.ConfigFileError) as caught:
        configfile.parse(text)
    assert problem in "\n".join(caught.value.problems)


def test_a_route_naming_an_unknown_provider_changes_nothing() -> None:
    text = FILE.replace("{provider: backup, model: small-model}", "{provider: ghost, model: m}")
    with pytest.raises(configfile.ConfigFileError, match="unknown provider 'ghost'"):
        configfile.apply(text)
    assert not Provider.objects.exists() and not Route.objects.exists()
