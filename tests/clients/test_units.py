"""The client's pure parts: what is retried, how long it waits, how an approved payload becomes a
call, and what refuses to run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import gatehouse_client as gc
import httpx
import pytest
from gatehouse_client import _retry
from gatehouse_client.decorator import _Binder, approved_payload, call_key
from gatehouse_client.errors import error_from_response
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals import models as server_models

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(st.text(), json_values, max_size=6))
def test_the_clients_payload_hash_is_the_servers(payload: dict[str, Any]) -> None:
    assert gc.payload_hash(payload) == server_models.payload_hash(payload)


def answer(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "retried"),
    [
        (503, "fault", True),
        (500, "internal", True),
        (429, "rate-limited", True),
        (409, "idempotency-key-in-flight", True),
        (409, "invalid-state", False),
        (422, "validation-error", False),
        (404, "not-found", False),
        (400, "malformed-json", False),
    ],
)
def test_only_transient_answers_are_retried(status: int, code: str, retried: bool) -> None:
    body = {"type": f"urn:gatehouse:problem:{code}", "status": status}
    assert _retry.is_retryable(status, body) is retried


def test_retry_after_in_seconds_or_as_a_date_and_capped() -> None:
    policy = gc.RetryPolicy(retry_after_cap=60)
    assert _retry.delay_for(policy, 1, answer(503, {}, **{"Retry-After": "2"})) == 2.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < _retry.delay_for(policy, 1, answer(503, {}, **{"Retry-After": later})) <= 30
    assert _retry.delay_for(policy, 1, answer(503, {}, **{"Retry-After": "3600"})) == 60
    no_hint = _retry.delay_for(policy, 3, answer(503, {}, **{"Retry-After": "soon"}))
    assert 0 <= no_hint <= policy.backoff_base * 4


def test_an_error_that_is_not_problem_json_is_still_typed() -> None:
    error = error_from_response(502, None)
    assert isinstance(error, gc.ServerError) and error.code == "http-502"
    error = error_from_response(
        422,
        {
            "type": "urn:gatehouse:problem:validation-error",
            "detail": "bad",
            "errors": [{"loc": ["body", "payload", "items", 0, "sku"], "msg": "required"}],
        },
    )
    assert isinstance(error, gc.ValidationError)
    assert error.fields == {"payload.items.0.sku": "required"} and error.detail == "bad"


def test_call_keys_stay_within_the_servers_limit() -> None:
    assert call_key("langgraph", "refund.issue", "t-1", "call_1") == (
        "langgraph:refund.issue:t-1:call_1"
    )
    long = call_key("langgraph", "refund.issue", "t" * 300, "call_1")
    assert len(long) <= 255 and long.startswith("langgraph:sha256:")
    assert long == call_key("langgraph", "refund.issue", "t" * 300, "call_1")


def test_canonical_json_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError):
        gc.canonical_json({"amount": float("inf")})
    assert gc.canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def approved(payload: dict[str, Any], final: dict[str, Any] | None = None) -> gc.Proposal:
    effective = final if final is not None else payload
    return gc.Proposal.from_json(
        {
            "id": "p-1",
            "action_type": "refund.issue",
            "state": "approved",
            "payload": payload,
            "final_payload": final,
            "payload_hash": gc.payload_hash(effective),
            "confidence": 0.5,
            "summary": "s",
            "execution": {"executor": "none", "status": "awaiting_report"},
        }
    )


def refund(order_id: str, /, amount: float, currency: str = "EUR") -> None: ...


def test_an_approved_payload_becomes_the_call_positional_only_included() -> None:
    binder = _Binder(refund)
    proposed = binder.payload(("ORD-1",), {"amount": 5})
    assert proposed == {"order_id": "ORD-1", "amount": 5, "currency": "EUR"}
    proposal = approved(proposed, {**proposed, "amount": 4.5})
    args, kwargs = binder.call_args(approved_payload(proposal, proposed=proposed), proposal)
    assert args == ["ORD-1"] and kwargs == {"amount": 4.5, "currency": "EUR"}


@pytest.mark.parametrize(
    "edit",
    [
        {"order_id": "ORD-1", "amount": 5, "currency": "EUR", "iban": "DE00"},  # unknown field
        {"order_id": "ORD-1", "currency": "EUR"},  # a required argument removed
    ],
)
def test_an_approved_payload_that_does_not_fit_the_function_never_runs(
    edit: dict[str, Any],
) -> None:
    binder = _Binder(refund)
    proposed = binder.payload(("ORD-1",), {"amount": 5})
    proposal = approved(proposed, edit)
    with pytest.raises(gc.PayloadMismatch):
        binder.call_args(approved_payload(proposal, proposed=proposed), proposal)


def test_a_dropped_default_is_filled_in_and_then_no_longer_matches_the_approval() -> None:
    """The reviewer removed `currency`; the function's default would put it back, so what would
    run is not what was approved."""
    binder = _Binder(refund)
    proposed = binder.payload(("ORD-1",), {"amount": 5})
    proposal = approved(proposed, {"order_id": "ORD-1", "amount": 5})
    with pytest.raises(gc.PayloadMismatch):
        binder.call_args(approved_payload(proposal, proposed=proposed), proposal)


def test_an_approval_of_another_payload_than_proposed_never_runs() -> None:
    proposed = {"order_id": "ORD-1", "amount": 5, "currency": "EUR"}
    other = approved({**proposed, "amount": 500})  # no edit, yet not what was proposed
    with pytest.raises(gc.PayloadMismatch):
        approved_payload(other, proposed=proposed)
    unhashed = gc.Proposal.from_json({**approved(proposed).raw, "payload_hash": None})
    with pytest.raises(gc.PayloadMismatch):
        approved_payload(unhashed, proposed=proposed)


def test_a_sync_function_needs_the_sync_client() -> None:
    with pytest.raises(TypeError):

        @gc.requires_approval(
            gc.AsyncGatehouse("http://127.0.0.1:9", "k"),
            action_type="refund.issue",
            summary="s",
            confidence=0.5,
        )
        def sync_refund(order_id: str) -> None: ...
