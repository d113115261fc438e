"""schemathesis hooks for tests/approvals/test_openapi.py (loaded by the CLI from this path).

Three facts of a deployment that no document can state, given to the fuzzer the way one gives it
real ids: which action types exist (the document says any other is a 422), that an
`llm_call_id` must name a model call the service made (any other is a 422), and that an
Idempotency-Key reused with another body is a 422 by design. Negative cases are left alone."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import schemathesis

# An action type of the test deployment whose payload schema takes any object.
OPEN_ACTION_TYPE = "note.add"


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if case.method != "POST" or case.operation.path != "/api/v1/proposals":
        return case
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("action_type"), str):
        body["action_type"] = OPEN_ACTION_TYPE
    if isinstance(body, dict):
        # A random id names no call of this service; the fuzzer has no real one to give.
        body.pop("llm_call_id", None)
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key:
        # The same body keeps the same key (a replay, answered 200); another body gets another.
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        case.headers["Idempotency-Key"] = f"{key[:200]}-{digest}"
    return case
