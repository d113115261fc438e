"""The proxy's paths skip URL resolving and the middleware after foundation.dispatch, and keep
what those gave their requests and responses (the API's: tests/foundation/test_dispatch.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions

from llmcalls import proxy
from tests.conftest import ServiceClient, assert_stack_headers
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

Route = Callable[..., None]
URL = "/llm/v1/chat/completions"


@pytest.fixture
def shop(shop: ServiceClient, grant: Callable[..., None]) -> ServiceClient:
    grant(shop, "shop")
    return shop


def test_the_proxy_skips_the_rest_of_the_stack_and_keeps_its_headers(
    shop: ServiceClient, fake: FakeProvider, make_route: Route, common_calls: list[str]
) -> None:
    make_route("shop", "primary/ok")

    response = shop.post_json(URL, {"model": "x", "messages": MESSAGES})
    models = shop.get("/llm/v1/models")

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == fake.ANSWER
    assert models.status_code == 200
    assert common_calls == []  # neither went down the stack
    for answer in (response, models):
        assert_stack_headers(answer)
    assert response.wsgi_request.resolver_match.url_name == "proxy-chat"  # for the traces


def test_other_paths_go_down_the_stack_as_before(
    shop: ServiceClient, common_calls: list[str]
) -> None:
    assert shop.get("/llm/v1/nothing-here").status_code == 404
    assert shop.get("/llm/").status_code == 302  # the dashboard: a page, signed-in users only
    assert common_calls == ["/llm/v1/nothing-here", "/llm/"]


def test_a_host_not_allowed_is_refused(shop: ServiceClient, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["gatehouse.example"]
    assert shop.get("/llm/v1/models", HTTP_HOST="evil.example").status_code == 400


def test_a_backing_service_away_is_a_503_problem(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(**kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("connection refused")

    monkeypatch.setattr(proxy, "api_key_authenticate", down)
    response = shop.post_json(URL, {"model": "x", "messages": MESSAGES})
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"]
    assert response["X-Request-ID"]


def test_a_view_that_fails_is_still_a_500(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy, "api_key_authenticate", broken)
    shop.raise_request_exception = False
    response = shop.post_json(URL, {"model": "x", "messages": MESSAGES})
    assert response.status_code == 500
