"""/insights/ in a real browser under the strict CSP: the charts draw, and the screenshot in
docs/screenshots/insights.png is taken from a planted history with a silent model update."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone

from approvals import services
from approvals.models import ActionType, Proposal, payload_hash
from foundation import configfile
from insights import services as insights_services
from insights.models import AuditSample, TypeSettings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "pw-browser-123456"
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


def plant_insights_history() -> None:
    """Four days of refunds. Until 20 hours ago reviewers agree more often the surer the model
    is; then a silent update (same model name and prompt version) makes gpt-4o-mini worse below
    0.95 confidence, where the rules auto-approve from 0.9. A second model appears 2 days ago."""
    demo = Path(settings.BASE_DIR) / "config" / "demo.yaml"
    configfile.apply(demo.read_text(), source=str(demo))
    refunds = ActionType.objects.get(key="refund.issue")
    service, _ = services.service_create(name="demo-shop", action_type_keys=["refund.issue"])
    TypeSettings.objects.create(action_type=refunds, audit_fraction=0.1, error_target=0.05)
    rng = random.Random(8)
    now = timezone.now()
    rows, audited = [], []
    for i in range(1400):
        at = now - timedelta(days=4) + timedelta(minutes=rng.uniform(0, 4 * 24 * 60 - 5))
        after = at > now - timedelta(hours=20)
        model = "gpt-4.1" if at > now - timedelta(days=2) and rng.random() < 0.15 else "gpt-4o-mini"
        confidence = round(min(0.99, max(0.4, rng.betavariate(7, 1.6))), 2)
        p_agree = 0.998 if confidence >= 0.96 else 0.5 + 0.5 * confidence
        if after and model == "gpt-4o-mini" and confidence < 0.95:
            p_agree *= 0.7
        agree = rng.random() < p_agree
        kind = "agreed" if agree else rng.choice(["edited", "rejected"])
        payload = {"order_id": f"ORD-{i}", "amount": 20.0, "currency": "EUR"}
        proposal = Proposal(
            service=service,
            action_type=refunds,
            payload=payload,
            payload_hash=payload_hash(payload),
            final_payload={**payload, "amount": 10.0} if kind == "edited" else None,
            confidence=confidence,
            summary=f"Refund {i}",
            model=model,
            prompt_version="refunds@7",
            state="rejected" if kind == "rejected" else "approved",
            decision_outcome="reject" if kind == "rejected" else "approve",
            decided_by="reviewer",
            decided_at=at,
            created_at=at,
            updated_at=at,
        )
        rows.append(proposal)
        if 0.9 <= confidence < 0.95 and after:
            audited.append(proposal)
    Proposal.objects.bulk_create(rows)
    AuditSample.objects.bulk_create(
        AuditSample(proposal=p, action_type=refunds, fraction=0.1, rule="small refunds")
        for p in audited
    )


def test_the_insights_page_draws_its_charts_and_is_screenshotted(
    db: None, browser: Any, live_url: str
) -> None:
    plant_insights_history()
    result = insights_services.insights_check()
    assert len(result.alerts) == 1  # the silent update on gpt-4o-mini
    assert len(result.brakes) == 1
    admin = User.objects.create_superuser("ada", password=PASSWORD)
    admin.groups.add(*Group.objects.all())

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.goto(f"{live_url}/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_url}/insights/refund.issue/")
    page.wait_for_selector("#agreement-chart")
    # Chart.js marks the canvas it drew on; a CSP violation would leave it untouched.
    page.wait_for_function(
        "() => window.Chart && Chart.getChart('agreement-chart') && Chart.getChart('calibration-chart')"
    )
    assert page.locator("#insight-banner").is_visible()
    assert page.locator("text=Brake engaged").first.is_visible()
    assert errors == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)
    assert (SCREENSHOTS / "insights.png").stat().st_size > 20_000
    context.close()


def test_drafting_a_rule_from_the_page(db: None, browser: Any, live_url: str) -> None:
    plant_insights_history()
    admin = User.objects.create_superuser("ada", password=PASSWORD)
    admin.groups.add(*Group.objects.all())
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{live_url}/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_url}/insights/refund.issue/")
    page.click("text=Draft a rule")
    page.wait_for_selector("#drafts")
    assert page.locator("#drafts .tag", has_text="shadow").is_visible()
    context.close()
