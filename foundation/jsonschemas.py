"""Whether a JSON Schema is one: checked where a schema is saved (an action type's payload
schema, an MCP tool's input schema), so that a bad one is refused there and not at every use."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for


def check_schema(schema: Any) -> str | None:
    """None if `schema` is a valid JSON Schema, else the reason it is not."""
    if not isinstance(schema, dict):
        return "a JSON Schema must be an object"
    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        return (
            f"invalid JSON Schema at {'/'.join(map(str, exc.path)) or 'top level'}: {exc.message}"
        )
    return None
