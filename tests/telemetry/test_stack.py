"""A running Gatehouse of several processes, seen from outside as an operator sees it.

uvicorn with two workers and a Celery worker with two pool processes (plus beat), all on the
test database, with METRICS_TOKEN and PROMETHEUS_MULTIPROC_DIR, LOG_FORMAT=json and
OTEL_EXPORTER_OTLP_ENDPOINT set. Then:
- a real Prometheus (Debian's `prometheus`, run here on loopback with a temporary config and
  storage) scrapes /metrics with the token; its HTTP API must give the submitted count and the
  pending gauge;
- a real OTLP/HTTP receiver decodes what every process exports: one trace must run from the
  submit in a web process through the outbox row to the worker's delivery and the webhook;
- the processes' output must be JSON lines with request and task context, and no credential.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from approvals.models import ActionType, Proposal
from tests.conftest import ServiceClient, refund_body
from tests.execution_support import ROOT, Receiver, Worker, database_url, wait_until
from tests.live_app import any_free_port
from tests.telemetry.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROMETHEUS = "/usr/bin/prometheus"
TOKEN = "stack-metrics-token-5e0c7a9b3d1f"


class Process:
    """A subprocess in its own process group, its output in a file, stopped at the end."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.log_path.name}: exited:\n{self.output()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def stack(
    transactional_db: None, tmp_path: Path, otlp: OtlpReceiver
) -> Iterator[Callable[[], tuple[str, list[Process]]]]:
    """start() → (base URL, processes): web (uvicorn, 2 workers) and a Celery worker."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(
            f"{PROMETHEUS} is missing: install Debian's package with `apt-get install -y "
            "prometheus` (make test does this when run as root)"
        )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "DATABASE_URL": database_url(),
        "DEBUG": "0",
        "SECRET_KEY": "stack-secret-key-" + "s" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS": "1",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "gatehouse",
    }
    started: list[Process | Worker] = []

    def start() -> tuple[str, list[Process]]:
        port = any_free_port()
        web = Process(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
                "--no-access-log",
                "--log-config",
                "config/uvicorn-logging-json.json",  # as docs/operations.md says for JSON logs
            ],
            env=env,
            log=tmp_path / "web.log",
        )
        started.append(web)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            web.alive()
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, what="uvicorn to answer")
        worker = Worker(tmp_path, name="worker", env=env)
        started.append(worker)
        worker.start(timeout=60)
        worker_process = Process.__new__(Process)
        worker_process.log_path, worker_process.proc = worker.log_path, worker.proc  # type: ignore[assignment]
        return base, [web, worker_process]

    yield start
    for process in reversed(started):
        process.stop()


def prometheus(tmp_path: Path, target: str) -> tuple[str, Process]:
    port = any_free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "gatehouse",
                        "metrics_path": "/metrics",
                        "authorization": {"type": "Bearer", "credentials": TOKEN},
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    process = Process(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        log=tmp_path / "prometheus.log",
    )
    return f"http://127.0.0.1:{port}", process


def query(prom: str, expression: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(expression)}"
    try:
        answer = httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return []
    return (
        list(answer.get("data", {}).get("result", [])) if answer.get("status") == "success" else []
    )


def test_prometheus_and_an_otlp_receiver_see_a_gatehouse_of_several_processes(
    stack: Callable[[], tuple[str, list[Process]]],
    otlp: OtlpReceiver,
    receiver: Receiver,
    shop: ServiceClient,
    refund_type: ActionType,
    make_rule: Callable[..., Any],
    tmp_path: Path,
) -> None:
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = receiver.url("/execute")
    refund_type.save()
    receiver.secret = shop.service.webhook_secret
    make_rule("small", action_type=refund_type, when="payload.amount < 50.0", outcome="approve")
    base, processes = stack()
    prom, prom_process = prometheus(tmp_path, base.removeprefix("http://"))
    processes.append(prom_process)
    try:
        _check(base, prom, prom_process, processes, otlp, receiver, shop, tmp_path)
    finally:
        prom_process.stop()


def _check(
    base: str,
    prom: str,
    prom_process: Process,
    processes: list[Process],
    otlp: OtlpReceiver,
    receiver: Receiver,
    shop: ServiceClient,
    tmp_path: Path,
) -> None:
    headers = {"Authorization": f"Bearer {shop.key}"}

    def post(index: int) -> httpx.Response:
        amount = 10.0 if index % 3 else 100.0  # 4 of 12 wait for a reviewer
        body = refund_body(payload={"order_id": f"ORD-{index}", "amount": amount})
        rid = {"X-Request-ID": f"stack-req-{index}"}
        return httpx.post(
            f"{base}/api/v1/proposals", json=body, headers={**headers, **rid}, timeout=30
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(post, range(12)))
    assert [r.status_code for r in responses] == [201] * 12
    assert all(r.headers["x-request-id"] == f"stack-req-{i}" for i, r in enumerate(responses))
    approved = [r.json()["id"] for r in responses if r.json()["state"] == "approved"]
    # 8 small ones go to the rule; one may still land in review if its rules ran out of time on
    # this loaded machine (fail closed), so the counts below follow what the answers said.
    assert 6 <= len(approved) <= 8
    pending_count = 12 - len(approved)
    wait_until(
        lambda: len(receiver.distinct_ids("/execute")) == len(approved), timeout=60, what="webhooks"
    )
    wait_until(
        lambda: Proposal.objects.filter(state="executed").count() == len(approved),
        timeout=30,
        what="executed",
    )

    # Prometheus: the count added up over every process, and the gauge read from the database.
    def scraped() -> bool:
        prom_process.alive()
        submitted = query(prom, "sum(gatehouse_proposals_submitted_total)")
        pending = query(prom, 'gatehouse_pending_proposals{action_type="refund.issue"}')
        executed = query(
            prom, 'sum(gatehouse_delivery_attempts_total{kind="execute",result="succeeded"})'
        )
        return (
            bool(submitted and pending and executed)
            and float(submitted[0]["value"][1]) == 12
            and float(pending[0]["value"][1]) == pending_count
            and float(executed[0]["value"][1]) == len(approved)
        )

    wait_until(scraped, timeout=60, what="Prometheus to report what was submitted and executed")
    [up] = query(prom, 'up{job="gatehouse"}')
    assert up["value"][1] == "1"
    # The counts came from several processes' files: both web workers and the worker's pool.
    counting = set()
    for path in (tmp_path / "metrics").glob("counter_*.db"):
        keys = [key for key, *_ in MmapedDict.read_all_values_from_file(str(path))]
        if any("gatehouse_proposals_submitted" in key for key in keys) or any(
            "gatehouse_delivery_attempts" in key for key in keys
        ):
            counting.add(path.name)
    assert len(counting) >= 2, counting

    # OTLP: one trace from the submit in a web process to the worker's delivery and the webhook.
    proposal_id = approved[0]

    def trace() -> list[Any]:
        spans = otlp.received()
        submit = [
            s
            for s in spans
            if s.name == "gatehouse.proposal.submit"
            and s.attributes.get("gatehouse.proposal_id") == proposal_id
        ]
        if not submit:
            return []
        in_trace = [s for s in spans if s.trace_id == submit[0].trace_id]
        names = {s.name for s in in_trace}
        wanted = {
            "gatehouse.proposal.submit",
            "gatehouse.rules.evaluate",
            "gatehouse.outbox.deliver",
            "POST",
        }
        return in_trace if wanted <= names else []

    spans = wait_until(trace, timeout=30, what="the whole trace at the OTLP receiver")
    by_id = {s.span_id: s for s in spans}
    deliver = next(s for s in spans if s.name == "gatehouse.outbox.deliver")
    post_span = next(s for s in spans if s.name == "POST" and s.parent_span_id == deliver.span_id)
    submit_span = next(s for s in spans if s.name == "gatehouse.proposal.submit")
    assert deliver.attributes["gatehouse.proposal_id"] == proposal_id
    assert deliver.attributes["gatehouse.outcome"] == "succeeded"
    assert (
        post_span.attributes.get(
            "http.status_code", post_span.attributes.get("http.response.status_code")
        )
        == 200
    )
    server = by_id[submit_span.parent_span_id]
    assert server.kind == 2  # SERVER: Django's request span in the web process
    assert any(
        s.attributes.get("db.system", s.attributes.get("db.system.name")) == "postgresql"
        for s in spans
    )
    assert {s.resource.get("service.name") for s in spans} == {"gatehouse"}
    celery_spans = [s for s in otlp.received() if s.name.startswith("run/approvals.deliver")]
    assert celery_spans, "the Celery instrumentation traced the worker's tasks"
    [delivery] = [
        d for d in receiver.of("/execute") if d.json["data"]["proposal_id"] == proposal_id
    ]
    assert delivery.headers["traceparent"].split("-")[1] == submit_span.trace_id

    # Logs: JSON lines with request and task context, and no credential anywhere.
    web_log, worker_log = processes[0].output(), processes[1].output()
    web_lines = [json.loads(line) for line in web_log.splitlines() if line.startswith("{")]
    worker_lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    decision = next(
        line
        for line in web_lines
        if line.get("logger") == "gatehouse.decisions" and line.get("proposal_id") == proposal_id
    )
    index = next(i for i, r in enumerate(responses) if r.json()["id"] == proposal_id)
    assert decision["request_id"] == f"stack-req-{index}"
    assert (decision["outcome"], decision["rule"], decision["rule_version"]) == (
        "approve",
        "small",
        1,
    )
    executed_line = next(
        line
        for line in worker_lines
        if line.get("logger") == "gatehouse.execution" and line.get("proposal_id") == proposal_id
    )
    assert executed_line["task_name"] == "approvals.deliver"
    assert executed_line["task_id"]
    assert executed_line["outcome"] == "succeeded"
    # Every line of the web processes is JSON; the worker's too, but for Celery's start banner
    # (printed, not logged; `celery worker --quiet` drops it).
    for line in web_log.splitlines():
        json.loads(line)
    for line in worker_log.splitlines():
        if line.startswith("{"):
            json.loads(line)
        else:
            assert not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", line), line
    for secret in (shop.key, shop.service.webhook_secret, TOKEN):
        assert secret not in web_log + worker_log
    shutil.rmtree(tmp_path / "tsdb", ignore_errors=True)
