"""The prompt page in a real browser under a strict Content-Security-Policy: the chart is drawn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from evals import services
from evals.models import EvalResult, EvalRun, EvalSet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

APP_PORT = 18520  # ours; llmcalls' live app has its own
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def live_app() -> Iterator[str]:
    import uvicorn

    from config.asgi import application

    config = uvicorn.Config(
        application, host="127.0.0.1", port=APP_PORT, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{APP_PORT}"
    server.should_exit = True
    thread.join(timeout=5)


def test_the_accuracy_chart_draws_under_script_src_self(
    live_app: str, refund_set: EvalSet, settings: Any
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    cases = list(refund_set.cases.filter(split="dev"))
    for number, wrong in ((1, 12), (2, 6), (2, 4)):
        run = EvalRun.objects.create(
            eval_set=refund_set,
            prompt_version=services.prompt_resolve(ref=f"refunds@{number}"),
            route="evals-large",
            scorer="label",
        )
        EvalResult.objects.bulk_create(
            EvalResult(run=run, case=c, passed=i >= wrong) for i, c in enumerate(cases)
        )
        services.run_finish(run=run)
    session = Client()
    session.force_login(User.objects.create_user("sam", is_staff=True))
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
                route.fulfill(
                    response=response,
                    headers={**response.headers, "content-security-policy": CSP},
                )

            page.route(f"{live_app}/evals/**", with_csp)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{live_app}/evals/prompts/refunds/")
            page.wait_for_function("() => window.Chart && Chart.getChart('ev-accuracy-chart')")
            series = page.evaluate(
                "() => Chart.getChart('ev-accuracy-chart').data.datasets"
                ".map(d => [d.label, d.data.map(p => p.y)])"
            )
            drawn = page.evaluate(
                "() => document.getElementById('ev-accuracy-chart').toDataURL().length"
            )
        finally:
            browser.close()

    assert series == [
        ["refunds dev · v1 on evals-large", [75.0]],
        ["refunds dev · v2 on evals-large", [87.5, 91.67]],
    ]
    assert drawn > 5000  # a blank canvas encodes to a few hundred bytes
    assert violations == []
