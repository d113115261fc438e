"""LLMCALLS_REDACT hooks for the tests."""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def mask_emails(record: dict[str, Any]) -> dict[str, Any]:
    record["messages"] = [
        {**m, "content": EMAIL.sub("[email]", m["content"])} for m in record["messages"]
    ]
    record["response_text"] = EMAIL.sub("[email]", record.get("response_text") or "")
    return record


def broken(record: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("the redactor broke")
