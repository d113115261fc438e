"""The production entry itself (`config.wsgi.application`, what granian serves) for the proxy's
paths, called in-process with WSGI environs: foundation/handler.py serves them past the
middleware chain and must answer as the chain does (Django's own WSGIHandler, compared here)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.exceptions
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection

from llmcalls import proxy
from llmcalls.models import LLMCall
from telemetry.middleware import RequestIdMiddleware
from tests.conftest import ServiceClient
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

# The handler returns the connection to the pool when a response is closed (request_finished),
# which would end a test's own transaction: these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)

Route = Callable[..., None]
CHAT = "/llm/v1/chat/completions"


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: Iterator[bytes]) -> None:
        self.status = status
        self.code = int(status.split()[0])
        self.headers = headers
        self.iterable = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def read(self) -> bytes:
        try:
            return b"".join(self.iterable)
        finally:
            self.iterable.close()  # type: ignore[attr-defined]


def call(
    app: Any,
    method: str,
    path: str,
    *,
    key: str = "",
    body: Any = None,
    host: str = "testserver",
    **headers: str,
) -> Answer:
    payload = (
        b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    )
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if key:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body_iter = app(environ, lambda status, hdrs, exc_info=None: started.append((status, hdrs)))
    return Answer(started[0][0], started[0][1], body_iter)


@pytest.fixture
def production() -> Any:
    # config.wsgi sets DB_POOL_MIN for the web process when it is first imported; the test
    # process's environment (which later tests hand to their subprocesses) stays as it was.
    before = os.environ.get("DB_POOL_MIN")
    from config.wsgi import application

    if before is None:
        os.environ.pop("DB_POOL_MIN", None)
    else:
        os.environ["DB_POOL_MIN"] = before
    return application


@pytest.fixture
def chain() -> WSGIHandler:
    """Django's own handler with the whole middleware chain: what the proxy's paths went
    through before foundation/handler.py."""
    return WSGIHandler()


@pytest.fixture
def shop(shop: ServiceClient, grant: Callable[..., None], make_route: Route) -> ServiceClient:
    grant(shop, "shop")
    make_route("shop", "primary/ok")
    return shop


@pytest.fixture
def chain_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths RequestIdMiddleware (first in MIDDLEWARE) saw: the lean path never calls it."""
    seen: list[str] = []
    original = RequestIdMiddleware.__call__

    def spy(self: RequestIdMiddleware, request: Any) -> Any:
        seen.append(request.path)
        return original(self, request)

    monkeypatch.setattr(RequestIdMiddleware, "__call__", spy)
    return seen


def _without_ids(answer: Answer) -> list[tuple[str, str]]:
    varying = {"X-Gatehouse-Call-Id", "Content-Length"}
    return [(k, "…" if k in varying else v) for k, v in answer.headers]


def test_the_proxy_paths_skip_the_chain_and_answer_with_the_same_headers(
    production: Any, chain: WSGIHandler, shop: ServiceClient, fake: FakeProvider, chain_calls: Any
) -> None:
    request = {"model": "x", "messages": MESSAGES}
    lean = call(production, "POST", CHAT, key=shop.key, body=request, x_request_id="req-1")
    lean_body = json.loads(lean.read())
    models = call(production, "GET", "/llm/v1/models", key=shop.key, x_request_id="req-2")
    models_body = models.read()
    assert chain_calls == []  # neither went through the middleware chain

    before = call(chain, "POST", CHAT, key=shop.key, body=request, x_request_id="req-1")
    before_body = json.loads(before.read())
    models_before = call(chain, "GET", "/llm/v1/models", key=shop.key, x_request_id="req-2")
    assert chain_calls == [CHAT, "/llm/v1/models"]

    assert lean.status == before.status == "200 OK"
    assert lean_body["choices"][0]["message"]["content"] == fake.ANSWER
    assert lean_body == before_body
    assert _without_ids(lean) == _without_ids(before)  # the same headers, in the same order
    assert lean.header("X-Request-ID") == "req-1"
    assert lean.header("Content-Length") == str(len(json.dumps(lean_body, separators=(",", ":"))))
    call_id = lean.header("X-Gatehouse-Call-Id") or ""
    assert LLMCall.objects.filter(pk=call_id, service="shop", status="ok").exists()
    assert models.status == models_before.status == "200 OK"
    assert models.headers == models_before.headers
    assert models_body == models_before.read()


@pytest.mark.parametrize(
    "case",
    ["no key", "wrong key", "feature not granted", "unknown field", "bad messages", "not json"],
)
def test_refusals_are_the_chains_refusals(
    case: str,
    production: Any,
    chain: WSGIHandler,
    shop: ServiceClient,
    other_shop: ServiceClient,
    grant: Callable[..., None],
    fake: FakeProvider,
    chain_calls: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant(other_shop, "other-feature")
    key, headers = shop.key, {}
    body: Any = {"model": "x", "messages": MESSAGES}
    if case == "no key":
        key = ""
    elif case == "wrong key":
        key = "gh_nope_" + "x" * 30
    elif case == "feature not granted":  # the other service's feature
        key, headers = shop.key, {"x_gatehouse_feature": "other-feature"}
    elif case == "unknown field":
        body = {"model": "x", "messages": MESSAGES, "deadline": 99}
    elif case == "bad messages":
        body = {"model": "x", "messages": []}
    else:
        body = b"{not json"

    with caplog.at_level(logging.WARNING, logger="django.request"):
        lean = call(production, "POST", CHAT, key=key, body=body, x_request_id="r", **headers)
    lean_body = json.loads(lean.read())
    lean_logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="django.request"):
        before = call(chain, "POST", CHAT, key=key, body=body, x_request_id="r", **headers)
    before_body = json.loads(before.read())
    before_logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]

    assert chain_calls == [CHAT]  # only the chain's own call went through it
    expected = {
        "no key": 401,
        "wrong key": 401,
        "feature not granted": 403,
        "unknown field": 400,
        "bad messages": 400,
        "not json": 400,
    }[case]
    assert lean.code == before.code == expected
    assert lean_body == before_body
    assert lean.headers == before.headers
    assert lean_logged == before_logged == [f"{lean.status.split(' ', 1)[1]}: {CHAT}"]
    if expected == 400:
        assert lean.header("Content-Type") == "application/problem+json"
        assert lean_body["errors"][0]["loc"][0] == "body"  # names the field
        if case == "unknown field":
            assert lean_body["errors"][0]["loc"] == ["body", "deadline"]
    if expected == 401:
        assert lean.header("WWW-Authenticate") == "Bearer"
    if expected == 403:
        assert lean_body["errors"][0]["loc"] == ["header", "X-Gatehouse-Feature"]
    assert not LLMCall.objects.exists()  # nothing called, nothing logged


def test_a_stream_is_served_chunk_by_chunk(
    production: Any, shop: ServiceClient, fake: FakeProvider, chain_calls: Any
) -> None:
    body = {"model": "x", "messages": MESSAGES, "stream": True}
    answer = call(production, "POST", CHAT, key=shop.key, body=body)
    assert answer.code == 200
    assert answer.header("Content-Type") == "text/event-stream"
    assert answer.header("X-Accel-Buffering") == "no"
    assert answer.header("Content-Length") is None
    call_id = answer.header("X-Gatehouse-Call-Id") or ""
    chunks = iter(answer.iterable)
    first = next(chunks)
    assert first.startswith(b"data: {")
    # The stream's log row is written at its end: the first chunk is out before the rest is read.
    assert not LLMCall.objects.filter(pk=call_id).exists()
    rest = list(chunks)
    answer.iterable.close()  # type: ignore[attr-defined]
    assert rest[-1] == b"data: [DONE]\n\n"
    assert len(rest) >= 2
    text = "".join(
        json.loads(chunk[6:])["choices"][0]["delta"].get("content") or ""
        for chunk in [first, *rest[:-1]]
        if json.loads(chunk[6:]).get("choices")
    )
    assert text == fake.ANSWER
    assert LLMCall.objects.filter(pk=call_id, stream=True, status="ok").exists()
    assert chain_calls == []


def test_the_connection_goes_back_to_the_pool_when_the_response_is_closed(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    assert connection.connection is not None  # the call's log row took one
    answer.read()  # the server closes the response: request_finished
    assert connection.connection is None


def test_a_host_not_allowed_is_refused(
    production: Any, shop: ServiceClient, settings: Any, chain_calls: Any
) -> None:
    settings.ALLOWED_HOSTS = ["gatehouse.example"]
    answer = call(production, "GET", "/llm/v1/models", key=shop.key, host="evil.example")
    assert answer.code == 400
    assert answer.header("X-Request-ID")
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert chain_calls == []


def test_a_backing_service_away_is_a_503_problem(
    production: Any, shop: ServiceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(**kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("connection refused")

    monkeypatch.setattr(proxy, "api_key_authenticate", down)
    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    body = json.loads(answer.read())
    assert answer.code == 503
    assert answer.header("Content-Type") == "application/problem+json"
    assert answer.header("Retry-After")
    assert answer.header("X-Request-ID")
    assert body["unavailable"] == "redis"


def test_an_unexpected_error_is_a_500_logged_as_django_logs_it(
    production: Any,
    shop: ServiceClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy, "api_key_authenticate", broken)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
        answer.read()
    assert answer.code == 500
    assert answer.header("X-Request-ID")
    logged = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in logged] == [f"Internal Server Error: {CHAT}"]
    assert logged[0].exc_info is not None and "a bug" in str(logged[0].exc_info[1])
    assert getattr(logged[0], "request_id", None) == answer.header("X-Request-ID")


def test_with_traces_on_the_proxy_goes_through_the_chain_and_is_a_request_span(
    spans: Any, shop: ServiceClient, fake: FakeProvider, chain_calls: Any
) -> None:
    from foundation.handler import GatehouseWSGIHandler

    # As in production: the Django instrumentation is in MIDDLEWARE before the handler loads it.
    application = GatehouseWSGIHandler()
    assert not application.lean
    answer = call(application, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    answer.read()
    assert answer.code == 200
    assert chain_calls == [CHAT]
    server = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert [s.attributes["http.status_code"] for s in server] == [200]


def test_other_paths_are_djangos(production: Any, shop: ServiceClient, chain_calls: Any) -> None:
    assert call(production, "GET", "/llm/v1/nothing-here", key=shop.key).code == 404
    assert call(production, "POST", "/llm/v1/models", key=shop.key).code in (403, 405)
    assert chain_calls == ["/llm/v1/nothing-here", "/llm/v1/models"]
