"""An adapter over llmcalls' fake provider: answers that depend on the request.

The fake provider (tests/llmcalls/fake_provider.py) answers every request with one fixed text,
which cannot tell a good prompt from a bad one. This subclass keeps all of its behaviour (the
scripts, 429s, delays …) and only makes the answer text a function of the request body:
`responder(body) -> str`. It relies on the handler recording a request (`_record`) in the same
thread, just before it builds the answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tests.llmcalls.fake_provider import FakeProvider, Received

Responder = Callable[[dict[str, Any]], str]


class ScriptedProvider(FakeProvider):
    def __init__(self, port: int, responder: Responder | None = None) -> None:
        self._local = threading.local()
        self._fixed = "Hello from the fake provider."
        super().__init__(port)
        self.responder = responder

    @property  # type: ignore[override]
    def answer(self) -> str:
        body = getattr(self._local, "body", None)
        if self.responder is not None and body is not None:
            return self.responder(body)
        return self._fixed

    @answer.setter
    def answer(self, value: str) -> None:
        self._fixed = value

    def _record(self, received: Received) -> None:
        self._local.body = received.body
        super()._record(received)


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def system_text(body: dict[str, Any]) -> str:
    return "\n".join(
        str(m.get("content") or "") for m in body.get("messages") or [] if m.get("role") == "system"
    )
