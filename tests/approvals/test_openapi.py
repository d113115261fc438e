"""The OpenAPI document matches the wire: schemathesis against the live app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from approvals import services
from approvals.models import ActionType, Rule
from tests import live_app
from tests.conftest import REFUND_SCHEMA
from tests.openapi_contract import DocumentChecker, run_schemathesis
from tests.schemathesis_hooks import OPEN_ACTION_TYPE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    yield from live_app.serve(live_app.any_free_port())


@pytest.fixture
def deployment(settings: Any) -> str:
    """A service allowed two action types: refunds with a strict schema, and notes that take any
    object, executed by the service itself and approved by rule when the model is sure."""
    settings.LONG_POLL_MAX_SECONDS = 0.2  # `?wait=` is fuzzed too
    settings.HOT_PATH_CACHE_SECONDS = 0
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    ActionType.objects.create(key="refund.issue", title="Refund", payload_schema=REFUND_SCHEMA)
    note = ActionType.objects.create(
        key=OPEN_ACTION_TYPE,
        title="Add a note",
        payload_schema={"type": "object"},
        executor_kind="none",
    )
    rule = Rule(name="sure-notes", action_type=note, when="confidence >= 0.5", outcome="approve")
    services.rule_save(rule=rule, actor="test")
    _, key = services.service_create(
        name="fuzzed", action_type_keys=["refund.issue", OPEN_ACTION_TYPE]
    )
    return key


def test_schemathesis_finds_no_difference_between_the_document_and_the_wire(
    api_url: str, deployment: str, tmp_path: Path
) -> None:
    result = run_schemathesis(
        base_url=api_url, key=deployment, seed=21, max_examples=20, timeout=120, workdir=tmp_path
    )
    summary = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    assert "No issues found" in result.stdout, summary
    # The stateful phase ran and followed the document's links from a created proposal.
    links = re.search(r"API Links:\s+(\d+) covered", result.stdout)
    assert links is not None and int(links.group(1)) > 0, summary


def test_an_http_client_is_checked_against_the_same_document(api_url: str, deployment: str) -> None:
    checker = DocumentChecker.load(api_url)
    headers = {"Authorization": f"Bearer {deployment}"}
    hooks = {"response": [checker.check_response]}
    with httpx.Client(base_url=api_url, headers=headers, event_hooks=hooks, timeout=10) as http:
        body = {
            "action_type": OPEN_ACTION_TYPE,
            "payload": {"n": 1},
            "confidence": 0.9,
            "summary": "Note",
        }
        created = http.post("/api/v1/proposals", json=body, headers={"Idempotency-Key": "k-1"})
        assert created.status_code == 201
        assert (
            http.post(
                "/api/v1/proposals", json=body, headers={"Idempotency-Key": "k-1"}
            ).status_code
            == 200
        )
        pid = created.json()["id"]
        assert http.get(f"/api/v1/proposals/{pid}").status_code == 200
        assert (
            http.post(f"/api/v1/proposals/{pid}/result", json={"status": "executed"}).status_code
            == 200
        )
        assert http.post(f"/api/v1/proposals/{pid}/cancel", json={}).status_code == 409
        assert http.get("/api/v1/proposals", params={"limit": 1}).status_code == 200
        assert http.get("/api/v1/proposals", params={"cursor": "nope"}).status_code == 400
        assert http.get("/api/v1/action-types").status_code == 200
    assert len(checker.checked) == 8

    # A response the document does not describe is caught.
    with httpx.Client(base_url=api_url, event_hooks=hooks, timeout=10) as anonymous:
        wrong = httpx.Response(
            200, json={"id": 1}, request=httpx.Request("GET", f"{api_url}/api/v1/action-types")
        )
        wrong.elapsed = timedelta(0)
        with pytest.raises(AssertionError):
            checker.check_response(wrong)
        assert anonymous.get("/api/v1/action-types").status_code == 401
    # And so is a request body the document refuses.
    with pytest.raises(jsonschema.ValidationError):
        checker.check_request_body("POST", "/proposals", {**body, "summary": "a\x00b"})
