"""The reviewer pages: permission matrix, htmx fragments, escaping, CSP and CSRF."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals import services
from approvals.models import Proposal
from foundation.errors import ApplicationError
from tests.conftest import logged_in

State = Proposal.State
HTMX = {"HX-Request": "true"}
HOSTILE = (
    '<script>alert("x")</script><img src=x onerror="alert(1)">'
    '<div hx-get="/admin/" hx-trigger="load">approve me</div>'
)


@pytest.fixture
def proposal(submit: Callable[..., Proposal]) -> Proposal:
    return submit(summary="Refund a late parcel")


def pages(p: Proposal) -> dict[str, str]:
    return {
        "queue": "/",
        "history": "/history/",
        "proposal": f"/proposals/{p.pk}/",
    }


def actions(p: Proposal) -> dict[str, tuple[str, dict[str, str]]]:
    base = f"/proposals/{p.pk}/"
    return {
        "claim": (base + "claim/", {}),
        "release": (base + "release/", {}),
        "decide": (
            base + "decide/",
            {"verdict": "reject", "comment": "no", "payload_hash": p.payload_hash},
        ),
        "comment": (base + "comment/", {"comment": "a note"}),
    }


# --- anonymous ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["queue", "history", "proposal"])
def test_anonymous_get_is_sent_to_login(proposal: Proposal, name: str) -> None:
    response = Client().get(pages(proposal)[name])
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("name", ["claim", "release", "decide", "comment"])
def test_anonymous_post_is_sent_to_login_and_changes_nothing(proposal: Proposal, name: str) -> None:
    url, data = actions(proposal)[name]
    response = Client().post(url, data)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    proposal.refresh_from_db()
    assert proposal.state == State.PENDING_REVIEW


# --- wrong method ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["queue", "history", "proposal"])
def test_posting_to_a_page_is_405(proposal: Proposal, reviewer: User, name: str) -> None:
    assert logged_in(reviewer).post(pages(proposal)[name]).status_code == 405


@pytest.mark.parametrize("name", ["claim", "release", "decide", "comment"])
def test_getting_an_action_is_405(proposal: Proposal, reviewer: User, name: str) -> None:
    assert logged_in(reviewer).get(actions(proposal)[name][0]).status_code == 405


# --- another team ---------------------------------------------------------------------------


def test_another_teams_reviewer_gets_404_for_the_proposal(
    proposal: Proposal, other_team_reviewer: User
) -> None:
    client = logged_in(other_team_reviewer)
    assert client.get(f"/proposals/{proposal.pk}/").status_code == 404
    assert client.get(f"/proposals/{proposal.pk}/", headers=HTMX).status_code == 404


@pytest.mark.parametrize("name", ["claim", "release", "decide", "comment"])
def test_another_teams_reviewer_gets_404_for_every_action(
    proposal: Proposal, other_team_reviewer: User, name: str
) -> None:
    url, data = actions(proposal)[name]
    assert logged_in(other_team_reviewer).post(url, data).status_code == 404
    proposal.refresh_from_db()
    assert proposal.state == State.PENDING_REVIEW
    assert not proposal.events.filter(kind__in=["proposal.claimed", "proposal.commented"]).exists()


def test_another_teams_queue_and_history_do_not_list_it(
    proposal: Proposal, other_team_reviewer: User, outsider: User
) -> None:
    for user in (other_team_reviewer, outsider):
        response = logged_in(user).get("/")
        assert response.status_code == 200
        assert "Refund a late parcel" not in response.content.decode()
        assert "Nothing is waiting for you" in response.content.decode()


# --- the allowed reviewer -------------------------------------------------------------------


def test_the_queue_lists_pending_proposals_with_their_confidence(
    proposal: Proposal, reviewer: User
) -> None:
    response = logged_in(reviewer).get("/")
    body = response.content.decode()
    assert response.status_code == 200
    assert f'id="proposal-{proposal.pk}"' in body
    assert "Refund a late parcel" in body and "0.91" in body
    assert "<html" in body


def test_the_queue_serves_only_rows_to_htmx(proposal: Proposal, reviewer: User) -> None:
    response = logged_in(reviewer).get("/", headers={**HTMX, "HX-Target": "queue-rows"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and f'id="proposal-{proposal.pk}"' in body


def test_a_boosted_htmx_request_for_the_queue_gets_the_full_page(
    proposal: Proposal, reviewer: User
) -> None:
    response = logged_in(reviewer).get("/", headers=HTMX)
    assert "<html" in response.content.decode()


def test_the_queue_filters_by_type_and_risk(proposal: Proposal, reviewer: User) -> None:
    client = logged_in(reviewer)
    assert "Refund a late parcel" in client.get("/?type=refund.issue").content.decode()
    assert "Refund a late parcel" not in client.get("/?type=email.send").content.decode()
    assert "Refund a late parcel" in client.get("/?risk=medium").content.decode()
    assert "Refund a late parcel" not in client.get("/?risk=high").content.decode()
    assert "Refund a late parcel" not in client.get("/?age=1h").content.decode()


def test_the_proposal_page_states_the_model_claim_not_a_verdict(
    proposal: Proposal, reviewer: User
) -> None:
    response = logged_in(reviewer).get(f"/proposals/{proposal.pk}/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "The model claims “" in body and "with confidence <strong" in body
    assert "0.91" in body and "refunds@3" in body and "gpt-4o-mini" in body
    assert "proposal.received" in body and "proposal.routed" in body
    assert 'name="payload_hash" value="' + proposal.payload_hash in body


def test_claiming_through_htmx_returns_the_claim_panel(proposal: Proposal, reviewer: User) -> None:
    response = logged_in(reviewer).post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    assert response.status_code == 200
    assert "Claimed by you" in response.content.decode()
    assert proposal.claim.reviewer == reviewer


def test_claim_held_by_someone_else_is_shown_as_such(
    proposal: Proposal, reviewer: User, second_reviewer: User
) -> None:
    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    response = logged_in(second_reviewer).post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    assert "Being reviewed by rita" in response.content.decode()
    page = logged_in(second_reviewer).get("/").content.decode()
    assert "being reviewed by rita" in page


def test_deciding_redirects_to_the_queue_with_the_state_stored(
    proposal: Proposal, reviewer: User
) -> None:
    client = logged_in(reviewer)
    client.post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/",
        {"verdict": "approve", "comment": "fine", "payload_hash": proposal.payload_hash},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    proposal.refresh_from_db()
    assert proposal.state == State.APPROVED and proposal.decision_reviewer == reviewer
    follow = client.get("/")
    assert "Approved: Refund a late parcel" in follow.content.decode()
    assert f'id="proposal-{proposal.pk}"' not in follow.content.decode()


def test_deciding_through_htmx_answers_with_a_client_redirect(
    proposal: Proposal, reviewer: User
) -> None:
    client = logged_in(reviewer)
    client.post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/",
        {"verdict": "reject", "comment": "duplicate", "payload_hash": proposal.payload_hash},
        headers=HTMX,
    )
    assert response.status_code == 200 and response["HX-Redirect"] == "/"
    proposal.refresh_from_db()
    assert proposal.state == State.REJECTED


def test_a_decision_without_a_claim_is_refused_with_a_clear_message(
    proposal: Proposal, reviewer: User
) -> None:
    response = logged_in(reviewer).post(
        f"/proposals/{proposal.pk}/decide/",
        {"verdict": "approve", "payload_hash": proposal.payload_hash},
    )
    assert response.status_code == 409
    assert "do not hold a claim" in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.state == State.PENDING_REVIEW


def test_a_bad_edit_is_shown_with_the_text_kept(proposal: Proposal, reviewer: User) -> None:
    client = logged_in(reviewer)
    client.post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/",
        {"verdict": "approve", "payload_hash": proposal.payload_hash, "edited_payload": "{oops"},
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "Not valid JSON" in body and "{oops</textarea>" in body


def test_history_lists_decided_proposals_and_searches(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    decided = submit(summary="Refund the broken kettle", external_id="TCK-77")
    submit(summary="Still waiting")
    services.claim_acquire(proposal_id=decided.pk, reviewer=reviewer)
    services.proposal_decide(proposal=decided, reviewer=reviewer, verdict="reject", comment="no")
    client = logged_in(reviewer)
    body = client.get("/history/").content.decode()
    assert "Refund the broken kettle" in body and "Still waiting" not in body
    assert "kettle" in client.get("/history/?q=KETTLE").content.decode()
    assert "kettle" in client.get("/history/?q=TCK-77").content.decode()
    assert "kettle" in client.get(f"/history/?q={decided.pk}").content.decode()
    assert "kettle" not in client.get("/history/?q=toaster").content.decode()
    assert "kettle" not in client.get("/history/?state=approved").content.decode()
    assert "kettle" in client.get("/history/?mine=1&by=reviewer").content.decode()
    rows = client.get("/history/?q=kettle", headers={**HTMX, "HX-Target": "history-rows"})
    assert "<html" not in rows.content.decode() and "kettle" in rows.content.decode()


# --- safety ---------------------------------------------------------------------------------


def test_model_text_is_escaped_in_queue_and_proposal_page(
    submit: Callable[..., Proposal], reviewer: User
) -> None:
    p = submit(summary=HOSTILE[:200], rationale=HOSTILE, model='"><script>1</script>')
    client = logged_in(reviewer)
    for url in ("/", f"/proposals/{p.pk}/"):
        body = client.get(url).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body
        assert 'hx-get="/admin/"' not in body
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body


def test_every_page_carries_a_strict_content_security_policy(
    proposal: Proposal, reviewer: User
) -> None:
    client = logged_in(reviewer)
    for url in ("/", "/history/", f"/proposals/{proposal.pk}/", "/login/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy and "object-src 'none'" in policy


def test_pages_load_no_inline_script(proposal: Proposal, reviewer: User) -> None:
    body = logged_in(reviewer).get(f"/proposals/{proposal.pk}/").content.decode()
    scripts = [chunk.split(">", 1)[0] for chunk in body.split("<script")[1:]]
    assert scripts and all(" src=" in tag for tag in scripts)
    assert "hx-on" not in body


def test_a_post_without_the_csrf_token_is_refused(proposal: Proposal, reviewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    response = client.post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    assert response.status_code == 403
    assert not proposal.events.filter(kind="proposal.claimed").exists()


def test_a_htmx_post_with_the_csrf_header_is_accepted(proposal: Proposal, reviewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    page = client.get("/").content.decode()
    token = page.split('"x-csrftoken": "', 1)[1].split('"', 1)[0]
    response = client.post(
        f"/proposals/{proposal.pk}/claim/", headers={**HTMX, "X-CSRFToken": token}
    )
    assert response.status_code == 200 and "Claimed by you" in response.content.decode()


def test_login_and_logout(reviewer: User) -> None:
    client = Client()
    response = client.post("/login/", {"username": "rita", "password": "pw-rita-123456"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_the_proposal_page_shows_the_rule_trace_that_routed_it(
    make_rule: Callable[..., object],
    refund_type: object,
    submit: Callable[..., Proposal],
    reviewer: User,
) -> None:
    make_rule("huge-refunds", action_type=refund_type, when="payload.amount > 1000.0")
    make_rule("shadow-check", when="true", outcome="reject", mode="shadow")
    p = submit()
    body = logged_in(reviewer).get(f"/proposals/{p.pk}/").content.decode()
    assert "<code>huge-refunds</code>" in body and "no_match" in body
    assert "<code>shadow-check</code>" in body and "matched → reject" in body


@pytest.mark.parametrize(
    ("edited", "named"),
    [
        ('{"order_id": "ORD-1", "amount": NaN}', "NaN is not a JSON number"),
        ('{"order_id": "ORD-1", "amount": Infinity}', "Infinity is not a JSON number"),
        ('{"order_id": "ORD-1", "amount": -1e999}', "payload.amount: -inf"),
        ('{"order_id": "ORD-\\u0000", "amount": 1}', "payload.order_id: contains the NUL"),
        ('{"order_id": "ORD-\\udfff", "amount": 1}', "payload.order_id: contains a lone surrogate"),
    ],
)
def test_an_edit_with_nan_infinity_nul_or_a_surrogate_is_refused_naming_the_field(
    proposal: Proposal, reviewer: User, edited: str, named: str
) -> None:
    client = logged_in(reviewer)
    client.post(f"/proposals/{proposal.pk}/claim/", headers=HTMX)
    response = client.post(
        f"/proposals/{proposal.pk}/decide/",
        {"verdict": "approve", "payload_hash": proposal.payload_hash, "edited_payload": edited},
    )
    assert response.status_code == 422
    assert named in response.content.decode()
    proposal.refresh_from_db()
    assert proposal.state == State.PENDING_REVIEW and proposal.final_payload is None
    assert not proposal.reviews.exists()


def test_the_decide_service_refuses_a_nan_edit(proposal: Proposal, reviewer: User) -> None:
    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    with pytest.raises(ApplicationError) as refused:
        services.proposal_decide(
            proposal=proposal,
            reviewer=reviewer,
            verdict="approve",
            edited_payload={"order_id": "ORD-1", "amount": float("nan")},
        )
    assert refused.value.status == 422 and "payload.amount" in refused.value.message
    proposal.refresh_from_db()
    assert proposal.final_payload is None


def test_history_mine_lists_every_decided_proposal_the_reviewer_reviewed(
    submit: Callable[..., Proposal],
    shop: Any,
    make_rule: Callable[..., Any],
    refund_type: Any,
    reviewer: User,
    second_reviewer: User,
) -> None:
    """?mine=1 walks the rows selectors.REVIEWABLE names: one decided by a reviewer, and one
    whose first of two approvals was the reviewer's before the service cancelled it."""
    make_rule("four-eyes", action_type=refund_type, when="payload.amount > 500.0",
              outcome="review", approvals_required=2)  # fmt: skip
    mine = submit(summary="Decided by me")
    theirs = submit(summary="Decided by the other")
    halfway = submit(
        summary="Cancelled after my approval",
        payload={"order_id": "ORD-9", "amount": 900.0, "currency": "EUR"},
    )
    for proposal, who in ((mine, reviewer), (theirs, second_reviewer), (halfway, reviewer)):
        services.claim_acquire(proposal_id=proposal.pk, reviewer=who)
        services.proposal_decide(proposal=proposal, reviewer=who, verdict="approve")
    services.proposal_cancel(service=shop.service, proposal_id=halfway.pk, reason="moot")
    body = logged_in(reviewer).get("/history/?mine=1").content.decode()
    assert "Decided by me" in body and "Cancelled after my approval" in body
    assert "Decided by the other" not in body


def test_history_search_gives_the_same_page_by_the_latest_rows_or_by_the_index(
    shop: Any,
    refund_type: Any,
    reviewer: User,
    outsider: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A common word fills the page from the latest rows (selectors.SEARCH_FIRST, then
    SEARCH_RECENT), a rare word's matches are all found by the trigram index (SEARCH_RARE), one
    between is found by the index and sorted: each gives what the plain search gives, alone and
    with ?state= (which orders by the state first)."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals import selectors

    now = timezone.now()
    summaries = ["Rare kettle", "Common toaster", "Common Kettle"] + ["common toaster"] * 9
    made = []
    for age, summary in enumerate(reversed(summaries)):
        made.append(
            Proposal.objects.create(
                service=shop.service,
                action_type=refund_type,
                payload={"amount": 1},
                payload_hash="x",
                confidence=0.5,
                summary=summary,
                external_id=f"T-{age}",
                state="rejected" if age % 3 else "executed",
                decision_outcome="reject" if age % 3 else "approve",
                decided_by="reviewer",
                updated_at=now - timedelta(minutes=age),
            )
        )

    def page(q: str, state: str, after: str = "") -> tuple[list[str], str]:
        filters = selectors.HistoryFilters(q=q, state=state, after=after)
        found = selectors.history_for_reviewer(user=reviewer, filters=filters, limit=3)
        return [p.summary + "/" + p.external_id for p in found.rows], found.next_cursor

    newest_first = sorted(made, key=lambda p: p.updated_at, reverse=True)
    words = ("toaster", "KETTLE", "rare", "T-11", str(made[4].pk), "nothing")
    ways = itertools.product((0, 4), (0, 2), (2, 6), ("", "rejected"), words)
    for first, rare, recent, state, q in ways:
        monkeypatch.setattr(selectors, "SEARCH_FIRST", first)
        monkeypatch.setattr(selectors, "SEARCH_RARE", rare)
        monkeypatch.setattr(selectors, "SEARCH_RECENT", recent)
        wanted = [
            f"{p.summary}/{p.external_id}"
            for p in newest_first
            if (q.upper() in p.summary.upper() or p.external_id == q or str(p.pk) == q)
            and state in ("", p.state)
        ]
        got, cursor = page(q, state)
        while cursor:
            more, cursor = page(q, state, cursor)
            got += more
        assert got == wanted, (first, rare, recent, state, q)
    nothing = selectors.history_for_reviewer(user=outsider, filters=selectors.HistoryFilters(q="a"))
    assert nothing.rows == []  # no type visible: no statement to run


def test_history_by_state_pages_through_that_states_proposals_latest_change_first(
    shop: Any, refund_type: Any, reviewer: User
) -> None:
    """?state= reads one state as a range of one value ordered by it (selectors, for the
    planner): the pages hold exactly that state's proposals, latest change first."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals import selectors

    now = timezone.now()
    states = ["rejected", "executed", "rejected", "expired", "rejected", "failed", "pending_review"]
    made = [
        Proposal.objects.create(
            service=shop.service,
            action_type=refund_type,
            payload={"amount": 1},
            payload_hash="x",
            confidence=0.5,
            summary=f"S{age:02}-{state}",
            state=state,
            updated_at=now - timedelta(minutes=age // 2),  # two at each instant: ties by id
        )
        for age, state in enumerate(states * 2)
    ]
    for state in ("rejected", "failed", ""):
        wanted = sorted(
            (p for p in made if p.state == (state or p.state) and p.state != "pending_review"),
            key=lambda p: (p.updated_at, p.pk),
            reverse=True,
        )
        got: list[Proposal] = []
        cursor = ""
        while True:
            page = selectors.history_for_reviewer(
                user=reviewer, filters=selectors.HistoryFilters(state=state, after=cursor), limit=3
            )
            got += page.rows
            cursor = page.next_cursor
            if not cursor:
                break
        assert [p.pk for p in got] == [p.pk for p in wanted], state
    response = logged_in(reviewer).get("/history/?state=rejected")
    body = response.content.decode()
    assert response.status_code == 200
    assert all((p.summary in body) == (p.state == "rejected") for p in made)
