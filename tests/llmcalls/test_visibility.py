"""Model calls stay within their tenant and team (issue 12, item 3).

A call is read by those who may see its service's proposals of its feature (docs/llmcalls.md,
"Grants and visibility"), and by users with llmcalls.view_llmcall. Personas: a support
reviewer, a reviewer of another team (trust-and-safety), staff without the permission, an
auditor with it; services `shop` (refunds), `tns-bot` (closures) and `mixed` (both teams).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from approvals import services
from approvals.models import ActionType, Proposal
from llmcalls.models import LLMCall
from tests.conftest import ServiceClient, logged_in, refund_body

pytestmark = pytest.mark.django_db

Grant = Callable[..., None]


@pytest.fixture
def close_type(db: None) -> ActionType:
    return ActionType.objects.create(
        key="account.close",
        title="Close an account",
        payload_schema={"type": "object"},
        reviewer_group=Group.objects.get_or_create(name="trust-and-safety")[0],
    )


def llm_call(service: str, feature: str, secret: str) -> LLMCall:
    return LLMCall.objects.create(
        feature=feature,
        service=service,
        status="ok",
        provider="primary",
        model="ok",
        messages=[{"role": "user", "content": secret}],
        response_text="fine",
        cost_usd=1,
        latency_ms=5,
    )


@pytest.fixture
def world(
    shop: ServiceClient,
    make_service: Callable[..., ServiceClient],
    refund_type: ActionType,
    close_type: ActionType,
    grant: Grant,
) -> dict[str, Any]:
    tns = make_service("tns-bot", close_type)
    mixed = make_service("mixed", refund_type, close_type)
    grant(shop, "support-refunds")
    grant(tns, "closures")
    grant(mixed, "mixed-refunds", "refund.issue")
    grant(mixed, "mixed-closures", "account.close")
    return {
        "shop": llm_call("shop", "support-refunds", "SHOP customer Alice"),
        "tns": llm_call("tns-bot", "closures", "TNS customer Bob"),
        "mixed_refund": llm_call("mixed", "mixed-refunds", "MIXED refund Carol"),
        "mixed_close": llm_call("mixed", "mixed-closures", "MIXED closure Dave"),
        "ungranted": llm_call("shop", "not-granted", "SHOP old call Erin"),
        "internal": llm_call("", "evals:set", "INTERNAL Frank"),
        "tns_client": tns,
    }


@pytest.fixture
def staff_without_permission(db: None) -> User:
    return User.objects.create_user("stan", is_staff=True)


@pytest.fixture
def auditor(db: None) -> User:
    user = User.objects.create_user("audrey")
    user.user_permissions.add(Permission.objects.get(codename="view_llmcall"))
    return user


def status_of(user: User, call: LLMCall) -> int:
    return int(logged_in(user).get(f"/llm/calls/{call.id}/").status_code)


def test_a_reviewer_reads_the_calls_of_their_team(reviewer: User, world: dict[str, Any]) -> None:
    response = logged_in(reviewer).get(f"/llm/calls/{world['shop'].id}/")
    assert response.status_code == 200 and "SHOP customer Alice" in response.content.decode()
    assert status_of(reviewer, world["mixed_refund"]) == 200


def test_a_reviewer_of_another_team_does_not_find_the_call(
    reviewer: User, other_team_reviewer: User, world: dict[str, Any]
) -> None:
    assert status_of(other_team_reviewer, world["shop"]) == 404
    assert status_of(reviewer, world["tns"]) == 404
    assert status_of(other_team_reviewer, world["tns"]) == 200


def test_a_service_of_two_teams_shows_each_team_only_its_features_calls(
    reviewer: User, other_team_reviewer: User, world: dict[str, Any]
) -> None:
    assert status_of(reviewer, world["mixed_close"]) == 404
    assert status_of(other_team_reviewer, world["mixed_refund"]) == 404
    assert status_of(other_team_reviewer, world["mixed_close"]) == 200


def test_calls_without_a_grant_and_gatehouses_own_are_not_shown_to_reviewers(
    reviewer: User, world: dict[str, Any]
) -> None:
    assert status_of(reviewer, world["ungranted"]) == 404
    assert status_of(reviewer, world["internal"]) == 404


def test_staff_without_the_permission_reads_no_call(
    staff_without_permission: User, world: dict[str, Any]
) -> None:
    client = logged_in(staff_without_permission)
    assert client.get("/llm/").status_code == 403
    assert client.get(f"/llm/calls/{world['shop'].id}/").status_code == 403


def test_the_permission_reads_every_call(auditor: User, world: dict[str, Any]) -> None:
    for name in ("shop", "tns", "mixed_close", "ungranted", "internal"):
        assert status_of(auditor, world[name]) == 200, name


def test_the_dashboard_shows_a_reviewer_only_their_lines(
    reviewer: User, world: dict[str, Any]
) -> None:
    response = logged_in(reviewer).get("/llm/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "support-refunds" in html and "mixed-refunds" in html
    for foreign in ("closures", "not-granted", "evals:set"):
        assert foreign not in html, foreign
    assert response.context["rates"]["calls"] == 2
    shown = {c.id for c in response.context["expensive"]} | {
        c.id for c in response.context["slowest"]
    }
    assert shown == {world["shop"].id, world["mixed_refund"].id}
    features = {s["feature"] for s in response.context["chart"]["series"]}
    assert features == {"support-refunds", "mixed-refunds"}


# --- llm_call_id on a proposal -----------------------------------------------------------------


def test_a_proposal_may_not_link_another_services_call(
    world: dict[str, Any], reviewer: User
) -> None:
    tns: ServiceClient = world["tns_client"]
    body = refund_body(action_type="account.close", llm_call_id=str(world["shop"].id))

    response = tns.post_json("/api/v1/proposals", body)

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["body", "llm_call_id"]
    assert not Proposal.objects.exists()


def test_a_proposal_may_not_link_an_unknown_call(
    shop: ServiceClient, world: dict[str, Any]
) -> None:
    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(uuid.uuid4())))

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "llm_call_id"]
    assert not Proposal.objects.exists()


def test_a_proposal_links_its_own_services_call_and_the_reviewer_sees_it(
    shop: ServiceClient, reviewer: User, world: dict[str, Any]
) -> None:
    response = shop.post_json("/api/v1/proposals", refund_body(llm_call_id=str(world["shop"].id)))

    assert response.status_code == 201
    page = logged_in(reviewer).get(f"/proposals/{response.json()['id']}/")
    assert "SHOP customer Alice" in page.content.decode()


def test_the_proposal_page_never_shows_another_tenants_call(
    shop: ServiceClient, reviewer: User, world: dict[str, Any]
) -> None:
    # A link stored before submissions were checked: the page must not follow it.
    proposal = services.proposal_submit(service=shop.service, data=refund_body()).proposal
    Proposal.objects.filter(pk=proposal.pk).update(llm_call_id=world["tns"].id)

    html = logged_in(reviewer).get(f"/proposals/{proposal.pk}/").content.decode()

    assert "TNS customer Bob" not in html
    assert "not recorded here" in html


def test_an_anonymous_visitor_is_sent_to_log_in(world: dict[str, Any]) -> None:
    assert Client().get(f"/llm/calls/{world['shop'].id}/").status_code == 302
