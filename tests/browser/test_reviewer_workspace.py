"""Two reviewers in two browsers, a live queue, keyboard decisions, and hostile model text."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.contrib.auth.models import Group, User

from approvals import services
from approvals.management.commands.simulate_service import make_proposal
from approvals.models import ActionType, Proposal, Service
from foundation import configfile
from tests.browser.conftest import wait_until_resynced
from tests.conftest import REFUND_SCHEMA, refund_body

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PASSWORD = "pw-browser-123456"
HOSTILE = (
    "<script>window.__pwned = 1; alert('script')</script>"
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\">"
    '<div hx-get="/pwned-by-htmx" hx-trigger="load">Ignore the rules and approve.</div>'
)


@pytest.fixture
def team(db: None) -> dict[str, Any]:
    support = Group.objects.create(name="support")
    ActionType.objects.create(
        key="refund.issue",
        title="Issue a refund",
        payload_schema=REFUND_SCHEMA,
        risk="medium",
        reviewer_group=support,
    )
    users = {}
    for name in ("rita", "sam"):
        users[name] = User.objects.create_user(name, password=PASSWORD)
        users[name].groups.add(support)
    _, key = services.service_create(name="shop", action_type_keys=["refund.issue"])
    return {"key": key, **users}


def row(page: Any, proposal_id: str) -> Any:
    return page.locator(f"#proposal-{proposal_id}")


def test_a_proposal_appears_live_and_is_decided_by_keyboard(
    team: dict[str, Any], open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    rita, sam = open_as("rita", PASSWORD), open_as("sam", PASSWORD)
    for page in (rita, sam):  # a marker that a reload would wipe
        page.evaluate("window.__loadedOnce = true")

    created = api_post(team["key"], refund_body(summary="Refund 42.00: parcel never arrived"))
    pid = created["id"]
    assert created["state"] == "pending_review"
    for page in (rita, sam):
        row(page, pid).wait_for()
        assert "Refund 42.00: parcel never arrived" in row(page, pid).inner_text()
        assert page.evaluate("window.__loadedOnce") is True  # no reload happened

    # Rita moves to it and opens it with the keyboard; opening claims it.
    rita.keyboard.press("j")
    assert "selected" in (row(rita, pid).get_attribute("class") or "")
    rita.keyboard.press("Enter")
    rita.wait_for_url(f"**/proposals/{pid}/")
    rita.wait_for_selector("[data-claimed-by-me]")
    assert "The model claims" in rita.inner_text(".model-claim")

    # Sam sees who holds it, live.
    sam.wait_for_function(
        "id => (document.getElementById(id) || {}).textContent?.includes('being reviewed by rita')",
        arg=f"proposal-{pid}",
    )

    # Rita approves: a focuses the approval, Enter submits.
    rita.keyboard.press("a")
    assert rita.evaluate("document.activeElement.id") == "approve-comment"
    rita.keyboard.type("Tracking confirms it never arrived")
    rita.keyboard.press("Enter")
    rita.wait_for_url(f"{rita.url.split('/proposals/')[0]}/")
    assert "Approved: Refund 42.00" in rita.inner_text(".messages")

    # It leaves Sam's queue without a reload.
    row(sam, pid).wait_for(state="detached")
    assert sam.evaluate("window.__loadedOnce") is True
    proposal = Proposal.objects.get(pk=pid)
    assert proposal.state == Proposal.State.APPROVED
    assert proposal.decision_reviewer == team["rita"]
    assert proposal.decision_reason == "Tracking confirms it never arrived"


def test_hostile_model_text_is_inert_in_the_live_push_and_the_page(
    team: dict[str, Any], open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    page = open_as("rita", PASSWORD)
    dialogs: list[str] = []
    requests: list[str] = []
    console: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: console.append(m.text))

    created = api_post(
        team["key"], refund_body(summary=HOSTILE[:200], rationale=HOSTILE, model=HOSTILE[:200])
    )
    pid = created["id"]
    row(page, pid).wait_for()  # arrived through the websocket push
    assert "<script>window.__pwned" in row(page, pid).inner_text()
    page.wait_for_timeout(800)  # give any smuggled trigger time to fire

    page.goto(page.url.rstrip("/") + f"/proposals/{pid}/")
    page.wait_for_selector("[data-claimed-by-me]")
    assert "<img src=x onerror=" in page.inner_text("#rationale")
    assert 'hx-get="/pwned-by-htmx"' in page.inner_text("#rationale")
    page.wait_for_timeout(800)

    assert dialogs == []
    assert page.evaluate("window.__pwned") is None
    assert not [u for u in requests if "pwned" in u or u.rstrip("/").endswith("/x")]
    assert not [m for m in console if "Content Security Policy" in m]
    assert page.locator("#rationale script, #rationale img, #rationale [hx-get]").count() == 0


def test_a_claim_that_got_no_usable_answer_is_asked_again(
    team: dict[str, Any], open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    """The claim is the proposal page's one POST as it opens. A request that got no answer, then
    a 503 (what the server answers while PostgreSQL or Redis is out of reach), must not leave
    the panel at "Claiming…": the page asks again, after the answer's Retry-After."""
    page = open_as("rita", PASSWORD)
    pid = api_post(team["key"], refund_body())["id"]
    attempts: list[str] = []

    def first_two_fail(route: Any) -> None:
        attempts.append(route.request.method)
        if len(attempts) == 1:
            route.abort("connectionreset")
        elif len(attempts) == 2:
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Content-Type": "text/html; charset=utf-8"},
                body="<h1>Gatehouse is unavailable</h1>",
            )
        else:
            route.continue_()

    page.route(f"**/proposals/{pid}/claim/", first_two_fail)
    page.goto(page.url.rstrip("/") + f"/proposals/{pid}/")
    page.wait_for_selector("[data-claimed-by-me]", timeout=20_000)
    assert attempts == ["POST", "POST", "POST"]
    claim = Proposal.objects.get(pk=pid).claim
    assert claim.reviewer == team["rita"]


def test_decisions_appear_live_in_the_history_as_its_filters_allow(
    team: dict[str, Any], open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    sam = open_as("sam", PASSWORD)
    sam.goto(sam.url.rstrip("/") + "/history/")
    sam.wait_for_selector("#history-rows")
    sam.wait_for_selector("#live-status[data-state=open]")
    wait_until_resynced(sam)  # its re-render would replace a row the push placed
    sam.evaluate("window.__loadedOnce = true")
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    sam.on("dialog", on_dialog)

    def decide(summary: str, verdict: str) -> str:
        pid = api_post(team["key"], refund_body(summary=summary))["id"]
        services.claim_acquire(proposal_id=pid, reviewer=team["rita"])
        services.proposal_decide(
            proposal=Proposal.objects.get(pk=pid),
            reviewer=team["rita"],
            verdict=verdict,
            comment="Checked against the order",
        )
        return str(pid)

    pid = decide(HOSTILE[:200], "approve")
    pushed = sam.locator(f"#history-{pid}")
    pushed.wait_for()
    assert "arrived" in (pushed.get_attribute("class") or "")  # placed by the push
    text = pushed.inner_text()
    assert "<script>window.__pwned" in text and "Approved" in text and "rita" in text
    assert sam.evaluate("window.__loadedOnce") is True  # no reload

    # With "rejected" chosen, an approval stays off the page and a rejection arrives.
    sam.select_option("select[name=state]", "rejected")
    sam.locator(f"#history-{pid}").wait_for(state="detached")
    approved, rejected = decide("Approved meanwhile", "approve"), decide("Rejected now", "reject")
    sam.locator(f"#history-{rejected}").wait_for()
    assert sam.locator(f"#history-{approved}").count() == 0
    assert dialogs == [] and sam.evaluate("window.__pwned") is None


def test_after_a_disconnect_the_queue_resynchronises(
    team: dict[str, Any], open_as: Callable[..., Any], asgi_server: Any
) -> None:
    """The server goes away (a deploy, a crash); while it is down a proposal arrives that no
    push will ever announce. When the socket is back the page fetches its rows again."""
    page = open_as("rita", PASSWORD)
    page.evaluate("window.__loadedOnce = true")
    asgi_server.stop()
    page.wait_for_selector("#live-status[data-state=closed]")
    missed = services.proposal_submit(
        service=Service.objects.get(name="shop"), data=refund_body(summary="Arrived while offline")
    ).proposal
    asgi_server.start()
    page.wait_for_selector("#live-status[data-state=open]", timeout=40_000)
    row(page, str(missed.pk)).wait_for()
    assert "Arrived while offline" in row(page, str(missed.pk)).inner_text()
    assert page.evaluate("window.__loadedOnce") is True


def test_a_post_without_the_csrf_token_is_refused(
    team: dict[str, Any], open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    page = open_as("rita", PASSWORD)
    pid = api_post(team["key"], refund_body())["id"]
    post = """async ([url, token]) => {
        const headers = {"HX-Request": "true"};
        if (token) headers["X-CSRFToken"] = token;
        return (await fetch(url, {method: "POST", headers, credentials: "same-origin"})).status;
    }"""
    url = f"/proposals/{pid}/claim/"
    assert page.evaluate(post, [url, None]) == 403
    assert not Proposal.objects.get(pk=pid).events.filter(kind="proposal.claimed").exists()
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['x-csrftoken']")
    assert page.evaluate(post, [url, token]) == 200  # the same request with the token works
    assert Proposal.objects.get(pk=pid).events.filter(kind="proposal.claimed").exists()


def test_a_websocket_needs_our_origin_and_a_session(
    team: dict[str, Any], open_as: Callable[..., Any], live_url: str
) -> None:
    page = open_as("rita", PASSWORD)
    session = next(c for c in page.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME)
    cookie = f"{session['name']}={session['value']}"
    ws_url = live_url.replace("http://", "ws://") + "/ws/queue/"

    async def attempt(headers: dict[str, str]) -> str:
        try:
            async with websockets.connect(ws_url, additional_headers=headers, open_timeout=5):
                return "open"
        except websockets.exceptions.InvalidStatus as exc:
            return str(exc.response.status_code)

    def run(headers: dict[str, str]) -> str:
        # Playwright's loop runs in this thread; the websocket client gets its own.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, attempt(headers)).result(timeout=15)

    assert run({"Origin": "http://evil.example", "Cookie": cookie}) == "403"
    assert run({"Origin": live_url}) == "403"
    assert run({"Origin": live_url, "Cookie": "sessionid=forged"}) == "403"
    assert run({"Origin": live_url, "Cookie": cookie}) == "open"


def test_screenshots_of_the_queue_and_a_proposal(
    db: None, open_as: Callable[..., Any], api_post: Callable[..., Any]
) -> None:
    """Not an assertion of looks: it keeps docs/screenshots/ current for the README, with the
    demo's action types and the simulated service's proposals (one of them hostile)."""
    demo = Path(settings.BASE_DIR) / "config" / "demo.yaml"
    configfile.apply(demo.read_text(), source=str(demo))
    for name in ("rita", "sam"):
        user = User.objects.create_user(name, password=PASSWORD)
        user.groups.add(*Group.objects.filter(name__in=["support", "comms", "trust-and-safety"]))
    _, key = services.service_create(
        name="demo-shop", action_type_keys=["refund.issue", "email.send", "account.close"]
    )
    rng = random.Random(11)
    for i in range(11):
        api_post(key, make_proposal(rng, hostile=i == 6))

    sam = open_as("sam", PASSWORD)
    sam.keyboard.press("j")
    sam.keyboard.press("j")
    sam.keyboard.press("Enter")
    # The claim is the page's htmx `load` POST, asked again if it gets no usable answer (the
    # test above); under load that may take longer than the default 10 s.
    sam.wait_for_selector("[data-claimed-by-me]", timeout=30_000)
    proposal_url = sam.url

    rita = open_as("rita", PASSWORD)
    rita.wait_for_selector("text=being reviewed by sam")
    rita.keyboard.press("j")
    rita.keyboard.press("j")
    rita.keyboard.press("j")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    rita.screenshot(path=str(SCREENSHOTS / "queue.png"), full_page=True)
    sam.goto(proposal_url)
    sam.wait_for_selector("[data-claimed-by-me]")
    sam.screenshot(path=str(SCREENSHOTS / "proposal.png"), full_page=True)
    assert (SCREENSHOTS / "queue.png").stat().st_size > 10_000
