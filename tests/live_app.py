"""The whole app under uvicorn in a thread, and a real browser reading a chart from it.

Shared by the llmcalls and evals page tests. Tests that use `live_app` need transactional
databases (their rows must be committed to be seen) and ALLOWED_HOSTS including 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pytest

CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port(first: int, last: int) -> int:
    """The first port of the range that nothing listens on (another run may hold one)."""
    return first_free(range(first, last))


def first_free(ports: Sequence[int]) -> int:
    """The first of these loopback ports that nothing holds."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"ports {min(ports)}-{max(ports)} are all taken")


def any_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(first_port: int, *, lifespan: Literal["auto", "on", "off"] = "off") -> Iterator[str]:
    import uvicorn

    from config.asgi import application

    port = free_port(first_port, first_port + 10)
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def read_chart(
    *, base_url: str, cookie: tuple[str, str], path: str, chart_id: str, read: str
) -> tuple[Any, int, list[str]]:
    """Open `path` as the session `cookie` under script-src 'self'; wait for the Chart.js chart
    `chart_id`; return what the JS expression `read` (given the chart as `c`) evaluates to, the
    size of the drawn canvas as a data URL, and any CSP violations the console reported."""
    sync_api = pytest.importorskip("playwright.sync_api")
    violations: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": cookie[0], "value": cookie[1], "url": base_url}])
            page = context.new_page()

            def with_csp(route: Any) -> None:
                response = route.fetch()
                headers = {**response.headers, "content-security-policy": CSP}
                route.fulfill(response=response, headers=headers)

            page.route(f"{base_url}{path}", with_csp)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{base_url}{path}")
            page.wait_for_function(f"() => window.Chart && Chart.getChart('{chart_id}')")
            value = page.evaluate(
                f"() => {{ const c = Chart.getChart('{chart_id}'); return {read}; }}"
            )
            drawn = page.evaluate(f"() => document.getElementById('{chart_id}').toDataURL().length")
        finally:
            browser.close()
    return value, drawn, violations
