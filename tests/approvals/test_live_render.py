"""The live update of a new proposal is rendered from the object the submit inserted, not read
back (approvals/events.py, render_new): it must be the HTML a read-back renders and the queue
page shows for the same row."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from approvals import events, services
from approvals.models import ActionType, Proposal
from tests.conftest import logged_in, refund_body

pytestmark = pytest.mark.django_db(transaction=True)
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"><b hx-get="/x">'


def pushed_on_submit(shop: Any, action_type: ActionType, **overrides: Any) -> tuple[Any, str]:
    """Submit through the API as a service does; returns (the proposal, the pushed HTML)."""
    layer = get_channel_layer()
    group = events.group_for_action_type(action_type.pk)
    events.mark_listening([action_type.pk])

    async def submit_and_listen() -> tuple[Any, dict[str, Any]]:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            response = await database_sync_to_async(shop.post_json)(
                "/api/v1/proposals", refund_body(**overrides)
            )
            return response, await asyncio.wait_for(layer.receive(channel), timeout=3)
        finally:
            await layer.group_discard(group, channel)

    response, message = asyncio.run(submit_and_listen())
    assert response.status_code == 201, response.content
    return Proposal.objects.get(pk=response.json()["id"]), message["html"]


def page_row(reviewer: User, proposal: Proposal) -> str:
    response = logged_in(reviewer).get(
        "/", headers={"HX-Request": "true", "HX-Target": "queue-rows"}
    )
    assert response.status_code == 200
    match = re.search(
        rf'<tr id="proposal-{proposal.pk}".*?</tr>', response.content.decode(), re.DOTALL
    )
    assert match, "the row is not on the queue page"
    return match.group(0)


@pytest.mark.parametrize(
    "shape",
    ["plain", "hostile text, review SLA, requested_by", "four-eyes", "four-eyes by a rule"],
)
def test_a_new_proposals_push_is_what_a_read_back_and_the_page_render(
    shop: Any, refund_type: ActionType, reviewer: User, make_rule: Any, shape: str
) -> None:
    overrides: dict[str, Any] = {}
    if shape.startswith("hostile"):
        refund_type.review_sla = timedelta(minutes=30)
        refund_type.save()
        overrides = {
            "summary": HOSTILE[:200],
            "rationale": HOSTILE,
            "metadata": {"requested_by": "someone-else"},
            "confidence": 0.123456,
        }
    elif shape == "four-eyes":
        refund_type.approvals_required = 2
        refund_type.save()
    elif shape == "four-eyes by a rule":
        make_rule(
            "big refunds need two",
            when="payload.amount > 10.0",
            outcome="review",
            approvals_required=2,
        )

    proposal, pushed = pushed_on_submit(shop, refund_type, **overrides)

    assert proposal.state == Proposal.State.PENDING_REVIEW
    read_back = events.render_update(proposal.pk)
    assert read_back is not None
    assert pushed == read_back["html"]
    row = page_row(reviewer, proposal)
    assert "hx-swap-oob" not in row
    assert row in pushed.replace(' hx-swap-oob="true"', "", 1)  # the row comes first
    if shape.startswith("hostile"):
        assert "<script>" not in pushed and "&lt;script&gt;" in pushed
        assert "due in" in pushed
    if shape.startswith("four-eyes"):
        assert "0 of 2 approvals" in pushed


def test_a_submits_broadcast_reads_nothing_back(shop: Any, refund_type: ActionType) -> None:
    """The submit holds what the row shows; reading the proposal, its claim and its reviews
    back was most of the broadcast's cost (bench/README.md, live_latency.py --load)."""
    events.mark_listening([refund_type.pk])
    with CaptureQueriesContext(connection) as queries:
        result = services.proposal_submit(service=shop.service, data=refund_body())
    assert result.proposal.state == Proposal.State.PENDING_REVIEW
    reads = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert not [sql for sql in reads if "approvals_claim" in sql or "approvals_review" in sql]
    assert not [sql for sql in reads if f"'{result.proposal.pk.hex}'" in sql.replace("-", "")]
    # What a read-back does, seen by the same check: without render_new this test fails.
    with CaptureQueriesContext(connection) as control:
        events.render_update(result.proposal.pk)
    assert [q for q in control if "approvals_claim" in q["sql"]]
    # The caller's object is left as it was: its relations still come from the database.
    assert "reviews" not in getattr(result.proposal, "_prefetched_objects_cache", {})
    assert not Proposal.claim.is_cached(result.proposal)


def test_a_proposal_decided_on_submit_is_read_back(
    shop: Any, refund_type: ActionType, make_rule: Any
) -> None:
    """Its execution, dispatched on the same commit, may move it on before the push is sent."""
    make_rule("small ones pass", when="payload.amount < 100.0", outcome="approve")
    proposal = services.proposal_submit(service=shop.service, data=refund_body()).proposal
    assert proposal.state == Proposal.State.APPROVED
    assert events.render_new(proposal) is None
