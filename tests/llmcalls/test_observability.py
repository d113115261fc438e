"""Model calls seen from outside the call log: metrics, the log line, GenAI spans, the redaction
hook and the retention purge of their text."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.utils import timezone
from prometheus_client import REGISTRY

from config.celery import app
from llmcalls import client, services
from llmcalls.models import LLMCall
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

Route = Callable[..., None]
SECRET_PROMPT = [{"role": "user", "content": "Refund for jane.doe@example.com, order 42?"}]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_call_is_counted_with_tokens_cost_and_latency_and_logged_without_its_text(
    fake: FakeProvider, make_route: Route, prices: None, caplog: Any
) -> None:
    make_route("support", "primary/ok")
    labels = {"feature": "support", "model": "ok"}
    before = {
        "calls": value("gatehouse_model_calls_total", status="ok", **labels),
        "in": value("gatehouse_model_tokens_total", direction="input", **labels),
        "out": value("gatehouse_model_tokens_total", direction="output", **labels),
        "cost": value("gatehouse_model_cost_usd_total", **labels),
        "latency": value("gatehouse_model_call_duration_seconds_count", **labels),
    }
    with caplog.at_level(logging.INFO, logger="llmcalls"):
        result = client.complete(feature="support", messages=SECRET_PROMPT)

    assert value("gatehouse_model_calls_total", status="ok", **labels) == before["calls"] + 1
    assert value("gatehouse_model_tokens_total", direction="input", **labels) == before["in"] + 12
    assert value("gatehouse_model_tokens_total", direction="output", **labels) == before["out"] + 7
    assert value("gatehouse_model_cost_usd_total", **labels) == pytest.approx(
        before["cost"] + float(result.cost_usd or 0)
    )
    assert value("gatehouse_model_call_duration_seconds_count", **labels) == before["latency"] + 1
    [line] = [r for r in caplog.records if r.name == "llmcalls" and r.levelno == logging.INFO]
    assert (line.feature, line.model, line.status) == ("support", "ok", "ok")  # type: ignore[attr-defined]
    assert line.cost_usd == pytest.approx(0.026)  # type: ignore[attr-defined]
    assert line.latency_ms > 0  # type: ignore[attr-defined]
    assert line.llm_call_id == str(result.call_id)  # type: ignore[attr-defined]
    assert "jane.doe" not in line.getMessage()
    assert fake.answer not in line.getMessage()


def test_cache_hits_and_errors_are_counted(fake: FakeProvider, make_route: Route) -> None:
    make_route("cached", "primary/ok", cache_ttl=60)
    make_route("broken", "primary/500", deadline=1)
    hits = value("gatehouse_model_cache_hits_total", feature="cached", model="ok")
    errors = value("gatehouse_model_calls_total", feature="broken", model="500", status="error")
    client.complete(feature="cached", messages=SECRET_PROMPT)
    client.complete(feature="cached", messages=SECRET_PROMPT)
    with pytest.raises(client.LLMError):
        client.complete(feature="broken", messages=SECRET_PROMPT)
    assert value("gatehouse_model_cache_hits_total", feature="cached", model="ok") == hits + 1
    assert (
        value("gatehouse_model_calls_total", feature="broken", model="500", status="error")
        == errors + 1
    )


def test_a_call_is_a_genai_span_without_its_text_by_default(
    spans: Any, fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok", params={"temperature": 0.2})
    result = client.complete(feature="support", messages=SECRET_PROMPT)
    [span] = [s for s in spans.get_finished_spans() if s.name == "chat ok"]
    attributes = dict(span.attributes)
    assert span.kind.name == "CLIENT"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "ok"
    assert attributes["gen_ai.response.model"] == "ok"
    assert attributes["gen_ai.provider.name"] == "primary"
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gatehouse.llm_call_id"] == str(result.call_id)
    assert span.end_time - span.start_time == pytest.approx(result.latency_ms * 1e6, rel=0.01)
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    assert "jane.doe" not in json.dumps(attributes)


def test_the_request_to_the_provider_is_a_client_span_whose_context_it_receives(
    spans: Any, fake: FakeProvider, make_route: Route, prices: None
) -> None:
    make_route("support", "primary/ok")
    client.complete(feature="support", messages=SECRET_PROMPT)
    [http] = [s for s in spans.get_finished_spans() if s.name == "POST"]
    assert http.kind.name == "CLIENT"
    [received] = fake.requests
    traceparent = {k.lower(): v for k, v in received.headers.items()}["traceparent"]
    assert traceparent.split("-")[2] == format(http.context.span_id, "016x")


def test_prompt_and_completion_go_into_the_span_only_with_trace_content(
    spans: Any, fake: FakeProvider, make_route: Route, settings: Any
) -> None:
    settings.LLMCALLS_TRACE_CONTENT = True
    make_route("support", "primary/ok")
    client.complete(feature="support", messages=SECRET_PROMPT)
    [span] = [s for s in spans.get_finished_spans() if s.name == "chat ok"]
    assert json.loads(span.attributes["gen_ai.input.messages"]) == SECRET_PROMPT
    [output] = json.loads(span.attributes["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": fake.answer}]
    assert output["finish_reason"] == "stop"


def test_a_failed_call_is_an_error_span(spans: Any, fake: FakeProvider, make_route: Route) -> None:
    make_route("broken", "primary/500", deadline=1)
    with pytest.raises(client.LLMError):
        client.complete(feature="broken", messages=SECRET_PROMPT)
    [span] = [s for s in spans.get_finished_spans() if s.name == "chat 500"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "AllModelsFailed"


def test_the_redaction_hook_runs_before_the_call_is_stored_and_traced(
    spans: Any, fake: FakeProvider, make_route: Route, settings: Any
) -> None:
    settings.LLMCALLS_REDACT = "tests.llmcalls.redactors.mask_emails"
    settings.LLMCALLS_TRACE_CONTENT = True
    fake.answer = "Done: I wrote to jane.doe@example.com."
    make_route("support", "primary/ok")
    result = client.complete(feature="support", messages=SECRET_PROMPT)
    assert "jane.doe" in result.text  # the caller gets the answer as it came
    stored = LLMCall.objects.get()
    assert stored.messages[0]["content"] == "Refund for [email], order 42?"
    assert stored.response_text == "Done: I wrote to [email]."
    [span] = [s for s in spans.get_finished_spans() if s.name == "chat ok"]
    assert "jane.doe" not in span.attributes["gen_ai.input.messages"]
    assert "jane.doe" not in span.attributes["gen_ai.output.messages"]


def test_a_failing_redaction_hook_keeps_the_numbers_and_drops_the_text(
    fake: FakeProvider, make_route: Route, prices: None, settings: Any, caplog: Any
) -> None:
    settings.LLMCALLS_REDACT = "tests.llmcalls.redactors.broken"
    make_route("support", "primary/ok")
    client.complete(feature="support", messages=SECRET_PROMPT)
    stored = LLMCall.objects.get()
    assert (stored.messages, stored.response_text) == ([], "")
    assert (stored.input_tokens, stored.output_tokens) == (12, 7)
    assert stored.cost_usd == Decimal("0.026")
    assert "LLMCALLS_REDACT tests.llmcalls.redactors.broken failed" in caplog.text


def test_call_text_is_purged_after_the_retention_keeping_the_numbers(
    fake: FakeProvider, make_route: Route, prices: None, settings: Any
) -> None:
    settings.LLMCALLS_LOG_RETENTION = timedelta(days=30)
    make_route("support", "primary/ok")
    start = timezone.now()
    with time_machine.travel(start - timedelta(days=31), tick=False):
        old = client.complete(feature="support", messages=SECRET_PROMPT)
    with time_machine.travel(start - timedelta(days=29), tick=False):
        recent = client.complete(feature="support", messages=SECRET_PROMPT)

    numbers = LLMCall.objects.values("input_tokens", "output_tokens", "cost_usd", "latency_ms")
    before = numbers.get(pk=old.call_id)
    with time_machine.travel(start, tick=False):
        assert services.call_text_purge(batch=1) == 1
        assert services.call_text_purge() == 0  # done once; the next run has nothing to read
    purged = LLMCall.objects.get(pk=old.call_id)
    assert (purged.messages, purged.response_text, purged.tool_calls) == ([], "", None)
    assert purged.text_purged_at == start
    assert numbers.get(pk=old.call_id) == before
    assert (purged.input_tokens, purged.output_tokens, purged.model) == (12, 7, "ok")
    kept = LLMCall.objects.get(pk=recent.call_id)
    assert kept.messages == SECRET_PROMPT and kept.response_text == fake.answer
    assert kept.text_purged_at is None


def test_the_purge_runs_from_beat() -> None:
    import llmcalls.tasks  # noqa: F401 - what the worker's autodiscovery imports

    schedule = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert "llmcalls.purge_call_text" in schedule
    assert "llmcalls.purge_call_text" in app.tasks
