from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from approvals import services
from approvals.models import Service
from foundation import configfile
from tests.live_app import any_free_port, serve
from tests.mcpgate.files_upstream import TOKEN, FilesUpstream


@pytest.fixture(scope="session")
def live_gatehouse() -> Iterator[str]:
    """The whole app under uvicorn on loopback, in a thread (MCP is mounted on its ASGI app)."""
    yield from serve(any_free_port())


@pytest.fixture(scope="session")
def files_server() -> Iterator[FilesUpstream]:
    server = FilesUpstream().start()
    yield server
    server.stop()


@pytest.fixture
def files(files_server: FilesUpstream) -> FilesUpstream:
    files_server.reset()
    return files_server


@pytest.fixture
def live(settings: Any, transactional_db: None, live_gatehouse: str) -> str:
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.MCP_GATEWAY_WAIT = _seconds(10)
    settings.MCP_PROGRESS_INTERVAL = 0.2
    settings.MCP_UPSTREAM_TIMEOUT = _seconds(10)
    return live_gatehouse


def _seconds(n: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


class Agent:
    def __init__(self, service: Service, key: str) -> None:
        self.service = service
        self.key = key


@pytest.fixture
def agent(live: str) -> Agent:
    service, key = services.service_create(name="coding-agent")
    return Agent(service, key)


@pytest.fixture
def other_agent(live: str) -> Agent:
    service, key = services.service_create(name="other-agent")
    return Agent(service, key)


GATEWAY_YAML = """
mcp_upstreams:
  - name: files
    url: {url}
    headers_env: {{Authorization: FILES_MCP_TOKEN}}
    services: [coding-agent]
    reviewer_group: engineering
"""


@pytest.fixture
def gateway(agent: Agent, files: FilesUpstream, monkeypatch: Any) -> str:
    """The `files` upstream declared through `manage.py apply`'s own code; its gateway URL."""
    monkeypatch.setenv("FILES_MCP_TOKEN", f"Bearer {TOKEN}")
    configfile.apply(GATEWAY_YAML.format(url=files.url), source="test.yaml")
    return "/mcp/gateway/files"


@asynccontextmanager
async def mcp_client(
    base: str, path: str, key: str | None, **options: Any
) -> AsyncIterator[Client]:
    """The official MCP client over streamable HTTP, with a service key as the bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30))
    transport = streamable_http_client(base + path, http_client=http)
    async with http, Client(transport, **options) as client:
        yield client
