"""Every reviewer page passes axe-core's WCAG 2.1 A and AA rules under the app's own CSP, works
from the keyboard, and fits a 390 px phone.

axe-core is vendored for the tests only (tests/browser/vendor/). The page loads it like its own
scripts: a <script src> on our origin, which the test answers from the vendored file. The
document keeps the app's real Content-Security-Policy header, so `script-src 'self'` is in
force while axe runs; Playwright's `add_script_tag(content=…)` or `(path=…)` would insert an
inline script that this CSP refuses, and `page.evaluate` of the source would bypass the policy
(DevTools evaluation is exempt), proving less."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User

from approvals import services
from approvals.management.commands.simulate_service import make_proposal
from approvals.models import ActionType, Proposal, Service
from insights import services as insights_services
from llmcalls.models import LLMCall
from tests.browser.conftest import log_in, wait_until_resynced
from tests.browser.test_insights import plant_insights_history
from tests.browser.test_reviewer_workspace import HOSTILE
from tests.evals.conftest import make_refund_set
from tests.evals.test_views import finished_runs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_URL_PATH = "/__tests__/axe.min.js"  # answered by the test; the app has no such URL
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PASSWORD = "pw-browser-123456"
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def demo(db: None) -> dict[str, Any]:
    """The demo's action types and rules with insights on four days of verdicts, a staff
    reviewer of both teams, proposals with hostile model text in the queue and the history, a
    model call, and two eval runs."""
    plant_insights_history()  # the demo's types and rules, four days of verdicts, a drift
    insights_services.insights_check()  # alert and a brake
    ada = User.objects.create_user("ada", password=PASSWORD, is_staff=True, is_superuser=True)
    sam = User.objects.create_user("sam", password=PASSWORD)
    for team in ("support", "trust-and-safety"):
        group = Group.objects.get_or_create(name=team)[0]
        ada.groups.add(group)
        sam.groups.add(group)
    service = Service.objects.get(name="demo-shop")
    service.action_types.add(*ActionType.objects.filter(key__in=["email.send", "account.close"]))
    _, key = services.api_key_create(service=service, label="a11y")
    call = LLMCall.objects.create(
        service="demo-shop",
        feature="support-refunds",
        route="refunds",
        provider="sim",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": HOSTILE}],
        response_text=HOSTILE,
        status="ok",
        latency_ms=840.0,
        input_tokens=420,
        output_tokens=60,
        cost_usd=Decimal("0.00021"),
    )
    rng = random.Random(22)
    proposals = []
    for i in range(14):
        body = make_proposal(rng, hostile=i % 4 == 1)
        if i == 0:
            body["llm_call_id"] = str(call.id)
        proposals.append(services.proposal_submit(service=service, data=body).proposal)
    pending = [p for p in proposals if p.state == Proposal.State.PENDING_REVIEW]
    assert len(pending) >= 2, [p.state for p in proposals]
    services.claim_acquire(proposal_id=pending[-1].pk, reviewer=sam)
    services.claim_acquire(proposal_id=pending[1].pk, reviewer=sam)
    services.proposal_decide(
        proposal=pending[1], reviewer=sam, verdict="reject", comment=HOSTILE[:200]
    )
    with_call = next((p for p in pending if p.llm_call_id == call.id), pending[0])
    return {
        "proposal": with_call,
        "call": call,
        "runs": finished_runs(make_refund_set()),
        "key": key,
    }


@pytest.fixture
def reviewer_page(browser: Any, live_url: str) -> Iterator[Callable[..., Any]]:
    """A logged-in page of `ada` (or the login page) at a viewport, axe ready to be loaded."""
    contexts: list[Any] = []

    def make(viewport: dict[str, int] | None = None, *, login: bool = True, **options: Any) -> Any:
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 900}, **options
        )
        contexts.append(context)
        context.route(
            f"{live_url}{AXE_URL_PATH}",
            lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"),
        )
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.csp_errors = []
        page.on(
            "console",
            lambda m: (
                page.csp_errors.append(m.text) if "Content Security Policy" in m.text else None
            ),
        )
        if login:
            log_in(page, live_url, "ada", PASSWORD)
        return page

    yield make
    for context in contexts:
        context.close()


def axe_violations(page: Any, live_url: str) -> list[dict[str, Any]]:
    """Run axe-core's WCAG 2.1 A/AA rules on the page as it is; the violations, briefly."""
    page.add_script_tag(url=f"{live_url}{AXE_URL_PATH}")
    violations: list[dict[str, Any]] = page.evaluate(
        """async (tags) => {
             const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
             return result.violations.map(v => ({
               id: v.id, impact: v.impact,
               nodes: v.nodes.slice(0, 4).map(n => n.target.join(" ") + ": " + n.failureSummary),
             }));
           }""",
        WCAG_TAGS,
    )
    return violations


def pages(demo: dict[str, Any]) -> list[str]:
    _old, new = demo["runs"]
    return [
        "/",
        f"/proposals/{demo['proposal'].pk}/",
        "/history/",
        "/insights/",
        "/insights/refund.issue/",
        "/llm/",
        f"/llm/calls/{demo['call'].pk}/",
        "/evals/",
        "/evals/sets/refunds/",
        f"/evals/runs/{new.pk}/",
        f"/evals/runs/{new.pk}/compare/",
        "/evals/prompts/refunds/",
    ]


def test_every_page_passes_axe_wcag_21_aa_under_the_apps_own_csp(
    demo: dict[str, Any], reviewer_page: Callable[..., Any], live_url: str
) -> None:
    found: dict[str, Any] = {}
    login = reviewer_page(login=False)
    response = login.goto(f"{live_url}/login/")
    assert response.headers["content-security-policy"] == settings.CONTENT_SECURITY_POLICY
    found["/login/"] = axe_violations(login, live_url)
    page = reviewer_page()
    for path in pages(demo):
        response = page.goto(f"{live_url}{path}")
        assert response.status == 200, path
        assert response.headers["content-security-policy"] == settings.CONTENT_SECURITY_POLICY
        page.wait_for_load_state("networkidle")
        found[path] = axe_violations(page, live_url)
    # axe itself ran (it defines `axe`) and nothing the page or axe did broke the policy.
    assert page.evaluate("typeof axe.run") == "function"
    assert login.csp_errors == [] and page.csp_errors == []
    failing = {path: v for path, v in found.items() if v}
    assert failing == {}, json.dumps(failing, indent=1)


def no_sideways_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"))


def within_width(page: Any, selector: str) -> bool:
    """The element lies within the phone's width. Polled: a live resync may be re-rendering
    the rows at the moment of the first look."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([selector, width]) => { const el = document.querySelector(selector);
                 if (!el) return false; const r = el.getBoundingClientRect();
                 return r.width > 0 && r.left >= 0 && r.right <= width; }""",
            arg=[selector, PHONE["width"]],
            timeout=5_000,
        )
    except PlaywrightTimeout:
        return False
    return True


def test_on_a_390px_phone_the_queue_is_cards_the_nav_collapses_and_decisions_are_in_reach(
    demo: dict[str, Any], reviewer_page: Callable[..., Any], live_url: str
) -> None:
    page = reviewer_page(PHONE)
    page.wait_for_selector("#live-status[data-state=open]", state="attached")  # in the menu
    wait_until_resynced(page)  # the page's resync after connecting re-renders the rows
    assert no_sideways_scroll(page)
    # Each proposal is a card showing its summary, type, risk, confidence, age and claim.
    cards = page.locator("#queue-rows tr[data-queue-row]")
    assert cards.count() >= 2
    for cell in (
        ".col-summary a",
        ".col-type",
        ".col-risk",
        ".col-confidence",
        ".col-age",
        ".col-claim",
    ):
        assert cards.first.locator(cell).is_visible(), cell
        assert within_width(page, f"#queue-rows tr[data-queue-row] {cell}"), cell
    claimed = page.locator("#queue-rows .claimed").first
    assert "being reviewed by sam" in claimed.inner_text() and within_width(
        page, "#queue-rows .claimed"
    )

    # The navigation collapses behind a Menu button and opens from the keyboard.
    assert not page.locator("#site-nav").is_visible()
    toggle = page.locator(".nav-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.focus()
    page.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "true"
    logout = page.get_by_role("button", name="Log out")
    assert logout.is_visible() and within_width(page, "#site-nav form.inline button")
    assert no_sideways_scroll(page)
    assert axe_violations(page, live_url) == []
    page.keyboard.press("Enter")  # closed again for the screenshot
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(SCREENSHOTS / "queue-mobile.png"), full_page=True)

    # The history reads the same way.
    page.goto(f"{live_url}/history/")
    assert page.locator("#history-rows tr[data-history-row]").count() > 10
    assert no_sideways_scroll(page)
    assert within_width(page, "#history-rows tr[data-history-row] .badge")
    assert axe_violations(page, live_url) == []

    # The proposal reads in one column and approve / reject / edit are reachable as they are.
    page.goto(f"{live_url}/proposals/{demo['proposal'].pk}/")
    page.wait_for_selector("[data-claimed-by-me]")
    assert no_sideways_scroll(page)
    for selector in (
        "#approve button[type=submit]",
        "#reject button[type=submit]",
        "#edit summary",
        "#approve-comment",
        "#reject-comment",
    ):
        page.locator(selector).scroll_into_view_if_needed()
        assert page.locator(selector).is_visible() and within_width(page, selector), selector
    assert axe_violations(page, live_url) == []
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "proposal-mobile.png"), full_page=True)
    assert page.csp_errors == []


def focus_ring(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => { const el = document.activeElement, s = getComputedStyle(el);
                 return {tag: el.tagName, id: el.id, text: (el.textContent || "").trim().slice(0, 40),
                         style: s.outlineStyle, width: parseFloat(s.outlineWidth)}; }"""
        )
    )


def test_every_action_is_reachable_by_tab_with_a_visible_focus_ring(
    demo: dict[str, Any], reviewer_page: Callable[..., Any], live_url: str
) -> None:
    page = reviewer_page()
    page.goto(f"{live_url}/proposals/{demo['proposal'].pk}/")
    page.wait_for_selector("[data-claimed-by-me]")
    page.locator("body").focus()
    reached: list[dict[str, Any]] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        ring = focus_ring(page)
        if ring["tag"] == "BODY":
            break
        reached.append(ring)
    assert reached[0]["text"] == "Skip to the content"
    names = {(r["id"] or r["text"]) for r in reached}
    for wanted in (
        "approve-comment",
        "Approve",
        "reject-comment",
        "Reject",
        "Release",
        "Log out",
        "Queue",
        "History",
    ):
        assert wanted in names, (wanted, names)
    assert any(r["tag"] == "SUMMARY" and "Edit the payload" in r["text"] for r in reached)
    unringed = [r for r in reached if r["style"] == "none" or r["width"] < 2]
    assert unringed == []


def test_live_arrivals_are_announced_politely_without_moving_focus_or_motion(
    demo: dict[str, Any],
    browser: Any,
    reviewer_page: Callable[..., Any],
    live_url: str,
    api_post: Callable[..., Any],
) -> None:
    page = reviewer_page(reduced_motion="reduce")
    page.wait_for_selector("#live-status[data-state=open]")
    wait_until_resynced(page)  # past the page's own resync after connecting
    page.locator("#queue-filters select[name=risk]").focus()
    region = page.locator("#announcer")
    assert (
        region.get_attribute("aria-live") == "polite" and region.get_attribute("role") == "status"
    )

    body = make_proposal(random.Random(5))
    body["summary"] = "Refund 12.00: <b>late</b> parcel"
    created = api_post(demo["key"], {**body, "confidence": 0.3})
    row = page.locator(f"#proposal-{created['id']}")
    row.wait_for()
    page.wait_for_function(
        "() => document.getElementById('announcer').textContent.includes('Refund 12.00')"
    )
    assert region.inner_text() == "New proposal: Refund 12.00: <b>late</b> parcel"
    assert page.evaluate("document.activeElement.getAttribute('name')") == "risk"
    assert row.evaluate("el => getComputedStyle(el).animationName") == "none"
