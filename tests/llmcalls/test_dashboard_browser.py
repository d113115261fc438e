"""The /llm/ page in a real browser under a strict Content-Security-Policy: the chart is drawn."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llmcalls import client as llm
from tests.llmcalls.conftest import MESSAGES
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_the_cost_chart_draws_under_script_src_self(
    live_app: str,
    fake: FakeProvider,
    make_route: Callable[..., None],
    prices: None,
    settings: Any,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    make_route("support", "primary/ok")
    make_route("triage", "primary/small")
    llm.complete(feature="support", messages=MESSAGES)
    llm.complete(feature="triage", messages=MESSAGES)
    staff = User.objects.create_user("sam", is_staff=True)
    session = Client()
    session.force_login(staff)
    cookie = session.cookies[settings.SESSION_COOKIE_NAME].value

    violations: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_app}]
            )
            page = context.new_page()

            def with_csp(route: Any) -> None:
                response = route.fetch()
                headers = {**response.headers, "content-security-policy": CSP}
                route.fulfill(response=response, headers=headers)

            page.route(f"{live_app}/llm/", with_csp)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{live_app}/llm/")
            page.wait_for_function("() => window.Chart && Chart.getChart('llm-cost-chart')")
            datasets = page.evaluate(
                "() => Chart.getChart('llm-cost-chart').data.datasets.map(d => d.label)"
            )
            drawn = page.evaluate(
                "() => document.getElementById('llm-cost-chart').toDataURL().length"
            )
        finally:
            browser.close()

    assert datasets == ["support", "triage"]
    assert drawn > 5000  # a blank canvas encodes to a few hundred bytes
    assert violations == []
