"""The payload's JSON Schema: the quick check agrees with jsonschema, which alone names errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from approvals import schemas_cache
from approvals.models import ActionType

DEMO = yaml.safe_load((Path(__file__).parents[2] / "config" / "demo.yaml").read_text())
DEMO_SCHEMAS = [t["payload_schema"] for t in DEMO["action_types"]]

# Every keyword the quick check does, alone and nested.
SCHEMAS: list[Any] = [
    *DEMO_SCHEMAS,
    {},
    True,
    False,
    {"type": "integer", "minimum": 2, "maximum": 10.5},
    {"type": ["integer", "null"], "exclusiveMaximum": 3},
    {"type": ["number", "string", "boolean"], "exclusiveMinimum": -1, "minLength": 2},
    {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
    {"items": False},
    {"items": {"const": "a"}},
    {"enum": ["a", "b", ""]},
    {"const": ""},
    {"format": "date-time"},
    {"type": "string", "format": "uuid"},
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nested",
        "description": "annotations only annotate",
        "type": "object",
        "minProperties": 1,
        "maxProperties": 3,
        "required": ["a"],
        "properties": {
            "a": {"type": "object", "additionalProperties": {"type": "integer"}},
            "b": True,
            "c": False,
            "d": {"type": "array", "items": {"type": "object", "required": ["x"]}},
        },
        "additionalProperties": {"type": "string", "pattern": "^[a-z]+$"},
    },
]

EDGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    3,
    1.0,
    2.0,
    2.5,
    10.5,
    11,
    -1,
    -1.0,
    -0.5,
    100000,
    100000.5,
    "",
    "a",
    "b",
    "ab",
    "abcd",
    "A",
    "ORD-1234",
    "ORD-12",
    "EUR",
    "BTC",
    "a@b.c",
    "no-at",
    "2026-11-30T12:00:00Z",
    "yesterday",
    str(uuid.uuid4()),
    [],
    ["a"],
    ["a", "b", "c", "d"],
    [1],
    [{"x": 1}, {"y": 1}],
    {},
    {"a": {}},
    {"a": {"k": 1}, "b": None},
    {"a": {"k": 1.5}},
    {"a": 1},
    {"a": {}, "c": 1},
    {"a": {}, "z": "word"},
    {"a": {}, "z": "Word"},
    {"a": {}, "d": [{"x": 1}]},
    {"a": {}, "d": [{"y": 1}]},
    {"order_id": "ORD-1234", "amount": 42.5, "currency": "EUR"},
    {"order_id": "ORD-1234", "amount": 42.5, "currency": "EUR", "reason": "late"},
    {"order_id": "ORD-1234", "amount": 0, "currency": "EUR"},
    {"order_id": "ORD-1234", "amount": True, "currency": "EUR"},
    {"order_id": "ORD-1234", "amount": 5, "currency": "EUR", "iban": "x"},
    {"order_id": "ORD-1", "amount": 5, "currency": "USD"},
    {"to": "a@b.c", "subject": "hi", "body": "text"},
    {"to": "nobody", "subject": "hi", "body": "text"},
    {"to": "a@b.c", "subject": "", "body": "text"},
    {"account_id": "ACC-12345", "reason": "asked"},
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 100_001)
    | st.floats(-5, 100_001, allow_nan=False)
    | st.sampled_from([v for v in EDGE_VALUES if isinstance(v, str)])
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "c", "d", "x", "z", "Q", "amount", "order_id", "currency"])
            | st.text(max_size=3),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _compiled(schema: Any) -> tuple[Draft202012Validator, schemas_cache.Check]:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    quick = schemas_cache.quick_check(schema, validator)
    assert quick is not None, schema
    return validator, quick


@pytest.mark.parametrize("schema", SCHEMAS)
def test_the_quick_check_agrees_with_jsonschema_on_edge_values(schema: Any) -> None:
    validator, quick = _compiled(schema)
    for value in EDGE_VALUES:
        assert quick(value) is validator.is_valid(value), (schema, value)


@settings(max_examples=300, deadline=None)
@given(value=json_values, which=st.sampled_from(range(len(SCHEMAS))))
def test_the_quick_check_agrees_with_jsonschema_on_any_json(value: Any, which: int) -> None:
    validator, quick = _compiled(SCHEMAS[which])
    assert quick(value) is validator.is_valid(value)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}},
        {"patternProperties": {"^a": {"type": "string"}}},
        {"enum": ["a", 1]},
        {"const": 1},
        {"prefixItems": [{"type": "string"}], "items": False},
        {"type": "array", "uniqueItems": True},
        {"type": "number", "multipleOf": 0.1},
        {"anyOf": [{"type": "string"}]},
        {"type": "object", "properties": {"a": {"not": {}}}},
        {"properties": {"a": {"$schema": "http://json-schema.org/draft-04/schema#"}}},
        {"type": "decimal"},
        {"minLength": 1.5},
        {"maximum": True},
        {"x-custom": 1},
    ],
)
def test_a_keyword_it_does_not_do_leaves_the_schema_to_jsonschema(schema: Any) -> None:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert schemas_cache.quick_check(schema, validator) is None


def test_another_draft_is_left_to_jsonschema() -> None:
    from jsonschema import Draft7Validator

    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}
    assert schemas_cache.quick_check(schema, Draft7Validator(schema)) is None


def _action_type(schema: Any) -> ActionType:
    return ActionType(
        pk=uuid.uuid4().int % 2**31, payload_schema=schema, updated_at=datetime.now(UTC)
    )


def test_a_valid_payload_is_not_walked_by_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    refund = _action_type(DEMO_SCHEMAS[0])
    schemas_cache.validate_payload(refund, {})  # compiled before jsonschema is barred

    def walked(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("jsonschema walked a valid payload")

    monkeypatch.setattr(Draft202012Validator, "iter_errors", walked)
    payload = {"order_id": "ORD-48213", "amount": 42.5, "currency": "EUR", "reason": "late"}
    assert schemas_cache.validate_payload(refund, payload) == []


@pytest.mark.parametrize(
    "payload",
    [
        {"order_id": "ORD-1"},
        {"order_id": "ORD-1", "amount": "ten"},
        {"order_id": "ORD-1234", "amount": -5, "currency": "BTC", "iban": "x"},
        {"order_id": "ORD-1234", "amount": True, "currency": "EUR"},
    ],
)
def test_an_invalid_payload_gets_jsonschema_s_own_errors(payload: dict[str, Any]) -> None:
    schema = DEMO_SCHEMAS[0]
    errors = schemas_cache.validate_payload(_action_type(schema), payload)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    expected = sorted(
        (
            {"loc": ["body", "payload", *e.absolute_path], "msg": e.message}
            for e in validator.iter_errors(payload)
        ),
        key=lambda e: [str(p) for p in e["loc"]],
    )
    assert errors == expected
    assert errors
