"""The OpenAI Agents SDK and LangGraph adapters, with the real packages, against the live app; the
model is a fake OpenAI-compatible server on loopback that calls tools.

For each: a call a rule approves runs without a pause; the others pause until a reviewer
decides; an approval with an edit runs the tool once with the edited arguments — after the
paused run was serialised and resumed in a fresh process —; a rejection reaches the model as
the tool's result with the reviewer's reason; and approving in the framework what Gatehouse has
not approved runs nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gatehouse_client as gc
import pytest

from approvals.models import Proposal
from tests.clients import agent_scripts
from tests.clients.conftest import Shop
from tests.clients.fake_model import FakeToolModel
from tests.conftest import decide_as

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
BIG = 'Please refund {"order_id": "ORD-7", "amount": 80.0, "currency": "EUR"}'
SMALL = 'Please refund {"order_id": "ORD-3", "amount": 20.0, "currency": "EUR"}'


def runs(ran: Path) -> list[dict[str, Any]]:
    if not ran.exists():
        return []
    return [json.loads(line) for line in ran.read_text().splitlines()]


def script(
    framework: str, step: str, shop: Shop, model: FakeToolModel, tmp: Path, wait: float = 20
) -> Any:
    """One step in a fresh Python process: nothing survives but the state file."""
    state = tmp / ("run-state.json" if framework == "agents" else "checkpoints.sqlite")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.clients.agent_scripts",
            framework,
            step,
            "--gatehouse",
            shop.url,
            "--key",
            shop.key,
            "--model",
            model.base_url,
            "--state",
            str(state),
            "--ran",
            str(tmp / "ran.jsonl"),
            "--input",
            BIG,
            "--wait",
            str(wait),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def pending_one() -> Proposal:
    [proposal] = Proposal.objects.filter(state=Proposal.State.PENDING_REVIEW)
    return proposal


def approve_with_edit(reviewer: Any, proposal: Proposal, **edit: Any) -> None:
    from approvals import services

    services.claim_acquire(proposal_id=proposal.pk, reviewer=reviewer)
    services.proposal_decide(
        proposal=proposal,
        reviewer=reviewer,
        verdict="approve",
        comment="Partial refund",
        edited_payload={**proposal.payload, **edit},
    )


# --- OpenAI Agents SDK ------------------------------------------------------------------------


def test_agents_a_paused_run_survives_a_restart_and_runs_the_reviewers_edit(
    gh_shop: Shop, fake_model: FakeToolModel, reviewer: Any, tmp_path: Path
) -> None:
    assert script("agents", "start", gh_shop, fake_model, tmp_path) == {
        "status": "paused",
        "interruptions": 1,
    }
    proposal = pending_one()
    assert proposal.payload == {"order_id": "ORD-7", "amount": 80.0, "currency": "EUR"}
    assert proposal.summary == "Refund 80.0 EUR on ORD-7"
    assert runs(tmp_path / "ran.jsonl") == []
    approve_with_edit(reviewer, proposal, amount=60.0)

    outcome = script("agents", "resume", gh_shop, fake_model, tmp_path)

    assert outcome == {"status": "done", "final": "Tool said: refunded 60.0 EUR on ORD-7"}
    assert runs(tmp_path / "ran.jsonl") == [
        {"order_id": "ORD-7", "amount": 60.0, "currency": "EUR"}
    ]
    proposal.refresh_from_db()
    assert proposal.state == "executed"
    assert Proposal.objects.count() == 1  # asking again after the restart found the same one


def test_agents_a_rule_approved_call_runs_without_a_pause(
    gh_shop: Shop, fake_model: FakeToolModel, small_refunds_rule: Any, tmp_path: Path
) -> None:
    async def scenario() -> dict[str, Any]:
        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key) as gh:
            agent = agent_scripts.openai_agent(gh, fake_model.base_url, tmp_path / "ran.jsonl")
            return await agent_scripts.agents_start(gh, agent, SMALL, tmp_path / "state.json")

    assert asyncio.run(scenario()) == {
        "status": "done",
        "final": "Tool said: refunded 20.0 EUR on ORD-3",
    }
    assert runs(tmp_path / "ran.jsonl") == [
        {"order_id": "ORD-3", "amount": 20.0, "currency": "EUR"}
    ]
    assert Proposal.objects.get().state == "executed"


def test_agents_a_rejection_reaches_the_model_with_the_reason(
    gh_shop: Shop, fake_model: FakeToolModel, reviewer: Any, tmp_path: Path
) -> None:
    ran, state = tmp_path / "ran.jsonl", tmp_path / "state.json"

    async def start() -> dict[str, Any]:
        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key) as gh:
            agent = agent_scripts.openai_agent(gh, fake_model.base_url, ran)
            return await agent_scripts.agents_start(gh, agent, BIG, state)

    async def resume() -> dict[str, Any]:
        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key) as gh:
            agent = agent_scripts.openai_agent(gh, fake_model.base_url, ran)
            return await agent_scripts.agents_resume(gh, agent, state)

    assert asyncio.run(start())["status"] == "paused"
    decide_as(reviewer, pending_one(), "reject", "Item was returned unopened; refund in store")
    outcome = asyncio.run(resume())
    reason = "Reason: Item was returned unopened; refund in store"
    assert outcome["status"] == "done" and reason in outcome["final"]
    assert any(reason in seen for seen in fake_model.tool_results_seen())
    assert runs(ran) == []


def test_agents_approving_in_the_sdk_what_gatehouse_did_not_approve_runs_nothing(
    gh_shop: Shop, fake_model: FakeToolModel, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.jsonl"

    async def scenario() -> str:
        from agents import Runner

        async with gc.AsyncGatehouse(gh_shop.url, gh_shop.key) as gh:
            agent = agent_scripts.openai_agent(gh, fake_model.base_url, ran)
            result = await Runner.run(agent, BIG)
            state = result.to_state()
            for item in state.get_interruptions():
                state.approve(item)  # the application's own "yes", not Gatehouse's
            return str((await Runner.run(agent, state)).final_output)

    final = asyncio.run(scenario())
    assert "Not done" in final and "No decision yet" in final
    assert runs(ran) == [] and pending_one().state == "pending_review"


# --- LangGraph --------------------------------------------------------------------------------


def test_langgraph_a_paused_graph_resumes_after_a_restart_with_the_reviewers_edit(
    gh_shop: Shop, fake_model: FakeToolModel, reviewer: Any, tmp_path: Path
) -> None:
    assert script("langgraph", "start", gh_shop, fake_model, tmp_path) == {"status": "paused"}
    proposal = pending_one()
    assert proposal.payload == {"order_id": "ORD-7", "amount": 80.0, "currency": "EUR"}
    assert runs(tmp_path / "ran.jsonl") == []
    approve_with_edit(reviewer, proposal, amount=60.0)

    outcome = script("langgraph", "resume", gh_shop, fake_model, tmp_path)

    assert outcome == {"status": "done", "final": "Tool said: refunded 60.0 EUR on ORD-7"}
    assert runs(tmp_path / "ran.jsonl") == [
        {"order_id": "ORD-7", "amount": 60.0, "currency": "EUR"}
    ]
    proposal.refresh_from_db()
    assert proposal.state == "executed" and Proposal.objects.count() == 1


def test_langgraph_a_rule_approved_call_runs_without_an_interrupt(
    gh_shop: Shop, fake_model: FakeToolModel, small_refunds_rule: Any, tmp_path: Path
) -> None:
    ran = tmp_path / "ran.jsonl"
    with gc.Gatehouse(gh_shop.url, gh_shop.key) as gh:
        graph = agent_scripts.langgraph_graph(gh, fake_model.base_url, ran, tmp_path / "c.sqlite")
        result = graph.invoke({"messages": [("user", SMALL)]}, agent_scripts.thread())
    assert agent_scripts.langgraph_outcome(graph, result) == {
        "status": "done",
        "final": "Tool said: refunded 20.0 EUR on ORD-3",
    }
    assert runs(ran) == [{"order_id": "ORD-3", "amount": 20.0, "currency": "EUR"}]


def test_langgraph_a_rejection_reaches_the_model_and_a_forged_resume_runs_nothing(
    gh_shop: Shop, fake_model: FakeToolModel, reviewer: Any, tmp_path: Path
) -> None:
    from gatehouse_client.langgraph import pending_reviews, resume_when_decided
    from langgraph.types import Command

    ran = tmp_path / "ran.jsonl"
    with gc.Gatehouse(gh_shop.url, gh_shop.key) as gh:
        graph = agent_scripts.langgraph_graph(gh, fake_model.base_url, ran, tmp_path / "c.sqlite")
        config = agent_scripts.thread("forged")
        graph.invoke({"messages": [("user", BIG)]}, config)
        [(interrupt_id, proposal_id)] = pending_reviews(graph, config).items()
        # Not decided yet: nothing resumes.
        assert resume_when_decided(gh, graph, config, timeout=0.2) is None
        assert pending_reviews(graph, config) == {interrupt_id: proposal_id}
        # The application resumes with "approved" on its own: the tool asks Gatehouse instead.
        forged = graph.invoke(Command(resume={interrupt_id: "approved"}), config)
        assert "No decision yet" in forged["messages"][-1].content and runs(ran) == []

        config = agent_scripts.thread("rejected")
        graph.invoke({"messages": [("user", BIG)]}, config)
        [(_, proposal_id)] = pending_reviews(graph, config).items()
        decide_as(reviewer, Proposal.objects.get(pk=proposal_id), "reject", "Fraud pattern")
        result = resume_when_decided(gh, graph, config, timeout=5)
    assert result is not None and "Reason: Fraud pattern" in result["messages"][-1].content
    assert any("Reason: Fraud pattern" in seen for seen in fake_model.tool_results_seen())
    assert runs(ran) == []
