"""The proxy takes nothing on trust from the calling service (issue 12, item 1).

Personas: `shop` (service A) and `other_shop` (service B), each with its own key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llmcalls.models import LLMCall
from tests.conftest import ServiceClient
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]
Grant = Callable[..., None]
URL = "/llm/v1/chat/completions"


def call(service: ServiceClient, body: dict[str, Any] | None = None, feature: str = "") -> Any:
    headers = {"X-Gatehouse-Feature": feature} if feature else {}
    return service.post_json(URL, body or {"messages": MESSAGES}, **headers)


def test_a_service_cannot_call_a_feature_granted_only_to_another(
    shop: ServiceClient,
    other_shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
) -> None:
    make_route("b-feature", "primary/ok")
    grant(other_shop, "b-feature")

    response = call(shop, feature="b-feature")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["header", "X-Gatehouse-Feature"]
    assert problem["error"]["code"] == "feature-not-granted"
    assert not fake.requests and not LLMCall.objects.exists()
    assert call(other_shop, feature="b-feature").status_code == 200


def test_a_fresh_feature_name_does_not_escape_the_budget(
    shop: ServiceClient, fake: FakeProvider, make_route: Route, grant: Grant, prices: None
) -> None:
    make_route("default", "primary/ok", budget="0.01")
    grant(shop, "support")
    assert call(shop, feature="support").status_code == 200
    assert call(shop, feature="support").status_code == 429

    for fresh in ("support-2", "x" * 300, "shop"):
        assert call(shop, feature=fresh).status_code == 403
    assert len(fake.requests) == 1


def test_one_service_cannot_spend_anothers_budget(
    shop: ServiceClient,
    other_shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
    prices: None,
) -> None:
    make_route("shared", "primary/ok", budget="0.01")
    grant(shop, "shared")
    grant(other_shop, "shared")

    assert call(shop, feature="shared").status_code == 200
    assert call(shop, feature="shared").status_code == 429  # A spent its own budget

    assert call(other_shop, feature="shared").status_code == 200  # B's is untouched


def test_one_service_cannot_read_anothers_cached_answer(
    shop: ServiceClient,
    other_shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
) -> None:
    make_route("shared", "primary/ok", cache_ttl=600)
    grant(shop, "shared")
    grant(other_shop, "shared")
    secret_prompt = {"messages": [{"role": "user", "content": "B's customer 4711 asked …"}]}

    first = call(other_shop, secret_prompt, feature="shared")
    replay = call(shop, secret_prompt, feature="shared")

    assert (first["X-Gatehouse-Cache"], replay["X-Gatehouse-Cache"]) == ("miss", "miss")
    assert len(fake.requests) == 2
    assert call(other_shop, secret_prompt, feature="shared")["X-Gatehouse-Cache"] == "exact"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("feature", "b-feature"),
        ("service", "other-shop"),
        ("route", "expensive"),
        ("deadline", "abc"),
        ("deadline", 14),
        ("timeout", 60),
        ("store", True),
        ("no_such_parameter", 1),
    ],
)
def test_reserved_or_unknown_body_fields_are_a_400_naming_the_field(
    shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
    field: str,
    value: Any,
) -> None:
    make_route("shop", "primary/ok")
    grant(shop, "shop")

    response = call(shop, {"messages": MESSAGES, field: value})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"] == [{"loc": ["body", field], "msg": problem["detail"]}]
    assert field in problem["detail"]
    assert problem["error"]["param"] == field  # what the openai SDK reads
    assert not fake.requests and not LLMCall.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [1, 2]}, "messages"),
        ({"messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"messages": MESSAGES, "stream_options": []}, "stream_options"),
        ({"messages": MESSAGES, "model": {"x": 1}}, "model"),
        ({"messages": [{"role": "user", "content": "hi \udfff"}]}, "messages"),
        ({"messages": MESSAGES, "stop": ["\ud800"]}, "stop"),
    ],
)
def test_badly_shaped_fields_are_a_400_naming_the_field(
    shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
    body: dict[str, Any],
    field: str,
) -> None:
    make_route("shop", "primary/ok")
    grant(shop, "shop")

    response = call(shop, body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["body", field]
    assert not fake.requests and not LLMCall.objects.exists()


def test_the_routes_parameters_win_over_the_callers(
    shop: ServiceClient, fake: FakeProvider, make_route: Route, grant: Grant
) -> None:
    make_route("shop", "primary/ok", params={"max_tokens": 10, "temperature": 0})
    grant(shop, "shop")

    response = call(shop, {"messages": MESSAGES, "max_tokens": 50_000, "top_p": 0.5})

    assert response.status_code == 200
    sent = fake.requests[0].body
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (10, 0, 0.5)
    assert LLMCall.objects.get().params == {"max_tokens": 10, "temperature": 0, "top_p": 0.5}


def test_the_models_list_shows_only_the_routes_of_granted_features(
    shop: ServiceClient,
    other_shop: ServiceClient,
    fake: FakeProvider,
    make_route: Route,
    grant: Grant,
) -> None:
    make_route("a-feature", "primary/ok")
    make_route("b-feature", "backup/secret-model")
    grant(shop, "a-feature")
    grant(other_shop, "b-feature")

    ids = [m["id"] for m in shop.get("/llm/v1/models").json()["data"]]

    assert ids == ["ok"]
