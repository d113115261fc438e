"""Forwarding's compare-and-set and its recovery, without a network."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import services as approvals
from approvals import statemachine
from approvals.models import AuditEvent, Proposal, Service
from mcpgate import services
from mcpgate.models import Call, Tool, Upstream


@pytest.fixture
def tool(db: None) -> Tool:
    agent = approvals.service_create(name="coding-agent")[0]
    upstream = Upstream.objects.create(name="files", url="https://files.example.com/mcp")
    upstream.services.add(agent)
    spec = {"name": "delete_file", "inputSchema": {"type": "object"}}
    return services.tools_record(upstream=upstream, tools=[spec])["delete_file"]


def _approved(tool: Tool) -> Proposal:
    agent = Service.objects.get(name="coding-agent")
    proposal, earlier = services.call_propose(
        service=agent, tool=tool, arguments={"path": "a"}, meta=services.CallMeta()
    )
    assert not earlier and proposal.state == Proposal.State.PENDING_REVIEW
    statemachine.transition(
        proposal_id=proposal.pk,
        from_states=[Proposal.State.PENDING_REVIEW],
        to_state=Proposal.State.APPROVED,
        kind="proposal.approved",
        actor="test",
    )
    return proposal


def test_only_the_first_forward_start_wins(tool: Tool) -> None:
    proposal = _approved(tool)

    first = services.forward_start(proposal_id=proposal.pk, upstream=tool.upstream, tool=tool)
    second = services.forward_start(proposal_id=proposal.pk, upstream=tool.upstream, tool=tool)

    assert first is not None and second is None
    assert Call.objects.count() == 1
    proposal.refresh_from_db()
    assert proposal.state == Proposal.State.EXECUTING


def test_a_repeated_call_joins_the_open_proposal(tool: Tool) -> None:
    proposal = _approved(tool)
    agent = Service.objects.get(name="coding-agent")

    again, earlier = services.call_propose(
        service=agent, tool=tool, arguments={"path": "a"}, meta=services.CallMeta()
    )
    other, other_earlier = services.call_propose(
        service=agent, tool=tool, arguments={"path": "b"}, meta=services.CallMeta()
    )

    assert earlier and again.pk == proposal.pk
    assert not other_earlier and other.pk != proposal.pk


def test_a_forward_cut_short_by_a_crash_fails_and_is_never_sent_again(tool: Tool) -> None:
    proposal = _approved(tool)
    call = services.forward_start(proposal_id=proposal.pk, upstream=tool.upstream, tool=tool)
    assert call is not None
    assert not services.forward_abandon_if_stale(proposal_id=proposal.pk)  # still in time
    Call.objects.filter(pk=call.pk).update(started_at=timezone.now() - timedelta(minutes=5))

    assert services.forward_abandon_if_stale(proposal_id=proposal.pk)

    proposal.refresh_from_db()
    assert proposal.state == Proposal.State.FAILED
    event = AuditEvent.objects.get(proposal=proposal, kind="proposal.failed")
    assert "whether the call took effect is unknown" in event.data["error"]
    assert (
        services.forward_start(proposal_id=proposal.pk, upstream=tool.upstream, tool=tool) is None
    )
