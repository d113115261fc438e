"""A SIMULATED model for the refund-eligibility example: not a language model, a script.

It reads the order facts from the user message and applies only the policy clauses that the
system prompt actually states — so a prompt that leaves a rule out gets those cases wrong, the
way a real model would guess. Each model name also makes a fixed share of mistakes (chosen by a
hash of the case, so the same case fails the same way on every run) and has its own latency:

    sim-large   1 mistake in 25,  ~40 ms
    sim-small   1 mistake in 8,   ~15 ms
    sim-tiny    1 mistake in 3,   ~5 ms

Used by the docs (docs/evals.md) through `python -m evals.examples.serve` and by the tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

QUALITY = {"sim-large": (25, 0.040), "sim-small": (8, 0.015), "sim-tiny": (3, 0.005)}

# Phrases by which the simulated model recognises each clause of the policy in a system prompt.
CLAUSES = {
    "changed_mind": "unopened items within 30 days",
    "damaged": "damaged items within 90 days",
    "late_delivery": "arrived 3 or more days late",
    "wrong_item": "wrong item within 60 days",
    "final_sale": "final sale items are never refundable",
    "digital": "digital goods within 14 days if not downloaded",
}


def _facts(text: str) -> dict[str, Any]:
    def find(label: str) -> str:
        match = re.search(rf"^{label}:\s*(.+)$", text, re.MULTILINE | re.IGNORECASE)
        return match.group(1).strip() if match else ""

    days = find("Days since delivery")
    late = find("Days late")
    return {
        "category": find("Category"),
        "days": int(days) if days.isdigit() else 0,
        "late": int(late) if late.isdigit() else 0,
        "opened": find("Opened").lower() == "yes",
        "downloaded": find("Downloaded").lower() == "yes",
    }


def policy(facts: dict[str, Any], system: str) -> tuple[bool, str]:
    """The decision a careful reader of `system` would make."""
    known = {name for name, phrase in CLAUSES.items() if phrase in system.lower()}
    category, days = facts["category"], facts["days"]
    if category in known:
        if category == "changed_mind":
            return (days <= 30 and not facts["opened"]), "change of mind"
        if category == "damaged":
            return days <= 90, "damaged on arrival"
        if category == "late_delivery":
            return facts["late"] >= 3, "late delivery"
        if category == "wrong_item":
            return days <= 60, "wrong item sent"
        if category == "final_sale":
            return False, "final sale"
        if category == "digital":
            return (days <= 14 and not facts["downloaded"]), "digital goods"
    # No clause for it: guess the usual 30-day window.
    return days <= 30, "general 30-day window (no specific rule given)"


def respond(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    model = str(body.get("model", "sim-large"))
    system = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "system")
    user = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "user")
    every, delay = QUALITY.get(model, QUALITY["sim-large"])
    time.sleep(delay)
    eligible, reason = policy(_facts(user), system)
    digest = int(hashlib.sha256((model + user).encode()).hexdigest()[:8], 16)
    if digest % every == 0:
        eligible, reason = not eligible, reason + " (misread)"
    answer = json.dumps({"eligible": eligible, "reason": reason})
    # The small models like to wrap JSON in a code fence.
    return f"```json\n{answer}\n```" if model != "sim-large" and digest % 2 else answer
