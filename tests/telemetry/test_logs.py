"""Structured logs: the request id, the decision's context, JSON lines, and no secret in any
line or error page whatever path it takes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals import execution
from approvals.models import ActionType, OutboxMessage
from llmcalls import routing
from llmcalls import services as llm_services
from telemetry import logs
from tests.conftest import ServiceClient, refund_body
from tests.execution_support import ROOT, Receiver, Reply
from tests.live_app import any_free_port
from tests.llmcalls.fake_provider import FakeProvider
from tests.telemetry.crash_urls import CRASH_MESSAGE_SECRET


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    """Everything logged (DEBUG and up), formatted as LOG_FORMAT=json formats it."""
    captured = Captured()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield captured
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.django_db
def test_a_request_id_from_the_client_is_returned_and_on_the_decision_line(
    json_logs: Captured, shop: ServiceClient, refund_type: ActionType, make_rule: Callable[..., Any]
) -> None:
    make_rule("tiny", action_type=refund_type, when="payload.amount < 50.0", outcome="approve")
    response = shop.post_json("/api/v1/proposals", refund_body(), **{"X-Request-ID": "req-42.a_b"})
    assert response.status_code == 201
    assert response["X-Request-ID"] == "req-42.a_b"
    [line] = [line for line in json_logs.lines() if line["logger"] == "gatehouse.decisions"]
    assert line["request_id"] == "req-42.a_b"
    assert line["level"] == "INFO"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line["time"])
    assert line["service"] == "shop"
    assert line["proposal_id"] == response.json()["id"]
    assert line["action_type"] == "refund.issue"
    assert (line["outcome"], line["rule"], line["rule_version"]) == ("approve", "tiny", 1)
    assert line["message"].endswith("approved by rule tiny v1")


@pytest.mark.django_db
def test_without_one_a_request_id_is_made_for_the_request(json_logs: Captured) -> None:
    first, second = Client().get("/healthz"), Client().get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent",
    ["x" * 201, "abc\x01def", "abc\x7fdef", "two words", "caf\u00e9", "line\u2028break", "\t"],
)
def test_a_malformed_request_id_is_replaced_and_never_logged_as_sent(
    json_logs: Captured, shop: ServiceClient, sent: str
) -> None:
    response = shop.post_json("/api/v1/proposals", {"bad": "body"}, **{"X-Request-ID": sent})
    assert response.status_code == 422
    replaced = response["X-Request-ID"]
    assert replaced != sent and re.fullmatch(r"[0-9a-f]{32}", replaced)
    lines = json_logs.lines()
    assert any(line.get("request_id") == replaced for line in lines)
    assert sent not in json_logs.text
    assert json.dumps(sent)[1:-1] not in json_logs.text


def test_a_request_id_of_200_visible_characters_is_kept() -> None:
    kept = "a" * 200
    assert logs.sanitize_request_id(kept) == kept


def test_log_format_json_gives_one_object_a_line_and_a_bad_value_stops_the_start() -> None:
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "x" * 50, "LOG_FORMAT": "json"}
    code = "import logging; logging.getLogger('gatehouse.probe').warning('hello %s', 'there')"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = [json.loads(x) for x in result.stderr.splitlines() if "gatehouse.probe" in x]
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "gatehouse.probe",
        "hello there",
    )
    bad = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**env, "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0
    assert "LOG_FORMAT must be text or json" in bad.stderr


# --- no secret in any line or error page ---------------------------------------------------------

PROVIDER_KEY = "prov-key-7c1e9a55d2b04f3e"
PASSWORD = "correct-horse-battery-staple-77"


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.telemetry.crash_urls")
def test_no_credential_reaches_a_log_line_or_an_error_page(
    json_logs: Captured,
    shop: ServiceClient,
    refund_type: ActionType,
    make_rule: Callable[..., Any],
    receiver: Receiver,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    settings.METRICS_TOKEN = "metrics-token-4b8d2e6f1a3c"
    logs.register_secret(settings.METRICS_TOKEN)  # as the app does at start
    service = shop.service
    api_key, webhook_secret = shop.key, service.webhook_secret
    User.objects.create_superuser("ada", password=PASSWORD)
    bodies: list[bytes] = []

    def keep(response: Any) -> Any:
        """Error pages are searched too (the admin's own pages may show what an admin may see)."""
        if response.status_code >= 400:
            bodies.append(response.content if not response.streaming else b"".join(response))
        return response

    # API errors: a wrong key, the right key with a bad body, a secret in the query string.
    keep(Client().post("/api/v1/proposals", {}, HTTP_AUTHORIZATION=f"Bearer {api_key}x"))
    keep(shop.post_json(f"/api/v1/proposals?api_key={api_key}", {"payload": api_key}))
    keep(Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}-no"))

    # Login failures on the reviewer login and the admin's, with a real CSRF token and session.
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/login/")
    csrf = page.cookies["csrftoken"].value
    keep(
        browser.post(
            "/login/", {"username": "ada", "password": PASSWORD + "!", "csrfmiddlewaretoken": csrf}
        )
    )
    keep(
        browser.post(
            "/admin/login/",
            {"username": "ada", "password": PASSWORD[::-1], "csrfmiddlewaretoken": csrf},
        )
    )

    # The admin, logged in: its session id and CSRF token travel with every request.
    admin = Client()
    assert admin.login(username="ada", password=PASSWORD)
    session_id = admin.cookies["sessionid"].value
    keep(admin.get("/admin/approvals/service/"))
    keep(admin.get(f"/admin/approvals/service/{service.pk}/change/"))

    # Webhooks: an executor answering 500 with the secret it should never have seen.
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = receiver.url("/execute")
    refund_type.save()
    receiver.secret = webhook_secret
    receiver.respond = lambda delivery, nth: Reply(500)
    make_rule("tiny", action_type=refund_type, when="payload.amount < 50.0", outcome="approve")
    keep(shop.post_json("/api/v1/proposals", refund_body()))
    message = OutboxMessage.objects.get(kind="execute")
    execution.outbox_deliver(message_id=message.pk)

    # Model calls: a provider that echoes the key it was sent, through the client and the proxy.
    fake_server = FakeProvider(any_free_port()).start()
    request.addfinalizer(fake_server.stop)
    monkeypatch.setenv("GATEHOUSE_PROVIDER_OBS_TEST_KEY", PROVIDER_KEY)
    llm_services.provider_upsert(
        name="echo",
        base_url=fake_server.base_url("echo"),
        api_key_env="GATEHOUSE_PROVIDER_OBS_TEST_KEY",
    )
    from datetime import timedelta

    llm_services.route_upsert(
        feature="support",
        targets=[("echo", "echo-auth")],
        deadline=timedelta(seconds=3),
        cache_ttl=None,
        daily_budget_usd=None,
        over_budget="refuse",
        params={},
    )
    llm_services.feature_grant_upsert(service=shop.service, feature="support", actor="test")
    routing.forget()
    proxied = shop.post_json(
        "/llm/v1/chat/completions",
        {"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        **{"X-Gatehouse-Feature": "support"},
    )
    keep(proxied)
    assert proxied.status_code >= 400
    sent = [{k.lower(): v for k, v in r.headers.items()} for r in fake_server.requests]
    assert {"authorization": f"Bearer {PROVIDER_KEY}"}.items() <= sent[0].items()

    # A DEBUG=0 error page for an unexpected exception carrying secrets.
    crash = Client(raise_request_exception=False)
    keep(crash.get(f"/crash/?token={api_key}", HTTP_AUTHORIZATION=f"Bearer {api_key}"))
    assert bodies[-1] and CRASH_MESSAGE_SECRET not in bodies[-1].decode()

    output = json_logs.text + "\n".join(b.decode(errors="replace") for b in bodies)
    assert "login failed for 'ada'" in json_logs.text  # the paths did log
    assert "problem 401 unauthorized" in json_logs.text
    assert "Internal Server Error: /crash/" in json_logs.text
    assert "proposal.execute" in json_logs.text
    assert "model call support echo-auth error" in json_logs.text
    for secret in (
        api_key,
        api_key.rsplit("_", 1)[1],
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        PROVIDER_KEY,
        PASSWORD,
        PASSWORD[::-1],
        session_id,
        csrf,
        settings.METRICS_TOKEN,
        settings.SECRET_KEY,
    ):
        assert secret not in output, f"{secret[:6]}… leaked"
