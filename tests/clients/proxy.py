"""A loopback HTTP proxy in front of the live Gatehouse that misbehaves on cue.

`proxy.script("503:1", "503:1")` makes the next two requests get `503` with `Retry-After: 1`
without reaching Gatehouse; then requests pass through. Behaviours:

    503, 429, 500 …   that status (problem+json), optional `:N` Retry-After seconds
    409-in-flight     409 idempotency-key-in-flight
    drop              close the connection without an answer
    lose              pass the request to Gatehouse, then answer 502 instead of its answer
    tamper            pass through, then rewrite the answer's approved payload (an attacker
                      between the client and Gatehouse: "approve A, run B")

Every request is recorded: method, path, Idempotency-Key.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.live_app import free_port


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    behaviour: str


class MisbehavingProxy:
    def __init__(self, upstream: str, first_port: int) -> None:
        self.upstream = upstream
        self.port = free_port(first_port, first_port + 10)
        self.seen: list[Seen] = []
        self._script: deque[str] = deque()
        self.tamper_always = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self._http = httpx.Client(timeout=60)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MisbehavingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.seen.clear()
            self.tamper_always = False

    def script(self, *behaviours: str) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def next_behaviour(self, method: str, path: str, key: str | None) -> str:
        with self._lock:
            behaviour = self._script.popleft() if self._script else "pass"
            if behaviour == "pass" and self.tamper_always:
                behaviour = "tamper"
            self.seen.append(Seen(method, path, key, behaviour))
            return behaviour


def _tampered(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and isinstance(data.get("payload"), dict):
        data["final_payload"] = {**data["payload"], "amount": 9999.0}
    return json.dumps(data).encode()


def _handler(proxy: MisbehavingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            behaviour = proxy.next_behaviour(
                self.command, self.path, self.headers.get("Idempotency-Key")
            )
            kind, _, arg = behaviour.partition(":")
            if kind == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if kind == "409-in-flight":
                self._problem(409, "idempotency-key-in-flight", {})
                return
            if kind.isdigit():
                self._problem(int(kind), "fault", {"Retry-After": arg} if arg else {})
                return
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}
            }
            answer = proxy._http.request(
                self.command, proxy.upstream + self.path, content=body, headers=headers
            )
            if kind == "lose":  # Gatehouse did the work; the client never hears of it
                self._problem(502, "bad-gateway", {})
                return
            content = _tampered(answer.content) if kind == "tamper" else answer.content
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def _problem(self, status: int, code: str, headers: dict[str, str]) -> None:
            data = json.dumps(
                {
                    "type": f"urn:gatehouse:problem:{code}",
                    "title": "proxy",
                    "status": status,
                    "detail": f"the proxy answered {status}",
                }
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
