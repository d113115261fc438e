"""PostgreSQL or Redis away under load: clean 503s fast, nothing acknowledged lost, nothing run
twice, and the measured recovery (docs/operations.md "When a backing service is down").

The stack is the Procfile's own lines (web, worker, beat) against a PostgreSQL and a Redis of
the test's own (tests/faults/private_servers.py), so that stopping them disturbs nobody else.
A load thread submits proposals a rule approves; each is executed by a webhook to a receiver
that verifies signatures and records each effect once per webhook-id.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests import stack
from tests.execution_support import Receiver, wait_until
from tests.faults.private_servers import PrivatePostgres, PrivateRedis
from tests.live_app import any_free_port

pytestmark = pytest.mark.slow

FAST = {
    "OUTBOX_RECONCILE_INTERVAL": "1s",
    "OUTBOX_RECONCILE_GRACE": "2s",
    "EXECUTION_TIMEOUT": "2s",
    "WEB_CONCURRENCY": "1",
    "WORKER_CONCURRENCY": "2",
    "GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS": "1",
    "DEBUG": "0",
    "SECRET_KEY": "faults-" + "secret-" * 8,
    "ALLOWED_HOSTS": "127.0.0.1",
    "HOT_PATH_CACHE_SECONDS": "0",
}


@dataclass
class Answer:
    at: float
    status: int
    seconds: float
    content_type: str
    retry_after: str | None
    proposal_id: str | None


@dataclass
class Load:
    """Submits a proposal every `interval` seconds until stopped; records every answer."""

    base: str
    key: str
    interval: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                started = time.monotonic()
                try:
                    response = client.post(
                        f"{self.base}/api/v1/proposals",
                        json=stack.refund(10 + n % 40, 0.95, external_id=f"load-{n}"),
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                except httpx.TransportError:
                    self.answers.append(
                        Answer(started, 0, time.monotonic() - started, "", None, None)
                    )
                    continue
                body = response.json() if "json" in response.headers.get("content-type", "") else {}
                self.answers.append(
                    Answer(
                        started,
                        response.status_code,
                        time.monotonic() - started,
                        response.headers.get("content-type", ""),
                        response.headers.get("retry-after"),
                        body.get("id") if response.status_code == 201 else None,
                    )
                )
                time.sleep(self.interval)

    def acknowledged(self) -> set[str]:
        return {a.proposal_id for a in self.answers if a.proposal_id}


@dataclass
class Stack:
    base: str
    key: str
    env: dict[str, str]
    processes: dict[str, stack.Process]


@dataclass
class Released:
    """The release step and the refund configuration, done once for the module on a private
    cluster, which is then stopped: each test starts a copy of its data directory."""

    data: Path
    static_root: Path
    created: dict[str, str]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The webhook target, for the module's tests as the released configuration is (it names
    the receiver's URL). Each test counts only the deliveries of the proposals it submitted."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Released]:
    tmp = tmp_path_factory.mktemp("released")
    server = PrivatePostgres().init()
    broker = PrivateRedis()
    try:
        env = stack_env(
            tmp,
            database_url=server.create_database(database_name()),
            redis_url=broker.start().url,
            port=any_free_port(),
        )
        created = stack.release_and_configure(env, tmp, webhook_url=receiver.url("/execute"))
        broker.stop()
        server.stop()
        yield Released(server.data, Path(env["STATIC_ROOT"]), created)
    finally:
        broker.stop()
        server.destroy()


def stack_env(tmp: Path, *, database_url: str, redis_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        **FAST,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "SITE_URL": f"http://127.0.0.1:{port}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "BEAT_SCHEDULE_FILE": str(tmp / "beat-schedule"),
    }


def start_stack(
    tmp: Path, receiver: Receiver, released: Released, *, database_url: str, redis_url: str
) -> tuple[Stack, list[stack.Process]]:
    """Web, worker and beat on the released database (migrated, the refund configuration, the
    service)."""
    port = any_free_port()
    env = stack_env(tmp, database_url=database_url, redis_url=redis_url, port=port)
    env["STATIC_ROOT"] = str(released.static_root)
    receiver.secret = released.created["webhook_secret"]
    lines = stack.procfile()
    processes = {
        name: stack.Process(name, lines[name], env=env, logdir=tmp).start()
        for name in ("web", "worker", "beat")
    }
    base = f"http://127.0.0.1:{port}"
    stack.wait_for_http(f"{base}/healthz", seconds=30, process=processes["web"])
    wait_until(lambda: " ready." in processes["worker"].log(), timeout=40, what="the worker")
    return Stack(base, released.created["api_key"], env, processes), list(processes.values())


@pytest.fixture
def private_postgres(released: Released) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init(copy_of=released.data)
    try:
        yield server
    finally:
        server.destroy()


def database_name() -> str:
    return os.environ["DATABASE_URL"].rsplit("/", 1)[1].split("?")[0] + "_faults"


def executed_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id FROM approvals_proposal WHERE state = 'executed'")
        return {str(row[0]) for row in rows}


def execute_id(proposal_id: str) -> str:
    return f"msg_{proposal_id.replace('-', '')}_execute"


def run_load(load: Load) -> threading.Thread:
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    return thread


@dataclass
class UnderLoad:
    app: Stack
    load: Load
    thread: threading.Thread
    database_url: str
    worker: stack.Process

    def stop_load(self) -> None:
        self.load.stopping.set()
        self.thread.join(timeout=15)

    def backlog(self, acknowledged: set[str]) -> str:
        """Where the acknowledged proposals that were not executed stand, their outbox messages,
        whether the worker and beat still run, and their logs: what a timed-out wait reports."""
        ids = sorted(acknowledged - executed_ids(self.database_url))
        with psycopg.connect(self.database_url) as conn:
            states = conn.execute(
                "SELECT state, count(*) FROM approvals_proposal WHERE id = ANY(%s::uuid[]) "
                "GROUP BY state",
                [ids],
            ).fetchall()
            messages = conn.execute(
                "SELECT kind, status, attempts, locked_until IS NOT NULL, next_attempt_at - now(), "
                "left(last_error, 160), count(*) FROM approvals_outboxmessage "
                "WHERE proposal_id = ANY(%s::uuid[]) GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 7 DESC "
                "LIMIT 15",
                [ids],
            ).fetchall()
        logs = "\n".join(
            f"--- {name}: {'running' if process.alive() else 'EXITED'}; its CRITICAL lines: "
            f"{[line for line in process.log().splitlines() if ' CRITICAL ' in line][-5:]}; "
            f"its log's end:\n{process.log()[-3000:]}"
            for name, process in self.app.processes.items()
            if name in ("worker", "beat")
        )
        return (
            f"{len(ids)} of {len(acknowledged)} not executed; their states {states}; their "
            f"outbox messages (kind, status, attempts, leased, due in, last error, count) "
            f"{messages}\n{logs}"
        )

    def executed_once(self, receiver: Receiver, *, timeout: float) -> int:
        """Waits until every acknowledged proposal is executed and delivered; returns how many
        deliveries were repeats (the receiver applies each webhook-id once)."""
        acknowledged = self.load.acknowledged()
        try:
            wait_until(
                lambda: acknowledged <= executed_ids(self.database_url),
                timeout=timeout,
                what="every acknowledged proposal executed",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.backlog(acknowledged)}") from None
        expected = {execute_id(i) for i in acknowledged}
        assert expected <= receiver.distinct_ids("/execute")
        return len([d for d in receiver.of("/execute") if d.webhook_id in expected]) - len(expected)


@pytest.fixture
def under_load(
    tmp_path: Path,
    receiver: Receiver,
    released: Released,
    private_postgres: PrivatePostgres,
    private_redis: Any,
) -> Iterator[UnderLoad]:
    """The stack on the private servers, with proposals flowing."""
    database_url = private_postgres.url(database_name())
    app, processes = start_stack(
        tmp_path, receiver, released, database_url=database_url, redis_url=private_redis.url
    )
    load = Load(app.base, app.key)
    running = UnderLoad(app, load, run_load(load), database_url, app.processes["worker"])
    try:
        wait_until(lambda: len(load.acknowledged()) >= 20, timeout=30, what="load to flow")
        yield running
    finally:
        running.stop_load()
        for process in processes:
            process.stop()


def report(name: str, figures: dict[str, Any]) -> None:
    # Printed for docs/operations.md; `pytest -s tests/faults/test_backing_services.py`.
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_postgres_stopped_under_load_answers_503_fast_and_loses_nothing(
    under_load: UnderLoad, receiver: Receiver, private_postgres: PrivatePostgres
) -> None:
    app, load = under_load.app, under_load.load
    stopped_at = time.monotonic()
    private_postgres.stop()
    down_for = 10.0
    wait_until(lambda: any(a.status == 503 for a in load.answers), timeout=5, what="a 503")
    ready = httpx.get(f"{app.base}/readyz", timeout=5)
    # A signed-in reviewer's page: its session lives in the database.
    page = httpx.get(
        f"{app.base}/",
        headers={"Accept": "text/html", "Cookie": "sessionid=" + "a" * 32},
        timeout=5,
    )
    time.sleep(max(0.0, stopped_at + down_for - time.monotonic()))

    started_at = time.monotonic()
    private_postgres.start()
    back = wait_until(
        lambda: next((a for a in load.answers if a.at > started_at and a.status == 201), None),
        timeout=30,
        what="a proposal accepted after the restart",
    )
    time.sleep(3)  # more load on the new server: no request may fail on a dead connection
    under_load.stop_load()

    assert ready.status_code == 503 and ready.json()["down"] == ["database"]
    assert ready.headers["retry-after"]
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    # Asked and answered while it was down (one waiting at the restart may well succeed).
    during = [a for a in load.answers if stopped_at + 0.5 < a.at and a.at + a.seconds < started_at]
    assert during and {a.status for a in during} == {503}, {a.status for a in during}
    assert all(a.content_type == "application/problem+json" for a in during)
    assert all(a.retry_after for a in during)
    slowest = max(a.seconds for a in during)
    assert slowest < 2.0
    after = [a for a in load.answers if a.at >= back.at]
    assert {a.status for a in after} == {201}

    duplicates = under_load.executed_once(receiver, timeout=60)
    worker_log = under_load.worker.log()
    assert "raised unexpected" not in worker_log, worker_log[-3000:]
    report(
        "postgres",
        {
            "acknowledged": len(load.acknowledged()),
            "answers_while_down": len(during),
            "slowest_503_s": round(slowest, 3),
            "median_503_s": round(sorted(a.seconds for a in during)[len(during) // 2], 3),
            "first_201_after_start_s": round(back.at + back.seconds - started_at, 2),
            "failures_after_recovery": sum(a.status != 201 for a in after),
            "duplicate_deliveries": duplicates,
            "tasks_that_waited": worker_log.count("waiting for it"),
        },
    )


def test_redis_stopped_under_load_keeps_accepting_and_delivers_everything_after(
    under_load: UnderLoad, receiver: Receiver, private_redis: PrivateRedis
) -> None:
    app, load = under_load.app, under_load.load
    stopped_at = time.monotonic()
    private_redis.stop()
    time.sleep(1)
    ready = httpx.get(f"{app.base}/readyz", timeout=5)
    time.sleep(max(0.0, stopped_at + 8 - time.monotonic()))
    private_redis.start()  # empty: whatever the broker held is gone
    started_at = time.monotonic()
    time.sleep(3)
    under_load.stop_load()

    assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
    during = [a for a in load.answers if stopped_at + 0.5 < a.at < started_at]
    # The outbox holds the work: proposals are still accepted, the broker nudge waits.
    assert during and {a.status for a in during} <= {201, 503}, {a.status for a in during}
    slowest = max(a.seconds for a in during)
    assert slowest < 2.0

    duplicates = under_load.executed_once(receiver, timeout=90)
    report(
        "redis",
        {
            "acknowledged": len(load.acknowledged()),
            "answers_while_down": len(during),
            "statuses_while_down": sorted({a.status for a in during}),
            "slowest_while_down_s": round(slowest, 3),
            "all_executed_after_restart_s": round(time.monotonic() - started_at, 1),
            "duplicate_deliveries": duplicates,
        },
    )
