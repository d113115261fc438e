"""An OpenAI-compatible proxy: services point the official SDK's `base_url` at /llm/v1.

Every request goes through llmcalls.client with the feature from `X-Gatehouse-Feature` (default:
the service's name), so it gets the route's deadline, retries, fallback, cache, budget and log.
The route decides the model; the `model` in the request is not used to pick one. Responses carry
`X-Gatehouse-Call-Id`; errors are in OpenAI's shape (`{"error": {...}}`) so the SDK raises them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from approvals.models import Service
from approvals.services import api_key_authenticate
from llmcalls import client, routing
from llmcalls.client import CompletionStream, LLMError

CALL_ID_HEADER = "X-Gatehouse-Call-Id"
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


def _service(request: HttpRequest) -> Service | None:
    header = request.headers.get("Authorization", "")
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


@csrf_exempt
@require_POST
def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    service = _service(request)
    if service is None:
        return _unauthorized()
    try:
        body = json.loads(request.body)
    except RequestDataTooBig:
        return _error(413, "The request body is too large.", "request_too_large")
    except ValueError:
        return _error(400, "The body must be JSON.", "invalid_json", kind="invalid_request_error")
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return _error(
            400,
            "messages must be a non-empty list.",
            "invalid_messages",
            kind="invalid_request_error",
        )
    feature = request.headers.get("X-Gatehouse-Feature", "").strip() or service.name
    params = {k: v for k, v in body.items() if k not in _NOT_PARAMS}
    try:
        if body.get("stream"):
            started = client.stream(
                feature=feature, messages=messages, service=service.name, **params
            )
        else:
            result = client.complete(
                feature=feature, messages=messages, service=service.name, **params
            )
    except LLMError as exc:
        return _error(exc.status, exc.message, exc.code, call_id=exc.call_id)
    if not body.get("stream"):
        response = JsonResponse(result.raw)
        response[CALL_ID_HEADER] = str(result.call_id)
        response["X-Gatehouse-Cache"] = "hit" if result.cache_hit else "miss"
        return response
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = _sse(started, include_usage=usage)
    content: Iterator[bytes] | AsyncIterator[bytes] = (
        _async(events, started) if isinstance(request, ASGIRequest) else events
    )
    streaming = StreamingHttpResponse(content, content_type="text/event-stream")
    streaming[CALL_ID_HEADER] = str(started.call_id)
    streaming["X-Gatehouse-Cache"] = "hit" if started.cache_hit else "miss"
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"
    return streaming


def _sse(stream: CompletionStream, *, include_usage: bool) -> Iterator[bytes]:
    try:
        for delta in stream:
            chunk = delta.raw
            if not include_usage and not chunk.get("choices"):
                continue  # the usage-only chunk the caller did not ask for
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
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
    if _service(request) is None:
        return _unauthorized()
    seen: dict[str, str] = {}
    for model, provider in routing.all_models():
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
