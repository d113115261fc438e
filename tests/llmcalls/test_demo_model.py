"""The demo's model path: the simulated service asks the simulated model through the proxy, each
proposal links its logged call, and reviewers' verdicts become an eval set that is run.

Real HTTP all the way: the simulated model (`simulate_provider`'s server) and the app under
uvicorn on loopback, the official openai client in `simulate_service`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

from approvals import demo_model, services
from approvals.management.commands import seed_demo
from approvals.models import Proposal
from evals.models import EvalCase, EvalRun
from llmcalls import routing
from llmcalls.management.commands.simulate_provider import make_server
from llmcalls.models import LLMCall, ModelPrice

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_the_demo_service_asks_its_model_through_the_proxy_and_its_verdicts_are_evaluated(
    live_app: str, model_url: str, settings: Any, tmp_path: Path
) -> None:
    assert seed_demo.DEMO_FILE.exists()  # read from the repository, not from BASE_DIR below
    settings.BASE_DIR = tmp_path  # seed_demo writes .demo-key there
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    out = StringIO()
    call_command("seed_demo", model_url=model_url, stdout=out)
    match = re.search(r"Demo service key:\s+(\S+)", out.getvalue())
    assert match
    # The seeded prices do not survive a transactional test's flush: the demo's models again.
    for name in ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1"):
        ModelPrice.objects.create(
            model=name,
            input_per_mtok=1,
            output_per_mtok=4,
            effective_from=timezone.now().date() - timedelta(days=1),
        )
    routing.forget()
    call_command(
        "simulate_service",
        url=live_app,
        key=match.group(1),
        count=8,
        rate=200,
        seed=11,
        hostile=0.0,
        drift_after=0,
        wait_ready=5,
        stdout=StringIO(),
    )

    proposals = list(Proposal.objects.all())
    assert len(proposals) == 8
    calls = {call.pk: call for call in LLMCall.objects.all()}
    assert len(calls) == 8
    for proposal in proposals:
        call = calls[proposal.llm_call_id]  # every proposal names the call behind it
        assert call.status == "ok" and call.service == "demo-shop"
        assert call.feature == proposal.feature
        assert call.model == proposal.model
        assert call.cost_usd is not None and call.cost_usd > Decimal(0)
        assert proposal.external_id in call.messages[-1]["content"]

    reviewer = User.objects.get(username="reviewer")
    pending = [p for p in proposals if p.state == Proposal.State.PENDING_REVIEW]
    assert pending
    for proposal in pending:
        services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
        services.proposal_decide(proposal=proposal, reviewer=reviewer, verdict="approve")
    # Large refunds need a second reviewer (four-eyes): those are not decided yet.
    decided = Proposal.objects.filter(pk__in=[p.pk for p in pending]).exclude(
        state=Proposal.State.PENDING_REVIEW
    )
    assert decided.exists()
    call_command("evals", "harvest", "support-drafts", stdout=StringIO())
    assert EvalCase.objects.count() == decided.count()
    call_command(
        "evals", "run", "support-drafts", "--prompt", "support-drafts@production", stdout=StringIO()
    )
    run = EvalRun.objects.get()
    assert run.status == "finished" and run.n_cases == EvalCase.objects.filter(split="dev").count()
    assert run.accuracy == 1.0  # the reviewer approved what the model proposed
