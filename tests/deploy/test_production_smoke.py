"""The README's "Deployment for scale", followed literally, gives a working site.

A fresh database; the README's production variables (host names made local); the Procfile's
`release:` line; then its `web` (WSGI), `live` (ASGI), `worker` and `beat` lines as separate
processes behind Debian's nginx running deploy/nginx.conf, the one origin. A real browser
logs in and opens every page of the navigation, the admin and the API docs; one proposal is
approved by a rule and one by a reviewer in the browser, and both webhooks arrive signed.
No 5xx anywhere, no console error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests import stack
from tests.execution_support import Receiver, wait_until
from tests.live_app import CHROMIUM_ARGS, any_free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "smoke-test-password-4711"
# Where the README's host names point in this test; everything else is the README's value.
LOCAL = "127.0.0.1"


def readme_production_env() -> dict[str, str]:
    """The `export NAME=value` lines of the README's deployment section, as written."""
    readme = (stack.ROOT / "README.md").read_text()
    section = readme.split("## Deployment for scale", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\s*export ([A-Z_]+)=(\S+)", section, flags=re.MULTILINE))


def test_the_readme_lists_every_step_and_variable() -> None:
    env = readme_production_env()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"} <= set(env)
    assert env["DEBUG"] == "0"
    assert set(stack.procfile()) == {"release", "web", "live", "worker", "beat"}
    readme = (stack.ROOT / "README.md").read_text()
    assert stack.procfile()["release"] in readme.replace("&&\n   ", "&& ")


def production_env(
    *, port: int, web_port: int, live_port: int, database_url: str, tmp: Path
) -> dict[str, str]:
    """`port` is the proxy's (the origin); `web_port` and `live_port` the two servers'."""
    values = readme_production_env()
    origin = f"http://{LOCAL}:{port}"
    local = {
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "SECRET_KEY": "smoke-" + "s3cr3t-" * 8,
        "ALLOWED_HOSTS": LOCAL,
        # The browser plays the TLS-terminating load balancer: it sends X-Forwarded-Proto.
        "CSRF_TRUSTED_ORIGINS": origin,
        "SITE_URL": origin,
        "PORT": str(web_port),
        "LIVE_PORT": str(live_port),
    }
    unknown = set(values) - set(local) - {"DEBUG", "BEHIND_TLS_PROXY", "SECURE_SSL_REDIRECT"}
    assert not unknown, f"the README names variables this test does not set: {unknown}"
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env.update(values)
    env.update(local)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            # Test-only: the webhook receiver listens on loopback.
            "GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS": "1",
            "WEB_CONCURRENCY": "1",
            "WEB_THREADS": "4",
            # Fewer pooled connections than the proxy test's long polls: waiting holds none.
            "DB_POOL_MAX": "4",
            "WORKER_CONCURRENCY": "2",
            "BEAT_SCHEDULE_FILE": str(tmp / "beat-schedule"),
        }
    )
    return env


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The webhook target of the deployed stack, for the module's tests as the stack is."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[dict[str, Any]]:
    """The README's deployment, started once for the module's tests (40 s of start-up each)."""
    tmp_path = tmp_path_factory.mktemp("deployed")
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)")
    database = stack.PostgresDatabase(os.environ["DATABASE_URL"], "smoke").create()
    port, web_port, live_port = any_free_port(), any_free_port(), any_free_port()
    env = production_env(
        port=port, web_port=web_port, live_port=live_port, database_url=database.url, tmp=tmp_path
    )
    redis.Redis.from_url(env["REDIS_URL"]).delete("celery")  # what other tests left queued
    lines = stack.procfile()
    processes: list[stack.Process] = []
    try:
        created = stack.release_and_configure(env, tmp_path, webhook_url=receiver.url("/execute"))
        receiver.secret = created["webhook_secret"]
        people = {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
        stack.manage(
            people,
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        )
        stack.manage(
            people,
            "create_reviewer",
            "rita",
            "--action-types",
            "refund.issue",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        for name in ("web", "live", "worker", "beat"):
            processes.append(stack.Process(name, lines[name], env=env, logdir=tmp_path).start())
        proxy = stack.nginx(port=port, web_port=web_port, live_port=live_port, logdir=tmp_path)
        processes.append(proxy.start())
        stack.wait_for_http(f"http://{LOCAL}:{web_port}/healthz", seconds=30, process=processes[0])
        stack.wait_for_http(f"http://{LOCAL}:{live_port}/healthz", seconds=30, process=processes[1])
        base = f"http://{LOCAL}:{port}"
        stack.wait_for_http(f"{base}/healthz", seconds=10, process=proxy)
        yield {"base": base, "key": created["api_key"], "env": env, "processes": processes}
    finally:
        for process in processes:
            process.stop()
        database.drop()


def submit(deployed: dict[str, Any], amount: float, confidence: float) -> dict[str, Any]:
    response = httpx.post(
        f"{deployed['base']}/api/v1/proposals",
        json=stack.refund(amount, confidence),
        headers={"Authorization": f"Bearer {deployed['key']}", "X-Forwarded-Proto": "https"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_readme_deployment_serves_every_page_and_executes_both_paths(
    deployed: dict[str, Any], receiver: Receiver
) -> None:
    from playwright.sync_api import sync_playwright

    base = deployed["base"]
    by_rule = submit(deployed, 18.9, 0.95)
    assert by_rule["state"] == "approved"
    waiting = submit(deployed, 480.0, 0.7)
    assert waiting["state"] == "pending_review"
    wait_until(
        lambda: f"msg_{by_rule['id'].replace('-', '')}_execute" in receiver.distinct_ids(),
        timeout=30,
        what="the rule-approved proposal's signed webhook",
    )

    failures: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            def login(username: str) -> Any:
                context = browser.new_context(
                    viewport={"width": 1280, "height": 860},
                    extra_http_headers={"X-Forwarded-Proto": "https"},
                )
                page = context.new_page()
                page.set_default_timeout(15_000)
                page.on(
                    "response",
                    lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 500 else None,
                )
                page.on(
                    "console",
                    lambda m: (
                        failures.append(f"console on {page.url}: {m.text} {m.location}")
                        if m.type == "error"
                        else None
                    ),
                )
                page.on("pageerror", lambda e: failures.append(f"page error: {e}"))
                page.goto(f"{base}/login/")
                page.fill("#id_username", username)
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{base}/")
                return page

            admin = login("admin")
            nav = admin.eval_on_selector_all("nav a[href^='/']", "els => els.map(e => e.href)")
            pages = [*dict.fromkeys(nav), f"{base}/admin/", f"{base}/api/v1/docs"]
            assert len(pages) >= 7, pages
            for url in pages:
                response = admin.goto(url)
                assert response is not None and response.status == 200, url
                admin.wait_for_load_state("networkidle")
            admin.wait_for_selector("#swagger-ui .opblock", state="attached")

            rita = login("rita")
            rita.wait_for_selector(f"[data-id='{waiting['id']}'], #queue-rows a")
            rita.goto(f"{base}/proposals/{waiting['id']}/")
            rita.click("#approve button[type=submit]")
            rita.wait_for_url(f"{base}/")  # decided: back to the queue
            rita.wait_for_load_state("networkidle")
        finally:
            browser.close()

    wait_until(
        lambda: f"msg_{waiting['id'].replace('-', '')}_execute" in receiver.distinct_ids(),
        timeout=30,
        what="the reviewer-approved proposal's signed webhook",
    )
    assert all(d.verified for d in receiver.of()), [d.error for d in receiver.of()]
    assert not failures, "\n".join(failures)
    for process in deployed["processes"]:
        assert process.alive(), f"{process.name} exited:\n{process.log()[-2000:]}"
        assert "Traceback" not in process.log(), process.log()[-3000:]


def test_check_deploy_with_the_readme_variables_reports_nothing() -> None:
    env = {**os.environ, **readme_production_env()}
    env["SECRET_KEY"] = "readme-" + "generated-secret-" * 3  # what the README's command prints
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=stack.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


class Reviewer:
    """A reviewer's session through the proxy, by hand: the cookies are `Secure` (the browser
    plays the TLS load balancer), which httpx would not send over plain http."""

    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        login = self.get("/login/")
        self.post("/login/", {"username": username, "password": PASSWORD}, page=login)
        assert "sessionid" in self.cookies, "login through the proxy set no session"

    def _headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"X-Forwarded-Proto": "https", "Cookie": cookie, "Origin": self.base}

    def get(self, path: str) -> httpx.Response:
        response = httpx.get(self.base + path, headers=self._headers(), timeout=10)
        assert response.status_code == 200, (path, response.status_code)
        self.cookies.update(response.cookies)
        return response

    def post(self, path: str, data: dict[str, str], *, page: httpx.Response) -> httpx.Response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token, f"no CSRF token on {page.url}"
        response = httpx.post(
            self.base + path,
            data={**data, "csrfmiddlewaretoken": token.group(1)},
            headers=self._headers(),
            timeout=10,
        )
        assert response.status_code in (200, 302), (path, response.status_code, response.text)
        self.cookies.update(response.cookies)
        return response


def test_the_proxy_serves_pages_api_websocket_and_long_polls_on_one_origin(
    deployed: dict[str, Any],
) -> None:
    """deploy/nginx.conf in front of `web` (WSGI: 1 process, its default threads) and `live`
    (ASGI): a page, a submit, a websocket push, and more long polls than `web` has threads,
    which must not block pages or submits while they wait."""
    from concurrent.futures import ThreadPoolExecutor

    from websockets.sync.client import connect

    base = deployed["base"]
    rita = Reviewer(base, "rita")
    assert "queue" in rita.get("/").text.lower()
    origin = base
    socket_url = base.replace("http://", "ws://") + "/ws/queue/"
    headers = {"Cookie": f"sessionid={rita.cookies['sessionid']}", "Origin": origin}
    with connect(socket_url, additional_headers=headers, open_timeout=10) as ws:
        waiting = submit(deployed, 480.0, 0.7)
        assert waiting["state"] == "pending_review"
        pushed = ws.recv(timeout=15)
        assert waiting["id"] in str(pushed)

    # A foreign origin is refused through the proxy too.
    with pytest.raises(Exception, match="403"):
        connect(socket_url, additional_headers={**headers, "Origin": "http://evil.test"})

    waiters = 3 * int(deployed["env"]["WEB_THREADS"])  # web runs 1 process (WEB_CONCURRENCY)
    auth = {"Authorization": f"Bearer {deployed['key']}", "X-Forwarded-Proto": "https"}

    def long_poll() -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        response = httpx.get(
            f"{base}/api/v1/proposals/{waiting['id']}?wait=25", headers=auth, timeout=40
        )
        assert response.status_code == 200, response.text
        return time.monotonic() - started, response.json()

    with ThreadPoolExecutor(max_workers=waiters) as pool:
        polls = [pool.submit(long_poll) for _ in range(waiters)]
        time.sleep(2)  # all of them waiting now
        assert not any(p.done() for p in polls), "a long poll returned before the decision"
        started = time.monotonic()
        rita.get("/history/")
        assert submit(deployed, 12.0, 0.95)["state"] == "approved"
        assert time.monotonic() - started < 5, "waiters blocked the WSGI process"
        detail = rita.get(f"/proposals/{waiting['id']}/")
        payload_hash = re.search(r'name="payload_hash" value="([^"]+)"', detail.text)
        assert payload_hash
        rita.post(f"/proposals/{waiting['id']}/claim/", {}, page=detail)  # as the page does
        rita.post(
            f"/proposals/{waiting['id']}/decide/",
            {"verdict": "approve", "payload_hash": payload_hash.group(1), "comment": ""},
            page=detail,
        )
        results = [p.result(timeout=40) for p in polls]
    # Approved, and by the time some of them read it maybe already executed by the worker.
    approved = {"approved", "executing", "executed"}
    assert all(body["state"] in approved for _, body in results), results[0]
    assert max(seconds for seconds, _ in results) < 15, "long polls ended by timeout, not decision"
