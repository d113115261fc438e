"""The demo's model path: the simulated service asks the simulated model through the proxy, each
proposal links its logged call, and reviewers' verdicts become an eval set that is run.

Real HTTP all the way: the simulated model (`simulate_provider`'s server) and the app under
uvicorn on loopback, the official openai client in `simulate_service`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from approvals import demo_model
from llmcalls.management.commands.simulate_provider import make_server

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def model_url() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, latency=(0.0, 0.01))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_simulated_model_drafts_the_same_proposal_for_the_same_ticket() -> None:
    import random

    ticket = demo_model.ticket(random.Random(4))
    reply = json.loads(demo_model.answer([{"role": "user", "content": json.dumps(ticket)}]))
    assert reply == demo_model.draft(ticket)
    assert reply["feature"] == demo_model.KINDS[ticket["kind"]]
    assert reply["external_id"] == ticket["ticket"] and reply["verdict"] == "approve"
    assert "error" in json.loads(demo_model.answer([{"role": "user", "content": "hello"}]))
