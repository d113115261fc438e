"""The demo end to end: the simulated service asks the simulated model through the proxy, each
proposal links its logged call, reviewers' verdicts become an eval set that is run, and every
page the README shows is screenshotted from that data (docs/screenshots/).

Real HTTP all the way: the simulated model (`simulate_provider`'s server) on loopback, the app
under uvicorn (tests/browser/conftest.py), the official openai client in `simulate_service`,
chromium for the pages.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from approvals import services
from approvals.management.commands import seed_demo
from approvals.models import Proposal
from evals.models import EvalCase, EvalRun
from llmcalls.models import LLMCall, ModelPrice

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_the_demo_service_asks_its_model_through_the_proxy_and_its_verdicts_are_evaluated(
    live_url: str, browser: Any, demo_model_url: str, settings: Any, tmp_path: Path
) -> None:
    assert seed_demo.DEMO_FILE.exists()  # read from the repository, not from BASE_DIR below
    settings.BASE_DIR = tmp_path  # seed_demo writes .demo-key there
    out = StringIO()
    call_command("seed_demo", model_url=demo_model_url, stdout=out)
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
    call_command(
        "simulate_service",
        url=live_url,
        key=match.group(1),
        count=24,
        rate=200,
        seed=11,
        hostile=0.0,
        drift_after=0,
        wait_ready=5,
        stdout=StringIO(),
    )

    proposals = list(Proposal.objects.all())
    assert len(proposals) == 24
    calls = {call.pk: call for call in LLMCall.objects.all()}
    assert len(calls) == 24
    for proposal in proposals:
        assert proposal.llm_call_id is not None  # every proposal names the call behind it
        call = calls[proposal.llm_call_id]
        assert call.status == "ok" and call.service == "demo-shop"
        assert call.feature == proposal.feature
        assert call.model == proposal.model
        assert call.cost_usd is not None and call.cost_usd > Decimal(0)
        assert proposal.external_id in call.messages[-1]["content"]

    reviewer = User.objects.get(username="reviewer2")  # in every team (emails are comms')
    pending = [p for p in proposals if p.state == Proposal.State.PENDING_REVIEW]
    assert pending
    for n, proposal in enumerate(pending):
        services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
        if n % 3 == 2:
            services.proposal_decide(
                proposal=proposal, reviewer=reviewer, verdict="reject", comment="Not our policy."
            )
        else:
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
    cases = list(EvalCase.objects.filter(split="dev"))
    assert run.status == "finished" and run.n_cases == len(cases)
    # The model recommends every action it proposes: it is right where the reviewer approved.
    approved = [c for c in cases if c.ideal["verdict"] == "approve"]
    assert run.n_correct == len(approved) < len(cases)

    pages = {
        "history": "/history/",
        "model-calls": "/llm/",
        "model-call": f"/llm/calls/{proposals[0].llm_call_id}/",
        "proposal-model-call": f"/proposals/{proposals[0].pk}/",
        "evals": "/evals/",
        "eval-run": f"/evals/runs/{run.pk}/",
        "admin": "/admin/",
        "api-docs": "/api/v1/docs",
    }
    errors = screenshot_pages(
        browser, live_url, User.objects.get(username="admin"), settings, pages
    )
    assert not errors, errors


def screenshot_pages(
    browser: Any, base_url: str, user: User, settings: Any, pages: dict[str, str]
) -> list[str]:
    """Keeps docs/screenshots/ current for the README with the demo's own data; returns any
    failed response or console error."""
    session = Client()
    session.force_login(user)
    cookie = session.cookies[settings.SESSION_COOKIE_NAME].value
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base_url}]
        )
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        for name, path in pages.items():
            response = page.goto(f"{base_url}{path}")
            if response is None or response.status != 200:
                errors.append(f"{path}: {response.status if response else 'no response'}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
    return errors
