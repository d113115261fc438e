"""A callable executor for the tests, imported by the worker process by its dotted path."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def flaky_write(*, payload: dict[str, Any], idempotency_key: str, **_: Any) -> dict[str, Any]:
    """Fails the first time for a key, then writes the key to the file named by order_id."""
    effect = Path(payload["order_id"])
    marker = effect.with_suffix(".tried")
    if not marker.exists():
        marker.write_text("1")
        raise ConnectionError("the first try always fails")
    effect.write_text(idempotency_key)
    return {"written": str(effect)}
