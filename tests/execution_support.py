"""Real moving parts for the execution tests: a Celery worker process and a webhook receiver.

The worker is `celery -A config worker` started as a subprocess against the test database and
the test Redis DB, bounded in time and killed at teardown. The receiver is an HTTP server on
loopback that verifies Standard Webhooks signatures with the `standardwebhooks` package (an
implementation independent of ours) and records each effect once per `webhook-id`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests import live_app

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --- the receiver ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str
    received_at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """Accepts POSTs, verifies them, and answers what `respond(delivery, nth)` says.

    `nth` counts verified deliveries of the same webhook-id (1 for the first). A 2xx reply
    records the effect the first time an id is seen; later deliveries of that id are
    duplicates and have no effect.
    """

    def __init__(self) -> None:
        self.port = live_app.any_free_port()
        self.secret = ""
        self.deliveries: list[Delivery] = []
        self.effects: dict[str, Any] = {}
        self.respond: Callable[[Delivery, int], Reply] = lambda delivery, nth: Reply()
        self.first_request = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def verify(self, body: bytes, headers: dict[str, str]) -> str:
        """'' if the signature verifies against our secret, else why not."""
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            return str(exc)
        return ""

    def distinct_ids(self, path: str | None = None) -> set[str]:
        return {d.webhook_id for d in self.of(path) if d.verified}

    def of(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                error = receiver.verify(body, headers)
                delivery = Delivery(self.path, headers, body, not error, error, time.monotonic())
                with receiver._lock:
                    receiver.deliveries.append(delivery)
                    nth = sum(
                        1
                        for d in receiver.deliveries
                        if d.verified and d.webhook_id == delivery.webhook_id
                    )
                receiver.first_request.set()
                if error:
                    reply = Reply(401)
                else:
                    reply = receiver.respond(delivery, nth)
                    if 200 <= reply.status < 300:
                        with receiver._lock:
                            receiver.effects.setdefault(delivery.webhook_id, delivery.json)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the caller hung up (timeout or a killed worker)

        return Handler


# --- the worker -----------------------------------------------------------------------------

#: Settings that make retries and the periodic jobs fast enough for a test.
FAST = {
    "EXECUTION_TIMEOUT": "1500ms",
    "EXECUTION_MAX_ATTEMPTS": "3",
    "EXECUTION_RETRY_BASE": "200ms",
    "EXECUTION_RETRY_MAX": "1s",
    "OUTBOX_RECONCILE_INTERVAL": "1s",
    "OUTBOX_RECONCILE_GRACE": "1s",
    "EXPIRY_INTERVAL": "1s",
    "GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS": "1",
}


def database_url() -> str:
    """The test database (pytest-django's test_<name>) as a DATABASE_URL for subprocesses."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgresql://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """`celery -A config worker` (with an embedded beat) as a process group of its own."""

    def __init__(
        self, workdir: Path, *, name: str, concurrency: int = 2, env: dict[str, str]
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.concurrency = concurrency
        self.env = {**os.environ, **FAST, "DATABASE_URL": database_url(), **env}
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, timeout: float = 40) -> Worker:
        self.starts += 1
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--beat",
                "--schedule",
                str(self.workdir / f"{self.name}-beat"),
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--hostname",
                f"{self.name}-{self.starts}@%h",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited:\n{self.log()[-3000:]}")
            return b" ready." in self.log_path.read_bytes()[offset:]

        wait_until(ready, timeout=timeout, what=f"worker {self.name} to be ready")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole group (main process, pool children, beat): no cleanup at all."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def warm_shutdown(self, *, timeout: float = 30) -> None:
        """SIGTERM to the main process alone, as a supervisor stops it: Celery's warm shutdown
        lets the pool finish the tasks it runs and starts nothing more."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
