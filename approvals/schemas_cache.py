"""Compiled JSON Schema validators for action type payloads, cached per schema version."""

from __future__ import annotations

import threading
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from approvals.models import ActionType

_lock = threading.Lock()
_validators: dict[tuple[int, str], Validator] = {}
MAX_ERRORS = 20


def _validator(action_type: ActionType) -> Validator:
    key = (action_type.pk, action_type.updated_at.isoformat())
    cached = _validators.get(key)
    if cached is not None:
        return cached
    cls = validator_for(action_type.payload_schema, default=Draft202012Validator)
    validator = cls(action_type.payload_schema, format_checker=cls.FORMAT_CHECKER)
    with _lock:
        for stale in [k for k in _validators if k[0] == action_type.pk]:
            del _validators[stale]
        _validators[key] = validator
    return validator


def validate_payload(action_type: ActionType, payload: Any) -> list[dict[str, Any]]:
    """Field errors of `payload` against the type's schema, as [{"loc": [...], "msg": ...}]."""
    errors = []
    for error in _validator(action_type).iter_errors(payload):
        errors.append({"loc": ["body", "payload", *error.absolute_path], "msg": error.message})
        if len(errors) >= MAX_ERRORS:
            break
    errors.sort(key=lambda e: [str(p) for p in e["loc"]])
    return errors
