"""The MCP gateway, end to end: the official MCP client → a live Gatehouse → a real upstream."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, User
from mcp.shared.exceptions import MCPError
from mcp_types import RequestParamsMeta

from approvals import services as approvals
from approvals.models import ActionType, AuditEvent, Proposal, Rule
from mcpgate import db
from mcpgate.models import Call, Tool
from tests.conftest import decide_as
from tests.mcpgate.conftest import Agent, mcp_client
from tests.mcpgate.files_upstream import TOKEN, FilesUpstream

GATEWAY = "/mcp/gateway/files"


@pytest.fixture
def engineer(live: str) -> User:
    user = User.objects.create_user("erin", password="pw-erin-123456")
    user.groups.add(Group.objects.get_or_create(name="engineering")[0])
    return user


def _proposals(key: str) -> list[Proposal]:
    return list(
        Proposal.objects.select_related("action_type")
        .filter(action_type__key=key)
        .order_by("created_at")
    )


async def _pending(key: str, count: int = 1, timeout: float = 10) -> Proposal:
    """The newest proposal of `key` once `count` of them wait for review."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await db.run(_proposals, key)
        pending = [p for p in rows if p.state == Proposal.State.PENDING_REVIEW]
        if len(pending) >= count:
            return pending[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending proposal of {key}")


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def test_list_files_is_read_only_so_it_runs_at_once_and_is_recorded(
    live: str, agent: Agent, gateway: str, files: FilesUpstream
) -> None:
    async def main() -> tuple[Any, Any]:
        async with mcp_client(live, gateway, agent.key) as client:
            listed = await client.list_tools()
            return listed, await client.call_tool("list_files", {})

    listed, result = asyncio.run(main())

    assert sorted(t.name for t in listed.tools) == ["delete_file", "list_files", "rename_file"]
    assert not result.is_error
    assert result.structured_content == {"result": ["a.txt", "b.txt", "notes.md"]}
    assert files.calls_of("list_files") == [{}]
    # The upstream got the header from the environment variable named in headers_env.
    assert set(files.authorizations) == {f"Bearer {TOKEN}"}
    [proposal] = _proposals("mcp.files.list_files")
    assert proposal.state == Proposal.State.EXECUTED
    assert proposal.decided_by == "rule"
    assert proposal.decision_rule == "mcp.files.list_files: read-only, passed through"
    recorded = Call.objects.get(pk=proposal.pk).result
    assert recorded is not None
    assert recorded["structuredContent"] == {"result": ["a.txt", "b.txt", "notes.md"]}
    list_type = ActionType.objects.get(key="mcp.files.list_files")
    assert (list_type.irreversible, list_type.risk, list_type.executor_kind) == (
        False,
        "low",
        "none",
    )
    assert list_type.reviewer_group is not None and list_type.reviewer_group.name == "engineering"
    assert list(list_type.services.values_list("name", flat=True)) == ["coding-agent"]
    delete_type = ActionType.objects.get(key="mcp.files.delete_file")
    assert (delete_type.irreversible, delete_type.risk) == (True, "high")
    assert delete_type.payload_schema["required"] == ["path"]


def test_delete_file_waits_for_a_reviewer_then_runs_once_with_the_approved_arguments(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, engineer: User
) -> None:
    notified: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notified.append((progress, message))

    async def main() -> tuple[Any, Any, Any]:
        async with mcp_client(live, gateway, agent.key) as client:
            call = asyncio.create_task(
                client.call_tool("delete_file", {"path": "a.txt"}, progress_callback=on_progress)
            )
            proposal = await _pending("mcp.files.delete_file")
            await asyncio.sleep(0.5)  # long enough for a progress notification or two
            assert files.calls_of("delete_file") == []
            # The reviewer deletes notes.md instead: the edit is what runs.
            await db.run(_approve_with_edit, engineer, proposal, {"path": "notes.md"})
            first = await call
            again = await client.call_tool("delete_file", {"path": "a.txt"})
        async with mcp_client(live, "/mcp", agent.key) as gatehouse:
            followed = await gatehouse.call_tool("get_proposal", {"id": str(proposal.pk)})
        return first, again, followed

    first, again, followed = asyncio.run(main())

    assert not first.is_error, _text(first)
    assert _text(first) == "deleted notes.md"
    assert notified and "Waiting for a reviewer" in (notified[0][1] or "")
    assert files.calls_of("delete_file") == [{"path": "notes.md"}]
    assert files.files == {"a.txt", "b.txt"}
    # Calling again with the same arguments answers from the proposal: nothing runs twice.
    assert _text(again) == "deleted notes.md"
    assert len(files.calls_of("delete_file")) == 1
    [proposal] = _proposals("mcp.files.delete_file")
    assert proposal.state == Proposal.State.EXECUTED
    assert proposal.decision_reviewer == engineer
    call = Call.objects.get(pk=proposal.pk)
    assert (call.status, call.arguments, call.tool) == (
        "succeeded",
        {"path": "notes.md"},
        "delete_file",
    )
    kinds = list(AuditEvent.objects.filter(proposal=proposal).values_list("kind", flat=True))
    assert kinds[-3:] == ["proposal.approved", "proposal.executing", "proposal.executed"]
    # The agent can read the recorded result through Gatehouse's own server too.
    recorded = followed.structured_content
    assert recorded["state"] == "executed"
    assert recorded["final_payload"] == {"path": "notes.md"}
    assert recorded["mcp_call"]["status"] == "succeeded"
    assert recorded["mcp_call"]["result"]["content"][0]["text"] == "deleted notes.md"


def _approve_with_edit(reviewer: User, proposal: Proposal, payload: dict[str, Any]) -> None:
    approvals.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    approvals.proposal_decide(
        proposal=proposal, reviewer=reviewer, verdict="approve", edited_payload=payload
    )


def test_a_rejected_call_returns_the_reason_and_never_reaches_the_upstream(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, engineer: User
) -> None:
    async def main() -> tuple[Any, Any]:
        async with mcp_client(live, gateway, agent.key) as client:
            call = asyncio.create_task(client.call_tool("delete_file", {"path": "b.txt"}))
            proposal = await _pending("mcp.files.delete_file")
            await db.run(decide_as, engineer, proposal, "reject", "Keep b.txt: it is the backup.")
            first = await call
            return first, await client.call_tool("delete_file", {"path": "b.txt"})

    rejected, retried = asyncio.run(main())

    assert rejected.is_error
    assert "rejected by erin" in _text(rejected)
    assert "Keep b.txt: it is the backup." in _text(rejected)
    assert rejected.structured_content["error"] == "proposal-rejected"
    # A retry within the replay window gets the same answer, without a second proposal.
    assert "Keep b.txt: it is the backup." in _text(retried)
    assert len(_proposals("mcp.files.delete_file")) == 1
    assert files.calls_of("delete_file") == []
    assert "b.txt" in files.files


def test_rename_file_has_no_annotations_so_it_is_held_as_destructive(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, settings: Any
) -> None:
    settings.MCP_GATEWAY_WAIT = timedelta(seconds=1)

    async def main() -> tuple[Any, Any]:
        async with mcp_client(live, gateway, agent.key) as client:
            held = await client.call_tool(
                "rename_file",
                {"source": "a.txt", "target": "c.txt"},
                meta=RequestParamsMeta(
                    {"io.gatehouse/confidence": 0.8, "io.gatehouse/summary": "Rename a to c"}  # type: ignore[typeddict-unknown-key]
                ),
            )
        proposal_id = held.structured_content["proposal"]["id"]
        async with mcp_client(live, "/mcp", agent.key) as gatehouse:
            followed = await gatehouse.call_tool("get_proposal", {"id": proposal_id})
        return held, followed

    held, followed = asyncio.run(main())

    [proposal] = _proposals("mcp.files.rename_file")
    assert held.is_error
    assert held.structured_content["error"] == "pending-review"
    assert str(proposal.pk) in _text(held)
    assert followed.structured_content["state"] == "pending_review"
    assert proposal.action_type.irreversible is True
    assert proposal.action_type.risk == "high"
    assert (proposal.confidence, proposal.summary) == (0.8, "Rename a to c")
    assert files.calls_of("rename_file") == []


def test_arguments_that_break_the_tools_schema_name_the_field_and_nothing_is_forwarded(
    live: str, agent: Agent, gateway: str, files: FilesUpstream
) -> None:
    async def main() -> tuple[Any, Any, Any]:
        async with mcp_client(live, gateway, agent.key) as client:
            wrong_type = await client.call_tool("delete_file", {"path": ["a.txt"]})
            missing = await client.call_tool("rename_file", {"source": "a.txt"})
            nul = await client.call_tool("delete_file", {"path": "a.txt\x00"})
            return wrong_type, missing, nul

    wrong_type, missing, nul = asyncio.run(main())

    assert wrong_type.is_error and missing.is_error
    assert wrong_type.structured_content["errors"][0]["field"] == "path"
    assert "- path: ['a.txt'] is not of type 'string'" in _text(wrong_type)
    assert "'target' is a required property" in _text(missing)
    assert "path: contains the NUL character" in _text(nul)
    assert Proposal.objects.count() == 0
    assert files.calls == []


def test_an_upstream_that_is_down_answers_a_tool_error_and_the_proposal_records_it(
    live: str, agent: Agent, monkeypatch: Any
) -> None:
    from foundation import configfile
    from tests.mcpgate.conftest import GATEWAY_YAML

    flaky = FilesUpstream().start()
    monkeypatch.setenv("FILES_MCP_TOKEN", f"Bearer {TOKEN}")
    configfile.apply(GATEWAY_YAML.format(url=flaky.url), source="test.yaml")

    async def main() -> tuple[Any, Any]:
        async with mcp_client(live, GATEWAY, agent.key) as client:
            await client.list_tools()  # Gatehouse learns the tools while the upstream is up
            await asyncio.to_thread(flaky.stop)
            listing_down = await client.call_tool("list_files", {})
            return listing_down, await client.call_tool("list_files", {})

    first, second = asyncio.run(main())

    assert first.is_error and second.is_error
    assert first.structured_content["error"] == "upstream-unavailable"
    failed = _proposals("mcp.files.list_files")
    assert [p.state for p in failed] == [Proposal.State.FAILED] * 2  # each call proposed anew
    call = Call.objects.get(pk=failed[0].pk)
    assert call.status == "failed"
    assert "did not answer the call of 'list_files'" in call.error
    event = AuditEvent.objects.get(proposal=failed[0], kind="proposal.failed")
    assert "did not answer" in event.data["error"]


def test_a_service_without_access_to_the_gateway_gets_403_and_no_key_gets_401(
    live: str, agent: Agent, other_agent: Agent, gateway: str, files: FilesUpstream
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}

    def post(path: str, key: str | None) -> httpx.Response:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(live + path, json=body, headers={**headers, **auth}, timeout=10)

    forbidden = post(GATEWAY, other_agent.key)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert "may not use the MCP gateway 'files'" in forbidden.json()["detail"]
    assert post("/mcp/gateway/nope", agent.key).status_code == 404
    assert post(GATEWAY, None).status_code == 401
    assert post(GATEWAY, "gh_0000_not-a-key").status_code == 401
    assert files.calls == [] and files.authorizations == []

    async def denied() -> None:
        async with mcp_client(live, GATEWAY, other_agent.key) as client:
            await client.list_tools()

    with pytest.raises(ExceptionGroup) as refused:  # the client's task groups wrap its error
        asyncio.run(denied())
    assert refused.group_contains(MCPError)


def test_two_callers_waiting_on_one_approved_call_forward_it_once(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, engineer: User
) -> None:
    async def main() -> list[Any]:
        async with (
            mcp_client(live, gateway, agent.key) as one,
            mcp_client(live, gateway, agent.key) as two,
        ):
            first = asyncio.create_task(one.call_tool("delete_file", {"path": "a.txt"}))
            proposal = await _pending("mcp.files.delete_file")
            second = asyncio.create_task(two.call_tool("delete_file", {"path": "a.txt"}))
            await asyncio.sleep(0.3)  # both wait on the one proposal
            await db.run(decide_as, engineer, proposal, "approve")
            return list(await asyncio.gather(first, second))

    results = asyncio.run(main())

    assert [_text(r) for r in results] == ["deleted a.txt", "deleted a.txt"]
    assert files.calls_of("delete_file") == [{"path": "a.txt"}]
    assert len(_proposals("mcp.files.delete_file")) == 1


def test_private_upstreams_are_refused_unless_allowed(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, settings: Any
) -> None:
    settings.GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS = False

    async def main() -> Any:
        async with mcp_client(live, gateway, agent.key) as client:
            return await client.call_tool("list_files", {})

    result = asyncio.run(main())

    assert result.is_error
    assert "private, loopback or link-local" in _text(result)
    assert files.calls == [] and files.authorizations == []


def test_the_pass_through_rule_is_a_rule_like_any_other(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, settings: Any
) -> None:
    """Disabling it sends read-only calls to review too: the admin tunes what the gateway made."""
    settings.MCP_GATEWAY_WAIT = timedelta(seconds=0.3)

    async def call() -> Any:
        async with mcp_client(live, gateway, agent.key) as client:
            return await client.call_tool("list_files", {})

    assert not asyncio.run(call()).is_error
    rule = Rule.objects.get(action_type__key="mcp.files.list_files")
    rule.enabled = False
    approvals.rule_save(rule=rule, actor="test")

    held = asyncio.run(call())

    assert held.structured_content["error"] == "pending-review"
    assert len(files.calls_of("list_files")) == 1
    assert Tool.objects.get(name="list_files").read_only


def test_a_tool_that_fails_upstream_is_passed_back_and_fails_the_proposal(
    live: str, agent: Agent, gateway: str, files: FilesUpstream, engineer: User
) -> None:
    async def main() -> Any:
        async with mcp_client(live, gateway, agent.key) as client:
            call = asyncio.create_task(client.call_tool("delete_file", {"path": "missing.txt"}))
            await db.run(decide_as, engineer, await _pending("mcp.files.delete_file"), "approve")
            return await call

    result = asyncio.run(main())

    assert result.is_error
    assert "no such file: missing.txt" in _text(result)
    [proposal] = _proposals("mcp.files.delete_file")
    assert proposal.state == Proposal.State.FAILED
    assert "no such file: missing.txt" in Call.objects.get(pk=proposal.pk).error
    assert files.calls_of("delete_file") == [{"path": "missing.txt"}]
