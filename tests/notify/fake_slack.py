"""A fake Slack Web API: a real HTTP server on loopback that records every call.

It answers the methods Gatehouse uses (chat.postMessage, chat.update, chat.postEphemeral,
views.open, users.info, users.lookupByEmail) the way Slack does — HTTP 200 with `ok` true or
false — and refuses a call without the bot token. Tests read `calls` to see what was sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from foundation.httpserver import LoopbackHTTPServer

TOKEN = "xoxb-test-token"


@dataclass
class Call:
    method: str
    params: dict[str, Any]


@dataclass
class FakeSlack:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {email, confirmed}
    errors: dict[str, str] = field(default_factory=dict)  # method → error to answer with
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: LoopbackHTTPServer | None = None
    _ts: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def of(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c.params for c in self.calls if c.method == method]

    def answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(Call(method, params))
            if method in self.errors:
                return {"ok": False, "error": self.errors[method]}
            if method == "chat.postMessage":
                self._ts += 1
                return {
                    "ok": True,
                    "channel": params["channel"],
                    "ts": f"1700000000.{self._ts:06d}",
                }
            if method == "chat.update":
                return {"ok": True, "channel": params["channel"], "ts": params["ts"]}
            if method in {"chat.postEphemeral", "views.open"}:
                return {"ok": True}
            if method == "users.info":
                user = self.users.get(params.get("user", ""))
                if user is None:
                    return {"ok": False, "error": "user_not_found"}
                return {
                    "ok": True,
                    "user": {
                        "id": params["user"],
                        "is_email_confirmed": user.get("confirmed", True),
                        "profile": {"email": user["email"]},
                    },
                }
            if method == "users.lookupByEmail":
                for user_id, user in self.users.items():
                    if user["email"] == params.get("email"):
                        return {"ok": True, "user": {"id": user_id}}
                return {"ok": False, "error": "users_not_found"}
            return {"ok": False, "error": "unknown_method"}

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                method = parts.path.removeprefix("/api/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw or parts.query).items()}
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    body = {"ok": False, "error": "invalid_auth"}
                else:
                    body = fake.answer(method, params)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
