"""Clean answers while PostgreSQL or Redis is unreachable: 503 with Retry-After, never a 500.

A request that fails because a backing service is away is not a bug in the request: the client
should try again shortly. The API answers problem+json (docs/api.md), pages a short HTML page.
Three places catch it, because Django converts an exception to a response where it is raised:
`BackingServiceMiddleware.process_exception` for views, `handler500` (config/urls.py) for what a
middleware raises (saving a session), and an exception handler on the ninja API (which returns
its own traceback page in DEBUG).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.defaults import server_error

from config.health import backing_service_down
from foundation.errors import problem

log = logging.getLogger("gatehouse.unavailable")

_API_PREFIXES = ("/api/", "/llm/v1/")


def unavailable_response(request: HttpRequest, service: str) -> HttpResponse:
    retry_after = str(settings.UNAVAILABLE_RETRY_AFTER)
    detail = (
        f"Gatehouse cannot reach its {service} right now. Try again in {retry_after} s; "
        "a retry with the same Idempotency-Key is safe."
    )
    accepts_html = "text/html" in request.headers.get("Accept", "")
    if request.path.startswith(_API_PREFIXES) or not accepts_html:
        return problem(
            503,
            "service-unavailable",
            detail,
            title="Service unavailable",
            extra={"unavailable": service},
            headers={"Retry-After": retry_after},
        )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Gatehouse is unavailable</title>"
        f"<h1>Gatehouse is unavailable</h1><p>{detail}</p></html>"
    )
    response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = retry_after
    return response


class BackingServiceMiddleware:
    """Turns a view's "database/Redis unreachable" exception into a 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return answer_unavailable(request, exception)


def answer_unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse | None:
    """A 503 if `exc` means a backing service is away, else None."""
    service = backing_service_down(exc)
    if service is None:
        return None
    _discard_broken_connection(service)
    log.warning("%s unreachable: %s %s answered 503", service, request.method, request.path)
    return unavailable_response(request, service)


def handler500(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Django's 500 page, except for a backing service being away (raised in a middleware)."""
    exc = sys.exc_info()[1]
    response = answer_unavailable(request, exc) if exc is not None else None
    if response is not None:
        return response
    return server_error(request, *args, **kwargs)


def _discard_broken_connection(service: str) -> None:
    # A connection that died with the server goes back to no pool: the next request gets a
    # fresh one (the pool's check discards any other dead ones before handing them out).
    if service == "database":
        from django.db import connection

        try:
            connection.close()
        except Exception:  # closing a dead connection may itself complain
            log.debug("closing a dead database connection failed", exc_info=True)
