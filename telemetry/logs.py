"""Structured logs: the request id and the event's context on every line, and no secrets.

`LOG_FORMAT=json` gives one JSON object a line (python-json-logger on orjson) from web, worker
and beat; `text` (the default) the classic line. Either way:
- `ContextFilter` adds what is known about the current request or task (request_id, task_name,
  task_id) from context variables, which the request-id middleware and Celery's task signals set;
- the event's own context comes as `extra={…}` (service, proposal_id, action_type, outcome, …);
- `Redactor` scrubs every formatted line of anything that looks like a credential (Gatehouse API
  keys, `whsec_` secrets, bearer tokens, session and CSRF cookies, passwords in URLs or forms) and
  of the exact values registered as secrets (provider keys, SECRET_KEY, METRICS_TOKEN).
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_context", default=None
)

REQUEST_ID_MAX = 200
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,200}$")


def sanitize_request_id(raw: str | None) -> str:
    """The client's X-Request-ID if it is 1 to 200 visible ASCII characters, else a new one.

    Anything else (too long, control characters, spaces, non-ASCII) is replaced, never logged as
    sent: a request id ends up in every log line of the request and in the response header.
    """
    if raw and _PRINTABLE.match(raw):
        return raw
    return secrets.token_hex(16)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Add `values` to every log line written inside the block (a task's name and id)."""
    token = _context.set({**(_context.get() or {}), **values})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**values: Any) -> contextvars.Token[dict[str, Any] | None]:
    return _context.set({**(_context.get() or {}), **values})


def unbind(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the request id and the bound context on each record (never overriding `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        if rid and not hasattr(record, "request_id"):
            record.request_id = rid
        context = _context.get()
        if context:
            for key, value in context.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


# --- secrets ---------------------------------------------------------------------------------

# (substrings that must occur, lower-cased, for the pattern to be worth running; pattern; replacement).
# The substring test keeps a clean line at a few microseconds.
_PATTERNS = [
    # Gatehouse API keys: gh_<prefix>_<secret>
    (("gh_",), re.compile(r"gh_[0-9A-Za-z]{1,16}_[0-9A-Za-z]{6,}"), "gh_[redacted]"),
    # Standard Webhooks secrets
    (("whsec_",), re.compile(r"whsec_[0-9A-Za-z+/=]{8,}"), "whsec_[redacted]"),
    # OpenAI-style provider keys
    (("sk-",), re.compile(r"\bsk-[0-9A-Za-z_\-]{8,}"), "sk-[redacted]"),
    # Authorization headers, however they were printed
    (("bearer", "basic"), re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\",;]+"), r"\1 [redacted]"),
    # Cookies and form or query fields that carry credentials
    (
        ("session", "csrf", "pass", "key", "token", "secret"),
        re.compile(
            r"(?i)\b(sessionid|csrftoken|csrfmiddlewaretoken|x-csrftoken|password|passwd|"
            r"api_key|apikey|token|secret)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&}]+"
        ),
        r"\1\2[redacted]",
    ),
]
_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never log this exact value (a provider key read from the environment, SECRET_KEY…)."""
    global _known_re
    if not value or len(value) < 8 or value in _known:
        return
    with _known_lock:
        _known.add(value)
        _known_re = re.compile(
            "|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True))
        )


def redact(text: str) -> str:
    if _known_re is not None:
        text = _known_re.sub("[redacted]", text)
    lowered = text.lower()
    for triggers, pattern, replacement in _PATTERNS:
        if any(t in lowered for t in triggers):
            text = pattern.sub(replacement, text)
    return text


class Redactor:
    """Mixin for formatters: scrub the whole formatted line, message, extras and traceback alike."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # type: ignore[misc]


class TextFormatter(Redactor, logging.Formatter):
    pass


class JsonFormatter(Redactor, OrjsonFormatter):
    """time, level, logger, message, then request id, task and the event's context."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")
        super().__init__("{levelname}{name}{message}", *args, style="{", **kwargs)
