"""`manage.py run_stack` in the embedded default: SQLite, the folder broker, no server at all.

Starts the real command as a subprocess, executes an approved proposal through it, and stops it
with SIGINT: every child must be gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.execution_support import ROOT, wait_until
from tests.live_app import any_free_port
from tests.stack import manage

pytestmark = pytest.mark.slow

CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    executor: {kind: callable, path: "approvals.demo_executors.record"}
    payload_schema: {type: object}
"""


def children_of(pid: int) -> list[int]:
    """Processes whose session is one started by run_stack (each child leads its own)."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,sid"], capture_output=True, text=True).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines()[1:]]
    sessions = {p for p, ppid, _ in rows if ppid == pid}
    return [p for p, _, sid in rows if sid in sessions]


def test_run_stack_executes_in_the_embedded_default_and_stops_every_child(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}} | {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "BROKER_DIR": str(tmp_path / "broker"),
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    created = json.loads(
        manage(env, "create_service", "demo", "--action-types", "refund.issue", "--json")
    )
    port = any_free_port()
    log = (tmp_path / "stack.log").open("wb")
    stack = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_stack",
            "--port",
            str(port),
            "--extra",
            "idle=sleep 300",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {created['api_key']}"})

        def up() -> bool:
            try:
                return api.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="the web server")
        response = api.post(
            "/api/v1/proposals",
            json={
                "action_type": "refund.issue",
                "payload": {"n": 1},
                "confidence": 0.9,
                "summary": "s",
            },
        )
        assert response.status_code == 201, response.text
        pk = response.json()["id"]
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import User\n"
            "from approvals import services\nfrom approvals.models import Proposal\n"
            "rita = User.objects.create_superuser('rita')\n"
            f"proposal = Proposal.objects.get(pk='{pk}')\n"
            "services.claim_acquire(proposal_id=proposal.pk, reviewer=rita)\n"
            "services.proposal_decide(proposal=proposal, reviewer=rita, verdict='approve')\n",
        )

        def executed() -> Any:
            body = api.get(f"/api/v1/proposals/{pk}").json()
            return body["state"] == "executed" and body

        body = wait_until(executed, timeout=60, what="execution through the folder broker")
        assert body["execution"]["status"] == "succeeded"
        processes = children_of(stack.pid)
        assert len(processes) >= 4  # web, worker (+ its pool), beat, idle
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=40)
        log.close()
        print((tmp_path / "stack.log").read_text()[-5000:])  # shown by pytest on a failure
    output = (tmp_path / "stack.log").read_text()
    assert "worker  |" in output and "beat    |" in output
    assert "All stopped." in output
    assert all(not Path(f"/proc/{p}").exists() for p in processes)
