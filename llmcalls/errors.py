"""What can go wrong with a model call: the errors callers see, and how a provider's failure is
classified (retry the target, fall back to the next, or fail the call).

Callers catch `LLMError` (each subclass carries the problem+json status and code the proxy
answers with, and the id of the LLMCall row that logged it). Malformed, EarlyEnd and
Misconfigured are one target's failures: llmcalls.client classifies them and moves on, and they
never reach a caller.
"""

from __future__ import annotations

import json
import uuid

from telemetry import logs

try:  # the openai SDK's transport: httpx2 since openai 3, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]


class LLMError(Exception):
    """A model call that did not produce an answer. `call_id` names its LLMCall row."""

    status = 502
    code = "llm-error"

    def __init__(self, message: str, *, call_id: uuid.UUID | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.call_id = call_id


class NoRoute(LLMError):
    status = 404
    code = "no-route"


class BudgetExceeded(LLMError):
    status = 429
    code = "budget-exceeded"


class DeadlineExceeded(LLMError):
    status = 504
    code = "deadline-exceeded"


class AllModelsFailed(LLMError):
    status = 502
    code = "all-models-failed"


class RequestRefused(LLMError):
    """The provider called the request itself invalid (400, 413, 422): no model would take it."""

    status = 400
    code = "request-refused"


class StreamCut(LLMError):
    status = 502
    code = "stream-cut"


# --- inside llmcalls.client: failures of one target ----------------------------------------------


class Malformed(Exception):
    """The provider answered 2xx with something that is not a chat completion."""


class EarlyEnd(Exception):
    """A stream ended before its first token."""


class Misconfigured(Exception):
    """The target cannot be called as configured (e.g. its key's variable is not set)."""


class ProviderStatus(Exception):
    """The provider answered with an HTTP error status (the body read, for its message)."""

    def __init__(self, response: _http.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.message = _error_message(response)
        super().__init__(f"HTTP {self.status_code}: {self.message}")


def _error_message(response: _http.Response) -> str:
    """OpenAI's `{"error": {"message": …}}` when the body has it, else the body's text."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else text[:300]


RETRY, FALLBACK, FATAL = "retry", "fallback", "fatal"


def classify(exc: BaseException) -> str:
    """RETRY the same target, FALLBACK to the next, or FATAL: the call fails."""
    if isinstance(exc, ProviderStatus):
        code = exc.status_code
        if code in (408, 409, 429) or code >= 500:
            return RETRY
        return FATAL if code in (400, 413, 422) else FALLBACK
    if isinstance(exc, _http.HTTPError | EarlyEnd):
        return RETRY
    if isinstance(exc, Malformed | Misconfigured):
        return FALLBACK
    return FATAL


def describe(exc: BaseException | None) -> str:
    """The error for the call log and the caller, without credentials: a provider that echoes
    the key it was sent ("Incorrect API key provided: sk-…") must not hand it on."""
    if exc is None:
        return ""
    if isinstance(exc, ProviderStatus):
        return logs.redact(str(exc))[:500]
    return logs.redact(f"{type(exc).__name__}: {exc}")[:500]
