"""MCP under the production ASGI server: started by the lifespan, or by the first request."""

from __future__ import annotations

import asyncio
from typing import Any

from mcpgate.asgi import runtime
from tests.live_app import any_free_port, serve
from tests.mcpgate.conftest import Agent, mcp_client


def _call_through(base: str, agent: Agent) -> Any:
    async def main() -> Any:
        async with mcp_client(base, "/mcp", agent.key) as client:
            return await client.call_tool("list_action_types", {})

    return asyncio.run(main())


def test_the_lifespan_starts_and_stops_mcp_as_the_procfiles_web_runs_it(agent: Agent) -> None:
    """uvicorn's default lifespan (`auto`), as in the Procfile: started before the first request,
    stopped with the server."""
    before = set(runtime._states.values())
    server = serve(any_free_port(), lifespan="auto")
    base = next(server)
    started = [s for s in runtime._states.values() if s not in before]
    assert len(started) == 1 and started[0].ready.is_set()  # before any request

    assert _call_through(base, agent).structured_content == {"action_types": []}

    next(server, None)  # stop uvicorn: the lifespan's shutdown stops the session managers
    assert started[0].stop.is_set()
    assert started[0].task is not None and started[0].task.done()
    assert started[0].error is None
    assert started[0] not in set(runtime._states.values())


def test_without_a_lifespan_the_first_request_starts_mcp(agent: Agent) -> None:
    before = set(runtime._states.values())
    server = serve(any_free_port(), lifespan="off")
    base = next(server)
    assert set(runtime._states.values()) == before

    assert not _call_through(base, agent).is_error
    assert len(set(runtime._states.values()) - before) == 1
    next(server, None)
