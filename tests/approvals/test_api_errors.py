"""Bad input gets a clear problem+json error naming the field, and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from approvals import services
from approvals.models import ActionType, AuditEvent, Proposal
from foundation import jsonvalues
from foundation.errors import ApplicationError
from tests.conftest import ServiceClient, refund_body

BIG = "x" * (300 * 1024)


def body_with(**overrides: Any) -> str:
    return json.dumps(refund_body(**overrides))


def body_without(field: str) -> str:
    body = refund_body()
    del body[field]
    return json.dumps(body)


# (name, raw body, content type, expected status, a field the error must name or None)
BAD_INPUTS: list[tuple[str, str | bytes, str, int, str | None]] = [
    ("malformed JSON", '{"action_type": "refund.issue",', "application/json", 400, None),
    ("empty body", "", "application/json", 422, "body"),
    ("JSON array", "[1, 2]", "application/json", 422, None),
    ("JSON string", '"hello"', "application/json", 422, None),
    ("form encoded", "action_type=refund.issue", "application/x-www-form-urlencoded", 415, None),
    ("text/plain", body_with(), "text/plain", 415, None),
    (
        "NaN confidence",
        body_with().replace('"confidence": 0.91', '"confidence": NaN'),
        "application/json",
        400,
        None,
    ),
    (
        "Infinity confidence",
        body_with().replace('"confidence": 0.91', '"confidence": Infinity'),
        "application/json",
        400,
        None,
    ),
    (
        "overflowing number",
        body_with().replace('"confidence": 0.91', '"confidence": 1e400'),
        "application/json",
        400,
        None,
    ),
    ("confidence above 1", body_with(confidence=1.5), "application/json", 422, "confidence"),
    ("confidence below 0", body_with(confidence=-0.1), "application/json", 422, "confidence"),
    ("confidence as string", body_with(confidence="0.9"), "application/json", 422, "confidence"),
    ("confidence as boolean", body_with(confidence=True), "application/json", 422, "confidence"),
    ("missing confidence", body_without("confidence"), "application/json", 422, "confidence"),
    ("missing action_type", body_without("action_type"), "application/json", 422, "action_type"),
    ("missing payload", body_without("payload"), "application/json", 422, "payload"),
    ("missing summary", body_without("summary"), "application/json", 422, "summary"),
    ("empty summary", body_with(summary=""), "application/json", 422, "summary"),
    ("summary over 200", body_with(summary="s" * 201), "application/json", 422, "summary"),
    (
        "rationale over 20000",
        body_with(rationale="r" * 20_001),
        "application/json",
        422,
        "rationale",
    ),
    ("model over 200", body_with(model="m" * 201), "application/json", 422, "model"),
    ("external_id as number", body_with(external_id=7), "application/json", 422, "external_id"),
    ("payload as list", body_with(payload=[1, 2]), "application/json", 422, "payload"),
    ("metadata as string", body_with(metadata="x"), "application/json", 422, "metadata"),
    (
        "llm_call_id not a uuid",
        body_with(llm_call_id="abc"),
        "application/json",
        422,
        "llm_call_id",
    ),
    ("unknown field", body_with(aproved=True), "application/json", 422, "aproved"),
    (
        "unknown action type",
        body_with(action_type="wire.transfer"),
        "application/json",
        422,
        "action_type",
    ),
    (
        "action type not allowed",
        body_with(action_type="email.send", payload={"to": "a@b.c"}),
        "application/json",
        403,
        "action_type",
    ),
    (
        "payload misses a required field",
        body_with(payload={"order_id": "ORD-1"}),
        "application/json",
        422,
        "amount",
    ),
    (
        "payload field of wrong type",
        body_with(payload={"order_id": "ORD-1", "amount": "ten"}),
        "application/json",
        422,
        "amount",
    ),
    (
        "payload negative amount",
        body_with(payload={"order_id": "ORD-1", "amount": -5}),
        "application/json",
        422,
        "amount",
    ),
    (
        "payload extra field",
        body_with(payload={"order_id": "ORD-1", "amount": 5, "iban": "x"}),
        "application/json",
        422,
        "payload",
    ),
    (
        "payload enum violated",
        body_with(payload={"order_id": "ORD-1", "amount": 5, "currency": "BTC"}),
        "application/json",
        422,
        "currency",
    ),
    ("NUL in summary", body_with(summary="a\u0000b"), "application/json", 400, None),
    (
        "NUL in payload key",
        body_with(payload={"order_id\u0000": "x", "amount": 1}),
        "application/json",
        400,
        None,
    ),
    (
        "nested too deep",
        body_with(metadata=json.loads("[" * 100 + "]" * 100)),
        "application/json",
        400,
        None,
    ),
    (
        "recursion bomb",
        '{"metadata": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "application/json",
        400,
        None,
    ),
    # A lone surrogate is valid JSON text but not Unicode: PostgreSQL cannot store it (issue 12).
    (
        "lone surrogate in a payload value",
        body_with().replace('"ORD-1"', '"ORD-\\udfff"'),
        "application/json",
        400,
        "order_id",
    ),
    (
        "lone surrogate in a payload key",
        body_with().replace('"currency"', '"cur\\ud800rency"'),
        "application/json",
        400,
        "payload",
    ),
    (
        "lone surrogate in metadata",
        body_with(metadata={"ticket": "T-1"}).replace('"T-1"', '"T-\\udfff"'),
        "application/json",
        400,
        "ticket",
    ),
    (
        "lone surrogate in the summary",
        body_with().replace('"Refund a late delivery"', '"Refund \\udfff"'),
        "application/json",
        400,
        "summary",
    ),
    (
        "NUL in metadata",
        body_with(metadata={"note": "a\u0000b"}),
        "application/json",
        400,
        "note",
    ),
    # json.loads decodes bytes with surrogatepass: a surrogate written as UTF-8, no escape.
    (
        "lone surrogate as UTF-8 bytes",
        body_with().replace('"ORD-1"', '"ORD-\udfff"').encode("utf-8", "surrogatepass"),
        "application/json",
        400,
        "order_id",
    ),
    (
        "NUL in a UTF-16 body",
        body_with(summary="a\u0000b").encode("utf-16"),
        "application/json",
        400,
        "summary",
    ),
    ("over 256 KiB", body_with(rationale=BIG), "application/json", 413, None),
    ("invalid UTF-8", b'{"summary": "\xff\xfe"}', "application/json", 400, None),
]


@pytest.fixture
def counts(db: None) -> Any:
    def snapshot() -> tuple[int, int]:
        return Proposal.objects.count(), AuditEvent.objects.filter(proposal__isnull=False).count()

    return snapshot


@pytest.mark.parametrize(
    ("name", "raw", "content_type", "status", "field"),
    BAD_INPUTS,
    ids=[row[0] for row in BAD_INPUTS],
)
def test_bad_input_is_refused_with_a_problem_and_stores_nothing(
    shop: ServiceClient,
    email_type: ActionType,
    counts: Any,
    name: str,
    raw: str | bytes,
    content_type: str,
    status: int,
    field: str | None,
) -> None:
    before = counts()
    response = shop.generic("POST", "/api/v1/proposals", raw, content_type=content_type)

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["detail"] and problem["type"].startswith("urn:gatehouse:")
    if field is not None:
        named = [str(part) for error in problem.get("errors", []) for part in error["loc"]]
        assert field in named or field in problem["detail"], problem
    assert counts() == before


def test_there_are_at_least_25_bad_inputs() -> None:
    assert len(BAD_INPUTS) >= 25


def test_a_missing_key_is_unauthorized(shop: ServiceClient, client: Client) -> None:
    response = client.post("/api/v1/proposals", refund_body(), content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response["Content-Type"] == "application/problem+json"
    assert Proposal.objects.count() == 0


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Bearer gh_deadbeef_wrongsecretwrongsecretwrongsec",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer gh__",
    ],
)
def test_a_wrong_key_is_unauthorized(shop: ServiceClient, header: str) -> None:
    client = Client(HTTP_AUTHORIZATION=header)
    response = client.post("/api/v1/proposals", refund_body(), content_type="application/json")
    assert response.status_code == 401
    assert client.get("/api/v1/proposals").status_code == 401
    assert Proposal.objects.count() == 0


def test_the_bearer_scheme_is_matched_in_any_case(shop: ServiceClient) -> None:
    # RFC 9110: an auth scheme is case-insensitive; the app reads the header itself (api.py).
    for scheme in ("bearer", "BEARER"):
        client = Client(HTTP_AUTHORIZATION=f"{scheme} {shop.key}")
        assert client.get("/api/v1/proposals").status_code == 200


def test_a_right_prefix_with_a_wrong_secret_is_unauthorized(shop: ServiceClient) -> None:
    prefix = shop.key.split("_")[1]
    client = Client(HTTP_AUTHORIZATION=f"Bearer gh_{prefix}_{'A' * 32}")
    assert client.get("/api/v1/proposals").status_code == 401


def test_a_revoked_key_is_unauthorized(shop: ServiceClient) -> None:
    assert shop.get("/api/v1/proposals").status_code == 200
    services.api_key_revoke(prefix=shop.key.split("_")[1])
    response = shop.post_json("/api/v1/proposals", refund_body())
    assert response.status_code == 401
    assert Proposal.objects.count() == 0


def test_an_inactive_service_is_unauthorized(shop: ServiceClient) -> None:
    shop.service.is_active = False
    shop.service.save()
    assert shop.get("/api/v1/proposals").status_code == 401


def test_an_invalid_idempotency_key_is_refused(shop: ServiceClient) -> None:
    response = shop.post_json("/api/v1/proposals", refund_body(), **{"Idempotency-Key": "k" * 256})
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert Proposal.objects.count() == 0


def test_the_wrong_method_is_refused(shop: ServiceClient) -> None:
    assert shop.delete("/api/v1/proposals").status_code == 405
    assert shop.put("/api/v1/action-types").status_code == 405


# --- the same refusals on every other way a payload comes in (issue 12) ---------------------

BAD_VALUES = [
    ({"order_id": "ORD-\udfff", "amount": 1.0}, "payload.order_id", "lone surrogate"),
    ({"order_id": "ORD-1", "amount": float("nan")}, "payload.amount", "NaN"),
    ({"order_id": "ORD-1", "amount": float("inf")}, "payload.amount", "inf"),
    ({"order_id": "ORD-\x00", "amount": 1.0}, "payload.order_id", "NUL"),
    ({"order_id": "ORD-1", "amount": 1.0, "x\udfff": 1}, "payload", "a key contains"),
]


@pytest.mark.parametrize(("payload", "where", "what"), BAD_VALUES)
def test_the_submit_service_refuses_bad_values_naming_the_field(
    shop: ServiceClient, counts: Any, payload: dict[str, Any], where: str, what: str
) -> None:
    before = counts()
    with pytest.raises(ApplicationError) as refused:
        services.proposal_submit(service=shop.service, data=refund_body(payload=payload))
    assert refused.value.status == 422
    assert refused.value.message.startswith(where) and what in refused.value.message
    assert counts() == before


@pytest.mark.parametrize(
    ("ensure_ascii", "walked"),
    # "ü" as UTF-8 bytes: nothing the check looks for can be there; as "\u00fc", it could.
    [(False, False), (True, True)],
)
def test_an_api_submit_walks_its_values_at_most_once(
    shop: ServiceClient, monkeypatch: pytest.MonkeyPatch, ensure_ascii: bool, walked: bool
) -> None:
    """The body parser's check covers the submit, and only when the body's bytes could hold
    what it refuses; the service does not walk the body again."""
    walks: list[Any] = []
    check = jsonvalues.check

    def counting(value: Any, loc: tuple[str | int, ...] = (), depth: int = 0) -> None:
        if depth == 0:
            walks.append(loc)
        check(value, loc, depth)

    monkeypatch.setattr(jsonvalues, "check", counting)
    raw = json.dumps(refund_body(summary="Rückerstattung"), ensure_ascii=ensure_ascii)
    response = shop.generic(
        "POST", "/api/v1/proposals", raw.encode(), content_type="application/json"
    )

    assert response.status_code == 201, response.content
    assert walks == ([()] if walked else [])
