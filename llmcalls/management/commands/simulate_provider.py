"""`python manage.py simulate_provider [--port 18560]`: the demo's model, as an OpenAI-compatible
HTTP server on loopback.

It answers `POST /v1/chat/completions` (and lists `GET /v1/models`) with the demo's simulated
support model (approvals/demo_model.py): a proposal for the ticket in the last user message, with
token counts and a latency of a few hundred milliseconds, so that the model-call log, its costs
and latencies, and eval runs have something real to show. `make run` starts it; config/demo.yaml
routes the demo's features to it. `POST /v1/embeddings` gives the demo model's embeddings (a hashed
bag of words, paraphrases close) for the semantic cache. Never a model to rely on: it is a script.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from approvals import demo_model
from foundation.httpserver import LoopbackHTTPServer


def completion(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """An OpenAI chat completion answering `body` (a chat completions request)."""
    given = body.get("messages")
    messages = [m for m in given if isinstance(m, dict)] if isinstance(given, list) else []
    content = demo_model.answer(messages)
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 8
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or "sim"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt_tokens + len(content) // 4 + 1,
        },
    }


def make_server(host: str, port: int, *, latency: tuple[float, float]) -> LoopbackHTTPServer:
    rng = random.Random()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/v1/models"):
                self._send(200, {"object": "list", "data": [{"id": "sim", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                body = None
            if self.path.rstrip("/").endswith("/embeddings") and isinstance(body, dict):
                self._send(200, demo_model.embeddings_response(body))
                return
            if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(
                body, dict
            ):
                self._send(400, {"error": {"message": "bad request", "type": "invalid_request"}})
                return
            if body.get("stream"):
                self._send(400, {"error": {"message": "no streaming", "type": "invalid_request"}})
                return
            time.sleep(rng.uniform(*latency))
            self._send(200, completion(body, rng))

    return LoopbackHTTPServer((host, port), Handler)


class Command(BaseCommand):
    help = "Serve the demo's simulated model as an OpenAI-compatible API on loopback."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=18560)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--latency", type=float, nargs=2, default=(0.15, 0.9), metavar=("MIN", "MAX")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = make_server(options["host"], options["port"], latency=tuple(options["latency"]))
        self.stdout.write(
            f"Simulated model at http://{options['host']}:{options['port']}/v1 (Ctrl-C stops it)"
        )
        try:
            server.serve_forever()
        finally:
            server.server_close()
