"""A real upstream MCP server on loopback, built with the SDK's MCPServer (FastMCP in mcp 1.x).

Tools: `delete_file` (destructiveHint), `list_files` (readOnlyHint) and `rename_file` (no
annotations). It keeps a directory listing in memory and records every call it receives and
the Authorization header of every request, so tests can see exactly what reached it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from starlette.types import Receive, Scope, Send

from tests.live_app import any_free_port

TOKEN = "files-upstream-token"


class FilesUpstream:
    def __init__(self) -> None:
        self.files: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()
        self.port = any_free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def reset(self, files: set[str] | None = None) -> None:
        with self._lock:
            self.files = set(files or {"a.txt", "b.txt", "notes.md"})
            self.calls.clear()
            self.authorizations.clear()

    def calls_of(self, tool: str) -> list[dict[str, Any]]:
        with self._lock:
            return [args for name, args in self.calls if name == tool]

    def _record(self, tool: str, args: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((tool, args))

    def build(self) -> MCPServer:
        mcp = MCPServer("files")

        @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
        def delete_file(path: str) -> str:
            """Delete one file."""
            self._record("delete_file", {"path": path})
            if path not in self.files:
                raise ToolError(f"no such file: {path}")
            self.files.discard(path)
            return f"deleted {path}"

        @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
        def list_files() -> list[str]:
            """List the files."""
            self._record("list_files", {})
            return sorted(self.files)

        @mcp.tool()
        def rename_file(source: str, target: str) -> str:
            """Rename a file."""
            self._record("rename_file", {"source": source, "target": target})
            self.files.discard(source)
            self.files.add(target)
            return f"renamed {source} to {target}"

        return mcp

    def start(self) -> FilesUpstream:
        self.reset()
        app = self.build().streamable_http_app(stateless_http=True, host="127.0.0.1")

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                authorization = headers.get(b"authorization")
                with self._lock:
                    self.authorizations.append(authorization.decode() if authorization else None)
            await app(scope, receive, send)

        config = uvicorn.Config(
            recording, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "the upstream did not start"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
