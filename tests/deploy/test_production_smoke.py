"""The README's "Deployment for scale", followed literally, gives a working site.

A fresh database; the README's production variables (host names made local); the Procfile's
`release:` line; then its `web`, `worker` and `beat` lines as separate processes. A real browser
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests import stack
from tests.execution_support import Receiver, wait_until
from tests.live_app import CHROMIUM_ARGS

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
    assert set(stack.procfile()) == {"release", "web", "worker", "beat"}
    readme = (stack.ROOT / "README.md").read_text()
    assert stack.procfile()["release"] in readme.replace("&&\n   ", "&& ")


def production_env(*, port: int, database_url: str, tmp: Path) -> dict[str, str]:
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
        "PORT": str(port),
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
            "WORKER_CONCURRENCY": "2",
            "BEAT_SCHEDULE_FILE": str(tmp / "beat-schedule"),
        }
    )
    return env


@pytest.fixture
def deployed(tmp_path: Path, receiver: Receiver) -> Iterator[dict[str, Any]]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)")
    database = stack.PostgresDatabase(os.environ["DATABASE_URL"], "smoke").create()
    port = stack.free_port()
    env = production_env(port=port, database_url=database.url, tmp=tmp_path)
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
        for name in ("web", "worker", "beat"):
            processes.append(stack.Process(name, lines[name], env=env, logdir=tmp_path).start())
        base = f"http://{LOCAL}:{port}"
        stack.wait_for_http(f"{base}/healthz", seconds=30, process=processes[0])
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
