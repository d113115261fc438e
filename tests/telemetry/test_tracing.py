"""Traces of a proposal's life: the span tree in the SDK's in-memory exporter, the trace context
carried by the outbox row to the delivery and the webhook, and nothing of OpenTelemetry on the
submit path when OTEL_EXPORTER_OTLP_ENDPOINT is unset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals import execution
from approvals.models import ActionType, OutboxMessage, Proposal
from tests.conftest import ServiceClient, decide_as, refund_body
from tests.execution_support import ROOT, Receiver, database_url


def by_name(exporter: Any) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


def parent_of(span: Any) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.fixture
def webhook_refunds(refund_type: ActionType, receiver: Receiver) -> ActionType:
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = receiver.url("/execute")
    refund_type.save()
    return refund_type


@pytest.mark.django_db
def test_a_submit_is_a_request_span_with_the_submit_and_the_rules_under_it(
    spans: Any, shop: ServiceClient, refund_type: ActionType, make_rule: Callable[..., Any]
) -> None:
    make_rule("tiny", action_type=refund_type, when="payload.amount < 50.0", outcome="approve")
    response = shop.post_json("/api/v1/proposals", refund_body())
    assert response.status_code == 201
    proposal_id = response.json()["id"]

    named = by_name(spans)
    request = next(s for s in spans.get_finished_spans() if s.kind.name == "SERVER")
    submit = named["gatehouse.proposal.submit"]
    rules = named["gatehouse.rules.evaluate"]
    assert request.attributes["http.status_code"] == 201
    assert parent_of(submit) == request.context.span_id
    assert parent_of(rules) == submit.context.span_id
    assert submit.attributes["gatehouse.proposal_id"] == proposal_id
    assert submit.attributes["gatehouse.service"] == "shop"
    assert submit.attributes["gatehouse.outcome"] == "approve"
    assert rules.attributes["gatehouse.rule"] == "tiny"
    assert rules.attributes["gatehouse.rule_version"] == 1
    assert rules.attributes["gatehouse.outcome"] == "approve"
    # psycopg's spans need connections opened after tracing starts: see test_stack.py.


@pytest.mark.django_db(transaction=True)
def test_one_trace_runs_from_the_submit_through_the_outbox_to_the_webhook(
    spans: Any,
    receiver: Receiver,
    shop: ServiceClient,
    webhook_refunds: ActionType,
    make_rule: Callable[..., Any],
) -> None:
    from foundation import webhooks

    webhooks._client = None  # a client made before tracing was on
    receiver.secret = shop.service.webhook_secret
    make_rule("tiny", action_type=webhook_refunds, when="payload.amount < 50.0")
    response = shop.post_json("/api/v1/proposals", refund_body())
    assert response.json()["state"] == "approved"
    [message] = OutboxMessage.objects.filter(kind="execute")
    submit = by_name(spans)["gatehouse.proposal.submit"]
    assert message.trace_context["traceparent"].split("-")[1] == format(
        submit.context.trace_id, "032x"
    )

    # What the worker does with the message (here in this process, with a fresh context).
    spans.clear()
    assert execution.outbox_deliver(message_id=message.pk) == "delivered"
    deliver = by_name(spans)["gatehouse.outbox.deliver"]
    post = next(s for s in spans.get_finished_spans() if s.name == "POST")
    assert deliver.context.trace_id == submit.context.trace_id
    assert parent_of(post) == deliver.context.span_id
    assert deliver.attributes["gatehouse.attempt"] == 1
    assert deliver.attributes["gatehouse.outcome"] == "succeeded"
    assert deliver.attributes["gatehouse.status_code"] == 200
    [delivery] = receiver.of("/execute")
    assert delivery.headers["traceparent"].split("-")[1] == format(submit.context.trace_id, "032x")
    assert Proposal.objects.get().state == "executed"


@pytest.mark.django_db
def test_a_review_span_names_the_reviewer_the_verdict_and_the_wait(
    spans: Any, submit: Callable[..., Proposal], reviewer: User
) -> None:
    proposal = submit()
    spans.clear()
    decide_as(reviewer, proposal, verdict="reject", comment="not eligible")
    review = by_name(spans)["gatehouse.proposal.review"]
    assert review.attributes["gatehouse.reviewer"] == "rita"
    assert review.attributes["gatehouse.verdict"] == "reject"
    assert review.attributes["gatehouse.state"] == "rejected"
    assert review.attributes["gatehouse.waited_seconds"] >= 0


@pytest.mark.django_db
def test_without_tracing_the_outbox_row_carries_no_context(
    shop: ServiceClient, refund_type: ActionType, make_rule: Callable[..., Any]
) -> None:
    refund_type.executor_kind = "webhook"
    refund_type.executor_target = "http://127.0.0.1:9/x"
    refund_type.save()
    make_rule("all", action_type=refund_type, when="true")
    shop.post_json("/api/v1/proposals", refund_body())
    assert OutboxMessage.objects.get().trace_context == {}


PROBE = """
import json, sys
import django
django.setup()
from django.test import Client
response = Client().post(
    "/api/v1/proposals", sys.argv[2], content_type="application/json",
    HTTP_AUTHORIZATION="Bearer " + sys.argv[1],
)
print(json.dumps({
    "status": response.status_code,
    "otel": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
}))
"""


@pytest.mark.django_db(transaction=True)
def test_without_the_endpoint_nothing_of_opentelemetry_is_imported_on_the_submit_path(
    shop: ServiceClient,
) -> None:
    def probe(**env: str) -> dict[str, Any]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        result = subprocess.run(
            [sys.executable, "-c", PROBE, shop.key, json.dumps(refund_body())],
            cwd=ROOT,
            env={**base, "DATABASE_URL": database_url(), "ALLOWED_HOSTS": "testserver", **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    off = probe()
    assert off == {"status": 201, "otel": []}
    # The probe can see it: with the endpoint set, the SDK is loaded.
    on = probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    assert on["status"] == 201
    assert "opentelemetry.sdk.trace" in on["otel"]
