"""Gatehouse's own MCP server at /mcp, with the official MCP client against a live Gatehouse."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, User
from mcp.shared.exceptions import MCPError

from approvals import services as approvals
from approvals.models import ActionType, AuditEvent, OutboxMessage, Proposal
from mcpgate import db
from tests.conftest import REFUND_SCHEMA, decide_as
from tests.mcpgate.conftest import Agent, mcp_client

REFUND = {"order_id": "ORD-7", "amount": 12.5, "currency": "EUR"}


@pytest.fixture
def refunds(live: str, refund_type: ActionType) -> ActionType:
    return refund_type


@pytest.fixture
def shop(refunds: ActionType) -> Agent:
    service, key = approvals.service_create(
        name="shop", action_type_keys=["refund.issue"], callback_url="http://127.0.0.1:9/cb"
    )
    return Agent(service, key)


@pytest.fixture
def support(live: str) -> User:
    user = User.objects.create_user("rita", password="pw-rita-123456")
    user.groups.add(Group.objects.get_or_create(name="support")[0])
    return user


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def test_tools_and_their_schemas_come_from_the_action_types(live: str, shop: Agent) -> None:
    async def main() -> Any:
        async with mcp_client(live, "/mcp", shop.key) as client:
            listed = await client.list_tools()
            types = await client.call_tool("list_action_types", {})
            return listed, types

    listed, types = asyncio.run(main())

    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {
        "list_action_types",
        "get_proposal",
        "propose_action",
        "propose.refund.issue",
    }
    per_type = tools["propose.refund.issue"]
    assert per_type.input_schema["properties"]["payload"] == REFUND_SCHEMA
    assert per_type.input_schema["required"] == ["payload", "confidence", "summary"]
    assert "Issue a refund" in (per_type.description or "")
    generic = tools["propose_action"].input_schema
    assert generic["properties"]["action_type"]["enum"] == ["refund.issue"]
    assert generic["allOf"][0]["then"]["properties"]["payload"] == REFUND_SCHEMA
    assert tools["get_proposal"].annotations.read_only_hint is True
    assert [t["key"] for t in types.structured_content["action_types"]] == ["refund.issue"]


def test_a_proposal_through_mcp_goes_through_the_same_rules_audit_and_callbacks(
    live: str, shop: Agent, refunds: ActionType, make_rule: Any
) -> None:
    make_rule("small-refunds", action_type=refunds, when="payload.amount <= 50.0")

    async def main() -> Any:
        async with mcp_client(live, "/mcp", shop.key) as client:
            return await client.call_tool(
                "propose.refund.issue",
                {"payload": REFUND, "confidence": 0.9, "summary": "Refund ORD-7"},
            )

    result = asyncio.run(main())

    assert not result.is_error, _text(result)
    body = result.structured_content
    assert (body["state"], body["decision"]["rule"]) == ("approved", "small-refunds")
    proposal = Proposal.objects.get(pk=body["id"])
    assert proposal.service == shop.service and proposal.payload == REFUND
    kinds = list(AuditEvent.objects.filter(proposal=proposal).values_list("kind", flat=True))
    assert kinds == ["proposal.received", "proposal.routed"]
    assert OutboxMessage.objects.filter(proposal=proposal, event="proposal.approved").exists()


def test_an_agent_follows_a_pending_proposal_to_its_decision(
    live: str, shop: Agent, support: User
) -> None:
    proposal = {
        "action_type": "refund.issue",
        "payload": REFUND,
        "confidence": 0.6,
        "summary": "Refund ORD-7",
        "rationale": "Parcel lost",
        "idempotency_key": "ticket-7",
    }

    async def main() -> tuple[Any, Any, Any]:
        async with mcp_client(live, "/mcp", shop.key) as client:
            proposed = await client.call_tool("propose_action", proposal)
            proposal_id = proposed.structured_content["id"]
            follow = asyncio.create_task(
                client.call_tool("get_proposal", {"id": proposal_id, "wait_seconds": 10})
            )
            await asyncio.sleep(0.3)
            pending = await db.run(Proposal.objects.get, pk=proposal_id)
            await db.run(decide_as, support, pending, "reject", "Refunded already on ticket 6")
            replayed = await client.call_tool("propose_action", proposal)
            return proposed, await follow, replayed

    proposed, followed, replayed = asyncio.run(main())

    assert proposed.structured_content["state"] == "pending_review"
    decided = followed.structured_content
    assert decided["state"] == "rejected"
    assert decided["decision"]["reviewer"] == "rita"
    assert decided["decision"]["reason"] == "Refunded already on ticket 6"
    # The idempotency key works as on the REST API: the first answer, no second proposal.
    assert replayed.structured_content["replayed"] is True
    assert replayed.structured_content["id"] == proposed.structured_content["id"]
    assert Proposal.objects.count() == 1


def test_bad_input_is_a_tool_error_naming_the_field_and_stores_nothing(
    live: str, shop: Agent, other_agent: Agent
) -> None:
    async def main() -> list[Any]:
        async with mcp_client(live, "/mcp", shop.key) as client:
            negative = await client.call_tool(
                "propose.refund.issue",
                {"payload": {**REFUND, "amount": -1}, "confidence": 0.9, "summary": "x"},
            )
            no_confidence = await client.call_tool(
                "propose_action", {"action_type": "refund.issue", "payload": REFUND, "summary": "x"}
            )
            unknown = await client.call_tool(
                "propose_action",
                {"action_type": "account.close", "payload": {}, "confidence": 1, "summary": "x"},
            )
            bad_id = await client.call_tool("get_proposal", {"id": "not-a-uuid"})
        async with mcp_client(live, "/mcp", other_agent.key) as other:
            not_allowed = await other.call_tool(
                "propose_action",
                {"action_type": "refund.issue", "payload": REFUND, "confidence": 1, "summary": "x"},
            )
        return [negative, no_confidence, unknown, bad_id, not_allowed]

    negative, no_confidence, unknown, bad_id, not_allowed = asyncio.run(main())

    assert all(r.is_error for r in (negative, no_confidence, unknown, bad_id, not_allowed))
    assert negative.structured_content["errors"] == [
        {"field": "payload.amount", "msg": "-1 is less than the minimum of 0"}
    ]
    assert "- confidence: Field required" in _text(no_confidence)
    assert unknown.structured_content["error"] == "unknown-action-type"
    assert bad_id.structured_content["errors"][0]["field"] == "id"
    assert not_allowed.structured_content["error"] == "action-type-not-allowed"
    assert Proposal.objects.count() == 0


def test_another_services_proposal_is_not_found(live: str, shop: Agent, other_agent: Agent) -> None:
    proposal = approvals.proposal_submit(
        service=shop.service,
        data={"action_type": "refund.issue", "payload": REFUND, "confidence": 0.5, "summary": "x"},
    ).proposal

    async def main() -> Any:
        async with mcp_client(live, "/mcp", other_agent.key) as client:
            return await client.call_tool("get_proposal", {"id": str(proposal.pk)})

    result = asyncio.run(main())

    assert result.is_error and result.structured_content["error"] == "not-found"
    assert "refund" not in _text(result).lower()


def test_no_key_an_unknown_key_or_a_revoked_key_is_401(live: str, shop: Agent) -> None:
    def post(key: str | None) -> httpx.Response:
        headers = {"Accept": "application/json, text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        return httpx.post(live + "/mcp", json=body, headers=headers, timeout=10)

    assert post(shop.key).status_code == 200
    missing = post(None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"].startswith("Send a service API key")
    wrong_last = "y" if shop.key.endswith("x") else "x"
    assert post(shop.key[:-1] + wrong_last).status_code == 401
    approvals.api_key_revoke(prefix=shop.key.split("_")[1])
    assert post(shop.key).status_code == 401

    async def revoked() -> None:
        async with mcp_client(live, "/mcp", shop.key) as client:
            await client.list_tools()

    with pytest.raises(ExceptionGroup) as refused:
        asyncio.run(revoked())
    assert refused.group_contains(MCPError)


def test_a_host_outside_allowed_hosts_is_refused(live: str, shop: Agent) -> None:
    response = httpx.post(
        live + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {shop.key}", "Host": "evil.example"},
        timeout=10,
    )
    assert response.status_code == 400


def test_the_handshake_era_client_works_too(live: str, shop: Agent) -> None:
    """Clients on the 2025 protocol (initialize handshake) get the same tools."""

    async def main() -> Any:
        async with mcp_client(live, "/mcp", shop.key, mode="legacy") as client:
            return client.protocol_version, await client.call_tool("list_action_types", {})

    version, result = asyncio.run(main())

    assert version.startswith("2025")
    assert [t["key"] for t in result.structured_content["action_types"]] == ["refund.issue"]
