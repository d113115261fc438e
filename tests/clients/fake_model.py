"""A fake OpenAI-compatible model that calls tools: a real HTTP server on loopback, in a thread.

`POST /v1/chat/completions`. The model's whole policy, so that it needs no state and serves
several processes at once (a run paused in one and resumed in another):
- the last message is a tool result → it answers in text, quoting that result
  (`Tool said: …`), so a test sees what reached the model;
- otherwise → it calls the request's first tool with the JSON object written in the last user
  message (`refund {"order_id": "ORD-7", "amount": 80}`), with a fresh call id.
Every request body is recorded.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live_app import free_port


class FakeToolModel:
    def __init__(self, first_port: int) -> None:
        self.port = free_port(first_port, first_port + 10)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeToolModel:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def tool_results_seen(self) -> list[str]:
        """Every tool result the model was shown, in order."""
        with self._lock:
            bodies = list(self.requests)
        seen: list[str] = []
        for body in bodies:
            messages = body.get("messages") or []
            if messages and messages[-1].get("role") == "tool":
                seen.append(_text(messages[-1].get("content")))
        return seen

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        message: dict[str, Any]
        if last.get("role") == "tool":
            message = {"role": "assistant", "content": f"Tool said: {_text(last.get('content'))}"}
            finish = "stop"
        else:
            text = _text(last.get("content"))
            arguments = text[text.index("{") :] if "{" in text else "{}"
            tool = (body.get("tools") or [{}])[0].get("function", {}).get("name", "none")
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": tool, "arguments": arguments},
                    }
                ],
            }
            finish = "tool_calls"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "fake")),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _handler(fake: FakeToolModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            self._send(200, fake.reply(json.loads(raw or b"{}")))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
