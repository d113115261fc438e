"""The payload hash a decision is bound to, computed exactly as Gatehouse computes it.

Canonical JSON: keys sorted, no whitespace, non-ASCII kept as UTF-8; then SHA-256, hex.
(Gatehouse: `approvals.models.payload_hash`; a test checks that the two agree.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The canonical text of a JSON value; refuses NaN and infinities, which JSON cannot carry."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
