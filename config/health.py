"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving requests."""
    return HttpResponse('{"status":"ok"}', content_type="application/json")


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_redis() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
        client.ping()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to take traffic: the database answers and, when configured, Redis does too."""
    checks = {"database": _check_database()}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis()
    ok = all(error is None for error in checks.values())
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": {name: error or "ok" for name, error in checks.items()},
    }
    return HttpResponse(
        json.dumps(body), status=200 if ok else 503, content_type="application/json"
    )
