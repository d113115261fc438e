"""The production entry itself (`config.wsgi.application`, what granian serves) for the proxy's
paths, called in-process with WSGI environs, as the server calls it: the answers, their headers
and log lines, the stream chunk by chunk, and the database connection back in the pool when the
server closes the response (Django's test client does not send request_finished's receivers)."""

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
from django.db import connection

from llmcalls import proxy
from llmcalls.models import LLMCall
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
def shop(shop: ServiceClient, grant: Callable[..., None], make_route: Route) -> ServiceClient:
    grant(shop, "shop")
    make_route("shop", "primary/ok")
    return shop


def test_a_call_is_answered_with_the_stacks_headers(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    request = {"model": "x", "messages": MESSAGES}
    answer = call(production, "POST", CHAT, key=shop.key, body=request, x_request_id="req-1")
    body = json.loads(answer.read())
    models = call(production, "GET", "/llm/v1/models", key=shop.key)
    models_body = json.loads(models.read())

    assert answer.status == "200 OK"
    assert body["choices"][0]["message"]["content"] == fake.ANSWER
    assert answer.names() == [
        "Content-Type",
        "X-Gatehouse-Call-Id",
        "X-Gatehouse-Cache",
        "X-Frame-Options",
        "Content-Length",
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
        "X-Request-ID",
    ]
    assert answer.header("X-Request-ID") == "req-1"
    assert answer.header("X-Frame-Options") == "DENY"
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert "default-src" in (answer.header("Content-Security-Policy") or "")
    assert answer.header("Content-Length") == str(len(json.dumps(body, separators=(",", ":"))))
    call_id = answer.header("X-Gatehouse-Call-Id") or ""
    assert LLMCall.objects.filter(pk=call_id, service="shop", status="ok").exists()
    assert models.status == "200 OK"
    assert [m["id"] for m in models_body["data"]] == ["ok"]
    assert models.header("X-Request-ID")


@pytest.mark.parametrize(
    "case",
    ["no key", "wrong key", "feature not granted", "unknown field", "bad messages", "not json"],
)
def test_refusals_name_what_is_wrong_and_are_logged(
    case: str,
    production: Any,
    shop: ServiceClient,
    other_shop: ServiceClient,
    grant: Callable[..., None],
    fake: FakeProvider,
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
        answer = call(production, "POST", CHAT, key=key, body=body, **headers)
    answer_body = json.loads(answer.read())
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]

    expected = {
        "no key": 401,
        "wrong key": 401,
        "feature not granted": 403,
        "unknown field": 400,
        "bad messages": 400,
        "not json": 400,
    }[case]
    assert answer.code == expected
    assert logged == [f"{answer.status.split(' ', 1)[1]}: {CHAT}"]
    assert answer.header("X-Request-ID")
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert answer.header("X-Gatehouse-Call-Id") is None
    if expected == 400:
        assert answer.header("Content-Type") == "application/problem+json"
        assert answer_body["errors"][0]["loc"][0] == "body"  # names the field
        if case == "unknown field":
            assert answer_body["errors"][0]["loc"] == ["body", "deadline"]
    if expected == 401:
        assert answer.header("WWW-Authenticate") == "Bearer"
        assert answer_body["error"]["code"] == "invalid_api_key"
    if expected == 403:
        assert answer_body["errors"][0]["loc"] == ["header", "X-Gatehouse-Feature"]
    assert not LLMCall.objects.exists()  # nothing called, nothing logged
    assert fake.requests == []


def test_a_stream_is_served_chunk_by_chunk(
    production: Any, shop: ServiceClient, fake: FakeProvider
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


def test_the_connection_goes_back_to_the_pool_when_the_response_is_closed(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    assert connection.connection is not None  # the key's check took one
    answer.read()  # the server closes the response: the call's row, then request_finished
    assert connection.connection is None


# --- the call's row, written once the answer is sent ------------------------------------------

# What a row holds that differs from one call to the next of the same request.
PER_CALL = {"id", "created_at", "latency_ms"}


def row(call_id: str) -> dict[str, Any]:
    values = {
        f.name: getattr(LLMCall.objects.get(pk=call_id), f.attname)
        for f in LLMCall._meta.concrete_fields
        if f.name not in PER_CALL
    }
    values["attempt_log"] = [
        {k: v for k, v in attempt.items() if k != "ms"} for attempt in values["attempt_log"]
    ]
    return values


def test_the_calls_row_is_written_when_the_server_closes_the_answer_and_once(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    call_id = answer.header("X-Gatehouse-Call-Id") or ""
    assert answer.code == 200 and answer.header("Content-Length")
    assert not LLMCall.objects.filter(pk=call_id).exists()  # answered, not logged yet

    # A server that closes the answer without iterating it, and twice.
    answer.iterable.close()  # type: ignore[attr-defined]
    answer.iterable.close()  # type: ignore[attr-defined]

    assert LLMCall.objects.filter(pk=call_id, service="shop", status="ok").count() == 1
    assert LLMCall.objects.count() == 1


def test_the_row_written_after_the_answer_is_the_row_written_before_it(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    from llmcalls import client

    request = {"messages": MESSAGES, "temperature": 0.2, "max_tokens": 50}
    answer = call(production, "POST", CHAT, key=shop.key, body=request, x_request_id="req-1")
    answer.read()
    # The same call in-process, logged before complete() returns (the path before this change).
    before = client.complete(
        feature="shop", service="shop", messages=MESSAGES, temperature=0.2, max_tokens=50
    )
    after = LLMCall.objects.get(pk=answer.header("X-Gatehouse-Call-Id") or "")

    assert row(str(after.pk)) == row(str(before.call_id))
    assert after.created_at < LLMCall.objects.get(pk=before.call_id).created_at
    assert 0 < (after.latency_ms or 0) < 5000


def test_the_calls_log_line_and_metrics_come_with_the_row_under_the_requests_id(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    from prometheus_client import REGISTRY

    from telemetry import logs

    def counted() -> float:
        labels = {"feature": "shop", "model": "ok", "status": "ok"}
        return REGISTRY.get_sample_value("gatehouse_model_calls_total", labels) or 0.0

    lines: list[tuple[str, str, str]] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.INFO:
                lines.append((record.llm_call_id, logs.request_id.get(), record.getMessage()))  # type: ignore[attr-defined]

    handler = Lines()
    llm_logger = logging.getLogger("llmcalls")
    level = llm_logger.level
    llm_logger.addHandler(handler)
    llm_logger.setLevel(logging.INFO)
    try:
        before = counted()
        answer = call(
            production,
            "POST",
            CHAT,
            key=shop.key,
            body={"messages": MESSAGES},
            x_request_id="req-7",
        )
        assert (counted(), lines) == (before, [])  # answered: observed with the row, later
        answer.read()
    finally:
        llm_logger.removeHandler(handler)
        llm_logger.setLevel(level)

    [(call_id, request_id, message)] = lines
    assert call_id == answer.header("X-Gatehouse-Call-Id")
    assert request_id == "req-7"  # the request's, though the middleware has reset it by now
    assert message.startswith("model call shop ok ok")
    assert counted() == before + 1


def test_a_deferred_write_that_fails_puts_the_record_in_the_log(
    production: Any,
    shop: ServiceClient,
    fake: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmcalls import services

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(services, "_insert", refuse)
    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    body = json.loads(answer.read())

    assert answer.code == 200 and body["choices"][0]["message"]["content"] == fake.ANSWER
    assert "llm call log write failed; the record follows" in caplog.text
    assert (answer.header("X-Gatehouse-Call-Id") or "-") in caplog.text
    assert "Is order 42 eligible" in caplog.text


def test_failed_calls_and_budgeted_routes_are_logged_before_the_answer(
    production: Any,
    shop: ServiceClient,
    grant: Callable[..., None],
    make_route: Route,
    fake: FakeProvider,
    prices: None,
) -> None:
    grant(shop, "broken")
    grant(shop, "budgeted")
    make_route("broken", "primary/500", deadline=1)
    make_route("budgeted", "primary/ok", budget="100")
    failed = call(
        production,
        "POST",
        CHAT,
        key=shop.key,
        body={"messages": MESSAGES},
        x_gatehouse_feature="broken",
    )
    budgeted = call(
        production,
        "POST",
        CHAT,
        key=shop.key,
        body={"messages": MESSAGES},
        x_gatehouse_feature="budgeted",
    )

    # Both rows are in before either answer is closed: an error is durable, and the next call
    # on a budgeted route must count this one's cost.
    assert failed.code == 502 and budgeted.code == 200
    assert LLMCall.objects.get(pk=failed.header("X-Gatehouse-Call-Id") or "").status == "error"
    assert LLMCall.objects.get(pk=budgeted.header("X-Gatehouse-Call-Id") or "").cost_usd
    failed.read()
    budgeted.read()
    assert LLMCall.objects.count() == 2


def test_a_proposal_citing_the_call_while_its_row_is_being_written_is_accepted(
    production: Any, shop: ServiceClient, fake: FakeProvider
) -> None:
    import threading
    import time

    from tests.conftest import refund_body

    answer = call(production, "POST", CHAT, key=shop.key, body={"messages": MESSAGES})
    call_id = answer.header("X-Gatehouse-Call-Id") or ""

    def server_closes_a_moment_later() -> None:
        time.sleep(0.01)
        answer.read()

    server = threading.Thread(target=server_closes_a_moment_later)
    server.start()
    try:
        response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=call_id))
    finally:
        server.join()

    assert response.status_code == 201, response.content
    assert response.json()["llm_call_id"] == call_id


def test_a_host_not_allowed_is_refused(production: Any, shop: ServiceClient, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["gatehouse.example"]
    answer = call(production, "GET", "/llm/v1/models", key=shop.key, host="evil.example")
    assert answer.code == 400
    assert answer.header("X-Request-ID")
    assert answer.header("X-Content-Type-Options") == "nosniff"


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
