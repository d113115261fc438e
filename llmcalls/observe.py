"""What an operator sees of each model call outside the call log: metrics, one log line, and a
span following the OpenTelemetry GenAI semantic conventions (prompt and completion text in the
span only with LLMCALLS_TRACE_CONTENT=1; never in a log line)."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings

from telemetry import logs, metrics, tracing

log = logging.getLogger("llmcalls")


def call_observe(*, record: dict[str, Any], response_model: str = "") -> None:
    feature = record.get("feature", "")
    # A call that no model answered is counted under the last model it tried.
    tried = record.get("fallback_path") or []
    model = record.get("model") or (tried[-1].split("/", 1)[-1] if tried else "-")
    status = record.get("status", "")
    latency_ms = float(record.get("latency_ms") or 0.0)
    cost = record.get("cost_usd")
    input_tokens = record.get("input_tokens")
    output_tokens = record.get("output_tokens")

    metrics.MODEL_CALLS.labels(feature, model, status).inc()
    metrics.MODEL_CALL_SECONDS.labels(feature, model).observe(latency_ms / 1000)
    if input_tokens:
        metrics.MODEL_TOKENS.labels(feature, model, "input").inc(input_tokens)
    if output_tokens:
        metrics.MODEL_TOKENS.labels(feature, model, "output").inc(output_tokens)
    if cost:
        metrics.MODEL_COST_USD.labels(feature, model).inc(float(cost))
    if record.get("cache_hit"):
        metrics.MODEL_CACHE_HITS.labels(feature, model).inc()

    context = {
        "llm_call_id": str(record.get("id", "")),
        "feature": feature,
        "provider": record.get("provider", ""),
        "model": model,
        "status": status,
        "latency_ms": latency_ms,
        "cost_usd": float(cost) if cost is not None else None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_hit": bool(record.get("cache_hit")),
    }
    if record.get("service"):
        context["service"] = record["service"]
    log.log(
        logging.INFO if status == "ok" else logging.WARNING,
        "model call %s %s %s in %.0f ms%s",
        feature,
        model,
        status,
        latency_ms,
        f" ({record.get('error_class')})" if record.get("error_class") else "",
        extra=context,
    )
    if tracing.enabled():
        _span(record, model, response_model or model, latency_ms)


def _span(record: dict[str, Any], model: str, response_model: str, latency_ms: float) -> None:
    params = record.get("params") or {}
    finish = record.get("finish_reason")
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": record.get("provider", ""),
        "gen_ai.request.model": model,
        "gen_ai.response.model": response_model,
        "gen_ai.usage.input_tokens": record.get("input_tokens"),
        "gen_ai.usage.output_tokens": record.get("output_tokens"),
        "gen_ai.response.finish_reasons": [finish] if finish else None,
        "gen_ai.request.temperature": params.get("temperature"),
        "gen_ai.request.max_tokens": params.get("max_tokens"),
        "error.type": record.get("error_class"),
        "gatehouse.feature": record.get("feature", ""),
        "gatehouse.llm_call_id": str(record.get("id", "")),
        "gatehouse.cache_hit": bool(record.get("cache_hit")),
        "gatehouse.cost_usd": float(record["cost_usd"]) if record.get("cost_usd") else None,
    }
    if settings.LLMCALLS_TRACE_CONTENT:
        attributes["gen_ai.input.messages"] = json.dumps(
            record.get("messages") or [], ensure_ascii=False, default=str
        )
        output: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": record.get("response_text") or ""}],
        }
        if finish:
            output["finish_reason"] = finish
        attributes["gen_ai.output.messages"] = json.dumps([output], ensure_ascii=False)
    start_ns = int(record["created_at"].timestamp() * 1e9)
    tracing.record_span(
        f"chat {model}",
        start_ns=start_ns,
        end_ns=start_ns + int(latency_ms * 1e6),
        attributes=attributes,
        error=logs.redact(record.get("error_message", "")[:300])
        if record.get("status") != "ok"
        else "",
    )
