"""Browser tests: the app under uvicorn (the production ASGI server) on the test database and
Redis, driven by Playwright through Debian's chromium.

The server is a separate process, so the data a test creates must be committed: these tests
use transactional databases. It binds 127.0.0.1 on BROWSER_TEST_PORT and is stopped at the end
of the session (and by `timeout` if the session dies).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.live_app import CHROMIUM_ARGS
from tests.stack import restartable_port

CHROMIUM = "/usr/bin/chromium"

# A fixed port when asked (each developer has a range; pytest-xdist's worker gwN takes the
# port + N), else a free one below the ephemeral range: a test stops the server and starts it
# again on its port (tests.stack.restartable_port).
PORT = (
    int(os.environ["BROWSER_TEST_PORT"]) + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    if os.environ.get("BROWSER_TEST_PORT")
    else restartable_port()
)
# Seconds; the server stops by itself after this even if pytest dies. Under pytest-xdist a
# worker's first browser test may come early in the run and its last near the end.
SERVER_LIFETIME = 3600


def _database_url() -> str:
    s = connection.settings_dict
    password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
    return f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"uvicorn did not listen on 127.0.0.1:{port} within {seconds} s")


class LiveServer:
    """uvicorn serving the app against the test database; can be stopped and started again."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = open(_server_log(), "w")  # noqa: SIM115

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "timeout",
                str(SERVER_LIFETIME),
                str(Path(sys.executable).parent / "uvicorn"),
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "info",  # every request's answer: a failed test shows the server's side
            ],
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, 30)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


@pytest.fixture(scope="session")
def asgi_server(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    if connection.vendor != "postgresql":
        pytest.fail("browser tests run against PostgreSQL: set DATABASE_URL")
    with django_db_blocker.unblock():
        url = _database_url()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_COOKIES": "0",
        "SECURE_HSTS_SECONDS": "0",
        # Every test starts from empty tables; a per-process cache would remember the last one.
        "HOT_PATH_CACHE_SECONDS": "0",
        "SITE_URL": f"http://127.0.0.1:{PORT}",
    }
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # collectstatic rewrites the manifest even when no file changed: under pytest-xdist,
        # each worker's server gets static files of its own, never the ones another worker's
        # collectstatic is rewriting (or the ones the other processes of the suite read).
        env["STATIC_ROOT"] = str(tmp_path_factory.mktemp("static"))
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        timeout=120,
    )
    server = LiveServer(env, PORT)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.log.close()


@pytest.fixture(scope="session")
def live_url(asgi_server: LiveServer) -> str:
    return asgi_server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Playwright's sync API keeps an event loop running in this thread, which makes Django
    refuse ORM calls from the test; they are plain sync calls, so that guard is lifted for
    the module's duration only."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def log_in(page: Any, live_url: str, username: str, password: str) -> None:
    """Sign in through the login form; the queue is then on screen."""
    page.goto(f"{live_url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#queue-rows")


_page_log = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed browser test's report carries what its pages saw (each request's answer,
    requests that got none, console messages) and the end of the server's log."""
    report = yield
    lines = item.stash.get(_page_log, None)
    if report.failed and lines:
        report.sections.append(("browser pages", "\n".join(lines[-400:])))
        log = _server_log()
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-150:]
            report.sections.append(("browser server log (end)", "\n".join(tail)))
    return report


def _server_log() -> Path:
    """The server's log: one per pytest-xdist worker, as each worker has a server of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return Path(settings.BASE_DIR) / f".browser-server{'-' + worker if worker else ''}.log"


def _record(page: Any, who: str, lines: list[str]) -> None:
    def add(text: str) -> None:
        now = time.time()
        lines.append(
            f"{time.strftime('%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d} {who}: {text}"
        )

    page.on("response", lambda r: add(f"{r.status} {r.request.method} {r.url}"))
    page.on("requestfailed", lambda r: add(f"no answer: {r.method} {r.url} ({r.failure})"))
    page.on("console", lambda m: add(f"console {m.type}: {m.text}"))
    page.on("websocket", lambda ws: add(f"websocket {ws.url}"))


@pytest.fixture
def open_as(
    browser: Any, live_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[str, str], Any]]:
    """Log a reviewer in, in a fresh browser context of their own, and open the queue."""
    contexts: list[Any] = []
    lines = request.node.stash.setdefault(_page_log, [])

    def login(username: str, password: str) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        page = context.new_page()
        _record(page, username, lines)
        page.set_default_timeout(10_000)
        log_in(page, live_url, username, password)
        page.wait_for_selector("#live-status[data-state=open]")
        return page

    yield login
    for context in contexts:
        context.close()


def wait_until_resynced(page: Any) -> None:
    """Wait until the page's two resyncs after its socket opened (static/js/reviewer.js: at once
    and ABSENCE_MEMORY_MS later) are answered and swapped in: until then a re-render may still
    replace what a test placed or is about to read. The page's own resource timings count its
    htmx requests (a queue or history page makes no other on its own)."""
    page.wait_for_function(
        """() => performance.getEntriesByType("resource")
                   .filter(e => e.initiatorType === "xmlhttprequest").length >= 2
                 && !document.querySelector(".htmx-request, .htmx-settling, .htmx-swapping")""",
        timeout=30_000,
    )


@pytest.fixture
def api_post(live_url: str) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    def post(key: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{live_url}/api/v1/proposals",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    return post
