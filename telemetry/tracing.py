"""OpenTelemetry traces, only when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Without the variable nothing of OpenTelemetry is imported: `span()` is a null context and
`carrier()` an empty dict, so the submit path pays one boolean test. With it, `setup()` (called
once per process from telemetry's AppConfig) installs the SDK with the OTLP/HTTP exporter (the
standard OTEL_* variables configure it: endpoint, headers, OTEL_SERVICE_NAME …) and the
instrumentations for Django, Celery, psycopg and httpx; Gatehouse adds the proposal's own spans.

A trace runs from the request that decided a proposal (the submit when a rule decides, the
reviewer's verdict otherwise) through the outbox to the worker and the webhook: the outbox row
stores the W3C trace context (`carrier()`) and the worker continues it (`span(…, parent=…)`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("gatehouse.tracing")

_enabled = False
_tracer: Any = None


def configured() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def enabled() -> bool:
    return _enabled


def setup() -> None:
    """Install the SDK and the instrumentations if OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    if _enabled or not configured():
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "gatehouse")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    instrument()


def instrument() -> None:
    """Turn on the instrumentations and Gatehouse's own spans (tests call it with their own
    provider and an in-memory exporter)."""
    global _enabled, _tracer
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import (
        HTTPX2ClientInstrumentor,
        HTTPXClientInstrumentor,
    )
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    PsycopgInstrumentor().instrument(enable_commenter=False)
    HTTPXClientInstrumentor().instrument()
    # httpx2: the openai SDK's transport, and llmcalls' requests to providers.
    HTTPX2ClientInstrumentor().instrument()
    _tracer = trace.get_tracer("gatehouse")
    _enabled = True


def uninstrument() -> None:
    global _enabled, _tracer
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import (
        HTTPX2ClientInstrumentor,
        HTTPXClientInstrumentor,
    )
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    for instrumentor in (
        DjangoInstrumentor(),
        CeleryInstrumentor(),
        PsycopgInstrumentor(),
        HTTPXClientInstrumentor(),
        HTTPX2ClientInstrumentor(),
    ):
        instrumentor.uninstrument()
    _enabled, _tracer = False, None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """A span around the block (None when tracing is off). `parent`: a carrier from `carrier()`
    that the span continues instead of the current context (the outbox row's)."""
    if not _enabled:
        yield None
        return
    context = None
    if parent:
        from opentelemetry.propagate import extract

        context = extract(dict(parent))
    with _tracer.start_as_current_span(
        name, context=context, attributes=_clean(attributes or {})
    ) as s:
        yield s


def set_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    if current is not None:
        current.set_attributes(_clean(attributes))


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate), {} when off."""
    if not _enabled:
        return {}
    from opentelemetry.propagate import inject

    headers: dict[str, str] = {}
    inject(headers)
    return headers


def record_span(
    name: str,
    *,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    error: str = "",
    kind: str = "CLIENT",
) -> None:
    """A span for something already over (a model call, which is logged when it ends)."""
    if not _enabled:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    current = _tracer.start_span(
        name, kind=SpanKind[kind], attributes=_clean(attributes), start_time=start_ns
    )
    if error:
        current.set_status(Status(StatusCode.ERROR, error))
    current.end(end_time=end_ns)
