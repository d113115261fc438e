"""The proxy as services use it: the official openai SDK against the app under uvicorn."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from llmcalls.models import LLMCall
from tests.conftest import ServiceClient
from tests.llmcalls.conftest import MESSAGES, logged_call
from tests.llmcalls.fake_provider import FakeProvider

Route = Callable[..., None]
PROMPT: Any = MESSAGES  # the SDK's message types are stricter than these dicts need


@pytest.fixture
def shop(shop: ServiceClient, grant: Callable[..., None]) -> ServiceClient:
    """The service, granted its default feature (its name) and one more."""
    grant(shop, "shop")
    grant(shop, "support-refunds")
    return shop


@pytest.fixture(scope="module")
def proxy_url(live_app: str) -> str:
    return f"{live_app}/llm/v1"


def sdk(proxy_url: str, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url, api_key=key, max_retries=0, default_headers=headers)


@pytest.mark.django_db(transaction=True)
class TestThroughTheSdk:
    @pytest.fixture(autouse=True)
    def _loopback_host(self, settings: Any) -> None:
        settings.ALLOWED_HOSTS = ["127.0.0.1"]

    def test_a_completion_through_the_proxy_is_logged_under_the_service(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/ok")

        raw = sdk(proxy_url, shop.key).chat.completions.with_raw_response.create(
            model="anything",
            messages=PROMPT,
            temperature=0.2,
        )
        completion = raw.parse()

        assert completion.choices[0].message.content == "Hello from the fake provider."
        assert completion.usage is not None and completion.usage.prompt_tokens == 12
        call = logged_call(raw.headers["x-gatehouse-call-id"])  # written once the answer is sent
        assert (call.feature, call.service, call.status) == ("shop", "shop", "ok")
        assert call.params == {"temperature": 0.2}
        assert fake.requests[0].body["model"] == "ok"  # the route decides the model

    def test_the_feature_header_picks_the_route(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("support-refunds", "backup/small")

        raw = sdk(
            proxy_url, shop.key, **{"X-Gatehouse-Feature": "support-refunds"}
        ).chat.completions.with_raw_response.create(model="x", messages=PROMPT)

        assert raw.parse().model == "small"
        assert logged_call(raw.headers["x-gatehouse-call-id"]).feature == "support-refunds"

    def test_a_streamed_completion_through_the_proxy(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/ok")

        with sdk(proxy_url, shop.key).chat.completions.with_streaming_response.create(
            model="x",
            messages=PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        ) as response:
            call_id = response.headers["x-gatehouse-call-id"]
            chunks = list(response.parse())

        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from the fake provider."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
        call = LLMCall.objects.get(id=call_id)
        assert call.stream and call.status == "ok" and call.ttft_ms is not None

    def test_the_proxy_streams_as_tokens_arrive_not_when_the_answer_is_whole(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/stall", deadline=1)  # two words, then silence

        started = time.monotonic()
        arrivals = []
        with pytest.raises(openai.APIError, match="deadline passed mid-stream"):
            for _chunk in sdk(proxy_url, shop.key).chat.completions.create(
                model="x",
                messages=PROMPT,
                stream=True,
            ):
                arrivals.append(time.monotonic() - started)

        assert len(arrivals) == 2 and arrivals[0] < 0.5
        assert 1.0 <= time.monotonic() - started < 1.5

    def test_a_stream_without_include_usage_gets_no_usage_chunk(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/ok")
        chunks = list(
            sdk(proxy_url, shop.key).chat.completions.create(
                model="x",
                messages=PROMPT,
                stream=True,
            )
        )
        assert all(c.choices for c in chunks)

    def test_a_stream_cut_midway_reaches_the_sdk_as_an_error(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/cut")

        received = []
        with pytest.raises(openai.APIError, match="broke after"):
            for chunk in sdk(proxy_url, shop.key).chat.completions.create(
                model="x",
                messages=PROMPT,
                stream=True,
            ):
                received.append(chunk.choices[0].delta.content)

        assert "".join(r or "" for r in received) == "Hello from"
        assert LLMCall.objects.get().error_class == "StreamCut"

    def test_errors_come_back_in_openai_shape_with_the_call_id(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/500")

        with pytest.raises(openai.APIStatusError) as caught:
            sdk(proxy_url, shop.key).chat.completions.create(model="x", messages=PROMPT)

        assert caught.value.status_code == 502
        assert "Every model of the route failed" in caught.value.message
        call_id = caught.value.response.headers["x-gatehouse-call-id"]
        assert LLMCall.objects.get(id=call_id).status == "error"

    def test_the_sdk_raises_a_field_gatehouse_keeps_with_its_name(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/ok")

        with pytest.raises(openai.BadRequestError) as caught:
            sdk(proxy_url, shop.key).chat.completions.create(
                model="x", messages=PROMPT, extra_body={"deadline": 60}
            )

        assert caught.value.param == "deadline"
        assert "deadline is the route's" in caught.value.message
        assert not fake.requests

    def test_the_sdk_raises_a_feature_not_granted(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("default", "primary/ok")

        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk(
                proxy_url, shop.key, **{"X-Gatehouse-Feature": "someone-elses"}
            ).chat.completions.create(model="x", messages=PROMPT)

        assert caught.value.code == "feature-not-granted"
        assert not fake.requests

    def test_a_wrong_key_is_refused(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, db: None
    ) -> None:
        with pytest.raises(openai.AuthenticationError):
            sdk(proxy_url, "gh_nope_nope").chat.completions.create(model="x", messages=PROMPT)
        assert not LLMCall.objects.exists()

    def test_models_lists_the_routes_models(
        self, proxy_url: str, fake: FakeProvider, make_route: Route, shop: ServiceClient
    ) -> None:
        make_route("shop", "primary/ok", "backup/small")
        ids = [m.id for m in sdk(proxy_url, shop.key).models.list()]
        assert ids == ["ok", "small"]


# --- without a server: status codes and refusals -------------------------------------------------


@pytest.mark.django_db
class TestRequests:
    def test_no_key_is_401(self, client: Any, fake: FakeProvider) -> None:
        response = client.post(
            "/llm/v1/chat/completions", {"messages": MESSAGES}, content_type="application/json"
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"

    def test_a_revoked_key_is_401(self, shop: ServiceClient, fake: FakeProvider) -> None:
        from approvals import services

        services.api_key_revoke(prefix=shop.key.split("_")[1])
        response = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        assert response.status_code == 401

    @pytest.mark.parametrize(
        "body", ["not json", "[]", '{"messages": []}', '{"messages": "hi"}', "{}"]
    )
    def test_a_bad_body_is_400_and_calls_nothing(
        self, shop: ServiceClient, fake: FakeProvider, body: str
    ) -> None:
        response = shop.post("/llm/v1/chat/completions", body, content_type="application/json")
        assert response.status_code == 400
        assert not fake.requests and not LLMCall.objects.exists()

    @pytest.mark.django_db(transaction=True)
    def test_a_proxied_call_waits_for_postgresql_once_the_log_row(
        self, shop: ServiceClient, fake: FakeProvider, make_route: Route
    ) -> None:
        """Authentication, grants, routing and prices come from in-process caches; the call
        log's INSERT is its own transaction, one round trip: nothing else on the hot path."""
        from tests.approvals.test_bulk import LibpqTrace

        make_route("shop", "primary/ok")
        for _ in range(2):  # warm: the key, the grants, the route, the price, the statement
            assert (
                shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES}).status_code
                == 200
            )
        with LibpqTrace() as trace:
            response = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        assert response.status_code == 200
        assert trace.round_trips == 1, trace.sent
        assert trace.statements() == ["INSERT"], trace.sent
        assert LLMCall.objects.filter(id=response["X-Gatehouse-Call-Id"]).exists()

    def test_get_on_completions_is_405(self, shop: ServiceClient, fake: FakeProvider) -> None:
        assert shop.get("/llm/v1/chat/completions").status_code == 405

    def test_no_route_is_404_in_openai_shape(self, shop: ServiceClient, fake: FakeProvider) -> None:
        response = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "no-route"
        assert LLMCall.objects.get(id=response["X-Gatehouse-Call-Id"]).status == "refused"

    def test_a_spent_budget_is_429(
        self, shop: ServiceClient, fake: FakeProvider, make_route: Route, prices: None
    ) -> None:
        make_route("shop", "primary/ok", budget="0.01")
        assert shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES}).status_code == 200
        response = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "budget-exceeded"

    def test_a_non_streamed_answer_is_the_providers_body(
        self, shop: ServiceClient, fake: FakeProvider, make_route: Route
    ) -> None:
        make_route("shop", "primary/ok", cache_ttl=60)
        first = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        second = shop.post_json("/llm/v1/chat/completions", {"messages": MESSAGES})
        assert first.json()["id"] == "chatcmpl-fake" == second.json()["id"]
        assert (first["X-Gatehouse-Cache"], second["X-Gatehouse-Cache"]) == ("miss", "exact")
