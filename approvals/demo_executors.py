"""The executor the demo's action types use: it records the effect in the log and succeeds."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("gatehouse.demo")


def record(
    *, proposal_id: str, action_type: str, payload: dict[str, Any], **_: Any
) -> dict[str, Any]:
    log.info("demo executor: %s %s %s", action_type, proposal_id, payload)
    return {"status": "done"}
