"""Agents gated by Gatehouse, as a user would write them: an OpenAI Agents SDK agent and a
LangGraph graph, each with one tool that issues refunds, the model played by the fake.

Imported by the tests and run as a program (`python -m tests.clients.agent_scripts …`) so that a
run can pause in one process and resume in a fresh one. It imports no Django: a service that
uses the client has none.

    python -m tests.clients.agent_scripts {agents|langgraph} {start|resume} \
        --gatehouse URL --key KEY --model URL --state FILE --ran FILE [--input TEXT] [--wait S]

Prints one JSON line: {"status": "paused" | "done", "final": …}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatehouse_client import AsyncGatehouse, Gatehouse, RetryPolicy

RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.05)


def refund_tool(ran: Path) -> Callable[..., str]:
    def issue_refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order to the customer's original payment method."""
        with ran.open("a") as out:  # one line per real run, for the test to count
            out.write(json.dumps({"order_id": order_id, "amount": amount, "currency": currency}))
            out.write("\n")
        return f"refunded {amount} {currency} on {order_id}"

    return issue_refund


def summary(args: dict[str, Any]) -> str:
    return f"Refund {args.get('amount')} {args.get('currency')} on {args.get('order_id')}"


# --- OpenAI Agents SDK ------------------------------------------------------------------------


def openai_agent(gh: AsyncGatehouse, model_url: str, ran: Path) -> Any:
    from agents import Agent, OpenAIChatCompletionsModel, set_tracing_disabled
    from gatehouse_client.openai_agents import gatehouse_tool
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no exporter calls out of the machine
    tool = gatehouse_tool(
        gh,
        refund_tool(ran),
        action_type="refund.issue",
        summary=summary,
        confidence=0.8,
        model="fake-tools",
    )
    model = OpenAIChatCompletionsModel(
        model="fake-tools",
        openai_client=AsyncOpenAI(base_url=model_url, api_key="fake", max_retries=0),
    )
    return Agent(name="support", instructions="Refund when asked.", tools=[tool], model=model)


async def agents_start(
    gh: AsyncGatehouse, agent: Any, text: str, state_file: Path
) -> dict[str, Any]:
    from agents import Runner

    result = await Runner.run(agent, text)
    if result.interruptions:
        state_file.write_text(result.to_state().to_string())
        return {"status": "paused", "interruptions": len(result.interruptions)}
    return {"status": "done", "final": result.final_output}


async def agents_resume(
    gh: AsyncGatehouse, agent: Any, state_file: Path, timeout: float = 20
) -> dict[str, Any]:
    from agents import Runner, RunState
    from gatehouse_client.openai_agents import resolve_interruptions

    state = await RunState.from_string(agent, state_file.read_text())
    if not await resolve_interruptions(gh, state, timeout=timeout):
        return {"status": "paused"}
    result = await Runner.run(agent, state)
    if result.interruptions:
        state_file.write_text(result.to_state().to_string())
        return {"status": "paused", "interruptions": len(result.interruptions)}
    return {"status": "done", "final": result.final_output}


# --- LangGraph --------------------------------------------------------------------------------


def langgraph_graph(gh: Gatehouse, model_url: str, ran: Path, checkpoints: Path) -> Any:
    from gatehouse_client.langgraph import gatehouse_tool
    from langchain_core.messages import AIMessage, convert_to_openai_messages
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from openai import OpenAI

    tool = gatehouse_tool(
        gh, refund_tool(ran), action_type="refund.issue", summary=summary, confidence=0.8
    )
    llm = OpenAI(base_url=model_url, api_key="fake", max_retries=0)

    def agent(state: MessagesState) -> dict[str, Any]:
        reply = llm.chat.completions.create(
            model="fake-tools",
            messages=convert_to_openai_messages(state["messages"]),  # type: ignore[arg-type]
            tools=[convert_to_openai_tool(tool)],  # type: ignore[list-item]
        )
        message = reply.choices[0].message
        calls = [
            {
                "name": c.function.name,
                "args": json.loads(c.function.arguments),
                "id": c.id,
                "type": "tool_call",
            }
            for c in message.tool_calls or []
            if c.type == "function"
        ]
        return {"messages": [AIMessage(content=message.content or "", tool_calls=calls)]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([tool]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    saver = SqliteSaver(sqlite3.connect(checkpoints, check_same_thread=False))
    return builder.compile(checkpointer=saver)


def thread(name: str = "ticket-7") -> dict[str, Any]:
    return {"configurable": {"thread_id": name}}


def langgraph_outcome(graph: Any, result: Any) -> dict[str, Any]:
    if result is None or result.get("__interrupt__"):
        return {"status": "paused"}
    return {"status": "done", "final": result["messages"][-1].content}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=["agents", "langgraph"])
    parser.add_argument("step", choices=["start", "resume"])
    parser.add_argument("--gatehouse", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--ran", required=True, type=Path)
    parser.add_argument("--input", default="")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for decisions")
    args = parser.parse_args(argv)
    if args.framework == "agents":

        async def run() -> dict[str, Any]:
            async with AsyncGatehouse(args.gatehouse, args.key, retry=RETRY) as gh:
                agent = openai_agent(gh, args.model, args.ran)
                if args.step == "start":
                    return await agents_start(gh, agent, args.input, args.state)
                return await agents_resume(gh, agent, args.state, timeout=args.wait)

        print(json.dumps(asyncio.run(run())))
        return
    from gatehouse_client.langgraph import resume_when_decided

    with Gatehouse(args.gatehouse, args.key, retry=RETRY) as gh:
        graph = langgraph_graph(gh, args.model, args.ran, args.state)
        if args.step == "start":
            result = graph.invoke({"messages": [("user", args.input)]}, thread())
        else:
            result = resume_when_decided(gh, graph, thread(), timeout=args.wait)
        print(json.dumps(langgraph_outcome(graph, result)))


if __name__ == "__main__":
    main(sys.argv[1:])
