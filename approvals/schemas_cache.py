"""Compiled JSON Schema validators for action type payloads, cached per schema version.

jsonschema walks a schema by evolving a validator (and a reference resolver) for every subschema
it descends into: about a quarter of a millisecond for a four-field payload, on every submit.
Most payloads are valid, so a schema made only of the common keywords also gets a quick check, a
tree of closures built once (`_quick`), that says whether a payload is valid; when it says no —
or when the schema uses any keyword it does not know — jsonschema walks the payload as before and
its errors are the answer. The quick check therefore never decides what is wrong, only that
nothing is: each keyword below does what jsonschema's own function for it does (jsonschema
/_keywords.py, Draft 2020-12's type checker), and tests/approvals/test_schemas_cache.py holds
the two to the same verdict.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sized
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from approvals.models import ActionType

Check = Callable[[Any], bool]

_lock = threading.Lock()
_validators: dict[tuple[int, str], tuple[Validator, Check | None]] = {}
MAX_ERRORS = 20


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Draft 2020-12's type checker; "number" is narrower here (jsonschema takes any numbers.Number,
# which a parsed JSON body never holds beyond int and float): a narrower check only sends more
# payloads to jsonschema.
_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}
# Keywords that only annotate: no instance is ever invalid because of them.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "$comment",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


class _Unsupported(Exception):
    """The schema uses something the quick check does not do: jsonschema alone validates."""


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Unsupported


def _bound(value: Any) -> int | float:
    if _is_number(value):
        return value  # type: ignore[no-any-return]
    raise _Unsupported


def _keyword_check(name: str, value: Any, schema: dict[str, Any], formats: Any) -> Check | None:
    """The check of one keyword, as jsonschema's function of that name decides it."""
    if name in _ANNOTATIONS:
        return None
    if name == "type":
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or any(n not in _TYPES for n in names):
            raise _Unsupported
        tests = [_TYPES[n] for n in names]
        if len(tests) == 1:
            return tests[0]
        return lambda v: any(t(v) for t in tests)
    if name == "properties":
        if not isinstance(value, dict):
            raise _Unsupported
        fields = [(key, _quick(sub, formats)) for key, sub in value.items()]

        def properties(v: Any) -> bool:
            if isinstance(v, dict):
                for key, check in fields:
                    if key in v and not check(v[key]):
                        return False
            return True

        return properties
    if name == "required":
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise _Unsupported
        keys = list(value)
        return lambda v: not isinstance(v, dict) or all(k in v for k in keys)
    if name == "additionalProperties":
        known = frozenset(schema.get("properties", {}))
        if value is False:
            return lambda v: not isinstance(v, dict) or known.issuperset(v)
        extra = _quick(value, formats)
        return lambda v: (
            not isinstance(v, dict)
            or all(extra(item) for key, item in v.items() if key not in known)
        )
    if name in ("enum", "const"):
        # Strings only: jsonschema's `equal` of two strings is `==`; any other member (where
        # 1 and True, 1 and 1.0 differ) leaves the schema to jsonschema.
        members = value if name == "enum" else [value]
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise _Unsupported
        allowed = frozenset(members)
        return lambda v: isinstance(v, str) and v in allowed
    if name == "minimum":
        low = _bound(value)
        return lambda v: not _is_number(v) or not v < low
    if name == "maximum":
        high = _bound(value)
        return lambda v: not _is_number(v) or not v > high
    if name == "exclusiveMinimum":
        low = _bound(value)
        return lambda v: not _is_number(v) or not v <= low
    if name == "exclusiveMaximum":
        high = _bound(value)
        return lambda v: not _is_number(v) or not v >= high
    if name in ("minLength", "minItems", "minProperties"):
        at_least, kind = _count(value), _LENGTH_KINDS[name]
        return lambda v: not isinstance(v, kind) or not len(v) < at_least
    if name in ("maxLength", "maxItems", "maxProperties"):
        at_most, kind = _count(value), _LENGTH_KINDS[name]
        return lambda v: not isinstance(v, kind) or not len(v) > at_most
    if name == "pattern":
        if not isinstance(value, str):
            raise _Unsupported
        try:
            search = re.compile(value).search
        except re.error:
            raise _Unsupported from None
        return lambda v: not isinstance(v, str) or search(v) is not None
    if name == "format":
        if formats is None:
            return None
        if not isinstance(value, str):
            raise _Unsupported
        return lambda v: formats.conforms(v, value)  # the validator's own format checker
    if name == "items":
        if "prefixItems" in schema:
            raise _Unsupported
        each = _quick(value, formats)
        return lambda v: not isinstance(v, list) or all(each(item) for item in v)
    raise _Unsupported


_LENGTH_KINDS: dict[str, type[Sized]] = {
    "minLength": str,
    "maxLength": str,
    "minItems": list,
    "maxItems": list,
    "minProperties": dict,
    "maxProperties": dict,
}


def _quick(schema: Any, formats: Any) -> Check:
    """A check of `schema` (a subschema: no `$schema` of its own), or _Unsupported."""
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise _Unsupported
    checks = [
        check
        for name, value in schema.items()
        if (check := _keyword_check(name, value, schema, formats)) is not None
    ]
    if len(checks) == 1:
        return checks[0]

    def every(v: Any) -> bool:
        # A loop, not all() over a generator: a third of the check's time for a small payload.
        for check in checks:  # noqa: SIM110
            if not check(v):
                return False
        return True

    return every


def quick_check(schema: Any, validator: Validator) -> Check | None:
    """The quick check of a Draft 2020-12 `schema` (the one `validator` was built for), or None
    when it uses a keyword or a draft the quick check does not do."""
    if type(validator) is not Draft202012Validator:
        return None
    root = schema
    if isinstance(schema, dict) and "$schema" in schema:
        root = {k: v for k, v in schema.items() if k != "$schema"}
    try:
        return _quick(root, validator.format_checker)
    except _Unsupported:
        return None


def _validator(action_type: ActionType) -> tuple[Validator, Check | None]:
    key = (action_type.pk, action_type.updated_at.isoformat())
    cached = _validators.get(key)
    if cached is not None:
        return cached
    schema = action_type.payload_schema
    cls = validator_for(schema, default=Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    compiled = (validator, quick_check(schema, validator))
    with _lock:
        for stale in [k for k in _validators if k[0] == action_type.pk]:
            del _validators[stale]
        _validators[key] = compiled
    return compiled


def validate_payload(action_type: ActionType, payload: Any) -> list[dict[str, Any]]:
    """Field errors of `payload` against the type's schema, as [{"loc": [...], "msg": ...}]."""
    validator, quick = _validator(action_type)
    if quick is not None and quick(payload):
        return []
    errors = []
    for error in validator.iter_errors(payload):
        errors.append({"loc": ["body", "payload", *error.absolute_path], "msg": error.message})
        if len(errors) >= MAX_ERRORS:
            break
    errors.sort(key=lambda e: [str(p) for p in e["loc"]])
    return errors
