"""GET /metrics in one process: the token, the counters where events happen, the gauges read
at scrape time (one indexed query each). The real Prometheus scraping several processes is in
test_stack.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from approvals import execution, services
from approvals.models import ActionType, OutboxMessage, Proposal
from insights.models import Alert, Brake
from llmcalls.breaker import breaker
from telemetry import metrics
from tests.conftest import ServiceClient, decide_as, refund_body

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_on(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN


def scrape(client: Client | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def decided(by: str, outcome: str) -> float:
    return value(
        "gatehouse_proposals_decided_total",
        action_type="refund.issue",
        decided_by=by,
        outcome=outcome,
    )


@pytest.mark.django_db
def test_the_endpoint_is_off_without_a_token(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
def test_a_missing_or_wrong_token_gets_401_and_reveals_nothing(
    metrics_on: None, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"gatehouse_" not in response.content
    assert b"TYPE" not in response.content
    assert TOKEN.encode() not in response.content


@pytest.mark.django_db
def test_only_get_is_allowed(metrics_on: None) -> None:
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


@pytest.mark.django_db
def test_submissions_decisions_and_the_queue_are_counted(
    metrics_on: None,
    shop: ServiceClient,
    refund_type: ActionType,
    reviewer: User,
    make_rule: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    make_rule("tiny", action_type=refund_type, when="payload.amount < 5.0", outcome="approve")
    before = {
        "submitted": value("gatehouse_proposals_submitted_total", action_type="refund.issue"),
        "by_rule": decided("rule", "approve"),
        "by_reviewer": decided("reviewer", "reject"),
        "latency": value("gatehouse_submit_duration_seconds_count"),
    }
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for amount in (1.0, 20.0, 30.0, 40.0):
            payload = {"order_id": "ORD-1", "amount": amount}
            response = shop.post_json("/api/v1/proposals", refund_body(payload=payload))
            assert response.status_code == 201
        # An idempotent replay is not a new proposal.
        body = refund_body(payload={"order_id": "ORD-2", "amount": 50.0})
        for _ in range(2):
            shop.post_json("/api/v1/proposals", body, **{"Idempotency-Key": "k-1"})
    pending = Proposal.objects.filter(state="pending_review").order_by("created_at")
    assert pending.count() == 4
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        with django_capture_on_commit_callbacks(execute=True):  # counted once committed
            decide_as(reviewer, pending[0], verdict="reject", comment="no")
        samples = scrape()

    assert value("gatehouse_proposals_submitted_total", action_type="refund.issue") == (
        before["submitted"] + 5
    )
    assert decided("rule", "approve") == before["by_rule"] + 1
    assert decided("reviewer", "reject") == before["by_reviewer"] + 1
    assert value("gatehouse_submit_duration_seconds_count") == before["latency"] + 6
    waited = value(
        "gatehouse_time_to_decision_seconds_bucket",
        action_type="refund.issue",
        decided_by="reviewer",
        le="900.0",
    ) - value(
        "gatehouse_time_to_decision_seconds_bucket",
        action_type="refund.issue",
        decided_by="reviewer",
        le="300.0",
    )
    assert waited >= 1  # decided 600 s after it was submitted
    assert samples[("gatehouse_pending_proposals", (("action_type", "refund.issue"),))] == 3
    assert samples[
        ("gatehouse_pending_oldest_age_seconds", (("action_type", "refund.issue"),))
    ] == pytest.approx(600, abs=1)
    # The scrape also carries the counters it serves.
    assert samples[
        ("gatehouse_proposals_submitted_total", (("action_type", "refund.issue"),))
    ] == value("gatehouse_proposals_submitted_total", action_type="refund.issue")


@pytest.mark.django_db
def test_expiry_and_cancel_are_counted_as_who_decided(
    submit: Callable[..., Proposal], shop: ServiceClient, django_capture_on_commit_callbacks: Any
) -> None:
    expired_before, cancelled_before = decided("expiry", "expire"), decided("cancel", "cancel")
    stale, withdrawn = submit(), submit()
    with django_capture_on_commit_callbacks(execute=True):
        services.proposal_cancel(service=shop.service, proposal_id=withdrawn.pk)
    later = time_machine.travel(timezone.now() + timedelta(days=2))
    with later, django_capture_on_commit_callbacks(execute=True):
        assert execution.proposals_expire() == 1
    assert decided("expiry", "expire") == expired_before + 1
    assert decided("cancel", "cancel") == cancelled_before + 1
    assert stale.pk != withdrawn.pk


@pytest.mark.django_db
def test_outbox_backlog_and_delivery_results(
    metrics_on: None,
    shop: ServiceClient,
    refund_type: ActionType,
    make_rule: Callable[..., Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.EXECUTION_MAX_ATTEMPTS = 1
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = "http://127.0.0.1:9/nothing-listens-here"
    refund_type.save()
    make_rule("all", action_type=refund_type, when="true", outcome="approve")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        response = shop.post_json("/api/v1/proposals", refund_body())
        assert response.json()["state"] == "approved"
    [message] = OutboxMessage.objects.filter(kind="execute")
    with time_machine.travel(start + timedelta(seconds=90), tick=False):
        samples = scrape()
    assert samples[("gatehouse_outbox_backlog", (("kind", "execute"),))] == 1
    assert samples[("gatehouse_outbox_oldest_age_seconds", (("kind", "execute"),))] == (
        pytest.approx(90, abs=1)
    )

    failed_before = value("gatehouse_delivery_attempts_total", kind="execute", result="failed")
    executions_failed = value("gatehouse_executions_failed_total", action_type="refund.issue")
    with django_capture_on_commit_callbacks(execute=True):
        execution.outbox_deliver(message_id=message.pk)
    assert value("gatehouse_delivery_attempts_total", kind="execute", result="failed") == (
        failed_before + 1
    )
    assert value("gatehouse_executions_failed_total", action_type="refund.issue") == (
        executions_failed + 1
    )
    assert ("gatehouse_outbox_backlog", (("kind", "execute"),)) not in scrape()


@pytest.mark.django_db
def test_brakes_alerts_and_open_circuits_are_read_when_scraped(
    metrics_on: None, refund_type: ActionType
) -> None:
    Brake.objects.create(
        action_type=refund_type, reason="audits", errors=3, audited=10, target=0.02
    )
    Alert.objects.create(kind="drift", action_type=refund_type, title="agreement fell")
    Alert.objects.create(
        kind="drift", action_type=refund_type, title="seen", acknowledged_at=timezone.now()
    )
    breaker().reset()
    try:
        for _ in range(10):
            breaker().failure("fake/gpt-x")
        samples = scrape()
    finally:
        breaker().reset()
    assert samples[("gatehouse_brakes_engaged", (("action_type", "refund.issue"),))] == 1
    assert samples[("gatehouse_open_alerts", (("kind", "drift"),))] == 1
    assert samples[("gatehouse_model_circuit_open", (("target", "fake/gpt-x"),))] == 1


@pytest.mark.django_db
def test_each_scrape_gauge_is_one_query_an_index_can_answer(metrics_on: None) -> None:
    from django.utils.module_loading import import_string

    for path in metrics.SCRAPE_QUERIES:
        with CaptureQueriesContext(connection) as queries:
            import_string(path)()
        expected = 2 if path.startswith("insights.") else (0 if "breaker" in path else 1)
        assert len(queries) == expected, (path, [q["sql"] for q in queries])
        for query in queries:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN " + query["sql"])
                plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan, (path, plan)
