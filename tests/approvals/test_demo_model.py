"""The demo's simulated support model (approvals/demo_model.py): a script, deterministic per
ticket. The whole path through the proxy is in tests/browser/test_demo.py."""

from __future__ import annotations

import json
import random

from approvals import demo_model


def test_the_simulated_model_drafts_the_same_proposal_for_the_same_ticket() -> None:
    ticket = demo_model.ticket(random.Random(4))
    reply = json.loads(demo_model.answer([{"role": "user", "content": json.dumps(ticket)}]))
    assert reply == demo_model.draft(ticket)
    assert reply["feature"] == demo_model.KINDS[ticket["kind"]]
    assert reply["external_id"] == ticket["ticket"] and reply["verdict"] == "approve"


def test_the_simulated_model_answers_anything_but_a_ticket_with_an_error() -> None:
    assert "error" in json.loads(demo_model.answer([{"role": "user", "content": "hello"}]))
    assert "error" in json.loads(demo_model.answer([]))
