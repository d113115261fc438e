"""A fake OpenAI-compatible provider: a real HTTP server on loopback, in a thread.

Several providers share one server; each has its own path prefix: base URL
`http://127.0.0.1:PORT/<provider>/v1`. What a request gets is decided by the next entry of the
script for its (provider, model), or else by the model's name:

    ok            a normal answer (streamed when the request asks for it)
    delay:0.3     answer after 0.3 s
    429:2         429 with Retry-After: 2
    500           an internal server error (any other status code too: 400, 401, 404 …)
    hang          never answer (until the server stops)
    cut           stream two chunks, then drop the connection mid-body (cut:0 before any chunk)
    stall         stream two chunks, then stop sending (until the server stops)
    malformed     200 with a body that is not JSON
    length        a normal answer with finish_reason "length" (truncated)
    echo-auth     401 whose message repeats the Authorization header it received

`POST /<provider>/v1/embeddings` answers with the demo model's embeddings
(approvals.demo_model.embedding: paraphrases close, other questions apart); `delay:…` and status
codes apply there too.

Every request is recorded (provider, model, body, time) so tests can check what was tried.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from approvals.demo_model import embeddings_response
from foundation.httpserver import LoopbackHTTPServer


@dataclass
class Received:
    provider: str
    model: str
    body: dict[str, Any]
    at: float
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    ANSWER = "Hello from the fake provider."

    def __init__(self, port: int) -> None:
        self.port = port
        self.answer = self.ANSWER
        self.requests: list[Received] = []
        self._scripts: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.usage = {"prompt_tokens": 12, "completion_tokens": 7, "cached_tokens": 0}

    # --- control ---------------------------------------------------------------------------

    def base_url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.port}/{provider}/v1"

    def script(self, provider: str, model: str, *behaviours: str) -> None:
        """Queue behaviours for the next requests to (provider, model); then the name decides."""
        with self._lock:
            self._scripts[(provider, model)].extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.answer = self.ANSWER
            self.usage = {"prompt_tokens": 12, "completion_tokens": 7, "cached_tokens": 0}

    def tried(self) -> list[str]:
        return [f"{r.provider}/{r.model}" for r in self.requests]

    def start(self, *, tries: int = 10) -> FakeProvider:
        """Listen on `port`, or on one of the next `tries - 1` ports if it is taken."""
        self._stop.clear()
        for port in range(self.port, self.port + tries):
            try:
                self._server = LoopbackHTTPServer(("127.0.0.1", port), _handler_for(self))
            except OSError:
                continue
            self.port = port
            break
        else:
            raise OSError(f"ports {self.port}-{self.port + tries - 1} are all taken")
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _next_behaviour(self, provider: str, model: str) -> str:
        with self._lock:
            queue = self._scripts.get((provider, model))
            if queue:
                return queue.popleft()
        kind = model.split(":")[0]
        return model if kind in BEHAVIOURS or kind.isdigit() else "ok"

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)


BEHAVIOURS = {
    "ok",
    "delay",
    "429",
    "500",
    "hang",
    "cut",
    "stall",
    "malformed",
    "length",
    "echo-auth",
}


def _handler_for(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[1:] == ["v1", "models"]:
                data = [{"id": m, "object": "model", "owned_by": parts[0]} for m in ("ok", "small")]
                self._json(200, {"object": "list", "data": data})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if len(parts) == 3 and parts[1:] == ["v1", "embeddings"]:
                self._embeddings(parts[0], json.loads(raw or b"{}"))
                return
            if len(parts) != 4 or parts[1:] != ["v1", "chat", "completions"]:
                self._json(404, {"error": {"message": "not found"}})
                return
            body = json.loads(raw or b"{}")
            provider, model = parts[0], str(body.get("model", ""))
            fake._record(
                Received(provider, model, body, time.monotonic(), dict(self.headers.items()))
            )
            behaviour = fake._next_behaviour(provider, model)
            kind, _, arg = behaviour.partition(":")
            if kind == "delay":
                time.sleep(float(arg or 0.2))
                kind = "ok"
            if kind == "429":
                self._json(
                    429,
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    {"Retry-After": arg or "1"},
                )
            elif kind == "echo-auth":  # a provider that repeats the key it was sent
                message = f"Incorrect API key provided: {self.headers.get('Authorization')}"
                self._json(401, {"error": {"message": message, "type": "invalid_request_error"}})
            elif kind.isdigit():
                self._json(int(kind), {"error": {"message": f"fake {kind}", "type": "fake"}})
            elif kind == "hang":
                fake._stop.wait(60)
                self.close_connection = True
            elif kind == "malformed":
                self._raw(200, b'{"id": "chatcmpl-x", "choices": [', "application/json")
            elif body.get("stream"):
                self._stream(
                    model,
                    body,
                    stop_after=int(arg or 2) if kind in {"cut", "stall"} else None,
                    hang=kind == "stall",
                )
            else:
                finish = "length" if kind == "length" else "stop"
                self._json(200, _completion(fake, model, finish), {"x-request-id": "req_fake_1"})

        def _embeddings(self, provider: str, body: dict[str, Any]) -> None:
            """The demo model's embeddings (approvals.demo_model.embedding): paraphrases close."""
            model = str(body.get("model", ""))
            fake._record(
                Received(provider, model, body, time.monotonic(), dict(self.headers.items()))
            )
            kind, _, arg = fake._next_behaviour(provider, model).partition(":")
            if kind == "delay":
                time.sleep(float(arg or 0.2))
            elif kind.isdigit():
                self._json(int(kind), {"error": {"message": f"fake {kind}", "type": "fake"}})
                return
            self._json(200, embeddings_response(body), {"x-request-id": "req_fake_embedding"})

        def _stream(
            self, model: str, body: dict[str, Any], *, stop_after: int | None, hang: bool
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-request-id", "req_fake_stream")
            self.end_headers()
            words = fake.answer.split(" ")
            for index, word in enumerate(words):
                if index == stop_after:
                    if hang:
                        fake._stop.wait(60)
                    # Close mid-body: the chunked message never ends.
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                delta = {"content": word if index == 0 else " " + word}
                if index == 0:
                    delta["role"] = "assistant"
                self._chunk(_chunk(model, delta, None))
            self._chunk(_chunk(model, {}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage_chunk = _chunk(model, None, None)
                usage_chunk["choices"] = []
                usage_chunk["usage"] = _usage(fake)
                self._chunk(usage_chunk)
            self._send_chunk(b"data: [DONE]\n\n")
            self._send_chunk(b"")

        def _chunk(self, data: dict[str, Any]) -> None:
            self._send_chunk(b"data: " + json.dumps(data).encode() + b"\n\n")

        def _send_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
            self._raw(status, json.dumps(data).encode(), "application/json", headers)

        def _raw(
            self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _usage(fake: FakeProvider) -> dict[str, Any]:
    u = fake.usage
    return {
        "prompt_tokens": u["prompt_tokens"],
        "completion_tokens": u["completion_tokens"],
        "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": u["cached_tokens"]},
    }


def _completion(fake: FakeProvider, model: str, finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": fake.answer},
                "finish_reason": finish,
            }
        ],
        "usage": _usage(fake),
    }


def _chunk(model: str, delta: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake-stream",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }


if __name__ == "__main__":
    # A standalone fake for benchmarks: `python -m tests.llmcalls.fake_provider PORT SECONDS`.
    import sys

    port, seconds = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 600
    fake = FakeProvider(port).start(tries=1)  # the benchmark expects exactly this port
    print("ready", flush=True)
    try:
        time.sleep(seconds)
    finally:
        fake.stop()
