"""An OpenAI-compatible proxy: services point the official SDK's `base_url` at /llm/v1.

Every request goes through llmcalls.client with the feature from `X-Gatehouse-Feature` (default:
the service's name), so it gets the route's deadline, retries, fallback, cache, budget and log.
Nothing the caller sends is taken on trust: the feature must be granted to the service
(FeatureGrant), the route, its deadline and its parameters are the admin's, and the body may carry
only chat-completion parameters (others: 400 naming the field). The route decides the model; the
`model` in the request is not used to pick one. Responses carry `X-Gatehouse-Call-Id`; errors are
in OpenAI's shape (`{"error": {...}}`) so the SDK raises them.

A successful non-streamed call's log row is written after its answer is sent: the response's
`close()`, which the WSGI server (granian, after the body with its Content-Length), Django's ASGI
handler (after the last body message) and Django's test client call once the body is out. The
INSERT and its commit (0.6-1.3 ms) are then off the answer's path, and the caller reads the
answer while the row is written. Everything else is logged before the answer as before: failed
calls (committed durably), routes with a daily budget (the next call's sum must see this one's
cost), streams (their row is written when the stream ends, before its `[DONE]`), and
`client.complete()` called in-process. A proposal citing the call's id posted before the row is
committed waits for it briefly (approvals.services.proposals: `_check_own_llm_call`).

What a crash loses: a process that dies between sending the answer and `close()` (a window of a
millisecond or so per call) loses the row of a call whose answer the caller got: its cost is
missing from the log and the dashboard, and a proposal citing it is refused (422) as citing no
call. The design already loses the row of a call whose process dies while it waits for the
provider (a window of the whole upstream call, seconds for a real model, during which the
provider may bill it too), so the loss is of the same kind and a far shorter window; no budget
is affected (budgeted routes write first), and a failed `close()` write logs the full record to
the `llmcalls` logger as a failed write always did.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from approvals.models import Service
from approvals.services import api_key_authenticate
from foundation import jsonfast, problems
from foundation.errors import ApplicationError, problem
from llmcalls import client, routing
from llmcalls.client import CompletionStream, LLMError, PendingLog

CALL_ID_HEADER = "X-Gatehouse-Call-Id"
FEATURE_HEADER = "X-Gatehouse-Feature"
_FEATURE_META = "HTTP_X_GATEHOUSE_FEATURE"  # the header's key in request.META
# Chat-completion parameters a caller may send; the route's own params override them.
ALLOWED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "user",
        "reasoning_effort",
        "verbosity",
        "modalities",
        "prediction",
        "audio",
        "web_search_options",
        "safety_identifier",
        "prompt_cache_key",
    }
)
# What Gatehouse decides, not the caller, and where it comes from instead.
RESERVED_FIELDS = {
    "feature": f"the feature comes from the {FEATURE_HEADER} header and must be granted",
    "service": "the service is the one the API key belongs to",
    "route": "the route is the feature's, set by an admin",
    "deadline": "the deadline is the route's, set by an admin",
    "attempt_timeout": "the attempt timeout is the route's, set by an admin",
    "timeout": "the deadline is the route's, set by an admin",
    "store": "whether the provider stores the exchange is the route's choice (its params)",
    "metadata": "metadata goes with `store`, the route's choice (its params)",
    "service_tier": "the service tier (and its price) is the route's choice (its params)",
}
_NOT_PARAMS = {"model", "messages", "stream", "stream_options"}


def _error(
    status: int, message: str, code: str, *, call_id: object = None, kind: str = ""
) -> JsonResponse:
    response = JsonResponse(
        {"error": {"message": message, "type": kind or code, "code": code, "param": None}},
        status=status,
    )
    if call_id is not None:
        response[CALL_ID_HEADER] = str(call_id)
    return response


def _problem(status: int, code: str, message: str, *, loc: list[str] | None = None) -> HttpResponse:
    """problem+json naming the field, with the same in OpenAI's `error` so the SDK raises it."""
    param = loc[-1] if loc else None
    return problem(
        status,
        code,
        message,
        errors=[{"loc": loc, "msg": message}] if loc else None,
        extra={
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 403 else "permission_error",
                "code": code,
                "param": param,
            }
        },
    )


def _service(request: HttpRequest) -> Service | None:
    # META, not request.headers: that builds a dict of every header on each request.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return api_key_authenticate(token=token.strip())


def _unauthorized() -> JsonResponse:
    response = _error(
        401,
        "Send a Gatehouse service key: Authorization: Bearer gh_<prefix>_<secret>.",
        "invalid_api_key",
        kind="authentication_error",
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


def _body_problem(body: Any) -> HttpResponse | None:
    """A 400 for the first field the caller may not send or sent in the wrong shape."""
    if not isinstance(body, dict):
        return _problem(400, "invalid-body", "The body must be a JSON object.", loc=["body"])
    for name in body:
        if name in RESERVED_FIELDS:
            return _problem(
                400,
                "reserved-field",
                f"{name} may not be sent: {RESERVED_FIELDS[name]}.",
                loc=["body", name],
            )
        if name not in ALLOWED_FIELDS:
            return _problem(
                400,
                "unknown-field",
                f"{name} is not a chat-completion parameter this proxy passes on.",
                loc=["body", name],
            )
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        return _problem(
            400,
            "invalid-messages",
            "messages must be a non-empty list of message objects.",
            loc=["body", "messages"],
        )
    if not isinstance(body.get("stream", False), bool):
        return _problem(
            400, "invalid-field", "stream must be true or false.", loc=["body", "stream"]
        )
    if not isinstance(body.get("stream_options", {}), dict | None):
        return _problem(
            400,
            "invalid-field",
            "stream_options must be an object.",
            loc=["body", "stream_options"],
        )
    if not isinstance(body.get("model", ""), str):
        return _problem(400, "invalid-field", "model must be a string.", loc=["body", "model"])
    return None


@csrf_exempt
@require_POST
def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    service = _service(request)
    if service is None:
        return _unauthorized()
    try:
        body = problems.parse_json_body(request)
    except ApplicationError as exc:
        # Name the top-level parameter (OpenAI's `param`) when the parser found the field.
        where = exc.errors[0]["loc"][:2] if exc.errors else ["body"]
        return _problem(exc.status, exc.code, exc.message, loc=[str(part) for part in where])
    refused = _body_problem(body)
    if refused is not None:
        return refused
    feature = request.META.get(_FEATURE_META, "").strip() or service.name
    if feature not in routing.granted_features(service_id=service.pk):
        return _problem(
            403,
            "feature-not-granted",
            f"Service {service.name!r} may not call the feature {feature[:200]!r}; an admin "
            "grants features (llm_grants in `manage.py apply`, or the admin).",
            loc=["header", FEATURE_HEADER],
        )
    messages = body["messages"]
    params = {k: v for k, v in body.items() if k not in _NOT_PARAMS}
    try:
        if body.get("stream"):
            started = client.stream(
                feature=feature, messages=messages, service=service.name, **params
            )
        else:
            result = client.complete(
                feature=feature, messages=messages, service=service.name, log_later=True, **params
            )
    except LLMError as exc:
        return _error(exc.status, exc.message, exc.code, call_id=exc.call_id)
    if not body.get("stream"):
        # orjson: the provider's answer re-encoded several times faster than json.dumps.
        response = _Answer(jsonfast.dumps(result.raw), result.log_pending)
        response[CALL_ID_HEADER] = str(result.call_id)
        response["X-Gatehouse-Cache"] = result.cache_kind or "miss"
        return response
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = _sse(started, include_usage=usage)
    content: Iterator[bytes] | AsyncIterator[bytes] = (
        _async(events, started) if isinstance(request, ASGIRequest) else events
    )
    streaming = StreamingHttpResponse(content, content_type="text/event-stream")
    streaming[CALL_ID_HEADER] = str(started.call_id)
    streaming["X-Gatehouse-Cache"] = started.cache_kind or "miss"
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"
    return streaming


class _Answer(HttpResponse):
    """A completion's answer; its call's row is written when the server closes it (sent)."""

    def __init__(self, content: bytes, pending: PendingLog | None) -> None:
        super().__init__(content, content_type="application/json")
        self.pending = pending

    def close(self) -> None:
        try:
            if self.pending is not None:
                self.pending.write()  # once: a second close() finds it written
        finally:
            super().close()  # request_finished: the connection goes back to the pool


def _sse(stream: CompletionStream, *, include_usage: bool) -> Iterator[bytes]:
    try:
        for delta in stream:
            chunk = delta.raw
            if not include_usage and not chunk.get("choices"):
                continue  # the usage-only chunk the caller did not ask for
            yield b"data: " + jsonfast.dumps(chunk) + b"\n\n"
    except LLMError as exc:
        # Mid-stream: the status line is sent already; an error event makes the SDK raise.
        error = {"error": {"message": exc.message, "type": exc.code, "code": exc.code}}
        yield b"data: " + json.dumps(error).encode() + b"\n\n"
        return
    finally:
        stream.close()
    yield b"data: [DONE]\n\n"


async def _async(events: Iterator[bytes], stream: CompletionStream) -> AsyncIterator[bytes]:
    """Serve a sync stream under ASGI chunk by chunk (Django would otherwise buffer it whole)."""
    step = sync_to_async(_next_or_none, thread_sensitive=True)
    try:
        while (chunk := await step(events)) is not None:
            yield chunk
    finally:
        await sync_to_async(_close, thread_sensitive=True)(events, stream)


def _next_or_none(events: Iterator[bytes]) -> bytes | None:
    return next(events, None)


def _close(events: Any, stream: CompletionStream) -> None:
    events.close()
    stream.close()


@require_GET
def models(request: HttpRequest) -> HttpResponse:
    service = _service(request)
    if service is None:
        return _unauthorized()
    seen: dict[str, str] = {}
    # Only the models of the features granted to this service: other routes are not its business.
    for model, provider in routing.models_for(
        features=routing.granted_features(service_id=service.pk)
    ):
        seen.setdefault(model, provider)
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": provider}
                for model, provider in sorted(seen.items())
            ],
        }
    )
