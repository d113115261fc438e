"""One error type for requests that break a rule of the domain, and its one wire form: an RFC 9457
problem+json response."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpResponse


class ApplicationError(Exception):
    """A request the domain refuses. `errors` lists field errors as {"loc": [...], "msg": "..."}."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "bad-request",
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.title = title
        self.errors = errors or []
        self.extra = extra or {}


class Conflict(ApplicationError):
    """Another request changed the same thing first (a lost compare-and-set)."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("status", 409)
        kwargs.setdefault("code", "conflict")
        super().__init__(message, **kwargs)


class NotFound(ApplicationError):
    def __init__(self, message: str = "Not found.", **kwargs: Any) -> None:
        kwargs.setdefault("status", 404)
        kwargs.setdefault("code", "not-found")
        super().__init__(message, **kwargs)


log = logging.getLogger("gatehouse.api")
PROBLEM_TYPE = "urn:gatehouse:problem:"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    # One line per refused API request: what was refused and why, never what was sent.
    log.info(
        "problem %s %s: %s", status, code, detail[:300], extra={"status": status, "code": code}
    )
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    response = HttpResponse(
        json.dumps(body), status=status, content_type="application/problem+json"
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response
