"""The production processes as an operator runs them: the Procfile's lines, literally, each in
a process group of its own, bounded in time and stopped at teardown.

Shared by the production smoke test (tests/deploy/) and the backing-service faults
(tests/faults/test_backing_services.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.live_app import first_free

ROOT = Path(__file__).resolve().parent.parent
LIFETIME = 300  # seconds: every process stops by itself after this even if pytest dies


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([a-z]+):\s*(.+)$", line.strip())
        if match:
            lines[match.group(1)] = match.group(2)
    return lines


def run_line(command: str, *, env: dict[str, str], log: Path, timeout: float) -> str:
    """Run a Procfile line to its end under `sh`, as a PaaS does (variables expanded by the
    shell); return its output, failing with it when the command fails."""
    with log.open("ab") as out:
        result = subprocess.run(
            ["sh", "-c", command],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    text = log.read_text(errors="replace")
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{text[-3000:]}"
    return text


class Process:
    """One long-running Procfile line under `sh -c exec …`, with its output in a log file."""

    def __init__(self, name: str, command: str, *, env: dict[str, str], logdir: Path) -> None:
        self.name, self.command, self.env = name, command, env
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                ["timeout", str(LIFETIME), "sh", "-c", f"exec {self.command}"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None


NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def nginx(*, port: int, web_port: int, live_port: int, logdir: Path) -> Process:
    """Debian's nginx running deploy/nginx.conf as shipped, with only its ports replaced, in
    front of the Procfile's `web` and `live` processes; on loopback, in the foreground."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), (
        "nginx is missing: apt-get install -y nginx-light (make test does it)"
    )
    shipped = NGINX_CONF.read_text()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{web_port};"),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{live_port};"),
    ):
        assert shipped.count(old) == 1, f"{old!r} not once in {NGINX_CONF}"
        shipped = shipped.replace(old, new)
    prefix = logdir / "nginx"
    prefix.mkdir(exist_ok=True)
    (prefix / "gatehouse.conf").write_text(shipped)
    # As root, nginx's workers would switch to `nobody`, who cannot enter pytest's tmp dirs.
    user = "user root root;\n" if os.getuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  include {prefix}/gatehouse.conf;\n}}\n"
    )
    command = f"{binary} -p {prefix} -c {prefix}/nginx.conf -e {prefix}/error.log"
    return Process("nginx", command, env=dict(os.environ), logdir=logdir)


def restartable_port() -> int:
    """A free port for a server the test stops and starts again on it: below the kernel's
    ephemeral range. A kernel-chosen port lies in that range, so while such a server is down
    any process's outgoing connection may take the port as its own end, and the restart fails
    to bind (seen with three pytest-xdist workers connecting on loopback)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        first_ephemeral = int(ranges.read().split()[0])
    low = max(1024, first_ephemeral - 12000)
    return first_free(random.sample(range(low, first_ephemeral), 200))


def wait_for_http(url: str, *, seconds: float, process: Process | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise AssertionError(f"{process.name} exited:\n{process.log()[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered at {url} within {seconds} s")


class PostgresDatabase:
    """A fresh database named after the test database, on the same server, dropped afterwards."""

    def __init__(self, base_url: str, suffix: str) -> None:
        name = base_url.rsplit("/", 1)[1].split("?")[0] or "gatehouse"
        self.name = f"{name}_{suffix}"
        self.server = base_url.rsplit("/", 1)[0]
        self.url = f"{self.server}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def create(self) -> PostgresDatabase:
        self.drop()
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# A refund action type executed by a webhook, and a rule approving small confident refunds.
REFUND_CONFIG = """
action_types:
  - key: refund.issue
    title: Issue a refund
    irreversible: false
    risk: medium
    review_ttl: 24h
    executor: {{kind: webhook, url: "{url}"}}
    reviewer_group: support
    payload_schema:
      type: object
      required: [order_id, amount]
      properties: {{order_id: {{type: string}}, amount: {{type: number, minimum: 0}}}}
rules:
  - name: small-confident-refunds
    action_type: refund.issue
    priority: 10
    when: "confidence >= 0.9 && payload.amount <= 50.0"
    outcome: approve
    reason: Small refund, model confident
"""


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """`python manage.py …` with `env`; its stdout, failing with its output when it fails."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def release_and_configure(env: dict[str, str], tmp: Path, *, webhook_url: str) -> dict[str, str]:
    """The Procfile's release line, the refund configuration, and a service; returns the
    service's `api_key` and `webhook_secret`.

    `env` gets a STATIC_ROOT in `tmp` unless it names one: the release line's collectstatic
    writes there, not into the checkout's staticfiles/ whose manifest other tests read meanwhile,
    and the processes started with `env` serve from it."""
    env.setdefault("STATIC_ROOT", str(tmp / "staticfiles"))
    run_line(procfile()["release"], env=env, log=tmp / "release.log", timeout=240)
    config = tmp / "gatehouse.yaml"
    config.write_text(REFUND_CONFIG.format(url=webhook_url))
    manage(env, "apply", str(config))
    created = manage(env, "create_service", "shop", "--action-types", "refund.issue", "--json")
    return dict(json.loads(created))


def refund(amount: float, confidence: float, external_id: str = "") -> dict[str, object]:
    body: dict[str, object] = {
        "action_type": "refund.issue",
        "payload": {"order_id": f"ORD-{int(amount * 100)}", "amount": amount},
        "confidence": confidence,
        "summary": f"Refund {amount}",
    }
    if external_id:
        body["external_id"] = external_id
    return body
