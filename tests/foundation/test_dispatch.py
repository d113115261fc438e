"""The API's arg-less paths go from foundation.dispatch straight to their view, skipping URL
resolving and the middleware after it, and keep what those gave their requests and responses
(the proxy's paths: tests/llmcalls/test_dispatch.py)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import redis.exceptions
from django.test import Client

from approvals import services
from tests.conftest import ServiceClient, assert_stack_headers, refund_body


def test_the_submit_skips_the_rest_of_the_stack_and_keeps_its_headers(
    shop: ServiceClient, common_calls: list[str]
) -> None:
    submitted = shop.post_json("/api/v1/proposals", refund_body())
    listed = shop.get("/api/v1/proposals")
    types = shop.get("/api/v1/action-types")

    assert submitted.status_code == 201, submitted.content
    assert listed.status_code == 200
    assert types.status_code == 200
    assert common_calls == []  # none went down the stack
    for answer in (submitted, listed, types):
        assert_stack_headers(answer)
    assert submitted.wsgi_request.resolver_match.view_name == "api:submit_proposal"


def test_errors_are_answered_by_the_api_as_before(
    shop: ServiceClient, common_calls: list[str]
) -> None:
    no_key = ServiceClient(shop.service, "gh_nope_nope").post_json(
        "/api/v1/proposals", refund_body()
    )
    bad = shop.post_json("/api/v1/proposals", refund_body(payload={"order_id": "ORD-1"}))
    put = shop.put("/api/v1/proposals", "{}", content_type="application/json")

    assert no_key.status_code == 401
    assert bad.status_code == 422
    assert bad["Content-Type"] == "application/problem+json"
    assert {"loc": ["body", "payload"], "msg": "'amount' is a required property"} in bad.json()[
        "errors"
    ]
    assert put.status_code == 405
    assert common_calls == []


def test_paths_with_arguments_and_pages_go_down_the_stack(
    shop: ServiceClient, common_calls: list[str]
) -> None:
    missing = f"/api/v1/proposals/{uuid.uuid4()}"
    assert shop.get(missing).status_code == 404
    assert shop.get("/api/v1/nothing-here").status_code == 404
    assert shop.get("/healthz").status_code == 200
    assert common_calls == [missing, "/api/v1/nothing-here", "/healthz"]


def test_a_post_csrf_would_refuse_goes_down_the_stack(common_calls: list[str]) -> None:
    # The API's documents are not csrf_exempt: a POST gets CSRF's 403 as it did.
    browser = Client(enforce_csrf_checks=True)
    response = browser.post("/api/v1/openapi.json", "{}", content_type="application/json")
    assert response.status_code == 403
    assert browser.get("/api/v1/openapi.json").status_code == 200
    assert common_calls == ["/api/v1/openapi.json"]


def test_common_middleware_s_refusals_still_apply(
    shop: ServiceClient, settings: Any, common_calls: list[str]
) -> None:
    settings.ALLOWED_HOSTS = ["gatehouse.example"]
    assert shop.get("/api/v1/proposals", HTTP_HOST="evil.example").status_code == 400
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.DISALLOWED_USER_AGENTS = [re.compile(r"^BadBot")]
    refused = shop.post_json("/api/v1/proposals", refund_body(), **{"User-Agent": "BadBot/1"})
    assert refused.status_code == 403
    assert common_calls == ["/api/v1/proposals"]


def test_a_backing_service_away_is_a_503_problem(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(**kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("connection refused")

    monkeypatch.setattr(services, "api_key_authenticate", down)
    response = shop.post_json("/api/v1/proposals", refund_body())
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"]
    assert response["X-Request-ID"]
